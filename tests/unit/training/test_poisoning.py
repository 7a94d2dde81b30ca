"""Poisoned retrains are not promoted; a clean drift retrain still is (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from features.tokens import tokenize
from tests.unit.training.poisoning import CONFIG, GATE, build_world, new_window, retrain
from training.evaluate import (
    check_promotion,
    evaluate_model,
    paired_bootstrap,
    paired_mean_bootstrap,
)
from training.integrity import IntegrityConfig, check_training_integrity


@pytest.fixture(scope="module")
def world():
    return build_world(seed=0)


def test_reproduced_attack_fools_the_recent_holdout_but_not_the_golden_gate(world):
    """The reported attack: flipped labels on one segment plus injected duplicates,
    trained without the integrity check. On its own (poisoned) test split the poisoned
    model beats the champion, which is all the old gate looked at; the golden holdout
    (entities no window holds, labels frozen) rejects it."""
    window, poisoned = new_window(world, "poison_segment")
    duplicates = window[poisoned].sample(150, replace=True, random_state=0).copy()
    duplicates["order_id"] = np.arange(5 * 10**5, 5 * 10**5 + len(duplicates))
    window = (
        window._append(duplicates, ignore_index=True)
        .sort_values("event_timestamp", kind="mergesort")
        .reset_index(drop=True)
    )
    trained = world.fit(window)
    test = trained.splits.test
    champion = world.champion.model
    recent = (
        evaluate_model(trained.model, test, "reorder"),
        evaluate_model(champion, test, "reorder"),
    )
    # The attack works on the recent holdout: the old gate (any point gain promotes).
    assert recent[0].overall.macro_f1 > recent[1].overall.macro_f1
    golden = (
        evaluate_model(trained.model, world.golden, "reorder"),
        evaluate_model(champion, world.golden, "reorder"),
    )
    decision = check_promotion(*recent, GATE, *golden)
    assert not decision.promote, decision.reason
    assert "golden" in decision.reason
    assert "| golden | channel=app |" in decision.verdict_markdown()


def test_integrity_check_blocks_the_reproduced_attack(world):
    window, poisoned = new_window(world, "poison_segment")
    result = check_training_integrity(
        window,
        CONFIG,
        IntegrityConfig(),
        explained_proba=world.champion.model.predict_proba(window),
        previous_prior=world.champion.model.spec.class_prior,
        new_since=world.history["event_timestamp"].max(),
    )
    assert result.blocked
    assert any("channel=app" in r for r in result.summary.reasons)
    assert any("channel=app" in r for r in result.summary.look_at)


@pytest.mark.parametrize(
    "scenario",
    [
        "poison_segment",
        "poison_random_5",
        "poison_random_10",
        "poison_random_20",
        "poison_duplicates",
    ],
)
def test_poisoned_retrain_is_not_promoted(world, scenario):
    outcome = retrain(world, scenario)
    assert outcome.poisoned > 0
    assert not outcome.promoted, outcome.reason


def test_random_flips_block_the_retrain_and_the_reason_says_where_to_look(world):
    """5 % random flips (38 of 700 new labels on seed 0) are too few to raise the label
    issue share past a clean drift window's own, but they land where the inputs are
    unambiguous: the flip share there, against the older rows', blocks the retrain."""
    outcome = retrain(world, "poison_random_5")
    assert outcome.blocked and not outcome.promoted
    assert "random flips" in outcome.reason, outcome.reason
    assert "label issues" not in outcome.reason  # the older check alone would have passed


