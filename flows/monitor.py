"""The ``monitor`` flow: drift and estimate -> report -> decision -> email -> retraining."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from features.store import read_labels
from flows.runtime import Runtime, get_runtime, resolve_window, window_run_name
from flows.train import DRIFT_REFERENCE_ARTIFACT, TrainParams, registered_model_name, train_flow
from monitoring.alerts import (
    AlertContent,
    AlertDeliveryError,
    SmtpConfig,
    build_alert_email,
    load_alert_state,
    save_alert_state,
    send_alert,
    should_send,
    update_alert_state,
)
from monitoring.drift import DriftConfig, DriftReference, DriftResult, compute_drift
from monitoring.estimate import PerformanceEstimate, estimate_performance, realized_performance
from monitoring.policy import Decision, PolicyConfig, PolicyState, decide
from monitoring.reports import (
    WindowReport,
    build_window_report,
    drift_history_row,
    history_frame,
    log_window_report,
    plot_drift_history,
)
from monitoring.scoring import join_labels, proba_columns, read_prediction_log
from training.registry import (
    REFERENCE_ARTIFACT,
    connect,
    current_champion,
)

RETRAIN_DEPLOYMENT = "train/train-weekly"


class MonitorParams(BaseModel):
    """Parameters of one monitoring run (rendered as a form in the Prefect UI)."""

    model_config = ConfigDict(frozen=True)

    start: datetime | None = Field(default=None, description="Window start (UTC).")
    end: datetime | None = Field(default=None, description="Window end (UTC); default: now.")
    window_hours: float = Field(default=24, gt=0, description="Length of a default window.")
    label_lag_hours: float = Field(
        default=24,
        ge=0,
        description="Labels arrive this late: realized performance is measured on the "
        "window this much earlier.",
    )
    drift: DriftConfig = Field(default_factory=DriftConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    send_email: bool = Field(default=True, description="Send drift alert emails.")
    act: bool = Field(default=True, description="Start retraining when the decision says so.")
    retrain_lookback_days: float = Field(
        default=30, gt=0, description="Labels a drift-triggered retraining trains on."
    )
    renotify_hours: float = Field(
        default=72,
        gt=0,
        description="Repeat an alert for the same ongoing drift after this (a daily monitor "
        "reminds every third day, not every run).",
    )
    report: bool = Field(default=True, description="Build the Evidently HTML report.")


class MonitorOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_start: datetime
    window_end: datetime
    model_version: str
    n_rows: int
    drifted: list[str]
    p_values: dict[str, float]
    estimated_accuracy: float
    realized_accuracy: float | None
    action: str
    reasons: list[str]
    email: str
    mlflow_run_id: str | None
    report_html: str | None
    retrain_version: str | None = None
    retrain_promoted: bool | None = None
    retrain_flow_run: str | None = None


class ChampionReference(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    version: str
    run_id: str
    reference: pd.DataFrame
    drift_reference: DriftReference
    performance: float


@task(retries=2, retry_delay_seconds=5, timeout_seconds=300, cache_policy=NO_CACHE)
def load_champion_reference(runtime: Runtime, metric: str) -> ChampionReference:
    """The champion's reference sample, fitted drift reference and test performance
    (downloaded once per version into the data directory)."""
    client = connect(runtime.settings.tracking_uri)
    name = registered_model_name(runtime)
    version = current_champion(client, name)
    if version is None:
        raise LookupError(f"{name} has no champion: train and promote a model first")
    run_id = client.get_model_version(name, version).run_id
    cache = runtime.settings.data_dir / "models" / f"{name}-reference" / version
    if not (cache / "drift_reference.npz").exists():
        with tempfile.TemporaryDirectory(dir=runtime.settings.data_dir) as tmp:
            sample = client.download_artifacts(run_id, REFERENCE_ARTIFACT, tmp)
            fitted = client.download_artifacts(run_id, DRIFT_REFERENCE_ARTIFACT, tmp)
            cache.mkdir(parents=True, exist_ok=True)
            Path(sample).rename(cache / "reference.parquet")
            Path(fitted, "drift_reference.npz").rename(cache / "drift_reference.npz")
    performance = client.get_run(run_id).data.metrics[f"test_{metric}"]
    return ChampionReference(
        version=version,
        run_id=run_id,
        reference=pd.read_parquet(cache / "reference.parquet"),
        drift_reference=DriftReference.load(cache / "drift_reference.npz"),
        performance=performance,
    )


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def load_log(runtime: Runtime, start: datetime, end: datetime) -> pd.DataFrame:
    """Prediction-log rows of the window, with whatever labels have arrived."""
    log = read_prediction_log(runtime.config, runtime.settings.prediction_log_dir, start, end)
    if log.empty:
        return log
    labels = read_labels(runtime.config, runtime.settings.labels_dir, start, end)
    return join_labels(log, labels, runtime.config)


@task(cache_policy=NO_CACHE)
def detect_drift(
    runtime: Runtime, champion: ChampionReference, window: pd.DataFrame, config: DriftConfig
) -> DriftResult:
    unlabeled = window.drop(columns=[runtime.config.label], errors="ignore")
    return compute_drift(champion.drift_reference, unlabeled, config, seed=runtime.settings.seed)


@task(cache_policy=NO_CACHE)
def estimate(runtime: Runtime, window: pd.DataFrame) -> PerformanceEstimate:
    probas = window[proba_columns(runtime.config)].to_numpy(dtype=float)
    return estimate_performance(probas, runtime.config.classes, seed=runtime.settings.seed)


@task(cache_policy=NO_CACHE)
def attach_realized(runtime: Runtime, drift: DriftResult, labelled: pd.DataFrame) -> DriftResult:
    """Realized performance of the latest window whose labels have arrived."""
    label = runtime.config.label
    if labelled.empty or label not in labelled or labelled[label].notna().sum() == 0:
        return drift
    rows = labelled[labelled[label].notna()]
    realized = realized_performance(
        rows[label].astype(str).to_numpy(),
        rows["prediction"].astype(str).to_numpy(),
        runtime.config.classes,
    )
    return drift.model_copy(update={"realized": realized, "n_labeled": len(rows)})


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def decide_action(
    runtime: Runtime,
    drift: DriftResult,
    estimated: PerformanceEstimate,
    champion: ChampionReference,
    policy: PolicyConfig,
    now: datetime,
) -> Decision:
    """Apply the policy and persist its state (cooldown and caps hold across runs)."""
    path = runtime.settings.state_dir / "policy_state.json"
    state = PolicyState.from_json(path.read_text()) if path.exists() else PolicyState()
    decision = decide(drift, estimated, champion.performance, state, policy, now)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(decision.state.to_json())
    os.replace(tmp, path)
    return decision


@task(retries=2, retry_delay_seconds=5, timeout_seconds=300, cache_policy=NO_CACHE)
def report(
    runtime: Runtime,
    champion: ChampionReference,
    window: pd.DataFrame,
    drift: DriftResult,
    estimated: PerformanceEstimate,
    decision: Decision,
    build_html: bool,
) -> tuple[WindowReport | None, str]:
    built = None
    if build_html:
        built = build_window_report(
            champion.reference,
            window,
            runtime.config,
            drift,
            estimated,
            runtime.settings.reports_dir / f"{drift.window_start:%Y%m%dT%H%M%SZ}",
            decision=decision,
            drift_reference=champion.drift_reference,
            model_version=champion.version,
            seed=runtime.settings.seed,
        )
    run_id = log_window_report(
        runtime.settings.tracking_uri,
        f"{runtime.config.name}-monitoring",
        built,
        drift,
        estimated,
        decision,
        tags={"mmops.flow_run": str(flow_run.get_id() or "")},
        model_version=champion.version,
        artifact_location=runtime.artifact_location,
    )
    return built, run_id


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def record_history(
    runtime: Runtime,
    drift: DriftResult,
    estimated: PerformanceEstimate,
    decision: Decision,
    run_id: str,
) -> Path:
    """Append the window to the drift history and log the drift-over-time plot with it."""
    path = runtime.settings.state_dir / "drift_history.parquet"
    rows = pd.read_parquet(path).to_dict("records") if path.exists() else []
    rows = [r for r in rows if pd.Timestamp(r["window_start"]) != pd.Timestamp(drift.window_start)]
    history = history_frame([*rows, drift_history_row(drift, estimated, decision)])
    path.parent.mkdir(parents=True, exist_ok=True)
    history.to_parquet(path, index=False)
    retrains = history.loc[history["action"] == "retrain", "window_start"].tolist()
    plot = plot_drift_history(
        history, runtime.settings.reports_dir / "drift_history.png", retrains=retrains
    )
    connect(runtime.settings.tracking_uri).log_artifact(run_id, str(plot), "history")
    return plot


@task(cache_policy=NO_CACHE)
def alert(
    runtime: Runtime,
    decision: Decision,
    drift: DriftResult,
    estimated: PerformanceEstimate,
    champion: ChampionReference,
    built: WindowReport | None,
    run_id: str,
    renotify: timedelta,
    now: datetime,
) -> str:
    """Email the alert unless it repeats an ongoing one; never lose it (outbox)."""
    state_path = runtime.settings.state_dir / "alert_state.json"
    state = load_alert_state(state_path)
    check = should_send(decision, state, now, renotify_after=renotify)
    if not check.send:
        save_alert_state(update_alert_state(state, decision, now, sent=False), state_path)
        return f"not sent: {check.reason}"
    s = runtime.settings
    smtp = SmtpConfig(**s.smtp.model_dump(), outbox_dir=s.outbox_dir)
    message = build_alert_email(
        AlertContent(
            dataset=runtime.config.name,
            decision=decision,
            drift=drift,
            estimate=estimated,
            reference_performance=champion.performance,
            mlflow_run_url=_mlflow_run_url(s.mlflow_ui_url, run_id),
            flow_run_url=_flow_run_url(),
            report_path=built.html if built else None,
            created_at=now,
        ),
        sender=s.smtp.sender,
        recipients=s.smtp.recipients,
    )
    try:
        delivery = send_alert(message, smtp)
    except AlertDeliveryError as error:
        save_alert_state(update_alert_state(state, decision, now, sent=True), state_path)
        raise RuntimeError(f"drift alert not delivered, kept in the outbox: {error}") from error
    save_alert_state(update_alert_state(state, decision, now, sent=True), state_path)
    return f"sent to {', '.join(s.smtp.recipients)} ({delivery.message_id})"


def _mlflow_run_url(base: str | None, run_id: str) -> str | None:
    return f"{base.rstrip('/')}/#/experiments/0/runs/{run_id}" if base else None


def _flow_run_url() -> str | None:
    return flow_run.get_flow_run_ui_url() if os.environ.get("PREFECT_API_URL") else None


def start_retraining(
    runtime: Runtime, params: MonitorParams, decision: Decision, end: datetime
) -> TrainParams:
    return TrainParams(
        start=end - timedelta(days=params.retrain_lookback_days),
        end=end,
        trigger="drift",
        reason="; ".join(decision.reasons),
    )


@flow(name="monitor", flow_run_name=window_run_name("monitor"))
def monitor_flow(
    params: MonitorParams | None = None,
) -> MonitorOutcome:
    """Check one window of the prediction log and act on what it shows."""
    params = params or MonitorParams()
    runtime = get_runtime()
    logger = get_run_logger()
    start, end = resolve_window(params.start, params.end, params.window_hours)
    now = max(end, datetime.now(UTC)) if params.end is None else end
    window = load_log(runtime, start, end)
    if window.empty:
        raise ValueError(f"the prediction log has no rows between {start} and {end}: score first")
    lag = timedelta(hours=params.label_lag_hours)
    labelled = load_log(runtime, start - lag, end - lag)
    champion = load_champion_reference(runtime, params.policy.metric)
    drift = detect_drift(runtime, champion, window, params.drift)
    drift = attach_realized(runtime, drift, labelled)
    estimated = estimate(runtime, window)
    decision = decide_action(runtime, drift, estimated, champion, params.policy, now)
    built, run_id = report(runtime, champion, window, drift, estimated, decision, params.report)
    record_history(runtime, drift, estimated, decision, run_id)
    email = "disabled"
    if params.send_email and decision.action != "none":
        email = alert(
            runtime,
            decision,
            drift,
            estimated,
            champion,
            built,
            run_id,
            timedelta(hours=params.renotify_hours),
            now,
        )
    outcome = dict(
        window_start=start,
        window_end=end,
        model_version=champion.version,
        n_rows=len(window),
        drifted=drift.drifted_modalities,
        p_values={k: m.p_value for k, m in drift.modalities.items()},
        estimated_accuracy=estimated.expected_accuracy,
        realized_accuracy=drift.realized.accuracy if drift.realized else None,
        action=decision.action,
        reasons=decision.reasons,
        email=email,
        mlflow_run_id=run_id,
        report_html=str(built.html) if built else None,
    )
    if decision.action == "retrain" and params.act:
        train_params = start_retraining(runtime, params, decision, end)
        if os.environ.get("PREFECT_API_URL"):
            from prefect.deployments import run_deployment

            run = run_deployment(
                RETRAIN_DEPLOYMENT,
                parameters={"params": json.loads(train_params.model_dump_json())},
                timeout=0,
                tags=["drift", *drift.drifted_modalities],
            )
            outcome["retrain_flow_run"] = str(run.id)
            logger.info("retraining requested: flow run %s", run.id)
        else:
            trained = train_flow(train_params)
            outcome["retrain_version"] = trained.version
            outcome["retrain_promoted"] = trained.promoted
    result = MonitorOutcome(**outcome)
    create_markdown_artifact(key="monitor-summary", markdown=_summary_markdown(result))
    return result


def _summary_markdown(outcome: MonitorOutcome) -> str:
    rows = "\n".join(
        f"| {name} | {p:.3g} | {'yes' if name in outcome.drifted else 'no'} |"
        for name, p in outcome.p_values.items()
    )
    realized = "n/a" if outcome.realized_accuracy is None else f"{outcome.realized_accuracy:.3f}"
    return (
        f"### Monitor {outcome.window_start:%Y-%m-%d %H:%M} to {outcome.window_end:%Y-%m-%d %H:%M}"
        f" (v{outcome.model_version}, {outcome.n_rows} rows)\n\n"
        f"| modality | p-value | drifted |\n|---|---|---|\n{rows}\n\n"
        f"Estimated accuracy {outcome.estimated_accuracy:.3f}, realized (lagged) {realized}.\n\n"
        f"**Decision: {outcome.action}** — {'; '.join(outcome.reasons) or 'no issue'}\n\n"
        f"Email: {outcome.email}\n"
    )
