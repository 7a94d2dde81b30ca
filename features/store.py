"""The Feast store: configuration, offline writes, materialisation and retrieval.

Offline data are Parquet files, one per view and UTC day, read by Feast's DuckDB offline
store (the fastest Feast supports on one machine; see benchmarks/README.md). Writes merge
into the day files and keep one row per (entity, timestamp), so ingesting the same window
twice leaves no duplicates.

Every day file is merged under a cross-process lock and replaced atomically
(``features.state_io``), so concurrent writers never lose each other's rows and a reader
never sees half a file. A day file that cannot be read is moved aside and the error names
it and the step that rebuilds it from its source of truth: the raw data for the offline
store and the labels (re-ingest the day), the offline store and the registry for the
prediction log (re-score the day).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore, RepoConfig

from features.definitions import (
    FeastDefinitions,
    active_view_kinds,
    build_definitions,
    view_columns,
    view_name,
)
from features.schema import DatasetConfig
from features.state_io import (
    CorruptStateError,
    atomic_write_frame,
    atomic_write_table,
    locked,
    move_aside,
)

logger = logging.getLogger(__name__)

REINGEST = (
    "Its source of truth is the raw data: re-ingest that day with "
    "`mmops ingest --start {start} --end {end}`."
)
RESCORE = (
    "Its source of truth is the offline store and the champion: re-score that day with "
    "`mmops score --start {start} --end {end}`."
)


def feast_repo_config(
    config: DatasetConfig,
    feast_dir: Path,
    online_store: dict | None = None,
    registry: str | dict | None = None,
    offline_store: dict | None = None,
) -> RepoConfig:
    """A ``RepoConfig`` for the embedded default (or the given stores).

    Args:
        config: the dataset; its name is the Feast project.
        feast_dir: where the registry, the SQLite online store and the offline files live.
        online_store: Feast online-store config; default SQLite under ``feast_dir``.
        registry: registry path or config; default a file under ``feast_dir``.
        offline_store: offline-store config; default DuckDB.
    """
    feast_dir = Path(feast_dir)
    return RepoConfig(
        project=config.name,
        provider="local",
        registry=registry or str(feast_dir / "registry.db"),
        online_store=online_store or {"type": "sqlite", "path": str(feast_dir / "online.db")},
        offline_store=offline_store or {"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=str(feast_dir),
    )


def offline_dir(feast_dir: Path) -> Path:
    return Path(feast_dir) / "offline"


def open_store(repo_config: RepoConfig) -> FeatureStore:
    Path(repo_config.repo_path).mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config)


def apply_definitions(store: FeatureStore, definitions: FeastDefinitions) -> None:
    """Register the entity, sources, views and feature service (idempotent)."""
    store.apply(definitions.objects)


def prepare_store(config: DatasetConfig, feast_dir: Path, **stores) -> FeatureStore:
    """Open the store and apply the dataset's definitions."""
    store = open_store(feast_repo_config(config, feast_dir, **stores))
    apply_definitions(store, build_definitions(config, offline_dir(feast_dir)))
    return store


def _to_arrow(frame: pd.DataFrame, config: DatasetConfig, kind: str) -> pa.Table:
    columns = [config.entity_key, config.timestamp, *view_columns(config, kind)]
    part = frame[columns].copy()
    if kind == "tabular":
        for column in config.numeric_columns:
            part[column] = part[column].astype("float64")
        for column in config.categorical_columns:
            part[column] = part[column].astype("string")
        return pa.Table.from_pandas(part, preserve_index=False)
    arrays = {}
    for name in part.columns:
        if name.endswith("_emb"):
            matrix = np.stack(part[name].to_numpy()).astype(np.float32)
            arrays[name] = pa.FixedSizeListArray.from_arrays(
                pa.array(matrix.ravel()), matrix.shape[1]
            ).cast(pa.list_(pa.float32()))
        else:
            arrays[name] = pa.array(part[name].to_numpy())
    return pa.table(arrays)


def write_offline(frame: pd.DataFrame, config: DatasetConfig, feast_dir: Path) -> dict[str, int]:
    """Merge a feature frame into the offline store's day files.

    Returns:
        Rows per view in the day files touched, after the merge.

    Raises:
        CorruptStateError: a day file was unreadable (moved aside; the new rows were
            written; re-ingest the day to restore the rest).
    """
    if frame.empty:
        return {}
    root = offline_dir(feast_dir)
    return {
        kind: merge_day_files(
            _to_arrow(frame, config, kind),
            root / view_name(config, kind),
            config.entity_key,
            config.timestamp,
            recovery=REINGEST,
        )
        for kind in active_view_kinds(config)
    }


