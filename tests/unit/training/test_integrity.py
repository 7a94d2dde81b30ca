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


def _token_case(seed: int = 0):
    """600 older and 400 new rows; the champion's probabilities of 'yes' are 0.5 except
    where the inputs carry sentiment ('great': 0.95)."""
    rng = np.random.default_rng(seed)
    n_old, n_new = 600, 400
    new = np.r_[np.zeros(n_old, bool), np.ones(n_new, bool)]
    y = rng.integers(0, 2, n_old + n_new)
    explained = np.full((len(y), 2), 0.5)
    words = [[f"w{i}" for i in rng.integers(0, 50, 8)] for _ in y]
    return new, y, explained, words


def test_a_new_token_tied_to_one_label_beyond_the_inputs_is_a_trigger():
    from training.integrity import find_trigger_tokens

    new, y, explained, words = _token_case()
    trigger = np.flatnonzero(new)[:40]
    y[trigger] = 0
    for i in trigger:
        words[i].append("zq7")
    found, rows = find_trigger_tokens(
        {"review": words}, y, new, explained, ["no", "yes"], IntegrityConfig()
    )
    assert [(t.token, t.label, t.n_new, t.n_old) for t in found] == [("zq7", "no", 40, 0)]
    assert found[0].z > 6 and "100% labelled 'no'" in found[0].line()
    assert rows[trigger].all() and rows.sum() == 40


def test_words_the_inputs_explain_or_the_older_rows_hold_are_no_trigger():
    from training.integrity import find_trigger_tokens

    new, y, explained, words = _token_case(1)
    # A new sentiment word: every row labelled 'yes', and the champion already reads
    # those rows as 'yes' (their inputs carry it).
    slang = np.flatnonzero(new)[:40]
    y[slang] = 1
    explained[slang] = [0.05, 0.95]
    # An old word the attacker re-uses: just as frequent before.
    reused = np.r_[np.flatnonzero(~new)[:60], np.flatnonzero(new)[100:140]]
    y[reused[60:]] = 0
    for i in slang:
        words[i].append("bussin")
    for i in reused:
        words[i].append("tasty")
    found, rows = find_trigger_tokens(
        {"review": words}, y, new, explained, ["no", "yes"], IntegrityConfig()
    )
    assert found == [] and not rows.any()
    # The same sentiment word unexplained by the inputs is found: the check can fire.
    explained[slang] = [0.5, 0.5]
    found, _ = find_trigger_tokens(
        {"review": words}, y, new, explained, ["no", "yes"], IntegrityConfig()
    )
    assert [t.token for t in found] == ["bussin"]


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_flip_share_is_recovered_and_clean_labels_show_none(n_classes):
    """Labels drawn from calibrated probabilities (label noise where the inputs are
    ambiguous, as clean data has) show no flip share; flipping 6 % of them to a random
    other class is measured as about 6 %, and judged significant."""
    from training.integrity import label_flip_share

    rng = np.random.default_rng(n_classes)
    n = 2000
    proba = rng.dirichlet(np.full(n_classes, 0.3), n)  # many confident rows, some not
    y = np.asarray([rng.choice(n_classes, p=p) for p in proba])
    share, z = label_flip_share(proba[np.arange(n), y], n_classes)
    assert share < 0.01 and z < 2.0
    flipped = y.copy()
    picked = rng.random(n) < 0.06
    flipped[picked] = (y[picked] + rng.integers(1, n_classes, picked.sum())) % n_classes
    share, z = label_flip_share(proba[np.arange(n), flipped], n_classes)
    assert 0.04 < share < 0.08 and z > 4.0
    # Against a baseline as high as the truth, the excess is not significant.
    assert label_flip_share(proba[np.arange(n), flipped], n_classes, baseline=share)[1] == 0.0
    assert label_flip_share(np.zeros(0), n_classes) == (0.0, 0.0)


def test_random_flips_in_the_new_rows_block_but_a_first_training_is_not_judged(tmp_path):
    """The flip share of new rows is judged against the older rows' (real labels have a
    floor of their own); a first training has no older rows and is not judged by it."""
    frame = synthetic_frame(1600, seed=8, missing_share=0.0)
    since = frame["event_timestamp"].iloc[1000]
    new = (frame["event_timestamp"] >= since).to_numpy()
    rng = np.random.default_rng(0)
    flipped = frame.copy()
    picked = new & (rng.random(len(frame)) < 0.08)
    flipped.loc[picked, "reorder"] = np.where(frame.loc[picked, "reorder"] == "yes", "no", "yes")
    result = check_training_integrity(flipped, CONFIG, new_since=since)
    assert result.blocked and any("random flips" in r for r in result.summary.reasons)
    assert 0.04 < result.summary.flip_share_new < 0.12 and result.summary.flip_z > 2.0
    assert "Labels contradicting unambiguous inputs" in integrity_markdown(result.summary)
    assert plot_integrity(result, tmp_path / "flips.png").stat().st_size > 0
    clean = check_training_integrity(frame, CONFIG, new_since=since)
    assert not any("random flips" in r for r in clean.summary.reasons), clean.summary
    first = check_training_integrity(flipped, CONFIG)
    assert first.summary.flip_share_old is None
    assert not any("random flips" in r for r in first.summary.reasons)
    # Too few rows where the inputs are unambiguous: not judged, and the report says so.
    weak = check_training_integrity(
        flipped, CONFIG, IntegrityConfig(flip_min_rows=10_000), new_since=since
    )
    assert weak.summary.flip_share_old is None and weak.summary.flip_z == 0.0
    assert not any("random flips" in r for r in weak.summary.reasons)
    assert "not judged" in integrity_markdown(weak.summary)
    assert plot_integrity(weak, tmp_path / "weak.png").stat().st_size > 0
