"""The monitor cycle's bugs from issue 9, one test each, on the plain functions the flow
composes (assess_window, decide, the alert state, the history upsert)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from monitoring.alerts import AlertState, should_send, update_alert_state
from monitoring.assessment import ChampionInfo, assess_window
from monitoring.drift import DriftConfig, fit_drift_reference
from monitoring.estimate import RealizedPerformance, RealizedWindow
from monitoring.policy import PolicyConfig, PolicyState, decide
from monitoring.reports import upsert_history
from tests.unit.monitoring.test_policy import drift_result, estimate
from tests.unit.monitoring.test_reports import tiny_config, tiny_frame
from training.registry import select_reference_rows

DAY = timedelta(days=1)
D0 = datetime(2024, 3, 2, tzinfo=UTC)
FAST = DriftConfig(permutations=199, mmd_max_reference=300)


@pytest.fixture(scope="module")
def config():
    return tiny_config()


@pytest.fixture(scope="module")
def reference(config):
    return fit_drift_reference(tiny_frame(600, seed=1), config, FAST, seed=0)


def champion(version="1", performance=0.6):
    return ChampionInfo(
        name="tiny-classifier", version=version, run_id="r", performance=performance
    )


def scored(n, seed, version="1", accuracy=None, label_b=None):
    """Prediction-log rows of one window; labels drawn to give ``accuracy`` if asked."""
    frame = tiny_frame(n, seed=seed).assign(model_version=version)
    rng = np.random.default_rng(seed + 100)
    if accuracy is not None:
        right = rng.random(n) < accuracy
        frame["y"] = np.where(
            right, frame["prediction"], np.where(frame["prediction"] == "a", "b", "a")
        )
    if label_b is not None:
        frame["y"] = np.where(rng.random(n) < label_b, "b", "a")
    return frame


def assess(config, reference, window, labelled=None, state=None, version="1", start=D0, **kw):
    return assess_window(
        dataset=config,
        window=window,
        window_start=start,
        window_end=start + DAY,
        champion=champion(version),
        drift_reference=reference,
        state=state or PolicyState(),
        policy=PolicyConfig(),
        drift_config=FAST,
        labelled=labelled,
        labelled_start=start - DAY,
        labelled_end=start,
        now=start + DAY,
        **kw,
    )


def test_realized_performance_belongs_to_the_labelled_window(config, reference):
    # The window's own rows carry labels that would give 0.9; the labelled window (the day
    # before) gives 0.6. The assessment must report 0.6 as the labelled window's.
    window = scored(300, seed=2, accuracy=0.9)
    labelled = scored(300, seed=3, accuracy=0.6)
    result = assess(config, reference, window, labelled)
    (entry,) = result.realized
    assert entry.window_start == D0 - DAY and entry.model_version == "1"
    assert entry.performance.accuracy == pytest.approx(
        (labelled["y"] == labelled["prediction"]).mean()
    )
    assert "on the labels of 2024-03-01 00:00" in result.realized_lines()[0]
    assert result.drift.realized is None  # nothing is attached to the current window


def test_history_puts_realized_on_the_labelled_windows_row(config, reference):
    first = assess(config, reference, scored(300, seed=2), start=D0 - DAY)
    history = upsert_history(None, first)
    second = assess(config, reference, scored(300, seed=4), scored(300, seed=3, accuracy=0.6))
    history = upsert_history(history, second)
    rows = history.set_index("window_start")
    assert rows.loc[pd.Timestamp(D0 - DAY), "realized_accuracy"] == pytest.approx(
        second.realized[0].performance.accuracy
    )
    assert np.isnan(rows.loc[pd.Timestamp(D0), "realized_accuracy"])
    # Re-monitoring the earlier window keeps the realized value its labels gave it.
    again = upsert_history(history, first).set_index("window_start")
    assert again.loc[pd.Timestamp(D0 - DAY), "realized_accuracy"] == pytest.approx(
        second.realized[0].performance.accuracy
    )
    assert len(again) == 2


def test_old_versions_labels_are_not_judged_against_the_new_champion():
    realized = RealizedWindow(
        window_start=D0 - DAY,
        window_end=D0,
        model_version="1",
        performance=RealizedPerformance(
            n_rows=400,
            classes=["no", "yes"],
            accuracy=0.5,
            macro_f1=0.5,
            confusion=[[0, 0], [0, 0]],
        ),
    )
    decision = decide(
        drift_result(),
        estimate(0.8),
        0.8,
        PolicyState(),
        PolicyConfig(),
        D0 + DAY,
        window_start=D0,
        model_version="2",
        realized=realized,
    )
    assert decision.action == "none"
    assert any("scored by v1, the champion is v2" in r for r in decision.reasons)
    judged = decide(
        drift_result(),
        estimate(0.8),
        0.8,
        PolicyState(),
        PolicyConfig(),
        D0 + DAY,
        window_start=D0,
        model_version="1",
        realized=realized,
    )
    assert judged.action == "alert" and judged.fingerprint == "concept"


def test_label_drift_is_tested_on_the_labelled_window(config, reference):
    window = scored(300, seed=2)
    same = assess(config, reference, window, scored(300, seed=3, label_b=0.5))
    shifted = assess(config, reference, window, scored(300, seed=3, label_b=0.1))
    assert "label" in same.drift.modalities and not same.drift.modalities["label"].drifted
    assert "label" in shifted.drift.drifted_modalities


def test_monitor_only_columns_are_tested_as_benign(config, reference):
    window = scored(300, seed=2)
    window["load"] = window["load"] + 0.5
    result = assess(config, reference, window)
    assert "benign" in result.drift.drifted_modalities


def test_rerunning_a_window_replays_its_decision_and_keeps_the_state():
    drifted = (drift_result({"image"}), estimate(0.7))
    state = PolicyState()
    for day in range(2):
        decision = decide(
            *drifted[:1],
            drifted[1],
            0.8,
            state,
            PolicyConfig(),
            D0 + (day + 1) * DAY,
            window_start=D0 + day * DAY,
            model_version="1",
        )
        state = decision.state
    assert decision.action == "retrain"
    again = decide(
        *drifted[:1],
        drifted[1],
        0.8,
        state,
        PolicyConfig(),
        D0 + 9 * DAY,
        window_start=D0 + DAY,
        model_version="1",
    )
    assert again.replayed and again.action == "retrain" and again.state == state
    # One drifted window re-run is still one window: no persistence from a re-run.
    single = decide(
        *drifted[:1],
        drifted[1],
        0.8,
        PolicyState(),
        PolicyConfig(),
        D0 + DAY,
        window_start=D0,
        model_version="1",
    )
    rerun = decide(
        *drifted[:1],
        drifted[1],
        0.8,
        single.state,
        PolicyConfig(),
        D0 + 2 * DAY,
        window_start=D0,
        model_version="1",
    )
    assert single.action == rerun.action == "alert" and len(rerun.state.history) == 1


def test_a_new_episode_after_a_quiet_window_is_mailed():
    drifted = decide(drift_result({"image"}), estimate(0.8), 0.8, PolicyState(), PolicyConfig(), D0)
    quiet = decide(drift_result(), estimate(0.8), 0.8, drifted.state, PolicyConfig(), D0 + DAY)
    state = update_alert_state(AlertState(), drifted, D0, sent=True, window="w0", outcome="sent")
    state = update_alert_state(state, quiet, D0 + DAY, sent=False, window="w1")
    again = decide(
        drift_result({"image"}), estimate(0.8), 0.8, quiet.state, PolicyConfig(), D0 + 2 * DAY
    )
    check = should_send(again, state, D0 + 2 * DAY, renotify_after=timedelta(days=30))
    assert check.send, check.reason
    assert state.outcome("w0") == "sent" and state.outcome("w1") == "none"


def test_reference_after_a_drift_retrain_uses_the_rows_after_the_shift():
    held_out = pd.DataFrame(
        {"ts": pd.date_range(D0 - 5 * DAY, periods=600, freq="12min", tz="UTC")}
    )
    since = D0 - 2 * DAY
    rows, note = select_reference_rows(held_out, "ts", since, min_rows=100)
    assert (rows["ts"] >= since).all() and len(rows) == (held_out["ts"] >= since).sum()
    assert "after the shift" in note
    rows, note = select_reference_rows(held_out, "ts", since, min_rows=10_000)
    assert len(rows) == 600 and "fewer than 10000" in note


def test_assessment_uses_the_configured_estimator_with_its_trust_signal():
    # Issue 13: CBPE believes the confidently wrong new camera; the shipped default
    # (distance_checked) moves towards the realized value and says it is untrusted.
    from monitoring.estimators import EstimatorConfig, fit_estimator_reference
    from tests.unit.monitoring.toy_world import (
        DRIFT,
        realized,
        toy_config,
        toy_frame,
        toy_reference,
    )

    config = toy_config()
    frame = toy_frame(2000, seed=1)
    drift_reference = toy_reference(frame)
    estimator = EstimatorConfig(n_simulations=100)
    fitted = fit_estimator_reference(frame, drift_reference, estimator)
    window = toy_frame(800, seed=3, share_b=0.0, share_new=0.4)
    common = dict(
        dataset=config,
        window=window,
        window_start=D0,
        window_end=D0 + DAY,
        champion=champion(performance=realized(frame)),
        drift_reference=drift_reference,
        state=PolicyState(),
        policy=PolicyConfig(metric="accuracy"),
        drift_config=DRIFT,
        now=D0 + DAY,
    )
    checked = assess_window(**common, estimator_reference=fitted, estimator=estimator)
    cbpe = assess_window(**common)  # no labelled reference: CBPE, flagged as such
    truth = realized(window)
    assert checked.estimate.method == "distance_checked"
    assert not checked.estimate.trusted
    assert abs(checked.estimate.expected_accuracy - truth) < abs(
        cbpe.estimate.expected_accuracy - truth
    )
    assert cbpe.estimate.method == "cbpe" and not cbpe.estimate.trusted
    assert "no labelled reference" in cbpe.estimate.trust_reasons[0]
    assert "image" in checked.drift.drifted_modalities
    assert any("untrusted" in r for r in checked.decision.reasons)
