"""MLflow: run logging, registration, the champion/challenger gate, alias history, rollback.

Everything goes through an injected ``MlflowClient`` (no global tracking URI, no active
run), so two trainings in one process do not share state. Registry stages are deprecated:
versions carry aliases. MLflow keeps no history of alias moves (mlflow#2169), so every
move is recorded here three ways, all visible in the UI: a JSON list in the registered
model's tag ``mmops.alias_history``, tags on the versions involved, and a table in the
registered model's description.

Promotion and rollback run under a promotion lock (a file lock next to the SQLite
database in the embedded profile; a PostgreSQL advisory lock, :func:`postgres_promotion_lock`,
against a remote registry) and re-read the champion just before moving it, so two
trainings finishing together never both become champion.

Registry moves are idempotent and reconciled: the move's intent (the event, the new
lineage) is written to the registered model's tag ``mmops.pending_move`` first, then the
alias moves, then the lineage and the history are written and the intent is cleared. A
retry, or the next promotion or rollback, completes a half-done move
(:func:`reconcile_registry`). Versions are registered with the run id as idempotency key:
a retry finds the version of its run instead of creating a duplicate. ``challenger`` is
cleared from a version when it becomes champion, and :func:`sweep_orphaned_versions`
takes the aliases off versions a crash left half-registered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlparse

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from pydantic import BaseModel, ConfigDict, Field

from features.errors import NoChampionError
from features.schema import DatasetConfig
from training.evaluate import (
    EvaluationResult,
    GateConfig,
    PromotionDecision,
    build_reference_sample,
    check_promotion,
    evaluate_model,
    plot_confusion,
    plot_reliability,
)
from training.model import MultimodalClassifier, load_classifier
from training.model_card import render_model_card, training_warnings
from training.pyfunc import CLASSIFIER_ARTIFACT, save_pyfunc
from training.train import TrainResult

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "mmops.alias_history"
LINEAGE_TAG = "mmops.champion_lineage"
PENDING_TAG = "mmops.pending_move"
STATE_TAG = "mmops.state"
MODEL_ARTIFACT_PATH = "model"
REFERENCE_ARTIFACT = "reference/reference.parquet"
MAX_TAG_CHARS = 5000
NOTE_TAG = "mlflow.note.content"
KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
HISTORY_ARTIFACT = "registry/alias_history.csv"
LOGGED_MODEL_TYPE = "mmops-fusion"
# The gate's verdict table opens each version's description, between these markers.
VERDICT_START = "<!-- gate verdict -->"
VERDICT_END = "<!-- /gate verdict -->"
Trigger = Literal["scheduled", "drift", "manual"]
T = TypeVar("T")
PromotionLock = Callable[[str], AbstractContextManager]
"""Maps a registered model's name to the context manager that holds its promotion lock."""
_PERMANENT = {
    ErrorCode.Name(code)
    for code in (INVALID_PARAMETER_VALUE, RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST)
}


class RegistryUnavailableError(RuntimeError):
    """The tracking server / registry could not be reached after bounded retries."""


class RegistrationError(RuntimeError):
    """Registering a version failed; the half-registered version was removed."""


class RetryConfig(BaseModel):
    """Bounded retries with exponential backoff for tracking-server calls."""

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(default=4, ge=1, description="Tries per call, the first included.")
    initial_delay_s: float = Field(default=0.5, ge=0.0, description="Wait after the first failure.")
    backoff: float = Field(default=2.0, ge=1.0, description="Multiplier of the wait per failure.")
    max_delay_s: float = Field(default=8.0, ge=0.0, description="Longest single wait.")


class AliasEvent(BaseModel):
    """One alias move: when, what, why, and who held the alias before."""

    model_config = ConfigDict(frozen=True)

    at: str = Field(description="UTC time, ISO 8601.")
    alias: str
    action: Literal["assign", "promote", "rollback", "force"]
    version: str
    previous: str | None = Field(description="Version that held the alias before, if any.")
    reason: str
    metrics: dict[str, float] = Field(default_factory=dict)


class RunRecord(BaseModel):
    """A logged training run."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    experiment_id: str
    artifact_uri: str
    model_source: str = Field(
        description="Artifact location of the pyfunc model (its LoggedModel's, registered as "
        "the version's source: a ``models:/`` source makes MLflow's SQL registry look the "
        "model up through the global tracking URI)."
    )
    model_id: str | None = Field(
        default=None, description="The MLflow LoggedModel holding the pyfunc model."
    )
    model_card: str


# Connection and retries ------------------------------------------------------------------
def default_tracking_uri(data_dir: Path) -> str:
    """Embedded default: a SQLite file under the data directory."""
    return f"sqlite:///{Path(data_dir).resolve() / 'mlflow.db'}"


def default_artifact_location(data_dir: Path) -> str:
    return (Path(data_dir).resolve() / "mlartifacts").as_uri()


def is_transient(error: BaseException) -> bool:
    """Whether a failed tracking call is worth retrying (connection trouble, locks, 5xx)."""
    if isinstance(error, MlflowException):
        return error.error_code not in _PERMANENT
    return isinstance(error, ConnectionError | TimeoutError | OSError)


def call_with_retry(
    fn: Callable[[], T], retry: RetryConfig, what: str, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Call ``fn``; retry transient failures with backoff.

    Raises:
        RegistryUnavailableError: every attempt failed transiently.
        MlflowException: a permanent failure (bad parameter, missing resource), at once.
    """
    from tenacity import (
        RetryError,
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        wait_exponential,
    )

    def warn(state) -> None:
        log.warning(
            "%s failed (attempt %d/%d), retrying: %s",
            what,
            state.attempt_number,
            retry.attempts,
            state.outcome.exception(),
        )

    retrying = Retrying(
        stop=stop_after_attempt(retry.attempts),
        wait=wait_exponential(
            multiplier=retry.initial_delay_s, exp_base=retry.backoff, max=retry.max_delay_s
        ),
        retry=retry_if_exception(is_transient),
        before_sleep=warn,
        sleep=sleep,
    )
    try:
        return retrying(fn)
    except RetryError as error:
        last = error.last_attempt.exception()
        raise RegistryUnavailableError(
            f"{what}: tracking server unavailable after {retry.attempts} attempts: "
            f"{str(last)[:300]}"
        ) from last


