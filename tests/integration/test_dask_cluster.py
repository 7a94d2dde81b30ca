"""The deployed flows on a real Dask cluster: a ``dask scheduler`` and two ``dask worker``
processes on loopback. Ingest embeds in chunks on the workers, scoring scores in chunks
and a backfill assesses its windows in parallel; each gives what the default thread-pool
runner gives. Also: a data directory refuses another text encoder variant."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.demo_data import DEMO_START

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DAYS = 6


def _start_cluster(folder: Path, env: dict) -> tuple[str, list[subprocess.Popen]]:
    dask = shutil.which("dask", path=str(Path(sys.executable).parent))
    if dask is None:
        pytest.skip("the dask command (distributed) is not installed")
    scheduler_file = folder / "scheduler.json"
    common = {"env": env, "cwd": ROOT, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [
        subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            **common,
        )
    ]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(2):
        processes.append(
            subprocess.Popen(
                [
                    dask,
                    "worker",
                    "--scheduler-file",
                    str(scheduler_file),
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--memory-limit",
                    "0",
                ],
                **common,
            )
        )
    from distributed import Client

    with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
        assert len(client.scheduler_info()["workers"]) == 2
    return json.loads(scheduler_file.read_text())["address"], processes


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A small pipeline (history ingested, a champion) and a running 2-worker cluster."""
    from prefect.testing.utilities import prefect_test_harness

    from tests.integration.pipeline import build_small_pipeline

    data_dir = tmp_path_factory.mktemp("mmops-dask")
    keys = ("MMOPS_DATA_DIR", "MMOPS_TASK_RUNNER", "MMOPS_DASK_ADDRESS", "MMOPS_TEXT_ENCODER")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["MMOPS_DATA_DIR"] = str(data_dir)
    processes = []
    try:
        with prefect_test_harness(server_startup_timeout=120):
            from flows.runtime import get_runtime

            runtime = get_runtime()
            history_end, first = build_small_pipeline(runtime, rows=700, days=DAYS, epochs=3)
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
            }
            address, processes = _start_cluster(data_dir, env)
            yield {
                "runtime": runtime,
                "data_dir": data_dir,
                "address": address,
                "history_end": history_end,
            }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _use(runner: str, address: str | None = None) -> None:
    os.environ["MMOPS_TASK_RUNNER"] = runner
    if address:
        os.environ["MMOPS_DASK_ADDRESS"] = address
    else:
        os.environ.pop("MMOPS_DASK_ADDRESS", None)


def _differences(a, b, path: str = "") -> list[str]:
    """Where two assessments differ: floats beyond 1e-4 relative, anything else at all
    (NaN equals NaN).

    The MMD statistic's kernel is a float32 product on the embeddings' components; a
    worker process sums it in another order (its BLAS runs other threads), which moved
    it by 1e-6 relative here (0.0139756 vs 0.0139760), and by up to 3e-5 in the 1M-row
    benchmark. Decisions, drifted flags, every KS statistic and every non-float field
    must be identical (the components themselves are rounded, ``EmbeddingReference``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} items"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, f"{path}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float):
        same = (np.isnan(a) and np.isnan(b)) or np.isclose(a, b, rtol=1e-4, atol=1e-9)
        return [] if same else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _offline_features(data_dir: Path, keys: list[str]) -> dict[str, pd.DataFrame]:
    """Every offline view's rows, sorted by entity and time."""
    out = {}
    for view in sorted(p for p in (data_dir / "feast" / "offline").iterdir() if p.is_dir()):
        frame = pd.concat([pd.read_parquet(f) for f in sorted(view.glob("*.parquet"))])
        out[view.name] = frame.sort_values(keys, ignore_index=True)
    return out


