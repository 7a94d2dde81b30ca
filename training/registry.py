"""MLflow: run logging, registration, the champion/challenger gate, alias history, rollback.

Everything goes through an injected ``MlflowClient`` (no global tracking URI, no active
run), so two trainings in one process do not share state. Registry stages are deprecated:
versions carry aliases. MLflow keeps no history of alias moves (mlflow#2169), so every
move is recorded here three ways, all visible in the UI: a JSON list in the registered
model's tag ``mmops.alias_history``, tags on the versions involved, and a table in the
registered model's description.

Promotion and rollback run under a file lock (next to the SQLite database by default)
and re-read the champion just before moving it, so two trainings finishing together
never both become champion.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
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
from training.model_card import render_model_card
from training.pyfunc import CLASSIFIER_ARTIFACT, save_pyfunc
from training.train import TrainResult

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "mmops.alias_history"
LINEAGE_TAG = "mmops.champion_lineage"
MODEL_ARTIFACT_PATH = "model"
REFERENCE_ARTIFACT = "reference/reference.parquet"
MAX_TAG_CHARS = 5000
Trigger = Literal["scheduled", "drift", "manual"]
T = TypeVar("T")
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
    model_source: str = Field(description="Artifact URI of the pyfunc model directory.")
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
    delay = retry.initial_delay_s
    for attempt in range(1, retry.attempts + 1):
        try:
            return fn()
        except Exception as error:
            if not is_transient(error):
                raise
            if attempt == retry.attempts:
                raise RegistryUnavailableError(
                    f"{what}: tracking server unavailable after {retry.attempts} attempts: "
                    f"{str(error)[:300]}"
                ) from error
            log.warning(
                "%s failed (attempt %d/%d), retrying: %s", what, attempt, retry.attempts, error
            )
            sleep(min(delay, retry.max_delay_s))
            delay *= retry.backoff
    raise AssertionError("unreachable")


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
) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) if missing."""
    retry = retry or RetryConfig()
    found = call_with_retry(lambda: client.get_experiment_by_name(name), retry, "get experiment")
    if found is not None:
        return found.experiment_id
    try:
        return call_with_retry(
            lambda: client.create_experiment(name, artifact_location=artifact_location),
            retry,
            "create experiment",
        )
    except MlflowException as error:  # created concurrently
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        return client.get_experiment_by_name(name).experiment_id


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
) -> RunRecord:
    """Log one training run: params, metrics, plots, card, manifest, reference, pyfunc model.

    Artifacts: ``model/`` (pyfunc), ``model_card.md``, ``plots/reliability.png``,
    ``plots/confusion_matrix.png``, ``manifest/training_manifest.json``,
    ``evaluation/evaluation.json``, ``reference/reference.parquet`` and, when given,
    ``validation/validation_summary.txt``. The run ends FINISHED, or FAILED on error.

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
            if validation_summary:
                (root / "validation" / "validation_summary.txt").write_text(
                    validation_summary, encoding="utf-8"
                )
            reference = build_reference_sample(
                result.model,
                result.splits.unseen,
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
            save_pyfunc(result.model, root / MODEL_ARTIFACT_PATH, result.splits.test)
            call_with_retry(lambda: client.log_artifacts(run_id, str(root)), retry, "log artifacts")
        call_with_retry(lambda: client.set_terminated(run_id, "FINISHED"), retry, "finish run")
    except BaseException:
        try:
            client.set_terminated(run_id, "FAILED")
        except Exception:  # the original error matters more than the cleanup
            log.exception("could not mark run %s FAILED", run_id)
        raise
    artifact_uri = run.info.artifact_uri
    return RunRecord(
        run_id=run_id,
        experiment_id=experiment_id,
        artifact_uri=artifact_uri,
        model_source=f"{artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}",
        model_card=card,
    )


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
    events = [*alias_history(client, name), event]
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


def _promotion_lock(
    client: MlflowClient, name: str, lock_path: Path | None, timeout_s: float
) -> AbstractContextManager:
    from filelock import FileLock

    path = lock_path or _lock_path_for(client, name)
    if path is None:
        return nullcontext()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=timeout_s)


# Registration ----------------------------------------------------------------------------
def register_version(
    client: MlflowClient,
    name: str,
    record: RunRecord,
    metrics: Mapping[str, float] | None = None,
    retry: RetryConfig | None = None,
) -> str:
    """Register the run's model as a new version of ``name`` and give it ``challenger``.

    The version's description is the model card. If any step fails, the version is
    deleted, so no half-registered version holds an alias.

    Returns:
        The new version number.

    Raises:
        RegistryUnavailableError: the server failed beyond the retry budget (cleaned up).
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
    version = call_with_retry(
        lambda: client.create_model_version(
            name,
            source=record.model_source,
            run_id=record.run_id,
            description=record.model_card,
            tags={"mmops.state": "registering"},
        ),
        retry,
        "create model version",
    ).version
    version = str(version)
    try:
        previous = _current_alias(client, name, CHALLENGER)
        call_with_retry(
            lambda: client.set_model_version_tag(name, version, "mmops.run_id", record.run_id),
            retry,
            "tag version",
        )
        call_with_retry(
            lambda: client.set_registered_model_alias(name, CHALLENGER, version),
            retry,
            "set challenger alias",
        )
        call_with_retry(
            lambda: client.set_model_version_tag(name, version, "mmops.state", "registered"),
            retry,
            "tag version",
        )
        with _promotion_lock(client, name, None, timeout_s=120):
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
                        metrics=dict(metrics or {}),
                    ),
                ),
                retry,
                "record alias history",
            )
    except BaseException as error:
        _remove_version(client, name, version)
        if isinstance(error, RegistryUnavailableError):
            raise
        raise RegistrationError(f"registering {name} v{version} failed: {error}") from error
    return version


