"""Prod-profile benchmark: online lookups on Redis vs SQLite; drift on Dask vs threads.

Run from the repository root with PostgreSQL and Redis up (about 2-3 minutes on 2 cores)::

    .venv/bin/python benchmarks/prod_bench.py [--redis-port 6379] [--windows 8]

Prints a markdown table and writes ``benchmarks/out/prod.json``.

1. Online lookup latency through ``features.store.get_online_frame`` (the feature
   service: 12 tabular columns, a 384-d text and a 128-d image embedding) for 1 and 100
   entities: embedded store (SQLite online store, file registry) against the prod store
   (Redis online store, SQL registry on PostgreSQL). Same rows, same materialisation.
2. Drift of several windows (``flows.task_runners.compute_drift_windows``, default
   ``DriftConfig``) on Prefect's thread pool and on a local Dask cluster of 2 in-process
   workers.

Frames are the demo's columns with random values and random unit embeddings: lookup and
drift cost depend on shape, not values. Feast state lives in a temporary directory and a
PostgreSQL database that are removed afterwards; the Redis keys of the temporary Feast
project are deleted (``FeatureStore.teardown``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import sys
import tempfile
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.demo_data import demo_dataset_config  # noqa: E402
from features.encoders import IMAGE_DIM, TEXT_DIM  # noqa: E402
from features.schema import DatasetConfig  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "out" / "prod.json"


def random_feature_frame(config: DatasetConfig, n_rows: int, seed: int, start: datetime):
    """A feature frame with the config's columns, random values and unit embeddings."""
    rng = np.random.default_rng(seed)
    frame = {
        config.entity_key: np.arange(n_rows, dtype=np.int64),
        config.timestamp: pd.Timestamp(start)
        + pd.to_timedelta(np.sort(rng.uniform(0, 86400, n_rows)).round(3), unit="s"),
        config.label: rng.choice(config.classes, n_rows),
    }
    for column in config.numeric:
        frame[column.name] = rng.lognormal(1.0, 0.5, n_rows)
    for column in config.categorical:
        frame[column.name] = rng.choice(column.categories, n_rows)
    for columns, dim in ((config.text_columns, TEXT_DIM), (config.image_columns, IMAGE_DIM)):
        for column in columns:
            emb = rng.normal(size=(n_rows, dim)).astype(np.float32)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            frame[config.embedding_column(column)] = list(emb)
            frame[config.presence_column(column)] = np.ones(n_rows, dtype=np.int64)
    return pd.DataFrame(frame)


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def bench_lookups(config, frame, stores: dict, feast_dir: Path, reps: dict[int, int]) -> dict:
    from features.store import get_online_frame, materialize, prepare_store, write_offline

    write_offline(frame, config, feast_dir)
    start = frame[config.timestamp].min().to_pydatetime()
    end = frame[config.timestamp].max().to_pydatetime() + timedelta(seconds=1)
    with contextlib.redirect_stdout(io.StringIO()):
        store = prepare_store(config, feast_dir, **stores)
        materialize(store, start, end)
    ids = frame[config.entity_key].to_numpy()
    rng = np.random.default_rng(0)
    results = {}
    try:
        for n, count in reps.items():
            get_online_frame(store, config, rng.choice(ids, n, replace=False).tolist())  # warm
            samples = []
            for _ in range(count):
                batch = rng.choice(ids, n, replace=False).tolist()
                t0 = time.perf_counter()
                got = get_online_frame(store, config, batch)
                samples.append(time.perf_counter() - t0)
                assert got["price"].notna().all()
            results[n] = {**percentiles(samples), "reps": count}
    finally:
        if stores:
            with contextlib.redirect_stdout(io.StringIO()):
                store.teardown()
    return results


def bench_drift(config, n_windows: int, window_rows: int) -> dict:
    from prefect.testing.utilities import prefect_test_harness

    from flows.settings import get_settings
    from flows.task_runners import compute_drift_windows
    from monitoring.drift import fit_drift_reference

    start = datetime(2026, 6, 1, tzinfo=UTC)
    reference = fit_drift_reference(random_feature_frame(config, 2000, 0, start), config)
    windows = [
        random_feature_frame(config, window_rows, seed, start + timedelta(days=seed))
        for seed in range(1, n_windows + 1)
    ]
    out: dict = {"default": [], "dask": []}
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        for runner in ("default", "dask", "default", "dask"):  # second round: warm
            settings = get_settings(data_dir=Path(tmp), task_runner=runner)
            t0 = time.perf_counter()
            results = compute_drift_windows(reference, windows, settings)
            out[runner].append(time.perf_counter() - t0)
            assert len(results) == n_windows
    serial_t0 = time.perf_counter()
    from monitoring.drift import compute_drift

    for window in windows:
        compute_drift(reference, window, seed=0)
    out["serial_no_prefect"] = {"seconds": time.perf_counter() - serial_t0, "windows": n_windows}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--rows", type=int, default=2000, help="Entities materialised.")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--window-rows", type=int, default=500)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    from flows.profiles import feast_stores
    from flows.services import drop_database, ensure_database
    from flows.settings import get_settings

    base = demo_dataset_config()
    frame_start = datetime(2026, 6, 1, tzinfo=UTC)
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "lookups": {},
    }
    reps = {1: 300, 100: 60}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = base.model_copy(update={"name": f"bench_{uuid.uuid4().hex[:8]}"})
        frame = random_feature_frame(config, args.rows, 1, frame_start)
        report["lookups"]["sqlite"] = bench_lookups(config, frame, {}, tmp / "embedded", reps)
        database = f"mmops_bench_{uuid.uuid4().hex[:8]}"
        settings = get_settings(
            profile="prod",
            data_dir=tmp / "prod",
            postgres={"feast_database": database},
            redis={"port": args.redis_port},
        )
        ensure_database(settings.postgres, database)
        try:
            report["lookups"]["redis"] = bench_lookups(
                config, frame, feast_stores(settings), settings.feast_dir, reps
            )
        finally:
            drop_database(settings.postgres, database)
    report["drift"] = bench_drift(base, args.windows, args.window_rows)

    lines = ["| measurement | embedded (SQLite) | prod (Redis) |", "|---|---|---|"]
    for n in reps:
        s, r = report["lookups"]["sqlite"][n], report["lookups"]["redis"][n]
        lines.append(
            f"| online lookup, {n} entit{'y' if n == 1 else 'ies'}, p50 / p99 (ms) | "
            f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} |"
        )
    d = report["drift"]
    lines += [
        "",
        f"| drift of {args.windows} windows x {args.window_rows} rows | seconds |",
        "|---|---|",
        f"| Prefect thread pool (2 threads), cold / warm | {_cold_warm(d, 'default')} |",
        f"| Dask local cluster (2 in-process workers), cold / warm | {_cold_warm(d, 'dask')} |",
        f"| plain loop, no Prefect | {d['serial_no_prefect']['seconds']:.1f} |",
    ]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))


def _cold_warm(drift: dict, runner: str) -> str:
    return " / ".join(f"{seconds:.1f}" for seconds in drift[runner])


if __name__ == "__main__":
    main()
