"""A small MLflow state for reviewing the UI: two training runs of the synthetic dataset
(a champion and a rejected photo-only challenger) and one monitoring window with its
Evidently report. Real MLflow on SQLite, no Prefect: seconds, not minutes."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

REGISTERED_MODEL = "synth-classifier"
TRAINING_EXPERIMENT = "synth-training"
MONITORING_EXPERIMENT = "synth-monitoring"


class ReviewState(BaseModel):
    """Where the pages to review are."""

    model_config = ConfigDict(frozen=True)

    tracking_uri: str
    artifact_root: str
    training_experiment_id: str
    champion_run_id: str
    champion_version: str
    challenger_version: str
    monitoring_experiment_id: str
    monitoring_run_id: str
    report_html: Path
    n_drifted: int
    n_modalities: int


def build_review_state(data_dir: Path) -> ReviewState:
    """Train, log, register and gate two small models, and log one monitoring window."""
    from monitoring.drift import compute_drift, fit_drift_reference
    from monitoring.estimate import estimate_performance
    from monitoring.policy import Decision, PolicyState
    from monitoring.reports import build_window_report, log_window_report
    from tests.unit.monitoring.test_reports import FAST, make_assessment, tiny_config, tiny_frame
    from tests.unit.training.synthetic import (
        FAST_TRAIN,
        TEST_GATE,
        synthetic_config,
        synthetic_frame,
    )
    from training.evaluate import evaluate_model
    from training.registry import (
        RetryConfig,
        connect,
        default_artifact_location,
        default_tracking_uri,
        ensure_experiment,
        log_training_run,
        promote_if_better,
        register_version,
        training_experiment_description,
    )
    from training.train import train_model

    data_dir = Path(data_dir)
    tracking_uri = default_tracking_uri(data_dir)
    artifacts = default_artifact_location(data_dir)
    client = connect(tracking_uri, RetryConfig(attempts=2))
    config = synthetic_config()
    experiment = ensure_experiment(
        client,
        TRAINING_EXPERIMENT,
        artifacts,
        description=training_experiment_description(config, REGISTERED_MODEL),
    )
    frame, holdout = synthetic_frame(600, seed=0), synthetic_frame(400, seed=7)
    versions, runs = [], []
    for trigger, train_config in (
        ("scheduled", FAST_TRAIN),
        ("drift", FAST_TRAIN.model_copy(update={"modalities": ["photo"]})),
    ):
        result = train_model(frame, config, train_config)
        evaluation = evaluate_model(result.model, result.splits.test, config.label)
        stamps = result.splits.train[config.timestamp]
        record = log_training_run(
            client,
            experiment,
            result,
            evaluation,
            config,
            trigger=trigger,
            validation_summary=f"data-quality suite 'synth_features' passed on {len(frame)} rows",
            monitoring_thresholds={"alpha": 0.05},
            run_name=f"{trigger} {stamps.min():%Y-%m-%d}..{result.manifest.test.end:%Y-%m-%d}",
            reason="drift in review (demo)" if trigger == "drift" else None,
        )
        version = register_version(client, REGISTERED_MODEL, record)
        promote_if_better(client, REGISTERED_MODEL, version, holdout, config.label, TEST_GATE)
        versions.append(version)
        runs.append(record.run_id)

    tiny = tiny_config()
    reference, window = tiny_frame(400, seed=1), tiny_frame(200, seed=2, text_offset=2.0)
    drift_reference = fit_drift_reference(reference, tiny, FAST, seed=0)
    drift = compute_drift(drift_reference, window, FAST, seed=0)
    estimate = estimate_performance(window[["proba_a", "proba_b"]].to_numpy(), tiny.classes)
    decision = Decision(
        action="alert", reasons=["drift in text"], fingerprint="text", state=PolicyState()
    )
    assessment = make_assessment(drift, estimate, decision, window, tiny)
    report = build_window_report(
        reference,
        window,
        tiny,
        assessment,
        data_dir / "reports" / "w",
        drift_reference=drift_reference,
    )
    logged = log_window_report(
        client, MONITORING_EXPERIMENT, report, assessment, {"dataset": "tiny"}, artifacts
    )
    return ReviewState(
        tracking_uri=tracking_uri,
        artifact_root=artifacts,
        training_experiment_id=experiment,
        champion_run_id=runs[0],
        champion_version=versions[0],
        challenger_version=versions[1],
        monitoring_experiment_id=logged.experiment_id,
        monitoring_run_id=logged.run_id,
        report_html=report.html,
        n_drifted=len(drift.drifted_modalities),
        n_modalities=len(drift.modalities),
    )
