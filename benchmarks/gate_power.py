"""How often the promotion gate's recent-holdout test sees a clean retrain's real gain.

    python -m benchmarks.gate_power [--seeds 20] [--profile production|fast]

Per seed, the clean retrain of ``benchmarks/poisoning.py`` (camera shift, 700 new rows,
no poisoning) is scored with the champion on its own test split (the recent holdout,
~285 rows) and on 4,000 fresh rows of the shifted population (the truth). Three paired
bootstrap tests of "the challenger is better on the recent holdout" are compared:
macro-F1 at 95 % and 90 % one-sided confidence (the gate's test until
``GateConfig.recent_test`` defaulted to Brier, and a looser one), and the per-row Brier
score of the calibrated probabilities at 95 % (a proper scoring rule: it uses the
probabilities, not only the argmax; the gate's default test now, beside macro-F1 not
below the champion's). Prints a markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.poisoning import PROFILES
from tests.unit.training.poisoning import CONFIG, build_world, new_window
from training.evaluate import (
    brier_scores,
    evaluate_model,
    label_indices,
    paired_bootstrap,
    paired_mean_bootstrap,
)


def brier_bound(y: np.ndarray, challenger: np.ndarray, champion: np.ndarray) -> float:
    """Lower 95 % bound of the mean per-row Brier improvement (positive: challenger better),
    by the gate's own paired bootstrap."""
    gain = brier_scores(y, champion) - brier_scores(y, challenger)
    return paired_mean_bootstrap(gain, 0.95, 2000, seed=len(y))[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--worth", type=float, default=0.02)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="production")
    args = parser.parse_args()
    classes = list(CONFIG.classes)
    rows = []
    for seed in range(args.seeds):
        world = build_world(seed, future_rows=4000, train=PROFILES[args.profile][0])
        window, _ = new_window(world, "clean")
        trained = world.fit(window)
        test = trained.splits.test
        y = label_indices(test["reorder"], classes)
        a = trained.model.predict_proba(test)
        b = world.champion.model.predict_proba(test)
        _, low95, _ = paired_bootstrap(y, a.argmax(1), b.argmax(1), 2, "macro_f1", 0.95)
        _, low90, _ = paired_bootstrap(y, a.argmax(1), b.argmax(1), 2, "macro_f1", 0.90)
        truth = (
            evaluate_model(trained.model, world.future, "reorder").overall.macro_f1
            - evaluate_model(world.champion.model, world.future, "reorder").overall.macro_f1
        )
        rows.append((seed, truth, low95 > 0, low90 > 0, brier_bound(y, a, b) > 0))
        print(rows[-1], flush=True)
    worth = [r for r in rows if r[1] > args.worth]
    lines = [
        f"| recent-holdout test | significant, all {len(rows)} clean retrains | "
        f"significant, the {len(worth)} better by more than {args.worth} on fresh rows |",
        "|---|---:|---:|",
    ]
    for name, column in (
        ("macro-F1, 95 % (recent_test=primary_metric)", 2),
        ("macro-F1, 90 %", 3),
        ("Brier, 95 % (recent_test=brier, the default)", 4),
    ):
        lines.append(
            f"| {name} | {sum(r[column] for r in rows)}/{len(rows)} | "
            f"{sum(r[column] for r in worth)}/{len(worth)} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
