"""The ``monitor-backfill`` flow: many past windows of the prediction log assessed in
parallel against the champion, on the configured task runner (Dask on a cluster).

Each window is assessed on its own, from a fresh policy state: persistence counts and
cooldowns chain windows in time order, so they belong to the daily monitor, not to a
parallel backfill. Drift, the performance estimate and the realized performance of a
window do not depend on other windows, ``settings.seed`` fixes every random choice and
each window is decided as of its end, so both runners (and reruns) give the same
assessments. Nothing is written, sent or retrained.

Only time ranges and paths travel to the workers: each task reads its window from the
prediction log and the champion's drift reference from the data directory (shared by
every worker), so the flow process neither holds nor pickles the rows of the backfill.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from features.errors import InvalidConfigError
from flows.monitor import champion_reference_dir, load_champion_reference, load_log
from flows.runtime import get_runtime
from flows.settings import Settings
from flows.task_runners import load_drift_reference, map_on_runner
from monitoring.assessment import ChampionInfo, WindowAssessment, assess_window
from monitoring.drift import DriftConfig
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
    settings: Settings,
    bounds: tuple[datetime, datetime],
    champion: ChampionInfo,
    drift_reference_path: str,
    policy: PolicyConfig,
    drift: DriftConfig,
    labelled: bool,
    seed: int,
) -> WindowAssessment | None:
    """Assess one window, read here from the shared prediction log; None when it has
    no scored rows."""
    runtime = get_runtime(settings)
    start, end = bounds
    window = load_log(runtime, start, end, labels=labelled)
    if window.empty:
        return None
    return assess_window(
        dataset=runtime.config,
        window=window,
        window_start=start,
        window_end=end,
        champion=champion,
        drift_reference=load_drift_reference(drift_reference_path),
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
    reference = champion_reference_dir(runtime, champion.info.name, champion.version)
    calls = [
        {
            "settings": runtime.settings,
            "bounds": bounds,
            "champion": champion.info,
            "drift_reference_path": str(reference / "drift_reference.npz"),
            "policy": params.policy,
            "drift": params.drift,
            "labelled": params.labels,
            "seed": runtime.settings.seed,
        }
        for bounds in backfill_windows(params.start, params.end, params.window_hours)
    ]
    results = map_on_runner(runtime.settings, "assess-windows", assess_past_window, calls)
    return [r for r in results if r is not None]
