"""What prefect.yaml declares, and what a Prefect server has scheduled."""

from __future__ import annotations

from pathlib import Path

import yaml

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"


def declared_deployments(path: Path = PREFECT_YAML) -> list[dict]:
    """The deployments of prefect.yaml, as written."""
    with Path(path).open(encoding="utf-8") as handle:
        return list(yaml.safe_load(handle).get("deployments") or [])


def declared_schedules(path: Path = PREFECT_YAML) -> dict[str, list[str]]:
    """``deployment name -> ["<cron> <timezone>", ...]`` as declared."""
    return {
        d["name"]: [f"{s['cron']} {s.get('timezone', 'UTC')}" for s in d.get("schedules") or []]
        for d in declared_deployments(path)
    }


def next_scheduled_runs(limit: int = 10) -> list[dict[str, str]]:
    """The next scheduled flow runs on the configured Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=limit,
        )
        names = {}
        for run in runs:
            if run.deployment_id not in names and run.deployment_id is not None:
                names[run.deployment_id] = client.read_deployment(run.deployment_id).name
        return [
            {
                "deployment": names.get(run.deployment_id, "?"),
                "expected_start": str(run.expected_start_time),
                "name": run.name,
            }
            for run in runs
        ]
