"""Speed, false-alarm rate and power of ``monitoring.drift.compute_drift``.

Run from the repository root::

    .venv/bin/python -m benchmarks.drift_speed                      # speed only
    .venv/bin/python -m benchmarks.drift_speed --false-alarms 200   # + no-drift windows
    .venv/bin/python -m benchmarks.drift_speed --power 50           # + drifted windows

Data are the synthetic scored frames of ``tests/unit/monitoring/synthetic.py``: demo
tabular columns, 384-d text and 128-d image embeddings, two class probabilities.
"""

from __future__ import annotations

import argparse
import statistics
import time

from features.demo_data import GenerationShift, demo_dataset_config
from monitoring.drift import DriftConfig, compute_drift, fit_drift_reference
from tests.unit.monitoring.synthetic import scored_frame

WINDOW_SIZES = (50, 100, 200, 500, 1000)
SHIFTS = {
    "price x1.3": {"shift": GenerationShift(price_factor=1.3)},
    "30% other-domain text": {"shift": GenerationShift(other_domain_text_share=0.3)},
    "30% new-camera images": {"image_shift_share": 0.3},
    "warehouse_load +0.1 (benign)": {"shift": GenerationShift(warehouse_load_shift=0.1)},
    "channel mix": {"shift": GenerationShift(channel_probs=(0.30, 0.35, 0.20, 0.15))},
    "less confident outputs (T=1.5)": {"proba_temperature": 1.5},
}


def measure_speed(reference_rows: int, window_rows: int, repeats: int) -> None:
    config = demo_dataset_config()
    reference_frame = scored_frame(config, reference_rows, seed=1)
    window = scored_frame(config, window_rows, seed=2)
    started = time.perf_counter()
    reference = fit_drift_reference(reference_frame, config, seed=0)
    print(f"fit_drift_reference on {reference_rows:,} rows: {time.perf_counter() - started:.2f} s")
    for test in ("mmd", "ks"):
        drift_config = DriftConfig(embedding_test=test)
        timings = []
        for seed in range(repeats):
            started = time.perf_counter()
            compute_drift(reference, window, drift_config, seed=seed)
            timings.append(time.perf_counter() - started)
        print(
            f"compute_drift [{test}] {window_rows:,} vs {reference_rows:,} rows: "
            f"median {statistics.median(timings):.2f} s, max {max(timings):.2f} s "
            f"({repeats} runs)"
        )


def measure_rates(n_windows: int, shifts: dict[str, dict], embedding_test: str) -> None:
    config = demo_dataset_config()
    reference = fit_drift_reference(scored_frame(config, 10_000, seed=1), config, seed=0)
    drift_config = DriftConfig(embedding_test=embedding_test)
    for label, knobs in shifts.items():
        print(f"\n[{embedding_test}] {label}: share of windows flagged ({n_windows} per size)")
        for size in WINDOW_SIZES:
            flagged = 0
            per_modality: dict[str, int] = {}
            for i in range(n_windows):
                window = scored_frame(config, size, seed=100_000 + 1_000 * size + i, **knobs)
                result = compute_drift(reference, window, drift_config, seed=i)
                flagged += result.any_drift
                for name in result.drifted_modalities:
                    per_modality[name] = per_modality.get(name, 0) + 1
            detail = ", ".join(f"{k} {v / n_windows:.3f}" for k, v in sorted(per_modality.items()))
            print(f"  window {size:5d}: any {flagged / n_windows:.3f}  ({detail or '-'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--false-alarms", type=int, default=0, metavar="N")
    parser.add_argument("--power", type=int, default=0, metavar="N")
    parser.add_argument("--embedding-test", choices=("mmd", "ks"), default="mmd")
    args = parser.parse_args()
    measure_speed(10_000, 2_000, args.repeats)
    if args.false_alarms:
        measure_rates(args.false_alarms, {"no drift": {}}, args.embedding_test)
    if args.power:
        measure_rates(args.power, SHIFTS, args.embedding_test)


if __name__ == "__main__":
    main()
