"""Window report logged to MLflow on SQLite in a temporary folder."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from monitoring.drift import compute_drift, fit_drift_reference
from monitoring.estimate import estimate_performance
from monitoring.policy import Decision, PolicyState
from monitoring.reports import build_window_report, log_window_report
from tests.unit.monitoring.test_reports import (
    FAST,
    make_assessment,
    tiny_config,
    tiny_frame,
)

pytestmark = pytest.mark.integration


def test_window_report_is_logged_as_one_run(tmp_path):
    config = tiny_config()
    reference_frame, window = tiny_frame(400, seed=1), tiny_frame(200, seed=2, text_offset=2.0)
    drift_reference = fit_drift_reference(reference_frame, config, FAST, seed=0)
    drift = compute_drift(drift_reference, window, FAST, seed=0)
    estimate = estimate_performance(window[["proba_a", "proba_b"]].to_numpy(), config.classes)
    decision = Decision(action="alert", reasons=["text"], fingerprint="text", state=PolicyState())
    assessment = make_assessment(drift, estimate, decision, window, config)
    report = build_window_report(
        reference_frame,
        window,
        config,
        assessment,
        tmp_path / "reports" / "w",
        drift_reference=drift_reference,
    )
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=tracking_uri)
    artifacts_uri = (tmp_path / "artifacts").as_uri()

    first = log_window_report(
        tracking_uri,
        "monitoring",
        report,
        assessment,
        {"dataset": "tiny"},
        artifact_location=artifacts_uri,
    )
    logged = log_window_report(client, "monitoring", report, assessment, {"dataset": "tiny"})

    run = client.get_run(logged.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == logged.experiment_id
    assert run.data.metrics["drift.text.drifted"] == 1.0
    assert run.data.metrics["drift.text.p_value"] == pytest.approx(drift.modalities["text"].p_value)
    assert run.data.metrics["estimate.accuracy"] == pytest.approx(estimate.expected_accuracy)
    assert "labelled.accuracy" in run.data.metrics
    assert run.data.params["window_start"] == str(assessment.window_start)
    assert run.data.tags["decision.action"] == "alert"
    assert run.data.tags["model_version"] == "7"
    assert run.data.tags["mlflow.note.content"].startswith("**ALERT** for v7")
    assert run.info.run_name.endswith("alert v7")
    artifacts = {a.path for a in client.list_artifacts(logged.run_id, "report")}
    assert artifacts == {
        "report/report.html",
        "report/report.json",
        "report/drift.json",
        "report/assessment.json",
    }
    experiment = client.get_experiment_by_name("monitoring")
    assert experiment.artifact_location == artifacts_uri
    assert (tmp_path / "artifacts").is_dir()
    active = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in active] == [logged.run_id]
    assert client.get_run(first.run_id).info.lifecycle_stage == "deleted"
