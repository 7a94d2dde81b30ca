"""The prod profile's servers: MLflow tracking (basic auth, PostgreSQL) and Prefect
(PostgreSQL), started from the settings.

Run one in the foreground (what a systemd unit or a container entrypoint does)::

    python -m flows.services databases   # create the PostgreSQL databases if missing
    python -m flows.services mlflow      # MLflow server at settings.mlflow_server.url
    python -m flows.services prefect     # Prefect server at settings.prefect_api_url

Secrets travel in the child's environment, never on its command line (``ps`` shows that).
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from flows.profiles import postgres_url
from flows.settings import PostgresSettings, Settings, get_settings


@dataclass(frozen=True)
class ServiceCommand:
    """A server process to start: argv, extra environment, and a URL that answers when up."""

    argv: list[str]
    env: dict[str, str]
    ready_url: str


def _bin(name: str) -> str:
    """The console script installed next to this interpreter (the venv's), else PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


# Databases -------------------------------------------------------------------------------
def _admin_connect(pg: PostgresSettings):
    import psycopg

    return psycopg.connect(
        postgres_url(pg, "postgres").replace("postgresql+psycopg://", "postgresql://"),
        autocommit=True,
        connect_timeout=5,
    )


def ensure_database(pg: PostgresSettings, name: str) -> bool:
    """Create database ``name`` unless it exists; returns whether it was created."""
    from psycopg import sql

    with _admin_connect(pg) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_database(pg: PostgresSettings, name: str) -> None:
    """Drop database ``name`` (closing its connections) if it exists."""
    from psycopg import sql

    with _admin_connect(pg) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def ensure_databases(settings: Settings) -> list[str]:
    """Create the prod profile's databases that are missing; returns those created."""
    pg = settings.postgres
    names = [pg.feast_database, pg.mlflow_database, pg.mlflow_auth_database, pg.prefect_database]
    return [name for name in names if ensure_database(pg, name)]


# MLflow ----------------------------------------------------------------------------------
def write_mlflow_auth_config(settings: Settings, path: Path) -> Path:
    """The basic-auth app's ini file: users and permissions in PostgreSQL.

    Everyone must log in; a new user may read but not edit others' experiments and models.
    The admin password is not written here (it goes to the server's environment). The
    file holds the auth database URL, so it is readable by its owner only.
    """
    pg = settings.postgres
    text = "\n".join(
        [
            "[mlflow]",
            "default_permission = READ",
            f"database_uri = {postgres_url(pg, pg.mlflow_auth_database)}",
            f"admin_username = {settings.mlflow_server.admin_username}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            "grant_default_workspace_access = false",
            # Verify each (user, password) with PBKDF2 once a minute, not on every request
            # (about 3x the throughput); a changed password takes effect within the minute.
            "auth_cache_ttl_seconds = 60",
            "",
        ]
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=stat.S_IRUSR | stat.S_IWUSR, exist_ok=True)
    path.write_text(text.replace("%", "%%"), encoding="utf-8")  # configparser interpolation
    return path


def _secret_key(folder: Path) -> str:
    """A random key kept in ``folder`` (owner-only), so every start uses the same one."""
    import secrets

    path = Path(folder) / "mlflow_flask_secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def mlflow_server_command(settings: Settings, workers: int = 1) -> ServiceCommand:
    """``mlflow server`` with the PostgreSQL backend, served artifacts and basic auth.

    Raises:
        ValueError: no admin password is configured (MLflow ships none).
    """
    server = settings.mlflow_server
    if server.admin_password is None:
        raise ValueError("set MMOPS_MLFLOW_SERVER__ADMIN_PASSWORD (12+ characters)")
    host, port = _host_port(server.url, 5000)
    auth_ini = write_mlflow_auth_config(
        settings, settings.data_dir / "services" / "mlflow_auth.ini"
    )
    artifacts = server.artifacts_destination or (settings.data_dir / "mlartifacts").as_uri()
    env = {
        "MLFLOW_BACKEND_STORE_URI": postgres_url(
            settings.postgres, settings.postgres.mlflow_database
        ),
        "MLFLOW_ARTIFACTS_DESTINATION": artifacts,
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
        "MLFLOW_AUTH_ADMIN_USERNAME": server.admin_username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": server.admin_password.get_secret_value(),
    }
    if "MLFLOW_FLASK_SERVER_SECRET_KEY" not in os.environ:  # CSRF key, stable across restarts
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = _secret_key(settings.data_dir / "services")
    argv = [
        _bin("mlflow"),
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return ServiceCommand(argv=argv, env=env, ready_url=f"{server.url.rstrip('/')}/health")


def create_mlflow_user(
    settings: Settings, username: str, password: str, admin: bool = False
) -> None:
    """Create a basic-auth user on the running server (idempotent), as the admin."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    server = settings.mlflow_server
    if server.admin_password is None:
        raise ValueError("the admin password is needed to create users")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"] = server.admin_username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = server.admin_password.get_secret_value()
    try:
        client = AuthServiceClient(server.url)
        try:
            client.create_user(username, password)
        except MlflowException as error:
            if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
                raise
        if admin:
            client.update_user_admin(username, True)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# Prefect ---------------------------------------------------------------------------------
def prefect_server_command(settings: Settings) -> ServiceCommand:
    """``prefect server start`` on PostgreSQL (asyncpg), without telemetry.

    Raises:
        ValueError: ``prefect_api_url`` is not set.
    """
    if not settings.prefect_api_url:
        raise ValueError("set MMOPS_PREFECT_API_URL, e.g. http://127.0.0.1:4200/api")
    host, port = _host_port(settings.prefect_api_url, 4200)
    pg = settings.postgres
    env = {
        "PREFECT_API_DATABASE_CONNECTION_URL": postgres_url(pg, pg.prefect_database, "asyncpg"),
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    argv = [_bin("prefect"), "server", "start", "--host", host, "--port", str(port)]
    return ServiceCommand(
        argv=argv, env=env, ready_url=f"{settings.prefect_api_url.rstrip('/')}/health"
    )


# Processes -------------------------------------------------------------------------------
def start_service(command: ServiceCommand, log_path: Path) -> subprocess.Popen:
    """Start ``command`` in the background (its own process group), output to ``log_path``."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command.argv,
            env={**os.environ, **command.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(url: str, timeout_s: float = 120.0, process: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers (any HTTP status); fail early if ``process`` exits.

    Raises:
        TimeoutError: not up within ``timeout_s``.
        RuntimeError: the process exited first.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"server exited with code {process.returncode} before {url} answered"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


def stop_service(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Stop a server started by :func:`start_service` and its workers (SIGTERM, then KILL)."""
    import signal

    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.services", description=__doc__)
    parser.add_argument("service", choices=["databases", "mlflow", "prefect"])
    parser.add_argument("--workers", type=int, default=1, help="MLflow server workers.")
    args = parser.parse_args(argv)
    settings = get_settings(profile="prod")
    if args.service == "databases":
        created = ensure_databases(settings)
        print(f"created: {', '.join(created) or 'none (all exist)'}")
        return
    ensure_databases(settings)
    if args.service == "mlflow":
        command = mlflow_server_command(settings, workers=args.workers)
    else:
        command = prefect_server_command(settings)
    os.execvpe(command.argv[0], command.argv, {**os.environ, **command.env})


if __name__ == "__main__":
    main()
