"""The ``monitor`` flow: assess a window, record the assessment, act on it, mail it.

A table of contents: each task is a thin adapter around one plain function of
``monitoring/``. The order is the reliability contract:

1. re-send what earlier runs left in the outbox;
2. assess the window (drift, the label-free estimate with its trust signal, realized
   performance of the labelled window, decision) without writing anything;
3. explain a drifted window (the rows, regions and columns that drive the drift), then
   report it (Evidently HTML with the explanation page beside it, the window's MLflow
   run, replaced on a re-run);
4. act (a retrain request, idempotent by the window's key) *before* recording that it
   happened;
5. record the policy state and the drift history;
6. mail it (one template per kind: alert, retrain started, retrain result, reminder); a
   failed email is kept in the outbox and never cancels the action.

Re-monitoring a window already decided for the same model version replays the recorded
decision: no state changes, no second retrain, no second email.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.encoders import ImageDecodeError, decode_image
from features.errors import EmptyWindowError, NoChampionError
from features.ingest import read_raw
from features.state_io import atomic_write_text, read_state
from features.store import read_labels
from flows.retries import retry_unless_permanent
from flows.runtime import Runtime, get_runtime, resolve_window, window_run_name
from flows.train import (
    DRIFT_REFERENCE_ARTIFACT,
    TrainOutcome,
    TrainParams,
    registered_model_name,
    train_flow,
)
from monitoring.alerts import (
    AlertContent,
    AlertDeliveryError,
    EmailKind,
    RetrainSummary,
    SmtpConfig,
    build_alert_email,
    load_alert_state,
    save_alert_state,
    save_to_outbox,
    send_alert,
    send_outbox,
    should_send,
    update_alert_state,
)
from monitoring.assessment import ChampionInfo, WindowAssessment, assess_window
from monitoring.drift import DriftConfig, DriftReference
from monitoring.estimators import EstimatorConfig, EstimatorReference, fit_estimator_reference
from monitoring.explain import DriftExplanation, ExplainConfig, explain_drift
from monitoring.policy import PolicyConfig, PolicyState, WindowRecord
from monitoring.reports import (
    POLICY_RECORD_TAG,
    LoggedWindow,
    WindowReport,
    build_window_report,
    history_from_runs,
    load_history,
    log_window_report,
    plot_drift_history,
    render_summary_markdown,
    report_directory,
    save_history,
    upsert_history,
)
from monitoring.reports.explanation import (
    RawExamples,
    explanation_lines,
    write_explanation_page,
)
from monitoring.scoring import MODEL_VERSION, join_labels, read_prediction_log
from training.registry import REFERENCE_ARTIFACT, REFERENCE_ROWS_TAG, connect, current_champion

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
        "window this much earlier, and shown as that window's.",
    )
    drift: DriftConfig = Field(default_factory=DriftConfig)
    estimator: EstimatorConfig = Field(
        default_factory=EstimatorConfig,
        description="The label-free performance estimator (method: cbpe, atc, doc, "
        "iw_cbpe or distance_checked) and the bounds past which its estimate is untrusted.",
    )
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
    explain: bool = Field(
        default=True,
        description="On a drifted window, find the rows, regions and columns that drive "
        "the drift (report page and email lines).",
    )
    raw_path: str | None = Field(
        default=None,
        description="Raw rows to show drift examples from (text snippets, thumbnails); "
        "default: settings.raw_data_path. Without it, examples are shown by entity id.",
    )


class MonitorOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    window_start: datetime
    window_end: datetime
    model_version: str
    n_rows: int
    drifted: list[str]
    p_values: dict[str, float]
    estimated_accuracy: float
    realized_accuracy: float | None = Field(
        description="Realized accuracy of the labelled window (see realized_window)."
    )
    realized_window: datetime | None = Field(
        default=None, description="Start of the window whose labels realized_accuracy is of."
    )
    realized_version: str | None = Field(
        default=None, description="The version whose predictions those labels scored."
    )
    action: str
    reasons: list[str]
    replayed: bool = False
    email: str
    mlflow_run_id: str | None
    report_html: str | None
    reference_note: str = ""
    retrain_version: str | None = None
    retrain_promoted: bool | None = None
    retrain_flow_run: str | None = None


class ChampionReference(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    info: ChampionInfo
    reference: pd.DataFrame
    drift_reference: DriftReference

    @property
    def version(self) -> str:
        return self.info.version


class RetrainRequest(BaseModel):
    """What the monitor did about a retrain decision."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    version: str | None = None
    promoted: bool | None = None
    verdict: str = ""
    flow_run: str | None = None
    reused: bool = False
    review: str = Field(
        default="", description="Issue 12: why a retrain was blocked or awaits approval."
    )
    blocked: bool = Field(
        default=False, description="The integrity check blocked it: nothing was trained."
    )

    def summary(self) -> RetrainSummary:
        return RetrainSummary(
            version=self.version,
            promoted=self.promoted,
            verdict=self.verdict,
            flow_run=self.flow_run,
            blocked=(self.review or self.verdict) if self.blocked else "",
        )

    def note(self) -> str:
        if self.flow_run is not None:
            return f"retraining requested: Prefect flow run {self.flow_run} (request {self.request_id})"
        if self.review and not self.version:
            return self.review
        verdict = "promoted to champion" if self.promoted else "not promoted by the gate"
        again = " (finished earlier for this request)" if self.reused else ""
        review = f". {self.review}" if self.review else ""
        return f"retrained: v{self.version} {verdict}{again}{review}"


