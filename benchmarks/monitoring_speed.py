"""One monitoring cycle: our decisions, our full cycle with the HTML report, stock Evidently.

Run from the repository root::

    .venv/bin/python -m benchmarks.monitoring_speed                 # everything, stock once
    .venv/bin/python -m benchmarks.monitoring_speed --skip-stock    # ours only

Data are the synthetic scored frames of ``tests/unit/monitoring/synthetic.py``: the demo
generator's 12 tabular columns (one monitor-only), 384-d text and 128-d image unit
embeddings with presence flags, two class probabilities and the prediction. The window
(2,000 rows, 30 % other-domain text) is compared with a 10,000-row reference.

Timed:

(a) decisions: ``compute_drift`` + ``estimate_performance`` + policy ``decide``;
(b) the cycle with the report: (a) + ``build_window_report`` (HTML, JSON, drift.json,
    reference subsampled to 5,000 rows) + ``drift_history_row``;
(c) stock Evidently 0.7.23 on the same rows: ``Report([DataDriftPreset(),
    EmbeddingsDrift(text), EmbeddingsDrift(image)])`` with default methods, the embedding
    dimensions as ``DataDefinition.embeddings`` columns, plus saving its HTML. Run once:
    its t-SNE plot takes tens of seconds per embedding.

Fitting the drift reference is done once per champion and reported apart. Evidently's
import (a few seconds) is paid once per worker process and reported apart too.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from features.demo_data import GenerationShift, demo_dataset_config
from monitoring.assessment import ChampionInfo, assess_window
from monitoring.drift import DriftConfig, fit_drift_reference
from monitoring.policy import PolicyConfig, PolicyState
from monitoring.reports import build_window_report, drift_history_row
from tests.unit.monitoring.synthetic import scored_frame


def _decisions(reference, window, config, seed: int):
    """The monitor's assessment of the window (drift, estimate, decision), as in production."""
    start = datetime(2026, 8, 1, tzinfo=UTC)
    return assess_window(
        dataset=config,
        window=window,
        window_start=start,
        window_end=start + timedelta(days=1),
        champion=ChampionInfo(name="bench", version="1", run_id="-", performance=0.80),
        drift_reference=reference,
        state=PolicyState(),
        policy=PolicyConfig(),
        drift_config=DriftConfig(),
        seed=seed,
    )


def _stock_frame(frame: pd.DataFrame, config, embeddings: list[str]) -> tuple[pd.DataFrame, dict]:
    """Tabular columns and model outputs, plus one column per embedding dimension."""
    base = [
        *config.tabular_columns,
        *[f"proba_{c}" for c in config.classes],
        "prediction",
    ]
    parts = [frame[base].reset_index(drop=True)]
    mapping: dict[str, list[str]] = {}
    for name in embeddings:
        values = np.stack(frame[name].to_numpy()).astype(np.float32)
        columns = [f"{name}_{j}" for j in range(values.shape[1])]
        parts.append(pd.DataFrame(values, columns=columns))
        mapping[name] = columns
    return pd.concat(parts, axis=1), mapping


def run_stock(reference_frame, window, config, embeddings: list[str], html: Path) -> float:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.presets import DataDriftPreset

    started = time.perf_counter()
    ref, mapping = _stock_frame(reference_frame, config, embeddings)
    cur, _ = _stock_frame(window, config, embeddings)
    definition = DataDefinition(
        numerical_columns=[*config.numeric_columns, *[f"proba_{c}" for c in config.classes]],
        categorical_columns=[*config.categorical_columns, "prediction"],
        embeddings=mapping,
    )
    metrics = [DataDriftPreset(), *[EmbeddingsDrift(embeddings_name=name) for name in embeddings]]
    snapshot = Report(metrics).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    snapshot.save_html(str(html))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-rows", type=int, default=10_000)
    parser.add_argument("--window-rows", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument(
        "--stock-embeddings",
        nargs="*",
        default=["review_emb", "photo_emb"],
        help="embedding columns given to stock EmbeddingsDrift (each runs a t-SNE)",
    )
    args = parser.parse_args()

    config = demo_dataset_config()
    reference_frame = scored_frame(config, args.reference_rows, seed=1)
    window = scored_frame(
        config,
        args.window_rows,
        seed=2,
        shift=GenerationShift(other_domain_text_share=0.3),
        labels=False,
    )
    started = time.perf_counter()
    reference = fit_drift_reference(reference_frame, config, seed=0)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    import evidently  # noqa: F401  (timed: paid once per worker process)

    import_seconds = time.perf_counter() - started

    decision_times, cycle_times, report_times = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for i in range(args.repeats):
            started = time.perf_counter()
            assessment = _decisions(reference, window, config, seed=i)
            decision_times.append(time.perf_counter() - started)

            started = time.perf_counter()
            assessment = _decisions(reference, window, config, seed=i)
            report = build_window_report(
                reference_frame,
                window,
                config,
                assessment,
                out / f"cycle{i}",
                drift_reference=reference,
            )
            drift_history_row(assessment)
            cycle_times.append(time.perf_counter() - started)
            report_times.append(report.seconds)
        html_mb = report.html.stat().st_size / 1e6
        stock = None
        if not args.skip_stock:
            stock = run_stock(
                reference_frame, window, config, args.stock_embeddings, out / "s.html"
            )

    decisions = statistics.median(decision_times)
    cycle = statistics.median(cycle_times)
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; window {args.window_rows:,} rows vs "
        f"reference {args.reference_rows:,}; drifted: "
        f"{', '.join(assessment.drift.drifted_modalities)}; action: {assessment.decision.action}"
    )
    print(
        f"fit_drift_reference (once per champion): {fit_seconds:.2f} s; "
        f"import evidently (once per process): {import_seconds:.2f} s; "
        f"report HTML {html_mb:.1f} MB, {len(report.columns)} drift columns\n"
    )
    print(f"| step | seconds (median of {args.repeats}) | speedup vs stock |")
    print("|---|---:|---:|")

    def ratio(seconds: float) -> str:
        return f"{stock / seconds:.0f}x" if stock else "-"

    print(
        f"| (a) decisions: compute_drift + estimate + decide | {decisions:.2f} | {ratio(decisions)} |"
    )
    print(f"| build_window_report alone | {statistics.median(report_times):.2f} | - |")
    print(f"| (b) full cycle with HTML report | {cycle:.2f} | {ratio(cycle)} |")
    if stock is not None:
        names = ", ".join(args.stock_embeddings) or "none"
        print(
            f"| (c) stock DataDriftPreset + EmbeddingsDrift ({names}), run once | {stock:.2f} | 1x |"
        )
    print(
        f"\ntargets: decisions <= 2 s {'OK' if decisions <= 2 else 'MISSED'}"
        + (
            f", >= 20x faster than stock {'OK' if stock and stock / decisions >= 20 else 'MISSED'}"
            if stock
            else ""
        )
        + f"; full cycle <= 10 s {'OK' if cycle <= 10 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
