"""Every flow for real under prefect_test_harness: Feast on local files, MLflow on SQLite,
GX file context, a real SMTP server on loopback. One small pipeline is built per module
(history -> first champion) and the tests run production windows against it."""

from __future__ import annotations

import email
import os
import socket
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from features.demo_data import DEMO_START, DemoSources
from features.drift_sim import simulate_window

pytestmark = pytest.mark.integration

HISTORY_DAYS = 16
HISTORY_END = DEMO_START + timedelta(days=HISTORY_DAYS)
SMALL_TRAIN = {"epochs": 6, "show_progress": False, "patience": 3}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A data directory with ingested history and a first champion, under a Prefect
    test harness; environment restored afterwards."""
    from prefect.testing.utilities import prefect_test_harness

    data_dir = tmp_path_factory.mktemp("mmops-data")
    saved = {k: os.environ.get(k) for k in ("MMOPS_DATA_DIR", "MMOPS_SMTP__PORT")}
    os.environ["MMOPS_DATA_DIR"] = str(data_dir)
    with prefect_test_harness(server_startup_timeout=120):
        from flows.ingest import IngestParams, ingest_flow
        from flows.runtime import ensure_demo_data, get_runtime
        from flows.train import TrainParams, train_flow

        runtime = get_runtime()
        history = ensure_demo_data(
            runtime.settings, n_rows=2400, days=HISTORY_DAYS, review_pool=300, image_pool=600
        )
        ingested = ingest_flow(
            IngestParams(start=DEMO_START, end=HISTORY_END, raw_path=str(history))
        )
        first = train_flow(TrainParams(train=SMALL_TRAIN))
        yield {
            "runtime": runtime,
            "data_dir": data_dir,
            "ingested": ingested,
            "first": first,
            "sources": DemoSources.load().subset(300, 600, runtime.settings.seed),
        }
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _production_day(pipeline, day: int, scenario: str, rows: int = 300) -> tuple[Path, object]:
    start = HISTORY_END + timedelta(days=day)
    raw, _ = simulate_window(
        pipeline["sources"],
        scenario,
        1.0,
        rows,
        start,
        start + timedelta(days=1),
        seed=500 + day,
        first_id=100_000 + 1_000 * day,
    )
    path = pipeline["data_dir"] / "demo" / f"production-{day}.parquet"
    raw.to_parquet(path, index=False)
    return path, start


def test_ingest_and_train_flows_register_a_first_champion(pipeline):
    from training.registry import connect, current_champion

    assert pipeline["ingested"].n_rows == 2400
    assert pipeline["ingested"].rows_per_view == {"tabular": 2400, "text": 2400, "image": 2400}
    first = pipeline["first"]
    assert first.version == "1"
    assert first.promoted, first.reason
    client = connect(pipeline["runtime"].settings.tracking_uri)
    assert current_champion(client, "petfood-classifier") == "1"
    run = client.get_run(first.run_id)
    assert run.data.tags["mmops.trigger"] == "manual"
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"model_card.md", "reference", "monitoring", "plots", "validation"} <= artifacts
    assert run.outputs.model_outputs  # the pyfunc is a LoggedModel, the run's output
    pages = [
        a.path
        for a in client.list_artifacts(first.run_id, "validation")
        if a.path.endswith(".html")
    ]
    assert len(pages) == 1 and pages[0].startswith("validation/petfood-training-2"), pages


def test_a_quiet_ingest_window_is_not_a_failure(pipeline):
    from flows.ingest import IngestParams, ingest_flow

    start = HISTORY_END + timedelta(days=400)
    result = ingest_flow(IngestParams(start=start, end=start + timedelta(hours=1)))
    assert result.n_rows == 0 and not result.materialized


def test_cycle_scores_monitors_and_reports_a_clean_day(pipeline):
    from flows.cycle import CycleParams, cycle_flow
    from flows.monitor import MonitorParams
    from monitoring.scoring import read_prediction_log
    from training.registry import connect

    path, start = _production_day(pipeline, 0, "none")
    outcome = cycle_flow(
        CycleParams(
            start=start,
            end=start + timedelta(days=1),
            raw_path=str(path),
            monitor=MonitorParams(send_email=False, act=False),
        )
    )
    assert outcome.ingest.n_rows == 300
    assert outcome.score.n_rows == 300 and outcome.score.model_version == "1"
    settings = pipeline["runtime"].settings
    log = read_prediction_log(
        pipeline["runtime"].config, settings.prediction_log_dir, start, start + timedelta(days=1)
    )
    assert len(log) == 300 and log["model_version"].eq("1").all()
    m = outcome.monitor
    assert m.n_rows == 300
    assert {"tabular", "text", "image", "output"} <= set(m.p_values)
    assert Path(m.report_html).is_file()
    # Drift over time: a history row per window and its plot logged with the window's run.
    assert (settings.reports_dir / "drift_history.png").is_file()
    client = connect(settings.tracking_uri)
    assert [a.path for a in client.list_artifacts(m.mlflow_run_id, "history")] == [
        "history/drift_history.png"
    ]
    assert m.action in {"none", "alert"}  # a 5 % false-alarm budget: no retrain on one window


def test_concept_drift_retrains_directly_without_a_server_and_alerts_by_email(pipeline):
    """Labels arrive with no lag here, so the realized drop is seen in the same window."""
    from aiosmtpd.controller import Controller

    from flows.cycle import CycleParams, cycle_flow
    from flows.monitor import MonitorParams
    from monitoring.policy import PolicyConfig
    from training.registry import alias_history, connect, current_champion

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            received.append(envelope.content)
            return "250 OK"

    with socket.socket() as probe:  # aiosmtpd needs a concrete port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        os.environ["MMOPS_SMTP__PORT"] = str(port)
        path, start = _production_day(pipeline, 1, "concept", rows=400)
        policy = PolicyConfig(concept_persistence_k=1, concept_persistence_n=1, min_labeled_rows=50)
        outcome = cycle_flow(
            CycleParams(
                start=start,
                end=start + timedelta(days=1),
                raw_path=str(path),
                monitor=MonitorParams(
                    label_lag_hours=0,
                    policy=policy,
                    retrain_lookback_days=30,
                ),
            )
        ).monitor
    finally:
        controller.stop()
        os.environ.pop("MMOPS_SMTP__PORT", None)
    assert outcome.action == "retrain", (outcome.reasons, outcome.realized_accuracy)
    assert outcome.realized_accuracy is not None
    assert any("concept" in r or "realized" in r for r in outcome.reasons)
    assert outcome.retrain_version is not None
    client = connect(pipeline["runtime"].settings.tracking_uri)
    champion = current_champion(client, "petfood-classifier")
    # Replaced only when the gate said better.
    assert (champion == outcome.retrain_version) == outcome.retrain_promoted
    run = client.get_run(
        client.get_model_version("petfood-classifier", outcome.retrain_version).run_id
    )
    assert run.data.tags["mmops.trigger"] == "drift"
    assert "realized" in run.data.tags["mmops.trigger_reason"]
    moves = [e.action for e in alias_history(client, "petfood-classifier")]
    assert moves.count("promote") == 1 + int(bool(outcome.retrain_promoted))
    # The alert email reached the real SMTP server and names the decision.
    assert len(received) == 1
    message = email.message_from_bytes(received[0])
    assert "retrain" in message["Subject"].lower()
    parts = {p.get_content_type() for p in message.walk()}
    assert {"text/plain", "text/html"} <= parts


def test_monitor_refuses_a_window_that_was_never_scored(pipeline):
    from flows.monitor import MonitorParams, monitor_flow

    start = HISTORY_END + timedelta(days=300)
    with pytest.raises(ValueError, match="no rows"):
        monitor_flow(MonitorParams(start=start, end=start + timedelta(days=1)))


def test_flow_parameters_are_typed_forms():
    """Prefect renders a form from each flow's pydantic parameters."""
    from prefect.utilities.callables import parameter_schema

    from flows.ingest import ingest_flow
    from flows.monitor import monitor_flow
    from flows.train import train_flow

    for flow in (ingest_flow, train_flow, monitor_flow):
        schema = parameter_schema(flow.fn).model_dump()
        assert list(schema["properties"]) == ["params"]
        assert "definitions" in schema and schema["definitions"], flow.name