@task(cache_policy=NO_CACHE)
def resend_outbox(runtime: Runtime) -> str:
    """Deliver what earlier runs could not; never fails the run."""
    s = runtime.settings
    if not any(s.outbox_dir.glob("*.eml")):
        return "outbox empty"
    logger = get_run_logger()
    try:
        smtp = SmtpConfig(**s.smtp.model_dump(), outbox_dir=s.outbox_dir)
        result = send_outbox(smtp)
    except (ValidationError, OSError) as error:
        logger.error("outbox not sent: %s", error)
        return f"outbox not sent: {error}"
    if result.failed:
        logger.error("outbox: %d message(s) still undelivered", len(result.failed))
    return f"outbox: {len(result.sent)} sent, {len(result.failed)} still waiting"


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def load_log(runtime: Runtime, start: datetime, end: datetime, labels: bool) -> pd.DataFrame:
    """Prediction-log rows of the window, with the labels that have arrived if asked."""
    log = read_prediction_log(runtime.config, runtime.settings.prediction_log_dir, start, end)
    if log.empty or not labels:
        return log
    found = read_labels(runtime.config, runtime.settings.labels_dir, start, end)
    return join_labels(log, found, runtime.config)


def champion_reference_dir(runtime: Runtime, name: str, version: str) -> Path:
    """Where a version's reference sample and drift reference are kept once downloaded
    (in the data directory, which every worker shares)."""
    return runtime.settings.data_dir / "models" / f"{name}-reference" / version


