"""The ``train`` flow: training set from Feast -> gate -> train -> evaluate -> register ->
promotion gate."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from features.errors import EmptyWindowError
from features.store import get_monitoring_frame, read_labels
from features.validation import ValidationResult, check_batch
from flows.retries import retry_unless_permanent
from flows.runtime import Runtime, get_runtime
from monitoring.drift import DriftConfig, fit_drift_reference
from training.evaluate import EvaluationResult, GateConfig, PromotionDecision, evaluate_model
from training.registry import (
    REFERENCE_ARTIFACT,
    RunRecord,
    connect,
    ensure_experiment,
    git_commit,
    log_training_run,
    promote_if_better,
    register_version,
    sweep_orphaned_versions,
    training_experiment_description,
)
from training.train import TrainConfig, TrainResult, train_model

DRIFT_REFERENCE_ARTIFACT = "monitoring"
REQUEST_TAG = "mmops.request_id"
ENCODERS_TAG = "mmops.encoders"
TRAINING_EXPERIMENT = "{name}-training"


class TrainParams(BaseModel):
    """Parameters of one training run (rendered as a form in the Prefect UI)."""

    model_config = ConfigDict(frozen=True)

    start: datetime | None = Field(default=None, description="Oldest label used (UTC).")
    end: datetime | None = Field(default=None, description="Labels before this time (UTC).")
    lookback_days: float | None = Field(
        default=None, gt=0, description="Without start: train on labels of the last N days."
    )
    trigger: Literal["scheduled", "drift", "manual"] = Field(default="manual")
    reason: str = Field(default="", description="Why this run happens (drift evidence).")
    train: TrainConfig | None = Field(
        default=None, description="Training knobs; None: the settings' (MMOPS_TRAIN__*)."
    )
    gate: GateConfig | None = Field(
        default=None, description="Promotion-gate bounds; None: the settings' (MMOPS_GATE__*)."
    )
    drift: DriftConfig = Field(default_factory=DriftConfig)
    reference_since: datetime | None = Field(
        default=None,
        description="Drift retrain: build the new version's monitoring reference from the "
        "held-out rows stamped from this time on (the shift's start), when there are enough.",
    )
    request_id: str | None = Field(
        default=None,
        description="Idempotency key of a requested retrain: a finished run with the same "
        "key is reported instead of training again (a retried or re-run request trains once).",
    )


class TrainOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    version: str
    promoted: bool
    reason: str
    test_metrics: dict[str, float]
    reused: bool = Field(
        default=False, description="An earlier run of the same request was reported."
    )


def registered_model_name(runtime: Runtime) -> str:
    return f"{runtime.config.name}-classifier"


class NoLabelsError(EmptyWindowError):
    """Nothing to train on: no labels in the window (retrying cannot help)."""


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=900,
    cache_policy=NO_CACHE,
)
def load_training_set(
    runtime: Runtime, start: datetime | None, end: datetime | None
) -> pd.DataFrame:
    labels = read_labels(runtime.config, runtime.settings.labels_dir, start, end)
    if labels.empty:
        raise NoLabelsError(
            f"no labels between {start} and {end}: nothing to train on "
            "(rows ingested without labels get them with `mmops labels`)"
        )
    return get_monitoring_frame(runtime.store, runtime.config, labels)


def training_batch_name(runtime: Runtime, frame: pd.DataFrame) -> str:
    """The training set's name for the data-quality gate: dataset and labelled window."""
    stamps = pd.to_datetime(frame[runtime.config.timestamp], utc=True)
    if stamps.empty:
        return f"{runtime.config.name}-training"
    return f"{runtime.config.name}-training-{stamps.min():%Y%m%dT%H%M}-{stamps.max():%Y%m%dT%H%M}"


@task(cache_policy=NO_CACHE)
def validate_training_set(runtime: Runtime, frame: pd.DataFrame, batch: str) -> ValidationResult:
    s = runtime.settings
    return check_batch(
        frame,
        runtime.config.model_view(),
        kind="features",
        quarantine_dir=s.quarantine_dir,
        context_dir=s.gx_dir,
        batch_name=batch,
    )


@task(timeout_seconds=3600, cache_policy=NO_CACHE)
def fit(
    runtime: Runtime, frame: pd.DataFrame, params: TrainParams, gate: ValidationResult
) -> TrainResult:
    return train_model(
        frame, runtime.config, params.train or runtime.settings.train, validation=gate
    )


@task(cache_policy=NO_CACHE)
def evaluate(runtime: Runtime, result: TrainResult) -> EvaluationResult:
    return evaluate_model(result.model, result.splits.test, runtime.config.label)


@task(
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=900,
    cache_policy=NO_CACHE,
)
def log_run(
    runtime: Runtime,
    result: TrainResult,
    evaluation: EvaluationResult,
    params: TrainParams,
    validation: ValidationResult,
) -> RunRecord:
    client = connect(runtime.settings.tracking_uri)
    experiment = ensure_experiment(
        client,
        TRAINING_EXPERIMENT.format(name=runtime.config.name),
        runtime.artifact_location,
        description=training_experiment_description(runtime.config, registered_model_name(runtime)),
    )
    record = log_training_run(
        client,
        experiment,
        result,
        evaluation,
        runtime.config,
        trigger=params.trigger,
        validation_summary=validation.summary(),
        monitoring_thresholds={"alpha": params.drift.alpha},
        code_version=git_commit(Path(__file__).resolve().parent.parent),
        run_name=f"{params.trigger} {result.manifest.train.start:%Y-%m-%d}..{result.manifest.test.end:%Y-%m-%d}",
        reference_since=params.reference_since,
        reason=params.reason or None,
        validation_files=[
            Path(p) for p in (validation.summary_page, validation.result_json) if p is not None
        ],
    )
    if params.request_id:
        client.set_tag(record.run_id, REQUEST_TAG, params.request_id)
    if params.reason:
        client.set_tag(record.run_id, "mmops.trigger_reason", params.reason[:4000])
    # Which encoders made the vectors the model and its drift reference were fitted on:
    # scoring refuses features of other encoders (flows/score.py check_champion_encoders).
    client.set_tag(record.run_id, ENCODERS_TAG, json.dumps(runtime.encoder_ids, sort_keys=True))
    _log_drift_reference(client, record, runtime, params.drift)
    return record


