"""The ``monitor-backfill`` flow: many past windows of the prediction log assessed in
parallel against the champion, on the configured task runner (Dask on a cluster).

Each window is assessed on its own, from a fresh policy state: persistence counts and
cooldowns chain windows in time order, so they belong to the daily monitor, not to a
parallel backfill. Drift, the performance estimate and the realized performance of a
window do not depend on other windows, ``settings.seed`` fixes every random choice and
each window is decided as of its end, so both runners (and reruns) give the same
assessments. Nothing is written, sent or retrained.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from features.errors import InvalidConfigError
from features.schema import DatasetConfig
from flows.monitor import load_champion_reference, load_log
from flows.runtime import get_runtime
from flows.task_runners import map_on_runner
from monitoring.assessment import ChampionInfo, WindowAssessment, assess_window
from monitoring.drift import DriftConfig, DriftReference
from monitoring.policy import PolicyConfig, PolicyState


class BackfillParams(BaseModel):
    """Parameters of one monitoring backfill."""

    model_config = ConfigDict(frozen=True)

    start: datetime = Field(description="Start of the first window (UTC).")
    end: datetime = Field(description="End of the last window (UTC, exclusive).")
    window_hours: float = Field(default=24, gt=0, description="Length of each window.")
    labels: bool = Field(default=True, description="Measure realized performance too.")
    drift: DriftConfig = Field(default_factory=DriftConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)


def backfill_windows(
    start: datetime, end: datetime, hours: float
) -> list[tuple[datetime, datetime]]:
    """Consecutive ``hours``-long windows from ``start``; the last one ends at ``end``."""
    if start >= end:
        raise InvalidConfigError(f"backfill start {start} is not before its end {end}")
    step, out, at = timedelta(hours=hours), [], start
    while at < end:
        out.append((at, min(at + step, end)))
        at += step
    return out


@task(cache_policy=NO_CACHE)
def assess_past_window(
    dataset: DatasetConfig,
    window: pd.DataFrame,
    bounds: tuple[datetime, datetime],
    champion: ChampionInfo,
    drift_reference: DriftReference,
    policy: PolicyConfig,
    drift: DriftConfig,
    labelled: bool,
    seed: int,
) -> WindowAssessment:
    start, end = bounds
    return assess_window(
        dataset=dataset,
        window=window,
        window_start=start,
        window_end=end,
        champion=champion,
        drift_reference=drift_reference,
        state=PolicyState(),
        policy=policy,
        drift_config=drift,
        labelled=window if labelled else None,
        labelled_start=start if labelled else None,
        labelled_end=end if labelled else None,
        now=end,  # as decided when the window closed: the same on every runner and rerun
        seed=seed,
    )


@flow(name="monitor-backfill")
def monitor_backfill_flow(params: BackfillParams) -> list[WindowAssessment]:
    """Assess every window of ``[params.start, params.end)`` that has scored rows, in
    parallel on the configured task runner; windows without rows are skipped."""
    runtime = get_runtime()
    champion = load_champion_reference(runtime, params.policy.metric)
    frames = []
    for bounds in backfill_windows(params.start, params.end, params.window_hours):
        frame = load_log(runtime, *bounds, labels=params.labels)
        if not frame.empty:
            frames.append((bounds, frame))
    calls = [
        {
            "dataset": runtime.config,
            "window": frame,
            "bounds": bounds,
            "champion": champion.info,
            "drift_reference": champion.drift_reference,
            "policy": params.policy,
            "drift": params.drift,
            "labelled": params.labels,
            "seed": runtime.settings.seed,
        }
        for bounds, frame in frames
    ]
    return map_on_runner(runtime.settings, "assess-windows", assess_past_window, calls)
