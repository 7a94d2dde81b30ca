from __future__ import annotations

import numpy as np
import pytest

from monitoring.estimate import PerformanceEstimate, estimate_performance
from monitoring.estimators import (
    ESTIMATOR_METHODS,
    EstimatorConfig,
    check_estimate,
    collect_evidence,
    estimate_from_evidence,
    estimate_window,
    fit_estimator_reference,
    trust_reasons,
)
from tests.unit.monitoring.toy_world import realized, toy_config, toy_frame, toy_reference

CONFIG = EstimatorConfig(n_simulations=200)


@pytest.fixture(scope="module")
def world():
    frame = toy_frame(2000, seed=1)
    drift_reference = toy_reference(frame)
    return frame, drift_reference, fit_estimator_reference(frame, drift_reference, CONFIG)


def errors(reference, window, config=CONFIG):
    evidence = collect_evidence(reference, window, config)
    truth = realized(window)
    return {m: abs(v.mean() - truth) for m, v in evidence.row_correct.items()}, evidence


def test_without_shift_every_estimator_is_close_and_trusted(world):
    _, _, reference = world
    window = toy_frame(1000, seed=3)
    found, evidence = errors(reference, window)
    assert set(found) == set(ESTIMATOR_METHODS)
    assert max(found.values()) < 0.04
    estimate = estimate_from_evidence(evidence, ["no", "yes"], CONFIG)
    assert estimate.trusted and estimate.trust_reasons == []
    assert estimate.domain_auc is not None and estimate.domain_auc < 0.65
    assert estimate.far_share is not None and estimate.far_share < 0.05
    low, high = estimate.accuracy_band
    assert low <= realized(window) <= high


def test_reference_miscalibration_is_corrected_by_atc_doc_and_iw():
    # The model is over-confident on the reference and the window alike: CBPE believes it.
    frame = toy_frame(2000, seed=1, overconfident_a=True)
    drift_reference = toy_reference(frame)
    reference = fit_estimator_reference(frame, drift_reference, CONFIG)
    found, _ = errors(reference, toy_frame(1000, seed=3, overconfident_a=True))
    assert found["cbpe"] > 0.08
    for method in ("atc", "doc", "iw_cbpe", "distance_checked"):
        assert found[method] < 0.03, method


def test_importance_weighting_follows_a_shift_to_a_badly_calibrated_region(world):
    # Region b (over-confident) grows from 10 % to 60 %: only the reweighted reference
    # knows how often the model is right there.
    _, _, reference = world
    found, evidence = errors(reference, toy_frame(1000, seed=3, share_b=0.6))
    assert found["cbpe"] > 0.1
    assert found["iw_cbpe"] < 0.03
    assert found["iw_cbpe"] < min(found["cbpe"], found["atc"], found["doc"])
    assert evidence.domain_auc is not None and evidence.domain_auc > 0.65


def test_rows_far_from_the_reference_are_not_taken_at_their_word(world):
    _, _, reference = world
    # The new camera replaces the over-confident region b (which no global method fixes).
    window = toy_frame(800, seed=3, share_b=0.0, share_new=0.4)
    found, evidence = errors(reference, window)
    assert found["distance_checked"] < found["cbpe"] - 0.05
    estimate = estimate_from_evidence(evidence, ["no", "yes"], CONFIG)
    assert estimate.method == "distance_checked"
    assert not estimate.trusted
    assert any("far from the reference" in r for r in estimate.trust_reasons)
    assert estimate.far_share_by_column["photo_emb"] > 0.3
    # The band spans the bracket (far embedding informative as before .. uninformative).
    low, high = estimate.accuracy_band
    assert low <= realized(window) <= high
    # ... and says how little is known: it is much wider than a sampling band.
    assert high - low > 0.1


@pytest.mark.parametrize("far_rows", ["wrong", "prior", "proxy"])
def test_far_row_options_bound_the_estimate(world, far_rows):
    _, _, reference = world
    window = toy_frame(600, seed=4, share_new=0.5)
    config = CONFIG.model_copy(update={"far_rows": far_rows})
    evidence = collect_evidence(reference, window, config, methods=("distance_checked",))
    rows = evidence.row_correct["distance_checked"]
    far = evidence.far
    assert far.mean() > 0.4
    if far_rows == "wrong":
        assert np.all(rows[far] == 0.0)
    elif far_rows == "prior":
        assert np.allclose(rows[far], reference.label_prior[evidence.probas[far].argmax(axis=1)])
    else:
        # The new camera's rows are a coin flip and nothing else says otherwise.
        assert abs(rows[far].mean() - 0.5) < 0.1


def test_cbpe_through_the_new_interface_matches_estimate_performance(world):
    _, drift_reference, reference = world
    window = toy_frame(500, seed=5)
    config = CONFIG.model_copy(update={"method": "cbpe"})
    estimate = estimate_window(reference, drift_reference, window, config=config)
    classic = estimate_performance(window[["proba_no", "proba_yes"]].to_numpy(), ["no", "yes"])
    assert estimate.method == "cbpe"
    assert estimate.expected_accuracy == pytest.approx(classic.expected_accuracy)
    assert estimate.expected_macro_f1 == pytest.approx(classic.expected_macro_f1)
    assert np.allclose(estimate.expected_confusion, classic.expected_confusion)


def test_a_reference_frame_or_its_fitted_reference_give_the_same_estimate(world):
    frame, drift_reference, reference = world
    window = toy_frame(300, seed=6)
    from_frame = estimate_window(frame, drift_reference, window, toy_config(), CONFIG)
    from_fitted = estimate_window(reference, drift_reference, window, toy_config(), CONFIG)
    assert from_frame.expected_accuracy == pytest.approx(from_fitted.expected_accuracy)
    assert from_frame.domain_auc == pytest.approx(from_fitted.domain_auc)


