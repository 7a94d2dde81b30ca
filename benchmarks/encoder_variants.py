"""Encoder variants side by side: throughput per batch size, cosine to fp32, and the fusion
model's accuracy and macro-F1 trained on each variant's vectors.

    python -m benchmarks.encoder_variants [--texts 256] [--rows 8000] [--reviews 1500]

Every variant runs in this one process on the same texts, interleaved over ``--repeats``
rounds (the best round counts), so the ratios hold on a noisy shared machine even where
the absolute numbers do not. ``torch-dynamic-int8`` (PyTorch's own dynamic quantization,
per channel) is measured for comparison only: it is not a setting, see the README.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from features.demo_data import DemoSources, build_demo_dataset, demo_dataset_config
from features.embedding import Encoders, embed_frame
from features.encoders import ImageEncoder, TextEncoder, decode_image
from training.evaluate import evaluate_model
from training.train import TrainConfig, train_model

VARIANTS = ("fp32", "onnx-fp32", "int8")


def _torch_dynamic_int8() -> TextEncoder:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    encoder = TextEncoder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder._model = quantize_dynamic(
            encoder._model, {torch.nn.Linear: per_channel_dynamic_qconfig}
        )
    return encoder


def _rate(encode, items, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        encode(items)
        best = min(best, time.perf_counter() - started)
    return len(items) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=256, help="distinct texts per kind")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=int, default=8000, help="demo rows for the fusion model")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--reviews", type=int, default=1500, help="distinct reviews drawn from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-quality", action="store_true", help="skip the fusion models")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    sources = DemoSources.load()
    long_texts = sources.reviews["review"].tolist()[: args.texts]
    short_texts = sources.other_texts[: args.texts]
    artifacts = Path(tempfile.mkdtemp(prefix="mmops-encoders-"))
    encoders = {v: TextEncoder(variant=v, artifact_dir=artifacts) for v in VARIANTS}
    encoders["torch-dynamic-int8"] = _torch_dynamic_int8()
    for encoder in encoders.values():
        encoder.encode(long_texts[:16])  # warm-up

    throughput: dict[tuple[str, str, int], float] = {}
    for _ in range(args.repeats):  # rounds interleave the variants: load bursts hit all
        for batch in args.batches:
            for kind, texts in (("long", long_texts), ("short", short_texts)):
                for name, encoder in encoders.items():
                    encoder.batch_size = batch
                    rate = _rate(encoder.encode, texts, 1)
                    best = throughput.get((name, kind, batch), 0.0)
                    throughput[name, kind, batch] = max(best, rate)
    cosine = {}
    reference = {
        k: encoders["fp32"].encode(t) for k, t in (("long", long_texts), ("short", short_texts))
    }
    for name, encoder in encoders.items():
        for kind, texts in (("long", long_texts), ("short", short_texts)):
            c = (encoder.encode(texts) * reference[kind]).sum(1)
            cosine[name, kind] = (float(c.mean()), float(c.min()))

    image_encoder = ImageEncoder()
    images = [decode_image(png, size=image_encoder.size) for png in sources.png[: args.images]]
    image_rates = {}
    for batch in args.batches:
        image_encoder.batch_size = batch
        image_encoder.encode(images[:16])
        image_rates[batch] = _rate(image_encoder.encode, images, args.repeats)

    config = demo_dataset_config()
    subset = sources.subset(args.reviews, None, args.seed)
    raw, _ = build_demo_dataset(subset, n_rows=args.rows, days=args.days, seed=args.seed)
    image_encoder.batch_size = 64
    quality = {}
    for name in () if args.no_quality else VARIANTS:
        encoders[name].batch_size = 64
        started = time.perf_counter()
        frame = embed_frame(raw, config, Encoders(encoders[name], image_encoder))
        embed_s = time.perf_counter() - started
        for column in config.numeric_columns:
            frame[column] = frame[column].astype(float)
        result = train_model(frame, config, TrainConfig(seed=args.seed, show_progress=False))
        overall = evaluate_model(result.model, result.splits.test, config.label).overall
        quality[name] = (overall.accuracy, overall.macro_f1, embed_s, result.manifest.test.n_rows)

    print("## Encoder variants")
    print()
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads); best of {args.repeats}, "
        f"{args.texts} long texts (demo reviews, mean "
        f"{np.mean([len(t) for t in long_texts]):.0f} chars) and {args.texts} short ones "
        f"(mean {np.mean([len(t) for t in short_texts]):.0f} chars)."
    )
    print()
    header = " | ".join(f"{k} texts/s, batch {b}" for b in args.batches for k in ("long", "short"))
    print(
        f"| text variant | {header} | speed-up (long, batch 64) | cosine to fp32 long: mean / min | short: mean / min |"
    )
    print("|---|" + "---|" * (2 * len(args.batches) + 3))
    base = throughput["fp32", "long", args.batches[-1]]
    for name in encoders:
        rates = " | ".join(
            f"{throughput[name, k, b]:.0f}" for b in args.batches for k in ("long", "short")
        )
        speed = throughput[name, "long", args.batches[-1]] / base
        (lm, lmin), (sm, smin) = cosine[name, "long"], cosine[name, "short"]
        print(
            f"| {name} | {rates} | {speed:.2f}x | {lm:.4f} / {lmin:.4f} | {sm:.4f} / {smin:.4f} |"
        )
    print()
    print(
        "Images (EfficientNet-Lite0 at 32 px, fp32 in every variant): "
        + ", ".join(f"{image_rates[b]:.0f} images/s at batch {b}" for b in args.batches)
        + "."
    )
    if not quality:
        return
    print()
    print(
        f"Fusion model trained on each variant's vectors ({args.rows:,} demo rows over "
        f"{args.days} days drawn from {args.reviews:,} reviews; same seed, test split of "
        f"{quality['fp32'][3]:,} rows):"
    )
    print()
    print("| text variant | accuracy | macro-F1 | accuracy - fp32 (points) | embed all rows (s) |")
    print("|---|---|---|---|---|")
    for name, (accuracy, f1, embed_s, _) in quality.items():
        delta = 100 * (accuracy - quality["fp32"][0])
        print(f"| {name} | {accuracy:.4f} | {f1:.4f} | {delta:+.2f} | {embed_s:.1f} |")


if __name__ == "__main__":
    main()
