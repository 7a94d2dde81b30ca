"""A deployed flow run by a real process worker (`prefect worker start`) in the prod
profile behaves like the CLI: it reaches the MLflow server with the pipeline user's basic
auth and mmops' retry settings, set inside the runtime, not by the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.prod.conftest import PIPELINE_PASSWORD, PIPELINE_USER, free_port, unique

pytestmark = [pytest.mark.integration, pytest.mark.prod]
REPO = Path(__file__).resolve().parents[3]
PREFECT = Path(sys.executable).parent / "prefect"
CLEARED = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
)


def test_a_worker_run_flow_gets_prod_credentials_and_retry_settings(
    postgres, databases, mlflow_server, tmp_path, monkeypatch
):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.services import prefect_server_command, start_service, stop_service, wait_ready
    from flows.settings import get_settings
    from training.registry import connect

    api = f"http://127.0.0.1:{free_port()}/api"
    server_settings = get_settings(
        profile="prod",
        data_dir=tmp_path,
        prefect_api_url=api,
        postgres=postgres.model_copy(update={"prefect_database": databases("mmops_t_prefect")}),
    )
    command = prefect_server_command(server_settings)
    server = start_service(command, tmp_path / "prefect-server.log")
    # The worker's environment: the prod settings as MMOPS_ variables, and none of the
    # variables configure_environment would have exported in a CLI process.
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "PREFECT_API_URL": api,
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "MMOPS_PROFILE": "prod",
            "MMOPS_DATA_DIR": str(tmp_path / "data"),
            "MMOPS_MLFLOW_SERVER__URL": mlflow_server.url,
            "MMOPS_MLFLOW_SERVER__USERNAME": PIPELINE_USER,
            "MMOPS_MLFLOW_SERVER__PASSWORD": PIPELINE_PASSWORD,
            "MMOPS_POSTGRES__HOST": postgres.host,
            "MMOPS_POSTGRES__PORT": str(postgres.port),
        }
    )
    for key in CLEARED:
        monkeypatch.delenv(key, raising=False)
    pool, experiment, out = unique("probe_pool"), unique("worker-probe"), tmp_path / "out.json"
    model = unique("worker-probe-model")
    try:
        wait_ready(command.ready_url, timeout_s=180, process=server)
        subprocess.run(
            [str(PREFECT), "work-pool", "create", pool, "--type", "process"],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        with temporary_settings(updates={PREFECT_API_URL: api}):
            from prefect import flow
            from prefect.deployments import run_deployment

            deployment_id = flow.from_source(
                source=str(REPO), entrypoint="tests/integration/prod/worker_flow.py:worker_probe"
            ).deploy(name="probe", work_pool_name=pool, print_next_steps=False)
            run = run_deployment(
                deployment_id,
                parameters={"out": str(out), "experiment": experiment, "model": model},
                timeout=0,
            )
            worker = subprocess.run(
                [str(PREFECT), "worker", "start", "--pool", pool, "--run-once"],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
            )
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run.id).state
        assert state.is_completed(), f"{state}\n{worker.stdout[-3000:]}\n{worker.stderr[-3000:]}"
    finally:
        stop_service(server)

    seen = json.loads(out.read_text())
    assert seen["profile"] == "prod"
    assert seen["user"] == PIPELINE_USER  # credentials exported inside the runtime
    assert seen["http_retries"] == "1"  # mmops retries, MLflow's own retries off
    assert seen["champion"] is None
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", PIPELINE_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PIPELINE_PASSWORD)
    client = connect(mlflow_server.url)
    found = client.get_experiment_by_name(experiment)
    assert found is not None and found.experiment_id == seen["experiment_id"]
    assert client.get_registered_model(model).name == model
