"""The promotion lock against a remote registry: a PostgreSQL advisory lock. It excludes
a second holder, dies with its holder, and makes two concurrent promotions against the
same champion through the MLflow server end with one winner and a history that agrees."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys

import pytest

from tests.integration.prod.conftest import unique
from tests.unit.training.synthetic import FAST_TRAIN as FAST
from tests.unit.training.synthetic import TEST_GATE as GATE
from tests.unit.training.synthetic import synthetic_config, synthetic_frame
from training.evaluate import evaluate_model
from training.registry import (
    CHAMPION,
    alias_history,
    connect,
    current_champion,
    ensure_experiment,
    log_training_run,
    postgres_advisory_lock,
    postgres_promotion_lock,
    promote_if_better,
    register_version,
)
from training.train import train_model

pytestmark = [pytest.mark.integration, pytest.mark.prod]

HOLD = """
import sys, time
from training.registry import postgres_advisory_lock
with postgres_advisory_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture()
def dsn(postgres):
    from flows.profiles import postgres_url

    return postgres_url(postgres, "postgres").replace("postgresql+psycopg://", "postgresql://")


def test_the_advisory_lock_excludes_a_second_holder_and_dies_with_its_holder(dsn):
    key = unique("mmops.test.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, dsn, key],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match=key):
            with postgres_advisory_lock(dsn, key, timeout_s=0.5):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    # The holder was killed: its session ended and the lock with it.
    with postgres_advisory_lock(dsn, key, timeout_s=60):
        pass


def _promote(url: str, dsn: str, name: str, version: str, holdout, ready, start, results):
    client = connect(url)
    ready.put(version)
    start.wait()
    decision = promote_if_better(
        client, name, version, holdout, "reorder", GATE, lock=postgres_promotion_lock(dsn)
    )
    results.put((version, decision.promote))


def test_two_concurrent_promotions_through_the_server_one_wins_history_agrees(
    mlflow_server, pipeline_credentials, dsn
):
    config, frame, holdout = (
        synthetic_config(),
        synthetic_frame(600, seed=0),
        synthetic_frame(400, seed=7),
    )
    client = connect(mlflow_server.url)
    experiment = ensure_experiment(client, unique("lock-training"))
    name = unique("lock-model")
    runs = {}
    for kind, train_config in (
        ("weak", FAST.model_copy(update={"modalities": ["photo"]})),
        ("good", FAST),
    ):
        result = train_model(frame, config, train_config)
        runs[kind] = (result, evaluate_model(result.model, result.splits.test, config.label))
    lock = postgres_promotion_lock(dsn)
    v1 = register_version(
        client, name, log_training_run(client, experiment, *runs["weak"], config), lock=lock
    )
    assert promote_if_better(client, name, v1, holdout, "reorder", GATE, lock=lock).promote
    contenders = [
        register_version(
            client, name, log_training_run(client, experiment, *runs["good"], config), lock=lock
        )
        for _ in range(2)
    ]
    ctx = multiprocessing.get_context("spawn")
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    processes = [
        ctx.Process(
            target=_promote, args=(mlflow_server.url, dsn, name, v, holdout, ready, start, results)
        )
        for v in contenders
    ]
    for process in processes:
        process.start()
    assert sorted(ready.get(timeout=300) for _ in processes) == sorted(contenders)
    start.set()
    outcomes = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0]
    winners = [v for v, promoted in outcomes if promoted]
    assert len(winners) == 1  # identical models: the second is no better than the first
    moves = [(e.version, e.previous) for e in alias_history(client, name) if e.alias == CHAMPION]
    assert moves == [(v1, None), (winners[0], v1)]
    assert current_champion(client, name) == winners[0]
    aliases = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
    assert aliases[CHAMPION] == winners[0]
    assert aliases.get("challenger") != winners[0]  # cleared from the winner
