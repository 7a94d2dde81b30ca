"""Scaling curve: ingest, training-set retrieval, training, scoring and monitoring at
growing history sizes, each step in its own process for its time and peak memory.

    python -m benchmarks.scaling [--sizes 10000 100000] [--dask]

Embeddings are precomputed (random unit vectors of the demo's shapes, 384-d text and
128-d image): encoding is measured by ``benchmarks/encoder_variants.py`` and would
dominate everything here. Per size N:

- ingest: the feature gate (Great Expectations) and ``write_offline`` of N rows, in
  calls of at most 100,000 rows (the flows ingest window by window);
- retrieval: ``get_training_frame`` (Feast, DuckDB) of all N rows (Feast asked in
  time-ordered chunks of 100,000 rows), and pandas ``merge_asof`` over the same Parquet
  files as the baseline;
- train: ``train_model`` on the N rows for 2 epochs (per-epoch cost; early stopping
  decides the epochs in production);
- score: ``score_frame`` of the N rows in one call with the trained pyfunc model;
- score_log: the N rows scored in calls of 100,000 and written to a prediction log (day
  files), as the score flow does window by window;
- monitor: the last of ten equal time windows of the log (about N/10 rows) assessed
  against a 10,000-row drift reference (``assess_window``: drift, estimate, decision);
- backfill: the ten windows' drift on the default runner and, with ``--dask``, on a Dask
  cluster of 2 worker processes (results compared), plus scoring in chunks on Dask. Only
  time ranges and the reference's path go to the workers; each reads its window from
  the log (``compute_drift_logged_windows``). Scoring on Dask likewise sends a file path
  and a row-group number per chunk (``score_in_chunks``) and compares its probabilities
  with the one-call ``score`` step's (run ``train`` and ``score`` first).

Sizes above the largest trained one score with that size's model (``--steps`` can leave
out ``train`` at 1,000,000 rows).

Peak memory is the step process's maximum resident set (``ru_maxrss``); Dask workers'
own peaks are reported separately (largest worker).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

STEPS = (
    "ingest",
    "retrieval",
    "merge_asof",
    "train",
    "score",
    "score_log",
    "monitor",
    "backfill",
)
DASK_STEPS = ("dask_score", "dask_backfill")
REFERENCE_ROWS = 10_000
CALL_ROWS = 100_000  # rows per ingest or scoring call
WINDOWS = 10


def _config():
    from features.demo_data import demo_dataset_config

    return demo_dataset_config()


def _paths(work: Path, rows: int) -> dict[str, Path]:
    base = work / f"n{rows}"
    return {
        "base": base,
        "features": base / "features.parquet",
        "feast": base / "feast",
        "model": base / "model",
        "scored": base / "scored.parquet",
        "log": base / "log",
        "reference": base / "drift_reference.npz",
    }


def _model_dir(work: Path, rows: int) -> Path:
    """This size's model, else the one of the largest smaller size that has one."""
    trained = sorted(
        (int(p.parent.name[1:]), p)
        for p in work.glob("n*/model")
        if (p / "MLmodel").exists() and int(p.parent.name[1:]) <= rows
    )
    if not trained:
        raise FileNotFoundError(f"no model trained at {rows:,} rows or fewer: run train")
    return trained[-1][1]


def _feature_batches(paths, rows: int = CALL_ROWS):
    """The feature frame in time order, ``rows`` at a time (embeddings as float32 arrays)."""
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(paths["features"]).iter_batches(batch_size=rows):
        frame = batch.to_pandas()
        for column in frame.columns:
            if column.endswith("_emb"):
                frame[column] = [np.asarray(v, dtype=np.float32) for v in frame[column]]
        yield frame


def _log_windows(paths, config, parts: int = WINDOWS) -> list[tuple[datetime, datetime]]:
    """``parts`` equal time ranges covering the feature rows (and so the log)."""
    import pyarrow.parquet as pq

    times = pq.read_table(paths["features"], columns=[config.timestamp]).column(0)
    first = pd.Timestamp(times[0].as_py()).to_pydatetime()
    last = pd.Timestamp(times[-1].as_py()).to_pydatetime() + timedelta(microseconds=1)
    step = (last - first) / parts
    return [
        (first + i * step, first + (i + 1) * step if i < parts - 1 else last) for i in range(parts)
    ]