def test_ingest_score_and_backfill_on_dask_match_the_default_runner(pipeline):
    from flows.backfill import BackfillParams, monitor_backfill_flow
    from flows.ingest import IngestParams, ingest_flow
    from flows.score import ScoreParams, score_flow
    from flows.settings import get_settings
    from monitoring.scoring import read_prediction_log

    data_dir, address = pipeline["data_dir"], pipeline["address"]
    start, end = DEMO_START, pipeline["history_end"]
    config = pipeline["runtime"].config
    os.environ["MMOPS_CHUNK_ROWS"] = "150"  # several chunks per window
    try:
        # ingest: re-ingesting the history replaces its rows, so compare the store after each
        _use("dask", address)
        assert get_settings().task_runner == "dask"
        shutil.rmtree(data_dir / "embedding_cache", ignore_errors=True)  # workers encode
        on_dask = ingest_flow(IngestParams(start=start, end=end))
        keys = [config.entity_key, config.timestamp]
        dask_views = _offline_features(data_dir, keys)
        _use("default")
        on_threads = ingest_flow(IngestParams(start=start, end=end))
        default_views = _offline_features(data_dir, keys)
        assert on_dask.stored == on_threads.stored > 500
        assert sorted(dask_views) == sorted(default_views) and len(default_views) == 3
        embedded = 0
        for view, default_rows in default_views.items():
            dask_rows = dask_views[view]
            assert len(dask_rows) == len(default_rows) == on_threads.stored, view
            for column in default_rows.columns:
                if column.endswith("_emb"):
                    embedded += 1
                    np.testing.assert_allclose(
                        np.stack(dask_rows[column]), np.stack(default_rows[column]), atol=1e-5
                    )
                elif not column.startswith("created"):
                    pd.testing.assert_series_equal(dask_rows[column], default_rows[column])
        assert embedded == 2  # text and image

        # scoring: the same probabilities for every row, in chunks on the workers; a
        # chunk file a killed run left two days ago is swept, a live run's file is kept
        chunks = get_settings().chunks_dir
        chunks.mkdir(parents=True, exist_ok=True)
        stale, live = chunks / "score-dead.parquet", chunks / "score-live.parquet"
        stale.write_bytes(b"left by a killed run")
        live.write_bytes(b"another run's rows")
        os.utime(stale, (time.time() - 2 * 86400,) * 2)
        logs = {}
        for runner in ("default", "dask"):
            _use(runner, address if runner == "dask" else None)
            outcome = score_flow(ScoreParams(start=start, end=end))
            log = read_prediction_log(config, data_dir / "predictions", start, end)
            logs[runner] = log.sort_values(keys, ignore_index=True)
            assert outcome.n_rows == len(log) > 500
        probas = [c for c in logs["default"].columns if c.startswith("proba_")]
        assert probas
        np.testing.assert_allclose(
            logs["dask"][probas].to_numpy(float), logs["default"][probas].to_numpy(float), atol=1e-6
        )
        assert (logs["dask"]["prediction"] == logs["default"]["prediction"]).all()
        assert not stale.exists() and live.exists()
        live.unlink()

        # backfill: one assessment per daily window, the same on both runners
        params = BackfillParams(start=start, end=end, window_hours=24)
        results = {}
        for runner in ("default", "dask"):
            _use(runner, address if runner == "dask" else None)
            results[runner] = monitor_backfill_flow(params)
        assert len(results["default"]) == DAYS
        for on_dask, on_threads in zip(results["dask"], results["default"], strict=True):
            differences = _differences(on_dask.model_dump(), on_threads.model_dump())
            assert not differences, differences
        assert [a.decision for a in results["dask"]] == [a.decision for a in results["default"]]
        assert all(a.n_rows > 0 for a in results["dask"])
    finally:
        os.environ.pop("MMOPS_CHUNK_ROWS", None)
        _use("default")


def test_another_text_encoder_variant_is_refused_by_ingest_training_and_scoring(pipeline):
    from features.embedding import EncoderMismatchError
    from flows.ingest import IngestParams, ingest_flow
    from flows.score import ScoreParams, score_flow
    from flows.train import TrainParams, train_flow

    start, end = DEMO_START, pipeline["history_end"]
    os.environ["MMOPS_TEXT_ENCODER"] = "int8"
    try:
        with pytest.raises(EncoderMismatchError, match=r"offline store .*\+int8-mixed1 now"):
            ingest_flow(IngestParams(start=start, end=start + timedelta(days=1)))
        with pytest.raises(EncoderMismatchError, match=r"offline store"):
            train_flow(TrainParams(train={"epochs": 1, "show_progress": False}))
        with pytest.raises(EncoderMismatchError, match=r"champion .* v1 holds .*\+int8-mixed1 now"):
            score_flow(ScoreParams(start=start, end=end))
    finally:
        os.environ.pop("MMOPS_TEXT_ENCODER")
