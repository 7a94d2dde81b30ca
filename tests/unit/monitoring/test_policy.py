from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitoring.drift import DriftResult, ModalityDrift
from monitoring.estimate import PerformanceEstimate, RealizedPerformance
from monitoring.policy import ModalityPolicy, PolicyConfig, PolicyState, decide

T0 = datetime(2026, 7, 1, 12, tzinfo=UTC)
REFERENCE = 0.80
ALL = ("tabular", "benign", "text", "image", "output")


def drift_result(drifted: set[str] = frozenset(), realized_f1: float | None = None, labels=200):
    modalities = {
        name: ModalityDrift(
            modality=name,
            score=0.3 if name in drifted else 0.01,
            p_value=1e-6 if name in drifted else 0.5,
            threshold=0.01,
            drifted=name in drifted,
            n_tests=1,
            n_window=500,
            n_reference=5000,
            top=[],
        )
        for name in ALL
    }
    realized = None
    if realized_f1 is not None:
        realized = RealizedPerformance(
            n_rows=labels,
            classes=["no", "yes"],
            accuracy=realized_f1,
            macro_f1=realized_f1,
            confusion=[[0, 0], [0, 0]],
        )
    return DriftResult(n_rows=500, alpha=0.05, modalities=modalities, realized=realized)


def estimate(f1: float = REFERENCE) -> PerformanceEstimate:
    return PerformanceEstimate(
        n_rows=500,
        classes=["no", "yes"],
        expected_accuracy=f1,
        expected_macro_f1=f1,
        accuracy_band=(f1 - 0.03, f1 + 0.03),
        macro_f1_band=(f1 - 0.03, f1 + 0.03),
        confidence=0.9,
        expected_confusion=[[0.0, 0.0], [0.0, 0.0]],
    )


def run(windows, config=None, state=None, start=T0, step=timedelta(hours=1)):
    """Feed (result, estimate) pairs one per step; return every decision."""
    config = config or PolicyConfig()
    state = state or PolicyState()
    decisions = []
    for i, (result, est) in enumerate(windows):
        decision = decide(result, est, REFERENCE, state, config, start + i * step)
        decisions.append(decision)
        state = decision.state
    return decisions


def test_quiet_window_does_nothing():
    (decision,) = run([(drift_result(), estimate())])
    assert decision.action == "none"
    assert decision.fingerprint == ""
    assert len(decision.state.history) == 1


def test_single_drifted_window_alerts_only():
    (decision,) = run([(drift_result({"text"}), estimate(0.70))])
    assert decision.action == "alert"
    assert decision.fingerprint == "text"
    assert any("1 of the last 3" in r for r in decision.reasons)


def test_persistent_drift_with_a_drop_retrains():
    windows = [(drift_result({"image", "text"}), estimate(0.70))] * 2
    first, second = run(windows)
    assert first.action == "alert"
    assert second.action == "retrain"
    assert second.fingerprint == first.fingerprint == "image+text"
    assert second.state.retrains == [T0 + timedelta(hours=1)]


def test_persistence_is_k_of_n_not_consecutive():
    config = PolicyConfig(modalities={"text": ModalityPolicy(persistence_k=2, persistence_n=3)})
    windows = [
        (drift_result({"text"}), estimate(0.7)),
        (drift_result(), estimate(0.7)),
        (drift_result({"text"}), estimate(0.7)),
    ]
    assert [d.action for d in run(windows, config)] == ["alert", "alert", "retrain"]


def untrusted(f1: float, low: float) -> PerformanceEstimate:
    """An estimate that looks fine but cannot be trusted: its band reaches ``low``."""
    return estimate(f1).model_copy(
        update={
            "macro_f1_band": (low, f1 + 0.03),
            "trusted": False,
            "trust_reasons": ["40% of rows are far from the reference embeddings"],
        }
    )


def test_untrusted_estimate_on_persistent_drift_is_a_possible_drop_and_retrains():
    # Issue 13: the new camera left the estimate at 0.79 (reference 0.80) while realized
    # accuracy fell; an untrusted estimate on a drifted window must not read as "no drop".
    decisions = run([(drift_result({"image"}), untrusted(0.79, low=0.60))] * 2)
    assert [d.action for d in decisions] == ["alert", "retrain"]
    assert "untrusted" in " ".join(decisions[-1].reasons)
    assert "far from the reference" in " ".join(decisions[-1].reasons)
    assert decisions[-1].state.history[-1].estimated_drop