def _log_reference(paths, config) -> Path:
    """The drift reference of the log (a 10,000-row sample spread over the windows),
    fitted once per size and saved beside it."""
    from monitoring.drift import DriftConfig, fit_drift_reference
    from monitoring.scoring import read_prediction_log

    if not paths["reference"].exists():
        windows = _log_windows(paths, config)
        parts = []
        for i, (start, end) in enumerate(windows):
            window = read_prediction_log(config, paths["log"], start, end)
            take = min(REFERENCE_ROWS // len(windows), len(window))
            parts.append(window.sample(n=take, random_state=i))
        sample = pd.concat(parts, ignore_index=True)
        fit_drift_reference(sample, config, DriftConfig(), seed=0).save(paths["reference"])
    return paths["reference"]


def prepare(rows: int, work: Path) -> None:
    """The N-row feature frame (demo tabular columns, random unit embeddings)."""
    from benchmarks.foundation_bench import synthetic_feature_frame
    from features.demo_data import DemoSources, build_demo_dataset

    paths = _paths(work, rows)
    if paths["features"].exists():
        return
    paths["base"].mkdir(parents=True, exist_ok=True)
    sources = DemoSources.load().subset(500, 500, 0)
    raw, _ = build_demo_dataset(sources, n_rows=rows, days=60, seed=0)
    frame = synthetic_feature_frame(raw, _config(), seed=0)
    for column in _config().numeric_columns:
        frame[column] = frame[column].astype(float)
    frame.to_parquet(paths["features"], index=False)


def _features(paths) -> pd.DataFrame:
    frame = pd.read_parquet(paths["features"])
    for column in frame.columns:
        if column.endswith("_emb"):
            frame[column] = [np.asarray(v, dtype=np.float32) for v in frame[column]]
    return frame


def _drift_fingerprint(results) -> list:
    return [r.model_dump(mode="json") if r is not None else None for r in results]


def _warm_up(settings) -> None:
    """Start Prefect's temporary server and reach the workers before the clock starts."""
    from prefect import task

    from flows.task_runners import map_on_runner

    @task
    def nothing() -> int:
        return 0

    map_on_runner(settings, "warm-up", nothing, [{}, {}])


def run_step(step: str, rows: int, work: Path, dask_address: str | None) -> dict:
    config = _config()
    paths = _paths(work, rows)
    info: dict = {}
    if step == "ingest":
        from features.store import write_offline
        from features.validation import gate_rows

        shutil.rmtree(paths["feast"], ignore_errors=True)  # a fresh store, as on a first run
        started = time.perf_counter()
        info["rows_stored"] = 0
        for i, frame in enumerate(_feature_batches(paths)):
            gate = gate_rows(
                frame,
                config,
                kind="features",
                quarantine_dir=paths["base"] / "q",
                batch_name=f"scale-{rows}-{i}",
                context_dir=paths["base"] / "gx",
            )
            write_offline(gate.passed, config, paths["feast"])
            info["rows_stored"] += len(gate.passed)
    elif step in ("retrieval", "merge_asof"):
        from benchmarks.foundation_bench import merge_asof_frame
        from features.store import get_training_frame, prepare_store

        keys = pd.read_parquet(
            paths["features"], columns=[config.entity_key, config.timestamp, config.label]
        )
        entity_df = keys.copy()
        entity_df[config.timestamp] = entity_df[config.timestamp] + pd.Timedelta(hours=1)
        if step == "retrieval":
            store = prepare_store(config, paths["feast"])
            started = time.perf_counter()
            frame = get_training_frame(store, config, entity_df)
        else:
            started = time.perf_counter()
            frame = merge_asof_frame(config, paths["feast"] / "offline", entity_df)
        info["rows_out"] = len(frame)
    elif step == "train":
        from training.pyfunc import save_pyfunc
        from training.train import TrainConfig, train_model

        frame = _features(paths)
        started = time.perf_counter()
        result = train_model(frame, config, TrainConfig(epochs=2, patience=5, show_progress=False))
        info["train_s"] = round(result.train_seconds, 2)
        info["epochs"] = result.epochs_run
        elapsed = time.perf_counter() - started
        shutil.rmtree(paths["model"], ignore_errors=True)
        save_pyfunc(result.model, paths["model"], result.splits.test.head(50))
        return {**info, "seconds": elapsed}
    elif step == "score":
        from monitoring.scoring import score_frame
        from training.pyfunc import load_pyfunc

        frame = _features(paths)
        model = load_pyfunc(_model_dir(work, rows))
        started = time.perf_counter()
        scored = score_frame(model, frame, config, "1", scored_at=datetime(2026, 9, 1, tzinfo=UTC))
        elapsed = time.perf_counter() - started
        scored.to_parquet(paths["scored"], index=False)
        return {"seconds": elapsed}
    elif step == "score_log":
        from monitoring.scoring import score_frame, write_prediction_log
        from training.pyfunc import load_pyfunc

        model = load_pyfunc(_model_dir(work, rows))
        shutil.rmtree(paths["log"], ignore_errors=True)
        paths["reference"].unlink(missing_ok=True)
        started = time.perf_counter()
        info["rows_logged"] = 0
        for frame in _feature_batches(paths):
            scored = score_frame(
                model, frame, config, "1", scored_at=datetime(2026, 9, 1, tzinfo=UTC)
            )
            write_prediction_log(scored, config, paths["log"])
            info["rows_logged"] += len(scored)
    elif step == "monitor":
        from monitoring.assessment import ChampionInfo, assess_window
        from monitoring.drift import DriftConfig, DriftReference
        from monitoring.policy import PolicyConfig, PolicyState
        from monitoring.scoring import read_prediction_log

        fitting = time.perf_counter()
        reference = DriftReference.load(_log_reference(paths, config))
        info["fit_reference_s"] = round(time.perf_counter() - fitting, 2)
        begin, end = _log_windows(paths, config)[-1]
        started = time.perf_counter()
        window = read_prediction_log(config, paths["log"], begin, end)
        assess_window(
            dataset=config,
            window=window,
            window_start=begin,
            window_end=end,
            champion=ChampionInfo(name="bench", version="1", run_id="-", performance=0.8),
            drift_reference=reference,
            state=PolicyState(),
            policy=PolicyConfig(),
            drift_config=DriftConfig(),
            seed=0,
        )
        info["window_rows"] = len(window)
    elif step in ("backfill", "dask_backfill"):
        from flows.settings import get_settings
        from flows.task_runners import compute_drift_logged_windows

        reference = _log_reference(paths, config)
        windows = _log_windows(paths, config)
        settings = get_settings(
            data_dir=paths["base"] / "mmops",
            task_runner="dask" if step == "dask_backfill" else "default",
            dask_address=dask_address,
        )
        _warm_up(settings)
        started = time.perf_counter()
        results = compute_drift_logged_windows(reference, paths["log"], windows, settings)
        elapsed = time.perf_counter() - started
        fingerprint = paths["base"] / f"{step}.json"
        fingerprint.write_text(json.dumps(_drift_fingerprint(results), default=str))
        return {"seconds": elapsed, "windows": len(windows)}
    elif step == "dask_score":
        from flows.settings import get_settings
        from flows.task_runners import score_in_chunks

        frame = _features(paths)
        settings = get_settings(
            data_dir=paths["base"] / "mmops", task_runner="dask", dask_address=dask_address
        )
        _warm_up(settings)
        started = time.perf_counter()
        scored = score_in_chunks(
            frame,
            settings,
            str(_model_dir(work, rows)),
            "1",
            datetime(2026, 9, 1, tzinfo=UTC),
            chunk_rows=max(2000, rows // 8),
        )
        elapsed = time.perf_counter() - started
        reference = _read_scored(paths)
        probas = [c for c in reference.columns if c.startswith("proba_")]
        info["max_abs_diff_vs_default"] = float(
            np.abs(scored[probas].to_numpy(float) - reference[probas].to_numpy(float)).max()
        )
        return {**info, "seconds": elapsed}
    else:
        raise ValueError(f"unknown step {step!r}")
    return {**info, "seconds": time.perf_counter() - started}


def _read_scored(paths) -> pd.DataFrame:
    return _features({"features": paths["scored"]})


def _peak_mb() -> float:
    """This process's peak resident set. ``VmHWM`` where Linux has it: ``ru_maxrss``
    survives ``exec``, so a step spawned from the benchmark's process (which hosts the Dask
    scheduler) would report that process's size when it was larger."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmops-scaling"))
    parser.add_argument("--dask", action="store_true", help="also on 2 Dask worker processes")
    parser.add_argument("--steps", nargs="+", help="only these steps (default: all)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dask-address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.step:  # one step, in this process
        if args.step == "prepare":
            prepare(args.rows, args.work)
            return
        result = run_step(args.step, args.rows, args.work, args.dask_address)
        result["peak_mb"] = round(_peak_mb())
        print("RESULT " + json.dumps(result))
        return

    cluster = None
    steps = list(STEPS)
    if args.dask:
        from distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=0,
        )
        steps += list(DASK_STEPS)
    if args.steps:
        steps = [s for s in steps if s in args.steps]
    table: dict[int, dict[str, dict]] = {}
    try:
        for rows in args.sizes:
            _run(["prepare"], rows, args, None)
            table[rows] = {}
            for step in steps:
                address = cluster.scheduler_address if cluster and step.startswith("dask") else None
                table[rows][step] = _run([step], rows, args, address)
                print(f"{rows:>9,} {step:<14} {json.dumps(table[rows][step])}", flush=True)
            if "dask_backfill" in steps and "seconds" in table[rows]["dask_backfill"]:
                same = (_paths(args.work, rows)["base"] / "backfill.json").read_text() == (
                    _paths(args.work, rows)["base"] / "dask_backfill.json"
                ).read_text()
                table[rows]["dask_backfill"]["same_as_default"] = same
                table[rows]["dask_backfill"]["worker_peak_mb"] = _worker_peak_mb(cluster)
    finally:
        if cluster is not None:
            cluster.close()
    (args.work / "scaling.json").write_text(json.dumps(table, indent=1))
    _print(table)


def _worker_peak_mb(cluster) -> int:
    """The largest Dask worker process's maximum resident set so far."""
    from distributed import Client

    with Client(cluster) as client:
        peaks = client.run(_peak_mb)
    return round(max(peaks.values()))


def _run(step: list[str], rows: int, args, address: str | None) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.scaling",
        "--step",
        *step,
        "--rows",
        str(rows),
        "--work",
        str(args.work),
    ]
    if address:
        command += ["--dask-address", address]
    env = {
        **os.environ,
        "PREFECT_HOME": str(args.work / "prefect"),  # its own Prefect database
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",  # slow on a busy machine
    }
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=Path(__file__).parents[1], env=env
    )
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1][:200] if done.stderr else "failed"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(lines[-1][7:]) if lines else {}


