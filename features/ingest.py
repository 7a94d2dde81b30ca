"""Ingestion: raw rows of a time window -> gate -> embed -> gate -> offline store -> online.

Plain functions; the ``ingest`` flow calls :func:`ingest_window`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.embedding import Encoders, embed_frame
from features.schema import OTHER, DatasetConfig
from features.store import materialize, write_labels, write_offline
from features.validation import DataQualityError, gate_rows


class IngestResult(BaseModel):
    """What one ingestion run did."""

    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime
    n_rows: int = Field(description="Rows of the window read (rows_in).")
    rows_per_view: dict[str, int]
    n_labels: int
    materialized: bool
    stored: int = Field(default=0, description="Rows that passed the gate and were stored.")
    quarantined: int = Field(default=0, description="Rows set aside with their reasons.")
    reasons: dict[str, int] = Field(default_factory=dict, description="Rows per reason.")
    quarantine_paths: list[str] = Field(default_factory=list)

    def counts(self) -> dict[str, object]:
        """``{"rows_in", "stored", "quarantined", "reasons"}``; rows_in = stored +
        quarantined."""
        return {
            "rows_in": self.n_rows,
            "stored": self.stored,
            "quarantined": self.quarantined,
            "reasons": dict(self.reasons),
        }


@dataclass(frozen=True)
class IngestPaths:
    """Where ingestion reads and writes (all under the data directory by default)."""

    feast_dir: Path
    labels_dir: Path
    quarantine_dir: Path
    embedding_cache_dir: Path
    gx_dir: Path | None = None


_OFFSET = r"(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"
CSV_CHUNK_ROWS = 100_000


def parse_timestamps(values: pd.Series, timezone: str = "UTC") -> pd.Series:
    """Timestamps as ``datetime64[ns, UTC]``, row by row: values with an offset keep it,
    naive ones are read in ``timezone``; what does not parse becomes NaT (one bad value
    never fails the others)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert(
            "UTC"
        )
    text = values.astype("string").str.strip()
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    aware = text.str.contains(_OFFSET, regex=True, na=False)
    for mask, naive in ((aware, False), (~aware & text.notna(), True)):
        if not mask.any():
            continue
        part = text[mask]
        parsed = pd.to_datetime(part, errors="coerce", format="ISO8601", utc=not naive)
        retry = parsed.isna()
        if retry.any():  # other layouts ("03/01/2026 10:00"), element by element
            parsed = parsed.astype(object)
            parsed[retry] = pd.to_datetime(
                part[retry], errors="coerce", format="mixed", utc=not naive
            )
            parsed = pd.to_datetime(parsed, utc=not naive)
        if naive:
            parsed = parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
        out[mask] = parsed.dt.tz_convert("UTC")
    return out


