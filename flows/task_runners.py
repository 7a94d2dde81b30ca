"""Where a flow's parallel work runs: Prefect's thread pool (default) or a Dask cluster.

``MMOPS_TASK_RUNNER=dask`` with ``MMOPS_DASK_ADDRESS=tcp://scheduler:8786`` sends the
chunked work of the deployed flows to an existing cluster: ingest embeds its rows in
chunks (:func:`embed_in_chunks`), scoring scores in chunks (:func:`score_in_chunks`) and
a monitoring backfill assesses its windows in parallel (``flows/backfill.py``). Without an
address a temporary local cluster is started per flow run.

The runner is chosen when the work starts, from the settings then in force (a flow's
decorator is fixed at import): each helper runs a small nested flow with that runner.
Workers import this repository and see the data directory at the same path (a shared
volume), as the deployed flows' workers do.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from uuid import uuid4

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.settings import Settings
from monitoring.drift import DriftConfig, DriftReference, DriftResult, compute_drift
from monitoring.scoring import score_frame

# A chunk file lives while its scoring run does (minutes at 1M rows); one older than this
# was left by a process that died before its ``finally`` ran.
STALE_CHUNK_SECONDS = 24 * 3600
CHUNK_FILE_PREFIX = "score-"  # scoring's chunk files: what the sweep may delete


def build_task_runner(settings: Settings, local_workers: int = 2):
    """The task runner the settings ask for.

    Args:
        local_workers: workers of the temporary local cluster (Dask without an address);
            threads in one process, so the workers share the loaded encoders and memory.
    """
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": local_workers,
                "threads_per_worker": 1,
                "processes": False,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=local_workers)


def map_on_runner(settings: Settings, name: str, work, calls: Sequence[dict[str, Any]]) -> list:
    """Run ``work`` (a task) once per keyword set in ``calls`` on the configured runner;
    the results come back in the order of ``calls``."""

    @flow(name=name, task_runner=build_task_runner(settings), log_prints=False)
    def mapped() -> list:
        futures = [work.submit(**kwargs) for kwargs in calls]
        return [future.result() for future in futures]

    return mapped()


def _chunks(frame: pd.DataFrame, rows: int) -> list[pd.DataFrame]:
    if rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {rows}")
    return [frame.iloc[start : start + rows] for start in range(0, len(frame), rows)]


@task(cache_policy=NO_CACHE)
def drift_of_window(
    reference: DriftReference, window: pd.DataFrame, drift_config: DriftConfig, seed: int
) -> DriftResult:
    return compute_drift(reference, window, drift_config, seed=seed)


def compute_drift_windows(
    reference: DriftReference,
    windows: Sequence[pd.DataFrame],
    settings: Settings,
    drift_config: DriftConfig | None = None,
) -> list[DriftResult]:
    """Drift of each window against ``reference``, the windows tested in parallel on the
    configured task runner (a backfill, or many datasets' windows at once).

    Each window uses ``settings.seed``, so the results do not depend on the runner.
    """
    drift_config = drift_config or DriftConfig()
    calls = [
        {"reference": reference, "window": w, "drift_config": drift_config, "seed": settings.seed}
        for w in windows
    ]
    return map_on_runner(settings, "drift-windows", drift_of_window, calls)


@cache
def load_drift_reference(path: str) -> DriftReference:
    """A drift reference saved on shared storage (``DriftReference.save``), read once per
    process: the path must name one immutable reference (the champion's is stored per
    version)."""
    return DriftReference.load(path)


@task(cache_policy=NO_CACHE)
def drift_of_logged_window(
    reference_path: str,
    log_dir: str,
    bounds: tuple[datetime, datetime],
    drift_config: DriftConfig,
    seed: int,
) -> DriftResult | None:
    """Drift of the prediction-log rows stamped in ``bounds``, read by the worker itself
    from the shared log; None when the window has no rows."""
    from monitoring.scoring import read_prediction_log

    reference = load_drift_reference(reference_path)
    window = read_prediction_log(reference.dataset, Path(log_dir), *bounds)
    if window.empty:
        return None
    return compute_drift(reference, window, drift_config, seed=seed)


def compute_drift_logged_windows(
    reference_path: str | Path,
    log_dir: str | Path,
    windows: Sequence[tuple[datetime, datetime]],
    settings: Settings,
    drift_config: DriftConfig | None = None,
) -> list[DriftResult | None]:
    """Like :func:`compute_drift_windows`, but only paths and time ranges travel to the
    workers: each reads its window from the prediction log and the reference from its
    file (both on storage every worker sees), so the flow process never holds or pickles
    the rows. One result per window, None for a window without rows."""
    drift_config = drift_config or DriftConfig()
    calls = [
        {
            "reference_path": str(reference_path),
            "log_dir": str(log_dir),
            "bounds": bounds,
            "drift_config": drift_config,
            "seed": settings.seed,
        }
        for bounds in windows
    ]
    return map_on_runner(settings, "drift-logged-windows", drift_of_logged_window, calls)


@task(cache_policy=NO_CACHE)
def embed_chunk(raw: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Embed one chunk of raw rows with the worker's encoders (loaded once per worker)
    and the shared embedding cache (its saves merge under a file lock)."""
    from features.embedding import embed_frame
    from flows.runtime import get_runtime

    runtime = get_runtime(settings)
    return embed_frame(
        raw, runtime.config, runtime.encoders, cache_dir=settings.embedding_cache_dir
    )


def embed_in_chunks(raw: pd.DataFrame, settings: Settings, chunk_rows: int = 500) -> pd.DataFrame:
    """Embed raw rows in chunks on the configured task runner; the rows come back in their
    input order, the same vectors as one ``embed_frame`` call."""
    calls = [{"raw": chunk, "settings": settings} for chunk in _chunks(raw, chunk_rows)]
    return pd.concat(map_on_runner(settings, "embed-chunks", embed_chunk, calls), ignore_index=True)


@cache
def _pyfunc(model_dir: str):
    from training.pyfunc import load_pyfunc

    return load_pyfunc(model_dir)


@task(cache_policy=NO_CACHE)
def predict_chunk(rows_path: str, row_group: int, model_dir: str) -> pd.DataFrame:
    """The champion's output for one row group of a feature file on shared storage,
    read by the worker itself; the champion is loaded from ``model_dir`` once per worker."""
    import pyarrow.parquet as pq

    features = pq.ParquetFile(rows_path).read_row_group(row_group).to_pandas()
    return pd.DataFrame(_pyfunc(model_dir).predict(features)).reset_index(drop=True)


def score_in_chunks(
    features: pd.DataFrame,
    settings: Settings,
    model_dir: str,
    version: str,
    scored_at: datetime,
    chunk_rows: int = 5000,
) -> pd.DataFrame:
    """Score a feature frame in chunks on the configured runner (rows in input order):
    the same prediction-log rows as one ``score_frame`` call.

    Only a path and a row-group number travel to each worker. The frame is written once
    to a Parquet file under ``settings.chunks_dir`` (storage every worker sees), one row
    group per chunk, and deleted afterwards; each worker reads its rows and returns the
    class probabilities alone, and the log rows are assembled here from ``features``.
    Sending the chunks themselves cost more than the scoring: Prefect's Dask runner puts
    task arguments in the graph, and Dask hashes and pickles every row's embedding array
    (docs/scale-out.md, Scaling curve).
    """
    from flows.runtime import get_runtime

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    outputs = None
    if not features.empty:  # score_frame refuses an empty frame
        outputs = _predict_in_chunks(features, settings, model_dir, chunk_rows)
    config = get_runtime(settings).config
    return score_frame(lambda _rows: outputs, features, config, version, scored_at=scored_at)


def sweep_stale_chunks(directory: Path, older_than: float = STALE_CHUNK_SECONDS) -> list[Path]:
    """Delete the chunk files a killed scoring process left behind (by age: workers on
    other machines share the folder, so a process id says nothing); returns them."""
    cutoff = time.time() - older_than
    removed = []
    for path in directory.glob(f"{CHUNK_FILE_PREFIX}*.parquet"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # another process swept it first
            continue
    return removed


def _predict_in_chunks(
    features: pd.DataFrame, settings: Settings, model_dir: str, chunk_rows: int
) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    settings.chunks_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale_chunks(settings.chunks_dir)
    path = settings.chunks_dir / f"{CHUNK_FILE_PREFIX}{uuid4().hex}.parquet"
    try:
        table = pa.Table.from_pandas(features, preserve_index=False)
        pq.write_table(table, path, row_group_size=chunk_rows, compression="none")
        groups = pq.ParquetFile(path).num_row_groups
        calls = [
            {"rows_path": str(path), "row_group": i, "model_dir": model_dir} for i in range(groups)
        ]
        parts = map_on_runner(settings, "score-chunks", predict_chunk, calls)
    finally:
        path.unlink(missing_ok=True)
    return pd.concat(parts, ignore_index=True)


def run_chunked(settings: Settings) -> bool:
    """Whether the flows hand their chunked work to the task runner (Dask) instead of
    doing it in-process."""
    return settings.task_runner == "dask"