def _day_window(day: str) -> tuple[str, str]:
    start = datetime.fromisoformat(day)
    return f"{start:%Y-%m-%d}", f"{start + timedelta(days=1):%Y-%m-%d}"


def _recovery(template: str, day: str) -> str:
    start, end = _day_window(day)
    return template.format(start=start, end=end)


def _cause(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"


def merge_day_files(
    table: pa.Table,
    folder: Path,
    entity_key: str,
    timestamp: str,
    recovery: str = REINGEST,
) -> int:
    """Merge rows into one Parquet file per UTC day, one row per (entity, timestamp).

    A row written again replaces the earlier one. Each day file's read-modify-write holds
    the file's lock (across processes) and the file is replaced atomically, so two
    writers of the same day keep both their rows and a killed writer leaves the old file.

    Args:
        recovery: what rebuilds a corrupt day file, with ``{start}`` / ``{end}``
            placeholders for the day (part of the error message).

    Returns:
        Rows in the day files touched, after the merge.

    Raises:
        CorruptStateError: an existing day file was unreadable. It was moved aside and
            the new rows were written (every touched day is written before raising); the
            error names the file and the recovery step.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stamps = table.column(timestamp).to_pandas()
    days = pd.to_datetime(stamps, utc=True).dt.strftime("%Y-%m-%d").to_numpy()
    total = 0
    corrupt: list[CorruptStateError] = []
    for day in np.unique(days):
        part = table.filter(pa.array(days == day))
        path = folder / f"{day}.parquet"
        with locked(path):
            if path.exists():
                try:
                    existing = pq.read_table(path)
                except Exception as error:  # noqa: BLE001 - unreadable means corrupt
                    aside = move_aside(path)
                    corrupt.append(
                        CorruptStateError(path, aside, _recovery(recovery, day), _cause(error))
                    )
                else:
                    part = pa.concat_tables([existing.cast(part.schema), part])
            keys = part.select([entity_key, timestamp]).to_pandas()
            keep = ~keys.duplicated(keep="last").to_numpy()
            if not keep.all():
                part = part.filter(pa.array(keep))
            atomic_write_table(part, path)
        total += part.num_rows
    if corrupt:
        for error in corrupt[1:]:
            logger.error("%s", error)
        raise corrupt[0]
    return total


LABEL_HISTORY = "history"
PREVIOUS_LABEL = "previous_label"
CHANGED_AT = "changed_at"


def label_history_dir(labels_dir: Path) -> Path:
    """Where overwritten labels are kept (beside the label day files)."""
    return Path(labels_dir) / LABEL_HISTORY


def record_label_changes(part: pd.DataFrame, config: DatasetConfig, labels_dir: Path) -> int:
    """Keep every label that ``part`` would overwrite with a different one as history
    (entity, timestamp, previous label, new label, when); returns how many.

    Recorded before the overwrite is written; a retried delivery does not record the
    same change twice.
    """
    keys = [config.entity_key, config.timestamp]
    stamps = pd.to_datetime(part[config.timestamp], utc=True)
    existing = read_day_files(
        Path(labels_dir),
        config.entity_key,
        config.timestamp,
        stamps.min().to_pydatetime(),
        (stamps.max() + pd.Timedelta(microseconds=1)).to_pydatetime(),
        [*keys, config.label],
    )
    if existing.empty:
        return 0
    merged = part.merge(
        existing.rename(columns={config.label: PREVIOUS_LABEL}), on=keys, how="inner"
    )
    changed = merged[merged[config.label].astype(str) != merged[PREVIOUS_LABEL].astype(str)]
    if changed.empty:
        return 0
    changed = changed[[*keys, PREVIOUS_LABEL, config.label]].assign(
        **{CHANGED_AT: pd.Timestamp.now(tz="UTC")}
    )
    folder = label_history_dir(labels_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "changes.parquet"
    with locked(path):
        if path.exists():
            old = pd.read_parquet(path)
            changed = pd.concat([old, changed], ignore_index=True)
        changed = changed.drop_duplicates([*keys, PREVIOUS_LABEL, config.label], keep="first")
        atomic_write_frame(changed, path)
    return int(len(changed))


def read_label_history(config: DatasetConfig, labels_dir: Path) -> pd.DataFrame:
    """Every recorded label overwrite (empty when none)."""
    path = label_history_dir(labels_dir) / "changes.parquet"
    if not path.exists():
        return pd.DataFrame(
            columns=[config.entity_key, config.timestamp, PREVIOUS_LABEL, config.label, CHANGED_AT]
        )
    return pd.read_parquet(path)


def write_labels(frame: pd.DataFrame, config: DatasetConfig, labels_dir: Path) -> int:
    """Merge (entity, timestamp, label) rows into the label store; labels may arrive late.

    A different label for a known (entity, timestamp) replaces the stored one, and the
    replaced one is kept in the label history (:func:`read_label_history`)."""
    if frame.empty:
        return 0
    part = frame[[config.entity_key, config.timestamp, config.label]].copy()
    part[config.label] = part[config.label].astype(str)
    record_label_changes(part, config, labels_dir)
    table = pa.Table.from_pandas(part, preserve_index=False)
    return merge_day_files(
        table, Path(labels_dir), config.entity_key, config.timestamp, recovery=REINGEST
    )


def read_day_files(
    folder: Path,
    entity_key: str,
    timestamp: str,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: list[str] | None = None,
    recovery: str = REINGEST,
) -> pd.DataFrame:
    """Rows of the day files in ``folder`` stamped in ``[start, end)`` (unbounded when
    None), sorted by time then entity; only the day files that can hold them are read.

    Raises:
        CorruptStateError: a day file is unreadable; it was moved aside and the error
            names it and ``recovery`` (formatted with the day's ``{start}`` / ``{end}``).
    """
    files = sorted(Path(folder).glob("*.parquet"))
    if start is not None:
        files = [f for f in files if f.stem >= f"{pd.Timestamp(start):%Y-%m-%d}"]
    if end is not None:
        files = [f for f in files if f.stem <= f"{pd.Timestamp(end):%Y-%m-%d}"]
    if not files:
        return pd.DataFrame(columns=columns or [entity_key, timestamp])
    frame = pd.concat([_read_day_file(f, columns, recovery) for f in files], ignore_index=True)
    stamps = frame[timestamp]
    mask = np.ones(len(frame), dtype=bool)
    if start is not None:
        mask &= (stamps >= pd.Timestamp(start)).to_numpy()
    if end is not None:
        mask &= (stamps < pd.Timestamp(end)).to_numpy()
    return frame[mask].sort_values([timestamp, entity_key]).reset_index(drop=True)


def _read_day_file(path: Path, columns: list[str] | None, recovery: str) -> pd.DataFrame:
    """One day file. If it fails to read, look again under its lock (a writer may have
    just replaced it); a file that still cannot be read whole is moved aside and named in
    the error. A file that reads whole but lacks a column is not corrupt: that error
    propagates unchanged."""
    try:
        return pd.read_parquet(path, columns=columns)
    except FileNotFoundError:
        raise
    except Exception as first:  # noqa: BLE001 - judged below, under the lock
        failure = first
    with locked(path):
        try:
            whole = pq.read_table(path)
        except Exception as error:  # noqa: BLE001 - unreadable means corrupt
            aside = move_aside(path)
            raise CorruptStateError(
                path, aside, _recovery(recovery, path.stem), _cause(error)
            ) from error
    if columns is None:
        return whole.to_pandas()
    raise failure


def read_labels(
    config: DatasetConfig,
    labels_dir: Path,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pd.DataFrame:
    """Labels stamped in ``[start, end)`` (all when unbounded), sorted by time."""
    columns = [config.entity_key, config.timestamp, config.label]
    return read_day_files(labels_dir, config.entity_key, config.timestamp, start, end, columns)


def read_entities(
    config: DatasetConfig, feast_dir: Path, start: datetime, end: datetime
) -> pd.DataFrame:
    """Entity keys and timestamps of the rows ingested for ``[start, end)`` (scoring input)."""
    folder = offline_dir(feast_dir) / view_name(config, active_view_kinds(config)[0])
    keys = [config.entity_key, config.timestamp]
    return read_day_files(folder, config.entity_key, config.timestamp, start, end, keys)


def materialize(store: FeatureStore, start: datetime, end: datetime) -> None:
    """Load feature values stamped in ``[start, end]`` into the online store."""
    store.materialize(start_date=start, end_date=end)


RETRIEVAL_CHUNK_ROWS = 100_000


def get_training_frame(
    store: FeatureStore,
    config: DatasetConfig,
    entity_df: pd.DataFrame,
    chunk_rows: int | None = RETRIEVAL_CHUNK_ROWS,
) -> pd.DataFrame:
    """Point-in-time correct features for ``entity_df`` (entity key, timestamp[, label]).

    For every row, each view contributes the latest values stamped at or before the
    row's timestamp. Embeddings come back as float32 arrays.

    Args:
        chunk_rows: rows per ``get_historical_features`` call; larger frames are asked
            for in time order, ``chunk_rows`` at a time (see :func:`_historical_frame`).
            None: one call.
    """
    service = store.get_feature_service(config.feature_service_name)
    return _historical_frame(store, config, entity_df, service, chunk_rows)


def get_monitoring_frame(
    store: FeatureStore,
    config: DatasetConfig,
    entity_df: pd.DataFrame,
    chunk_rows: int | None = RETRIEVAL_CHUNK_ROWS,
) -> pd.DataFrame:
    """Like :func:`get_training_frame`, plus the ``monitor_only`` columns.

    Those columns are stored in the tabular view but left out of the feature service
    (they never feed the model); scoring and the monitoring reference need them, since
    drift is watched there (the ``benign`` modality).
    """
    if not config.monitor_only:
        return get_training_frame(store, config, entity_df, chunk_rows)
    refs = [
        f"{view_name(config, kind)}:{column}"
        for kind in active_view_kinds(config)
        for column in view_columns(config, kind)
    ]
    return _historical_frame(store, config, entity_df, refs, chunk_rows)


def _historical_frame(
    store: FeatureStore,
    config: DatasetConfig,
    entity_df: pd.DataFrame,
    features,
    chunk_rows: int | None,
) -> pd.DataFrame:
    """Feast's point-in-time join of ``entity_df``, sorted by time then entity.

    Each row's features depend on that row alone, so a large frame is asked for in
    time-ordered chunks and the parts are concatenated: the same rows as one call. One
    call over a million rows has DuckDB window and join-back every match at once with
    its embedding lists (7.6 GB at 1M); a chunk's rows are stamped within a few days,
    so DuckDB's join filters skip the day files outside them, and DuckDB holds one
    chunk's matches at a time (benchmarks/README.md, Scaling curve).
    """
    if chunk_rows is None or len(entity_df) <= chunk_rows:
        chunks = [entity_df]
    else:
        stamps = pd.to_datetime(entity_df[config.timestamp], utc=True).to_numpy()
        order = np.argsort(stamps, kind="stable")
        chunks = [
            entity_df.iloc[order[start : start + chunk_rows]]
            for start in range(0, len(order), chunk_rows)
        ]
    parts = [
        _arrow_to_frame(
            store.get_historical_features(entity_df=chunk, features=features).to_arrow(), config
        )
        for chunk in chunks
    ]
    frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    return frame.sort_values([config.timestamp, config.entity_key]).reset_index(drop=True)


def _arrow_to_frame(table: pa.Table, config: DatasetConfig) -> pd.DataFrame:
    """``table.to_pandas()`` with the embeddings as float32 arrays (None where null).

    Each embedding is a view of the Arrow result's values, as ``to_pandas`` gives, but
    without its copy of them: that copy into fresh memory was a quarter of a 1M-row
    retrieval (benchmarks/README.md, Scaling curve).
    """
    names = [config.embedding_column(c) for c in config.embedded_columns]
    embedded = [n for n in names if n in table.column_names and _is_float_list(table, n)]
    others = [n for n in names if n in table.column_names and n not in embedded]
    frame = _embeddings_to_numpy(table.drop_columns(embedded).to_pandas(), config, others)
    for name in embedded:
        frame[name] = _list_views(table.column(name))
    return frame[table.column_names]


def _is_float_list(table: pa.Table, name: str) -> bool:
    kind = table.schema.field(name).type
    return pa.types.is_list(kind) and pa.types.is_floating(kind.value_type)


def _list_views(column: pa.ChunkedArray) -> np.ndarray:
    """Rows of a list<float> column as float32 arrays viewing its values (None where null)."""
    out = np.full(len(column), None, dtype=object)
    at = 0
    for chunk in column.chunks:
        values = chunk.values.to_numpy(zero_copy_only=False)
        values = values.astype(np.float32, copy=False)
        offsets = chunk.offsets.to_numpy(zero_copy_only=False)
        valid = np.flatnonzero(chunk.is_valid().to_numpy(zero_copy_only=False))
        rows = np.empty(len(valid), dtype=object)
        starts, ends = offsets[valid].tolist(), offsets[valid + 1].tolist()
        rows[:] = [values[start:end] for start, end in zip(starts, ends, strict=True)]
        out[at + valid] = rows
        at += len(chunk)
    return out


def get_online_frame(store: FeatureStore, config: DatasetConfig, entity_ids: list) -> pd.DataFrame:
    """Latest materialised features for ``entity_ids`` from the online store."""
    service = store.get_feature_service(config.feature_service_name)
    rows = [{config.entity_key: e} for e in entity_ids]
    frame = store.get_online_features(features=service, entity_rows=rows).to_df()
    return _embeddings_to_numpy(frame, config)


def _embeddings_to_numpy(
    frame: pd.DataFrame, config: DatasetConfig, names: list[str] | None = None
) -> pd.DataFrame:
    """Embedding columns (all, or ``names``) as float32 arrays, None where null."""
    if names is None:
        names = [config.embedding_column(c) for c in config.embedded_columns]
    for name in names:
        if name in frame.columns:
            frame[name] = [
                np.asarray(v, dtype=np.float32) if v is not None else None for v in frame[name]
            ]
    return frame