@task(
    retries=2,
    retry_delay_seconds=5,
    timeout_seconds=300,
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_unless_permanent,
)
def load_champion_reference(runtime: Runtime, metric: str) -> ChampionReference:
    """The champion's reference sample, fitted drift reference and reference performance
    (downloaded once per version into the data directory)."""
    client = connect(runtime.settings.tracking_uri)
    name = registered_model_name(runtime)
    version = current_champion(client, name)
    if version is None:
        raise NoChampionError(f"{name} has no champion: train and promote a model first")
    run_id = client.get_model_version(name, version).run_id
    cache = champion_reference_dir(runtime, name, version)
    if not (cache / "drift_reference.npz").exists():
        with tempfile.TemporaryDirectory(dir=runtime.settings.data_dir) as tmp:
            sample = client.download_artifacts(run_id, REFERENCE_ARTIFACT, tmp)
            fitted = client.download_artifacts(run_id, DRIFT_REFERENCE_ARTIFACT, tmp)
            cache.mkdir(parents=True, exist_ok=True)
            Path(sample).rename(cache / "reference.parquet")
            Path(fitted, "drift_reference.npz").rename(cache / "drift_reference.npz")
    run = client.get_run(run_id)
    info = ChampionInfo(
        name=name,
        version=version,
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        performance=run.data.metrics[f"test_{metric}"],
        reference_note=run.data.tags.get(REFERENCE_ROWS_TAG, ""),
    )
    return ChampionReference(
        info=info,
        reference=pd.read_parquet(cache / "reference.parquet"),
        drift_reference=DriftReference.load(cache / "drift_reference.npz"),
    )


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def version_references(runtime: Runtime, labelled: pd.DataFrame, metric: str) -> dict[str, float]:
    """Each version's reference metric, for the versions that scored the labelled window."""
    if labelled.empty or MODEL_VERSION not in labelled:
        return {}
    client = connect(runtime.settings.tracking_uri)
    name = registered_model_name(runtime)
    out = {}
    for version in sorted(labelled[MODEL_VERSION].astype(str).unique()):
        try:
            run_id = client.get_model_version(name, version).run_id
            out[version] = client.get_run(run_id).data.metrics[f"test_{metric}"]
        except Exception:  # a deleted version: its realized metric is shown without a reference
            continue
    return out


def _policy_path(runtime: Runtime) -> Path:
    return runtime.settings.state_dir / "policy_state.json"


def _policy_from_runs(runtime: Runtime) -> PolicyState:
    """Rebuild the policy state from the monitoring runs' records (their source of truth)."""
    client = connect(runtime.settings.tracking_uri)
    experiment = client.get_experiment_by_name(_monitoring_experiment(runtime))
    if experiment is None:
        return PolicyState()
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`mmops.kind` = 'monitoring_window'",
        max_results=10_000,
    )
    records = [
        WindowRecord.model_validate_json(run.data.tags[POLICY_RECORD_TAG])
        for run in runs
        if POLICY_RECORD_TAG in run.data.tags
    ]
    records.sort(key=lambda r: r.order)
    return PolicyState(history=records, retrains=[r.at for r in records if r.action == "retrain"])


@task(
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def load_policy_state(runtime: Runtime) -> PolicyState:
    return read_state(
        _policy_path(runtime),
        lambda p: PolicyState.from_json(p.read_text(encoding="utf-8")),
        PolicyState,
        rebuild=lambda: _policy_from_runs(runtime),
        recovery="Delete it to start the policy afresh (persistence and cooldowns restart).",
    )


@task(cache_policy=NO_CACHE)
def assess(
    runtime: Runtime,
    champion: ChampionReference,
    window: pd.DataFrame,
    labelled: pd.DataFrame,
    references: dict[str, float],
    state: PolicyState,
    params: MonitorParams,
    bounds: tuple[datetime, datetime, datetime, datetime],
    now: datetime,
) -> WindowAssessment:
    start, end, labelled_start, labelled_end = bounds
    estimator_reference: EstimatorReference | None = None
    try:
        estimator_reference = fit_estimator_reference(
            champion.reference, champion.drift_reference, params.estimator
        )
    except ValueError as error:  # an unlabelled reference: CBPE, marked untrusted
        get_run_logger().warning(
            "v%s's reference cannot calibrate the %s estimator (%s): falling back to CBPE",
            champion.version,
            params.estimator.method,
            error,
        )
    return assess_window(
        dataset=runtime.config,
        window=window,
        window_start=start,
        window_end=end,
        champion=champion.info,
        drift_reference=champion.drift_reference,
        state=state,
        policy=params.policy,
        drift_config=params.drift,
        labelled=labelled,
        labelled_start=labelled_start,
        labelled_end=labelled_end,
        version_performance=references,
        estimator_reference=estimator_reference,
        estimator=params.estimator,
        now=now,
        seed=runtime.settings.seed,
    )


def _monitoring_experiment(runtime: Runtime) -> str:
    return f"{runtime.config.name}-monitoring"


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_permanent,
    timeout_seconds=300,
    cache_policy=NO_CACHE,
)
def report(
    runtime: Runtime,
    champion: ChampionReference,
    window: pd.DataFrame,
    assessment: WindowAssessment,
    build_html: bool,
    explained: WindowExplanation | None = None,
) -> tuple[WindowReport | None, LoggedWindow]:
    """The Evidently report and the window's MLflow run (replacing an earlier one)."""
    explained = explained or WindowExplanation()
    built = None
    if build_html:
        built = build_window_report(
            champion.reference,
            window,
            runtime.config,
            assessment,
            report_directory(runtime.settings.data_dir, assessment.window_start),
            drift_reference=champion.drift_reference,
            seed=runtime.settings.seed,
            explanations=explained.lines,
        )
    logged = log_window_report(
        runtime.settings.tracking_uri,
        _monitoring_experiment(runtime),
        built,
        assessment,
        tags={"mmops.flow_run": str(flow_run.get_id() or "")},
        artifact_location=runtime.artifact_location,
    )
    if explained.page is not None:
        connect(runtime.settings.tracking_uri).log_artifact(
            logged.run_id, str(explained.page), "report"
        )
    return built, logged


