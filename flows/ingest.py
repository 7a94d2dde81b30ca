"""The ``ingest`` flow: window -> validate -> embed -> validate -> offline store -> online."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from features.embedding import embed_frame
from features.ingest import IngestResult, read_raw, select_window
from features.store import materialize, write_labels, write_offline
from features.validation import ValidationResult, check_batch
from flows.retries import retry_unless_permanent
from flows.runtime import Runtime, get_runtime, resolve_window, window_run_name


class IngestParams(BaseModel):
    """Parameters of one ingestion run (rendered as a form in the Prefect UI)."""

    model_config = ConfigDict(frozen=True)

    start: datetime | None = Field(
        default=None, description="Window start (inclusive, UTC); default: end - window_hours."
    )
    end: datetime | None = Field(
        default=None, description="Window end (exclusive, UTC); default: the current hour."
    )
    window_hours: float = Field(default=1, gt=0, description="Length of a default window.")
    materialize_days: float | None = Field(
        default=None,
        gt=0,
        description="Load only the last N days of the window into the online store "
        "(a backfill of old history need not be served online); None: the whole window.",
    )
    raw_path: str | None = Field(
        default=None, description="Raw Parquet/CSV; default: settings.raw_data_path."
    )


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=300,
    cache_policy=NO_CACHE,
)
def load_window(runtime: Runtime, path: Path, start: datetime, end: datetime) -> pd.DataFrame:
    return select_window(read_raw(path, runtime.config), runtime.config, start, end)


@task(cache_policy=NO_CACHE)
def validate(runtime: Runtime, frame: pd.DataFrame, kind: str, batch: str) -> ValidationResult:
    s = runtime.settings
    return check_batch(
        frame,
        runtime.config,
        kind=kind,
        quarantine_dir=s.quarantine_dir,
        context_dir=s.gx_dir,
        batch_name=f"{batch}-{kind}",
    )


@task(timeout_seconds=3600, cache_policy=NO_CACHE)
def embed(runtime: Runtime, frame: pd.DataFrame) -> pd.DataFrame:
    return embed_frame(
        frame,
        runtime.config,
        runtime.encoders,
        cache_dir=runtime.settings.embedding_cache_dir,
        show_progress=len(frame) > 2000,
    )


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=600,
    cache_policy=NO_CACHE,
)
def store_offline(runtime: Runtime, features: pd.DataFrame, raw: pd.DataFrame) -> tuple:
    rows = write_offline(features, runtime.config, runtime.settings.feast_dir)
    labelled = raw[raw[runtime.config.label].notna()] if runtime.config.label in raw else raw[:0]
    return rows, write_labels(labelled, runtime.config, runtime.settings.labels_dir)


@task(
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=600,
    cache_policy=NO_CACHE,
)
def materialize_online(runtime: Runtime, start: datetime, end: datetime) -> None:
    materialize(runtime.store, start, end)


@flow(
    name="ingest",
    flow_run_name=window_run_name("ingest"),
)
def ingest_flow(params: IngestParams) -> IngestResult:
    """Ingest the raw rows stamped in ``[params.start, params.end)``."""
    runtime = get_runtime()
    start, end = resolve_window(params.start, params.end, params.window_hours)
    path = Path(params.raw_path) if params.raw_path else runtime.settings.raw_data_path
    batch = f"{runtime.config.name}-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"
    raw = load_window(runtime, path, start, end)
    if raw.empty:  # a quiet hour is not an error; an empty batch passed to the gate is
        get_run_logger().info("no raw rows between %s and %s: nothing to ingest", start, end)
        return IngestResult(
            start=start, end=end, n_rows=0, rows_per_view={}, n_labels=0, materialized=False
        )
    raw_check = validate(runtime, raw, "raw", batch)
    features = embed(runtime, raw)
    feature_check = validate(runtime, features, "features", batch)
    rows, n_labels = store_offline(runtime, features, raw)
    online_from = start
    if params.materialize_days is not None:
        online_from = max(start, end - timedelta(days=params.materialize_days))
    materialize_online(runtime, online_from, end)
    result = IngestResult(
        start=start,
        end=end,
        n_rows=len(raw),
        rows_per_view=rows,
        n_labels=n_labels,
        materialized=True,
    )
    create_markdown_artifact(
        key="ingest-summary",
        markdown=(
            f"### Ingest {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}\n\n"
            f"| rows | labels | views | raw gate | feature gate |\n|---|---|---|---|---|\n"
            f"| {len(raw)} | {n_labels} | {rows} | {'pass' if raw_check.success else 'fail'} "
            f"| {'pass' if feature_check.success else 'fail'} |\n"
        ),
    )
    return result
