"""A real Prefect server on loopback: `prefect deploy --all`, the declared schedules,
guards against known Prefect pitfalls, and a drifted monitor run creating a retrain run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml

from flows.deployments import PREFECT_YAML, declared_deployments, declared_schedules

pytestmark = pytest.mark.integration
REPO = PREFECT_YAML.parent
PREFECT = Path(sys.executable).parent / "prefect"


def test_prefect_yaml_never_switches_schedules_off_with_an_empty_list():
    """prefect#23097: `schedules: []` is ignored by deploy; we use `active: false`."""
    raw = yaml.safe_load(PREFECT_YAML.read_text())
    for deployment in raw["deployments"]:
        schedules = deployment.get("schedules")
        assert schedules, f"{deployment['name']}: empty or missing schedules"
        assert all("active" in s and "timezone" in s for s in schedules), deployment["name"]
    assert "schedules: []" not in PREFECT_YAML.read_text().replace("`schedules: []`", "")


def test_every_deployment_that_writes_shared_files_has_a_concurrency_limit():
    for deployment in declared_deployments():
        limit = deployment.get("concurrency_limit")
        assert limit and limit["limit"] == 1, deployment["name"]
        assert limit["collision_strategy"] == "ENQUEUE", deployment["name"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": url,
        "DO_NOT_TRACK": "1",
    }
    process = subprocess.Popen(
        [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(1)
    else:
        process.kill()
        pytest.fail("Prefect server did not start within 120 s")
    subprocess.run(
        [str(PREFECT), "work-pool", "create", "mmops-process", "--type", "process"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield {"url": url, "env": env}
        # Flush events and logs to this server while it is up: a worker left holding
        # them for a stopped server would hang the next test harness's drain.
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        EventsWorker.drain_all(timeout=60)
        APILogWorker.drain_all(timeout=60)
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
        process.terminate()
        process.wait(timeout=30)


def _deployments():
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        out = {}
        for deployment in client.read_deployments():
            schedules = client.read_deployment_schedules(deployment.id)
            out[deployment.name] = (deployment, schedules)
        return out


def _scheduled_starts(deployment_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
        )
    return [run.expected_start_time for run in runs]


def test_deploy_all_matches_prefect_yaml_and_keeps_paused_schedules_paused(server):
    from prefect.client.orchestration import get_client

    from flows.deployments import deploy_all

    deploy_all(REPO, extra_env=server["env"])
    deployed = _deployments()
    declared = declared_schedules()
    assert set(deployed) == set(declared)
    for name, (deployment, schedules) in deployed.items():
        crons = [f"{s.schedule.cron} {s.schedule.timezone}" for s in schedules]
        assert crons == declared[name], name
        assert all(s.active for s in schedules)
        assert deployment.work_pool_name == "mmops-process"
        spec = next(d for d in declared_deployments() if d["name"] == name)
        assert deployment.parameters == spec["parameters"]
    for name, (deployment, _) in deployed.items():  # every deployment writes shared files
        assert deployment.global_concurrency_limit is not None, name
        assert deployment.global_concurrency_limit.limit == 1, name

    # An operator pauses the monitor schedule; redeploying must not re-activate it
    # (prefect#14973).
    monitor, (schedule,) = deployed["monitor-daily"]
    with get_client(sync_client=True) as client:
        client.update_deployment_schedule(monitor.id, schedule.id, active=False)
    assert deploy_all(REPO, extra_env=server["env"]) == 1
    _, (after,) = _deployments()["monitor-daily"]
    assert after.active is False

    # Frequent redeploys must not create duplicate scheduled runs (prefect#17538).
    deploy_all(REPO, extra_env=server["env"])
    ingest, _ = _deployments()["ingest-hourly"]
    deadline = time.monotonic() + 60
    starts = _scheduled_starts(ingest.id)
    while not starts and time.monotonic() < deadline:  # the scheduler service fills them in
        time.sleep(2)
        starts = _scheduled_starts(ingest.id)
    duplicated = [t for t, n in Counter(starts).items() if n > 1]
    assert not duplicated, f"duplicate scheduled runs at {duplicated}"


def test_a_drifted_monitor_run_creates_a_retrain_flow_run(server, tmp_path, monkeypatch):
    """With a server, a retrain decision creates a run of the train deployment carrying
    the drift evidence; it does not train in-process."""
    from prefect.client.orchestration import get_client

    from flows.deployments import deploy_all
    from flows.runtime import get_runtime
    from tests.integration.pipeline import build_small_pipeline, concept_drift_cycle

    if "train-weekly" not in _deployments():
        deploy_all(REPO, extra_env=server["env"])
    monkeypatch.setenv("MMOPS_DATA_DIR", str(tmp_path))
    runtime = get_runtime()
    history_end, _ = build_small_pipeline(runtime)
    outcome = concept_drift_cycle(
        runtime,
        history_end,
        tmp_path / "production.parquet",
        seed=9,
        first_id=50_000,
        send_email=False,
    ).monitor
    assert outcome.action == "retrain", outcome.reasons
    assert outcome.retrain_flow_run is not None and outcome.retrain_version is None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(outcome.retrain_flow_run)
        deployment = client.read_deployment(run.deployment_id)
    assert deployment.name == "train-weekly"
    assert "drift" in run.tags
    assert run.parameters["params"]["trigger"] == "drift"
    assert run.parameters["params"]["reason"]
