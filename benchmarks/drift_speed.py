"""Speed, false-alarm rate and power of ``monitoring.drift.compute_drift``.

Run from the repository root::

    .venv/bin/python -m benchmarks.drift_speed                      # speed only
    .venv/bin/python -m benchmarks.drift_speed --false-alarms 200   # + no-drift windows
    .venv/bin/python -m benchmarks.drift_speed --power 50           # + drifted windows
    .venv/bin/python -m benchmarks.drift_speed --real 20            # + real encoders

Data are the synthetic scored frames of ``tests/unit/monitoring/synthetic.py``: demo
tabular columns, 384-d text and 128-d image embeddings, two class probabilities.
``--real`` embeds demo reviews, tweets and clean or perturbed photos with the real
encoders (slow: a few thousand encodings) and checks the text and image tests on them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

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


def measure_rates(
    n_windows: int,
    shifts: dict[str, dict],
    embedding_test: str,
    sizes: tuple[int, ...] = WINDOW_SIZES,
) -> None:
    config = demo_dataset_config()
    reference = fit_drift_reference(scored_frame(config, 10_000, seed=1), config, seed=0)
    drift_config = DriftConfig(embedding_test=embedding_test)
    for label, knobs in shifts.items():
        print(f"\n[{embedding_test}] {label}: share of windows flagged ({n_windows} per size)")
        for size in sizes:
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


def measure_real_embeddings(n_windows: int, cache: str | None = None) -> None:
    import numpy as np
    import pandas as pd

    from features.demo_data import DemoSources, _perturb_image
    from features.encoders import ImageEncoder, TextEncoder, decode_image

    config = demo_dataset_config()
    rng = np.random.default_rng(0)
    n_ref, n_pool, n_other = 2_000, 600, 300
    if cache and Path(cache).is_file():
        with np.load(cache) as data:
            text, image = data["text"], data["image"]
    else:
        sources = DemoSources.load()
        reviews = sources.reviews["review"].to_numpy()
        review_idx = rng.permutation(len(reviews))[: n_ref + n_pool]
        tweet_idx = rng.permutation(len(sources.other_texts))[:n_other]
        image_idx = rng.permutation(len(sources.images))[: n_ref + n_pool + n_other]
        camera = GenerationShift(image_blur=0.5, image_noise=0.3)
        started = time.perf_counter()
        text = TextEncoder().encode(
            [*reviews[review_idx], *(sources.other_texts[i] for i in tweet_idx)]
        )
        clean = [decode_image(sources.png[i]) for i in image_idx[: n_ref + n_pool]]
        perturbed = [
            decode_image(_perturb_image(sources.images[i], camera, rng))
            for i in image_idx[n_ref + n_pool :]
        ]
        image = ImageEncoder().encode([*clean, *perturbed])
        elapsed = time.perf_counter() - started
        print(f"\nencoded {len(text) + len(image):,} items in {elapsed:.0f} s")
        if cache:
            np.savez(cache, text=text, image=image)

    def frame(text_rows: np.ndarray, image_rows: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "review_emb": list(text[text_rows]),
                "review_present": 1,
                "photo_emb": list(image[image_rows]),
                "photo_present": 1,
            }
        )

    reference = fit_drift_reference(frame(np.arange(n_ref), np.arange(n_ref)), config, seed=0)
    pool = np.arange(n_ref, n_ref + n_pool)
    other = np.arange(n_ref + n_pool, n_ref + n_pool + n_other)
    print("\nreal embeddings (tweets for text, blur+noise for photos), share of windows flagged")
    for test in ("mmd", "ks"):
        # Six modalities in production: compare each at alpha / 6 although two are here.
        drift_config = DriftConfig(alpha=0.05 / 3, embedding_test=test)
        for share in (0.0, 0.1, 0.3):
            for size in (50, 100, 200):
                hits = {"text": 0, "image": 0}
                for i in range(n_windows):
                    n_shift = int(round(size * share))
                    rows = [
                        np.concatenate(
                            [rng.choice(pool, size - n_shift, False), rng.choice(other, n_shift)]
                        )
                        for _ in range(2)
                    ]
                    result = compute_drift(reference, frame(*rows), drift_config, seed=i)
                    for name in hits:
                        hits[name] += result.modalities[name].drifted
                rates = ", ".join(f"{k} {v / n_windows:.2f}" for k, v in hits.items())
                print(f"  [{test}] shifted share {share:.1f}, window {size:4d}: {rates}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--false-alarms", type=int, default=0, metavar="N")
    parser.add_argument("--power", type=int, default=0, metavar="N")
    parser.add_argument("--real", type=int, default=0, metavar="N")
    parser.add_argument("--real-cache", default=None, help="npz to keep real encodings in")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(WINDOW_SIZES))
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--embedding-test", choices=("mmd", "ks"), default="mmd")
    args = parser.parse_args()
    sizes = tuple(args.sizes)
    if not args.skip_speed:
        measure_speed(10_000, 2_000, args.repeats)
    if args.false_alarms:
        measure_rates(args.false_alarms, {"no drift": {}}, args.embedding_test, sizes)
    if args.power:
        measure_rates(args.power, SHIFTS, args.embedding_test, sizes)
    if args.real:
        measure_real_embeddings(args.real, args.real_cache)


if __name__ == "__main__":
    main()
