"""Training -> MLflow (SQLite in a temporary folder): runs, registry aliases, gate, rollback."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from features.validation_page import write_batch_page
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
    RegistryUnavailableError,
    RetryConfig,
    alias_history,
    connect,
    current_champion,
    default_artifact_location,
    default_tracking_uri,
    ensure_experiment,
    force_champion,
    load_registered_pyfunc,
    log_training_run,
    promote_if_better,
    register_version,
    rollback_champion,
)
from training.train import train_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mlflow_env(tmp_path_factory):
    """One SQLite registry with two logged runs: a fusion model and a weaker image-only one."""
    data_dir = tmp_path_factory.mktemp("mmops")
    config = synthetic_config()
    frame = synthetic_frame(600, seed=0)
    client = connect(default_tracking_uri(data_dir), RetryConfig(attempts=2))
    experiment = ensure_experiment(client, "synth-training", default_artifact_location(data_dir))
    records = {}
    page = write_batch_page(data_dir / "gx", "synth-training-x", "synth_features", "t", 9, [])
    for kind, train_config in (
        ("good", FAST),
        ("weak", FAST.model_copy(update={"modalities": ["photo"]})),
    ):
        result = train_model(frame, config, train_config)
        evaluation = evaluate_model(result.model, result.splits.test, config.label)
        records[kind] = log_training_run(
            client,
            experiment,
            result,
            evaluation,
            config,
            trigger="scheduled",
            validation_summary="GX: 12/12 expectations passed",
            monitoring_thresholds={"embedding_drift_auc": 0.6},
            code_version="abc123",
            validation_files=[page],
        )
        records[f"{kind}_result"] = result
    holdout = synthetic_frame(400, seed=7)
    return {"client": client, "config": config, "holdout": holdout, "dir": data_dir, **records}


def _register(env, name: str, kind: str) -> str:
    return register_version(env["client"], name, env[kind])


def _relog(env, kind: str):
    """A new run of an already trained model (registration is idempotent per run)."""
    result = env[f"{kind}_result"]
    evaluation = evaluate_model(result.model, result.splits.test, env["config"].label)
    experiment = env["client"].get_run(env[kind].run_id).info.experiment_id
    return log_training_run(env["client"], experiment, result, evaluation, env["config"])


def test_run_has_params_metrics_tags_and_artifacts(mlflow_env):
    client, record = mlflow_env["client"], mlflow_env["good"]
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mmops.trigger"] == "scheduled"
    assert run.data.tags["mlflow.source.git.commit"] == "abc123"
    assert run.data.params["seed"] == "0" and run.data.params["data.feature_service"] == "synth_v1"
    assert run.data.metrics["test_macro_f1"] > 0.7
    assert "test_ece_uncalibrated" in run.data.metrics and "temperature" in run.data.metrics
    root = Path(client.download_artifacts(record.run_id, ""))
    for path in (
        "model_card.md",
        "plots/reliability.png",
        "plots/confusion_matrix.png",
        "manifest/training_manifest.json",
        "evaluation/evaluation.json",
        "validation/validation_summary.txt",
        "validation/synth-training-x.html",
        "reference/reference.parquet",
    ):
        assert (root / path).is_file(), path
    card = (root / "model_card.md").read_text()
    assert "## Intended use" in card and "embedding_drift_auc" in card and "GX: 12/12" in card
    reference = pd.read_parquet(root / "reference/reference.parquet")
    result = mlflow_env["good_result"]
    assert reference["event_timestamp"].min() >= result.splits.validation["event_timestamp"].min()
    assert {"proba_no", "proba_yes", "prediction", "reorder", "review_emb"} <= set(reference)


def test_model_is_a_logged_model_output_of_its_run(mlflow_env):
    """MLflow 3's Models tab lists LoggedModels and a run's Models column its outputs:
    a model saved as plain run artifacts shows in neither."""
    client, record = mlflow_env["client"], mlflow_env["good"]
    run = client.get_run(record.run_id)
    assert record.model_id and record.model_source.endswith(f"{record.model_id}/artifacts")
    assert [o.model_id for o in run.outputs.model_outputs] == [record.model_id]
    logged = client.get_logged_model(record.model_id)
    assert str(logged.status) in {"READY", "LoggedModelStatus.READY"}
    assert logged.source_run_id == record.run_id and logged.name == "model"
    assert {m.key for m in logged.metrics} >= {"test_macro_f1", "test_without_review_macro_f1"}
    listed = client.search_logged_models([run.info.experiment_id])
    assert record.model_id in {m.model_id for m in listed}
    version = register_version(client, "logged-model", record)
    linked = json.loads(client.get_logged_model(record.model_id).tags["mlflow.modelVersions"])
    assert linked == [{"name": "logged-model", "version": int(version)}]
    assert register_version(client, "logged-model", record) == version  # linked once
    assert (
        len(json.loads(client.get_logged_model(record.model_id).tags["mlflow.modelVersions"])) == 1
    )


def test_runs_and_experiment_carry_descriptions_and_warnings(mlflow_env):
    client = mlflow_env["client"]
    good = client.get_run(mlflow_env["good"].run_id).data.tags["mlflow.note.content"]
    assert good.startswith("**Scheduled training**") and "| majority baseline |" in good
    assert "Warning" not in good and "| without photo |" in good
    experiment = ensure_experiment(client, "synth-training", description="Training runs of synth.")
    tags = client.get_experiment(experiment).tags
    assert tags["mlflow.note.content"] == "Training runs of synth."
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # not the GenAI views


def test_pyfunc_loads_and_predicts_probabilities_summing_to_one(mlflow_env):
    client = mlflow_env["client"]
    version = _register(mlflow_env, "pyfunc-model", "good")
    assert client.get_model_version_by_alias("pyfunc-model", CHALLENGER).version == int(version)
    assert "## Metrics" in client.get_model_version("pyfunc-model", version).description
    model = load_registered_pyfunc(client, "pyfunc-model", CHALLENGER)
    rows = mlflow_env["holdout"].drop(columns=["reorder"]).head(50).copy()
    rows["review_emb"] = [v.tolist() for v in rows["review_emb"]]  # lists work as well
    proba = model.predict(rows)
    assert list(proba.columns) == ["proba_no", "proba_yes"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    direct = mlflow_env["good_result"].model.predict_proba(mlflow_env["holdout"].head(50))
    np.testing.assert_allclose(proba.to_numpy(), direct, atol=1e-6)


def test_worse_challenger_never_promoted(mlflow_env):
    client, holdout, name = mlflow_env["client"], mlflow_env["holdout"], "worse-model"
    first = _register(mlflow_env, name, "good")
    assert promote_if_better(client, name, first, holdout, "reorder", GATE).promote
    weak = _register(mlflow_env, name, "weak")
    decision = promote_if_better(client, name, weak, holdout, "reorder", GATE)
    assert not decision.promote and decision.against == "champion"
    assert current_champion(client, name) == first
    tags = client.get_model_version(name, weak).tags
    assert tags["mmops.gate.decision"] == "reject" and tags["mmops.gate.against"] == f"v{first}"


def test_a_forced_promotion_needs_a_reason_and_is_recorded(mlflow_env):
    client, holdout, name = mlflow_env["client"], mlflow_env["holdout"], "forced-model"
    first = _register(mlflow_env, name, "good")
    assert promote_if_better(client, name, first, holdout, "reorder", GATE).promote
    weak = _register(mlflow_env, name, "weak")
    decision = promote_if_better(client, name, weak, holdout, "reorder", GATE)
    assert not decision.promote
    with pytest.raises(ValueError, match="reason"):
        force_champion(client, name, weak, "  ")
    event = force_champion(client, name, weak, "ticket 42: image-only model", decision.reason)
    assert current_champion(client, name) == weak
    last = alias_history(client, name)[-1]
    assert (last.action, last.version, last.previous) == ("force", weak, first)
    assert "ticket 42" in last.reason and "gate said: rejected" in last.reason
    assert event == last
    assert rollback_champion(client, name, reason="undo").version == first


def test_alias_history_and_rollback(mlflow_env):
    client, holdout, name = mlflow_env["client"], mlflow_env["holdout"], "history-model"
    v1 = _register(mlflow_env, name, "weak")
    assert promote_if_better(client, name, v1, holdout, "reorder", GATE).promote
    v2 = _register(mlflow_env, name, "good")
    assert promote_if_better(client, name, v2, holdout, "reorder", GATE).promote
    assert current_champion(client, name) == v2
    history = alias_history(client, name)
    assert [(e.alias, e.action, e.version, e.previous) for e in history] == [
        (CHALLENGER, "assign", v1, None),
        (CHAMPION, "promote", v1, None),
        (CHALLENGER, "assign", v2, None),  # challenger was cleared when v1 was promoted
        (CHAMPION, "promote", v2, v1),
    ]
    aliases = client.get_registered_model(name).aliases
    assert {k: str(v) for k, v in aliases.items()} == {CHAMPION: v2}
    assert history[-1].metrics["holdout_macro_f1"] > history[-1].metrics["holdout_reference"]
    assert "| champion | promote | v2 | v1 |" in client.get_registered_model(name).description
    run_id = client.get_model_version(name, v2).run_id
    table = pd.read_csv(client.download_artifacts(run_id, "registry/alias_history.csv"))
    assert list(table["action"]) == ["assign", "promote", "assign", "promote"]
    assert list(table["version"]) == [f"v{v1}", f"v{v1}", f"v{v2}", f"v{v2}"]

    event = rollback_champion(client, name, reason="bad live metrics")
    assert (event.action, event.version, event.previous) == ("rollback", v1, v2)
    assert current_champion(client, name) == v1
    assert alias_history(client, name)[-1].reason == "bad live metrics"
    assert "mmops.champion.rollback_at" in client.get_model_version(name, v1).tags
    with pytest.raises(LookupError):
        rollback_champion(client, name)
    assert current_champion(client, name) == v1


def test_concurrent_promotions_make_exactly_one_champion(mlflow_env):
    client, holdout, name = mlflow_env["client"], mlflow_env["holdout"], "race-model"
    versions = [register_version(client, name, _relog(mlflow_env, "good")) for _ in range(2)]
    assert len(set(versions)) == 2
    barrier = threading.Barrier(2)
    decisions, errors = {}, []

    def promote(version: str) -> None:
        try:
            barrier.wait()
            decisions[version] = promote_if_better(client, name, version, holdout, "reorder", GATE)
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    promoted = [v for v, d in decisions.items() if d.promote]
    assert len(promoted) == 1  # identical models: the second is not better than the first
    assert current_champion(client, name) == promoted[0]
    champion_moves = [e for e in alias_history(client, name) if e.alias == CHAMPION]
    assert [(e.version, e.previous) for e in champion_moves] == [(promoted[0], None)]
    loser = next(d for v, d in decisions.items() if not d.promote)
    assert loser.against == "champion"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_is_retried_then_fails_cleanly(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError, match="after 3 attempts"):
        connect(f"http://127.0.0.1:{_closed_port()}", RetryConfig(attempts=3, initial_delay_s=0.05))
    assert time.monotonic() - started < 30


class _AliasFailsClient:
    """A client whose connection drops when setting an alias."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def set_registered_model_alias(self, *args, **kwargs):
        raise MlflowException("Connection refused (simulated)")


