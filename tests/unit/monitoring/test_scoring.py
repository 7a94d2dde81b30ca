from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from features.schema import DatasetConfig
from monitoring.scoring import (
    join_labels,
    read_prediction_log,
    score_frame,
    write_prediction_log,
)

CONFIG = DatasetConfig(
    name="toy",
    entity_key="id",
    timestamp="ts",
    label="y",
    classes=["no", "yes"],
    text=[{"name": "body"}],
    numeric=[{"name": "x"}],
)


class _Model:
    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        p = 1 / (1 + np.exp(-frame["x"].to_numpy()))
        return pd.DataFrame({"proba_no": 1 - p, "proba_yes": p})


def _features(n=6, day="2026-06-01"):
    ts = pd.date_range(f"{day}T00:00Z", periods=n, freq="5h")
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "ts": ts,
            "x": np.linspace(-2, 2, n),
            "body_emb": [np.ones(4, np.float32) / 2] * n,
            "body_present": np.ones(n, np.int64),
        }
    )


def test_score_frame_writes_probabilities_prediction_and_version():
    log = score_frame(
        _Model(), _features(), CONFIG, "3", scored_at=datetime(2026, 6, 3, tzinfo=UTC)
    )
    assert list(log.columns[:4]) == ["id", "ts", "model_version", "scored_at"]
    assert (log["model_version"] == "3").all()
    assert np.allclose(log[["proba_no", "proba_yes"]].sum(axis=1), 1)
    assert log["prediction"].tolist() == ["no"] * 3 + ["yes"] * 3


def test_scoring_twice_leaves_one_row_per_entity_and_timestamp(tmp_path):
    features = _features(8)
    for _ in range(2):
        write_prediction_log(score_frame(_Model(), features, CONFIG, "1"), CONFIG, tmp_path)
    log = read_prediction_log(CONFIG, tmp_path)
    assert len(log) == 8
    assert log["body_emb"].map(len).eq(4).all()
    part = read_prediction_log(
        CONFIG, tmp_path, datetime(2026, 6, 1, 10, tzinfo=UTC), datetime(2026, 6, 2, tzinfo=UTC)
    )
    assert part["ts"].min() >= pd.Timestamp("2026-06-01T10:00Z") and len(part) == 3


def test_late_labels_join_by_entity_and_timestamp():
    log = score_frame(_Model(), _features(4), CONFIG, "1")
    labels = log[["id", "ts"]].iloc[:2].assign(y=["yes", "no"])
    joined = join_labels(log, labels, CONFIG)
    assert joined["y"].iloc[:2].tolist() == ["yes", "no"]
    assert joined["y"].iloc[2:].isna().all()


def test_bad_model_output_is_rejected():
    class Broken:
        def predict(self, frame):
            return pd.DataFrame({"proba_no": np.full(len(frame), 0.7)})

    with pytest.raises(ValueError, match="proba_yes"):
        score_frame(Broken(), _features(), CONFIG, "1")
    with pytest.raises(ValueError, match="empty"):
        score_frame(_Model(), _features().iloc[:0], CONFIG, "1")