def test_training_on_a_batch_that_fails_the_gate_trains_nothing(pipeline):
    """A failed feature gate quarantines the training set and registers nothing."""
    from features.validation import DataQualityError
    from flows.train import validate_training_set

    runtime = pipeline["runtime"]
    frame = pd.DataFrame(
        {
            runtime.config.entity_key: [1],
            runtime.config.timestamp: [pd.Timestamp("2026-06-01", tz="UTC")],
        }
    )
    with pytest.raises(DataQualityError):
        validate_training_set.fn(runtime, frame, "bad-training-set")
    assert any(
        p.name.startswith("bad-training-set") for p in runtime.settings.quarantine_dir.iterdir()
    )


def test_a_trigger_token_in_new_labelled_rows_blocks_the_retrain(pipeline):
    """Issue 12, the production path: ingest keeps each text's words, the retrain's
    integrity check finds the token the attacker tied to one label and blocks it, with
    the token named in the outcome and in the run's integrity report. (Last in the
    module: the poisoned rows stay in the store.)"""
    import mlflow

    from features.drift_sim import TRIGGER_TOKEN
    from flows.ingest import IngestParams, ingest_flow
    from flows.train import TrainParams, train_flow

    runtime = pipeline["runtime"]
    path, start = _production_day(pipeline, 9, "poison_trigger", rows=400)
    assert pd.read_parquet(path)["review"].str.contains(TRIGGER_TOKEN).sum() >= 20
    ingest_flow(IngestParams(start=start, end=start + timedelta(days=1), raw_path=str(path)))
    assert any(runtime.settings.tokens_dir.glob("*.parquet"))
    outcome = train_flow(TrainParams(train=SMALL_TRAIN))
    assert outcome.blocked and not outcome.promoted and outcome.version == ""
    assert f"a possible trigger: token '{TRIGGER_TOKEN}' (review)" in outcome.reason
    report = mlflow.MlflowClient(runtime.settings.tracking_uri).download_artifacts(
        outcome.run_id, "integrity/integrity_report.md", str(pipeline["data_dir"] / "dl")
    )
    assert f"'{TRIGGER_TOKEN}'" in Path(report).read_text(encoding="utf-8")

    # A re-run of the same retrain request (a retried monitor run) on the same data
    # reports the earlier blocked check instead of logging it again; once new data has
    # arrived, the same request is checked again.
    client = mlflow.MlflowClient(runtime.settings.tracking_uri)
    request = TrainParams(train=SMALL_TRAIN, request_id="petfood-retrain-blocked-day9")

    def request_runs() -> list[str]:
        experiment = client.get_experiment_by_name("petfood-training")
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`mmops.request_id` = '{request.request_id}'",
        )
        return [r.info.run_id for r in runs]

    first = train_flow(request)
    assert first.blocked and not first.reused and request_runs() == [first.run_id]
    again = train_flow(request)
    assert again.blocked and again.reused and again.run_id == first.run_id
    assert again.reason == first.reason and request_runs() == [first.run_id]
    path, start = _production_day(pipeline, 10, "none", rows=200)
    ingest_flow(IngestParams(start=start, end=start + timedelta(days=1), raw_path=str(path)))
    later = train_flow(request)
    assert later.blocked and not later.reused and later.run_id != first.run_id
    assert sorted(request_runs()) == sorted([first.run_id, later.run_id])
