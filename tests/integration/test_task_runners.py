"""Drift of several windows on a Dask cluster (2 in-process workers) and on the default
thread pool: the same results."""

from __future__ import annotations

from datetime import timedelta

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


def test_embedding_on_dask_matches_the_default_runner(tmp_path, demo_sources):
    pytest.importorskip("prefect_dask")
    import numpy as np
    from prefect.testing.utilities import prefect_test_harness

    from features.demo_data import DEMO_START, generate_rows
    from flows.task_runners import embed_in_chunks

    raw, _ = generate_rows(
        demo_sources.subset(40, 40), 60, DEMO_START, DEMO_START + timedelta(days=1), seed=1
    )
    default = get_settings(data_dir=tmp_path)
    dask = get_settings(data_dir=tmp_path, task_runner="dask")
    with prefect_test_harness(server_startup_timeout=120):
        on_threads = embed_in_chunks(raw, default, chunk_rows=25)
        on_dask = embed_in_chunks(raw, dask, chunk_rows=25)
    assert on_dask["order_id"].tolist() == raw["order_id"].tolist()
    for column in ("review_emb", "photo_emb"):
        np.testing.assert_allclose(
            np.stack(on_dask[column]), np.stack(on_threads[column]), atol=1e-5
        )
        assert (
            on_dask[column.replace("_emb", "_present")]
            == on_threads[column.replace("_emb", "_present")]
        ).all()


def test_windows_read_from_the_log_by_the_workers_match_windows_sent_as_frames(tmp_path):
    pytest.importorskip("prefect_dask")
    from datetime import UTC, datetime

    import pandas as pd
    from prefect.testing.utilities import prefect_test_harness

    from flows.task_runners import compute_drift_logged_windows, compute_drift_windows
    from monitoring.scoring import write_prediction_log

    config = synthetic_config()
    reference = fit_drift_reference(synthetic_frame(600, seed=0), config, SMALL, seed=0)
    reference_path = reference.save(tmp_path / "drift_reference.npz")
    start = datetime(2026, 6, 1, tzinfo=UTC)
    frames, bounds = [], []
    for day, seed in enumerate((1, 2, 9)):
        frame = synthetic_frame(150, seed=seed)
        if seed == 9:
            frame["price"] = frame["price"] * 3  # one drifted window
        frame["order_id"] += 1000 * day
        frame["event_timestamp"] = pd.Timestamp(start + timedelta(days=day)) + pd.to_timedelta(
            range(150), unit="min"
        )
        frames.append(frame)
        bounds.append((start + timedelta(days=day), start + timedelta(days=day + 1)))
    write_prediction_log(pd.concat(frames, ignore_index=True), config, tmp_path / "log")
    bounds.append((start + timedelta(days=5), start + timedelta(days=6)))  # no rows
    default = get_settings(data_dir=tmp_path)
    dask = get_settings(data_dir=tmp_path, task_runner="dask")

    with prefect_test_harness(server_startup_timeout=120):
        sent = compute_drift_windows(reference, frames, default, SMALL)
        on_threads = compute_drift_logged_windows(
            reference_path, tmp_path / "log", bounds, default, SMALL
        )
        on_dask = compute_drift_logged_windows(
            reference_path, tmp_path / "log", bounds, dask, SMALL
        )

    assert on_threads[-1] is None and on_dask[-1] is None
    expected = [r.model_dump() for r in sent]
    assert [r.model_dump() for r in on_threads[:-1]] == expected
    assert [r.model_dump() for r in on_dask[:-1]] == expected
    assert [r.any_drift for r in on_dask[:-1]] == [False, False, True]
