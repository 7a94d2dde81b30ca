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
