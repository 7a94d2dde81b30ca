"""Small synthetic feature frames with signal in every modality (for fast training tests)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from features.schema import DatasetConfig
from training.evaluate import GateConfig
from training.train import TrainConfig

TEXT_DIM = 24
IMAGE_DIM = 12

# A small, quick model for tests on synthetic frames, and a gate loose enough for it.
FAST_TRAIN = TrainConfig(
    epochs=12, batch_size=32, hidden_size=32, fusion_hidden_size=32, patience=4, show_progress=False
)
TEST_GATE = GateConfig(max_ece=0.25, min_slice_rows=20)


def synthetic_config(classes: tuple[str, ...] = ("no", "yes")) -> DatasetConfig:
    return DatasetConfig.model_validate(
        {
            "name": "synth",
            "entity_key": "order_id",
            "timestamp": "event_timestamp",
            "label": "reorder",
            "classes": list(classes),
            "text": [{"name": "review"}],
            "images": [{"name": "photo"}],
            "numeric": [{"name": "price"}, {"name": "noise"}, {"name": "warehouse_load"}],
            "categorical": [{"name": "channel", "categories": ["web", "app", "store"]}],
            "monitor_only": ["warehouse_load"],
        }
    )


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def text_signal_direction() -> np.ndarray:
    """The direction along which :func:`synthetic_frame` puts the text latent (the first
    draw of its fixed direction generator)."""
    return _unit(np.random.default_rng(12345).normal(size=(1, TEXT_DIM)))[0]


def synthetic_frame(
    n_rows: int = 600,
    seed: int = 0,
    classes: tuple[str, ...] = ("no", "yes"),
    missing_share: float = 0.1,
    label_noise: float = 0.3,
    image_shift: bool = False,
) -> pd.DataFrame:
    """A feature frame whose label depends on text, image and tabular signals.

    ``image_shift``: photos from a new camera; the image signal lies along another
    direction, so a model fitted before the shift loses it (a drift a retrain can fix).
    """
    rng = np.random.default_rng(seed)
    a = rng.choice([-1.0, 1.0], n_rows)  # text latent
    b = rng.choice([-1.0, 1.0], n_rows)  # image latent
    price = rng.lognormal(3.0, 0.5, n_rows)
    channel = rng.choice(["web", "app", "store"], n_rows)
    logit = 1.5 * a + 1.5 * b - 1.2 * np.log(price / 20.0) + np.where(channel == "app", 0.6, 0.0)
    logit = logit + rng.logistic(0.0, label_noise, n_rows)
    if len(classes) == 2:
        label = np.where(logit > 0, classes[1], classes[0])
    else:
        cuts = np.quantile(logit, np.linspace(0, 1, len(classes) + 1)[1:-1])
        label = np.asarray(classes)[np.searchsorted(cuts, logit)]
    # The signal directions are fixed across seeds, so a frame drawn with another seed is
    # a fresh sample of the same population (a holdout).
    directions = np.random.default_rng(12345)
    text_dir = _unit(directions.normal(size=(1, TEXT_DIM)))[0]
    image_dir = _unit(directions.normal(size=(1, IMAGE_DIM)))[0]
    if image_shift:
        image_dir = _unit(directions.normal(size=(1, IMAGE_DIM)))[0]
    text = _unit(rng.normal(size=(n_rows, TEXT_DIM)) * 0.5 + a[:, None] * text_dir)
    image = _unit(rng.normal(size=(n_rows, IMAGE_DIM)) * 0.5 + b[:, None] * image_dir)
    text_present = (rng.random(n_rows) >= missing_share).astype(np.int64)
    image_present = (rng.random(n_rows) >= missing_share).astype(np.int64)
    text[text_present == 0] = 0.0
    image[image_present == 0] = 0.0
    start = pd.Timestamp(datetime(2026, 6, 1, tzinfo=UTC))
    timestamps = start + pd.to_timedelta(np.sort(rng.uniform(0, 30 * 86400, n_rows)), unit="s")
    return pd.DataFrame(
        {
            "order_id": np.arange(n_rows, dtype=np.int64),
            "event_timestamp": timestamps,
            "reorder": label,
            "price": price.round(2),
            "noise": rng.normal(size=n_rows),
            "warehouse_load": rng.random(n_rows),
            "channel": channel,
            "review_emb": list(text),
            "review_present": text_present,
            "photo_emb": list(image),
            "photo_present": image_present,
        }
    )
