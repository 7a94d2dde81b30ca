"""One MLflow run per monitored window, replaced (never duplicated) when the window is
monitored again."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd
from pydantic import BaseModel, ConfigDict

from monitoring.assessment import WindowAssessment
from monitoring.reports.window import ASSESSMENT_JSON, DRIFT_JSON, WindowReport, window_stamp

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mlflow import MlflowClient

WINDOW_TAG = "mmops.window_start"
POLICY_RECORD_TAG = "mmops.policy_record"
MONITORING_DESCRIPTION = "\n".join(
    [
        "One run per monitored window of the champion's traffic.",
        "",
        "- Run name: `<window start> <action> v<champion version>`; the action (none, "
        "alert, retrain) and its reasons open the run's description.",
        "- Metrics are stamped with the window's start: chart them against time (x-axis "
        "*Time*) to see drift p-values, effect sizes and the estimated accuracy move.",
        "- Artifacts: `report/` holds the Evidently report (`*.html`, overview first) "
        "and the drift and assessment JSON.",
    ]
)
_P_FLOOR = 1e-16  # p-values below this are plotted at it (KS underflows to 0)


class LoggedWindow(BaseModel):
    """Where a window's MLflow run is."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    experiment_id: str

    def url(self, base: str | None) -> str | None:
        """The run's page in the MLflow UI at ``base`` (None without a base)."""
        if not base:
            return None
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def report_url(self, base: str | None) -> str | None:
        """The run's artifacts tab, where the report lies under ``report/``."""
        run = self.url(base)
        return f"{run}/artifacts" if run else None


def _window_metrics(assessment: WindowAssessment, report: WindowReport | None) -> dict[str, float]:
    drift, estimate = assessment.drift, assessment.estimate
    values: dict[str, float] = {
        "drift.n_drifted": float(len(drift.drifted_modalities)),
        "drift.any": float(drift.any_drift),
        "drift.min_adjusted_p_value": drift.min_adjusted_p_value,
        "window.n_rows": float(drift.n_rows),
        "window.n_labeled": float(drift.n_labeled),
    }
    for name, result in drift.modalities.items():
        values[f"drift.{name}.p_value"] = result.p_value
        values[f"drift.{name}.neg_log10_p"] = -math.log10(max(result.p_value, _P_FLOOR))
        values[f"drift.{name}.score"] = result.score
        values[f"drift.{name}.threshold"] = result.threshold
        values[f"drift.{name}.drifted"] = float(result.drifted)
    if estimate is not None:
        values["estimate.accuracy"] = estimate.expected_accuracy
        values["estimate.accuracy_low"], values["estimate.accuracy_high"] = estimate.accuracy_band
        values["estimate.macro_f1"] = estimate.expected_macro_f1
        values["estimate.macro_f1_low"], values["estimate.macro_f1_high"] = estimate.macro_f1_band
        values["estimate.trusted"] = float(estimate.trusted)
        values["estimate.domain_auc"] = estimate.domain_auc
        values["estimate.far_share"] = estimate.far_share
        for method, accuracy in estimate.accuracy_by_method.items():
            values[f"estimate.accuracy.{method}"] = accuracy
    labelled = assessment.main_realized
    if labelled is not None:
        values["labelled.accuracy"] = labelled.performance.accuracy
        values["labelled.macro_f1"] = labelled.performance.macro_f1
        values["labelled.n_rows"] = float(labelled.performance.n_rows)
    values["champion.reference"] = assessment.champion.performance
    if report is not None:
        values["report.seconds"] = report.seconds
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def _client(client_or_tracking_uri: MlflowClient | str) -> MlflowClient:
    if isinstance(client_or_tracking_uri, str):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=client_or_tracking_uri)
    return client_or_tracking_uri


