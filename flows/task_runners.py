"""Where a flow's tasks run: Prefect's thread pool (default) or a Dask cluster.

``MMOPS_TASK_RUNNER=dask`` with ``MMOPS_DASK_ADDRESS=tcp://scheduler:8786`` sends the
submitted tasks to an existing cluster; without an address a temporary local cluster is
started per flow run. Tasks must be submitted (``task.submit`` / ``task.map``) to run
concurrently on either runner.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.settings import Settings
from monitoring.drift import DriftConfig, DriftReference, DriftResult, compute_drift


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

    @flow(name="drift-windows", task_runner=build_task_runner(settings), log_prints=False)
    def drift_windows() -> list[DriftResult]:
        futures = [
            drift_of_window.submit(reference, window, drift_config, settings.seed)
            for window in windows
        ]
        return [f.result() for f in futures]

    return drift_windows()


@task(cache_policy=NO_CACHE)
def embed_chunk(raw: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Embed one chunk of raw rows with the worker's encoders (loaded once per worker)."""
    from features.embedding import embed_frame
    from flows.runtime import get_runtime

    runtime = get_runtime(settings)
    return embed_frame(raw, runtime.config, runtime.encoders, cache_dir=None)


def embed_in_chunks(raw: pd.DataFrame, settings: Settings, chunk_rows: int = 500) -> pd.DataFrame:
    """Embed raw rows in chunks on the configured task runner (a backfill on a cluster).

    The local embedding cache is a file of this machine, so chunks on workers embed
    without it; the rows come back in their input order.
    """

    @flow(name="embed-chunks", task_runner=build_task_runner(settings), log_prints=False)
    def embed_chunks() -> pd.DataFrame:
        futures = [
            embed_chunk.submit(raw.iloc[start : start + chunk_rows], settings)
            for start in range(0, len(raw), chunk_rows)
        ]
        return pd.concat([f.result() for f in futures], ignore_index=True)

    return embed_chunks()