def test_every_method_can_be_reported_from_one_evidence(world):
    _, _, reference = world
    evidence = collect_evidence(reference, toy_frame(300, seed=7), CONFIG)
    for method in ESTIMATOR_METHODS:
        estimate = estimate_from_evidence(evidence, ["no", "yes"], CONFIG, method)
        assert estimate.method == method
        assert estimate.accuracy_band[0] <= estimate.expected_accuracy <= estimate.accuracy_band[1]
        assert 0.0 <= estimate.expected_macro_f1 <= 1.0
        assert sum(map(sum, estimate.expected_confusion)) == pytest.approx(300)


def test_trust_reasons_name_each_bound_passed():
    config = EstimatorConfig(max_domain_auc=0.8, max_far_share=0.1)
    assert trust_reasons(0.79, {"photo_emb": 0.09}, 0.09, config) == []
    reasons = trust_reasons(0.93, {"photo_emb": 0.4, "review_emb": 0.0}, 0.4, config)
    assert len(reasons) == 2
    assert "AUC 0.93" in reasons[0] and "photo_emb 40%" in reasons[1]
    assert "review_emb" not in reasons[1]


def test_loose_bounds_keep_a_shifted_window_trusted(world):
    _, drift_reference, reference = world
    loose = CONFIG.model_copy(update={"max_domain_auc": 1.0, "max_far_share": 1.0})
    estimate = estimate_window(
        reference, drift_reference, toy_frame(250, seed=8, share_new=0.4), config=loose
    )
    assert estimate.trusted


def test_bad_inputs_are_refused(world):
    frame, drift_reference, reference = world
    with pytest.raises(ValueError, match="empty"):
        collect_evidence(reference, frame.iloc[:0], CONFIG)
    with pytest.raises(ValueError, match="label"):
        fit_estimator_reference(frame.drop(columns=["y"]), drift_reference, CONFIG)
    with pytest.raises(ValueError, match="model outputs"):
        collect_evidence(reference, frame.drop(columns=["proba_yes"]), CONFIG)


def test_existing_callers_get_a_trusted_cbpe_estimate_by_default():
    estimate = PerformanceEstimate(
        n_rows=10,
        classes=["no", "yes"],
        expected_accuracy=0.8,
        expected_macro_f1=0.7,
        accuracy_band=(0.7, 0.9),
        macro_f1_band=(0.6, 0.8),
        confidence=0.9,
        expected_confusion=[[4.0, 1.0], [1.0, 4.0]],
    )
    assert estimate.method == "cbpe" and estimate.trusted and estimate.trust_reasons == []
    assert estimate.domain_auc is None and estimate.far_share is None


def test_trusted_band_covers_where_the_calibrated_estimators_disagree(world):
    _, _, reference = world
    evidence = collect_evidence(reference, toy_frame(400, seed=9, share_b=0.3), CONFIG)
    narrow = estimate_from_evidence(
        evidence, ["no", "yes"], CONFIG.model_copy(update={"band_spans_estimators": False})
    )
    wide = estimate_from_evidence(evidence, ["no", "yes"], CONFIG)
    assert wide.trusted
    assert wide.accuracy_band[0] <= narrow.accuracy_band[0]
    assert wide.accuracy_band[1] >= narrow.accuracy_band[1]
    for method in ("atc", "doc", "iw_cbpe"):
        assert wide.accuracy_band[0] <= wide.accuracy_by_method[method] <= wide.accuracy_band[1]
    assert wide.accuracy_band != narrow.accuracy_band


def test_a_tiny_window_is_untrusted_because_nothing_can_be_told(world):
    _, drift_reference, reference = world
    estimate = estimate_window(reference, drift_reference, toy_frame(5, seed=11), config=CONFIG)
    assert not estimate.trusted
    assert "5 rows" in estimate.trust_reasons[0]
    assert estimate.accuracy_band[0] <= estimate.expected_accuracy <= estimate.accuracy_band[1]


def _estimate(value: float, band: tuple[float, float], trusted: bool) -> PerformanceEstimate:
    return PerformanceEstimate(
        n_rows=500,
        classes=["no", "yes"],
        expected_accuracy=value,
        expected_macro_f1=value,
        accuracy_band=band,
        macro_f1_band=band,
        confidence=0.9,
        expected_confusion=[[200.0, 50.0], [50.0, 200.0]],
        method="distance_checked",
        trusted=trusted,
        trust_reasons=[] if trusted else ["95% of rows are far from the reference"],
    )


@pytest.mark.parametrize(
    ("value", "band", "trusted", "drifted", "expected"),
    [
        (0.70, (0.66, 0.74), True, False, True),  # the estimate itself dropped
        (0.77, (0.74, 0.80), True, True, False),  # trusted and close: no drop
        (0.77, (0.68, 0.82), False, True, True),  # untrusted + drift + band reaches down
        (0.77, (0.68, 0.82), False, False, False),  # untrusted but no drift
        (0.77, (0.75, 0.80), False, True, False),  # untrusted, but even the band is fine
    ],
)
def test_check_estimate_reads_untrusted_drift_as_a_possible_drop(
    value, band, trusted, drifted, expected
):
    check = check_estimate(_estimate(value, band, trusted), 0.78, 0.05, drifted, "accuracy")
    assert check.possible_drop is expected
    assert bool(check.reasons) is expected
    if expected and not trusted:
        assert "untrusted" in check.reasons[0] and "far from the reference" in check.reasons[0]
