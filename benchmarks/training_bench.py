"""Training benchmark on the demo data: training time, pyfunc throughput, fusion vs single modality.

    python benchmarks/training_bench.py [--rows 20000] [--days 90] [--cache /tmp/mmops-emb-cache]

Embeds the demo rows (cached by content, so only the first run pays for the encoders),
trains the fusion model and one model per single modality with the same TrainConfig,
and prints markdown tables for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from features.demo_data import DemoSources, build_demo_dataset, demo_dataset_config
from features.embedding import Encoders, embed_frame
from training.evaluate import evaluate_model
from training.pyfunc import load_pyfunc, pyfunc_input, save_pyfunc
from training.train import TrainConfig, train_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mmops-emb-cache"))
    parser.add_argument("--score-rows", type=int, default=20_000)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = demo_dataset_config()
    started = time.perf_counter()
    raw, _ = build_demo_dataset(
        DemoSources.load(), n_rows=args.rows, days=args.days, seed=args.seed
    )
    frame = embed_frame(raw, config, Encoders.load(config), cache_dir=args.cache)
    embed_s = time.perf_counter() - started
    # Feast returns numeric features as floats; embed_frame keeps the raw integer dtypes.
    for column in config.numeric_columns:
        frame[column] = frame[column].astype(float)

    train_config = TrainConfig(seed=args.seed, show_progress=False)
    rows = []
    fusion = None
    for label, modalities in (
        ("fusion (text + image + tabular)", None),
        ("text only", ["review"]),
        ("image only", ["photo"]),
        ("tabular only", ["tabular"]),
    ):
        result = train_model(
            frame, config, train_config.model_copy(update={"modalities": modalities})
        )
        evaluation = evaluate_model(result.model, result.splits.test, config.label)
        rows.append((label, result, evaluation))
        fusion = fusion or (result, evaluation)

    result, evaluation = fusion
    with tempfile.TemporaryDirectory() as tmp:
        save_pyfunc(result.model, Path(tmp) / "model", result.splits.test)
        model = load_pyfunc(Path(tmp) / "model")
        batch = pyfunc_input(
            frame.sample(n=min(args.score_rows, len(frame)), random_state=0), result.model
        )
        model.predict(batch.head(100))  # warm-up
        t0 = time.perf_counter()
        model.predict(batch)
        score_s = time.perf_counter() - t0

    print(f"## Training benchmark ({args.rows:,} demo rows over {args.days} days)")
    print()
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads). Embedding/cache load: "
        f"{embed_s:.1f} s."
    )
    print()
    print(
        f"Split by time: {result.manifest.train.n_rows:,} train / "
        f"{result.manifest.validation.n_rows:,} validation / {result.manifest.test.n_rows:,} test."
    )
    print()
    print("| model | accuracy | macro-F1 | ROC-AUC | ECE (calibrated) | epochs | train time (s) |")
    print("|---|---|---|---|---|---|---|")
    for label, r, e in rows:
        print(
            f"| {label} | {e.overall.accuracy:.4f} | {e.overall.macro_f1:.4f} | "
            f"{e.overall.roc_auc:.4f} | {e.overall.ece:.4f} | {r.epochs_run} (best {r.best_epoch}) "
            f"| {r.train_seconds:.1f} |"
        )
    print(
        f"| majority baseline | {evaluation.baseline.accuracy:.4f} | "
        f"{evaluation.baseline.macro_f1:.4f} | - | - | - | - |"
    )
    print()
    print("Fusion model with one modality masked at test time (no retraining):")
    print()
    print("| masked | accuracy | macro-F1 |")
    print("|---|---|---|")
    for name, m in evaluation.ablation.items():
        print(f"| {name} | {m.accuracy:.4f} | {m.macro_f1:.4f} |")
    print()
    print(
        f"Calibration (fusion, test): ECE {evaluation.uncalibrated.ece:.4f} before, "
        f"{evaluation.overall.ece:.4f} after temperature scaling (T = {evaluation.temperature:.3f})."
    )
    print(
        f"Pyfunc scoring (mlflow.pyfunc predict, schema enforcement included): {len(batch):,} rows "
        f"in {score_s:.2f} s = {len(batch) / score_s:,.0f} rows/s."
    )


if __name__ == "__main__":
    main()