def _label_text(value: object, known: set[str] | None = None) -> object:
    """A label or category as the text it is compared by: 1, 1.0 and (when 1.0 is not
    itself declared) "1.0" all become "1"."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else str(float(value))
    if isinstance(value, str) and known is not None and value not in known:
        try:
            number = float(value)
        except ValueError:
            return value
        if number.is_integer() and str(int(number)) in known:
            return str(int(number))
    return value


def _entity_values(values: pd.Series, entity_type: str) -> pd.Series:
    if entity_type == "string":
        return values.map(_label_text).astype(object)
    if pd.api.types.is_integer_dtype(values.dtype):
        return values
    numbers = pd.to_numeric(values, errors="coerce")
    whole = numbers.notna() & (numbers % 1 == 0)
    if whole.all():
        return numbers.astype("int64")
    # keys that are not integers: kept as text, their rows fail the gate one by one
    return values.map(lambda v: int(v) if _is_int_like(v) else v).astype(object)


def _is_int_like(value: object) -> bool:
    try:
        return float(value) % 1 == 0
    except (TypeError, ValueError):
        return False


def coerce_raw(frame: pd.DataFrame, config: DatasetConfig) -> pd.DataFrame:
    """Raw rows with the declared types: the entity key as int64 or text
    (``entity_type``), the timestamp in UTC (naive ones in ``config.timestamp``'s
    ``timezone``), labels and categories as their text (``dtype: int`` codes 1 / 1.0 / "1"
    all become "1"), unknown categories mapped to ``other`` where declared.
    Idempotent; values that cannot be coerced are left for the gate to quarantine."""
    frame = frame.copy()
    if config.entity_key in frame.columns:
        frame[config.entity_key] = _entity_values(frame[config.entity_key], config.entity_type)
    if config.timestamp in frame.columns:
        frame[config.timestamp] = parse_timestamps(frame[config.timestamp], config.timezone)
    if config.label in frame.columns:
        known = set(config.classes)
        frame[config.label] = (
            frame[config.label].map(lambda v: _label_text(v, known)).astype(object)
        )
    for spec in config.categorical:
        if spec.name not in frame.columns:
            continue
        known = set(spec.categories)
        values = frame[spec.name].map(lambda v, k=known: _label_text(v, k)).astype(object)
        if spec.unknown_category == OTHER:
            unknown = values.notna() & ~values.isin(known)
            values = values.where(~unknown, OTHER)
        frame[spec.name] = values
    return frame


def _text_columns(config: DatasetConfig) -> list[str]:
    """Columns read from a CSV as text, never guessed as numbers ("007" stays "007")."""
    columns = [config.label, *config.text_columns, *config.image_columns]
    columns += [c.name for c in config.categorical if c.dtype == "str"]
    if config.entity_type == "string":
        columns.append(config.entity_key)
    return columns


def read_raw(
    path: Path,
    config: DatasetConfig,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pd.DataFrame:
    """Read raw rows from Parquet or CSV, coerced to the declared types
    (:func:`coerce_raw`), keeping only those stamped in ``[start, end)`` when given.

    Only the window's rows are kept in memory: Parquet with a timestamp column is read
    through a pyarrow dataset filter; a CSV is read in chunks (``csv_encoding``). A row
    whose timestamp does not parse belongs to no window and never blocks the others.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an unsupported file type, or a CSV that is not in ``csv_encoding``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"raw data not found: {path}")
    if path.suffix == ".parquet" or path.is_dir():
        frame = _read_parquet_window(path, config, start, end)
    elif path.suffix == ".csv":
        frame = _read_csv_window(path, config, start, end)
    else:
        raise ValueError(f"{path}: raw data must be .parquet or .csv")
    frame = coerce_raw(frame, config)
    if (start is not None or end is not None) and config.timestamp in frame.columns:
        frame = _between(frame, config, start, end)
    return frame.reset_index(drop=True)


def _between(frame, config, start, end) -> pd.DataFrame:
    stamps = frame[config.timestamp]
    mask = stamps.notna()
    if start is not None:
        mask &= stamps >= pd.Timestamp(start)
    if end is not None:
        mask &= stamps < pd.Timestamp(end)
    return frame[mask.to_numpy()]


def _read_parquet_window(path: Path, config: DatasetConfig, start, end) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.dataset as ds

    dataset = ds.dataset(str(path), format="parquet")
    field = (
        dataset.schema.field(config.timestamp) if config.timestamp in dataset.schema.names else None
    )
    condition = None
    if field is not None and pa.types.is_timestamp(field.type) and field.type.tz is not None:
        for bound, op in ((start, "ge"), (end, "lt")):
            if bound is None:
                continue
            value = pa.scalar(pd.Timestamp(bound).tz_convert("UTC"), type=pa.timestamp("ns", "UTC"))
            term = (
                ds.field(config.timestamp) >= value
                if op == "ge"
                else ds.field(config.timestamp) < value
            )
            condition = term if condition is None else condition & term
    return dataset.to_table(filter=condition).to_pandas()


