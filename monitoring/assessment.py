"""One typed assessment per monitored window: the one object reports, emails, the drift
history and the MLflow run are built from.

``assess_window`` is a plain function: the window's prediction-log rows (without labels),
the rows of the labelled window (labels arrive late, so usually an earlier window), the
champion's fitted drift reference and the policy state in; drift, the label-free
estimate, the realized performance of the labelled window per model version, and the
policy's decision out. It reads no file and writes none: the flow records the result.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.schema import DatasetConfig
from monitoring.drift import DriftConfig, DriftReference, DriftResult, compute_drift
from monitoring.estimate import (
    Metric,
    PerformanceEstimate,
    RealizedWindow,
    estimate_performance,
    realized_windows,
)
from monitoring.estimators import EstimatorConfig, EstimatorReference, estimate_window
from monitoring.policy import Decision, PolicyConfig, PolicyState, decide


class ChampionInfo(BaseModel):
    """What the monitor knows of the version it judges."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Registered model name.")
    version: str
    run_id: str = Field(description="The training run of the version.")
    experiment_id: str | None = Field(default=None, description="That run's experiment.")
    performance: float = Field(description="The version's reference value of the policy metric.")
    reference_note: str = Field(
        default="", description="Which rows the drift reference was built from."
    )


class WindowAssessment(BaseModel):
    """Everything decided about one window, for one model version."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    window_start: datetime
    window_end: datetime
    champion: ChampionInfo
    n_rows: int
    metric: Metric
    drift: DriftResult
    estimate: PerformanceEstimate
    labelled_start: datetime | None = Field(
        default=None, description="Start of the window whose labels arrived (None: no lag)."
    )
    labelled_end: datetime | None = None
    realized: list[RealizedWindow] = Field(
        default_factory=list,
        description="Realized performance of the labelled window, one entry per version "
        "that scored it.",
    )
    decision: Decision
    decided_at: datetime

    @property
    def model_version(self) -> str:
        return self.champion.version

    @property
    def key(self) -> str:
        """``<window start>/v<version>``: what all monitoring state is keyed by."""
        return window_key(self.window_start, self.champion.version)

    @property
    def main_realized(self) -> RealizedWindow | None:
        """The labelled window's realized performance for the version that scored most."""
        return self.realized[0] if self.realized else None

    def realized_lines(self) -> list[str]:
        """'realized accuracy 0.640 on the labels of 2026-08-02 00:00 (400 rows, v1)', ..."""
        lines = []
        for entry in self.realized:
            line = entry.describe(self.metric)
            if entry.reference_performance is not None:
                delta = entry.performance.value(self.metric) - entry.reference_performance
                line += f", {delta:+.3f} vs v{entry.model_version}'s reference"
            if entry.model_version != self.champion.version:
                line += f" (not judged: champion is v{self.champion.version})"
            lines.append(line)
        return lines


def as_utc(moment: datetime | pd.Timestamp | str) -> pd.Timestamp:
    """``moment`` as a UTC timestamp (a naive one is read as UTC)."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def utc_stamp(moment: datetime) -> str:
    """``YYYYmmddTHHMMSSZ`` in UTC: no colons, so it is safe in paths, names and keys."""
    return f"{as_utc(moment):%Y%m%dT%H%M%SZ}"


def window_key(window_start: datetime, model_version: str) -> str:
    return f"{utc_stamp(window_start)}/v{model_version}"


def _estimate(
    dataset: DatasetConfig,
    window: pd.DataFrame,
    drift_reference: DriftReference,
    estimator_reference: EstimatorReference | None,
    estimator: EstimatorConfig | None,
    seed: int,
) -> PerformanceEstimate:
    """The configured estimator's estimate; CBPE, untrusted, without a labelled reference."""
    config = (estimator or EstimatorConfig()).model_copy(update={"seed": seed})
    if estimator_reference is not None:
        return estimate_window(estimator_reference, drift_reference, window, dataset, config)
    probas = window[[f"proba_{c}" for c in dataset.classes]].to_numpy(dtype=float)
    estimate = estimate_performance(probas, dataset.classes, seed=seed)
    if config.method == "cbpe":
        return estimate
    return estimate.model_copy(
        update={
            "trusted": False,
            "trust_reasons": [
                f"the champion has no labelled reference for the {config.method} estimator: "
                "this is CBPE, the model's own confidence, which a covariate shift can fool"
            ],
        }
    )


