"""Registry faults on a real MLflow (SQLite in a temporary folder): a registration retried
after its response was lost, an MLflow drop between the alias move and the history write,
two promotions in two processes against the same champion, a crash-orphaned version.

Connection drops are injected by a client wrapper that fails one named call the way a
dropped connection does (after or before the server did the work); everything else is
the real MLflow client and store.
"""

from __future__ import annotations

import multiprocessing

import pytest
from mlflow.exceptions import MlflowException

from tests.unit.training.synthetic import FAST_TRAIN as FAST
from tests.unit.training.synthetic import TEST_GATE as GATE
from tests.unit.training.synthetic import synthetic_config, synthetic_frame
from training.evaluate import evaluate_model
from training.registry import (
    CHALLENGER,
    CHAMPION,
    HISTORY_TAG,
    LINEAGE_TAG,
    PENDING_TAG,
    RegistryUnavailableError,
    RetryConfig,
    alias_history,
    connect,
    current_champion,
    default_artifact_location,
    default_tracking_uri,
    ensure_experiment,
    log_training_run,
    pending_move,
    promote_if_better,
    register_version,
    sweep_orphaned_versions,
)
from training.train import train_model

pytestmark = pytest.mark.integration
NO_WAIT = RetryConfig(attempts=2, initial_delay_s=0.0)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("mmops")
    config = synthetic_config()
    frame = synthetic_frame(600, seed=0)
    uri = default_tracking_uri(data_dir)
    client = connect(uri, RetryConfig(attempts=2))
    experiment = ensure_experiment(client, "faults", default_artifact_location(data_dir))
    trained = {}
    for kind, train_config in (
        ("good", FAST),
        ("weak", FAST.model_copy(update={"modalities": ["photo"]})),
    ):
        result = train_model(frame, config, train_config)
        trained[kind] = (result, evaluate_model(result.model, result.splits.test, config.label))

    def new_run(kind: str):
        result, evaluation = trained[kind]
        return log_training_run(client, experiment, result, evaluation, config)

    return {
        "client": client,
        "uri": uri,
        "new_run": new_run,
        "holdout": synthetic_frame(400, seed=7),
        "dir": data_dir,
    }


class _Drop:
    """A client whose connection drops once on ``method`` (matching ``when``): after the
    server did the work (``after=True``, the response is lost) or before."""

    def __init__(self, client, method: str, after: bool, when=lambda *a: True, times: int = 1):
        self._client, self._method, self._after = client, method, after
        self._when, self.left = when, times

    def __getattr__(self, name):
        real = getattr(self._client, name)
        if name != self._method:
            return real

        def call(*args, **kwargs):
            if self.left > 0 and self._when(*args):
                self.left -= 1
                if self._after:
                    real(*args, **kwargs)
                raise MlflowException("Connection reset by peer (simulated drop)")
            return real(*args, **kwargs)

        return call


def test_a_registration_retried_after_a_lost_response_creates_no_duplicate(env):
    client, name = env["client"], "dup-model"
    record = env["new_run"]("good")
    dropping = _Drop(client, "create_model_version", after=True)
    version = register_version(dropping, name, record, retry=NO_WAIT)
    assert dropping.left == 0  # the drop happened
    # A task retry after success: the same run again.
    assert register_version(client, name, record, retry=NO_WAIT) == version
    versions = client.search_model_versions(f"name='{name}'")
    assert [str(v.version) for v in versions] == [version]
    assert versions[0].tags["mmops.state"] == "registered"
    assigned = [e for e in alias_history(client, name) if e.alias == CHALLENGER]
    assert [(e.action, e.version) for e in assigned] == [("assign", version)]
    # A late retry, after a newer version took challenger, leaves challenger where it is.
    newer = register_version(client, name, env["new_run"]("good"), retry=NO_WAIT)
    assert register_version(client, name, record, retry=NO_WAIT) == version
    assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == newer
    assert len(client.search_model_versions(f"name='{name}'")) == 2


