from __future__ import annotations

import numpy as np
import pandas as pd

from training.model import frame_to_inputs, load_classifier, save_classifier


def test_missing_modalities_are_masked_and_scored(trained):
    spec = trained.model.spec
    rows = trained.splits.test.head(4).copy()
    rows["review_emb"] = [None, rows["review_emb"].iloc[1], None, None]
    rows = rows.drop(columns=["photo_present"])  # inferred from the embedding
    rows.loc[rows.index[3], "photo_emb"] = None
    rows.loc[rows.index[2], "channel"] = "never-seen"
    inputs = frame_to_inputs(rows, spec)
    review, photo, tabular = (spec.modalities.index(m) for m in ("review", "photo", "tabular"))
    assert inputs.mask[:, review].tolist() == [0.0, float(rows["review_present"].iloc[1]), 0.0, 0.0]
    assert inputs.mask[3, photo] == 0.0
    assert inputs.mask[:, tabular].tolist() == [1.0] * 4
    assert inputs.categorical[2, 0] == 0  # unknown category -> reserved index
    proba = trained.model.predict_proba(rows)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)


def test_masking_a_modality_changes_predictions(trained):
    rows = trained.splits.test
    full = trained.model.predict_proba(rows)
    without_text = trained.model.predict_proba(rows, mask_modalities=["review"])
    assert np.abs(full - without_text).max() > 1e-3


def test_calibrated_and_raw_probabilities_differ_by_the_temperature(trained):
    rows = trained.splits.test
    logits = trained.model.logits(rows)
    raw = trained.model.predict_proba(rows, calibrated=False)
    cal = trained.model.predict_proba(rows, calibrated=True)
    assert np.argmax(raw, 1).tolist() == np.argmax(cal, 1).tolist()
    expected = np.exp(logits / trained.model.temperature)
    np.testing.assert_allclose(cal, expected / expected.sum(1, keepdims=True), rtol=1e-5)


def test_save_and_load_round_trip_keeps_stats_and_temperature(trained, tmp_path):
    loaded = load_classifier(save_classifier(trained.model, tmp_path / "m"))
    assert loaded.temperature == trained.model.temperature
    net, other = trained.model.network, loaded.network
    assert np.allclose(net.numeric_mean.numpy(), other.numeric_mean.numpy())
    rows = trained.splits.test
    np.testing.assert_array_equal(loaded.predict_proba(rows), trained.model.predict_proba(rows))
    frame = loaded.predict_frame(rows)
    assert list(frame.columns) == ["proba_no", "proba_yes", "prediction"]
    assert set(frame["prediction"]) <= {"no", "yes"}
    assert isinstance(frame, pd.DataFrame)