@task(
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=900,
    cache_policy=NO_CACHE,
)
def register(runtime: Runtime, record: RunRecord) -> str:
    """Register the run's version (idempotent by run id: a retry never duplicates it),
    after sweeping versions an earlier crash left half-registered."""
    client = connect(runtime.settings.tracking_uri)
    name = registered_model_name(runtime)
    lock = runtime.promotion_lock
    try:
        sweep_orphaned_versions(client, name, lock=lock)
    except Exception:  # the sweep is housekeeping; registering matters more
        get_run_logger().exception("sweeping orphaned versions of %s failed", name)
    return register_version(client, name, record, lock=lock)


def _log_drift_reference(client, record: RunRecord, runtime: Runtime, drift: DriftConfig) -> None:
    """Fit the monitoring reference on the run's reference sample and store it with the run."""
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(record.run_id, REFERENCE_ARTIFACT, tmp)
        reference = fit_drift_reference(
            pd.read_parquet(local), runtime.config, drift, seed=runtime.settings.seed
        )
        path = reference.save(Path(tmp) / "drift_reference.npz")
        client.log_artifact(record.run_id, str(path), DRIFT_REFERENCE_ARTIFACT)


@task(
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=900,
    cache_policy=NO_CACHE,
)
def promote(
    runtime: Runtime, version: str, holdout: pd.DataFrame, gate: GateConfig
) -> PromotionDecision:
    client = connect(runtime.settings.tracking_uri)
    return promote_if_better(
        client,
        registered_model_name(runtime),
        version,
        holdout,
        runtime.config.label,
        gate,
        lock=runtime.promotion_lock,
    )


@flow(name="train", flow_run_name="train ({params.trigger})")
def train_flow(params: TrainParams | None = None) -> TrainOutcome:
    """Train on the labelled window, register the version and run the promotion gate."""
    params = params or TrainParams()
    runtime = get_runtime()
    if params.request_id:
        earlier = find_request(runtime, params.request_id)
        if earlier is not None:
            return earlier
    start, end = params.start, params.end
    if start is None and params.lookback_days is not None:
        end = end or datetime.now(UTC)
        start = end - timedelta(days=params.lookback_days)
    runtime.check_offline_encoders()
    frame = load_training_set(runtime, start, end)
    gate = validate_training_set(runtime, frame, training_batch_name(runtime, frame))
    result = fit(runtime, frame, params, gate)
    evaluation = evaluate(runtime, result)
    record = log_run(runtime, result, evaluation, params, gate)
    version = register(runtime, record)
    decision = promote(runtime, version, result.splits.test, params.gate or runtime.settings.gate)
    metrics = {k: v for k, v in evaluation.flat_metrics("test").items() if "slice" not in k}
    create_markdown_artifact(
        key="train-summary",
        markdown=_summary_markdown(version, params, result, decision, metrics),
    )
    return TrainOutcome(
        run_id=record.run_id,
        version=version,
        promoted=decision.promote,
        reason=decision.reason,
        test_metrics=metrics,
    )


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def find_request(runtime: Runtime, request_id: str) -> TrainOutcome | None:
    """The outcome of a finished, registered run of this retrain request, if any."""
    client = connect(runtime.settings.tracking_uri)
    experiment = client.get_experiment_by_name(TRAINING_EXPERIMENT.format(name=runtime.config.name))
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{REQUEST_TAG}` = '{request_id}' and attributes.status = 'FINISHED'",
    )
    name = registered_model_name(runtime)
    for run in runs:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run.info.run_id}'")
        for version in versions:
            decision = version.tags.get("mmops.gate.decision")
            if decision is None:
                continue  # registered but never judged: train again
            return TrainOutcome(
                run_id=run.info.run_id,
                version=version.version,
                promoted=decision == "promote",
                reason=version.tags.get("mmops.gate.reason", ""),
                test_metrics={k: v for k, v in run.data.metrics.items() if k.startswith("test_")},
                reused=True,
            )
    return None


def _summary_markdown(version, params, result, decision, metrics) -> str:
    rows = "\n".join(
        f"| {k} | {v:.4f} |"
        for k, v in metrics.items()
        if k.startswith("test_") and "without" not in k
    )
    return (
        f"### Training v{version} ({params.trigger})\n\n"
        f"Rows: train {result.manifest.train.n_rows}, validation {result.manifest.validation.n_rows}, "
        f"test {result.manifest.test.n_rows}; best epoch {result.best_epoch}.\n\n"
        f"**Promotion:** {'promoted to champion' if decision.promote else 'not promoted'}: "
        f"{decision.reason}\n\n| metric | value |\n|---|---|\n{rows}\n"
    )
