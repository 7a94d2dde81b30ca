"""The decision policy: what a window's drift and performance evidence should trigger.

``decide`` is a gate kept apart from the computation (``compute_drift``,
``estimate_performance``): it reads typed results and a small persistent state and
returns ``none``, ``alert`` or ``retrain`` with its reasons. Retraining needs

* persistent drift (drifted now and in ``k`` of the last ``n`` windows counting this
  one) in a modality allowed to retrain,
  together with a performance drop that matters in the current window (estimated from
  the probabilities, or realized on labels), or
* concept drift: a realized drop on enough labels in ``k`` of the last ``n`` labelled
  windows (the label-free estimate cannot see it);

and is then still subject to a cooldown after the last retrain and a daily cap; a
blocked retrain becomes an alert that says why. Anything else that is off (drift in a
single window, benign drift in ``monitor_only`` columns, drift without a performance
drop, an estimated drop without drift) alerts only.

Persistence counts only windows after the last retrain: earlier ones were judged
against the previous champion's reference.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitoring.drift import DriftResult
from monitoring.estimate import Metric, PerformanceEstimate

Action = Literal["none", "alert", "retrain"]
_PERFORMANCE = "performance"
_CONCEPT = "concept"


class ModalityPolicy(BaseModel):
    """How drift in one modality is acted upon."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = Field(default=True, description="Whether drift here is acted upon at all.")
    persistence_k: int = Field(
        default=2, ge=1, description="Drifted windows needed among the last persistence_n."
    )
    persistence_n: int = Field(default=3, ge=1, description="Windows the persistence looks back.")
    may_retrain: bool = Field(
        default=True, description="Whether persistent drift here may trigger retraining."
    )

    @model_validator(mode="after")
    def _k_within_n(self) -> ModalityPolicy:
        if self.persistence_k > self.persistence_n:
            raise ValueError("persistence_k cannot exceed persistence_n")
        return self


def _default_modalities() -> dict[str, ModalityPolicy]:
    return {
        "tabular": ModalityPolicy(),
        "text": ModalityPolicy(),
        "image": ModalityPolicy(),
        "output": ModalityPolicy(),
        "label": ModalityPolicy(),
        # monitor_only columns do not feed the model: their drift is worth a note only.
        "benign": ModalityPolicy(may_retrain=False),
    }


class PolicyConfig(BaseModel):
    """Parameters of the decision policy."""

    model_config = ConfigDict(frozen=True)

    modalities: dict[str, ModalityPolicy] = Field(
        default_factory=_default_modalities,
        description="Policy per drift modality; a modality not listed uses 'default'.",
    )
    default: ModalityPolicy = Field(
        default_factory=ModalityPolicy, description="Policy of modalities not listed."
    )
    metric: Metric = Field(default="macro_f1", description="Primary metric.")
    performance_drop: float = Field(
        default=0.05,
        gt=0.0,
        description="Drop of the metric below the champion's reference value that matters.",
    )
    min_labeled_rows: int = Field(
        default=100, ge=1, description="Labels a window needs before its realized metric counts."
    )
    concept_persistence_k: int = Field(
        default=2, ge=1, description="Labelled windows with a realized drop needed ..."
    )
    concept_persistence_n: int = Field(
        default=3, ge=1, description="... among this many last labelled windows."
    )
    cooldown_hours: float = Field(
        default=24.0, ge=0.0, description="No retrain within this long after the last one."
    )
    max_retrains_per_day: int = Field(
        default=2, ge=0, description="Retrains allowed in any 24 hours."
    )
    history_size: int = Field(default=100, ge=1, description="Window records kept in the state.")

    @model_validator(mode="after")
    def _k_within_n(self) -> PolicyConfig:
        if self.concept_persistence_k > self.concept_persistence_n:
            raise ValueError("concept_persistence_k cannot exceed concept_persistence_n")
        return self

    def for_modality(self, modality: str) -> ModalityPolicy:
        return self.modalities.get(modality, self.default)


class WindowRecord(BaseModel):
    """What the policy remembers of one window."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    drifted: list[str] = Field(description="Enabled modalities that drifted.")
    estimated_drop: bool
    realized_drop: bool | None = Field(description="None when too few labels.")
    action: Action
    fingerprint: str


class PolicyState(BaseModel):
    """The policy's memory across runs; store it as JSON between flow runs."""

    model_config = ConfigDict(frozen=True)

    history: list[WindowRecord] = Field(default_factory=list)
    retrains: list[datetime] = Field(default_factory=list)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> PolicyState:
        return cls.model_validate_json(text)

    @property
    def last_retrain(self) -> datetime | None:
        return max(self.retrains) if self.retrains else None


class Decision(BaseModel):
    """What to do about a window, why, and the state to store for the next run."""

    model_config = ConfigDict(frozen=True)

    action: Action
    reasons: list[str]
    fingerprint: str = Field(
        description="Identifies the ongoing issue ('image+text', 'concept', ...), '' if "
        "none: equal fingerprints on consecutive alerts mean the same ongoing drift."
    )
    state: PolicyState


