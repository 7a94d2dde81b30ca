"""The training-data integrity check on small frames (no model trained)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.drift_sim import poison_rows
from tests.unit.training.synthetic import synthetic_config, synthetic_frame
from training.integrity import (
    IntegrityConfig,
    check_training_integrity,
    integrity_markdown,
    plot_integrity,
)

CONFIG = synthetic_config()


def test_injected_duplicates_are_quarantined_and_block(tmp_path):
    frame = synthetic_frame(600, seed=3)
    poisoned, mask = poison_rows(frame, "poison_duplicates", seed=0, text_column=None)
    result = check_training_integrity(poisoned, CONFIG)
    exact = result.flags["exact_duplicate"].to_numpy()
    assert exact[mask].all() and not exact[~mask].any()
    assert result.quarantine[mask].all()
    assert result.blocked and "duplicate" in result.summary.reasons[0]
    assert "BLOCKED" in integrity_markdown(result.summary)
    assert plot_integrity(result, tmp_path / "integrity.png").stat().st_size > 0


def test_a_clean_frame_passes():
    result = check_training_integrity(synthetic_frame(600, seed=4), CONFIG)
    assert not result.blocked, result.summary.reasons
    assert result.summary.counts["exact_duplicate"] == 0


def test_overwritten_labels_are_counted_quarantined_and_past_the_bound_block():
    frame = synthetic_frame(600, seed=5)
    overwritten = np.zeros(len(frame), dtype=bool)
    overwritten[:30] = True
    result = check_training_integrity(frame, CONFIG, overwritten=overwritten)
    assert result.summary.counts["label_overwritten"] == 30
    assert result.quarantine[:30].all()
    assert result.blocked and any("overwritten" in r for r in result.summary.reasons)
    relaxed = check_training_integrity(
        frame, CONFIG, IntegrityConfig(max_overwrite_share=0.1), overwritten=overwritten
    )
    assert not any("overwritten" in r for r in relaxed.summary.reasons)


def test_a_segment_whose_new_labels_the_inputs_do_not_explain_blocks():
    frame = synthetic_frame(900, seed=6)
    since = frame["event_timestamp"].quantile(0.5)
    # What the inputs explain: the true labels, softly (a champion that knows the data).
    explained = np.where(frame["reorder"].to_numpy()[:, None] == np.array(["no", "yes"]), 0.8, 0.2)
    flipped = frame.copy()
    target = (flipped["channel"] == "app") & (flipped["event_timestamp"] >= since)
    flipped.loc[target, "reorder"] = "no"
    result = check_training_integrity(flipped, CONFIG, explained_proba=explained, new_since=since)
    assert result.blocked
    assert any("channel=app" in r for r in result.summary.reasons)
    clean = check_training_integrity(frame, CONFIG, explained_proba=explained, new_since=since)
    assert not any("segment" in r for r in clean.summary.reasons)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="empty"):
        check_training_integrity(synthetic_frame(50).iloc[:0], CONFIG)
    with pytest.raises(ValueError, match="unknown poisoning scenario"):
        poison_rows(pd.DataFrame({"reorder": ["yes"]}), "poison_everything", seed=0)