def connect(tracking_uri: str, retry: RetryConfig | None = None) -> MlflowClient:
    """A client for ``tracking_uri`` (tracking and registry), checked reachable.

    Raises:
        RegistryUnavailableError: the server did not answer within the retry budget.
    """
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    call_with_retry(
        lambda: client.search_experiments(max_results=1), retry or RetryConfig(), "connect"
    )
    return client


def ensure_experiment(
    client: MlflowClient,
    name: str,
    artifact_location: str | None = None,
    retry: RetryConfig | None = None,
    description: str | None = None,
) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) if missing.

    The experiment is marked a model-training one (tag ``mlflow.experimentKind``) unless
    it says otherwise: MLflow 3's UI otherwise guesses, and may show its GenAI views.

    Args:
        description: markdown shown at the top of the experiment's page (the tag
            ``mlflow.note.content``); set when it differs from the current one.
    """
    retry = retry or RetryConfig()
    found = call_with_retry(lambda: client.get_experiment_by_name(name), retry, "get experiment")
    if found is not None:
        experiment_id = found.experiment_id
        current = found.tags.get(NOTE_TAG)
    else:
        current = None
        try:
            experiment_id = call_with_retry(
                lambda: client.create_experiment(name, artifact_location=artifact_location),
                retry,
                "create experiment",
            )
        except MlflowException as error:  # created concurrently
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment_id = client.get_experiment_by_name(name).experiment_id
    wanted = {KIND_TAG: MODEL_TRAINING_KIND} if found is None or KIND_TAG not in found.tags else {}
    if description is not None and description != current:
        wanted[NOTE_TAG] = description
    for key, value in wanted.items():
        call_with_retry(
            lambda k=key, v=value: client.set_experiment_tag(experiment_id, k, v),
            retry,
            "describe experiment",
        )
    return experiment_id


def training_experiment_description(config: DatasetConfig, registered_model: str) -> str:
    """What the training experiment of ``config`` holds and how to read it."""
    return "\n".join(
        [
            f"Training runs of the **{config.name}** `{config.label}` classifier "
            f"(feature service `{config.feature_service_name}`), one run per training.",
            "",
            "- Run name: `<trigger> <first day>..<last day>` of the labelled rows; the "
            "trigger (scheduled, drift, manual) is also the tag `mmops.trigger`.",
            "- Each run's description: rows, test metrics against the majority baseline, "
            "warnings (a modality the model gains nothing from), the data-quality gate.",
            "- The **Models** column links the logged pyfunc model; its registered version of "
            f"`{registered_model}` carries the promotion gate's verdict in its description.",
            "- Artifacts: `model_card.md`, `plots/` (reliability, confusion), "
            "`evaluation/`, `validation/` (the Great Expectations results), `reference/` "
            "(the monitoring reference), `registry/alias_history.csv`.",
        ]
    )


def git_commit(repo_dir: Path | None = None) -> str | None:
    """The current git commit of ``repo_dir`` (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_dir or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# Run logging -----------------------------------------------------------------------------
def _flat_params(prefix: str, values: Mapping[str, object]) -> list[Param]:
    return [Param(f"{prefix}{k}", str(v)[:6000]) for k, v in values.items()]


REFERENCE_ROWS_TAG = "mmops.reference_rows"


def select_reference_rows(
    held_out: pd.DataFrame,
    timestamp: str,
    since: datetime | None,
    min_rows: int,
) -> tuple[pd.DataFrame, str]:
    """The held-out rows the monitoring reference is drawn from, and a note saying which.

    Args:
        held_out: rows the model was not fitted on.
        timestamp: their event-time column.
        since: keep only rows stamped from then on (the start of a shift), if enough.
        min_rows: fewer rows than this after ``since`` keep the whole held-out set.
    """
    if since is None:
        return held_out, f"all {len(held_out)} held-out rows"
    stamps = pd.to_datetime(held_out[timestamp], utc=True)
    recent = held_out[(stamps >= pd.Timestamp(since)).to_numpy()]
    if len(recent) >= min_rows:
        return (
            recent.reset_index(drop=True),
            f"{len(recent)} held-out rows stamped from {pd.Timestamp(since):%Y-%m-%d %H:%M} UTC "
            f"on (after the shift this retrain answers)",
        )
    return held_out, (
        f"all {len(held_out)} held-out rows: only {len(recent)} stamped after the shift's "
        f"start {pd.Timestamp(since):%Y-%m-%d %H:%M} UTC, fewer than {min_rows}"
    )


def log_training_run(
    client: MlflowClient,
    experiment_id: str,
    result: TrainResult,
    evaluation: EvaluationResult,
    config: DatasetConfig,
    trigger: Trigger = "manual",
    validation_summary: str | None = None,
    monitoring_thresholds: Mapping[str, float] | None = None,
    code_version: str | None = None,
    run_name: str | None = None,
    reference_max_rows: int = 5000,
    retry: RetryConfig | None = None,
    reference_since: datetime | None = None,
    reference_min_rows: int = 200,
    reason: str | None = None,
    validation_files: list[Path] | None = None,
) -> RunRecord:
    """Log one training run: params, metrics, plots, card, manifest, reference, pyfunc model.

    The monitoring reference is a sample of the held-out rows (validation + test). With
    ``reference_since`` (a drift retrain: when the shift began) it holds only the
    held-out rows stamped from then on, provided there are ``reference_min_rows`` of
    them, so the new champion is not judged against the world before the change; the
    run's ``mmops.reference_rows`` tag says which rows were used.

    Artifacts: ``model/`` (pyfunc), ``model_card.md``, ``plots/reliability.png``,
    ``plots/confusion_matrix.png``, ``manifest/training_manifest.json``,
    ``evaluation/evaluation.json``, ``reference/reference.parquet`` and, when given,
    ``validation/validation_summary.txt`` and ``validation_files`` (the Great
    Expectations result and its offline summary page) under ``validation/``. The
    pyfunc model is an MLflow LoggedModel (``models:/<model_id>``), an output of the run,
    so it shows in the experiment's Models tab and the run's Models column; its test
    metrics are linked to it. The run's description (``mlflow.note.content``) says what
    was trained, how well, and what to worry about. The run ends FINISHED, or FAILED on
    error.

    Raises:
        RegistryUnavailableError: the tracking server failed beyond the retry budget.
    """
    retry = retry or RetryConfig()
    tags = {
        "mmops.trigger": trigger,
        "mmops.dataset": config.name,
        "mmops.feature_service": config.feature_service_name,
        "mmops.data_hash": result.manifest.data_hash,
    }
    if code_version:
        tags["mlflow.source.git.commit"] = code_version
        tags["mmops.code_version"] = code_version
    tags[NOTE_TAG] = training_run_description(
        result, evaluation, config, trigger, reason, validation_summary
    )
    run = call_with_retry(
        lambda: client.create_run(experiment_id, tags=tags, run_name=run_name), retry, "create run"
    )
    run_id = run.info.run_id
    try:
        card = render_model_card(
            config,
            result.train_config,
            result.manifest,
            evaluation,
            monitoring_thresholds=monitoring_thresholds,
            validation_summary=validation_summary,
            code_version=code_version,
        )
        params = _flat_params("", result.train_config.model_dump(exclude={"show_progress"}))
        params += _flat_params(
            "data.",
            {
                "dataset": config.name,
                "feature_service": config.feature_service_name,
                "feature_service_version": config.feature_service_version,
                "rows_train": result.manifest.train.n_rows,
                "rows_validation": result.manifest.validation.n_rows,
                "rows_test": result.manifest.test.n_rows,
            },
        )
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in evaluation.flat_metrics("test").items()]
        metrics += [Metric(k, float(v), now, 0) for k, v in result.validation_metrics.items()]
        metrics += [
            Metric("train_seconds", result.train_seconds, now, 0),
            Metric("best_epoch", float(result.best_epoch), now, 0),
        ]
        for row in result.history:
            step = int(row["epoch"])
            metrics += [
                Metric("epoch_train_loss", row["train_loss"], now, step),
                Metric("epoch_val_loss", row["val_loss"], now, step),
            ]
        for start in range(0, len(metrics), 900):
            chunk = metrics[start : start + 900]
            call_with_retry(
                lambda c=chunk, p=params if start == 0 else []: client.log_batch(
                    run_id, metrics=c, params=p
                ),
                retry,
                "log metrics",
            )
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for sub in ("plots", "manifest", "evaluation", "reference", "validation"):
                (root / sub).mkdir()
            plot_reliability(evaluation, root / "plots" / "reliability.png")
            plot_confusion(evaluation, root / "plots" / "confusion_matrix.png")
            (root / "model_card.md").write_text(card, encoding="utf-8")
            (root / "manifest" / "training_manifest.json").write_text(
                result.manifest.model_dump_json(indent=2), encoding="utf-8"
            )
            (root / "evaluation" / "evaluation.json").write_text(
                evaluation.model_dump_json(indent=2), encoding="utf-8"
            )
            for path in validation_files or []:
                shutil.copy2(path, root / "validation" / Path(path).name)
            if validation_summary:
                (root / "validation" / "validation_summary.txt").write_text(
                    validation_summary, encoding="utf-8"
                )
            held_out, reference_note = select_reference_rows(
                result.splits.unseen, config.timestamp, reference_since, reference_min_rows
            )
            call_with_retry(
                lambda: client.set_tag(run_id, REFERENCE_ROWS_TAG, reference_note),
                retry,
                "tag reference rows",
            )
            reference = build_reference_sample(
                result.model,
                held_out,
                config.label,
                keep_columns=[
                    config.entity_key,
                    config.timestamp,
                    *config.tabular_columns,
                    *result.model.spec.input_columns,
                ],
                max_rows=reference_max_rows,
                seed=result.train_config.seed,
            )
            reference.to_parquet(root / REFERENCE_ARTIFACT, index=False)
            call_with_retry(lambda: client.log_artifacts(run_id, str(root)), retry, "log artifacts")
        model_id, model_location = log_pyfunc_model(
            client,
            experiment_id,
            run_id,
            result.model,
            result.splits.test,
            evaluation.flat_metrics("test"),
            tags={"mmops.dataset": config.name, "mmops.trigger": trigger},
            retry=retry,
        )
        call_with_retry(lambda: client.set_terminated(run_id, "FINISHED"), retry, "finish run")
    except BaseException:
        try:
            client.set_terminated(run_id, "FAILED")
        except Exception:  # the original error matters more than the cleanup
            log.exception("could not mark run %s FAILED", run_id)
        raise
    return RunRecord(
        run_id=run_id,
        experiment_id=experiment_id,
        artifact_uri=run.info.artifact_uri,
        model_source=model_location,
        model_id=model_id,
        model_card=card,
    )


