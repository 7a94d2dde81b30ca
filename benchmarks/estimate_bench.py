"""Label-free estimators on the simulator's scenarios: error, band coverage, trust; and the
Frechet (DriftLens) embedding detector beside the MMD test.

Run from the repository root::

    .venv/bin/python -m benchmarks.estimate_bench            # default counts
    .venv/bin/python -m benchmarks.estimate_bench --full     # more windows and sizes

Prints markdown tables and writes ``benchmarks/out/estimate_bench.json``.

Pools: ``benchmarks.drift_detection.build_pools`` with a demo-like champion (30 epochs,
early stopping, on 20,000 clean rows; about 0.79 accuracy like the demo's v1), cached
under ``benchmarks/out/drift_detection_pools/`` (the first run embeds about 70,000 rows
with the real encoders; the embedding cache is shared with ``drift_detection``).
``--weak-model`` uses the drift benchmark's own pools (8 epochs on 6,000 rows).

The 3,000 clean reference rows play the champion's ``reference.parquet`` (labelled,
scored); the drift reference is fitted on them with ``DriftConfig()``. Each window is
drawn without replacement from a scenario pool; every estimator is computed on it from
one ``collect_evidence`` call, and compared with the window's realized accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.drift_detection import (
    DEFAULT_EMBEDDING_CACHE,
    DEFAULT_POOLS,
    DRIFTED,
    POOL_INTENSITIES,
    PoolSettings,
    _interval,
    _rng,
    build_pools,
    draw_window,
)
from features.demo_data import demo_dataset_config
from features.drift_sim import SCENARIOS
from monitoring.drift import DriftConfig, compute_drift, fit_drift_reference
from monitoring.estimators import (
    ESTIMATOR_METHODS,
    EstimatorConfig,
    collect_evidence,
    estimate_from_evidence,
    fit_estimator_reference,
)
from monitoring.frechet import FrechetConfig, fit_frechet_reference, frechet_drift

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "estimate_bench.json"
COVARIATE = ("image_camera", "text_domain", "tabular_price_inflation", "tabular_channel_mix")
EMBEDDING_SCENARIOS = ("image_camera", "text_domain")
FULL = {"sizes": [50, 100, 200, 500, 1000], "windows": 20, "null_windows": 100}


def run(args: argparse.Namespace) -> dict:
    settings = PoolSettings() if args.weak_model else PoolSettings(epochs=30, train_rows=20_000)
    started = time.perf_counter()
    pools, cached = build_pools(settings, args.pools, args.embedding_cache)
    pools_s = time.perf_counter() - started
    dataset = demo_dataset_config()
    drift_config = DriftConfig()
    drift_reference = fit_drift_reference(pools.reference, dataset, drift_config, seed=args.seed)
    config = EstimatorConfig(n_simulations=args.simulations, seed=args.seed)
    reference = fit_estimator_reference(pools.reference, drift_reference, config)
    frechet = fit_frechet_reference(pools.reference, drift_reference, FrechetConfig(seed=args.seed))

    cells = [("none", 0.0)] + [(s, i) for i in args.intensities for s in DRIFTED]
    windows: list[dict] = []
    estimate_s = 0.0
    for scenario, intensity in cells:
        pool = pools.clean if scenario == "none" else pools.drifted[(scenario, intensity)]
        code = SCENARIOS.index(scenario)
        for size in args.sizes:
            for i in range(args.windows):
                window = draw_window(
                    pool, size, _rng(args.seed, 7, code, int(intensity * 100), size, i)
                )
                t0 = time.perf_counter()
                evidence = collect_evidence(reference, window, config)
                row: dict = {
                    "scenario": scenario,
                    "intensity": intensity,
                    "size": size,
                    "realized": float((window["prediction"] == window[dataset.label]).mean()),
                    "domain_auc": evidence.domain_auc,
                    "far_share": float(evidence.far.mean()),
                    "methods": {},
                }
                for method in ESTIMATOR_METHODS:
                    estimate = estimate_from_evidence(evidence, dataset.classes, config, method)
                    low, high = estimate.accuracy_band
                    row["methods"][method] = {
                        "estimated": estimate.expected_accuracy,
                        "low": low,
                        "high": high,
                    }
                    row["trusted"] = estimate.trusted
                estimate_s += time.perf_counter() - t0
                if scenario in ("none", *EMBEDDING_SCENARIOS):
                    unlabeled = window.drop(columns=[dataset.label])
                    result = frechet_drift(frechet, unlabeled)
                    row["frechet_flag"] = result.drifted
                    drift = compute_drift(drift_reference, unlabeled, drift_config, seed=i)
                    row["mmd_flag"] = any(
                        drift.modalities[m].drifted
                        for m in ("text", "image")
                        if m in drift.modalities
                    )
                windows.append(row)

    # Frechet false alarms need more undrifted windows than the estimates do.
    null_flags: dict[int, dict[str, list[bool]]] = {}
    for size in args.sizes:
        flags: dict[str, list[bool]] = {"frechet": [], "mmd": []}
        for i in range(args.null_windows):
            window = draw_window(pools.clean, size, _rng(args.seed, 8, size, i))
            unlabeled = window.drop(columns=[dataset.label])
            flags["frechet"].append(frechet_drift(frechet, unlabeled).drifted)
            drift = compute_drift(drift_reference, unlabeled, drift_config, seed=50_000 + i)
            flags["mmd"].append(
                any(drift.modalities[m].drifted for m in ("text", "image") if m in drift.modalities)
            )
        null_flags[size] = flags
    return {
        "settings": {
            "sizes": args.sizes,
            "intensities": args.intensities,
            "windows": args.windows,
            "null_windows": args.null_windows,
            "pools": settings.__dict__ | {"intensities": list(settings.intensities)},
            "estimator_config": config.model_dump(),
        },
        "reference_accuracy": reference.accuracy,
        "pools_cached": cached,
        "pools_s": pools_s,
        "estimate_seconds_per_window": estimate_s / max(1, len(windows)),
        "windows": windows,
        "null_flags": {str(k): v for k, v in null_flags.items()},
    }


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarise(results: dict) -> dict:
    sizes = results["settings"]["sizes"]
    rows = results["windows"]
    table: dict = {}
    for w in rows:
        key = f"{w['scenario']}@{w['intensity']:g}"
        for method, m in w["methods"].items():
            cell = (
                table.setdefault(key, {})
                .setdefault(method, {})
                .setdefault(str(w["size"]), {"errors": [], "covered": [], "bias": []})
            )
            cell["errors"].append(abs(m["estimated"] - w["realized"]))
            cell["bias"].append(m["estimated"] - w["realized"])
            cell["covered"].append(m["low"] <= w["realized"] <= m["high"])
    summary: dict = {"mae": {}, "coverage": {}, "bias": {}, "trusted": {}, "goal": {}}
    for key, per_method in table.items():
        for method, per_size in per_method.items():
            summary["mae"].setdefault(key, {})[method] = {
                s: _mean(c["errors"]) for s, c in per_size.items()
            }
            summary["bias"].setdefault(key, {})[method] = {
                s: _mean(c["bias"]) for s, c in per_size.items()
            }
            summary["coverage"].setdefault(key, {})[method] = {
                s: _mean(c["covered"]) for s, c in per_size.items()
            }
    for w in rows:
        key = f"{w['scenario']}@{w['intensity']:g}"
        summary["trusted"].setdefault(key, []).append(w["trusted"])
    summary["trusted"] = {k: _mean(v) for k, v in summary["trusted"].items()}
    # Goal: covariate scenarios, >= 500 rows, every intensity: mean error <= 0.03, coverage >= 0.9.
    for method in ESTIMATOR_METHODS:
        worst, errors, covered, widths = 0.0, [], [], []
        for w in rows:
            if w["scenario"] in COVARIATE and w["size"] >= 500:
                m = w["methods"][method]
                errors.append(abs(m["estimated"] - w["realized"]))
                covered.append(m["low"] <= w["realized"] <= m["high"])
                widths.append(m["high"] - m["low"])
        for key, per in summary["mae"].items():
            if key.split("@")[0] in COVARIATE:
                worst = max([worst] + [v for s, v in per[method].items() if int(s) >= 500])
        all_covered = [
            w["methods"][method]["low"] <= w["realized"] <= w["methods"][method]["high"]
            for w in rows
        ]
        summary["goal"][method] = {
            "covariate_500plus_mean_error": _mean(errors),
            "covariate_500plus_worst_cell": worst,
            "covariate_500plus_coverage": _mean(covered),
            "covariate_500plus_band_width": _mean(widths),
            "no_concept_coverage": _mean(
                [
                    w["methods"][method]["low"] <= w["realized"] <= w["methods"][method]["high"]
                    for w in rows
                    if w["scenario"] != "concept"
                ]
            ),
            "all_windows_coverage": _mean(all_covered),
            "all_windows_mean_error": _mean(
                [abs(w["methods"][method]["estimated"] - w["realized"]) for w in rows]
            ),
        }
    detection: dict = {"false_alarms": {}, "power": {}}
    for size, flags in results["null_flags"].items():
        detection["false_alarms"][size] = {
            name: {"rate": _mean(v), "n": len(v), "ci": _interval(sum(v), len(v))}
            for name, v in flags.items()
        }
    for w in rows:
        if w["scenario"] in EMBEDDING_SCENARIOS:
            key = f"{w['scenario']}@{w['intensity']:g}"
            cell = (
                detection["power"]
                .setdefault(key, {})
                .setdefault(str(w["size"]), {"frechet": [], "mmd": []})
            )
            cell["frechet"].append(w["frechet_flag"])
            cell["mmd"].append(w["mmd_flag"])
    detection["power"] = {
        k: {s: {n: _mean(v) for n, v in c.items()} for s, c in per.items()}
        for k, per in detection["power"].items()
    }
    summary["detection"] = detection
    summary["sizes"] = [str(s) for s in sizes]
    return summary


def print_tables(results: dict, summary: dict) -> None:
    sizes = summary["sizes"]
    print(
        f"Reference accuracy {results['reference_accuracy']:.3f}; "
        f"{results['settings']['windows']} windows per cell; "
        f"{results['estimate_seconds_per_window']:.2f} s per window for all five estimators."
    )
    print("\n### Mean |estimated - realized accuracy| per window (band coverage in brackets)\n")
    print("| scenario | share trusted | " + " | ".join(f"{m}" for m in ESTIMATOR_METHODS) + " |")
    print("|---|---:|" + "---|" * len(ESTIMATOR_METHODS))
    for key in summary["mae"]:
        for size in sizes:
            cells = []
            for method in ESTIMATOR_METHODS:
                mae = summary["mae"][key][method][size]
                cov = summary["coverage"][key][method][size]
                cells.append(f"{mae:.3f} ({cov:.0%})")
            trusted = summary["trusted"][key]
            print(f"| {key}, n={size} | {trusted:.0%} | " + " | ".join(cells) + " |")
    print("\n### Goals (covariate scenarios, windows of 500+ rows, every intensity)\n")
    print(
        "| estimator | mean error | worst cell | band coverage | mean band width | "
        "coverage, all windows | coverage, concept excluded | mean error, all windows |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for method, g in summary["goal"].items():
        print(
            f"| {method} | {g['covariate_500plus_mean_error']:.3f} | "
            f"{g['covariate_500plus_worst_cell']:.3f} | {g['covariate_500plus_coverage']:.0%} | "
            f"{g['covariate_500plus_band_width']:.3f} | {g['all_windows_coverage']:.0%} | "
            f"{g['no_concept_coverage']:.0%} | {g['all_windows_mean_error']:.3f} |"
        )
    detection = summary["detection"]
    print("\n### Embedding drift: Frechet per predicted class (DriftLens) vs our MMD tests\n")
    print("| windows | " + " | ".join(f"n={s}" for s in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for name in ("frechet", "mmd"):
        cells = []
        for s in sizes:
            fa = detection["false_alarms"][s][name]
            cells.append(f"{fa['rate']:.3f} (n={fa['n']})")
        print(f"| false alarms, {name} | " + " | ".join(cells) + " |")
    for key, per in detection["power"].items():
        for name in ("frechet", "mmd"):
            print(
                f"| power {key}, {name} | "
                + " | ".join(f"{per[s][name]:.2f}" for s in sizes)
                + " |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument(
        "--intensities",
        type=float,
        nargs="+",
        choices=POOL_INTENSITIES,
        default=list(POOL_INTENSITIES),
    )
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--null-windows", type=int, default=40)
    parser.add_argument("--simulations", type=int, default=200)
    parser.add_argument("--full", action="store_true", help=f"counts for the record: {FULL}")
    parser.add_argument("--weak-model", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pools", type=Path, default=DEFAULT_POOLS)
    parser.add_argument("--embedding-cache", type=Path, default=DEFAULT_EMBEDDING_CACHE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.full:
        for key, value in FULL.items():
            setattr(args, key, value)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    load_before = os.getloadavg()
    results = run(args)
    summary = summarise(results)
    total = time.perf_counter() - started
    load_after = os.getloadavg()
    print("## Label-free estimate benchmark\n")
    print(
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} at start, "
        f"{load_after[0]:.1f} at end; total {total:.0f} s (pools "
        f"{'cached' if results['pools_cached'] else 'built'} in {results['pools_s']:.0f} s)."
    )
    print_tables(results, summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "summary": summary}, indent=1, default=str))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