def test_a_promoted_random_flip_retrain_is_still_better_than_the_champion():
    """One of the two 5 % random-flip retrains of the benchmark's 20 seeds that get
    promoted (seeds 4 and 7, benchmarks/README.md, Poisoning): its flips fell where the
    inputs are ambiguous (5 of 34 where the probe is sure), so the flip share there does
    not stand out (z 0.4) and they cost little.
    What the gate guarantees even then: promotion only when the model is better than the
    champion on fresh clean rows of the population it is for, which the golden and recent
    tests judge without seeing those rows."""
    world = build_world(seed=4, future_rows=2000)
    outcome = retrain(world, "poison_random_5")
    assert outcome.poisoned > 0 and not outcome.blocked
    assert outcome.promoted, "pick a seed whose random-flip retrain is promoted"
    assert outcome.true_delta > 0, outcome


def test_a_trigger_token_blocks_the_retrain_and_its_rows_are_quarantined(world):
    """The trigger scenario by default: the token, new with the poisoned rows and tied
    to the target label beyond what their inputs explain, blocks the retrain."""
    outcome = retrain(world, "poison_trigger")
    assert outcome.blocked and not outcome.promoted
    assert "a possible trigger: token 'zq7' (review)" in outcome.reason
    assert outcome.true_flags >= 0.8 * outcome.poisoned  # the rows without text carry none


def test_a_new_word_of_the_clean_rows_is_no_trigger(world):
    """The clean window's new rows bring a slang word of the positive reviews, in more
    rows than the check judges; their inputs explain their labels, so it is not flagged."""
    window, _ = new_window(world, "clean")
    new = window["event_timestamp"] > world.history["event_timestamp"].max()
    texts = window.loc[new, "review"].dropna()
    assert texts.str.contains("bussin").sum() >= IntegrityConfig().trigger_min_rows
    result = check_training_integrity(
        window,
        CONFIG,
        IntegrityConfig(),
        explained_proba=world.champion.model.predict_proba(window),
        new_since=world.history["event_timestamp"].max(),
        tokens={"review": [tokenize(t) for t in window["review"]]},
    )
    assert result.summary.trigger_tokens == []
    assert not result.flags["trigger_token"].any()


def test_a_trigger_is_blocked_with_the_opt_in_label_tied_check(world):
    """The embedding-side detector (for a trigger without text, e.g. a patch in a photo):
    off by default (it blocked the demo's clean camera-drift retrain on real embeddings);
    opted in, the trigger rows are found and the retrain is blocked."""
    opt_in = IntegrityConfig(max_label_tied_share=0.015)
    outcome = retrain(world, "poison_trigger", integrity=opt_in)
    assert outcome.blocked and "carry an input shift tied to their label" in outcome.reason
    assert outcome.true_flags > 0


def test_clean_drift_retrain_is_still_promoted(world):
    outcome = retrain(world, "clean")
    assert not outcome.blocked, outcome.reason
    assert outcome.promoted, outcome.reason
    assert outcome.recent_delta > 0


def test_paired_bootstrap_separates_a_real_gain_from_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 800)
    champion = np.where(rng.random(800) < 0.8, y, 1 - y)
    better = np.where(rng.random(800) < 0.9, y, 1 - y)
    delta, low, high = paired_bootstrap(y, better, champion, 2, "macro_f1", n_resamples=500)
    assert low > 0 and low < delta < high
    same = champion.copy()
    flip = rng.choice(800, 6, replace=False)
    same[flip] = 1 - same[flip]
    _, low, high = paired_bootstrap(y, same, champion, 2, "accuracy", n_resamples=500)
    assert low < 0 < high
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_bootstrap(y, better[:-1], champion, 2, "accuracy")


def test_paired_mean_bootstrap_bounds_a_mean_gain():
    rng = np.random.default_rng(0)
    gain = rng.normal(0.02, 0.1, 600)
    mean, low, high = paired_mean_bootstrap(gain, n_resamples=500)
    assert mean == pytest.approx(gain.mean()) and 0 < low < mean < high
    _, low, high = paired_mean_bootstrap(rng.normal(0.0, 0.1, 600), n_resamples=500)
    assert low < 0 < high
    with pytest.raises(ValueError, match="finite, non-empty"):
        paired_mean_bootstrap(np.array([0.1, np.nan]))
