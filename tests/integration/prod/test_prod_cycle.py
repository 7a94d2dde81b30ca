"""The whole cycle on the prod profile's real services: Feast with its registry in
PostgreSQL and its online store on Redis, MLflow behind its tracking server (basic auth,
PostgreSQL backend): ingest, train, register, score, monitor, drift-triggered retrain."""

from __future__ import annotations

from datetime import timedelta

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.prod]


def test_whole_cycle_on_real_services(
    postgres,
    databases,
    redis_instance,
    mlflow_server,
    pipeline_credentials,
    tmp_path,
    monkeypatch,
):
    from prefect.testing.utilities import prefect_test_harness

    from features.store import get_online_frame, read_entities
    from flows.runtime import get_runtime
    from flows.train import registered_model_name
    from tests.integration.pipeline import build_small_pipeline, concept_drift_cycle
    from training.registry import alias_history, connect, current_champion

    server = mlflow_server.settings.mlflow_server
    env = {
        "MMOPS_PROFILE": "prod",
        "MMOPS_DATA_DIR": str(tmp_path),
        "MMOPS_POSTGRES__HOST": postgres.host,
        "MMOPS_POSTGRES__PORT": str(postgres.port),
        "MMOPS_POSTGRES__USER": postgres.user,
        "MMOPS_POSTGRES__FEAST_DATABASE": databases("mmops_t_feast"),
        # the promotion lock is an advisory lock in the MLflow backend database
        "MMOPS_POSTGRES__MLFLOW_DATABASE": mlflow_server.settings.postgres.mlflow_database,
        "MMOPS_REDIS__PORT": str(redis_instance.port),
        "MMOPS_MLFLOW_SERVER__URL": server.url,
        "MMOPS_MLFLOW_SERVER__USERNAME": server.username,
        "MMOPS_MLFLOW_SERVER__PASSWORD": server.password.get_secret_value(),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    with prefect_test_harness(server_startup_timeout=120):
        runtime = get_runtime()
        assert runtime.settings.tracking_uri == server.url
        history_end, first = build_small_pipeline(runtime, materialize_days=1)
        assert redis_instance.dbsize() > 0  # the last history day is online, in Redis
        assert first.promoted, first.reason
        outcome = concept_drift_cycle(
            runtime,
            history_end,
            tmp_path / "production.parquet",
            seed=3,
            first_id=60_000,
            send_email=False,
        )

    # Scored and served from the real stores.
    assert outcome.score.n_rows == 400
    ids = read_entities(
        runtime.config, runtime.settings.feast_dir, history_end, history_end + timedelta(days=1)
    )[runtime.config.entity_key].head(5)
    online = get_online_frame(runtime.store, runtime.config, ids.tolist())
    assert online["price"].notna().all()
    # Drift-triggered retraining went through the MLflow server, with a consistent alias.
    monitored = outcome.monitor
    assert monitored.action == "retrain", monitored.reasons
    assert monitored.retrain_version == "2"
    client = connect(server.url)
    name = registered_model_name(runtime)
    champion = current_champion(client, name)
    assert champion == ("2" if monitored.retrain_promoted else "1")
    promotions = [e for e in alias_history(client, name) if e.action == "promote"]
    assert [e.version for e in promotions][-1] == champion
    runs = client.search_runs(
        [client.get_experiment_by_name(f"{runtime.config.name}-training").experiment_id]
    )
    assert sorted(r.data.tags["mmops.trigger"] for r in runs) == ["drift", "manual"]
    # Artifacts went through the server (no file:// location on the client's disk).
    assert not client.get_experiment_by_name(
        f"{runtime.config.name}-training"
    ).artifact_location.startswith("file:")