def test_failure_mid_registration_leaves_no_version_holding_an_alias(mlflow_env):
    client, name = mlflow_env["client"], "half-model"
    with pytest.raises(RegistryUnavailableError):
        register_version(
            _AliasFailsClient(client),
            name,
            mlflow_env["good"],
            retry=RetryConfig(attempts=2, initial_delay_s=0),
        )
    assert client.search_model_versions(f"name='{name}'") == []
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, CHALLENGER)


@pytest.fixture(scope="session")
def demo_frame(tmp_path_factory):
    """1,500 real demo rows drawn from 300 reviews and 600 photos (few distinct items to
    embed), embedded by the real encoders (cache in a temp dir)."""
    from features.demo_data import DemoSources, build_demo_dataset, demo_dataset_config
    from features.embedding import Encoders, embed_frame

    config = demo_dataset_config()
    sources = DemoSources.load().subset(300, 600, seed=0)
    raw, _ = build_demo_dataset(sources, n_rows=1500, days=30, seed=0)
    cache = tmp_path_factory.mktemp("emb-cache")
    frame = embed_frame(raw, config, Encoders.load(config), cache_dir=cache)
    for column in config.numeric_columns:  # Feast serves numeric features as floats
        frame[column] = frame[column].astype(float)
    return config, frame


