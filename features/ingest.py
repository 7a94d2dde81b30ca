"""Ingestion: raw rows of a time window -> gate -> embed -> gate -> offline store -> online.

Plain functions; the ``ingest`` flow calls :func:`ingest_window`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from features.embedding import Encoders, embed_frame
from features.schema import DatasetConfig
from features.store import materialize, write_labels, write_offline
from features.validation import check_batch


class IngestResult(BaseModel):
    """What one ingestion run did."""

    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime
    n_rows: int
    rows_per_view: dict[str, int]
    n_labels: int
    materialized: bool


@dataclass(frozen=True)
class IngestPaths:
    """Where ingestion reads and writes (all under the data directory by default)."""

    feast_dir: Path
    labels_dir: Path
    quarantine_dir: Path
    embedding_cache_dir: Path
    gx_dir: Path | None = None


def read_raw(path: Path, config: DatasetConfig) -> pd.DataFrame:
    """Read raw rows from Parquet or CSV, with the timestamp as timezone-aware UTC.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an unsupported file type, or a timestamp column that does not parse.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"raw data not found: {path}")
    if path.suffix == ".parquet" or path.is_dir():
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path, keep_default_na=True)
    else:
        raise ValueError(f"{path}: raw data must be .parquet or .csv")
    if config.timestamp in frame.columns:
        try:
            frame[config.timestamp] = pd.to_datetime(frame[config.timestamp], utc=True)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"{path}: column {config.timestamp!r} does not parse as timestamps: {exc}"
            ) from exc
    return frame


def select_window(
    frame: pd.DataFrame, config: DatasetConfig, start: datetime, end: datetime
) -> pd.DataFrame:
    """Rows stamped in ``[start, end)``."""
    stamps = frame[config.timestamp]
    mask = (stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(end))
    return frame[mask].reset_index(drop=True)


def ingest_window(
    raw: pd.DataFrame,
    config: DatasetConfig,
    store,
    encoders: Encoders,
    paths: IngestPaths,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
) -> IngestResult:
    """Validate, embed, store and materialise the raw rows of ``[start, end)``.

    Idempotent: ingesting the same window again rewrites the same rows (no duplicates)
    and re-uses the cached embeddings.

    Raises:
        DataQualityError: the raw batch or the feature frame failed the gate; the batch
            is quarantined and nothing is written to the stores.
    """
    now = now or datetime.now(UTC)
    window = select_window(raw, config, start, end)
    name = f"{config.name}-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"
    check_batch(
        window,
        config,
        kind="raw",
        quarantine_dir=paths.quarantine_dir,
        now=now,
        context_dir=paths.gx_dir,
        batch_name=f"{name}-raw",
    )
    features = embed_frame(window, config, encoders, cache_dir=paths.embedding_cache_dir)
    check_batch(
        features,
        config,
        kind="features",
        quarantine_dir=paths.quarantine_dir,
        now=now,
        context_dir=paths.gx_dir,
        batch_name=f"{name}-features",
    )
    rows = write_offline(features, config, paths.feast_dir)
    n_labels = 0
    if config.label in window.columns and window[config.label].notna().any():
        n_labels = write_labels(window[window[config.label].notna()], config, paths.labels_dir)
    materialize(store, start, end)
    return IngestResult(
        start=start,
        end=end,
        n_rows=len(window),
        rows_per_view=rows,
        n_labels=n_labels,
        materialized=True,
    )
