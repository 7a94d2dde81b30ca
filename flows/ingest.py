"""The ``ingest`` flow: window -> validate -> embed -> validate -> offline store -> online."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from features.embedding import record_encoders
from features.ingest import IngestResult, ingest_rows, read_raw
from features.store import materialize, offline_dir, write_labels, write_offline
from features.tokens import write_tokens
from features.validation import DataQualityError
from flows.retries import retry_unless_permanent
from flows.runtime import Runtime, get_runtime, resolve_window, window_run_name
from flows.task_runners import embed_in_chunks, run_chunked


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
        "(a backfill of old history need not be served online); None: the settings' "
        "online_days (MMOPS_ONLINE_DAYS, default 1).",
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
    return read_raw(path, runtime.config, start, end)


@task(timeout_seconds=3600, cache_policy=NO_CACHE)
def gate_and_embed(runtime: Runtime, frame: pd.DataFrame, batch: str) -> dict:
    """Row-level gate on the raw rows, embeddings of those that pass, gate on the features.
    A batch quarantined as a whole comes back as ``{"error": DataQualityError}`` so that
    its summary is logged once, by the flow, not once per layer with a traceback each."""
    settings = runtime.settings
    embed = None
    if run_chunked(settings):  # on the Dask workers, in chunks; else here, in one call
        embed = partial(embed_in_chunks, settings=settings, chunk_rows=settings.chunk_rows)
    try:
        return ingest_rows(
            frame,
            runtime.config,
            None if embed else runtime.encoders,
            runtime.ingest_paths,
            batch,
            datetime.now(UTC),
            show_progress=len(frame) > 2000,
            embed=embed,
        )
    except DataQualityError as error:
        return {"error": error}


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=600,
    cache_policy=NO_CACHE,
)
def store_offline(runtime: Runtime, features: pd.DataFrame, raw: pd.DataFrame) -> tuple:
    rows = write_offline(features, runtime.config, runtime.settings.feast_dir)
    record_encoders(offline_dir(runtime.settings.feast_dir), runtime.encoder_ids)
    write_tokens(raw, runtime.config, runtime.settings.tokens_dir)
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
    """Ingest the raw rows stamped in ``[params.start, params.end)``.

    Raises:
        DataQualityError: the whole batch was quarantined (its summary is in the message).
    """
    runtime = get_runtime()
    logger = get_run_logger()
    start, end = resolve_window(params.start, params.end, params.window_hours)
    runtime.check_offline_encoders()
    path = Path(params.raw_path) if params.raw_path else runtime.settings.raw_data_path
    batch = f"{runtime.config.name}-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"
    raw = load_window(runtime, path, start, end)
    if raw.empty:  # a quiet hour is not an error; an empty batch passed to the gate is
        logger.info("no raw rows between %s and %s: nothing to ingest", start, end)
        return IngestResult(
            start=start, end=end, n_rows=0, rows_per_view={}, n_labels=0, materialized=False
        )
    outcome = gate_and_embed(runtime, raw, batch)
    if "error" in outcome:  # raised once, here: Prefect logs its summary once
        error = outcome["error"]
        error.rows_in = len(raw)
        if error.result.summary_page:
            _publish_validation(batch, [error.result.summary_page])
        raise error
    _publish_validation(batch, outcome.get("validation_pages", []))
    features, good = outcome["features"], outcome["raw"]
    if outcome["quarantined"]:
        logger.warning(
            "%d of %d rows quarantined (%s): %s",
            outcome["quarantined"],
            len(raw),
            "; ".join(f"{k} x{v}" for k, v in outcome["reasons"].items()),
            ", ".join(outcome["paths"]),
        )
    rows, n_labels = store_offline(runtime, features, good) if len(features) else ({}, 0)
    online_from = start
    days = params.materialize_days or runtime.settings.online_days
    if days is not None:
        online_from = max(start, end - timedelta(days=days))
    if len(features):
        materialize_online(runtime, online_from, end)
    result = IngestResult(
        start=start,
        end=end,
        n_rows=len(raw),
        rows_per_view=rows,
        n_labels=n_labels,
        materialized=bool(len(features)),
        stored=len(features),
        quarantined=outcome["quarantined"],
        reasons=outcome["reasons"],
        quarantine_paths=outcome["paths"],
    )
    create_markdown_artifact(
        key="ingest-summary",
        markdown=(
            f"### Ingest {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}\n\n"
            f"| rows in | stored | quarantined | labels | views |\n|---|---|---|---|---|\n"
            f"| {len(raw)} | {len(features)} | {outcome['quarantined']} | {n_labels} "
            f"| {rows} |\n"
        ),
    )
    return result


def _publish_validation(batch: str, pages: list[str]) -> None:
    """The gates' offline summary pages as a Prefect artifact of the ingest run (Prefect
    renders markdown, not HTML files, so the artifact links the pages and the index)."""
    if not pages:
        return
    index = Path(pages[0]).parent / "index.html"
    create_markdown_artifact(
        key="ingest-validation",
        markdown="\n".join(
            [
                f"### Data-quality gate of {batch}",
                "",
                *(f"- [{Path(p).stem}]({Path(p).resolve().as_uri()})" for p in pages),
                f"- [every validated batch]({index.resolve().as_uri()})",
            ]
        ),
        description=f"Great Expectations results of {batch} (pages render offline)",
    )
