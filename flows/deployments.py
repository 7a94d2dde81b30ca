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


def _schedule_key(deployment: str, schedule) -> tuple[str, str]:
    return deployment, getattr(schedule.schedule, "cron", None) or str(schedule.schedule)


def paused_schedules() -> set[tuple[str, str]]:
    """(deployment name, cron) of every schedule paused on the server."""
    from prefect.client.orchestration import get_client

    paused = set()
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            for schedule in client.read_deployment_schedules(deployment.id):
                if not schedule.active:
                    paused.add(_schedule_key(deployment.name, schedule))
    return paused


def pause_schedules(keys: set[tuple[str, str]]) -> int:
    """Pause the schedules named by ``keys``; returns how many were re-paused."""
    from prefect.client.orchestration import get_client

    count = 0
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            for schedule in client.read_deployment_schedules(deployment.id):
                if schedule.active and _schedule_key(deployment.name, schedule) in keys:
                    client.update_deployment_schedule(deployment.id, schedule.id, active=False)
                    count += 1
    return count


def deploy_all(repo_dir: Path = PREFECT_YAML.parent, extra_env: dict | None = None) -> int:
    """``prefect deploy --all`` that keeps paused schedules paused.

    Redeploying re-activates paused schedules (prefect#14973): a schedule an operator
    paused would silently start running again. The paused set is read before the deploy
    and restored after it.

    Returns:
        The number of schedules that were paused again.

    Raises:
        subprocess.CalledProcessError: the deploy failed (its output is in the error).
    """
    import os
    import subprocess
    import sys

    paused = paused_schedules()
    prefect = Path(sys.executable).parent / "prefect"
    subprocess.run(
        [str(prefect), "--no-prompt", "deploy", "--all"],
        cwd=repo_dir,
        env={**os.environ, **(extra_env or {})},
        check=True,
        capture_output=True,
        text=True,
    )
    return pause_schedules(paused)
