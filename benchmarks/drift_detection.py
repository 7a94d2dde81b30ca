"""Drift detection on the simulator's scenarios: false alarms, power, delay, estimate error.

Run from the repository root::

    .venv/bin/python -m benchmarks.drift_detection            # default counts
    .venv/bin/python -m benchmarks.drift_detection --full     # >= 200 no-drift windows per size

Prints markdown tables and writes ``benchmarks/out/drift_detection.json``.

Scored pools, built once and cached under ``benchmarks/out/drift_detection_pools/``:
a fusion model is trained (``train_model``, 8 epochs) on clean demo rows embedded with the
real encoders; a separate clean draw is the drift reference (``fit_drift_reference``,
``DriftConfig()`` defaults); a third clean draw and one draw per drift scenario and
intensity (``simulate_window``) are embedded and scored by the model. Windows are drawn
from the pools without replacement inside a window. The first run pays for the encoders
(drifted photos and other-domain texts are new content); later runs only load the pools.

Per window, ours is ``compute_drift(reference, window).any_drift`` on the window without
its label column (as the monitor flow calls it). Stock Evidently 0.7.23 on the same
windows (a subsample: a ``Report`` costs about a second each):

* ``Report([DataDriftPreset()])`` on the 12 tabular columns, both class probabilities and
  the prediction, against the same reference rows; its dataset-drift flag is
  ``DriftedColumnsCount.share >= 0.5`` (the preset's ``drift_share``);
* for each embedding (review, photo) the legacy drift methods called directly on the
  embedding dimensions, with their default arguments: ``model()`` (SGD domain classifier,
  ROC-AUC > 0.55), ``mmd()`` (MMD^2_u > 0.015) and ``distance()`` (euclidean distance of
  the means > 0.2). ``EmbeddingsDrift`` would pick ``model(bootstrap=False)`` for a
  reference of >= 1,000 rows, then also run a t-SNE for its plot, which is skipped here.

Evidently's combined flag is the preset's dataset drift OR ``model()`` on either embedding
(what a stock ``Report([DataDriftPreset(), EmbeddingsDrift(...) x 2])`` decides with
defaults); ``mmd()`` and ``distance()`` are reported on their own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from features.demo_data import DEMO_START, DemoSources, demo_dataset_config
from features.drift_sim import HARMFUL, SCENARIOS, scenario_shift, simulate_window
from features.schema import DatasetConfig
from monitoring.drift import DriftConfig, DriftReference, compute_drift, fit_drift_reference
from monitoring.estimate import estimate_performance
from monitoring.frechet import FrechetConfig, FrechetReference, fit_frechet_reference, frechet_drift

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "drift_detection.json"
DEFAULT_POOLS = ROOT / "benchmarks" / "out" / "drift_detection_pools"
DEFAULT_EMBEDDING_CACHE = Path("/tmp/mmops-emb-cache")
SIZES = (50, 100, 200, 500, 1000)
DRIFTED = tuple(s for s in SCENARIOS if s != "none")
HARMFUL_SCENARIOS = tuple(s for s in DRIFTED if HARMFUL[s])
# Best published detection accuracy on the "Failing Loudly" benchmark (power averaged over
# shift types, alpha = 0.05); see /work/shared/ANCHORS.md.
FAILING_LOUDLY = {50: 0.42, 100: 0.47, 200: 0.52, 500: 0.64, 1000: 0.67}
FALSE_ALARM_TARGET = 0.05
EMBEDDING_METHODS = ("model", "mmd", "distance")

POOL_INTENSITIES = (1.0, 0.5)
# Counts for the record; about 20 minutes on 2 busy cores (load average ~8).
FULL = {
    "intensities": list(POOL_INTENSITIES),
    "false_alarm_windows": 200,
    "power_windows": 10,
    "evidently_false_alarm_windows": 10,
    "evidently_power_windows": 1,
    "delay_streams": 5,
    "evidently_delay_streams": 1,
}


@dataclass(frozen=True)
class PoolSettings:
    """What the cached pools depend on (a change builds new pools)."""

    train_rows: int = 6_000
    reference_rows: int = 3_000
    clean_rows: int = 6_000
    drift_rows: int = 3_000
    intensities: tuple[float, ...] = POOL_INTENSITIES
    epochs: int = 8
    seed: int = 0

    def key(self) -> str:
        # The scenario knobs are part of the key: a changed simulator builds new pools.
        knobs = {
            f"{s}@{i}": scenario_shift(s, i).model_dump(mode="json")
            for s in SCENARIOS
            for i in self.intensities
        }
        text = json.dumps({"settings": asdict(self), "scenarios": knobs}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Pools:
    """Scored feature frames (labels kept) and how long building them took."""

    reference: pd.DataFrame
    clean: pd.DataFrame
    drifted: dict[tuple[str, float], pd.DataFrame]
    build: dict[str, float]


# Pools ------------------------------------------------------------------------------------


def _embed_and_score(
    raws: dict[str, pd.DataFrame], config: DatasetConfig, cache_dir: Path, settings: PoolSettings
) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Embed every raw frame in one ``embed_frame`` call, train on 'train', score the rest."""
    from features.embedding import Encoders, embed_frame
    from training.train import TrainConfig, train_model

    names = list(raws)
    raw = pd.concat([raws[n] for n in names], ignore_index=True)
    started = time.perf_counter()
    encoders = Encoders.load(config)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    frame = embed_frame(raw, config, encoders, cache_dir=cache_dir)
    embed_s = time.perf_counter() - started
    bounds = np.cumsum([0, *(len(raws[n]) for n in names)])
    frames = {
        n: frame.iloc[bounds[i] : bounds[i + 1]].reset_index(drop=True) for i, n in enumerate(names)
    }

    started = time.perf_counter()
    result = train_model(
        frames.pop("train"),
        config,
        TrainConfig(epochs=settings.epochs, seed=settings.seed, show_progress=False),
    )
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    scored = {n: f.join(result.model.predict_frame(f)) for n, f in frames.items()}
    score_s = time.perf_counter() - started
    timings = {
        "encoders_load_s": load_s,
        "embed_s": embed_s,
        "embedded_rows": float(len(raw)),
        "train_s": train_s,
        "score_s": score_s,
    }
    return scored, timings


