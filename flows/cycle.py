"""One daily cycle: ingest the day's rows, score them, monitor the window."""

from __future__ import annotations

from datetime import datetime

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from features.ingest import IngestResult
from flows.ingest import IngestParams, ingest_flow
from flows.monitor import MonitorOutcome, MonitorParams, monitor_flow
from flows.runtime import resolve_window, window_run_name
from flows.score import ScoreOutcome, ScoreParams, score_flow


class CycleParams(BaseModel):
    """Parameters of one daily cycle."""

    model_config = ConfigDict(frozen=True)

    start: datetime | None = Field(default=None, description="Day start (UTC).")
    end: datetime | None = Field(default=None, description="Day end (UTC); default: now.")
    window_hours: float = Field(default=24, gt=0)
    raw_path: str | None = Field(default=None, description="Raw rows; default: settings.")
    monitor: MonitorParams = Field(default_factory=MonitorParams)


class CycleOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    ingest: IngestResult
    score: ScoreOutcome
    monitor: MonitorOutcome


@flow(name="daily-cycle", flow_run_name=window_run_name("cycle"))
def cycle_flow(params: CycleParams | None = None) -> CycleOutcome:
    """Ingest, score and monitor one window."""
    params = params or CycleParams()
    start, end = resolve_window(params.start, params.end, params.window_hours)
    ingested = ingest_flow(IngestParams(start=start, end=end, raw_path=params.raw_path))
    scored = score_flow(ScoreParams(start=start, end=end))
    monitor = params.monitor.model_copy(update={"start": start, "end": end})
    if monitor.raw_path is None and params.raw_path is not None:
        monitor = monitor.model_copy(update={"raw_path": params.raw_path})  # drift examples
    monitored = monitor_flow(monitor)
    return CycleOutcome(ingest=ingested, score=scored, monitor=monitored)
