"""Poisoning benchmark: how often a poisoned retrain is promoted, how often a clean one
still is, and the precision and recall of the rows the integrity check flags.

    python -m benchmarks.poisoning [--seeds 5] [--profile production|fast]

Each seed: a champion trained on 1,200 clean synthetic rows (signal in text, image and
tabular inputs; ``tests/unit/training/synthetic.py``), a golden holdout of 800 clean
rows, and a retrain window of the history plus 700 new rows under a camera shift (the
drift that asks for a retrain), poisoned by each scenario of ``features/drift_sim.py``.
The retrain goes through what the train flow runs: integrity check -> quarantine ->
train -> recent and golden holdouts -> paired-bootstrap gate, with the train flow's
default training config and gate (``--profile fast``: the unit tests' small models and
looser bounds). For comparison the same
retrain is judged by the old gate (recent holdout only, any point gain promotes, no
integrity check). Prints a markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tests.unit.training.poisoning import GATE, TRAIN, build_world, new_window, retrain
from tests.unit.training.synthetic import FAST_TRAIN, TEST_GATE
from training.evaluate import evaluate_model

# How the champion and every retrain are trained and judged: as the train flow does
# (the default TrainConfig and GateConfig), or the small fast models of the unit tests
# with the gate bounds sized to them (what this benchmark ran until 1 December).
PROFILES = {
    "production": (TRAIN, GATE),
    "fast": (FAST_TRAIN, TEST_GATE.model_copy(update={"min_slice_rows": 40})),
}

SCENARIOS = (
    "clean",
    "poison_segment",
    "poison_random_5",
    "poison_random_10",
    "poison_random_20",
    "poison_duplicates",
    "poison_trigger",
)


def old_gate(world, scenario: str) -> bool:
    """The gate before issue 12: no check, the challenger's own test split, any gain."""
    window, _ = new_window(world, scenario)
    trained = world.fit(window)
    test = trained.splits.test
    new = evaluate_model(trained.model, test, "reorder").overall.macro_f1
    old = evaluate_model(world.champion.model, test, "reorder").overall.macro_f1
    return bool(new > old)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--future-rows",
        type=int,
        default=4000,
        help="Fresh clean rows of the shifted population: the ground truth of whether a "
        "retrain is really better than the champion.",
    )
    parser.add_argument(
        "--worth",
        type=float,
        default=0.02,
        help="A clean retrain should be promoted when its macro-F1 on the fresh rows beats "
        "the champion's by more than this.",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="production",
        help="Training config and gate: the train flow's defaults, or the unit tests' "
        "small fast models (12 epochs, width 32) with a looser ECE bound (0.25) and slices "
        "of 40 rows compared.",
    )
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--out", type=Path, default=None, help="JSON of every retrain.")
    args = parser.parse_args()
    started = time.perf_counter()
    train, gate = PROFILES[args.profile]
    # The clean retrain is every scenario's yardstick: always run.
    rows = {s: [] for s in dict.fromkeys(["clean", *args.scenarios])}
    for seed in range(args.seeds):
        world = build_world(seed, future_rows=args.future_rows, train=train)
        for scenario in rows:
            outcome = retrain(world, scenario, gate)
            rows[scenario].append(
                {
                    "seed": seed,
                    "promoted": outcome.promoted,
                    "blocked": outcome.blocked,
                    "old_gate_promoted": old_gate(world, scenario),
                    "poisoned": outcome.poisoned,
                    "flagged": outcome.suspicious,
                    "true_flags": outcome.true_suspicious,
                    "golden_delta": outcome.golden_delta,
                    "true_delta": outcome.true_delta,
                    "flip_z": round(outcome.flip_z, 2),
                    "reason": outcome.reason[:300],
                }
            )
            print(scenario, seed, rows[scenario][-1], flush=True)
    lines = [
        "| scenario | poisoned rows (mean) | promoted, old gate | promoted, new | blocked by "
        "integrity | flag precision | flag recall | promoted, yet no better than the "
        "champion on fresh rows | macro-F1 of the promoted on fresh rows, vs the clean "
        "retrain: mean / worst |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    clean = {r["seed"]: r["true_delta"] for r in rows["clean"]}
    for scenario, results in rows.items():
        n = len(results)
        poisoned = sum(r["poisoned"] for r in results)
        flagged = sum(r["flagged"] for r in results)
        true = sum(r["true_flags"] for r in results)
        precision = f"{true / flagged:.0%}" if flagged and poisoned else "-"
        recall = f"{true / poisoned:.0%}" if poisoned else "-"
        # What a promoted poisoned model costs: its macro-F1 on fresh clean rows of the
        # shifted population against the same seed's clean retrain there.
        harm = [
            r["true_delta"] - clean[r["seed"]]
            for r in results
            if r["promoted"] and poisoned and clean.get(r["seed"]) is not None
        ]
        cost = f"{np.mean(harm):+.3f} / {min(harm):+.3f}" if harm else "-"
        no_better = sum(
            r["promoted"] and r["true_delta"] is not None and r["true_delta"] <= 0 for r in results
        )
        lines.append(
            f"| {scenario} | {poisoned / n:.0f} | {sum(r['old_gate_promoted'] for r in results)}/{n}"
            f" | {sum(r['promoted'] for r in results)}/{n} | "
            f"{sum(r['blocked'] for r in results)}/{n} | {precision} | {recall} | "
            f"{no_better}/{n} | {cost} |"
        )
    clean_runs = rows["clean"]
    worth = [r for r in clean_runs if (r["true_delta"] or 0.0) > args.worth]
    worse = [r for r in clean_runs if r["true_delta"] is not None and r["true_delta"] <= 0]
    lines += [
        "",
        "Likelihood-ratio z of the new rows' flip share over the older rows' (the integrity "
        "check's random-flip test): "
        + "; ".join(
            f"{scenario} {min(r['flip_z'] for r in results):.1f}-"
            f"{max(r['flip_z'] for r in results):.1f}"
            for scenario, results in rows.items()
        )
        + ".",
        "",
        f"Clean retrains whose macro-F1 on {args.future_rows:,} fresh shifted rows beats the "
        f"champion's by more than {args.worth}: {len(worth)}/{len(clean_runs)}, promoted "
        f"{sum(r['promoted'] for r in worth)}/{len(worth)}. Clean retrains no better than the "
        f"champion there: {len(worse)}, promoted {sum(r['promoted'] for r in worse)}. "
        "True gains of the clean retrains (seed: gain, promoted): "
        + ", ".join(
            f"{r['seed']}: {r['true_delta']:+.3f} {'P' if r['promoted'] else '-'}"
            for r in clean_runs
            if r["true_delta"] is not None
        ),
    ]
    table = "\n".join(lines)
    print(
        f"\n{table}\n\n{args.seeds} seeds, profile '{args.profile}', "
        f"{time.perf_counter() - started:.0f} s"
    )
    out = args.out or Path(f"benchmarks/out/poisoning-{args.profile}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