def build_pools(settings: PoolSettings, pool_dir: Path, cache_dir: Path) -> tuple[Pools, bool]:
    """Load the pools for ``settings`` from ``pool_dir``, or build and save them.

    Returns:
        The pools and whether they came from the cache.
    """
    path = pool_dir / f"pools-{settings.key()}.pkl"
    if path.is_file():
        return Pools(**pd.read_pickle(path)), True
    started = time.perf_counter()
    config = demo_dataset_config()
    sources = DemoSources.load()
    start = DEMO_START + timedelta(days=200)
    end = start + timedelta(days=30)
    raws: dict[str, pd.DataFrame] = {}
    first_id = 10_000_000

    def draw(name: str, scenario: str, intensity: float, rows: int, seed: int) -> None:
        nonlocal first_id
        raw, _ = simulate_window(sources, scenario, intensity, rows, start, end, seed, first_id)
        first_id += len(raw)
        raws[name] = raw

    base = settings.seed * 1_000
    draw("train", "none", 0.0, settings.train_rows, base + 1)
    draw("reference", "none", 0.0, settings.reference_rows, base + 2)
    draw("clean", "none", 0.0, settings.clean_rows, base + 3)
    for i, intensity in enumerate(settings.intensities):
        for j, scenario in enumerate(DRIFTED):
            draw(
                f"{scenario}@{intensity}",
                scenario,
                intensity,
                settings.drift_rows,
                base + 100 + 10 * i + j,
            )
    generate_s = time.perf_counter() - started
    scored, timings = _embed_and_score(raws, config, cache_dir, settings)
    timings["generate_s"] = generate_s
    timings["total_s"] = time.perf_counter() - started
    pools = Pools(
        reference=scored.pop("reference"),
        clean=scored.pop("clean"),
        drifted={
            (name.split("@")[0], float(name.split("@")[1])): frame for name, frame in scored.items()
        },
        build=timings,
    )
    pool_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pd.to_pickle(asdict(pools), tmp)
    tmp.replace(path)
    return pools, False


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(p)) for p in parts])


def draw_window(pool: pd.DataFrame, size: int, rng: np.random.Generator) -> pd.DataFrame:
    """``size`` distinct rows of ``pool``."""
    return pool.iloc[rng.choice(len(pool), size=size, replace=False)].reset_index(drop=True)