def _raw_examples(
    runtime: Runtime,
    params: MonitorParams,
    explanation: DriftExplanation,
    start: datetime,
    end: datetime,
) -> RawExamples | None:
    """The raw text and pixels of the rows the explanation points at (best effort)."""
    config = runtime.config
    path = Path(params.raw_path) if params.raw_path else runtime.settings.raw_data_path
    entities = {
        r.entity
        for e in explanation.embeddings.values()
        for r in [*e.top_rows, *(x for c in e.clusters for x in c.examples)]
        if r.entity is not None
    }
    if not entities or not path.exists():
        return None
    raw = read_raw(path, config, start, end)
    if config.entity_key not in raw:
        return None
    raw = raw[raw[config.entity_key].astype(str).isin(entities)]
    texts: dict[str, dict[str, str]] = {}
    images: dict[str, dict[str, object]] = {}
    for _, row in raw.iterrows():
        entity = str(row[config.entity_key])
        for column in config.text_columns:
            if isinstance(row.get(column), str):
                texts.setdefault(entity, {})[column] = row[column]
        for column in config.image_columns:
            value = row.get(column)
            if value is None or (isinstance(value, float) and pd.isna(value)):
                continue
            try:
                image = decode_image(value, config.image_root, size=64)
            except ImageDecodeError:
                continue  # a bad image is shown by its entity id
            images.setdefault(entity, {})[column] = np.asarray(image)
    return RawExamples(texts=texts, images=images)


class WindowExplanation(BaseModel):
    """What drives a window's drift: email lines and the page beside the report."""

    model_config = ConfigDict(frozen=True)

    lines: list[str] = Field(default_factory=list)
    page: Path | None = None


@task(cache_policy=NO_CACHE)
def explain(
    runtime: Runtime,
    params: MonitorParams,
    champion: ChampionReference,
    window: pd.DataFrame,
    assessment: WindowAssessment,
) -> WindowExplanation:
    """What drives a drifted window's drift (rows, regions, columns). Never fails the run:
    an explanation is a courtesy, the decision does not depend on it."""
    drifted = set(assessment.drift.drifted_modalities)
    if not params.explain or not drifted:
        return WindowExplanation()
    config = runtime.config
    columns = [c for c in config.text_columns if "text" in drifted] + [
        c for c in config.image_columns if "image" in drifted
    ]
    try:
        explanation = explain_drift(
            champion.drift_reference,
            window,
            ExplainConfig(seed=runtime.settings.seed),
            columns=columns,
        )
        raw = _raw_examples(
            runtime, params, explanation, assessment.window_start, assessment.window_end
        )
        page = None
        if params.report:
            page = write_explanation_page(
                explanation,
                report_directory(runtime.settings.data_dir, assessment.window_start),
                raw,
            )
        return WindowExplanation(lines=explanation_lines(explanation, raw), page=page)
    except Exception as error:  # noqa: BLE001 - logged; the alert still goes out
        get_run_logger().warning("drift explanation failed: %s", error)
        return WindowExplanation()