@pytest.mark.slow
def test_real_demo_rows_train_and_score_through_pyfunc(demo_frame, tmp_path):
    from training.pyfunc import load_pyfunc, save_pyfunc

    config, frame = demo_frame
    result = train_model(frame, config, FAST.model_copy(update={"epochs": 20}))
    assert "warehouse_load" not in result.model.spec.input_columns
    assert [e.dim for e in result.model.spec.embeddings] == [384, 128]
    evaluation = evaluate_model(result.model, result.splits.test, config.label)
    # 225 test rows: assert the model ranks well above chance, not a tuned F1.
    assert evaluation.overall.roc_auc > 0.65
    assert evaluation.overall.macro_f1 > evaluation.baseline.macro_f1 + 0.1
    assert evaluation.overall.accuracy >= evaluation.baseline.accuracy
    model = load_pyfunc(save_pyfunc(result.model, tmp_path / "model", result.splits.test))
    proba = model.predict(result.splits.test.drop(columns=[config.label]))
    assert list(proba.columns) == ["proba_no", "proba_yes"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)


def test_approval_keeps_a_passing_version_challenger_and_the_verdict_opens_its_description(
    mlflow_env,
):
    """Issue 12/14: with ``move=False`` (a drift retrain awaiting approval) the gate runs
    on the recent and golden holdouts and is recorded, the alias stays; the description
    opens with the verdict table, replaced (not stacked) when the gate runs again."""
    client, holdout, name = mlflow_env["client"], mlflow_env["holdout"], "approval-model"
    golden = synthetic_frame(400, seed=9)
    weak = _register(mlflow_env, name, "weak")
    assert promote_if_better(client, name, weak, holdout, "reorder", GATE, golden=golden).promote
    good = _register(mlflow_env, name, "good")
    waiting = promote_if_better(
        client, name, good, holdout, "reorder", GATE, golden=golden, move=False
    )
    assert waiting.promote
    assert {c.holdout for c in waiting.comparisons} == {"recent", "golden"}
    assert current_champion(client, name) == weak
    version = client.get_model_version(name, good)
    assert version.tags["mmops.gate.decision"] == "awaiting_approval"
    assert version.description.startswith("<!-- gate verdict -->\n**Gate verdict: PROMOTE**")
    assert (
        "| golden | overall |" in version.description and "paired bootstrap" in version.description
    )
    assert "## Metrics" in version.description  # the model card follows the verdict
    approved = promote_if_better(client, name, good, holdout, "reorder", GATE, golden=golden)
    assert approved.promote and current_champion(client, name) == good
    description = client.get_model_version(name, good).description
    assert description.count("<!-- gate verdict -->") == 1