def _remove_version(client: MlflowClient, name: str, version: str) -> None:
    """Best-effort cleanup: drop a half-registered version (and with it any alias)."""
    try:
        for alias in (CHALLENGER, CHAMPION):
            if _current_alias(client, name, alias) == version:
                client.delete_registered_model_alias(name, alias)
        client.delete_model_version(name, version)
    except Exception:
        log.exception("could not remove half-registered %s v%s; tag it instead", name, version)
        try:
            client.set_model_version_tag(name, version, "mmops.state", "failed")
        except Exception:
            log.exception("could not tag %s v%s as failed", name, version)


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
        raise LookupError(f"no version of {name} holds alias {alias!r}")
    target = Path(dst or tempfile.mkdtemp(prefix="mmops-model-"))
    return mlflow.pyfunc.load_model(str(download_version(client, name, version, target)))


# Promotion gate --------------------------------------------------------------------------
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
) -> PromotionDecision:
    """Evaluate ``version`` and the current champion on the same holdout; promote if the
    gate passes.

    Runs under the promotion lock and re-reads the champion just before moving the
    alias (compare-and-set): if it moved meanwhile, the comparison is redone against the
    new champion. The decision is recorded on the version either way.

    Args:
        holdout: recent labelled feature rows neither model trained on.
        lock_path: lock file; default next to a SQLite registry (no lock for a remote
            registry: the compare-and-set then still prevents a lost update in most races).
    """
    gate = gate or GateConfig()
    retry = retry or RetryConfig()
    candidate_model = load_version_classifier(client, name, version)
    candidate = evaluate_model(candidate_model, holdout, label_column)
    with _promotion_lock(client, name, lock_path, lock_timeout_s):
        for _ in range(3):
            champion_version = call_with_retry(
                lambda: current_champion(client, name), retry, "read champion"
            )
            if champion_version == version:
                return PromotionDecision(
                    promote=False,
                    reason=f"v{version} already champion",
                    checks=[],
                    candidate_metric=candidate.overall.value(gate.primary_metric),
                    reference_metric=candidate.overall.value(gate.primary_metric),
                    against="champion",
                )
            champion = None
            if champion_version is not None:
                champion_model = load_version_classifier(client, name, champion_version)
                champion = evaluate_model(champion_model, holdout, label_column)
            decision = check_promotion(candidate, champion, gate)
            if (
                call_with_retry(lambda: current_champion(client, name), retry, "re-read champion")
                != champion_version
            ):
                continue  # moved while we compared: compare again against the new holder
            _record_decision(client, name, version, decision, champion_version, retry)
            if decision.promote:
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


def _record_decision(
    client: MlflowClient,
    name: str,
    version: str,
    decision: PromotionDecision,
    champion_version: str | None,
    retry: RetryConfig,
) -> None:
    tags = {
        "mmops.gate.decision": "promote" if decision.promote else "reject",
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
    lineage = _champion_lineage(client, name)
    if action in ("promote", "force"):
        lineage = [*lineage, version]
    else:
        lineage = lineage[:-1]
    call_with_retry(
        lambda: client.set_registered_model_alias(name, CHAMPION, version),
        retry,
        "set champion alias",
    )
    event = AliasEvent(
        at=_now(),
        alias=CHAMPION,
        action=action,
        version=version,
        previous=previous,
        reason=reason,
        metrics=dict(metrics),
    )
    call_with_retry(
        lambda: client.set_registered_model_tag(name, LINEAGE_TAG, json.dumps(lineage[-200:])),
        retry,
        "record lineage",
    )
    call_with_retry(lambda: _record(client, name, event), retry, "record alias history")
    return event


def force_champion(
    client: MlflowClient,
    name: str,
    version: str,
    reason: str,
    gate_reason: str | None = None,
    lock_path: Path | None = None,
    lock_timeout_s: float = 600.0,
    retry: RetryConfig | None = None,
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
    with _promotion_lock(client, name, lock_path, lock_timeout_s):
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
) -> AliasEvent:
    """Move ``champion`` back to the version that held it before the current one.

    Promotions push onto a lineage and rollbacks pop it, so repeated rollbacks walk
    back through earlier champions (deleted versions are skipped). Recorded like a
    promotion.

    Raises:
        LookupError: there is no champion, or no earlier champion to return to.
    """
    retry = retry or RetryConfig()
    with _promotion_lock(client, name, lock_path, lock_timeout_s):
        current = current_champion(client, name)
        if current is None:
            raise LookupError(f"{name} has no champion to roll back")
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