def _read_csv_window(path: Path, config: DatasetConfig, start, end) -> pd.DataFrame:
    header = pd.read_csv(path, nrows=0, encoding=config.csv_encoding).columns
    text = {c: "string" for c in _text_columns(config) if c in header}
    chunks = []
    try:
        reader = pd.read_csv(
            path,
            encoding=config.csv_encoding,
            dtype=text,
            keep_default_na=True,
            chunksize=CSV_CHUNK_ROWS,
        )
        for chunk in reader:
            if (start is not None or end is not None) and config.timestamp in chunk.columns:
                chunk[config.timestamp] = parse_timestamps(chunk[config.timestamp], config.timezone)
                chunk = _between(chunk, config, start, end)
            chunks.append(chunk)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not valid {config.csv_encoding} text ({error.reason} at byte "
            f"{error.start}); declare the file's encoding as csv_encoding in the dataset "
            "config (e.g. latin-1, cp1252)"
        ) from error
    frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=header)
    for column in text:  # pandas' nullable strings -> plain objects with None
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def select_window(
    frame: pd.DataFrame, config: DatasetConfig, start: datetime, end: datetime
) -> pd.DataFrame:
    """Rows stamped in ``[start, end)``."""
    return _between(frame, config, start, end).reset_index(drop=True)


def ingest_window(
    raw: pd.DataFrame,
    config: DatasetConfig,
    store,
    encoders: Encoders,
    paths: IngestPaths,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
    materialize_from: datetime | None = None,
) -> IngestResult:
    """Validate, embed, store and materialise the raw rows of ``[start, end)``.

    Rows failing the gate are quarantined with their reasons and the others proceed
    (:func:`features.validation.gate_rows`); rows without a label are stored too (their
    labels are joined when they arrive). Idempotent: ingesting the same window again
    rewrites the same rows (no duplicates) and re-uses the cached embeddings.

    Args:
        materialize_from: load only rows from here on into the online store (a backfill
            of old history need not be served online); default ``start``.

    Raises:
        DataQualityError: the whole batch was quarantined (a batch-level failure, or more
            bad rows than ``config.max_bad_row_share``); nothing is written to the stores.
    """
    now = now or datetime.now(UTC)
    window = select_window(coerce_raw(raw, config), config, start, end)
    name = f"{config.name}-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"
    outcome = ingest_rows(window, config, encoders, paths, name, now)
    features, good = outcome["features"], outcome["raw"]
    rows = write_offline(features, config, paths.feast_dir)
    n_labels = 0
    if config.label in good.columns and good[config.label].notna().any():
        n_labels = write_labels(good[good[config.label].notna()], config, paths.labels_dir)
    materialized = False
    if len(features):
        materialize(store, max(start, materialize_from or start), end)
        materialized = True
    return IngestResult(
        start=start,
        end=end,
        n_rows=len(window),
        rows_per_view=rows,
        n_labels=n_labels,
        materialized=materialized,
        stored=len(features),
        quarantined=outcome["quarantined"],
        reasons=outcome["reasons"],
        quarantine_paths=outcome["paths"],
    )


