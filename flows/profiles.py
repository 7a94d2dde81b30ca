"""What the ``prod`` profile changes: Feast stores, service URLs and client credentials.

The embedded default needs nothing from here (every function returns "no change" for it).
The prod profile keeps the same pipeline and swaps the stores behind it:

- Feast online store: Redis; registry: SQL on PostgreSQL (shared by every worker).
- Feast offline store: still DuckDB over the day-partitioned Parquet files under
  ``data_dir`` (on storage shared by the workers). The day files are written with atomic
  replaces and merged without duplicates (features/store.py); DuckDB reads them faster
  than any other Feast offline store on one machine. Going past one machine means Parquet
  on object storage, read by DuckDB or Spark (docs/scale-out.md), not PostgreSQL rows.
- MLflow: a tracking server with basic auth over PostgreSQL (flows/services.py).
- Prefect: a server on PostgreSQL (flows/services.py).
"""

from __future__ import annotations

from sqlalchemy.engine import URL

from flows.settings import PostgresSettings, RedisSettings, Settings


def postgres_url(pg: PostgresSettings, database: str, driver: str = "psycopg") -> str:
    """A SQLAlchemy URL for ``database`` (password included, quoted: never log it)."""
    url = URL.create(
        f"postgresql+{driver}",
        username=pg.user,
        password=pg.password.get_secret_value() if pg.password else None,
        host=pg.host,
        port=pg.port,
        database=database,
    )
    return url.render_as_string(hide_password=False)


def redis_connection_string(redis: RedisSettings) -> str:
    """Feast's Redis connection string: ``host:port,db=N[,password=...]``."""
    parts = [f"{redis.host}:{redis.port}", f"db={redis.db}"]
    if redis.password:
        parts.append(f"password={redis.password.get_secret_value()}")
    return ",".join(parts)


def feast_stores(settings: Settings) -> dict[str, dict]:
    """Keyword arguments of ``features.store.prepare_store`` for the settings' profile.

    Empty for the embedded profile (SQLite online store, file registry, DuckDB).
    """
    if settings.profile != "prod":
        return {}
    return {
        "online_store": {
            "type": "redis",
            "connection_string": redis_connection_string(settings.redis),
        },
        "registry": {
            "registry_type": "sql",
            "path": postgres_url(settings.postgres, settings.postgres.feast_database),
            # Re-read on every call after a write in this process; other workers see
            # changes within the TTL.
            "cache_ttl_seconds": 60,
            # A PostgreSQL restart must not leave dead connections in the pool.
            "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
        },
        "offline_store": {"type": "duckdb"},
    }


def promotion_lock_dsn(settings: Settings) -> str | None:
    """Where the prod profile's promotion lock lives: a PostgreSQL advisory lock in the
    MLflow backend database, which every worker reaches; None for the embedded profile
    (a file lock beside the SQLite registry). A libpq URL with the password: never log it.
    """
    if settings.profile != "prod":
        return None
    return postgres_url(settings.postgres, settings.postgres.mlflow_database).replace(
        "postgresql+psycopg://", "postgresql://", 1
    )


def client_environment(settings: Settings) -> dict[str, str]:
    """Environment variables the MLflow and Prefect clients read, for the prod profile.

    MLflow's client takes basic-auth credentials only from ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD``; Prefect's from ``PREFECT_API_URL``.
    """
    if settings.profile != "prod":
        return {}
    env: dict[str, str] = {}
    server = settings.mlflow_server
    if server.username and server.password:
        env["MLFLOW_TRACKING_USERNAME"] = server.username
        env["MLFLOW_TRACKING_PASSWORD"] = server.password.get_secret_value()
    if settings.prefect_api_url:
        env["PREFECT_API_URL"] = settings.prefect_api_url
    return env
