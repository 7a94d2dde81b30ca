"""The prod profile's settings and Feast store kwargs (no services needed)."""

from __future__ import annotations

from flows.profiles import client_environment, feast_stores, postgres_url
from flows.settings import get_settings


def test_embedded_default_changes_nothing(tmp_path):
    settings = get_settings(data_dir=tmp_path)
    assert settings.profile == "embedded"
    assert feast_stores(settings) == {} and client_environment(settings) == {}
    assert settings.tracking_uri.startswith("sqlite:///")


def test_prod_stores_and_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("MMOPS_POSTGRES__PASSWORD", "p@ss/word:1")
    monkeypatch.setenv("MMOPS_REDIS__PORT", "6380")
    monkeypatch.setenv("MMOPS_MLFLOW_SERVER__USERNAME", "pipeline")
    monkeypatch.setenv("MMOPS_MLFLOW_SERVER__PASSWORD", "s3cret-password")
    settings = get_settings(profile="prod", data_dir=tmp_path)
    stores = feast_stores(settings)
    assert stores["online_store"] == {"type": "redis", "connection_string": "127.0.0.1:6380,db=0"}
    assert stores["registry"]["registry_type"] == "sql"
    assert stores["registry"]["path"] == (
        "postgresql+psycopg://postgres:p%40ss%2Fword%3A1@127.0.0.1:5432/mmops_feast"
    )
    assert stores["offline_store"] == {"type": "duckdb"}
    assert settings.tracking_uri == settings.mlflow_server.url
    assert client_environment(settings)["MLFLOW_TRACKING_PASSWORD"] == "s3cret-password"
    assert "s3cret" not in repr(settings) and "p@ss" not in repr(settings)
    assert postgres_url(settings.postgres, "x", "asyncpg").startswith("postgresql+asyncpg://")


def test_the_cli_gives_prefects_ephemeral_server_time_to_start(tmp_path):
    """A CLI run starts an ephemeral Prefect API server; Prefect's 20 s start-up limit
    failed the demo on a busy machine. The CLI's environment allows 180 s, and an
    operator's explicit value wins."""
    import os
    import subprocess
    import sys

    probe = (
        "from flows.runtime import configure_environment; from flows.settings import "
        "get_settings; configure_environment(get_settings()); from prefect.settings import "
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s; print(s.value())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["MMOPS_DATA_DIR"] = str(tmp_path)
    for explicit, expected in ((None, "180"), ("45", "45")):
        if explicit:
            env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = explicit
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.split()[-1] == expected, out.stderr[-2000:]