# Detectors --------------------------------------------------------------------------------


@dataclass
class Ours:
    reference: DriftReference
    config: DatasetConfig
    drift_config: DriftConfig
    frechet: FrechetReference | None = None

    def evaluate(self, window: pd.DataFrame, seed: int) -> dict:
        unlabeled = window.drop(columns=[self.config.label])
        result = compute_drift(self.reference, unlabeled, self.drift_config, seed=seed)
        row = {
            "flag": bool(result.any_drift),
            "modalities": result.drifted_modalities,
            # Embedding modalities only: what the Frechet baseline is compared with.
            "embedding_flag": any(
                result.modalities[m].drifted for m in ("text", "image") if m in result.modalities
            ),
            **self.accuracy(window, seed),
        }
        if self.frechet is not None:
            row["frechet_flag"] = frechet_drift(self.frechet, unlabeled).drifted
        return row

    def accuracy(self, window: pd.DataFrame, seed: int = 0) -> dict[str, float]:
        """Label-free expected accuracy and the realized accuracy of the window."""
        probas = window[[f"proba_{c}" for c in self.config.classes]].to_numpy(dtype=float)
        # expected_accuracy does not depend on the band simulations: keep them few.
        estimate = estimate_performance(probas, self.config.classes, n_simulations=20, seed=seed)
        realized = float((window["prediction"] == window[self.config.label]).mean())
        return {"estimated_accuracy": estimate.expected_accuracy, "realized_accuracy": realized}


class StockEvidently:
    """Evidently 0.7.23 with stock defaults on the tabular columns, outputs and embeddings."""

    def __init__(self, reference_frame: pd.DataFrame, config: DatasetConfig) -> None:
        from evidently import DataDefinition, Dataset, Report
        from evidently.legacy.metrics.data_drift.embedding_drift_methods import (
            distance,
            mmd,
            model,
        )
        from evidently.presets import DataDriftPreset

        self._dataset, self._report, self._preset = Dataset, Report, DataDriftPreset
        self.methods = {"model": model, "mmd": mmd, "distance": distance}
        probas = [f"proba_{c}" for c in config.classes]
        self.columns = [*config.tabular_columns, *probas, "prediction"]
        self.definition = DataDefinition(
            numerical_columns=[*config.numeric_columns, *probas],
            categorical_columns=[*config.categorical_columns, "prediction"],
        )
        self.reference = Dataset.from_pandas(
            reference_frame[self.columns].reset_index(drop=True), data_definition=self.definition
        )
        self.embedding_columns = [config.embedding_column(c) for c in config.text_columns] + [
            config.embedding_column(c) for c in config.image_columns
        ]
        self.reference_embeddings = {
            c: self._embedding_frame(reference_frame[c]) for c in self.embedding_columns
        }

    @staticmethod
    def _embedding_frame(values: pd.Series) -> pd.DataFrame:
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in values.to_numpy()])
        return pd.DataFrame(matrix, columns=[f"e{j}" for j in range(matrix.shape[1])])

    def evaluate(self, window: pd.DataFrame) -> dict:
        current = self._dataset.from_pandas(
            window[self.columns].reset_index(drop=True), data_definition=self.definition
        )
        snapshot = self._report([self._preset()]).run(current, self.reference)
        counts = next(
            m["value"]
            for m in snapshot.dict()["metrics"]
            if m["metric_name"].startswith("DriftedColumnsCount")
        )
        preset = bool(counts["share"] >= 0.5)
        flags: dict[str, bool] = {}
        for column in self.embedding_columns:
            current_emb = self._embedding_frame(window[column])
            for name, factory in self.methods.items():
                # The methods may add columns to their inputs: give them copies.
                _, drifted, _ = factory()(
                    current_emb.copy(), self.reference_embeddings[column].copy()
                )
                flags[f"{column}:{name}"] = bool(drifted)
        model_flag = any(flags[f"{c}:model"] for c in self.embedding_columns)
        return {
            "flag": preset or model_flag,
            "preset": preset,
            "drifted_share": float(counts["share"]),
            "embedding_flags": flags,
        }


# Experiments ------------------------------------------------------------------------------


