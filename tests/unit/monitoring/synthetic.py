"""Synthetic scored feature frames for monitoring tests and benchmarks.

Tabular columns come from the demo generator (``features.demo_data.generate_rows``) fed
with tiny fake sources, so no package data is loaded. Embeddings are synthesised: unit
vectors around a per-class centre with low-rank structure, like sentence embeddings
(per-dimension spread about ``1 / sqrt(d)``). Drift knobs mirror the demo's shifts.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from features.demo_data import DEMO_START, DemoSources, GenerationShift, generate_rows
from features.schema import DatasetConfig

TEXT_DIM = 384
IMAGE_DIM = 128


def tiny_sources() -> DemoSources:
    """Fake reviews, images and other-domain texts (the generator only indexes them)."""
    rng = np.random.default_rng(0)
    reviews = pd.DataFrame(
        {"review": [f"review {i}" for i in range(200)], "great": rng.random(200) < 0.5}
    )
    images = rng.integers(0, 255, size=(20, 4, 4), dtype=np.uint8)
    return DemoSources(
        reviews=reviews,
        images=images,
        image_classes=np.arange(20) % 10,
        other_texts=[f"tweet {i}" for i in range(50)],
    )


class EmbeddingSpace:
    """A fixed synthetic embedding geometry (the 'encoder'); drift moves rows within it."""

    def __init__(self, dim: int, n_classes: int, seed: int, rank: int = 12) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.base = rng.normal(size=dim)
        self.centres = rng.normal(size=(n_classes, dim)) * 0.35
        self.basis = rng.normal(size=(rank, dim)) * 0.25
        self.other = rng.normal(size=dim) * 0.6  # another domain / another camera

    def sample(
        self, classes: np.ndarray, shifted: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        n = len(classes)
        raw = (
            self.base[None, :]
            + self.centres[classes]
            + rng.normal(size=(n, self.basis.shape[0])) @ self.basis
            + rng.normal(size=(n, self.dim)) * 0.3
        )
        raw[shifted] += self.other[None, :]
        return (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)


def scored_frame(
    config: DatasetConfig,
    n_rows: int,
    seed: int,
    shift: GenerationShift | None = None,
    image_shift_share: float = 0.0,
    proba_temperature: float = 1.0,
    labels: bool = True,
) -> pd.DataFrame:
    """A scored feature frame in the layout the monitoring code reads.

    Args:
        config: the demo ``DatasetConfig``.
        n_rows: rows to generate.
        seed: seeds everything but the embedding geometry (fixed, like an encoder).
        shift: demo generation shift (price, channel mix, other-domain text, ...).
        image_shift_share: share of photos taken by a 'new camera' (embedding moved).
        proba_temperature: > 1 makes the model less confident (an output shift).
        labels: keep the label column; otherwise it is all missing.
    """
    shift = shift or GenerationShift()
    raw, latent = generate_rows(
        tiny_sources(), n_rows, DEMO_START, DEMO_START + timedelta(days=1), seed, shift
    )
    rng = np.random.default_rng(seed + 10_000)
    text_space = EmbeddingSpace(TEXT_DIM, 2, seed=1)
    image_space = EmbeddingSpace(IMAGE_DIM, 10, seed=2)
    frame = raw.drop(columns=["review", "photo"])
    text_present = raw["review"].notna().to_numpy()
    image_present = raw["photo"].notna().to_numpy()
    text = text_space.sample(
        latent["review_great"].to_numpy().astype(int),
        latent["other_domain_text"].to_numpy(),
        rng,
    )
    image = image_space.sample(
        latent["animal_class"].to_numpy(), rng.random(len(raw)) < image_shift_share, rng
    )
    text[~text_present] = 0.0
    image[~image_present] = 0.0
    frame["review_emb"] = list(text)
    frame["review_present"] = text_present.astype(np.int8)
    frame["photo_emb"] = list(image)
    frame["photo_present"] = image_present.astype(np.int8)

    # The label is logit + Logistic(0, 0.35) > 0: this model is exactly calibrated.
    logit = latent["logit"].to_numpy() / (0.35 * proba_temperature)
    p_yes = 1.0 / (1.0 + np.exp(-logit))
    frame["proba_no"] = 1.0 - p_yes
    frame["proba_yes"] = p_yes
    frame["prediction"] = np.where(p_yes >= 0.5, "yes", "no")
    if not labels:
        frame[config.label] = None
    return frame