def ingest_rows(
    window: pd.DataFrame,
    config: DatasetConfig,
    encoders: Encoders | None,
    paths: IngestPaths,
    name: str,
    now: datetime,
    show_progress: bool = False,
    embed: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> dict:
    """Raw gate -> embed the passing rows -> feature gate. Returns the passing raw rows,
    their feature frame, the quarantine counts, reasons and folders, and the gates'
    offline summary pages (``validation_pages``, when ``paths.gx_dir`` is set).

    Args:
        embed: turns the passing raw rows into their feature frame (rows in order), e.g.
            in chunks on a cluster; None: ``embed_frame`` here with ``encoders`` and the
            embedding cache.

    Raises:
        DataQualityError: a gate quarantined the whole batch.
    """
    raw_gate = gate_rows(
        window,
        config,
        kind="raw",
        quarantine_dir=paths.quarantine_dir,
        now=now,
        context_dir=paths.gx_dir,
        batch_name=f"{name}-raw",
    )
    good = raw_gate.passed
    pages = [raw_gate.result.summary_page] if raw_gate.result.summary_page else []
    reasons = dict(raw_gate.reasons)
    quarantined = raw_gate.n_quarantined
    folders = [raw_gate.result.quarantine_path] if raw_gate.result.quarantine_path else []
    if good.empty:
        return {
            "raw": good,
            "features": good.iloc[:0],
            "quarantined": quarantined,
            "reasons": reasons,
            "paths": folders,
            "validation_pages": pages,
        }
    if embed is not None:
        features = embed(good)
    else:
        features = embed_frame(
            good, config, encoders, cache_dir=paths.embedding_cache_dir, show_progress=show_progress
        )
    feature_gate = gate_rows(
        features,
        config,
        kind="features",
        quarantine_dir=paths.quarantine_dir,
        now=now,
        context_dir=paths.gx_dir,
        batch_name=f"{name}-features",
        max_bad_share=config.max_bad_row_share,
    )
    if feature_gate.n_quarantined:
        keep = np.ones(len(good), dtype=bool)
        keep[feature_gate.bad_rows] = False
        good = good[keep].reset_index(drop=True)
        for reason, count in feature_gate.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
        quarantined += feature_gate.n_quarantined
        folders.append(str(feature_gate.result.quarantine_path))
    if feature_gate.result.summary_page:
        pages.append(feature_gate.result.summary_page)
    return {
        "raw": good,
        "features": feature_gate.passed,
        "quarantined": quarantined,
        "reasons": reasons,
        "paths": folders,
        "validation_pages": pages,
    }


def whole_batch_counts(error: DataQualityError, rows_in: int) -> dict[str, object]:
    """The ``--json`` counts of a batch quarantined as a whole."""
    return {
        "rows_in": rows_in,
        "stored": 0,
        "quarantined": rows_in,
        "reasons": error.result.reasons(),
        "quarantine_path": error.result.quarantine_path,
    }


class LabelResult(BaseModel):
    """What one label delivery did."""

    model_config = ConfigDict(frozen=True)

    rows_in: int
    stored: int
    rejected: int
    reasons: dict[str, int] = Field(default_factory=dict)


def ingest_labels(
    labels: pd.DataFrame, config: DatasetConfig, labels_dir: Path, feast_dir: Path
) -> LabelResult:
    """Join labels that arrive after their rows: each needs the entity key and the label;
    without a timestamp column, a label goes to the latest ingested row of its entity.

    Labels outside ``config.classes``, or of entities never ingested, are rejected with
    a reason and not stored.

    Raises:
        ValueError: the frame lacks the entity key or the label column.
    """
    missing = [c for c in (config.entity_key, config.label) if c not in labels.columns]
    if missing:
        raise ValueError(f"labels lack the columns {missing} (entity key and label)")
    frame = coerce_raw(labels, config)
    reasons: dict[str, int] = {}

    def reject(mask: pd.Series, reason: str) -> None:
        if mask.any():
            reasons[reason] = reasons.get(reason, 0) + int(mask.sum())

    bad_label = ~frame[config.label].isin(config.classes)
    reject(bad_label, f"{config.label}: not among the classes {list(config.classes)}")
    frame = frame[~bad_label.to_numpy()]
    if config.timestamp not in frame.columns or frame[config.timestamp].isna().any():
        from features.definitions import active_view_kinds, view_name
        from features.store import offline_dir, read_day_files

        folder = offline_dir(feast_dir) / view_name(config, active_view_kinds(config)[0])
        keys = [config.entity_key, config.timestamp]
        rows = read_day_files(folder, config.entity_key, config.timestamp, columns=keys)
        latest = rows.drop_duplicates(config.entity_key, keep="last")
        stamps = frame[config.entity_key].map(latest.set_index(config.entity_key)[config.timestamp])
        if config.timestamp in frame.columns:
            stamps = frame[config.timestamp].where(frame[config.timestamp].notna(), stamps)
        frame = frame.assign(**{config.timestamp: stamps})
        unknown = frame[config.timestamp].isna()
        reject(unknown, f"{config.entity_key}: no ingested row to attach the label to")
        frame = frame[~unknown.to_numpy()]
    if len(frame):
        write_labels(frame, config, labels_dir)
    return LabelResult(
        rows_in=len(labels),
        stored=len(frame),
        rejected=len(labels) - len(frame),
        reasons=reasons,
    )
