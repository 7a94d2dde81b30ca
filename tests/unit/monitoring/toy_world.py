"""A small world where the truth about the model's calibration is known, region by region.

Rows come from three regions of an 8-d 'photo' embedding (and a numeric column that
moves with the region):

* ``a``: the model is calibrated (``P(yes)`` drawn, the label drawn from it);
* ``b``: the model is over-confident (it says 0.92 but is right 60 % of the time);
* ``new``: a new camera, far from anything in the reference; the model says 0.95 and is
  right half the time.

A reference has mostly ``a``; windows move the mix, so the realized accuracy is known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import CategoricalColumn, DatasetConfig, ImageColumn, NumericColumn
from monitoring.drift import DriftConfig, DriftReference, fit_drift_reference

DIM = 8
DRIFT = DriftConfig(image_components=4, permutations=99)


def toy_config() -> DatasetConfig:
    return DatasetConfig(
        name="toy",
        entity_key="id",
        timestamp="ts",
        label="y",
        classes=["no", "yes"],
        images=[ImageColumn(name="photo")],
        numeric=[NumericColumn(name="x", nullable=True)],
        categorical=[CategoricalColumn(name="channel", categories=["web", "app"])],
    )


def toy_frame(
    n: int,
    seed: int,
    share_b: float = 0.1,
    share_new: float = 0.0,
    overconfident_a: bool = False,
) -> pd.DataFrame:
    """Scored rows with labels; ``overconfident_a`` sharpens region a's probabilities."""
    rng = np.random.default_rng(seed)
    region = rng.choice(3, size=n, p=[1.0 - share_b - share_new, share_b, share_new])
    centres = np.zeros((3, DIM))
    centres[1, 1] = 1.0
    centres[2, 2:5] = 4.0
    embedding = centres[region] + rng.normal(scale=0.3, size=(n, DIM))
    embedding[:, 0] += rng.normal(scale=0.6, size=n)  # spread region a along one axis
    x = rng.normal(loc=np.where(region == 1, 1.5, 0.0), scale=1.0)

    p_yes = rng.beta(1.2, 1.2, size=n)
    labels = rng.random(n) < p_yes
    shown = p_yes.copy()
    if overconfident_a:
        logit = np.log(p_yes / (1 - p_yes))
        shown = 1 / (1 + np.exp(-3.0 * logit))
    for r, confidence, right in ((1, 0.92, 0.6), (2, 0.95, 0.5)):
        rows = region == r
        says_yes = rng.random(rows.sum()) < 0.5
        shown[rows] = np.where(says_yes, confidence, 1 - confidence)
        correct = rng.random(rows.sum()) < right
        labels[rows] = np.where(correct, says_yes, ~says_yes)

    frame = pd.DataFrame(
        {
            "id": np.arange(n) + seed * 100_000,
            "ts": pd.Timestamp("2026-01-01", tz="UTC"),
            "x": x,
            "channel": rng.choice(["web", "app"], size=n),
            "photo_emb": list(embedding.astype(np.float32)),
            "photo_present": np.ones(n, dtype=np.int8),
            "proba_no": 1 - shown,
            "proba_yes": shown,
        }
    )
    frame["prediction"] = np.where(shown >= 0.5, "yes", "no")
    frame["y"] = np.where(labels, "yes", "no")
    frame["region"] = np.array(["a", "b", "new"])[region]
    return frame


def realized(frame: pd.DataFrame) -> float:
    return float((frame["prediction"] == frame["y"]).mean())


def toy_reference(frame: pd.DataFrame) -> DriftReference:
    return fit_drift_reference(frame, toy_config(), DRIFT, seed=0)