def _fingerprint(drifted: list[str], estimated_drop: bool, realized_drop: bool) -> str:
    if drifted:
        return "+".join(sorted(drifted))
    if realized_drop:
        return _CONCEPT
    if estimated_drop:
        return _PERFORMANCE
    return ""


def decide(
    result: DriftResult,
    estimate: PerformanceEstimate,
    reference_performance: float,
    state: PolicyState,
    config: PolicyConfig,
    now: datetime,
) -> Decision:
    """Decide what a window calls for.

    Args:
        result: the window's drift (its ``realized`` performance is used when present).
        estimate: the window's label-free performance estimate.
        reference_performance: the champion's ``config.metric`` on its reference data.
        state: the policy state after the previous window.
        config: the policy.
        now: the decision time, timezone-aware.

    Raises:
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    reasons: list[str] = []
    last_retrain = state.last_retrain
    recent = [r for r in state.history if last_retrain is None or r.at > last_retrain]

    drifted = [m for m in result.drifted_modalities if config.for_modality(m).enabled]
    floor = reference_performance - config.performance_drop
    estimated = estimate.value(config.metric)
    estimated_drop = estimated <= floor
    realized_drop: bool | None = None
    if result.realized is not None and result.realized.n_rows >= config.min_labeled_rows:
        realized_drop = result.realized.value(config.metric) <= floor

    for modality in drifted:
        drift = result.modalities[modality]
        reasons.append(
            f"{modality} drifted (p={drift.p_value:.2g} <= {drift.threshold:.2g}; "
            f"top: {', '.join(t.name for t in drift.top[:3])})"
        )
    if estimated_drop:
        reasons.append(
            f"estimated {config.metric} {estimated:.3f} is {reference_performance - estimated:.3f}"
            f" below the reference {reference_performance:.3f}"
        )
    if realized_drop and result.realized is not None:
        realized = result.realized.value(config.metric)
        reasons.append(
            f"realized {config.metric} {realized:.3f} on {result.realized.n_rows} labels is "
            f"{reference_performance - realized:.3f} below the reference {reference_performance:.3f}"
        )

    persistent: list[str] = []
    for modality in drifted:
        policy = config.for_modality(modality)
        past = recent[-(policy.persistence_n - 1) :] if policy.persistence_n > 1 else []
        count = 1 + sum(modality in r.drifted for r in past)
        if not policy.may_retrain:
            reasons.append(f"{modality} drift may not trigger retraining: alert only")
        elif count >= policy.persistence_k:
            persistent.append(modality)
        else:
            reasons.append(
                f"{modality} drifted in {count} of the last {policy.persistence_n} windows "
                f"(retraining needs {policy.persistence_k})"
            )
    labelled = [r.realized_drop for r in recent if r.realized_drop is not None]
    concept = False
    if realized_drop is not None:
        n_past = config.concept_persistence_n - 1
        past_drops = labelled[-n_past:] if n_past else []
        concept = sum(past_drops) + realized_drop >= config.concept_persistence_k

    wants_retrain = False
    if persistent and (estimated_drop or realized_drop):
        wants_retrain = True
        reasons.append(f"persistent drift in {'+'.join(persistent)} with a performance drop")
    elif persistent:
        reasons.append(f"persistent drift in {'+'.join(persistent)} without a performance drop")
    if concept:
        reasons.append(
            f"realized {config.metric} dropped in {config.concept_persistence_k}+ of the last "
            f"{config.concept_persistence_n} labelled windows"
            + ("" if drifted else " without input drift (concept drift)")
        )
    wants_retrain = wants_retrain or concept

    action: Action = "none"
    retrains = list(state.retrains)
    if wants_retrain:
        day_ago = now - timedelta(days=1)
        cooldown_end = (
            last_retrain + timedelta(hours=config.cooldown_hours) if last_retrain else None
        )
        if cooldown_end is not None and now < cooldown_end:
            action = "alert"
            reasons.append(f"retrain blocked: cooldown until {cooldown_end.isoformat()}")
        elif sum(t > day_ago for t in retrains) >= config.max_retrains_per_day:
            action = "alert"
            reasons.append(
                f"retrain blocked: cap of {config.max_retrains_per_day} retrains per day reached"
            )
        else:
            action = "retrain"
            retrains.append(now)
    elif drifted or estimated_drop or realized_drop:
        action = "alert"

    fingerprint = _fingerprint(drifted, estimated_drop, bool(realized_drop))
    record = WindowRecord(
        at=now,
        drifted=drifted,
        estimated_drop=estimated_drop,
        realized_drop=realized_drop,
        action=action,
        fingerprint=fingerprint,
    )
    horizon = now - timedelta(days=7)
    new_state = PolicyState(
        history=[*state.history, record][-config.history_size :],
        retrains=[t for t in retrains if t > horizon or t == max(retrains)],
    )
    if action == "none":
        reasons = reasons or ["no drift and no performance drop"]
    return Decision(action=action, reasons=reasons, fingerprint=fingerprint, state=new_state)