def log_window_report(
    client_or_tracking_uri: MlflowClient | str,
    experiment_name: str,
    report: WindowReport | None,
    assessment: WindowAssessment,
    tags: Mapping[str, str] | None = None,
    artifact_location: str | None = None,
) -> LoggedWindow:
    """Log one window to MLflow: one run per window in ``experiment_name``.

    Metrics (stamped with the window's start, so charts are time series): per-modality
    p-value, -log10 p, effect size, threshold and verdict; drifted count; estimated
    accuracy / macro-F1 with their bands; the labelled window's realized metrics
    (``labelled.*``, with its window and version in tags); the report's build time.
    Tags: action, fingerprint, reasons, drifted modalities, model version, the policy's
    record of the window (to rebuild the policy state) and ``tags``. Artifacts: the
    report files under ``report/``.

    A window logged before for the same version (same ``mmops.window_start`` and
    ``model_version`` tags) has its old run deleted, so each (window, version) keeps
    exactly one active run; the run of a window judged for an earlier champion stays, as
    the record of that decision.

    ``artifact_location`` (a URI) is used only when the experiment is created here.
    """
    from training.registry import ensure_experiment  # imports mlflow: not at module import

    client = _client(client_or_tracking_uri)
    experiment_id = ensure_experiment(
        client, experiment_name, artifact_location, description=MONITORING_DESCRIPTION
    )
    drift, decision = assessment.drift, assessment.decision
    window_key = assessment.window_start.isoformat()
    previous = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{WINDOW_TAG}` = '{window_key}' and "
        f"tags.`model_version` = '{assessment.champion.version}'",
    )
    for run in previous:
        client.delete_run(run.info.run_id)

    run_tags = {
        WINDOW_TAG: window_key,
        "mmops.kind": "monitoring_window",
        "drifted_modalities": ",".join(drift.drifted_modalities) or "none",
        "decision.action": decision.action,
        "decision.fingerprint": decision.fingerprint or "none",
        "decision.reasons": "; ".join(decision.reasons)[:4900],
        "model_version": assessment.champion.version,
        "mlflow.note.content": _description(assessment),
    }
    record = decision.state.find(assessment.window_start, assessment.champion.version)
    if record is not None:
        run_tags[POLICY_RECORD_TAG] = record.model_dump_json()[:4900]
    labelled = assessment.main_realized
    if labelled is not None:
        run_tags["labelled.window_start"] = labelled.window_start.isoformat()
        run_tags["labelled.model_version"] = labelled.model_version
    run_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
    run_name = (
        f"{window_stamp(assessment.window_start)} {decision.action} v{assessment.champion.version}"
    )
    run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    try:
        from mlflow.entities import Metric, Param

        when = int(pd.Timestamp(assessment.window_start).timestamp() * 1000)
        step = int(pd.Timestamp(assessment.window_start).timestamp() // 3600)
        metrics = [
            Metric(key, value, when, step)
            for key, value in _window_metrics(assessment, report).items()
        ]
        params = [
            Param("window_start", str(assessment.window_start)),
            Param("window_end", str(assessment.window_end)),
            Param("n_rows", str(drift.n_rows)),
            Param("alpha", str(drift.alpha)),
        ]
        client.log_batch(run_id, metrics=metrics, params=params)
        if report is not None:
            for path in (report.html, report.json_path, report.drift_json, report.assessment_json):
                if path is not None:
                    client.log_artifact(run_id, str(path), artifact_path="report")
        else:
            client.log_text(run_id, drift.model_dump_json(indent=2), f"report/{DRIFT_JSON}")
            client.log_text(
                run_id, assessment.model_dump_json(indent=2), f"report/{ASSESSMENT_JSON}"
            )
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return LoggedWindow(run_id=run_id, experiment_id=experiment_id)


def _description(assessment: WindowAssessment) -> str:
    decision = assessment.decision
    lines = [
        f"**{decision.action.upper()}** for v{assessment.champion.version}, window "
        f"{assessment.window_start:%Y-%m-%d %H:%M} to {assessment.window_end:%Y-%m-%d %H:%M} UTC "
        f"({assessment.n_rows} rows).",
        "",
        f"Drifted: {', '.join(assessment.drift.drifted_modalities) or 'nothing'}.",
        f"Estimated {assessment.metric}: {assessment.estimate.value(assessment.metric):.3f} "
        f"(reference {assessment.champion.performance:.3f}); the estimate is "
        f"{assessment.estimate.trust_line()}.",
        *(f"{line.capitalize()}." for line in assessment.realized_lines()),
        "",
        *(f"- {reason}" for reason in decision.reasons),
    ]
    return "\n".join(lines)[:4900]


__all__ = ["POLICY_RECORD_TAG", "WINDOW_TAG", "LoggedWindow", "log_window_report"]