def log_pyfunc_model(
    client: MlflowClient,
    experiment_id: str,
    run_id: str,
    model: MultimodalClassifier,
    example: pd.DataFrame | None,
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
    retry: RetryConfig | None = None,
) -> tuple[str, str]:
    """Log ``model`` as an MLflow LoggedModel produced by run ``run_id``; returns its id
    and artifact location.

    What ``mlflow.pyfunc.log_model`` does, through the injected client instead of the
    global tracking URI: create the LoggedModel, write the pyfunc with that id in its
    ``MLmodel``, upload it, mark it READY, record it as the run's output (the run's
    Models column) and link ``metrics`` to it (the Models tab's metric columns). A
    failure marks the LoggedModel FAILED.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    retry = retry or RetryConfig()
    logged = call_with_retry(
        lambda: client.create_logged_model(
            experiment_id,
            name=MODEL_ARTIFACT_PATH,
            source_run_id=run_id,
            tags=dict(tags or {}),
            model_type=LOGGED_MODEL_TYPE,
        ),
        retry,
        "create logged model",
    )
    model_id = logged.model_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / MODEL_ARTIFACT_PATH
            save_pyfunc(
                model,
                local,
                example,
                mlflow_model=Model(
                    artifact_path=logged.artifact_location,
                    model_uuid=model_id,
                    run_id=run_id,
                    model_id=model_id,
                ),
            )
            call_with_retry(
                lambda: client.log_model_artifacts(model_id, str(local)), retry, "upload model"
            )
        call_with_retry(
            lambda: client.finalize_logged_model(model_id, LoggedModelStatus.READY),
            retry,
            "finalize logged model",
        )
        call_with_retry(
            lambda: client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)]),
            retry,
            "link model to run",
        )
        now = int(time.time() * 1000)
        linked = [
            Metric(k, float(v), now, 0, model_id=model_id, run_id=run_id)
            for k, v in metrics.items()
            if "_slice_" not in k
        ]
        call_with_retry(lambda: client.log_batch(run_id, metrics=linked), retry, "link metrics")
    except BaseException:
        try:
            client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
        except Exception:  # the original error matters more than the cleanup
            log.exception("could not mark logged model %s FAILED", model_id)
        raise
    return model_id, logged.artifact_location


def training_run_description(
    result: TrainResult,
    evaluation: EvaluationResult,
    config: DatasetConfig,
    trigger: str,
    reason: str | None = None,
    validation_summary: str | None = None,
) -> str:
    """The training run's description (markdown): what was trained on which rows, how it
    did against the baseline and without each modality, and the warnings first."""
    m = result.manifest
    overall, baseline = evaluation.overall, evaluation.baseline
    lines: list[str] = []
    warnings = training_warnings(evaluation)
    if warnings:
        lines += [*(f"**Warning:** {w}" for w in warnings), ""]
    lines += [
        f"**{trigger.capitalize()} training** of the {config.name} `{config.label}` "
        f"classifier on labelled rows from {m.train.start} to {m.test.end} "
        f"(train {m.train.n_rows}, validation {m.validation.n_rows}, test {m.test.n_rows}; "
        f"best epoch {result.best_epoch}).",
    ]
    if reason:
        lines += ["", f"Why: {reason.strip()[:1500]}"]
    lines += [
        "",
        "| test set | accuracy | macro-F1 | ECE |",
        "|---|---|---|---|",
        f"| model | {overall.accuracy:.4f} | {overall.macro_f1:.4f} | {overall.ece or 0:.4f} |",
        f"| majority baseline | {baseline.accuracy:.4f} | {baseline.macro_f1:.4f} | - |",
    ]
    for modality, metrics in evaluation.ablation.items():
        lines.append(
            f"| without {modality} | {metrics.accuracy:.4f} | {metrics.macro_f1:.4f} | "
            f"{metrics.ece or 0:.4f} |"
        )
    if validation_summary:
        first = validation_summary.strip().splitlines()[0]
        lines += ["", f"Data-quality gate: {first[:300]} (full results under `validation/`)."]
    lines += ["", "Model card: `model_card.md`; the model: the Models column of this run."]
    return "\n".join(lines)[:MAX_TAG_CHARS]


# Alias history ---------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def alias_history(client: MlflowClient, name: str) -> list[AliasEvent]:
    """Recorded alias moves of registered model ``name``, oldest first."""
    model = client.get_registered_model(name)
    raw = model.tags.get(HISTORY_TAG)
    return [AliasEvent.model_validate(e) for e in json.loads(raw)] if raw else []


def _champion_lineage(client: MlflowClient, name: str) -> list[str]:
    raw = client.get_registered_model(name).tags.get(LINEAGE_TAG)
    return json.loads(raw) if raw else []


def _record(client: MlflowClient, name: str, event: AliasEvent) -> None:
    """Append ``event`` to the history tag (oldest dropped to fit), the version's tags and
    the registered model's description."""
    events = alias_history(client, name)
    key = (event.at, event.alias, event.action, event.version, event.previous)
    if not any((e.at, e.alias, e.action, e.version, e.previous) == key for e in events):
        events = [*events, event]  # a repeated call (a retry) appends nothing
    while True:
        payload = json.dumps([e.model_dump() for e in events], separators=(",", ":"))
        if len(payload) <= MAX_TAG_CHARS or len(events) == 1:
            break
        events = events[1:]
    client.set_registered_model_tag(name, HISTORY_TAG, payload[:MAX_TAG_CHARS])
    prefix = f"mmops.{event.alias}"
    client.set_model_version_tag(name, event.version, f"{prefix}.{event.action}_at", event.at)
    client.set_model_version_tag(
        name, event.version, f"{prefix}.{event.action}_reason", event.reason[:MAX_TAG_CHARS]
    )
    if event.previous:
        client.set_model_version_tag(
            name, event.previous, f"{prefix}.replaced_at", f"{event.at} by v{event.version}"
        )
    rows = [
        f"| {e.at} | {e.alias} | {e.action} | v{e.version} | "
        f"{'v' + e.previous if e.previous else '-'} | "
        f"{', '.join(f'{k}={v:.4f}' for k, v in e.metrics.items())} | "
        f"{e.reason[:200].replace('|', '/')} |"
        for e in events[-20:]
    ]
    description = "\n".join(
        [
            "Alias history (latest 20; full JSON in tag `mmops.alias_history`):",
            "",
            "| when (UTC) | alias | action | version | previous | metrics | reason |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    client.update_registered_model(name, description=description)
    _log_history_table(client, name, events, event.version)


def alias_history_frame(events: list[AliasEvent]) -> pd.DataFrame:
    """The alias history as a table, one row per move, oldest first."""
    return pd.DataFrame(
        [
            {
                # "2026-06-01 12:00:00", not ISO 8601: MLflow's CSV preview blanks the latter
                "when_utc": e.at.replace("T", " ").removesuffix("+00:00"),
                "alias": e.alias,
                "action": e.action,
                "version": f"v{e.version}",
                "previous": f"v{e.previous}" if e.previous else "",
                "reason": e.reason,
                **{f"metric.{k}": round(v, 6) for k, v in e.metrics.items()},
            }
            for e in events
        ],
        columns=["when_utc", "alias", "action", "version", "previous", "reason"]
        if not events
        else None,
    )


def _log_history_table(
    client: MlflowClient, name: str, events: list[AliasEvent], version: str
) -> None:
    """Write the whole history as ``registry/alias_history.csv`` into the run of the
    version that moved (the MLflow UI shows a CSV artifact as a table); rewritten, not
    appended, so a repeated call leaves the same file."""
    run_id = client.get_model_version(name, version).run_id
    if not run_id:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(HISTORY_ARTIFACT).name
        alias_history_frame(events).to_csv(path, index=False)
        client.log_artifact(run_id, str(path), str(Path(HISTORY_ARTIFACT).parent))


def _current_alias(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        if error.error_code in {
            ErrorCode.Name(RESOURCE_DOES_NOT_EXIST),
            ErrorCode.Name(INVALID_PARAMETER_VALUE),
        }:
            return None
        raise


def current_champion(client: MlflowClient, name: str) -> str | None:
    """The version holding ``champion`` (None when no version does)."""
    return _current_alias(client, name, CHAMPION)


def _lock_path_for(client: MlflowClient, name: str) -> Path | None:
    uri = getattr(client, "_registry_uri", None) or ""
    if uri.startswith("sqlite:///"):
        db = Path(urlparse(uri).path)
        return db.parent / f".{db.name}.{name}.promotion.lock"
    return None


def _lock_id(key: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` from a text key."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big", signed=True)


@contextmanager
def postgres_advisory_lock(
    dsn: str, key: str, timeout_s: float = 600.0, poll_s: float = 0.2
) -> Iterator[None]:
    """Hold a PostgreSQL session advisory lock named ``key`` (across hosts and processes).

    The lock belongs to a dedicated connection, so it is released when the block ends
    and also when the holder dies (its connection closes).

    Args:
        dsn: a libpq connection string or ``postgresql://`` URL (never logged).
        key: the lock's name, hashed to PostgreSQL's 64-bit advisory key.

    Raises:
        TimeoutError: another session held the lock for longer than ``timeout_s``.
    """
    import psycopg

    lock_id = _lock_id(key)
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + timeout_s
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_id,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"lock {key!r} held by another session for over {timeout_s} s")
            time.sleep(poll_s)
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))


def postgres_promotion_lock(dsn: str, timeout_s: float = 600.0) -> PromotionLock:
    """The promotion lock for a remote registry: one advisory lock per registered model,
    on the PostgreSQL server every worker reaches (the prod profile's)."""

    def lock(name: str) -> AbstractContextManager:
        return postgres_advisory_lock(dsn, f"mmops.promotion.{name}", timeout_s)

    return lock


def _promotion_lock(
    client: MlflowClient,
    name: str,
    lock_path: Path | None,
    timeout_s: float,
    lock: PromotionLock | None = None,
) -> AbstractContextManager:
    """``lock`` when given; else a file lock (``lock_path`` or beside a SQLite registry);
    else no lock (a remote registry without ``lock``: compare-and-set only)."""
    from filelock import FileLock

    if lock is not None:
        return lock(name)
    path = lock_path or _lock_path_for(client, name)
    if path is None:
        log.warning(
            "no promotion lock for %s (remote registry, no lock given): compare-and-set only",
            name,
        )
        return nullcontext()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=timeout_s)


# Registration ----------------------------------------------------------------------------
def find_run_version(
    client: MlflowClient, name: str, run_id: str, retry: RetryConfig | None = None
) -> str | None:
    """The version of ``name`` registered from run ``run_id`` (the lowest if several),
    or None: the run id is the registration's idempotency key."""
    versions = call_with_retry(
        lambda: client.search_model_versions(f"name='{name}' and run_id='{run_id}'"),
        retry or RetryConfig(),
        "find version of run",
    )
    numbers = sorted(int(v.version) for v in versions)
    if len(numbers) > 1:
        log.warning(
            "%s has %d versions of run %s: using v%d", name, len(numbers), run_id, numbers[0]
        )
    return str(numbers[0]) if numbers else None


def _find_or_create_version(
    client: MlflowClient,
    name: str,
    record: RunRecord,
    retry: RetryConfig,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, bool]:
    """Create the run's version unless it exists; returns it and whether this call made it. ``create_model_version`` is not
    idempotent, so it is never retried blindly: after a failed call the version is looked
    up by run id first (the server may have created it before the connection dropped)."""
    delay = retry.initial_delay_s
    for attempt in range(1, retry.attempts + 1):
        found = find_run_version(client, name, record.run_id, retry)
        if found is not None:
            return found, attempt > 1  # found after a failed create: ours
        try:
            created = client.create_model_version(
                name,
                source=record.model_source,
                run_id=record.run_id,
                model_id=record.model_id,
                description=record.model_card,
                tags={STATE_TAG: "registering", "mmops.run_id": record.run_id},
            )
            return str(created.version), True
        except Exception as error:
            if not is_transient(error):
                raise
            if attempt == retry.attempts:
                raise RegistryUnavailableError(
                    f"create model version: tracking server unavailable after "
                    f"{retry.attempts} attempts: {str(error)[:300]}"
                ) from error
            log.warning(
                "create model version failed (attempt %d), looking it up: %s", attempt, error
            )
            sleep(min(delay, retry.max_delay_s))
            delay *= retry.backoff
    raise AssertionError("unreachable")


def register_version(
    client: MlflowClient,
    name: str,
    record: RunRecord,
    metrics: Mapping[str, float] | None = None,
    retry: RetryConfig | None = None,
    lock: PromotionLock | None = None,
    lock_timeout_s: float = 600.0,
) -> str:
    """Register the run's model as a version of ``name`` and give it ``challenger``.

    Idempotent by run id: called again for the same run (a task retry, a rerun after a
    crash), it finds that run's version and completes what is missing instead of creating
    a duplicate. The version's description is the model card. If a step fails for good,
    the version is deleted, so no half-registered version holds an alias.

    Returns:
        The version number.

    Raises:
        RegistryUnavailableError: the server failed beyond the retry budget (cleaned up
            where the server allowed; a retry completes or the sweep clears the rest).
        RegistrationError: another failure (cleaned up).
    """
    retry = retry or RetryConfig()

    def create_model() -> None:
        try:
            client.create_registered_model(name)
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise

    call_with_retry(create_model, retry, "create registered model")
    version, created = _find_or_create_version(client, name, record, retry)
    try:
        call_with_retry(
            lambda: client.set_model_version_tag(name, version, "mmops.run_id", record.run_id),
            retry,
            "tag version",
        )
        if record.model_id:
            call_with_retry(
                lambda: _link_logged_model(client, record.model_id, name, version),
                retry,
                "link logged model",
            )
        with _promotion_lock(client, name, None, lock_timeout_s, lock):
            _assign_challenger(client, name, version, metrics or {}, retry)
        call_with_retry(
            lambda: client.set_model_version_tag(name, version, STATE_TAG, "registered"),
            retry,
            "tag version",
        )
    except BaseException as error:
        if created:  # a version an earlier attempt made is left for the retry to complete
            _remove_version(client, name, version)
        if isinstance(error, RegistryUnavailableError):
            raise
        raise RegistrationError(f"registering {name} v{version} failed: {error}") from error
    return version


def _link_logged_model(client: MlflowClient, model_id: str, name: str, version: str) -> None:
    """Name the registered version on its LoggedModel (the tag ``mlflow.modelVersions``
    that ``mlflow.register_model`` writes), so the model's page links to it; once."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    raw = client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
    linked = json.loads(raw) if raw else []
    entry = {"name": name, "version": int(version)}
    if not any(e.get("name") == name and str(e.get("version")) == version for e in linked):
        client.set_logged_model_tags(
            model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*linked, entry])}
        )


def _assign_challenger(
    client: MlflowClient,
    name: str,
    version: str,
    metrics: Mapping[str, float],
    retry: RetryConfig,
) -> None:
    """Give ``version`` the challenger alias and record it once (safe to repeat)."""
    if call_with_retry(lambda: current_champion(client, name), retry, "read champion") == version:
        return  # a retry after the version was already promoted
    tags = call_with_retry(
        lambda: client.get_model_version(name, version).tags, retry, "read version"
    )
    recorded = any(
        e.alias == CHALLENGER and e.action == "assign" and e.version == version
        for e in alias_history(client, name)
    )
    if recorded and tags.get(STATE_TAG) == "registered":
        return  # complete already: a later version may hold challenger by now
    holder = call_with_retry(
        lambda: _current_alias(client, name, CHALLENGER), retry, "read challenger"
    )
    if "mmops.challenger.previous" in tags:
        previous = tags["mmops.challenger.previous"] or None
    else:
        previous = holder if holder != version else None
        call_with_retry(  # the intent: whom this assignment replaces
            lambda: client.set_model_version_tag(
                name, version, "mmops.challenger.previous", previous or ""
            ),
            retry,
            "tag version",
        )
    if holder != version:
        call_with_retry(
            lambda: client.set_registered_model_alias(name, CHALLENGER, version),
            retry,
            "set challenger alias",
        )
    if not recorded:
        call_with_retry(
            lambda: _record(
                client,
                name,
                AliasEvent(
                    at=_now(),
                    alias=CHALLENGER,
                    action="assign",
                    version=version,
                    previous=previous,
                    reason="new version registered",
                    metrics=dict(metrics),
                ),
            ),
            retry,
            "record alias history",
        )


def _remove_version(client: MlflowClient, name: str, version: str) -> None:
    """Best-effort cleanup: drop a half-registered version (and with it any alias).
    A version holding ``champion`` is never removed."""
    try:
        if _current_alias(client, name, CHAMPION) == version:
            return
        if _current_alias(client, name, CHALLENGER) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
        client.delete_model_version(name, version)
    except Exception:
        log.exception("could not remove half-registered %s v%s; tag it instead", name, version)
        try:
            client.set_model_version_tag(name, version, STATE_TAG, "failed")
        except Exception:
            log.exception("could not tag %s v%s as failed", name, version)


def sweep_orphaned_versions(
    client: MlflowClient,
    name: str,
    older_than_s: float = 3600.0,
    retry: RetryConfig | None = None,
    lock: PromotionLock | None = None,
    lock_timeout_s: float = 600.0,
    now_ms: int | None = None,
) -> list[str]:
    """Take the aliases off versions a crash left behind, and tag them ``orphaned``.

    A version is orphaned when its registration never finished (``mmops.state`` is
    ``registering`` or ``failed``) and it was created more than ``older_than_s`` ago
    (a younger one may still be registering), or when its training run ended FAILED or
    KILLED. The versions are kept (their runs hold the artifacts) but hold no alias.

    Returns:
        The versions swept.
    """
    retry = retry or RetryConfig()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    versions = call_with_retry(
        lambda: client.search_model_versions(f"name='{name}'"), retry, "list versions"
    )
    swept: list[str] = []
    with _promotion_lock(client, name, None, lock_timeout_s, lock):
        champion = call_with_retry(lambda: current_champion(client, name), retry, "champion")
        for found in versions:
            version = str(found.version)
            state = found.tags.get(STATE_TAG)
            stale = state in {"registering", "failed"} and (
                now_ms - int(found.creation_timestamp or 0) >= older_than_s * 1000
            )
            run_failed = False
            if found.run_id and state != "orphaned":
                try:
                    status = client.get_run(found.run_id).info.status
                    run_failed = status in {"FAILED", "KILLED"}
                except MlflowException:
                    run_failed = False
            if not (stale or run_failed) or version == champion:
                continue
            for alias in found.aliases or []:
                if alias != CHAMPION:
                    call_with_retry(
                        lambda a=alias: client.delete_registered_model_alias(name, a),
                        retry,
                        "remove alias",
                    )
            reason = "training run failed" if run_failed else f"registration unfinished ({state})"
            call_with_retry(
                lambda v=version: client.set_model_version_tag(name, v, STATE_TAG, "orphaned"),
                retry,
                "tag orphan",
            )
            call_with_retry(
                lambda v=version, r=reason: client.set_model_version_tag(
                    name, v, "mmops.orphaned_reason", r
                ),
                retry,
                "tag orphan",
            )
            log.warning("%s v%s swept as orphaned: %s", name, version, reason)
            swept.append(version)
    return swept


# Loading ---------------------------------------------------------------------------------
def download_version(client: MlflowClient, name: str, version: str, dst: Path) -> Path:
    """Download version ``version``'s pyfunc directory into ``dst``; returns its path."""
    from mlflow.artifacts import download_artifacts

    uri = client.get_model_version_download_uri(name, version)
    tracking_uri = getattr(client, "tracking_uri", None)
    return Path(download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=tracking_uri))


def load_version_classifier(client: MlflowClient, name: str, version: str) -> MultimodalClassifier:
    """The ``MultimodalClassifier`` of a registered version (for evaluation)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = download_version(client, name, version, Path(tmp))
        return load_classifier(local / "artifacts" / CLASSIFIER_ARTIFACT)


def load_registered_pyfunc(
    client: MlflowClient, name: str, alias: str = CHAMPION, dst: Path | None = None
):
    """The pyfunc model holding ``alias`` (``predict(df)`` -> ``proba_<class>`` columns).

    Raises:
        LookupError: no version holds ``alias``.
    """
    import mlflow.pyfunc

    version = _current_alias(client, name, alias)
    if version is None:
        if alias == CHAMPION:
            raise NoChampionError(f"no version of {name} holds alias {alias!r}")
        raise LookupError(f"no version of {name} holds alias {alias!r}")
    target = Path(dst or tempfile.mkdtemp(prefix="mmops-model-"))
    return mlflow.pyfunc.load_model(str(download_version(client, name, version, target)))


# Promotion gate ----------------------------------------------------------------------------
def promote_if_better(
    client: MlflowClient,
    name: str,
    version: str,
    holdout: pd.DataFrame,
    label_column: str,
    gate: GateConfig | None = None,
    lock_path: Path | None = None,
    lock_timeout_s: float = 600.0,
    retry: RetryConfig | None = None,
    lock: PromotionLock | None = None,
    golden: pd.DataFrame | None = None,
    move: bool = True,
) -> PromotionDecision:
    """Evaluate ``version`` and the current champion on the same holdout; promote if the
    gate passes.

    With ``golden`` (the golden holdout's feature rows) both are scored there too and the
    challenger must be non-inferior on it. With ``move=False`` the gate is run and
    recorded but the alias stays (a version awaiting human approval stays challenger;
    its decision tag reads ``awaiting_approval``).

    Runs under the promotion lock, first completes any half-done move
    (:func:`reconcile_registry`), and re-reads the champion just before moving the alias
    (compare-and-set): if it moved meanwhile, the comparison is redone against the new
    champion. The decision is recorded on the version either way. Called again after
    ``version`` was promoted (a task retry), it reports that promotion.

    Args:
        holdout: recent labelled feature rows neither model trained on.
        lock_path: lock file; default next to a SQLite registry.
        lock: the promotion lock for a remote registry (:func:`postgres_promotion_lock`);
            without it and without a file lock, compare-and-set alone guards the move.
    """
    gate = gate or GateConfig()
    retry = retry or RetryConfig()
    candidate_model = load_version_classifier(client, name, version)
    candidate = evaluate_model(candidate_model, holdout, label_column)
    golden_candidate = (
        evaluate_model(candidate_model, golden, label_column)
        if golden is not None and len(golden)
        else None
    )
    with _promotion_lock(client, name, lock_path, lock_timeout_s, lock):
        reconcile_registry(client, name, retry)
        for _ in range(3):
            champion_version = call_with_retry(
                lambda: current_champion(client, name), retry, "read champion"
            )
            if champion_version == version:
                return _already_champion(client, name, version, candidate, gate, retry)
            champion = golden_champion = None
            if champion_version is not None:
                champion_model = load_version_classifier(client, name, champion_version)
                champion = evaluate_model(champion_model, holdout, label_column)
                if golden_candidate is not None:
                    golden_champion = evaluate_model(champion_model, golden, label_column)
            decision = check_promotion(candidate, champion, gate, golden_candidate, golden_champion)
            if (
                call_with_retry(lambda: current_champion(client, name), retry, "re-read champion")
                != champion_version
            ):
                continue  # moved while we compared: compare again against the new holder
            _record_decision(client, name, version, decision, champion_version, retry, move)
            if decision.promote and move:
                _move_champion(
                    client,
                    name,
                    version,
                    champion_version,
                    action="promote",
                    reason=decision.reason,
                    metrics={
                        f"holdout_{gate.primary_metric}": decision.candidate_metric,
                        "holdout_reference": decision.reference_metric,
                        "holdout_ece": float(candidate.overall.ece or 0.0),
                    },
                    retry=retry,
                )
            return decision
    raise RuntimeError(f"the champion of {name} kept moving; promotion of v{version} abandoned")


def _already_champion(
    client: MlflowClient,
    name: str,
    version: str,
    candidate: EvaluationResult,
    gate: GateConfig,
    retry: RetryConfig,
) -> PromotionDecision:
    """The decision for a version that already holds ``champion``: "promoted" when the
    gate promoted it (a retry of that promotion), else "already champion"."""
    tags = call_with_retry(lambda: client.get_model_version(name, version).tags, retry, "read")
    metric = candidate.overall.value(gate.primary_metric)
    if tags.get("mmops.gate.decision") == "promote":
        return PromotionDecision(
            promote=True,
            reason=tags.get("mmops.gate.reason", "promoted"),
            checks=[],
            candidate_metric=metric,
            reference_metric=metric,
            against="champion",
        )
    return PromotionDecision(
        promote=False,
        reason=f"v{version} already champion",
        checks=[],
        candidate_metric=metric,
        reference_metric=metric,
        against="champion",
    )


def _record_decision(
    client: MlflowClient,
    name: str,
    version: str,
    decision: PromotionDecision,
    champion_version: str | None,
    retry: RetryConfig,
    move: bool = True,
) -> None:
    verdict = "reject"
    if decision.promote:
        verdict = "promote" if move else "awaiting_approval"
    tags = {
        "mmops.gate.decision": verdict,
        "mmops.gate.reason": decision.reason[:MAX_TAG_CHARS],
        "mmops.gate.against": f"v{champion_version}" if champion_version else "baseline",
        "mmops.gate.at": _now(),
    }
    for key, value in tags.items():
        call_with_retry(
            lambda k=key, v=value: client.set_model_version_tag(name, version, k, v),
            retry,
            "tag gate decision",
        )
    version_info = call_with_retry(lambda: client.get_model_version(name, version), retry, "read")
    description = version_info.description or ""
    if VERDICT_END in description:
        description = description.split(VERDICT_END, 1)[1].lstrip("\n")
    verdict_block = f"{VERDICT_START}\n{decision.verdict_markdown()}{VERDICT_END}\n\n"
    full = _fit_description(verdict_block, description)
    call_with_retry(
        lambda: client.update_model_version(name, version, description=full),
        retry,
        "describe gate verdict",
    )


def _fit_description(verdict_block: str, card: str, limit: int = MAX_TAG_CHARS) -> str:
    """Verdict first, then as much of the model card as a registry field holds
    (PostgreSQL's is 5,000 characters); the whole card stays in the run's artifacts."""
    if len(verdict_block) + len(card) <= limit:
        return verdict_block + card
    cut = "\n\n... (the full model card is the training run's model_card.md artifact)\n"
    room = limit - len(verdict_block) - len(cut)
    if room <= 0:
        return verdict_block[: limit - len(cut)] + cut
    return verdict_block + card[:room] + cut


def _move_champion(
    client: MlflowClient,
    name: str,
    version: str,
    previous: str | None,
    action: Literal["promote", "rollback", "force"],
    reason: str,
    metrics: Mapping[str, float],
    retry: RetryConfig,
) -> AliasEvent:
    """Move ``champion``: intent first, then the alias, then lineage and history."""
    lineage = _champion_lineage(client, name)
    if action in ("promote", "force"):
        lineage = [*lineage, version]
    else:
        lineage = lineage[:-1]
    event = AliasEvent(
        at=_now(),
        alias=CHAMPION,
        action=action,
        version=version,
        previous=previous,
        reason=reason[:1500],
        metrics=dict(metrics),
    )
    intent = json.dumps({"event": event.model_dump(), "lineage": lineage[-200:]})
    call_with_retry(
        lambda: client.set_registered_model_tag(name, PENDING_TAG, intent),
        retry,
        "record move intent",
    )
    return _complete_move(client, name, event, lineage[-200:], retry)


def _complete_move(
    client: MlflowClient,
    name: str,
    event: AliasEvent,
    lineage: list[str],
    retry: RetryConfig,
) -> AliasEvent:
    """Every step after the intent; each is safe to repeat."""
    call_with_retry(
        lambda: client.set_registered_model_alias(name, CHAMPION, event.version),
        retry,
        "set champion alias",
    )
    call_with_retry(
        lambda: client.set_registered_model_tag(name, LINEAGE_TAG, json.dumps(lineage)),
        retry,
        "record lineage",
    )
    call_with_retry(lambda: _record(client, name, event), retry, "record alias history")
    if (
        call_with_retry(lambda: _current_alias(client, name, CHALLENGER), retry, "challenger")
        == event.version
    ):
        call_with_retry(
            lambda: client.delete_registered_model_alias(name, CHALLENGER),
            retry,
            "clear challenger",
        )
    call_with_retry(
        lambda: client.delete_registered_model_tag(name, PENDING_TAG), retry, "clear intent"
    )
    return event


def pending_move(client: MlflowClient, name: str) -> AliasEvent | None:
    """The champion move recorded as intended but not (known to be) completed, if any."""
    raw = client.get_registered_model(name).tags.get(PENDING_TAG)
    return AliasEvent.model_validate(json.loads(raw)["event"]) if raw else None


def reconcile_registry(
    client: MlflowClient, name: str, retry: RetryConfig | None = None
) -> AliasEvent | None:
    """Complete a half-done champion move of ``name`` (call under the promotion lock).

    If an intent is pending and ``champion`` is still on its previous holder or already
    on its target, the move is completed (alias, lineage, history, challenger cleared,
    intent removed). If ``champion`` has since moved elsewhere, the intent is stale and
    is dropped with a warning.

    Returns:
        The completed move, or None when nothing was pending (or it was stale).
    """
    retry = retry or RetryConfig()
    try:
        raw = call_with_retry(
            lambda: client.get_registered_model(name).tags.get(PENDING_TAG), retry, "read intent"
        )
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    if not raw:
        return None
    intent = json.loads(raw)
    event = AliasEvent.model_validate(intent["event"])
    holder = call_with_retry(lambda: current_champion(client, name), retry, "read champion")
    if holder not in {event.version, event.previous}:
        log.warning(
            "%s: dropping a stale %s of v%s (champion is now v%s)",
            name,
            event.action,
            event.version,
            holder,
        )
        call_with_retry(
            lambda: client.delete_registered_model_tag(name, PENDING_TAG), retry, "clear intent"
        )
        return None
    log.warning("%s: completing a half-done %s of v%s", name, event.action, event.version)
    return _complete_move(client, name, event, list(intent.get("lineage", [])), retry)


def force_champion(
    client: MlflowClient,
    name: str,
    version: str,
    reason: str,
    gate_reason: str | None = None,
    lock_path: Path | None = None,
    lock_timeout_s: float = 600.0,
    retry: RetryConfig | None = None,
    lock: PromotionLock | None = None,
) -> AliasEvent:
    """Make ``version`` champion whatever the gate says: a human decision, recorded in
    the alias history as action ``force`` with its reason (and the gate's verdict).

    Raises:
        ValueError: ``reason`` is blank (an override must say why).
        mlflow.exceptions.MlflowException: no such version.
    """
    if not reason.strip():
        raise ValueError("a forced promotion needs a reason (--reason)")
    retry = retry or RetryConfig()
    client.get_model_version(name, version)
    with _promotion_lock(client, name, lock_path, lock_timeout_s, lock):
        reconcile_registry(client, name, retry)
        previous = current_champion(client, name)
        text = f"forced: {reason.strip()}"
        if gate_reason:
            text += f" (gate said: {gate_reason})"
        return _move_champion(
            client, name, version, previous, action="force", reason=text, metrics={}, retry=retry
        )


def rollback_champion(
    client: MlflowClient,
    name: str,
    reason: str = "manual rollback",
    lock_path: Path | None = None,
    lock_timeout_s: float = 600.0,
    retry: RetryConfig | None = None,
    lock: PromotionLock | None = None,
) -> AliasEvent:
    """Move ``champion`` back to the version that held it before the current one.

    Promotions push onto a lineage and rollbacks pop it, so repeated rollbacks walk
    back through earlier champions (deleted versions are skipped). Recorded like a
    promotion, after completing any half-done move.

    Raises:
        NoChampionError: there is no champion (a ``LookupError``).
        LookupError: there is no earlier champion to return to.
    """
    retry = retry or RetryConfig()
    with _promotion_lock(client, name, lock_path, lock_timeout_s, lock):
        reconcile_registry(client, name, retry)
        current = current_champion(client, name)
        if current is None:
            raise NoChampionError(f"{name} has no champion to roll back")
        lineage = _champion_lineage(client, name)
        if lineage and lineage[-1] != current:
            lineage = [*lineage, current]  # champion set outside mmops: treat as latest
        while len(lineage) >= 2:
            target = lineage[-2]
            try:
                client.get_model_version(name, target)
            except MlflowException:
                lineage = [*lineage[:-2], lineage[-1]]  # earlier champion was deleted
                continue
            client.set_registered_model_tag(name, LINEAGE_TAG, json.dumps(lineage))
            return _move_champion(
                client,
                name,
                target,
                current,
                action="rollback",
                reason=reason,
                metrics={},
                retry=retry,
            )
    raise LookupError(f"{name} v{current} has no earlier champion to roll back to")
