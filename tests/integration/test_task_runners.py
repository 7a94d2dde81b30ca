"""Drift of several windows on a Dask cluster (2 in-process workers) and on the default
thread pool: the same results."""

from __future__ import annotations

import pytest

from flows.settings import get_settings
from monitoring.drift import DriftConfig, fit_drift_reference
from tests.unit.training.synthetic import synthetic_config, synthetic_frame

pytestmark = pytest.mark.integration

SMALL = DriftConfig(text_components=4, image_components=4, permutations=99)


def test_dask_runner_gives_the_default_runners_results(tmp_path):
    pytest.importorskip("prefect_dask")
    from prefect.testing.utilities import prefect_test_harness

    from flows.task_runners import build_task_runner, compute_drift_windows

    config = synthetic_config()
    reference = fit_drift_reference(synthetic_frame(600, seed=0), config, SMALL, seed=0)
    windows = [synthetic_frame(150, seed=seed) for seed in range(1, 4)]
    shifted = synthetic_frame(150, seed=9)
    shifted["price"] = shifted["price"] * 3  # one drifted window, so the results differ
    windows.append(shifted)
    default = get_settings(data_dir=tmp_path)
    dask = get_settings(data_dir=tmp_path, task_runner="dask")
    assert type(build_task_runner(dask)).__name__ == "DaskTaskRunner"

    with prefect_test_harness(server_startup_timeout=120):
        on_threads = compute_drift_windows(reference, windows, default, SMALL)
        on_dask = compute_drift_windows(reference, windows, dask, SMALL)

    assert [r.model_dump() for r in on_dask] == [r.model_dump() for r in on_threads]
    assert [r.any_drift for r in on_dask] == [False, False, False, True]