def assess_window(
    *,
    dataset: DatasetConfig,
    window: pd.DataFrame,
    window_start: datetime,
    window_end: datetime,
    champion: ChampionInfo,
    drift_reference: DriftReference,
    state: PolicyState,
    policy: PolicyConfig,
    drift_config: DriftConfig,
    labelled: pd.DataFrame | None = None,
    labelled_start: datetime | None = None,
    labelled_end: datetime | None = None,
    version_performance: dict[str, float] | None = None,
    estimator_reference: EstimatorReference | None = None,
    estimator: EstimatorConfig | None = None,
    now: datetime | None = None,
    seed: int = 0,
) -> WindowAssessment:
    """Assess one window for the champion.

    Args:
        dataset: the dataset declaration.
        window: prediction-log rows of the window (a label column, if any, is ignored:
            the labels that count are those of ``labelled``).
        window_start, window_end: the window's bounds.
        champion: the judged version.
        drift_reference: the champion's fitted reference.
        state: the policy state before this window.
        policy: the decision policy.
        drift_config: the drift tests.
        labelled: prediction-log rows of the labelled window with the labels that
            arrived joined (NaN where none); None or empty: no labels yet.
        labelled_start, labelled_end: that window's bounds.
        version_performance: each version's reference value of the policy metric (to
            show the realized performance of a version other than the champion).
        estimator_reference: the champion's labelled reference prepared for the
            label-free estimators (``fit_estimator_reference``); None: CBPE on the
            window's probabilities alone, marked as such.
        estimator: which estimator and trust bounds (default ``EstimatorConfig()``).
        now: the decision time (default: now).
        seed: seeds the permutation tests and the estimate's band.

    Raises:
        ValueError: the window is empty.
    """
    if window.empty:
        raise ValueError(f"no scored rows between {window_start} and {window_end}")
    now = now or datetime.now(UTC)
    unlabelled = window.drop(columns=[dataset.label], errors="ignore")
    labels = None
    realized: list[RealizedWindow] = []
    if labelled is not None and not labelled.empty and dataset.label in labelled:
        labels = labelled[dataset.label]
        references = {champion.version: champion.performance, **(version_performance or {})}
        realized = realized_windows(
            labelled,
            dataset.label,
            dataset.classes,
            labelled_start or window_start,
            labelled_end or window_end,
            references,
        )
    drift = compute_drift(drift_reference, unlabelled, drift_config, seed=seed, labels=labels)
    drift = drift.model_copy(update={"window_start": window_start, "window_end": window_end})
    estimate = _estimate(dataset, unlabelled, drift_reference, estimator_reference, estimator, seed)
    judged = next((r for r in realized if r.model_version == champion.version), None)
    if judged is None and realized:
        judged = realized[0]
    decision = decide(
        drift,
        estimate,
        champion.performance,
        state,
        policy,
        now,
        window_start=window_start,
        model_version=champion.version,
        realized=judged,
    )
    return WindowAssessment(
        dataset=dataset.name,
        window_start=window_start,
        window_end=window_end,
        champion=champion,
        n_rows=len(window),
        metric=policy.metric,
        drift=drift,
        estimate=estimate,
        labelled_start=labelled_start,
        labelled_end=labelled_end,
        realized=realized,
        decision=decision,
        decided_at=now,
    )


__all__ = [
    "ChampionInfo",
    "WindowAssessment",
    "as_utc",
    "assess_window",
    "utc_stamp",
    "window_key",
]
