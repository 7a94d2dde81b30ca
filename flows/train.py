"""The ``train`` flow: training set from Feast -> gate -> train -> evaluate -> register ->
promotion gate."""

from __future__ import annotations

import hashlib
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
from features.golden import (
    GoldenConfig,
    GoldenManifest,
    freeze_golden,
    latest_golden,
    split_golden,
)
from features.store import get_monitoring_frame, read_label_history, read_labels
from features.tokens import read_tokens
from features.validation import ValidationResult, check_batch
from flows.retries import retry_unless_permanent
from flows.runtime import Runtime, get_runtime
from monitoring.drift import DriftConfig, fit_drift_reference
from training.evaluate import EvaluationResult, GateConfig, PromotionDecision, evaluate_model
from training.integrity import (
    IntegrityConfig,
    IntegrityResult,
    check_training_integrity,
    integrity_markdown,
    plot_integrity,
)
from training.registry import (
    REFERENCE_ARTIFACT,
    RunRecord,
    connect,
    current_champion,
    ensure_experiment,
    git_commit,
    load_version_classifier,
    log_training_run,
    promote_if_better,
    register_version,
    sweep_orphaned_versions,
    training_experiment_description,
)
from training.train import TrainConfig, TrainingManifest, TrainResult, hash_frame, train_model

