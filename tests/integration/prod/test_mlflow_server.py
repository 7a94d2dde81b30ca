"""MLflow in the prod profile: a tracking server with basic auth on PostgreSQL, the
registry flow through it, and a server restart in the middle of a promotion."""

from __future__ import annotations

import base64
import logging
import urllib.error
import urllib.request

import pytest

from tests.integration.prod.conftest import ADMIN_PASSWORD, unique
from tests.unit.training.synthetic import (
    FAST_TRAIN as FAST,
)
from tests.unit.training.synthetic import (
    TEST_GATE as GATE,
)
from tests.unit.training.synthetic import (
    synthetic_config,
    synthetic_frame,
)
from training.evaluate import evaluate_model
from training.registry import (
    CHALLENGER,
    CHAMPION,
    LINEAGE_TAG,
    RetryConfig,
    alias_history,
    connect,
    current_champion,
    ensure_experiment,
    log_training_run,
    promote_if_better,
    register_version,
)
from training.train import train_model

pytestmark = [pytest.mark.integration, pytest.mark.prod]

# Outlasts a server restart (10 s on an idle 2-core machine, over 20 s on a busy one):
# up to 0.5+1+2+4+5*9 = 52.5 s of waits.
RESTART_RETRY = RetryConfig(attempts=14, initial_delay_s=0.5, backoff=2.0, max_delay_s=5.0)


def _status(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_requests_without_valid_credentials_are_refused(mlflow_server):
    url = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(url) == 401
    assert _status(url, "admin", "wrong-password-123") == 401
    assert _status(url, "admin", ADMIN_PASSWORD) == 200


@pytest.fixture(scope="module")
def trained():
    """A fusion model and a weaker image-only one, trained once for the module."""
    config = synthetic_config()
    frame = synthetic_frame(600, seed=0)
    models = {}
    for kind, train_config in (
        ("good", FAST),
        ("weak", FAST.model_copy(update={"modalities": ["photo"]})),
    ):
        result = train_model(frame, config, train_config)
        models[kind] = (result, evaluate_model(result.model, result.splits.test, config.label))
    return config, models, synthetic_frame(400, seed=7)


class _RestartBeforeChampionMove:
    """A client that restarts the tracking server just before the champion alias moves."""

    def __init__(self, client, server):
        self._client, self._server, self.restarts = client, server, 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    def set_registered_model_alias(self, name, alias, version):
        if alias == CHAMPION and self.restarts == 0:
            self.restarts += 1
            self._server.stop()
            import threading

            threading.Thread(target=self._server.start, daemon=True).start()
        return self._client.set_registered_model_alias(name, alias, version)


def test_log_register_promote_through_a_server_restart(
    mlflow_server, pipeline_credentials, trained, caplog
):
    config, models, holdout = trained
    client = connect(mlflow_server.url, RetryConfig(attempts=2))
    experiment = ensure_experiment(client, unique("synth-training"))  # server-side artifacts
    name = unique("synth-classifier")
    records = {
        kind: log_training_run(client, experiment, result, evaluation, config, trigger="scheduled")
        for kind, (result, evaluation) in models.items()
    }
    run = client.get_run(records["good"].run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")

    v1 = register_version(client, name, records["weak"])
    assert promote_if_better(client, name, v1, holdout, config.label, GATE).promote
    v2 = register_version(client, name, records["good"])
    assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == v2

    restarting = _RestartBeforeChampionMove(client, mlflow_server)
    with caplog.at_level(logging.WARNING, logger="training.registry"):
        decision = promote_if_better(
            restarting, name, v2, holdout, config.label, GATE, retry=RESTART_RETRY
        )
    assert restarting.restarts == 1
    assert any("set champion alias failed" in r.getMessage() for r in caplog.records)
    assert decision.promote

    # Read back through a fresh client: the champion moved once, completely.
    fresh = connect(mlflow_server.url)
    assert current_champion(fresh, name) == v2
    champion_moves = [
        (e.version, e.previous) for e in alias_history(fresh, name) if e.alias == CHAMPION
    ]
    assert champion_moves == [(v1, None), (v2, v1)]
    assert fresh.get_registered_model(name).tags[LINEAGE_TAG] == f'["{v1}", "{v2}"]'
    tags = fresh.get_model_version(name, v2).tags
    assert tags["mmops.gate.decision"] == "promote" and tags["mmops.state"] == "registered"
    assert [a for a in fresh.get_model_version(name, v1).aliases] == []
