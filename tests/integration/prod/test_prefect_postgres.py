"""`prefect server start` on PostgreSQL: a flow run against it lands in the database."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.prod.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.prod]

FLOW = """
from prefect import flow

@flow(name="mmops-pg-probe")
def probe() -> int:
    return 42

assert probe() == 42
"""


def test_prefect_server_on_postgres_records_flow_runs(postgres, databases, tmp_path):
    import psycopg

    from flows.profiles import postgres_url
    from flows.services import prefect_server_command, start_service, stop_service, wait_ready
    from flows.settings import get_settings

    database = databases("mmops_t_prefect")
    api = f"http://127.0.0.1:{free_port()}/api"
    settings = get_settings(
        profile="prod",
        data_dir=tmp_path,
        prefect_api_url=api,
        postgres=postgres.model_copy(update={"prefect_database": database}),
    )
    command = prefect_server_command(settings)
    assert command.env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    process = start_service(command, tmp_path / "prefect-server.log")
    try:
        wait_ready(command.ready_url, timeout_s=180, process=process)
        run = subprocess.run(
            [sys.executable, "-c", FLOW],
            env={
                "PATH": "/usr/bin:/bin",
                "PREFECT_API_URL": api,
                "PREFECT_HOME": str(tmp_path),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
            },
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert run.returncode == 0, run.stderr[-2000:]
    finally:
        stop_service(process)
    url = postgres_url(settings.postgres, database, "psycopg").replace(
        "postgresql+psycopg", "postgresql"
    )
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT fr.state_type FROM flow_run fr JOIN flow f ON f.id = fr.flow_id "
            "WHERE f.name = 'mmops-pg-probe'"
        ).fetchall()
    assert [r[0] for r in rows] == ["COMPLETED"]