def _episode_start(assessment: WindowAssessment) -> datetime | None:
    """Start of the drift episode this window belongs to (for the new reference)."""
    if not assessment.drift.drifted_modalities:
        return None
    start = assessment.window_start
    earlier = sorted(
        (
            r
            for r in assessment.decision.state.history
            if r.model_version == assessment.champion.version
            and r.window_start is not None
            and r.window_start < assessment.window_start
        ),
        key=lambda r: r.order,
        reverse=True,
    )
    for record in earlier:
        if not record.drifted:
            break
        start = record.window_start
    return start


def _request_id(assessment: WindowAssessment) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"{assessment.dataset}-retrain-{assessment.key}")


@task(cache_policy=NO_CACHE)
def act(
    runtime: Runtime, params: MonitorParams, assessment: WindowAssessment
) -> RetrainRequest | None:
    """Start the retrain the decision asks for, before anything records that it happened.

    The request carries the window's key: a re-run of a half-finished monitor run finds
    the earlier request (the deployment's idempotency key, or the training run tagged
    with it) instead of training twice.
    """
    decision = assessment.decision
    if decision.action != "retrain" or decision.replayed or not params.act:
        return None
    request_id = _request_id(assessment)
    train_params = TrainParams(
        start=assessment.window_end - timedelta(days=params.retrain_lookback_days),
        end=assessment.window_end,
        trigger="drift",
        reason="; ".join(decision.reasons),
        reference_since=_episode_start(assessment),
        request_id=request_id,
    )
    if os.environ.get("PREFECT_API_URL"):
        from prefect.deployments import run_deployment

        run = run_deployment(
            RETRAIN_DEPLOYMENT,
            parameters={"params": json.loads(train_params.model_dump_json())},
            timeout=0,
            tags=["drift", *assessment.drift.drifted_modalities],
            idempotency_key=request_id,
        )
        get_run_logger().info("retraining requested: flow run %s", run.id)
        return RetrainRequest(request_id=request_id, flow_run=str(run.id))
    trained: TrainOutcome = train_flow(train_params)
    return RetrainRequest(
        request_id=request_id,
        version=trained.version,
        promoted=trained.promoted,
        verdict=trained.reason,
        reused=trained.reused,
        review=trained.review,
        blocked=trained.blocked,
    )


