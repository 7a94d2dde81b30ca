"""The one typed settings object: paths, URIs and credentials, read on demand.

Every value can be overridden by an ``MMOPS_``-prefixed environment variable
(``MMOPS_DATA_DIR=/srv/mmops``, ``MMOPS_SMTP__HOST=mail.example.com``) or a ``.env``
file. Nothing here runs at import time: call :func:`get_settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.demo_data import DEMO_CONFIG_PATH
from training.evaluate import GateConfig
from training.integrity import IntegrityConfig
from training.train import TrainConfig


class SmtpSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="SMTP server host.")
    port: int = Field(default=8025, description="SMTP server port.")
    security: Literal["none", "starttls", "ssl"] = Field(default="none")
    user: str | None = Field(default=None, description="SMTP user name, if the server needs one.")
    password: SecretStr | None = Field(default=None, description="SMTP password (never logged).")
    sender: str = Field(default="mmops@localhost")
    recipients: list[str] = Field(default_factory=lambda: ["ml-oncall@localhost"])


class PostgresSettings(BaseModel):
    """PostgreSQL of the prod profile: one server, one database per service."""

    host: str = Field(default="127.0.0.1", description="PostgreSQL host.")
    port: int = Field(default=5432, description="PostgreSQL port.")
    user: str = Field(default="postgres", description="PostgreSQL user.")
    password: SecretStr | None = Field(default=None, description="Password (never logged).")
    feast_database: str = Field(default="mmops_feast", description="Feast SQL registry.")
    mlflow_database: str = Field(default="mmops_mlflow", description="MLflow backend store.")
    mlflow_auth_database: str = Field(
        default="mmops_mlflow_auth", description="MLflow basic-auth users and permissions."
    )
    prefect_database: str = Field(default="mmops_prefect", description="Prefect server.")


class RedisSettings(BaseModel):
    """Redis of the prod profile (the Feast online store)."""

    host: str = Field(default="127.0.0.1", description="Redis host.")
    port: int = Field(default=6379, description="Redis port.")
    db: int = Field(default=0, ge=0, description="Redis logical database.")
    password: SecretStr | None = Field(default=None, description="Password (never logged).")


class MlflowServerSettings(BaseModel):
    """The MLflow tracking server of the prod profile (basic auth)."""

    url: str = Field(default="http://127.0.0.1:5001", description="Tracking server URL.")
    username: str | None = Field(default=None, description="Basic-auth user of the pipeline.")
    password: SecretStr | None = Field(default=None, description="Basic-auth password.")
    admin_username: str = Field(default="admin", description="Admin created at first start.")
    admin_password: SecretStr | None = Field(
        default=None, description="Admin password; required to start the server."
    )
    artifacts_destination: str | None = Field(
        default=None, description="Where the server stores artifacts; default data_dir/mlartifacts."
    )


class Settings(BaseSettings):
    """Environment and infrastructure values for one mmops installation."""

    model_config = SettingsConfigDict(
        env_prefix="MMOPS_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    profile: Literal["embedded", "prod"] = Field(
        default="embedded", description="embedded: local files, SQLite; prod: real services."
    )
    data_dir: Path = Field(
        default_factory=lambda: Path.cwd() / ".mmops",
        description="Every piece of state (stores, registry, runs, reports) lives under here.",
    )
    dataset_config: Path = Field(
        default=DEMO_CONFIG_PATH,
        description="YAML file declaring the dataset (see features/schema.py).",
    )
    raw_data: Path | None = Field(
        default=None,
        description="Raw rows (Parquet or CSV). Default: the demo dataset under data_dir.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="Default: SQLite file under data_dir."
    )
    mlflow_ui_url: str | None = Field(
        default="http://127.0.0.1:5000",
        description="Base URL of the MLflow UI, for links in alert emails (default: where "
        "`mlflow ui` serves on this machine; the email says how to start it). Set it to "
        "the shared server's URL in production, or to an empty value for no links.",
    )
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    # prod profile (ignored by the embedded default; see flows/profiles.py)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    mlflow_server: MlflowServerSettings = Field(default_factory=MlflowServerSettings)
    prefect_api_url: str | None = Field(
        default=None, description="Prefect server API (prod), e.g. http://127.0.0.1:4200/api."
    )
    task_runner: Literal["default", "dask"] = Field(
        default="default", description="default: Prefect's thread pool; dask: a Dask cluster."
    )
    dask_address: str | None = Field(
        default=None, description="Scheduler address (tcp://host:8786); None: a local cluster."
    )
    text_encoder: Literal["fp32", "onnx-fp32", "int8"] = Field(
        default="fp32",
        description="Text encoder variant: fp32 (PyTorch, as shipped), onnx-fp32 (ONNX "
        "Runtime), int8 (ONNX Runtime, int8 weights; benchmarks/README.md). Switching it "
        "needs a new data directory: stores and models refuse vectors of another variant.",
    )
    chunk_rows: int = Field(
        default=2000,
        ge=1,
        description="Rows per chunk when ingest embeds and scoring scores on the Dask runner.",
    )
    seed: int = Field(default=0, description="The one seed for every random choice.")
    online_days: float | None = Field(
        default=1.0,
        gt=0,
        description="An ingest run loads only the last N days of its window into the "
        "online store (scoring reads the offline store; a backfill of months of history "
        "need not be served online); None: the whole window.",
    )
    train: TrainConfig = Field(
        default_factory=TrainConfig,
        description="Training knobs of every run that does not set its own "
        "(MMOPS_TRAIN__BATCH_SIZE=64, MMOPS_TRAIN__PATIENCE=10, ...).",
    )
    approve_drift_retrains: bool = Field(
        default=False,
        description="A drift-triggered retrain that passes the gate stays challenger until "
        "a person promotes it (`mmops promote VERSION`); the alert says what to review.",
    )
    gate: GateConfig = Field(
        default_factory=GateConfig,
        description="Promotion-gate bounds (MMOPS_GATE__MAX_ECE=0.15, "
        "MMOPS_GATE__MIN_IMPROVEMENT_OVER_BASELINE=0.02, ...).",
    )
    integrity: IntegrityConfig = Field(
        default_factory=IntegrityConfig,
        description="Training-data integrity bounds of every run that does not set its own, "
        "drift-triggered retrains included (MMOPS_INTEGRITY__MAX_DUPLICATE_SHARE=0.05, "
        "MMOPS_INTEGRITY__BLOCK_ON_TRIGGER=false, ...).",
    )

    # Derived locations ---------------------------------------------------------------
    @property
    def feast_dir(self) -> Path:
        return self.data_dir / "feast"

    @property
    def gx_dir(self) -> Path:
        return self.data_dir / "gx"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def demo_dir(self) -> Path:
        return self.data_dir / "demo"

    @property
    def raw_data_path(self) -> Path:
        return self.raw_data or self.demo_dir / "raw.parquet"

    @property
    def labels_dir(self) -> Path:
        return self.data_dir / "labels"

    @property
    def tokens_dir(self) -> Path:
        """The words of each ingested text (``features.tokens``), for the trigger check."""
        return self.data_dir / "tokens"

    @property
    def prediction_log_dir(self) -> Path:
        return self.data_dir / "predictions"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def prefect_home(self) -> Path:
        return self.data_dir / "prefect"

    @property
    def chunks_dir(self) -> Path:
        """Rows a flow hands to its Dask workers by path (``flows.task_runners``); each
        file is deleted when its run ends, and one a killed run left behind is swept by
        a later run once it is a day old."""
        return self.data_dir / "chunks"

    @property
    def embedding_cache_dir(self) -> Path:
        return self.data_dir / "embedding_cache"

    @property
    def encoder_artifact_dir(self) -> Path:
        return self.data_dir / "encoders"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if self.profile == "prod":
            return self.mlflow_server.url
        return f"sqlite:///{self.data_dir / 'mlflow.db'}"

    @property
    def artifact_dir(self) -> Path:
        return self.data_dir / "mlartifacts"


def get_settings(**overrides: object) -> Settings:
    """Read settings from the environment now, with keyword overrides on top."""
    return Settings(**overrides)
