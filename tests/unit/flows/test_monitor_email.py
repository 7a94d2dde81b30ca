"""Which email a monitor run sends, and the episode it recalls (issue 14)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.monitor import RetrainRequest, _email_kind, _episode
from monitoring.assessment import ChampionInfo, WindowAssessment
from monitoring.policy import Decision, PolicyState, WindowRecord
from tests.unit.monitoring.test_alerts import drift_result, estimate

D0 = datetime(2026, 8, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def record(day: int, action: str, drifted=("image",), version="1") -> WindowRecord:
    return WindowRecord(
        at=D0 + (day + 1) * DAY,
        window_start=D0 + day * DAY,
        model_version=version,
        drifted=list(drifted),
        estimated_drop=False,
        realized_drop=None,
        action=action,
        fingerprint="+".join(drifted),
    )


def assessment(history: list[WindowRecord], day: int) -> WindowAssessment:
    decision = Decision(
        action="alert",
        reasons=["image drifted"],
        fingerprint="image",
        state=PolicyState(history=history),
    )
    return WindowAssessment(
        dataset="petfood",
        window_start=D0 + day * DAY,
        window_end=D0 + (day + 1) * DAY,
        champion=ChampionInfo(name="petfood-classifier", version="2", run_id="r", performance=0.8),
        n_rows=400,
        metric="macro_f1",
        drift=drift_result({"image"}),
        estimate=estimate(),
        decision=decision,
        decided_at=D0 + (day + 1) * DAY,
    )


def test_the_episode_goes_back_to_the_last_quiet_window_and_names_its_retrains():
    history = [
        record(0, "alert"),  # an earlier episode, closed by the quiet day 1
        record(1, "none", drifted=()),
        record(2, "alert"),
        record(3, "retrain"),
        record(4, "alert", version="2"),
        record(5, "alert", version="2"),  # the window judged now: not its own history
    ]
    lines, retrains = _episode(assessment(history, day=5))
    assert [line[:10] for line in lines] == ["2026-08-03", "2026-08-04", "2026-08-05"]
    assert "(v1): retrain, drift in image" in lines[1]
    assert retrains == [
        "the window of 2026-08-04 00:00 triggered a retrain of v1 "
        "(`mmops status` shows the versions since)"
    ]


def test_email_kind_follows_what_the_run_did():
    started = RetrainRequest(request_id="x", flow_run="f-1")
    trained = RetrainRequest(request_id="x", version="3", promoted=False)
    assert _email_kind(started, reminder=False) == "retrain_started"
    assert _email_kind(trained, reminder=False) == "retrain_result"
    assert _email_kind(None, reminder=True) == "reminder"
    assert _email_kind(None, reminder=False) == "alert"