def _print(table: dict[int, dict[str, dict]]) -> None:
    sizes = sorted(table)
    print(
        "| step | "
        + " | ".join(f"{n:,} rows: s / peak MB" for n in sizes)
        + " | growth (s, last/first per row) |"
    )
    print("|---|" + "---|" * (len(sizes) + 1))
    steps = [s for s in (*STEPS, *DASK_STEPS) if s in table[sizes[0]]]
    for step in steps:
        cells = []
        for n in sizes:
            r = table[n].get(step, {})
            cells.append(
                f"{r['seconds']:.2f} / {r['peak_mb']}" if "seconds" in r else r.get("error", "-")
            )
        first, last = table[sizes[0]].get(step, {}), table[sizes[-1]].get(step, {})
        growth = "-"
        if "seconds" in first and "seconds" in last and first["seconds"] > 0:
            growth = f"{(last['seconds'] / sizes[-1]) / (first['seconds'] / sizes[0]):.2f}x"
        print(f"| {step} | " + " | ".join(cells) + f" | {growth} |")
    print()
    for n in sizes:
        extras = {
            s: {k: v for k, v in r.items() if k not in ("seconds", "peak_mb")}
            for s, r in table[n].items()
        }
        print(f"{n:,} rows: {json.dumps({s: e for s, e in extras.items() if e})}")


if __name__ == "__main__":
    main()
