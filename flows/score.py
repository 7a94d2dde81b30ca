"""The ``score`` flow: features of a window's rows from Feast -> champion -> prediction log."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from features.embedding import check_encoders, encoder_ids
from features.errors import EmptyWindowError, NoChampionError
from features.store import get_monitoring_frame, read_entities
from flows.retries import retry_unless_permanent
from flows.runtime import Runtime, get_runtime, resolve_window, window_run_name
from flows.task_runners import run_chunked, score_in_chunks
from flows.train import ENCODERS_TAG, registered_model_name
from monitoring.scoring import score_frame, write_prediction_log
from training.pyfunc import load_pyfunc
from training.registry import CHAMPION, connect, current_champion, download_version


class ScoreParams(BaseModel):
    """Parameters of one scoring run."""

    model_config = ConfigDict(frozen=True)

    start: datetime | None = Field(
        default=None, description="Window start (inclusive, UTC); default: end - window_hours."
    )
    end: datetime | None = Field(
        default=None, description="Window end (exclusive, UTC); default: the current hour."
    )
    window_hours: float = Field(default=24, gt=0, description="Length of a default window.")


class ScoreOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_version: str
    n_rows: int
    positive_share: float


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=600,
    cache_policy=NO_CACHE,
)
def load_window_features(runtime: Runtime, start: datetime, end: datetime) -> pd.DataFrame:
    entities = read_entities(runtime.config, runtime.settings.feast_dir, start, end)
    if entities.empty:
        raise EmptyWindowError(f"no ingested rows between {start} and {end}: ingest them first")
    return get_monitoring_frame(runtime.store, runtime.config, entities)


@task(
    retries=3,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=300,
    cache_policy=NO_CACHE,
)
def load_champion(runtime: Runtime) -> tuple[str, object, Path]:
    """The champion's version, pyfunc model and its folder (cached on disk per version)."""
    client = connect(runtime.settings.tracking_uri)
    name = registered_model_name(runtime)
    version = current_champion(client, name)
    if version is None:
        raise NoChampionError(f"{name} has no {CHAMPION}: train and promote a model first")
    check_champion_encoders(runtime, client, name, version)
    cache = runtime.settings.data_dir / "models" / name / version
    if not (cache / "MLmodel").exists() and not any(cache.glob("*/MLmodel")):
        with tempfile.TemporaryDirectory(dir=runtime.settings.data_dir) as tmp:
            local = download_version(client, name, version, Path(tmp))
            cache.parent.mkdir(parents=True, exist_ok=True)
            Path(local).rename(cache)
    folder = cache if (cache / "MLmodel").exists() else next(cache.glob("*/MLmodel")).parent
    return version, load_pyfunc(folder), folder


def check_champion_encoders(runtime: Runtime, client, name: str, version: str) -> None:
    """Refuse a champion fitted on vectors of other encoders than the settings' (its
    drift reference too): it would score, and be monitored on, vectors it never saw.
    Runs from before the tag existed were trained with the fp32 encoders.

    Raises:
        EncoderMismatchError: naming both variants; retraining under the new variant
            (on re-ingested history) gives a matching model and drift reference.
    """
    run_id = client.get_model_version(name, version).run_id
    tag = client.get_run(run_id).data.tags.get(ENCODERS_TAG)
    recorded = json.loads(tag) if tag else encoder_ids(runtime.config, "fp32")
    check_encoders(recorded, runtime.encoder_ids, f"champion {name} v{version}")


@task(timeout_seconds=600, cache_policy=NO_CACHE)
def score(
    runtime: Runtime, model, folder: Path, version: str, features: pd.DataFrame
) -> pd.DataFrame:
    settings = runtime.settings
    if run_chunked(settings):  # in chunks on the Dask workers, each loading the champion
        scored_at = datetime.now(UTC)
        return score_in_chunks(
            features, settings, str(folder), version, scored_at, settings.chunk_rows
        )
    return score_frame(model, features, runtime.config, version)


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def append_log(runtime: Runtime, log: pd.DataFrame) -> int:
    return write_prediction_log(log, runtime.config, runtime.settings.prediction_log_dir)


@flow(name="score", flow_run_name=window_run_name("score"))
def score_flow(params: ScoreParams) -> ScoreOutcome:
    """Score the rows ingested for the window with the champion into the prediction log."""
    runtime = get_runtime()
    start, end = resolve_window(params.start, params.end, params.window_hours)
    features = load_window_features(runtime, start, end)
    version, model, folder = load_champion(runtime)
    log = score(runtime, model, folder, version, features)
    append_log(runtime, log)
    positive = runtime.config.classes[-1]
    share = float((log["prediction"] == positive).mean())
    create_markdown_artifact(
        key="score-summary",
        markdown=f"### Scored {len(log)} rows with v{version}\n\nPredicted '{positive}': {share:.1%}\n",
    )
    return ScoreOutcome(model_version=version, n_rows=len(log), positive_share=share)