@task(
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def record_policy(runtime: Runtime, assessment: WindowAssessment) -> None:
    """Save the policy state (after the action it records has been taken)."""
    if assessment.decision.replayed:
        return
    atomic_write_text(_policy_path(runtime), assessment.decision.state.to_json())


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def record_history(runtime: Runtime, assessment: WindowAssessment, logged: LoggedWindow) -> Path:
    """Upsert the window (and its labelled window's realized performance) into the drift
    history; log the drift-over-time plot with the window's run."""
    path = runtime.settings.state_dir / "drift_history.parquet"
    client = connect(runtime.settings.tracking_uri)
    before = load_history(
        path, rebuild=lambda: history_from_runs(client, _monitoring_experiment(runtime))
    )
    history = upsert_history(before, assessment)
    if not path.exists() or not (len(before) == len(history) and before.equals(history)):
        save_history(history, path)
    plot = plot_drift_history(history, runtime.settings.reports_dir / "drift_history.png")
    client.log_artifact(logged.run_id, str(plot), "history")
    return plot


def _flow_run_url() -> str | None:
    return flow_run.get_flow_run_ui_url() if os.environ.get("PREFECT_API_URL") else None


def _email_kind(retrain: RetrainRequest | None, reminder: bool) -> EmailKind:
    if retrain is not None and retrain.flow_run is not None:
        return "retrain_started"
    if retrain is not None and retrain.version is not None:
        return "retrain_result"
    return "reminder" if reminder else "alert"


def _episode(assessment: WindowAssessment) -> tuple[list[str], list[str]]:
    """Earlier windows of the ongoing episode (back to the last quiet one), and the
    retrains they triggered."""
    history = sorted(
        (
            r
            for r in assessment.decision.state.history
            if r.window_start is not None and r.window_start < assessment.window_start
        ),
        key=lambda r: r.order,
        reverse=True,
    )
    episode: list[WindowRecord] = []
    for record in history:
        if record.action == "none":
            break
        episode.append(record)
    episode.reverse()
    lines = [
        f"{r.window_start:%Y-%m-%d %H:%M} (v{r.model_version}): {r.action}, "
        f"{'drift in ' + ', '.join(r.drifted) if r.drifted else r.fingerprint or 'no drift'}"
        for r in episode
    ]
    retrains = [
        f"the window of {r.window_start:%Y-%m-%d %H:%M} triggered a retrain of "
        f"v{r.model_version} (`mmops status` shows the versions since)"
        for r in episode
        if r.action == "retrain"
    ]
    return lines[-10:], retrains


def _ui_hint(runtime: Runtime) -> str | None:
    """How to open the UI the links point to, when it is the local one."""
    uri = runtime.settings.tracking_uri
    if not uri.startswith(("sqlite:", "file:")) and "://" in uri:
        return None
    return f"the links open once the MLflow UI runs: mlflow ui --backend-store-uri {uri}"


@task(cache_policy=NO_CACHE)
def alert(
    runtime: Runtime,
    assessment: WindowAssessment,
    built: WindowReport | None,
    logged: LoggedWindow,
    retrain: RetrainRequest | None,
    params: MonitorParams,
    explanations: list[str] | None = None,
) -> str:
    """Mail the window's alert unless it repeats an ongoing one or was handled before.

    Every window updates the alert state (a quiet one ends the episode). A failed email
    is kept in the outbox, recorded as failed, and re-sent by the next run; it never
    fails the run, so the action already taken stands.
    """
    logger = get_run_logger()
    s = runtime.settings
    state_path = s.state_dir / "alert_state.json"
    state = load_alert_state(state_path)
    key, decision, now = assessment.key, assessment.decision, assessment.decided_at
    handled = state.outcome(key)
    if handled is not None:
        return f"already handled: {handled}"
    check = should_send(decision, state, now, renotify_after=timedelta(hours=params.renotify_hours))
    if not params.send_email or not check.send:
        why = "email disabled" if not params.send_email else check.reason
        outcome = "none" if decision.action == "none" else f"suppressed: {why}"
        save_alert_state(update_alert_state(state, decision, now, False, key, outcome), state_path)
        return "disabled" if not params.send_email else f"not sent: {check.reason}"
    notes = []
    if retrain is not None and not retrain.blocked:
        # The summary's Action line says what came of it; the notes add the detail: the
        # request of a retrain running elsewhere, the gate's verdict, the approval step.
        if retrain.flow_run is not None or retrain.reused:
            notes.append(retrain.note())
        if retrain.verdict:
            notes.append(f"the gate's verdict: {retrain.verdict}")
        if retrain.review:
            notes.append(retrain.review)
    if assessment.champion.reference_note:
        notes.append(
            f"drift reference of v{assessment.model_version}: {assessment.champion.reference_note}"
        )
    episode, episode_retrains = _episode(assessment)
    message = build_alert_email(
        AlertContent.from_assessment(
            assessment,
            kind=_email_kind(retrain, check.reminder),
            notes=notes,
            retrain=retrain.summary() if retrain is not None else None,
            episode=episode,
            explanations=explanations or [],
            episode_retrains=episode_retrains if check.reminder or retrain is None else [],
            mlflow_run_url=logged.url(s.mlflow_ui_url),
            report_url=logged.report_url(s.mlflow_ui_url) if built else None,
            flow_run_url=_flow_run_url(),
            ui_hint=_ui_hint(runtime) if s.mlflow_ui_url else None,
            report_path=built.html if built else None,
            report_file=str(built.html) if built else None,
            created_at=now,
        ),
        sender=s.smtp.sender,
        recipients=s.smtp.recipients,
    )
    try:
        smtp = SmtpConfig(**s.smtp.model_dump(), outbox_dir=s.outbox_dir)
        delivery = send_alert(message, smtp)
    except ValidationError as error:
        path = save_to_outbox(message, s.outbox_dir)
        reason = "; ".join(e["msg"] for e in error.errors())
        outcome = f"failed: SMTP settings invalid ({reason}); kept in {path}"
    except AlertDeliveryError as error:
        outcome = f"failed: {error}"
    else:
        outcome = f"sent to {', '.join(s.smtp.recipients)} ({delivery.message_id})"
    if outcome.startswith("failed"):
        logger.error("drift alert not delivered (re-sent by the next run): %s", outcome)
    save_alert_state(update_alert_state(state, decision, now, True, key, outcome), state_path)
    return outcome


@flow(name="monitor", flow_run_name=window_run_name("monitor"))
def monitor_flow(params: MonitorParams | None = None) -> MonitorOutcome:
    """Check one window of the prediction log and act on what it shows."""
    params = params or MonitorParams()
    runtime = get_runtime()
    start, end = resolve_window(params.start, params.end, params.window_hours)
    now = max(end, datetime.now(UTC)) if params.end is None else end
    lag = timedelta(hours=params.label_lag_hours)
    resend_outbox(runtime)
    window = load_log(runtime, start, end, labels=False)
    if window.empty:
        raise EmptyWindowError(
            f"the prediction log has no rows between {start} and {end}: score first"
        )
    labelled = load_log(runtime, start - lag, end - lag, labels=True)
    champion = load_champion_reference(runtime, params.policy.metric)
    references = version_references(runtime, labelled, params.policy.metric)
    state = load_policy_state(runtime)
    bounds = (start, end, start - lag, end - lag)
    assessment = assess(runtime, champion, window, labelled, references, state, params, bounds, now)
    explained = explain(runtime, params, champion, window, assessment)
    built, logged = report(runtime, champion, window, assessment, params.report, explained)
    retrain = act(runtime, params, assessment)
    record_policy(runtime, assessment)
    record_history(runtime, assessment, logged)
    email = alert(runtime, assessment, built, logged, retrain, params, explained.lines)
    result = _outcome(assessment, email, logged, built, retrain)
    extra = [f"Email: {email}"] + ([retrain.note()] if retrain else [])
    create_markdown_artifact(
        key="monitor-summary", markdown=render_summary_markdown(assessment, extra)
    )
    return result


def _outcome(
    assessment: WindowAssessment,
    email: str,
    logged: LoggedWindow,
    built: WindowReport | None,
    retrain: RetrainRequest | None,
) -> MonitorOutcome:
    labelled = assessment.main_realized
    return MonitorOutcome(
        window_start=assessment.window_start,
        window_end=assessment.window_end,
        model_version=assessment.model_version,
        n_rows=assessment.n_rows,
        drifted=assessment.drift.drifted_modalities,
        p_values={k: m.p_value for k, m in assessment.drift.modalities.items()},
        estimated_accuracy=assessment.estimate.expected_accuracy,
        realized_accuracy=labelled.performance.accuracy if labelled else None,
        realized_window=labelled.window_start if labelled else None,
        realized_version=labelled.model_version if labelled else None,
        action=assessment.decision.action,
        reasons=assessment.decision.reasons,
        replayed=assessment.decision.replayed,
        email=email,
        mlflow_run_id=logged.run_id,
        report_html=str(built.html) if built else None,
        reference_note=assessment.champion.reference_note,
        retrain_version=retrain.version if retrain else None,
        retrain_promoted=retrain.promoted if retrain else None,
        retrain_flow_run=retrain.flow_run if retrain else None,
    )
