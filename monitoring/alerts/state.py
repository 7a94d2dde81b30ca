"""De-duplication of alert emails, and the alert state kept between runs.

``should_send`` decides whether a decision deserves a new email: the same ongoing issue
(same ``Decision.fingerprint``) is mailed once and then again only after
``renotify_after``; a ``none`` decision ends the episode. ``update_alert_state`` records
what happened to every window (keyed by window and model version), so a window monitored
again is recognised and mailed no second time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from features.state_io import atomic_write_text, read_state
from monitoring.policy import Action, Decision

_KEEP_WINDOWS = 500


class AlertState(BaseModel):
    """What was last mailed about the ongoing issue; store it as JSON between runs."""

    model_config = ConfigDict(frozen=True)

    fingerprint: str = Field(default="", description="Issue last mailed; '' when none ongoing.")
    action: Action = Field(default="none", description="Action of the last email.")
    first_sent_at: datetime | None = Field(default=None, description="First email of the issue.")
    last_sent_at: datetime | None = Field(default=None, description="Latest email of the issue.")
    emails: int = Field(default=0, description="Emails sent about the issue.")
    suppressed: int = Field(default=0, description="Decisions not mailed since the last email.")
    windows: dict[str, str] = Field(
        default_factory=dict,
        description="What happened to each window's alert ('sent', 'suppressed: ...', "
        "'failed: ...', 'none'), by '<window start>/v<version>'.",
    )

    def outcome(self, key: str) -> str | None:
        """What was done about the window ``key`` before, if it was handled."""
        return self.windows.get(key)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> AlertState:
        return cls.model_validate_json(text)


class AlertCheck(BaseModel):
    """Whether a decision calls for an email, and why."""

    model_config = ConfigDict(frozen=True)

    send: bool
    reason: str
    reminder: bool = Field(
        default=False, description="A repeat of an issue already mailed in this episode."
    )


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")


def should_send(
    decision: Decision,
    state: AlertState,
    now: datetime,
    renotify_after: timedelta | None = timedelta(hours=24),
) -> AlertCheck:
    """Decide whether a decision deserves a new email.

    ``none`` is never mailed. A retrain is always mailed (it is an action taken, and the
    policy's cooldown bounds how often). An alert is mailed when its fingerprint names an
    issue not yet mailed in the ongoing episode (episodes end with a ``none`` decision),
    or when ``renotify_after`` has passed since the last email.

    Args:
        decision: the policy's decision for this window.
        state: the alert state after the previous window.
        now: the time of the decision, timezone-aware.
        renotify_after: repeat an unchanged alert after this long; None: never.

    Raises:
        ValueError: ``now`` is naive or ``renotify_after`` is not positive.
    """
    _require_aware(now)
    if renotify_after is not None and renotify_after <= timedelta(0):
        raise ValueError("renotify_after must be positive")
    if decision.action == "none":
        return AlertCheck(send=False, reason="nothing to report")
    if decision.action == "retrain":
        return AlertCheck(send=True, reason="retraining was triggered")
    if not _covered(decision.fingerprint, state.fingerprint) or state.last_sent_at is None:
        previous = state.fingerprint or "none"
        return AlertCheck(
            send=True, reason=f"new issue {decision.fingerprint!r} (was {previous!r})"
        )
    elapsed = now - state.last_sent_at
    if renotify_after is not None and elapsed >= renotify_after:
        return AlertCheck(
            send=True,
            reason=f"{decision.fingerprint!r} still ongoing after {elapsed}",
            reminder=True,
        )
    return AlertCheck(
        send=False, reason=f"{decision.fingerprint!r} already reported at {state.last_sent_at}"
    )


def _parts(fingerprint: str) -> set[str]:
    return {part for part in fingerprint.split("+") if part}


def _covered(fingerprint: str, mailed: str) -> bool:
    """Whether every issue in ``fingerprint`` was already mailed in this episode.

    Drift in an episode flickers ('image', then 'image+output', then 'image'): that is
    the same ongoing drift, not a new issue each window.
    """
    return _parts(fingerprint) <= _parts(mailed)


def _union(first: str, second: str) -> str:
    return "+".join(sorted(_parts(first) | _parts(second)))


def _with_window(state: AlertState, key: str | None, outcome: str) -> dict[str, str]:
    windows = dict(state.windows)
    if key is not None:
        windows.pop(key, None)
        windows[key] = outcome
    return dict(list(windows.items())[-_KEEP_WINDOWS:])


def update_alert_state(
    state: AlertState,
    decision: Decision,
    now: datetime,
    sent: bool,
    window: str | None = None,
    outcome: str | None = None,
) -> AlertState:
    """The alert state after a decision: the episode ends on ``none``, else the email is
    recorded (``sent``) or counted as suppressed.

    Call it for every window, quiet ones included: a quiet window ends the episode, so
    the next drift is a new issue and is mailed. Record ``sent=True`` once the email is
    delivered or queued in the outbox (the outbox is re-sent by later runs).

    Args:
        window: the window's key; its ``outcome`` is remembered.
        outcome: what happened ('sent', 'suppressed: ...', 'failed: ...').

    Raises:
        ValueError: ``now`` is naive.
    """
    _require_aware(now)
    if decision.action == "none":
        return AlertState(windows=_with_window(state, window, outcome or "none"))
    windows = _with_window(state, window, outcome or ("sent" if sent else "suppressed"))
    if not sent:
        return state.model_copy(update={"suppressed": state.suppressed + 1, "windows": windows})
    same_issue = state.first_sent_at is not None
    return AlertState(
        windows=windows,
        fingerprint=_union(state.fingerprint, decision.fingerprint)
        if same_issue
        else decision.fingerprint,
        action=decision.action,
        first_sent_at=state.first_sent_at if same_issue else now,
        last_sent_at=now,
        emails=state.emails + 1 if same_issue else 1,
        suppressed=0,
    )


def load_alert_state(path: Path) -> AlertState:
    """Read the alert state; a missing file is the empty state, and a corrupt one is moved
    aside (with a warning naming it) and replaced by the empty state: the worst outcome
    is one repeated email, never a monitor that cannot run."""
    return read_state(
        path,
        lambda p: AlertState.from_json(p.read_text(encoding="utf-8")),
        AlertState,
        rebuild=AlertState,
    )


def save_alert_state(state: AlertState, path: Path) -> Path:
    """Write the alert state as JSON, atomically."""
    return atomic_write_text(path, state.to_json())


__all__ = [
    "AlertCheck",
    "AlertState",
    "load_alert_state",
    "save_alert_state",
    "should_send",
    "update_alert_state",
]
