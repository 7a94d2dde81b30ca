"""Real services for the prod-profile tests: PostgreSQL, Redis, an MLflow server.

Every test gets its own databases, Feast project, Redis instance or registered model,
and removes them afterwards. Without a reachable PostgreSQL (or an installed
redis-server) the tests skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows.settings import Settings, get_settings

PG_HOST, PG_PORT = "127.0.0.1", 5432
ADMIN_PASSWORD = "mmops-admin-password"
PIPELINE_USER, PIPELINE_PASSWORD = "pipeline", "pipeline-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def postgres():
    """PostgreSQL settings (trust auth on the test machine), or skip."""
    pytest.importorskip("psycopg")
    from flows.services import _admin_connect

    settings = get_settings(profile="prod").postgres.model_copy(
        update={"host": PG_HOST, "port": PG_PORT}
    )
    try:
        with _admin_connect(settings) as conn:
            conn.execute("SELECT 1")
    except Exception as error:  # any connection failure means: no PostgreSQL here
        pytest.skip(f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT}: {error}")
    return settings


@pytest.fixture()
def databases(postgres):
    """Create uniquely named databases on demand; drop them all after the test."""
    from flows.services import drop_database, ensure_database

    created: list[str] = []

    def make(prefix: str) -> str:
        name = unique(prefix)
        ensure_database(postgres, name)
        created.append(name)
        return name

    yield make
    for name in created:
        drop_database(postgres, name)


@dataclass
class RedisInstance:
    """A private redis-server (no persistence, like the shared one), restartable."""

    port: int
    workdir: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
            ]
        )
        self.wait()

    def wait(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise TimeoutError(f"redis on port {self.port} did not answer")

    def shutdown(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], check=False)
        if self.process is not None:
            self.process.wait(timeout=20)

    def restart(self) -> None:
        self.shutdown()
        self.start()

    def dbsize(self) -> int:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), "dbsize"], capture_output=True, text=True
        )
        return int(out.stdout.strip())


@pytest.fixture()
def redis_instance(tmp_path):
    """Its own redis-server on a free port, so restarting it disturbs no other test."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server / redis-cli not installed")
    instance = RedisInstance(port=free_port(), workdir=tmp_path / "redis")
    instance.workdir.mkdir()
    instance.start()
    yield instance
    instance.shutdown()


@dataclass
class MlflowServer:
    settings: Settings
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.settings.mlflow_server.url

    def start(self) -> None:
        from flows.services import mlflow_server_command, start_service, wait_ready

        command = mlflow_server_command(self.settings)
        self.process = start_service(command, self.log_path)
        wait_ready(command.ready_url, timeout_s=120, process=self.process)

    def stop(self) -> None:
        from flows.services import stop_service

        if self.process is not None:
            stop_service(self.process)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    """One MLflow server (basic auth, PostgreSQL backend and user store) for the session,
    on fresh databases dropped afterwards, with a non-admin pipeline user."""
    from flows.services import create_mlflow_user, drop_database, ensure_database

    data_dir = tmp_path_factory.mktemp("mlflow-server")
    names = {
        "mlflow_database": unique("mmops_t_mlflow"),
        "mlflow_auth_database": unique("mmops_t_auth"),
    }
    for name in names.values():
        ensure_database(postgres, name)
    settings = get_settings(
        profile="prod",
        data_dir=data_dir,
        postgres=postgres.model_copy(update=names),
        mlflow_server={
            "url": f"http://127.0.0.1:{free_port()}",
            "admin_password": ADMIN_PASSWORD,
            "username": PIPELINE_USER,
            "password": PIPELINE_PASSWORD,
        },
    )
    server = MlflowServer(settings, data_dir / "mlflow-server.log")
    try:
        server.start()
        create_mlflow_user(settings, PIPELINE_USER, PIPELINE_PASSWORD)
        yield server
    finally:
        server.stop()
        for name in names.values():
            drop_database(postgres, name)


@pytest.fixture()
def pipeline_credentials(monkeypatch, mlflow_server):
    """The pipeline user's credentials in the environment, as the prod profile sets them;
    one HTTP try per call so that mmops' RetryConfig does the retrying."""
    from flows.profiles import client_environment

    for key, value in client_environment(mlflow_server.settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    return os.environ["MLFLOW_TRACKING_USERNAME"]