def test_untrusted_estimate_whose_band_stays_high_is_no_drop():
    decisions = run([(drift_result({"image"}), untrusted(0.79, low=0.77))] * 2)
    assert [d.action for d in decisions] == ["alert", "alert"]
    assert "without a performance drop" in " ".join(decisions[-1].reasons)


def test_untrusted_estimate_without_drift_is_not_an_alarm():
    (decision,) = run([(drift_result(), untrusted(0.79, low=0.60))])
    assert decision.action == "none"


def test_persistent_drift_without_a_drop_alerts():
    decisions = run([(drift_result({"tabular"}), estimate(0.79))] * 3)
    assert [d.action for d in decisions] == ["alert"] * 3
    assert "without a performance drop" in " ".join(decisions[-1].reasons)


def test_benign_drift_never_retrains():
    decisions = run([(drift_result({"benign"}), estimate(0.60))] * 4)
    assert {d.action for d in decisions} == {"alert"}
    assert decisions[-1].fingerprint == "benign"
    assert any("may not trigger retraining" in r for r in decisions[-1].reasons)


def test_cooldown_turns_retrain_into_alert():
    config = PolicyConfig(cooldown_hours=24, max_retrains_per_day=10)
    decisions = run([(drift_result({"text"}), estimate(0.70))] * 6, config)
    actions = [d.action for d in decisions]
    assert actions == ["alert", "retrain", "alert", "alert", "alert", "alert"]
    assert any("cooldown" in r for r in decisions[3].reasons)


def test_daily_cap_blocks_and_then_lets_go():
    config = PolicyConfig(cooldown_hours=0, max_retrains_per_day=1)
    drifting = (drift_result({"output"}), estimate(0.70))
    decisions = run([drifting] * 5, config, step=timedelta(hours=2))
    assert [d.action for d in decisions] == ["alert", "retrain", "alert", "alert", "alert"]
    assert any("cap of 1" in r for r in decisions[3].reasons)
    later = run([drifting] * 2, config, decisions[-1].state, start=T0 + timedelta(hours=27))
    # 25 h after the first retrain the cap frees up again, for one retrain.
    assert [d.action for d in later] == ["retrain", "alert"]


def test_concept_drift_seen_only_through_labels():
    # No input drift and a healthy estimate, but labels say performance fell.
    concept = (drift_result(realized_f1=0.65), estimate(0.80))
    decisions = run([concept, concept])
    assert [d.action for d in decisions] == ["alert", "retrain"]
    assert decisions[-1].fingerprint == "concept"
    assert "concept drift" in " ".join(decisions[-1].reasons)


def test_too_few_labels_do_not_count():
    few = (drift_result(realized_f1=0.40, labels=20), estimate(0.80))
    assert [d.action for d in run([few] * 3)] == ["none"] * 3


def test_unlabelled_windows_do_not_break_concept_persistence():
    labelled = (drift_result(realized_f1=0.65), estimate(0.80))
    unlabelled = (drift_result(), estimate(0.80))
    actions = [d.action for d in run([labelled, unlabelled, unlabelled, labelled])]
    assert actions == ["alert", "none", "none", "retrain"]


def test_disabled_modality_is_ignored():
    config = PolicyConfig(modalities={"image": ModalityPolicy(enabled=False)})
    decisions = run([(drift_result({"image"}), estimate(0.80))] * 3, config)
    assert {d.action for d in decisions} == {"none"}


def test_estimated_drop_without_drift_alerts():
    (decision,) = run([(drift_result(), estimate(0.70))])
    assert decision.action == "alert"
    assert decision.fingerprint == "performance"


def test_state_round_trips_through_json_between_runs():
    drifting = (drift_result({"text"}), estimate(0.70))
    (first,) = run([drifting])
    restored = PolicyState.from_json(first.state.to_json())
    assert restored == first.state
    (second,) = run([drifting], state=restored, start=T0 + timedelta(hours=1))
    assert second.action == "retrain"


def test_history_is_bounded():
    config = PolicyConfig(history_size=3)
    decisions = run([(drift_result(), estimate())] * 5, config)
    assert len(decisions[-1].state.history) == 3


def test_naive_now_and_bad_persistence_are_rejected():
    with pytest.raises(ValueError, match="timezone"):
        decide(
            drift_result(),
            estimate(),
            REFERENCE,
            PolicyState(),
            PolicyConfig(),
            datetime(2026, 1, 1),
        )
    with pytest.raises(ValueError):
        ModalityPolicy(persistence_k=4, persistence_n=3)
