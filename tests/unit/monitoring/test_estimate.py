from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from monitoring.estimate import (
    compare_performance,
    estimate_performance,
    realized_performance,
)


def calibrated_window(rng: np.random.Generator, n: int, k: int, concentration: float):
    """Probabilities and labels drawn from them: calibrated by construction."""
    probas = rng.dirichlet(np.full(k, concentration), size=n)
    labels = (rng.random((n, 1)) > np.cumsum(probas, axis=1)).sum(axis=1)
    return probas, np.minimum(labels, k - 1)


@pytest.mark.parametrize(("k", "concentration"), [(2, 0.6), (3, 0.5)])
def test_estimate_tracks_realized_performance_and_bands_cover(k, concentration):
    rng = np.random.default_rng(k)
    classes = [f"c{i}" for i in range(k)]
    errors_acc, errors_f1, covered_acc, covered_f1 = [], [], 0, 0
    n_windows = 100
    for i in range(n_windows):
        probas, labels = calibrated_window(rng, 400, k, concentration)
        estimate = estimate_performance(probas, classes, confidence=0.9, seed=i)
        realized = realized_performance(
            np.array(classes)[labels], np.array(classes)[probas.argmax(axis=1)], classes
        )
        accuracy = compare_performance(estimate, realized, "accuracy")
        macro_f1 = compare_performance(estimate, realized, "macro_f1")
        errors_acc.append(abs(accuracy.error))
        errors_f1.append(abs(macro_f1.error))
        covered_acc += accuracy.within_band
        covered_f1 += macro_f1.within_band
    assert np.mean(errors_acc) < 0.02
    assert np.mean(errors_f1) < 0.025
    # Nominal 90 %: allow sampling error over 100 windows.
    assert 0.8 <= covered_acc / n_windows <= 0.98
    assert 0.8 <= covered_f1 / n_windows <= 0.98


def test_overconfident_model_is_caught_by_realized_not_by_estimate():
    rng = np.random.default_rng(0)
    probas, labels = calibrated_window(rng, 2000, 2, 0.6)
    # The world changed: half the labels flipped. The probabilities cannot know.
    flipped = np.where(rng.random(2000) < 0.5, 1 - labels, labels)
    classes = ["no", "yes"]
    estimate = estimate_performance(probas, classes)
    realized = realized_performance(
        np.array(classes)[flipped], np.array(classes)[probas.argmax(axis=1)], classes
    )
    comparison = compare_performance(estimate, realized)
    assert comparison.error > 0.2
    assert not comparison.within_band


def test_realized_performance_matches_scikit_learn():
    rng = np.random.default_rng(1)
    classes = ["a", "b", "c"]
    y_true = rng.choice(classes, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.choice(classes, 300))
    realized = realized_performance(y_true, y_pred, classes)
    assert realized.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    assert realized.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert np.sum(realized.confusion) == 300
    assert realized.value("accuracy") == realized.accuracy


def test_estimate_of_a_certain_model_is_exact():
    probas = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    estimate = estimate_performance(probas, ["no", "yes"])
    assert estimate.expected_accuracy == 1.0
    assert estimate.expected_macro_f1 == 1.0
    assert estimate.macro_f1_band == (1.0, 1.0)
    assert estimate.expected_confusion == [[1.0, 0.0], [0.0, 2.0]]


def test_estimate_is_repeatable_with_a_seed():
    rng = np.random.default_rng(2)
    probas, _ = calibrated_window(rng, 300, 3, 0.5)
    classes = ["a", "b", "c"]
    assert estimate_performance(probas, classes, seed=4) == estimate_performance(
        probas, classes, seed=4
    )


@pytest.mark.parametrize(
    "probas",
    [
        np.zeros((0, 2)),
        np.array([[0.5, 0.6]]),
        np.array([[0.2, 0.3, 0.5]]),
        np.array([[np.nan, 1]]),
    ],
    ids=["empty", "not-summing", "wrong-width", "nan"],
)
def test_invalid_probabilities_raise(probas):
    with pytest.raises(ValueError):
        estimate_performance(probas, ["no", "yes"])


def test_realized_rejects_unknown_classes_and_mismatched_lengths():
    with pytest.raises(ValueError, match="not among"):
        realized_performance(["x"], ["no"], ["no", "yes"])
    with pytest.raises(ValueError, match="rows"):
        realized_performance(["no", "yes"], ["no"], ["no", "yes"])
