"""Foundation benchmark: embedding throughput, point-in-time retrieval, online lookups.

Run from the repository root (about 3-5 minutes on 2 cores)::

    .venv/bin/python benchmarks/foundation_bench.py

Prints a markdown table and writes ``benchmarks/out/foundation.json``. All Feast state,
caches and Parquet files live in a temporary directory that is removed afterwards.

1. Embedding throughput on real demo data: ``TextEncoder`` on distinct reviews,
   ``ImageEncoder`` on distinct photos, and ``embed_frame`` with a cold and a warm
   embedding cache.
2. Point-in-time training-set retrieval with both embedding arrays: Feast
   ``get_historical_features`` (via ``get_training_frame``) against pandas ``merge_asof``
   on the same Parquet files, plus a breakdown of Feast's path and two faster variants
   (Arrow-native conversion; DuckDB ``ASOF JOIN``) as references for a fix.
3. Online lookup latency (SQLite) for 1 and 100 entities after ``materialize``.

The retrieval frames use the demo's real tabular columns, ids and timestamps, with random
unit vectors (384-d and 128-d, zeros where the row lacks the modality) standing in for
the embeddings: retrieval cost depends on shape, not on the values.
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
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from features.definitions import source_glob, view_columns, view_name  # noqa: E402
from features.schema import DatasetConfig  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "out" / "foundation.json"
TARGET_SECONDS = 5.0
TARGET_RATIO = 2.0


@dataclass
class Measurement:
    section: str
    metric: str
    value: float
    unit: str
    note: str = ""


@dataclass
class Report:
    measurements: list[Measurement] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def add(self, section: str, metric: str, value: float, unit: str, note: str = "") -> None:
        self.measurements.append(Measurement(section, metric, float(value), unit, note))

    def markdown(self) -> str:
        lines = ["| section | metric | value | unit | note |", "|---|---|---:|---|---|"]
        for m in self.measurements:
            lines.append(f"| {m.section} | {m.metric} | {_fmt(m.value)} | {m.unit} | {m.note} |")
        return "\n".join(lines)


def _fmt(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def _timed_cpu(fn: Callable, *args, **kwargs) -> tuple[float, float, object]:
    """Wall and process CPU seconds (all threads); CPU time is less hurt by other load."""
    cpu = time.process_time()
    wall, result = _timed(fn, *args, **kwargs)
    return wall, time.process_time() - cpu, result


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


# 1. Embedding throughput -------------------------------------------------------------


def bench_embedding(report: Report, sources, config: DatasetConfig, args, work: Path) -> None:
    from features.embedding import Encoders, embed_frame
    from features.encoders import ImageEncoder, TextEncoder, decode_image

    section = "embedding"
    report.details["load_before_embedding"] = _load()
    load_s, text_encoder = _timed(TextEncoder)
    report.add(section, "TextEncoder load", load_s, "s")
    texts = sources.reviews["review"].drop_duplicates().tolist()
    warmup, measured = texts[:16], texts[16 : 16 + args.text_rows]
    text_encoder.encode(warmup)
    seconds, _ = _timed(text_encoder.encode, measured)
    chars = float(np.mean([len(t) for t in measured]))
    report.add(
        section,
        "text encode (MiniLM, 128 tok)",
        len(measured) / seconds,
        "rows/s",
        f"{len(measured)} distinct reviews, mean {chars:.0f} chars, batch 64",
    )

    load_s, image_encoder = _timed(ImageEncoder)
    report.add(section, "ImageEncoder load", load_s, "s")
    png = sources.png[: 64 + args.image_rows]
    image_encoder.encode([decode_image(b) for b in png[:64]])
    decode_s, images = _timed(lambda: [decode_image(b) for b in png[64:]])
    seconds, _ = _timed(image_encoder.encode, images)
    report.add(
        section,
        "image encode (EffNet-Lite0 32px -> 128-d)",
        len(images) / seconds,
        "rows/s",
        f"{len(images)} distinct photos, decoded PIL in, batch 64",
    )
    report.add(section, "PNG decode", len(images) / decode_s, "rows/s", "PIL, 28x28 PNG")

    raw, _ = _demo_rows(sources, args.embed_rows, seed=1)
    encoders = Encoders(text=text_encoder, image=image_encoder)
    cache_dir = work / "embedding_cache"
    distinct = f"{raw['review'].nunique()} distinct texts, {raw['photo'].nunique()} photos"
    cold_s, frame = _timed(embed_frame, raw, config, encoders, cache_dir=cache_dir)
    warm_s, again = _timed(embed_frame, raw, config, encoders, cache_dir=cache_dir)
    same = all(
        np.allclose(np.stack(frame[c]), np.stack(again[c])) for c in ("review_emb", "photo_emb")
    )
    report.add(
        section,
        "embed_frame, cold cache",
        len(raw) / cold_s,
        "rows/s",
        f"{len(raw)} rows ({distinct}), text + image",
    )
    report.add(
        section,
        "embed_frame, warm cache",
        len(raw) / warm_s,
        "rows/s",
        f"same rows again: 0 encoded, identical={same}",
    )
    report.add(section, "warm / cold speed-up", cold_s / warm_s, "x")
    report.details["load_after_embedding"] = _load()


def _demo_rows(sources, n_rows: int, seed: int):
    from features.demo_data import build_demo_dataset

    return build_demo_dataset(sources, n_rows=n_rows, days=60, seed=seed)


# 2. Point-in-time retrieval ----------------------------------------------------------


def synthetic_feature_frame(raw: pd.DataFrame, config: DatasetConfig, seed: int) -> pd.DataFrame:
    """A feature frame shaped like ``embed_frame``'s, with random unit-vector embeddings."""
    from features.encoders import IMAGE_DIM, TEXT_DIM

    rng = np.random.default_rng(seed)
    columns = [config.entity_key, config.timestamp, config.label, *config.tabular_columns]
    frame = raw[columns].copy()
    for column, dim in [(c, TEXT_DIM) for c in config.text_columns] + [
        (c, IMAGE_DIM) for c in config.image_columns
    ]:
        present = raw[column].notna().to_numpy()
        vectors = rng.standard_normal((len(raw), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors[~present] = 0.0
        frame[config.embedding_column(column)] = list(vectors)
        frame[config.presence_column(column)] = present.astype(np.int64)
    return frame


def entity_frame(
    features: pd.DataFrame, config: DatasetConfig, n_rows: int, seed: int
) -> pd.DataFrame:
    """``n_rows`` (entity, timestamp, label) rows; a few are stamped before their features."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(features), size=n_rows, replace=False))
    rows = features.iloc[pick]
    # Most rows ask up to a week after the features were written; ~1% ask an hour too
    # early and must get no features (a point-in-time check that can fail).
    offset_s = rng.uniform(0, 7 * 86_400, n_rows)
    early = rng.random(n_rows) < 0.01
    offset_s[early] = -3_600
    stamps = rows[config.timestamp] + pd.to_timedelta(np.round(offset_s * 1e6), unit="us")
    return pd.DataFrame(
        {
            config.entity_key: rows[config.entity_key].to_numpy(),
            config.timestamp: stamps.reset_index(drop=True),
            config.label: rows[config.label].to_numpy(),
        }
    ).reset_index(drop=True)


def service_columns(config: DatasetConfig) -> dict[str, list[str]]:
    """Feature columns the model's feature service takes from each view."""
    columns = {"tabular": config.model_tabular_columns}
    for kind in ("text", "image"):
        if view_columns(config, kind):
            columns[kind] = view_columns(config, kind)
    return columns


def merge_asof_frame(
    config: DatasetConfig, offline_root: Path, entity_df: pd.DataFrame
) -> pd.DataFrame:
    """Baseline: read each view's Parquet files and ``merge_asof`` them (backward, by entity)."""
    key, ts = config.entity_key, config.timestamp
    out = entity_df.sort_values(ts, kind="stable").reset_index(drop=True)
    for kind, columns in service_columns(config).items():
        folder = offline_root / view_name(config, kind)
        table = pq.read_table(folder, columns=[key, ts, *columns])
        right = table.to_pandas()
        right[ts] = right[ts].astype(out[ts].dtype)
        right = right.sort_values(ts, kind="stable")
        out = pd.merge_asof(
            out, right, on=ts, by=key, direction="backward", allow_exact_matches=True
        )
    out = out.sort_values([ts, key]).reset_index(drop=True)
    return _object_embeddings(out, config)


def _object_embeddings(frame: pd.DataFrame, config: DatasetConfig) -> pd.DataFrame:
    for column in config.text_columns + config.image_columns:
        name = config.embedding_column(column)
        frame[name] = [
            None if not isinstance(v, np.ndarray) else v.astype(np.float32, copy=False)
            for v in frame[name]
        ]
    return frame


def arrow_training_frame(store, config: DatasetConfig, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Candidate fix: Feast's join, then an Arrow-native sort and embedding conversion.

    Same output as ``features.store.get_training_frame``, but each embedding column
    becomes one (n, dim) float32 matrix whose rows are handed out as views, instead of
    ``to_pandas`` building one array per row and ``_embeddings_to_numpy`` another.
    """
    import pyarrow.compute as pc

    service = store.get_feature_service(config.feature_service_name)
    table = store.get_historical_features(entity_df=entity_df, features=service).to_arrow()
    order = pc.sort_indices(
        table.select([config.timestamp, config.entity_key]),
        sort_keys=[(config.timestamp, "ascending"), (config.entity_key, "ascending")],
    ).to_numpy()
    return arrow_to_frame(table, config, order)


def arrow_to_frame(
    table: pa.Table, config: DatasetConfig, order: np.ndarray | None = None
) -> pd.DataFrame:
    """Arrow result -> pandas; embeddings as float32 row views, rows taken in ``order``."""
    emb = {config.embedding_column(c) for c in config.text_columns + config.image_columns}
    frame = table.drop_columns([c for c in table.column_names if c in emb]).to_pandas()
    if order is not None:
        frame = frame.iloc[order].reset_index(drop=True)
    for name in table.column_names:
        if name in emb:
            frame[name] = list_column_to_arrays(table.column(name), order)
    return frame[table.column_names]


def list_column_to_arrays(column: pa.ChunkedArray, order: np.ndarray | None = None) -> np.ndarray:
    """A list<float> column as an object array of float32 row views (None where null)."""
    array = column.combine_chunks()
    n = len(array)
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    out = np.full(n, None, dtype=object)
    if valid.any():
        dim = int(array.value_lengths().to_numpy(zero_copy_only=False)[valid][0])
        values = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        matrix = np.zeros((n, dim), dtype=np.float32)
        matrix[valid] = values.reshape(-1, dim)
        if order is not None:
            matrix, valid = matrix[order], valid[order]
        rows = np.empty(int(valid.sum()), dtype=object)
        rows[:] = list(matrix[valid])
        out[valid] = rows
    return out


def duckdb_asof_frame(
    config: DatasetConfig, offline_root: Path, entity_df: pd.DataFrame
) -> pd.DataFrame:
    """Reference: one DuckDB ``ASOF LEFT JOIN`` per view over the same Parquet files."""
    import duckdb

    key, ts = config.entity_key, config.timestamp
    con = duckdb.connect()
    con.register("entity_df", entity_df)
    selects, joins = [], []
    for i, (kind, columns) in enumerate(service_columns(config).items()):
        alias = f"v{i}"
        glob = source_glob(offline_root, config, kind)
        selects += [f'{alias}."{c}"' for c in columns]
        joins.append(
            f"ASOF LEFT JOIN read_parquet('{glob}') {alias} "
            f'ON e."{key}" = {alias}."{key}" AND e."{ts}" >= {alias}."{ts}"'
        )
    sql = (
        f"SELECT e.*, {', '.join(selects)} FROM entity_df e {' '.join(joins)} "
        f'ORDER BY e."{ts}", e."{key}"'
    )
    table = con.sql(sql).to_arrow_table()
    con.close()
    return arrow_to_frame(table, config)


def frames_agree(a: pd.DataFrame, b: pd.DataFrame, config: DatasetConfig) -> bool:
    """Same rows in the same order, same nulls, equal features (embeddings on all rows)."""
    key, ts = config.entity_key, config.timestamp
    if len(a) != len(b) or not (a[key].to_numpy() == b[key].to_numpy()).all():
        return False
    if not (
        pd.to_datetime(a[ts], utc=True).to_numpy() == pd.to_datetime(b[ts], utc=True).to_numpy()
    ).all():
        return False
    for columns in service_columns(config).values():
        for column in columns:
            x, y = a[column], b[column]
            if column.endswith("_emb"):
                nx = np.array([v is None for v in x])
                ny = np.array([v is None for v in y])
                if not (nx == ny).all():
                    return False
                if (~nx).any() and not np.array_equal(
                    np.stack(x[~nx].to_list()), np.stack(y[~ny].to_list())
                ):
                    return False
            elif not x.reset_index(drop=True).equals(y.reset_index(drop=True)):
                # dtypes differ after null introduction (Int64 vs float); compare values.
                xs = pd.Series(x.to_numpy(dtype=object)).where(x.notna().to_numpy(), None)
                ys = pd.Series(y.to_numpy(dtype=object)).where(y.notna().to_numpy(), None)
                if not all(
                    (p is None and q is None) or (p is not None and q is not None and p == q)
                    for p, q in zip(xs, ys, strict=True)
                ):
                    return False
    return True


def feast_breakdown(store, config: DatasetConfig, entity_df: pd.DataFrame) -> dict[str, float]:
    """Seconds spent in each step of one ``get_training_frame`` call (one chunk)."""
    from features.store import _arrow_to_frame

    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    service = store.get_feature_service(config.feature_service_name)
    job = store.get_historical_features(entity_df=entity_df, features=service)
    t1 = time.perf_counter()
    table = job.to_arrow()
    t2 = time.perf_counter()
    frame = _arrow_to_frame(table, config)
    t3 = time.perf_counter()
    frame = frame.sort_values([config.timestamp, config.entity_key]).reset_index(drop=True)
    t4 = time.perf_counter()
    steps["plan (registry, entity memtable, ibis expr)"] = t1 - t0
    steps["execute: DuckDB join -> Arrow (job.to_arrow)"] = t2 - t1
    steps["Arrow -> pandas (embeddings as views of the Arrow values)"] = t3 - t2
    steps["sort_values"] = t4 - t3
    return steps


def bench_retrieval(report: Report, sources, config: DatasetConfig, args, work: Path):
    from features.store import get_training_frame, prepare_store, write_offline

    section = "retrieval"
    report.details["load_before_retrieval"] = _load()
    feast_dir = work / "feast"
    n_store = max(args.retrieval_rows)
    raw, _ = _demo_rows(sources, n_store, seed=0)
    features = synthetic_feature_frame(raw, config, seed=0)
    del raw
    seconds, written = _timed(write_offline, features, config, feast_dir)
    report.add(
        section,
        "write_offline (day-partitioned Parquet)",
        seconds,
        "s",
        f"{n_store:,} rows/view, 60 day files, views {sorted(written)}",
    )
    seconds, store = _timed(prepare_store, config, feast_dir)
    report.add(section, "prepare_store (feast apply)", seconds, "s")
    offline_root = feast_dir / "offline"

    small = entity_frame(features, config, 1_000, seed=99)
    seconds, _ = _timed(get_training_frame, store, config, small)
    report.add(section, "first get_training_frame (warm-up)", seconds, "s", "1,000 rows")

    details: dict = {}
    for n_rows in args.retrieval_rows:
        entity_df = entity_frame(features, config, n_rows, seed=n_rows)
        times: dict[str, list[float]] = {"feast": [], "merge_asof": []}
        cpu: dict[str, list[float]] = {"feast": [], "merge_asof": []}
        for _ in range(args.repeats):
            # Interleaved so that a burst of load from other processes hits both.
            wall, used, feast_frame = _timed_cpu(
                get_training_frame, store, config, entity_df.copy()
            )
            times["feast"].append(wall)
            cpu["feast"].append(used)
            wall, used, base_frame = _timed_cpu(
                merge_asof_frame, config, offline_root, entity_df.copy()
            )
            times["merge_asof"].append(wall)
            cpu["merge_asof"].append(used)
        agree = frames_agree(feast_frame, base_frame, config)
        missing = int(feast_frame["review_emb"].isna().sum())
        feast_s, base_s = min(times["feast"]), min(times["merge_asof"])
        ratio = feast_s / base_s
        verdict = "meets" if feast_s <= TARGET_SECONDS and ratio <= TARGET_RATIO else "misses"
        label = f"{n_rows:,} rows"
        for name, metric, best in (
            ("feast", "Feast get_training_frame", feast_s),
            ("merge_asof", "pandas merge_asof", base_s),
        ):
            runs = ", ".join(f"{t:.2f}" for t in times[name])
            note = f"wall, best of {args.repeats}: {runs}; CPU s (all threads) min {min(cpu[name]):.2f}"
            report.add(section, f"{metric}, {label}", best, "s", note)
        report.add(
            section,
            f"Feast / merge_asof, {label}",
            ratio,
            "x",
            f"results identical={agree}; {missing} rows w/o features; target <=5 s & <=2x: "
            f"{verdict}",
        )
        details[n_rows] = {
            "wall_s": times,
            "cpu_s": cpu,
            "identical": agree,
            "rows_without_features": missing,
        }
        del feast_frame, base_frame

    n_rows = max(args.retrieval_rows)
    entity_df = entity_frame(features, config, n_rows, seed=n_rows)
    steps = feast_breakdown(store, config, entity_df.copy())
    total = sum(steps.values())
    for step, seconds in steps.items():
        report.add(
            section, f"Feast breakdown ({n_rows:,}): {step}", seconds, "s", f"{seconds / total:.0%}"
        )
    variants = {
        "variant: Feast join + Arrow-native conversion": lambda: arrow_training_frame(
            store, config, entity_df.copy()
        ),
        "variant: DuckDB ASOF JOIN on same files": lambda: duckdb_asof_frame(
            config, offline_root, entity_df.copy()
        ),
    }
    reference = get_training_frame(store, config, entity_df.copy())
    for name, run in variants.items():
        walls, cpus, frame = [], [], None
        for _ in range(args.repeats):
            wall, used, frame = _timed_cpu(run)
            walls.append(wall)
            cpus.append(used)
        best = min(walls)
        agree = frames_agree(reference, frame, config)
        report.add(
            section,
            f"{name}, {n_rows:,} rows",
            best,
            "s",
            f"wall, best of {args.repeats}: {', '.join(f'{t:.2f}' for t in walls)}; CPU s min "
            f"{min(cpus):.2f}; identical to get_training_frame={agree}",
        )
    report.details["retrieval"] = {str(k): v for k, v in details.items()}
    report.details["feast_breakdown_s"] = steps
    report.details["load_after_retrieval"] = _load()
    return store, features


# 3. Online lookups ---------------------------------------------------------------------


def bench_online(report: Report, store, features: pd.DataFrame, config: DatasetConfig, args):
    from features.store import get_online_frame, materialize

    section = "online"
    report.details["load_before_online"] = _load()
    stamps = features[config.timestamp]
    end = stamps.max().to_pydatetime() + timedelta(seconds=1)
    start = end - timedelta(days=args.online_days)
    in_window = features.loc[stamps >= pd.Timestamp(start), config.entity_key].to_numpy()
    with contextlib.redirect_stdout(io.StringIO()):  # Feast prints progress
        seconds, _ = _timed(materialize, store, start, end)
    report.add(
        section,
        "materialize (SQLite)",
        len(in_window) / seconds,
        "rows/s",
        f"{len(in_window):,} entities, last {args.online_days} days, {seconds:.1f} s",
    )
    rng = np.random.default_rng(7)
    check = get_online_frame(store, config, [int(in_window[0])])
    found = check["review_emb"].iloc[0] is not None or check["photo_emb"].iloc[0] is not None
    for batch in (1, 100):
        latencies = []
        for i in range(args.online_reps + 5):
            ids = [int(x) for x in rng.choice(in_window, size=batch, replace=False)]
            seconds, frame = _timed(get_online_frame, store, config, ids)
            if i >= 5:
                latencies.append(seconds * 1000)
        p50, p99 = np.percentile(latencies, [50, 99])
        note = f"{args.online_reps} reps, random ids, {len(frame.columns)} columns"
        report.add(
            section,
            f"get_online_frame p50, {batch} entit{'y' if batch == 1 else 'ies'}",
            p50,
            "ms",
            note,
        )
        report.add(
            section,
            f"get_online_frame p99, {batch} entit{'y' if batch == 1 else 'ies'}",
            p99,
            "ms",
            note,
        )
        report.details[f"online_ms_{batch}"] = {
            "p50": p50,
            "p90": float(np.percentile(latencies, 90)),
            "p99": p99,
            "mean": float(np.mean(latencies)),
        }
    report.details["online_found_embeddings"] = bool(found)
    report.details["load_after_online"] = _load()


# ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-rows", type=int, default=256)
    parser.add_argument("--image-rows", type=int, default=512)
    parser.add_argument("--embed-rows", type=int, default=256)
    parser.add_argument(
        "--retrieval-rows", type=lambda s: [int(x) for x in s.split(",")], default=[20_000, 100_000]
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--online-reps", type=int, default=200)
    parser.add_argument("--online-days", type=float, default=2.0)
    parser.add_argument("--skip-embedding", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def environment() -> dict:
    import duckdb
    import feast
    import torch

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "feast": feast.__version__,
        "duckdb": duckdb.__version__,
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> Report:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    logging.getLogger("feast").setLevel(logging.ERROR)

    from features.demo_data import DemoSources, demo_dataset_config

    started = time.perf_counter()
    report = Report()
    report.details["environment"] = environment()
    report.details["args"] = {k: str(v) for k, v in vars(args).items()}
    config = demo_dataset_config()
    seconds, sources = _timed(DemoSources.load)
    report.add("setup", "DemoSources.load", seconds, "s")
    with tempfile.TemporaryDirectory(prefix="mmops-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_embedding:
            bench_embedding(report, sources, config, args, work)
        store, features = bench_retrieval(report, sources, config, args, work)
        bench_online(report, store, features, config, args)
    report.details["total_s"] = time.perf_counter() - started

    env = report.details["environment"]
    print(
        f"# foundation benchmark ({env['cpu_count']} CPUs, torch threads "
        f"{env['torch_threads']}, feast {env['feast']}, duckdb {env['duckdb']}; "
        f"total {report.details['total_s']:.0f} s)\n"
    )
    print(report.markdown())
    print(
        "\nload average (1/5 min) before/after sections: "
        + ", ".join(f"{k}={v}" for k, v in report.details.items() if k.startswith("load_"))
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "measurements": [asdict(m) for m in report.measurements],
        "details": report.details,
    }
    args.out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
