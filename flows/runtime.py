"""The composition root's wiring: settings -> dataset config, stores, paths.

Built on demand by flows and the CLI (never at import time) and passed down.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

from features.demo_data import DemoSources, build_demo_dataset, write_demo_dataset
from features.embedding import Encoders, check_encoders, encoder_ids, read_encoder_record
from features.errors import InvalidConfigError
from features.ingest import IngestPaths
from features.schema import DatasetConfig, load_dataset_config
from features.store import offline_dir, prepare_store
from flows.profiles import client_environment, feast_stores, promotion_lock_dsn
from flows.settings import Settings, get_settings
from training.registry import PromotionLock, default_artifact_location, postgres_promotion_lock


@dataclass
class Runtime:
    settings: Settings
    config: DatasetConfig = field(init=False)

    def __post_init__(self) -> None:
        self.config = load_dataset_config(self.settings.dataset_config)

    @cached_property
    def store(self):
        """The Feast store with the dataset's definitions applied (stores per profile)."""
        return prepare_store(self.config, self.settings.feast_dir, **feast_stores(self.settings))

    @cached_property
    def encoders(self) -> Encoders:
        return Encoders.load(
            self.config, self.settings.text_encoder, self.settings.encoder_artifact_dir
        )

    @property
    def encoder_ids(self) -> dict[str, str]:
        """The encoder of every embedded column under the settings (nothing loaded)."""
        return encoder_ids(self.config, self.settings.text_encoder)

    def check_offline_encoders(self) -> None:
        """Refuse to add vectors of another encoder variant to the offline store.

        Raises:
            EncoderMismatchError: the store holds vectors of other encoders.
        """
        recorded = read_encoder_record(offline_dir(self.settings.feast_dir))
        check_encoders(recorded, self.encoder_ids, "the offline store")

    @property
    def artifact_location(self) -> str | None:
        """Where new MLflow experiments keep artifacts: a folder under the data directory
        (embedded), or the tracking server's own artifact store (prod: None, so that
        artifacts go through the server and its authentication)."""
        if self.settings.profile == "prod":
            return None
        return default_artifact_location(self.settings.data_dir)

    @property
    def promotion_lock(self) -> PromotionLock | None:
        """The registry's promotion lock: a PostgreSQL advisory lock in the prod profile;
        None in the embedded one (the registry then uses a file lock beside SQLite)."""
        dsn = promotion_lock_dsn(self.settings)
        return postgres_promotion_lock(dsn) if dsn else None

    @property
    def ingest_paths(self) -> IngestPaths:
        s = self.settings
        return IngestPaths(
            feast_dir=s.feast_dir,
            labels_dir=s.labels_dir,
            quarantine_dir=s.quarantine_dir,
            embedding_cache_dir=s.embedding_cache_dir,
            gx_dir=s.gx_dir,
        )


def build_runtime(settings: Settings | None = None) -> Runtime:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Runtime(settings)


_RUNTIMES: dict[str, Runtime] = {}


def get_runtime(settings: Settings | None = None) -> Runtime:
    """The runtime of the current settings, built once per process and reused by every
    flow run in it (encoders and the Feast store are costly to load).

    Every flow starts here, so this is where the client environment is set up
    (:func:`configure_client_environment`): a flow run by a Prefect worker gets the same
    credentials and retry settings as one run from the CLI.
    """
    settings = settings or get_settings()
    configure_client_environment(settings)
    key = settings.model_dump_json()
    if key not in _RUNTIMES:
        _RUNTIMES[key] = build_runtime(settings)
    return _RUNTIMES[key]


def configure_environment(settings: Settings) -> None:
    """Point Prefect and the Hugging Face stack at the data directory and offline mode,
    and give the MLflow client its credentials and retry settings.

    Called by the CLI before any flow is imported (Prefect's home must be set before
    Prefect reads its settings). The client part (:func:`configure_client_environment`)
    also runs inside every flow through :func:`get_runtime`, so a flow started by a Prefect
    worker behaves like one started from the CLI.
    """
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    # No telemetry: these machines reach no outside host, and users may not want it.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The ephemeral API server a CLI run starts gives up after 20 s by default, which a
    # busy 2-core machine exceeds (the demo failed so while a benchmark ran beside it).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # For the subprocesses the CLI starts (feast); a worker's flow has it from its settings.
    os.environ.setdefault("MMOPS_DATA_DIR", str(settings.data_dir))
    configure_client_environment(settings)


def configure_client_environment(settings: Settings) -> None:
    """The environment the MLflow and Hugging Face clients read, set inside the runtime.

    Existing values win (``setdefault``), as they do for the CLI: an operator's explicit
    environment is never overridden.
    """
    # mmops retries tracking calls itself (training.registry.RetryConfig); MLflow's own
    # HTTP retries (7 by default, with backoff) would multiply the wait.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for key, value in client_environment(settings).items():  # prod: credentials, API URL
        os.environ.setdefault(key, value)


def resolve_window(
    start: datetime | None, end: datetime | None, hours: float, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The window a run covers: as given, or the last ``hours`` before the current hour
    (what a scheduled run with default parameters processes)."""
    if end is None:
        end = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    if start is None:
        start = end - timedelta(hours=hours)
    if start >= end:
        raise InvalidConfigError(f"window start {start} is not before its end {end}")
    return start, end


def window_run_name(kind: str):
    """A flow-run namer saying which window ran, e.g. 'score 2026-06-01 00:00 to ...'."""

    def name() -> str:
        from prefect.runtime import flow_run

        params = flow_run.parameters.get("params") or {}
        if isinstance(params, dict):
            start, end = params.get("start"), params.get("end")
            hours = params.get("window_hours", 24)
        else:
            start, end, hours = params.start, params.end, params.window_hours
        start = datetime.fromisoformat(start) if isinstance(start, str) else start
        end = datetime.fromisoformat(end) if isinstance(end, str) else end
        start, end = resolve_window(start, end, hours)
        return f"{kind} {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}"

    return name


def ensure_demo_data(
    settings: Settings,
    n_rows: int = 20_000,
    days: int = 90,
    seed: int | None = None,
    review_pool: int | None = None,
    image_pool: int | None = None,
) -> Path:
    """Write the demo history under the data directory unless the same one is there."""
    seed = settings.seed if seed is None else seed
    recipe = {
        "rows": n_rows,
        "days": days,
        "seed": seed,
        "reviews": review_pool,
        "images": image_pool,
    }
    path = settings.demo_dir / "raw.parquet"
    stamp = settings.demo_dir / "history.json"
    if not path.exists() or not stamp.exists() or json.loads(stamp.read_text()) != recipe:
        sources = DemoSources.load().subset(review_pool, image_pool, seed)
        raw, latent = build_demo_dataset(sources, n_rows=n_rows, days=days, seed=seed)
        write_demo_dataset(raw, latent, settings.demo_dir)
        stamp.write_text(json.dumps(recipe))
    return path