DRIFT_REFERENCE_ARTIFACT = "monitoring"
REQUEST_TAG = "mmops.request_id"
BLOCKED_DIGEST_TAG = "mmops.integrity.digest"
BLOCKED_REVIEW_TAG = "mmops.integrity.review"
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
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Idempotency key of a requested retrain: a finished run with the same "
        "key is reported instead of training again (a retried or re-run request trains once).",
    )
    integrity: IntegrityConfig | None = Field(
        default=None,
        description="Training-data integrity check run before training (quarantine, block); "
        "None: the settings' (MMOPS_INTEGRITY__*).",
    )
    golden: GoldenConfig = Field(
        default_factory=GoldenConfig,
        description="The golden holdout: entities kept out of every training window.",
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
    blocked: bool = Field(
        default=False, description="The integrity check blocked the retrain: nothing trained."
    )
    review: str = Field(
        default="", description="What an operator should review (blocked or awaiting approval)."
    )

    @classmethod
    def blocked_by_check(cls, run_id: str, review: str, reused: bool = False) -> TrainOutcome:
        """A retrain the integrity check blocked (run ``run_id`` holds its report)."""
        return cls(
            run_id=run_id,
            version="",
            promoted=False,
            reason=review,
            test_metrics={},
            reused=reused,
            blocked=True,
            review=review,
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
    runtime: Runtime,
    start: datetime | None,
    end: datetime | None,
    golden: GoldenManifest | None = None,
) -> pd.DataFrame:
    labels = read_labels(runtime.config, runtime.settings.labels_dir, start, end)
    if labels.empty:
        raise NoLabelsError(
            f"no labels between {start} and {end}: nothing to train on "
            "(rows ingested without labels get them with `mmops labels`)"
        )
    if golden is not None:
        labels, held = split_golden(labels, runtime.config, golden.fraction, golden.salt)
        get_run_logger().info("%d rows of golden-holdout entities kept out of training", held)
    return get_monitoring_frame(runtime.store, runtime.config, labels)


def training_batch_name(runtime: Runtime, frame: pd.DataFrame) -> str:
    """The training set's name for the data-quality gate: dataset and labelled window."""
    stamps = pd.to_datetime(frame[runtime.config.timestamp], utc=True)
    if stamps.empty:
        return f"{runtime.config.name}-training"
    return f"{runtime.config.name}-training-{stamps.min():%Y%m%dT%H%M}-{stamps.max():%Y%m%dT%H%M}"


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def load_golden(
    runtime: Runtime, golden: GoldenConfig, end: datetime | None
) -> tuple[GoldenManifest, pd.DataFrame] | None:
    """The golden holdout's latest frozen version and its feature rows; the first run
    with enough member labels freezes version 1."""
    if not golden.enabled:
        return None
    folder = runtime.settings.data_dir / "golden"
    found = latest_golden(folder)
    if found is None:
        labels = read_labels(runtime.config, runtime.settings.labels_dir, None, end)
        if labels.empty or freeze_golden(labels, runtime.config, folder, golden) is None:
            return None
        found = latest_golden(folder)
    manifest, rows = found
    return manifest, get_monitoring_frame(runtime.store, runtime.config, rows)


def _integrity_config(runtime: Runtime, params: TrainParams) -> IntegrityConfig:
    """The run's integrity bounds: its own, else the settings' (``MMOPS_INTEGRITY__*``)."""
    return params.integrity or runtime.settings.integrity


@task(cache_policy=NO_CACHE)
def check_integrity(
    runtime: Runtime, frame: pd.DataFrame, params: TrainParams
) -> IntegrityResult | None:
    """The integrity check, judged against the champion (its probabilities on the frame,
    its training class shares, and the end of the data it saw)."""
    integrity = _integrity_config(runtime, params)
    if not integrity.enabled:
        return None
    config = runtime.config
    client = connect(runtime.settings.tracking_uri)
    name = registered_model_name(runtime)
    explained = prior = since = None
    champion_version = current_champion(client, name) if _model_exists(client, name) else None
    if champion_version is not None:
        champion = load_version_classifier(client, name, champion_version)
        explained = champion.predict_proba(frame)
        prior = champion.spec.class_prior
        since = params.reference_since or _champion_data_end(client, name, champion_version)
    history = read_label_history(config, runtime.settings.labels_dir)
    keys = [config.entity_key, config.timestamp]
    overwritten = (
        frame[keys].merge(history[keys].drop_duplicates(), on=keys, how="left", indicator=True)[
            "_merge"
        ]
        == "both"
    ).to_numpy()
    # The trigger check judges words against the champion's probabilities: without a
    # champion there is nothing to read the token files for.
    tokens = (
        read_tokens(config, runtime.settings.tokens_dir, frame[keys])
        if explained is not None
        else None
    )
    return check_training_integrity(
        frame, config, integrity, explained, prior, since, overwritten, tokens
    )


def _model_exists(client, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - absent before the first registration
        return False
    return True


def _champion_data_end(client, name: str, version: str) -> datetime | None:
    run_id = client.get_model_version(name, version).run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "manifest/training_manifest.json", tmp)
        except Exception:  # noqa: BLE001 - an old run without a manifest: all rows are new
            return None
        manifest = TrainingManifest.model_validate_json(Path(path).read_text(encoding="utf-8"))
    return manifest.test.end


def _log_integrity(client, run_id: str, result: IntegrityResult, config) -> None:
    """The integrity report (summary, markdown, plot, flagged rows) under ``integrity/``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "integrity_summary.json").write_text(
            result.summary.model_dump_json(indent=2), encoding="utf-8"
        )
        (root / "integrity_report.md").write_text(
            integrity_markdown(result.summary), encoding="utf-8"
        )
        plot_integrity(result, root / "integrity.png")
        flagged = result.flags[result.flags["quarantine"]].copy()
        flagged.to_parquet(root / "flagged_rows.parquet", index=False)
        client.log_artifacts(run_id, tmp, "integrity")
    for key, value in result.summary.counts.items():
        client.log_metric(run_id, f"integrity_{key}", value)
    client.log_metric(run_id, "integrity_quarantined", result.summary.quarantined)


def _log_golden(client, run_id: str, manifest: GoldenManifest, frame: pd.DataFrame, label: str):
    """The golden holdout as an MLflow dataset input of the run (context golden_holdout)."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    keys = [c for c in frame.columns if not c.endswith("_emb")]
    dataset = mlflow.data.from_pandas(
        frame[keys], name=manifest.name, targets=label, digest=manifest.digest[:20]
    )
    client.log_inputs(
        run_id,
        datasets=[
            DatasetInput(
                dataset._to_mlflow_entity(),
                tags=[InputTag(key="mlflow.data.context", value="golden_holdout")],
            )
        ],
    )
    client.set_tag(run_id, "mmops.golden", f"{manifest.name} ({manifest.n_rows} rows)")


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
    runtime: Runtime,
    version: str,
    holdout: pd.DataFrame,
    gate: GateConfig,
    golden: pd.DataFrame | None = None,
    move: bool = True,
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
        golden=golden,
        move=move,
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
    golden = load_golden(runtime, params.golden, end)
    frame = load_training_set(runtime, start, end, golden[0] if golden else None)
    if params.request_id:
        earlier = find_blocked(runtime, params.request_id, frame, params)
        if earlier is not None:
            return earlier
    integrity = check_integrity(runtime, frame, params)
    if integrity is not None and integrity.blocked:
        return _blocked(runtime, params, integrity, frame)
    if integrity is not None and integrity.quarantine.any():
        frame = frame[~integrity.quarantine].reset_index(drop=True)
    gate = validate_training_set(runtime, frame, training_batch_name(runtime, frame))
    result = fit(runtime, frame, params, gate)
    evaluation = evaluate(runtime, result)
    record = log_run(runtime, result, evaluation, params, gate)
    client = connect(runtime.settings.tracking_uri)
    if integrity is not None:
        _log_integrity(client, record.run_id, integrity, runtime.config)
    if golden is not None:
        _log_golden(client, record.run_id, golden[0], golden[1], runtime.config.label)
    version = register(runtime, record)
    approval = params.trigger == "drift" and runtime.settings.approve_drift_retrains
    decision = promote(
        runtime,
        version,
        result.splits.test,
        params.gate or runtime.settings.gate,
        golden[1] if golden else None,
        not approval,
    )
    review = ""
    if approval and decision.promote:
        review = (
            f"v{version} passed the gate and stays challenger until approved (drift-triggered "
            f"retrain). Review its gate verdict (model version description) and the "
            f"integrity report (run {record.run_id}, artifacts integrity/); promote with "
            f"`mmops promote {version}`."
        )
    metrics = {k: v for k, v in evaluation.flat_metrics("test").items() if "slice" not in k}
    create_markdown_artifact(
        key="train-summary",
        markdown=_summary_markdown(version, params, result, decision, metrics),
    )
    return TrainOutcome(
        run_id=record.run_id,
        version=version,
        promoted=decision.promote and not approval,
        reason=decision.reason,
        test_metrics=metrics,
        review=review,
    )


def _check_digest(runtime: Runtime, frame: pd.DataFrame, params: TrainParams) -> str:
    """What a check's outcome depends on: the training frame, the integrity bounds and
    the champion it is judged against."""
    integrity = _integrity_config(runtime, params)
    client = connect(runtime.settings.tracking_uri)
    name = registered_model_name(runtime)
    champion = current_champion(client, name) if _model_exists(client, name) else None
    digest = hashlib.sha256(hash_frame(frame, sorted(frame.columns)).encode())
    digest.update(integrity.model_dump_json().encode())
    digest.update(f"champion={champion}".encode())
    return digest.hexdigest()


def _request_runs(runtime: Runtime, request_id: str, also: str = "") -> list:
    """Finished training runs tagged with ``request_id`` (``also``: more filter terms)."""
    client = connect(runtime.settings.tracking_uri)
    experiment = client.get_experiment_by_name(TRAINING_EXPERIMENT.format(name=runtime.config.name))
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{REQUEST_TAG}` = '{request_id}' and attributes.status = "
        f"'FINISHED' {also}",
    )


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def find_blocked(
    runtime: Runtime, request_id: str, frame: pd.DataFrame, params: TrainParams
) -> TrainOutcome | None:
    """The earlier blocked outcome of this retrain request on the same data, bounds and
    champion, if any: a re-run (a retried monitor run, the same window again) reports it
    instead of logging the same blocked check again. Data re-delivered since, relaxed
    bounds or a new champion check again."""
    runs = _request_runs(runtime, request_id, "and tags.`mmops.integrity` = 'blocked'")
    if not runs:
        return None
    digest = _check_digest(runtime, frame, params)
    for run in runs:
        if run.data.tags.get(BLOCKED_DIGEST_TAG) == digest:
            review = run.data.tags.get(BLOCKED_REVIEW_TAG, "retrain blocked (earlier run)")
            get_run_logger().info("request %s was blocked on this data before", request_id)
            return TrainOutcome.blocked_by_check(run.info.run_id, review, reused=True)
    return None


def _blocked(
    runtime: Runtime, params: TrainParams, integrity: IntegrityResult, frame: pd.DataFrame
) -> TrainOutcome:
    """Log the blocked check as a run of its own (report and plot) and say why."""
    client = connect(runtime.settings.tracking_uri)
    experiment = ensure_experiment(
        client, TRAINING_EXPERIMENT.format(name=runtime.config.name), runtime.artifact_location
    )
    run = client.create_run(experiment, run_name=f"{params.trigger} blocked by integrity check")
    client.set_tag(run.info.run_id, "mmops.integrity", "blocked")
    _log_integrity(client, run.info.run_id, integrity, runtime.config)
    summary = integrity.summary
    review = (
        "retrain blocked by the training-data integrity check: "
        + "; ".join(summary.reasons)
        + ". Look at: "
        + "; ".join(summary.look_at or ["the flagged rows"])
        + f" (run {run.info.run_id}, artifacts integrity/)."
    )
    if params.request_id:
        # Tagged last, once the report is logged: a run cut short is never found as the
        # request's outcome (find_blocked asks for a finished run with these tags).
        client.set_tag(run.info.run_id, BLOCKED_REVIEW_TAG, review[:5000])
        client.set_tag(run.info.run_id, BLOCKED_DIGEST_TAG, _check_digest(runtime, frame, params))
        client.set_tag(run.info.run_id, REQUEST_TAG, params.request_id)
    client.set_terminated(run.info.run_id, "FINISHED")
    get_run_logger().warning(review)
    create_markdown_artifact(key="train-summary", markdown=integrity_markdown(summary))
    return TrainOutcome.blocked_by_check(run.info.run_id, review)


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def find_request(runtime: Runtime, request_id: str) -> TrainOutcome | None:
    """The outcome of a finished, registered run of this retrain request, if any."""
    client = connect(runtime.settings.tracking_uri)
    runs = _request_runs(runtime, request_id)
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