def _rate(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def _interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def run_cells(
    pools: Pools,
    ours: Ours,
    stock: StockEvidently | None,
    scenario: str,
    intensity: float,
    sizes: tuple[int, ...],
    n_ours: int,
    n_stock: int,
    seed: int,
) -> dict[int, dict]:
    """Windows of one scenario at every size: ours on ``n_ours``, Evidently on the first ``n_stock``."""
    pool = pools.clean if scenario == "none" else pools.drifted[(scenario, intensity)]
    code = SCENARIOS.index(scenario)
    cells: dict[int, dict] = {}
    for size in sizes:
        ours_rows, stock_rows = [], []
        started = time.perf_counter()
        stock_s = 0.0
        for i in range(n_ours):
            window = draw_window(pool, size, _rng(seed, 1, code, int(intensity * 100), size, i))
            ours_rows.append(ours.evaluate(window, seed=i))
            if stock is not None and i < n_stock:
                t0 = time.perf_counter()
                stock_rows.append(stock.evaluate(window))
                stock_s += time.perf_counter() - t0
        ours_s = time.perf_counter() - started - stock_s
        cells[size] = {"ours": ours_rows, "stock": stock_rows, "ours_s": ours_s, "stock_s": stock_s}
    return cells


def run_delay(
    pools: Pools,
    ours: Ours,
    stock: StockEvidently | None,
    intensity: float,
    size: int,
    n_streams: int,
    n_stock_streams: int,
    clean_windows: int,
    max_drifted: int,
    seed: int,
) -> dict:
    """Streams of ``clean_windows`` undrifted windows, then drifted ones until the first alarm.

    The clean prefix of a stream is the same for every scenario (it does not depend on
    what follows), so it is scored once per stream. Delay counts drifted windows up to
    and including the first flagged one (1: flagged on the first drifted window); a stream
    with no alarm within ``max_drifted`` drifted windows is censored.
    """
    out: dict = {"clean_alarms": {"ours": [], "stock": []}, "delays": {}}
    for s in range(n_streams):
        for i in range(clean_windows):
            window = draw_window(pools.clean, size, _rng(seed, 2, s, i))
            out["clean_alarms"]["ours"].append(ours.evaluate(window, seed=10_000 + i)["flag"])
            if stock is not None and s < n_stock_streams:
                out["clean_alarms"]["stock"].append(stock.evaluate(window)["flag"])
    for scenario in DRIFTED:
        pool = pools.drifted[(scenario, intensity)]
        code = SCENARIOS.index(scenario)
        delays: dict[str, list[int | None]] = {"ours": [], "stock": []}
        for s in range(n_streams):
            windows = [
                draw_window(pool, size, _rng(seed, 3, code, s, i)) for i in range(max_drifted)
            ]
            detectors = [("ours", lambda w, i: ours.evaluate(w, seed=20_000 + i)["flag"])]
            if stock is not None and s < n_stock_streams:
                detectors.append(("stock", lambda w, i: stock.evaluate(w)["flag"]))
            for name, detect in detectors:
                delay = None
                for i, window in enumerate(windows):
                    if detect(window, i):
                        delay = i + 1
                        break
                delays[name].append(delay)
        out["delays"][scenario] = delays
    return out


def _median_delay(delays: list[int | None], max_drifted: int) -> str:
    if not delays:
        return "-"
    values = [d if d is not None else max_drifted + 1 for d in delays]
    median = statistics.median(values)
    return f">{max_drifted}" if median > max_drifted else f"{median:g}"


# Reporting --------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_tables(results: dict, args: argparse.Namespace) -> None:
    sizes = results["settings"]["sizes"]
    fa = results["false_alarms"]
    print("\n### False alarms on undrifted windows (target <= 0.05)\n")
    print(
        "| window | ours: any_drift (95% CI) | ours: modalities that fired | "
        "Evidently: preset OR model() | Evidently: DataDriftPreset only |"
    )
    print("|---:|---|---|---|---|")
    for size in sizes:
        cell = fa[str(size)]
        k, n = cell["ours_flagged"], cell["ours_n"]
        low, high = _interval(k, n)
        fired = ", ".join(f"{m} {c}" for m, c in sorted(cell["ours_modalities"].items())) or "-"
        miss = " **MISSED**" if k / n > FALSE_ALARM_TARGET else ""
        print(
            f"| {size} | {k / n:.3f} ({low:.3f}-{high:.3f}), n={n}{miss} | {fired} | "
            f"{_fmt(cell['stock_rate'])} (n={cell['stock_n']}) | "
            f"{_fmt(cell['stock_preset_rate'])} (n={cell['stock_n']}) |"
        )

    for intensity in results["settings"]["intensities"]:
        power = results["power"][str(intensity)]
        print(
            f"\n### Power at intensity {intensity:g}: share of drifted windows flagged, "
            "ours / Evidently (preset OR model())\n"
        )
        print("| scenario | harmful | " + " | ".join(f"n={s}" for s in sizes) + " |")
        print("|---|---|" + "---:|" * len(sizes))
        for scenario in DRIFTED:
            cells = power[scenario]
            row = [
                f"{_fmt(cells[str(s)]['ours_rate'])} / {_fmt(cells[str(s)]['stock_rate'])}"
                for s in sizes
            ]
            print(
                f"| {scenario} | {'yes' if HARMFUL[scenario] else 'no'} | " + " | ".join(row) + " |"
            )
        for label, names in (
            ("mean over the 6 harmful scenarios", HARMFUL_SCENARIOS),
            (
                "mean over harmful, concept excluded",
                tuple(s for s in HARMFUL_SCENARIOS if s != "concept"),
            ),
        ):
            row = []
            for s in sizes:
                ours_mean = np.mean([power[n][str(s)]["ours_rate"] for n in names])
                stock_values = [power[n][str(s)]["stock_rate"] for n in names]
                stock_mean = None if None in stock_values else float(np.mean(stock_values))
                row.append(f"{ours_mean:.2f} / {_fmt(stock_mean)}")
            print(f"| **{label}** | | " + " | ".join(row) + " |")
        print(
            "| Failing Loudly, best published (image datasets) | | "
            + " | ".join(f"{FAILING_LOUDLY[s]:.2f}" if s in FAILING_LOUDLY else "-" for s in sizes)
            + " |"
        )
        print(
            f"\nWindows per cell: ours {results['settings']['power_windows']}, Evidently "
            f"{results['settings']['evidently_power_windows']} (the first of the same windows)."
        )
    print(
        "\nFailing Loudly (Rabanser et al. 2019; best entry Kuebler et al. 2022) averages "
        "power over shift types and intensities on image datasets; ours is the demo's "
        "synthetic shifts at one intensity, so the comparison is indicative only."
    )

    delay = results["delay"]
    print(
        f"\n### Detection delay: {delay['clean_windows']} clean windows of {delay['size']} rows, "
        f"then drifted ones (intensity {delay['intensity']:g}); median drifted windows until "
        f"the first alarm (1 = first drifted window; censored at {delay['max_drifted']})\n"
    )
    ca = delay["clean_alarms"]
    print(
        f"Alarms on the clean prefixes: ours {sum(ca['ours'])}/{len(ca['ours'])}, "
        f"Evidently {sum(ca['stock'])}/{len(ca['stock'])}.\n"
    )
    print(
        "| scenario | ours: median delay | ours: streams detected | Evidently: median delay | Evidently: detected |"
    )
    print("|---|---:|---:|---:|---:|")
    for scenario in DRIFTED:
        d = delay["delays"][scenario]
        found_o = sum(x is not None for x in d["ours"])
        found_s = sum(x is not None for x in d["stock"])
        print(
            f"| {scenario} | {_median_delay(d['ours'], delay['max_drifted'])} | "
            f"{found_o}/{len(d['ours'])} | {_median_delay(d['stock'], delay['max_drifted'])} | "
            f"{found_s}/{len(d['stock'])} |"
        )

    est = results["estimate"]
    print(
        "\n### Label-free estimate: mean |expected_accuracy - realized accuracy| per window "
        "(CBPE; blind to concept drift by design)\n"
    )
    print(
        "| scenario | intensity | "
        + " | ".join(f"n={s}" for s in sizes)
        + " | whole pool: estimated / realized (error) |"
    )
    print("|---|---:|" + "---:|" * len(sizes) + "---|")
    for row in est:
        cells = " | ".join(_fmt(row["mae"].get(str(s))) for s in sizes)
        pool = row["pool"]
        print(
            f"| {row['scenario']} | {row['intensity']:g} | {cells} | "
            f"{pool['estimated']:.3f} / {pool['realized']:.3f} ({pool['error']:+.3f}) |"
        )

    print(
        "\n### Embedding drift baseline: Frechet distance per predicted class (DriftLens) vs "
        "our MMD + residual + presence tests on the text and image modalities\n"
    )
    print("| windows | detector | " + " | ".join(f"n={s}" for s in sizes) + " |")
    print("|---|---|" + "---:|" * len(sizes))
    rows = [("no drift (false alarms)", fa)] + [
        (f"{scenario} @ {intensity:g}", results["power"][str(intensity)][scenario])
        for intensity in results["settings"]["intensities"]
        for scenario in DRIFTED
    ]
    for label, cells in rows:
        for name, key in (
            ("Frechet", "frechet_rate"),
            ("ours (text, image)", "ours_embedding_rate"),
        ):
            values = [cells[str(s)].get(key) for s in sizes]
            print(f"| {label} | {name} | " + " | ".join(_fmt(v) for v in values) + " |")

    emb = results["evidently_embeddings"]
    print(
        "\n### Evidently's legacy embedding methods alone, default thresholds: share of "
        "windows flagged (review / photo)\n"
    )
    print("| windows | " + " | ".join(f"n={s}" for s in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for label, per_size in emb.items():
        row = []
        for s in sizes:
            rates = per_size.get(str(s))
            row.append("-" if rates is None else f"{_fmt(rates[0])} / {_fmt(rates[1])}")
        print(f"| {label} | " + " | ".join(row) + " |")


def _summarise(results: dict, cells_by_key: dict, pools: Pools, ours: Ours, args) -> None:
    sizes = results["settings"]["sizes"]
    none_cells = cells_by_key[("none", 0.0)]
    results["false_alarms"] = {}
    for size in sizes:
        cell = none_cells[size]
        modalities: dict[str, int] = {}
        for row in cell["ours"]:
            for m in row["modalities"]:
                modalities[m] = modalities.get(m, 0) + 1
        results["false_alarms"][str(size)] = {
            "ours_n": len(cell["ours"]),
            "ours_flagged": sum(r["flag"] for r in cell["ours"]),
            "ours_rate": _rate([r["flag"] for r in cell["ours"]]),
            "ours_embedding_rate": _rate([r["embedding_flag"] for r in cell["ours"]]),
            "frechet_rate": _rate([r["frechet_flag"] for r in cell["ours"] if "frechet_flag" in r]),
            "ours_modalities": modalities,
            "stock_n": len(cell["stock"]),
            "stock_rate": _rate([r["flag"] for r in cell["stock"]]),
            "stock_preset_rate": _rate([r["preset"] for r in cell["stock"]]),
            "ours_seconds_per_window": cell["ours_s"] / max(1, len(cell["ours"])),
            "stock_seconds_per_window": cell["stock_s"] / max(1, len(cell["stock"]))
            if cell["stock"]
            else None,
        }
    results["power"] = {}
    for intensity in results["settings"]["intensities"]:
        per = {}
        for scenario in DRIFTED:
            cells = cells_by_key[(scenario, intensity)]
            per[scenario] = {
                str(size): {
                    "ours_n": len(cells[size]["ours"]),
                    "ours_rate": _rate([r["flag"] for r in cells[size]["ours"]]),
                    "ours_embedding_rate": _rate(
                        [r["embedding_flag"] for r in cells[size]["ours"]]
                    ),
                    "frechet_rate": _rate(
                        [r["frechet_flag"] for r in cells[size]["ours"] if "frechet_flag" in r]
                    ),
                    "stock_n": len(cells[size]["stock"]),
                    "stock_rate": _rate([r["flag"] for r in cells[size]["stock"]]),
                    "stock_preset_rate": _rate([r["preset"] for r in cells[size]["stock"]]),
                    "ours_modalities": {
                        m: sum(m in r["modalities"] for r in cells[size]["ours"])
                        for m in ("tabular", "benign", "text", "image", "output")
                    },
                }
                for size in sizes
            }
        results["power"][str(intensity)] = per

    estimate_rows = []
    for (scenario, intensity), cells in cells_by_key.items():
        pool = pools.clean if scenario == "none" else pools.drifted[(scenario, intensity)]
        whole = ours.accuracy(pool)
        estimate_rows.append(
            {
                "scenario": scenario,
                "intensity": intensity,
                "mae": {
                    str(size): float(
                        np.mean(
                            [
                                abs(r["estimated_accuracy"] - r["realized_accuracy"])
                                for r in cells[size]["ours"]
                            ]
                        )
                    )
                    for size in sizes
                },
                "bias": {
                    str(size): float(
                        np.mean(
                            [
                                r["estimated_accuracy"] - r["realized_accuracy"]
                                for r in cells[size]["ours"]
                            ]
                        )
                    )
                    for size in sizes
                },
                "pool": {
                    "rows": len(pool),
                    "estimated": whole["estimated_accuracy"],
                    "realized": whole["realized_accuracy"],
                    "error": whole["estimated_accuracy"] - whole["realized_accuracy"],
                },
            }
        )
    results["estimate"] = estimate_rows

    emb: dict[str, dict[str, list]] = {}
    stock_scenarios = [("none", 0.0, "no drift")] + [
        (s, i, f"{s} @ {i:g}")
        for i in results["settings"]["intensities"]
        for s in ("image_camera", "text_domain")
    ]
    for method in EMBEDDING_METHODS:
        for scenario, intensity, label in stock_scenarios:
            cells = cells_by_key[(scenario, intensity)]
            per_size = {}
            for size in sizes:
                rows = cells[size]["stock"]
                if rows:
                    per_size[str(size)] = [
                        _rate([r["embedding_flags"][f"{c}:{method}"] for r in rows])
                        for c in ("review_emb", "photo_emb")
                    ]
            emb[f"{method}(): {label}"] = per_size
    results["evidently_embeddings"] = emb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument(
        "--intensities", type=float, nargs="+", choices=POOL_INTENSITIES, default=[0.5]
    )
    parser.add_argument("--false-alarm-windows", type=int, default=40)
    parser.add_argument("--power-windows", type=int, default=5)
    parser.add_argument("--evidently-false-alarm-windows", type=int, default=2)
    parser.add_argument("--evidently-power-windows", type=int, default=1)
    parser.add_argument("--delay-streams", type=int, default=3)
    parser.add_argument("--evidently-delay-streams", type=int, default=1)
    parser.add_argument("--delay-size", type=int, default=200)
    parser.add_argument("--delay-intensity", type=float, default=0.5)
    parser.add_argument("--delay-clean-windows", type=int, default=10)
    parser.add_argument("--delay-max-drifted", type=int, default=10)
    parser.add_argument(
        "--full",
        action="store_true",
        help="counts for the record: " + ", ".join(f"{k}={v}" for k, v in FULL.items()),
    )
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument(
        "--skip-frechet", action="store_true", help="leave out the Frechet (DriftLens) baseline"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pools", type=Path, default=DEFAULT_POOLS)
    parser.add_argument("--embedding-cache", type=Path, default=DEFAULT_EMBEDDING_CACHE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.full:
        for key, value in FULL.items():
            setattr(args, key, value)
    if args.delay_intensity not in args.intensities:
        parser.error("--delay-intensity must be one of --intensities")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    run_started = time.perf_counter()
    load_before = os.getloadavg()
    settings = PoolSettings(seed=args.seed)
    started = time.perf_counter()
    pools, cached = build_pools(settings, args.pools, args.embedding_cache)
    pools_s = time.perf_counter() - started
    config = demo_dataset_config()
    drift_config = DriftConfig()
    started = time.perf_counter()
    reference = fit_drift_reference(pools.reference, config, drift_config, seed=args.seed)
    fit_s = time.perf_counter() - started
    frechet = None
    if not args.skip_frechet:
        frechet = fit_frechet_reference(pools.reference, reference, FrechetConfig(seed=args.seed))
    ours = Ours(reference, config, drift_config, frechet)
    stock = None
    evidently_setup_s = 0.0
    if not args.skip_evidently:
        started = time.perf_counter()
        stock = StockEvidently(pools.reference, config)
        evidently_setup_s = time.perf_counter() - started
    sizes = tuple(args.sizes)

    cells_by_key: dict[tuple[str, float], dict] = {}
    started = time.perf_counter()
    cells_by_key[("none", 0.0)] = run_cells(
        pools,
        ours,
        stock,
        "none",
        0.0,
        sizes,
        args.false_alarm_windows,
        args.evidently_false_alarm_windows,
        args.seed,
    )
    false_alarm_s = time.perf_counter() - started
    started = time.perf_counter()
    for intensity in args.intensities:
        for scenario in DRIFTED:
            cells_by_key[(scenario, intensity)] = run_cells(
                pools,
                ours,
                stock,
                scenario,
                intensity,
                sizes,
                args.power_windows,
                args.evidently_power_windows,
                args.seed,
            )
    power_s = time.perf_counter() - started
    started = time.perf_counter()
    delay = run_delay(
        pools,
        ours,
        stock,
        args.delay_intensity,
        args.delay_size,
        args.delay_streams,
        args.evidently_delay_streams,
        args.delay_clean_windows,
        args.delay_max_drifted,
        args.seed,
    )
    delay_s = time.perf_counter() - started
    delay.update(
        size=args.delay_size,
        intensity=args.delay_intensity,
        clean_windows=args.delay_clean_windows,
        max_drifted=args.delay_max_drifted,
        streams=args.delay_streams,
        evidently_streams=args.evidently_delay_streams if stock else 0,
    )

    results: dict = {
        "settings": {
            "sizes": list(sizes),
            "intensities": list(args.intensities),
            "false_alarm_windows": args.false_alarm_windows,
            "power_windows": args.power_windows,
            "evidently_false_alarm_windows": 0
            if stock is None
            else args.evidently_false_alarm_windows,
            "evidently_power_windows": 0 if stock is None else args.evidently_power_windows,
            "pools": asdict(settings),
            "drift_config": drift_config.model_dump(),
        },
        "delay": delay,
    }
    started = time.perf_counter()
    _summarise(results, cells_by_key, pools, ours, args)
    summary_s = time.perf_counter() - started
    total_s = time.perf_counter() - run_started
    results["timings_s"] = {
        "pools": pools_s,
        "pools_cached": cached,
        "pool_build_first_run": pools.build,
        "fit_drift_reference": fit_s,
        "evidently_setup": evidently_setup_s,
        "false_alarms": false_alarm_s,
        "power": power_s,
        "delay": delay_s,
        "summary": summary_s,
        "total": total_s,
    }
    load_after = os.getloadavg()
    results["machine"] = {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
    }

    realized = float((pools.reference["prediction"] == pools.reference[config.label]).mean())
    print("## Drift detection benchmark\n")
    print(
        f"Machine: {results['machine']['processor']}, {os.cpu_count()} CPUs, load average "
        f"{load_before[0]:.1f} (1 min) / {load_before[1]:.1f} (5 min) at start, "
        f"{load_after[0]:.1f} / {load_after[1]:.1f} at end. Total {total_s:.0f} s."
    )
    build = pools.build
    print(
        f"Pools {'loaded from cache' if cached else 'built'} in {pools_s:.1f} s (first build: "
        f"{build['total_s']:.0f} s = embed {build['embedded_rows']:,.0f} rows "
        f"{build['embed_s']:.0f} s + train {build['train_s']:.0f} s + score {build['score_s']:.0f} s). "
        f"Reference {len(pools.reference):,} clean rows (model accuracy on them {realized:.3f}), "
        f"clean pool {len(pools.clean):,}, {settings.drift_rows:,} rows per scenario and intensity."
    )
    timings = results["timings_s"]
    print(
        f"Stage times: false alarms {timings['false_alarms']:.0f} s, power {timings['power']:.0f} s, "
        f"delay {timings['delay']:.0f} s, Evidently setup {evidently_setup_s:.1f} s; "
        "seconds per window, ours / Evidently: "
        + ", ".join(
            f"{s}: {results['false_alarms'][str(s)]['ours_seconds_per_window']:.2f} / "
            f"{_fmt(results['false_alarms'][str(s)]['stock_seconds_per_window'])}"
            for s in sizes
        )
        + "."
    )
    print_tables(results, args)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
