"""A training process killed with SIGKILL and run again: no duplicate champion and no
half-registered version left holding an alias."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.prod.conftest import unique
from training.registry import CHAMPION, LINEAGE_TAG, alias_history, connect, current_champion

pytestmark = [pytest.mark.integration, pytest.mark.prod]
REPO = Path(__file__).resolve().parents[3]


def _job(server_url: str, experiment: str, name: str, hang_at: str, marker: Path):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.prod.train_job",
            "--tracking-uri",
            server_url,
            "--experiment",
            experiment,
            "--name",
            name,
            "--hang-at",
            hang_at,
            "--marker",
            str(marker),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _kill_when_marked(process: subprocess.Popen, marker: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"job ended before the kill point:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("job never reached the kill point")
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def test_killed_jobs_rerun_leave_one_consistent_champion(
    mlflow_server, pipeline_credentials, tmp_path
):
    url, name, experiment = mlflow_server.url, unique("killed-model"), unique("killed")

    # Killed mid-training: nothing reaches the registry.
    job = _job(url, experiment, name, "fit", tmp_path / "fit.marker")
    _kill_when_marked(job, tmp_path / "fit.marker")
    client = connect(url)
    assert client.search_model_versions(f"name='{name}'") == []

    # Killed mid-registration: the version holds challenger while still 'registering'.
    job = _job(url, experiment, name, "registration", tmp_path / "registration.marker")
    _kill_when_marked(job, tmp_path / "registration.marker")
    (orphan,) = client.search_model_versions(f"name='{name}'")
    assert orphan.tags["mmops.state"] == "registering"
    assert current_champion(client, name) is None

    # The retry runs to the end.
    job = _job(url, experiment, name, "none", tmp_path / "none.marker")
    out, _ = job.communicate(timeout=300)
    assert job.returncode == 0, out
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{name}'")}
    (new,) = set(versions) - {str(orphan.version)}
    assert current_champion(client, name) == new
    assert versions[new].tags["mmops.state"] == "registered"
    # The killed version holds no alias and never became champion.
    assert client.get_model_version(name, str(orphan.version)).aliases == []
    assert [
        (e.version, e.previous) for e in alias_history(client, name) if e.alias == CHAMPION
    ] == [(new, None)]
    assert client.get_registered_model(name).tags[LINEAGE_TAG] == f'["{new}"]'
