"""The decision policy: what a window's drift and performance evidence should trigger.

``decide`` is a gate kept apart from the computation (``compute_drift``,
``estimate_performance``): it reads typed results and a small persistent state and
returns ``none``, ``alert`` or ``retrain`` with its reasons. Retraining needs

* persistent drift (drifted now and in ``k`` of the last ``n`` windows counting this
  one) in a modality allowed to retrain,
  together with a performance drop that matters in the current window (estimated
  label-free, or realized on labels), or
* concept drift: a realized drop on enough labels in ``k`` of the last ``n`` labelled
  windows (the label-free estimate cannot see it);

and is then still subject to a cooldown after the last retrain and a daily cap; a
blocked retrain becomes an alert that says why. Anything else that is off (drift in a
single window, benign drift in ``monitor_only`` columns, drift without a performance
drop, an estimated drop without drift) alerts only.

A label-free estimate marked untrusted (the window is too far from the reference for
any estimator to be relied on) on a drifted window counts as a possible drop when its
band reaches the drop threshold: under the shift that makes the estimate unreliable,
"the estimate looks fine" is not evidence that performance is fine.

Persistence counts only windows after the last retrain: earlier ones were judged
against the previous champion's reference.

Every record is keyed by (window start, model version). Deciding a window that the state
already holds for the same version *replays* the recorded decision and leaves the state
unchanged: a flow retry or a manual re-run never counts a window twice, and never
triggers a second retrain. Realized performance is judged only when the labelled rows
were scored by the version being judged (after a promotion, the old version's labels say
nothing about the new champion).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitoring.drift import DriftResult
from monitoring.estimate import Metric, PerformanceEstimate, RealizedPerformance, RealizedWindow
from monitoring.estimators import check_estimate

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
    """What the policy remembers of one window (keyed by window start and model version)."""

    model_config = ConfigDict(frozen=True)

    at: datetime = Field(description="When the window was decided.")
    window_start: datetime | None = Field(
        default=None, description="Start of the window decided (None in old state files)."
    )
    model_version: str = Field(default="", description="The champion the window was judged for.")
    drifted: list[str] = Field(description="Enabled modalities that drifted.")
    estimated_drop: bool
    realized_drop: bool | None = Field(description="None when too few labels.")
    labelled_window: datetime | None = Field(
        default=None, description="Start of the labelled window the realized drop is about."
    )
    action: Action
    fingerprint: str
    reasons: list[str] = Field(default_factory=list, description="The decision's reasons.")

    @property
    def order(self) -> datetime:
        return self.window_start or self.at


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

    def find(self, window_start: datetime, model_version: str) -> WindowRecord | None:
        """The record of this window judged for this version, if it was decided before."""
        for record in self.history:
            if record.window_start == window_start and record.model_version == model_version:
                return record
        return None


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
    replayed: bool = Field(
        default=False,
        description="The window was decided before for the same version: this is the "
        "recorded decision, the state is unchanged and nothing is to be done again.",
    )


def p_text(p_value: float) -> str:
    """A p-value as text; one below float precision reads '< 1e-16', never '0'."""
    return "< 1e-16" if p_value < 1e-16 else f"{p_value:.2g}"


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
    *,
    window_start: datetime | None = None,
    model_version: str = "",
    realized: RealizedWindow | None = None,
) -> Decision:
    """Decide what a window calls for.

    Args:
        result: the window's drift.
        estimate: the window's label-free performance estimate.
        reference_performance: the champion's ``config.metric`` on its reference data.
        state: the policy state after the previous window.
        config: the policy.
        now: the decision time, timezone-aware.
        window_start: the window's key; with it, a window already decided for
            ``model_version`` replays its recorded decision, and persistence counts the
            windows before this one.
        model_version: the champion the window is judged for.
        realized: performance on the labels that arrived (a labelled window, usually an
            earlier one); judged only when its predictions came from ``model_version``.
            Without it, ``result.realized`` (labels of this window) is used.

    Raises:
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if window_start is not None:
        known = state.find(window_start, model_version)
        if known is not None:
            return Decision(
                action=known.action,
                reasons=known.reasons,
                fingerprint=known.fingerprint,
                state=state,
                replayed=True,
            )
    reasons: list[str] = []
    last_retrain = state.last_retrain
    recent = sorted(
        (
            r
            for r in state.history
            if (last_retrain is None or r.at > last_retrain)
            and (window_start is None or r.window_start is None or r.window_start < window_start)
        ),
        key=lambda r: r.order,
    )

    drifted = [m for m in result.drifted_modalities if config.for_modality(m).enabled]
    floor = reference_performance - config.performance_drop
    # An untrusted estimate on a drifted window is not "no drop": its band's low end decides.
    estimate_check = check_estimate(
        estimate,
        reference_performance,
        config.performance_drop,
        drifted=bool(drifted),
        metric=config.metric,
    )
    estimated_drop = estimate_check.possible_drop
    judged: RealizedPerformance | None = None
    labelled_window: datetime | None = None
    if realized is not None:
        if model_version and realized.model_version != model_version:
            reasons.append(
                f"{realized.describe(config.metric)} is not judged: those rows were scored "
                f"by v{realized.model_version}, the champion is v{model_version}"
            )
        else:
            judged, labelled_window = realized.performance, realized.window_start
    elif result.realized is not None:
        judged = result.realized
    realized_drop: bool | None = None
    if judged is not None and judged.n_rows >= config.min_labeled_rows:
        realized_drop = judged.value(config.metric) <= floor

    for modality in drifted:
        drift = result.modalities[modality]
        reasons.append(
            f"{modality} drifted (p-value {p_text(drift.p_value)} <= {drift.threshold:.3g}; "
            f"top: {', '.join(t.name for t in drift.top[:3])})"
        )
    reasons.extend(estimate_check.reasons)
    if realized_drop and judged is not None:
        value = judged.value(config.metric)
        where = f" of {labelled_window:%Y-%m-%d %H:%M}" if labelled_window else ""
        reasons.append(
            f"realized {config.metric} {value:.3f} on {judged.n_rows} labels{where} is "
            f"{reference_performance - value:.3f} below the reference {reference_performance:.3f}"
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
    # One verdict per labelled window: the same labels seen by two runs count once.
    seen: dict[object, bool] = {}
    for r in recent:
        same_labels = labelled_window is not None and r.labelled_window == labelled_window
        if r.realized_drop is not None and not same_labels:
            seen[r.labelled_window or r.order] = r.realized_drop
    labelled = list(seen.values())
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
    if action == "none":
        reasons = reasons or ["no drift and no performance drop"]
    record = WindowRecord(
        at=now,
        window_start=window_start,
        model_version=model_version,
        drifted=drifted,
        estimated_drop=estimated_drop,
        realized_drop=realized_drop,
        labelled_window=labelled_window,
        action=action,
        fingerprint=fingerprint,
        reasons=reasons,
    )
    horizon = now - timedelta(days=7)
    history = sorted([*state.history, record], key=lambda r: r.order)
    new_state = PolicyState(
        history=history[-config.history_size :],
        retrains=[t for t in retrains if t > horizon or t == max(retrains)],
    )
    return Decision(action=action, reasons=reasons, fingerprint=fingerprint, state=new_state)