def test_a_drop_between_alias_move_and_history_is_completed_by_the_retry(env):
    client, holdout, name = env["client"], env["holdout"], "drop-model"
    v1 = register_version(client, name, env["new_run"]("weak"))
    assert promote_if_better(client, name, v1, holdout, "reorder", GATE).promote
    v2 = register_version(client, name, env["new_run"]("good"))
    # MLflow goes away right after the champion alias moved: the history write fails
    # beyond the retry budget and the task fails.
    dropping = _Drop(
        client,
        "set_registered_model_tag",
        after=False,
        when=lambda n, key, *a: key == HISTORY_TAG,
        times=2,
    )
    with pytest.raises(RegistryUnavailableError):
        promote_if_better(dropping, name, v2, holdout, "reorder", GATE, retry=NO_WAIT)
    assert current_champion(client, name) == v2  # the alias moved ...
    assert [e.version for e in alias_history(client, name) if e.alias == CHAMPION] == [v1]
    assert pending_move(client, name).version == v2  # ... and the intent says so

    # The task retry completes the move and reports it as the promotion it is.
    decision = promote_if_better(client, name, v2, holdout, "reorder", GATE)
    assert decision.promote, decision.reason
    moves = [(e.version, e.previous) for e in alias_history(client, name) if e.alias == CHAMPION]
    assert moves == [(v1, None), (v2, v1)]
    model = client.get_registered_model(name)
    assert PENDING_TAG not in model.tags
    assert model.tags[LINEAGE_TAG] == f'["{v1}", "{v2}"]'
    assert {k: str(v) for k, v in model.aliases.items()} == {CHAMPION: v2}  # challenger cleared


def _promote_in_process(uri: str, name: str, version: str, holdout, start, results) -> None:
    client = connect(uri)
    results.put("ready")
    start.wait()
    decision = promote_if_better(client, name, version, holdout, "reorder", GATE)
    results.put((version, decision.promote, decision.against))


def test_two_concurrent_promotions_against_one_champion_one_wins_history_agrees(env):
    client, holdout, name = env["client"], env["holdout"], "race2-model"
    v1 = register_version(client, name, env["new_run"]("weak"))
    assert promote_if_better(client, name, v1, holdout, "reorder", GATE).promote
    contenders = [register_version(client, name, env["new_run"]("good")) for _ in range(2)]
    # spawn: a forked child of a process that already ran torch can deadlock in OpenMP.
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    processes = [
        ctx.Process(target=_promote_in_process, args=(env["uri"], name, v, holdout, start, results))
        for v in contenders
    ]
    for process in processes:
        process.start()
    assert [results.get(timeout=300) for _ in processes] == ["ready", "ready"]
    start.set()
    outcomes = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0]
    winners = [v for v, promoted, _ in outcomes if promoted]
    assert len(winners) == 1  # identical models: the second is no better than the first
    moves = [(e.version, e.previous) for e in alias_history(client, name) if e.alias == CHAMPION]
    assert moves == [(v1, None), (winners[0], v1)]
    assert current_champion(client, name) == moves[-1][0]


def test_the_sweep_takes_challenger_off_a_version_orphaned_by_a_crash(env):
    client, name = env["client"], "orphan-model"
    record = env["new_run"]("good")
    # A crash mid-registration: the version holds challenger, its state still registering.
    dropping = _Drop(
        client,
        "set_model_version_tag",
        after=False,
        when=lambda n, v, key, value: key == "mmops.state" and value == "registered",
        times=99,
    )
    dropping_delete = _Drop(dropping, "delete_model_version", after=False, times=99)
    with pytest.raises(RegistryUnavailableError):
        register_version(dropping_delete, name, record, retry=NO_WAIT)
    (orphan,) = client.search_model_versions(f"name='{name}'")
    assert orphan.tags["mmops.state"] != "registered"
    assert sweep_orphaned_versions(client, name, older_than_s=3600) == []  # may be in flight
    assert sweep_orphaned_versions(client, name, older_than_s=0) == [str(orphan.version)]
    after = client.get_model_version(name, str(orphan.version))
    assert after.tags["mmops.state"] == "orphaned" and after.aliases == []
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, CHALLENGER)
