"""Per-window monitoring reports: an Evidently report, MLflow logging and the drift history.

The decision of a window comes from ``monitoring.drift`` (calibrated per-modality tests),
``monitoring.estimate`` and ``monitoring.policy``; this module only shows and records it.
The Evidently report (0.7 API) holds, in order:

* a window summary (custom metric): decision, reasons, estimated and realized performance;
* one custom metric per modality with our calibrated verdict (adjusted p-value against
  ``alpha / m``, effect size, most drifted tests) and a pass/fail test;
* Evidently's ``ValueDrift`` per tabular column, per tested class probability and for the
  predicted class, and per embedding summary column (below);
* data quality: Evidently's ``DatasetStats``, missing values per tabular column and the
  presence rate of every text / image modality.

Embeddings are never given to Evidently's ``EmbeddingsDrift``: it runs a t-SNE for its
plot (17-39 s for one 384-d block). Each embedding column becomes a few numeric columns
instead, projected with the drift reference's reducer: its first PCA components and the
distance to the PCA subspace (what our residual test looks at), so Evidently's own column
drift shows where an embedding moved.

Evidently's per-column thresholds are set from our calibration: a tabular, benign or
output column is compared at its modality's threshold divided by the modality's number
of tests, so its flag equals the Bonferroni decision of ``compute_drift`` for that column
(up to the tests' implementations: Evidently's chi-square does not pool rare categories).
Embedding summary columns are informational and get their modality's threshold divided by
the number of such columns shown. Nothing here imports Prefect or does work at import time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.schema import DatasetConfig
from monitoring.drift import DriftReference, DriftResult, ModalityDrift
from monitoring.estimate import PerformanceEstimate
from monitoring.policy import Decision

if TYPE_CHECKING:
    from mlflow import MlflowClient

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
DRIFT_JSON = "drift.json"
WINDOW_TAG = "mmops.window_start"
_PREDICTION = "prediction"
_P_PREFIX = "p_"
_P_FLOOR = 1e-16  # p-values below this are plotted at it (KS underflows to 0)


class WindowReport(BaseModel):
    """Files written for one monitoring window."""

    model_config = ConfigDict(frozen=True)

    directory: Path = Field(description="Folder holding the files below.")
    html: Path = Field(description="Evidently report, self-contained HTML.")
    json_path: Path = Field(description="Evidently snapshot results (metrics and tests), JSON.")
    drift_json: Path = Field(description="The window's DriftResult, JSON.")
    window_start: datetime | None
    window_end: datetime | None
    n_window: int = Field(description="Window rows given to Evidently.")
    n_reference: int = Field(description="Reference rows given to Evidently (after subsampling).")
    columns: list[str] = Field(description="Columns whose drift Evidently computed.")
    seconds: float = Field(description="Wall time of build_window_report.")


def report_directory(data_dir: str | Path, window_start: datetime | None) -> Path:
    """``<data_dir>/reports/<window start as YYYYmmddTHHMMSSZ>`` (no colons: portable paths)."""
    return Path(data_dir) / "reports" / _window_stamp(window_start)


def _window_stamp(window_start: datetime | None) -> str:
    if window_start is None:
        return "unknown"
    return _utc(window_start).strftime("%Y%m%dT%H%M%SZ")


# Evidently metrics ----------------------------------------------------------------------
# Evidently registers metric classes by subclassing, which needs its (slow) import; the
# classes are therefore built on first use, not when this module is imported.

_EVIDENTLY: dict[str, Any] = {}


def _evidently() -> dict[str, Any]:
    if _EVIDENTLY:
        return _EVIDENTLY
    from evidently.core.metric_types import (
        MetricTestResult,
        SingleValueCalculation,
        SingleValueMetric,
    )
    from evidently.legacy.renderers.html_widgets import (
        CounterData,
        WidgetSize,
        counter,
        table_data,
    )
    from evidently.legacy.tests.base_test import TestStatus

    class MonitoringWindowSummary(SingleValueMetric):
        """The window's decision and performance, carried as metric parameters."""

        action: str
        fingerprint: str = ""
        reasons: list[str] = []
        facts: list[list[str]] = []
        n_drifted: int = 0

    class MonitoringWindowSummaryCalculation(SingleValueCalculation[MonitoringWindowSummary]):
        def calculate(self, context, current_data, reference_data):
            metric = self.metric
            result = self.result(metric.n_drifted)
            result.widget = [
                counter(
                    title=self.display_name(),
                    size=WidgetSize.FULL,
                    counters=[
                        CounterData(label="action", value=metric.action),
                        CounterData(label="drifted modalities", value=str(metric.n_drifted)),
                        CounterData(label="issue", value=metric.fingerprint or "-"),
                    ],
                ),
                table_data(
                    title="Window facts",
                    column_names=["", "value"],
                    data=metric.facts + [["reason", r] for r in metric.reasons],
                ),
            ]
            return result

        def display_name(self) -> str:
            return "Monitoring decision"

    class CalibratedModalityDrift(SingleValueMetric):
        """One modality's verdict from ``compute_drift``; the value is the adjusted p-value."""

        modality: str
        p_value: float
        threshold: float
        drifted: bool
        score: float
        n_tests: int
        n_window: int
        n_reference: int
        top: list[list[str]] = []

    class CalibratedModalityDriftCalculation(SingleValueCalculation[CalibratedModalityDrift]):
        def calculate(self, context, current_data, reference_data):
            metric = self.metric
            verdict = "DRIFTED" if metric.drifted else "no drift"
            result = self.result(metric.p_value)
            result.widget = [
                counter(
                    title=self.display_name(),
                    size=WidgetSize.FULL,
                    counters=[
                        CounterData(label="verdict", value=verdict),
                        CounterData(label="adjusted p-value", value=f"{metric.p_value:.3g}"),
                        CounterData(label="threshold", value=f"{metric.threshold:.3g}"),
                        CounterData(label="effect size", value=f"{metric.score:.3g}"),
                        CounterData(label="tests", value=str(metric.n_tests)),
                    ],
                ),
                table_data(
                    title=f"{metric.modality}: most drifted tests "
                    f"({metric.n_window} window / {metric.n_reference} reference rows)",
                    column_names=["test", "name", "effect size", "p-value (unadjusted)"],
                    data=metric.top,
                ),
            ]
            if context.configuration.include_tests:
                result.set_tests(
                    [
                        MetricTestResult(
                            id="calibrated_drift",
                            name=f"Calibrated drift: {metric.modality}",
                            description=f"{verdict}: adjusted p-value {metric.p_value:.3g} "
                            f"vs threshold {metric.threshold:.3g} ({metric.n_tests} tests).",
                            status=TestStatus.FAIL if metric.drifted else TestStatus.SUCCESS,
                            metric_config=self.to_metric_config(),
                            test_config={},
                        )
                    ]
                )
            return result

        def display_name(self) -> str:
            return f"Calibrated drift: {self.metric.modality}"

    _EVIDENTLY.update(
        summary=MonitoringWindowSummary,
        modality=CalibratedModalityDrift,
        # keep the calculation classes referenced: subclassing registered them
        calculations=(MonitoringWindowSummaryCalculation, CalibratedModalityDriftCalculation),
    )
    return _EVIDENTLY


# Frames given to Evidently --------------------------------------------------------------


def _stack(values: pd.Series, dim: int | None) -> np.ndarray:
    rows = [np.asarray(v, dtype=np.float32) for v in values.to_numpy()]
    if not rows:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return np.stack(rows)


def _fit_reducer(embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA mean and top-``k`` components (eigenvectors of the d x d scatter)."""
    data = embeddings.astype(np.float64)
    mean = data.mean(axis=0)
    centred = data - mean
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    top = np.argsort(eigenvalues)[::-1][: max(1, min(k, data.shape[1]))]
    return mean.astype(np.float32), eigenvectors[:, top].T.astype(np.float32)


def _embedding_summaries(
    reference: pd.DataFrame,
    window: pd.DataFrame,
    config: DatasetConfig,
    drift_reference: DriftReference | None,
    components: int,
) -> dict[str, tuple[str, pd.DataFrame, pd.DataFrame]]:
    """Per embedding column: (kind, reference summaries, window summaries).

    Summaries are the first ``components`` PCA components and the distance to the
    reducer's subspace, NaN for rows without the modality.
    """
    out: dict[str, tuple[str, pd.DataFrame, pd.DataFrame]] = {}
    kinds = {c: "text" for c in config.text_columns} | {c: "image" for c in config.image_columns}
    for name, kind in kinds.items():
        emb, present = config.embedding_column(name), config.presence_column(name)
        if not all(c in reference and c in window for c in (emb, present)):
            continue
        frames = []
        ref_present = reference[present].fillna(0).to_numpy(dtype=float) > 0.5
        win_present = window[present].fillna(0).to_numpy(dtype=float) > 0.5
        if ref_present.sum() < 2:
            continue
        ref_emb = _stack(reference[emb][ref_present], None)
        win_emb = _stack(window[emb][win_present], ref_emb.shape[1])
        if drift_reference is not None and name in drift_reference.embeddings:
            reducer = drift_reference.embeddings[name]
            mean, basis = reducer.mean, reducer.components
        else:
            mean, basis = _fit_reducer(ref_emb, max(components, 8))
        for emb_values, mask, n in (
            (ref_emb, ref_present, len(reference)),
            (win_emb, win_present, len(window)),
        ):
            centred = emb_values.astype(np.float32) - mean
            reduced = centred @ basis.T
            residual = np.linalg.norm(centred - reduced @ basis, axis=1)
            frame = pd.DataFrame(index=range(n))
            for j in range(min(components, basis.shape[0])):
                column = np.full(n, np.nan)
                column[mask] = reduced[:, j]
                frame[f"{emb}_pc{j + 1}"] = column
            column = np.full(n, np.nan)
            column[mask] = residual
            frame[f"{emb}_residual"] = column
            frames.append(frame)
        out[name] = (kind, frames[0], frames[1])
    return out


def _modality_threshold(drift: DriftResult, modality: str, n_columns: int) -> float:
    found: ModalityDrift | None = drift.modalities.get(modality)
    if found is not None:
        return found.threshold / max(found.n_tests, 1)
    m = max(len(drift.modalities), 1)
    return drift.alpha / m / max(n_columns, 1)


def _output_columns(config: DatasetConfig, frame: pd.DataFrame) -> list[str]:
    # With two classes one probability carries everything (as in compute_drift).
    classes = config.classes[1:] if len(config.classes) == 2 else config.classes
    return [f"proba_{c}" for c in classes if f"proba_{c}" in frame]


def _fmt(value: float | None) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"
    )


def _summary_facts(
    drift: DriftResult, estimate: PerformanceEstimate | None, model_version: str | None
) -> list[list[str]]:
    facts = [
        ["window", f"{drift.window_start} .. {drift.window_end}"],
        ["rows / labelled", f"{drift.n_rows} / {drift.n_labeled}"],
        ["alpha (whole window)", _fmt(drift.alpha)],
        ["drifted modalities", ", ".join(drift.drifted_modalities) or "none"],
    ]
    if model_version is not None:
        facts.insert(1, ["model version", str(model_version)])
    if estimate is not None:
        low, high = estimate.accuracy_band
        facts.append(
            ["estimated accuracy", f"{estimate.expected_accuracy:.4f} [{low:.4f}, {high:.4f}]"]
        )
        low, high = estimate.macro_f1_band
        facts.append(
            ["estimated macro-F1", f"{estimate.expected_macro_f1:.4f} [{low:.4f}, {high:.4f}]"]
        )
    if drift.realized is not None:
        facts.append(
            ["realized accuracy", f"{drift.realized.accuracy:.4f} (n={drift.realized.n_rows})"]
        )
        facts.append(["realized macro-F1", f"{drift.realized.macro_f1:.4f}"])
    return facts


def build_window_report(
    reference: pd.DataFrame,
    window: pd.DataFrame,
    config: DatasetConfig,
    drift: DriftResult,
    estimate: PerformanceEstimate | None,
    output_dir: str | Path,
    *,
    decision: Decision | None = None,
    drift_reference: DriftReference | None = None,
    model_version: str | None = None,
    max_reference_rows: int = 5_000,
    embedding_components: int = 2,
    seed: int = 0,
) -> WindowReport:
    """Build, for one window, the Evidently report and write it with our drift result.

    The reference is subsampled (without replacement, ``seed``) to ``max_reference_rows``
    for the report: Evidently's cost grows with it while the displayed distributions do
    not change. The calibrated decision (``drift``) is never recomputed here.

    Args:
        reference: scored reference rows (the frame the drift reference was fitted on).
        window: scored window rows, prediction-log layout.
        config: the dataset declaration.
        drift: ``compute_drift`` on this window.
        estimate: ``estimate_performance`` on this window, if computed.
        output_dir: folder to write ``report.html``, ``report.json`` and ``drift.json`` to
            (created); see :func:`report_directory`.
        decision: the policy's decision on this window, shown in the summary.
        drift_reference: its embedding reducers project the embeddings; without it a PCA
            is fitted on the report's reference sample.
        model_version: shown in the summary and stored as report metadata.
        max_reference_rows: reference rows given to Evidently at most.
        embedding_components: PCA components shown per embedding column.
        seed: seeds the reference subsample.

    Returns:
        The paths written, row counts and the wall time taken.

    Raises:
        ValueError: the window or the reference is empty.
    """
    started = time.perf_counter()
    if len(window) == 0 or len(reference) == 0:
        raise ValueError("the window and the reference must both have rows")
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue, MissingValueCount, ValueDrift
    from evidently.presets import DatasetStats
    from evidently.tests import eq

    metrics_cls = _evidently()
    if len(reference) > max_reference_rows:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(reference), max_reference_rows, replace=False))
        reference = reference.iloc[rows]
    reference = reference.reset_index(drop=True)
    window = window.reset_index(drop=True)

    numeric = [c for c in config.numeric_columns if c in window and c in reference]
    categorical = [c for c in config.categorical_columns if c in window and c in reference]
    outputs = [c for c in _output_columns(config, window) if c in reference]
    prediction = [_PREDICTION] if _PREDICTION in window and _PREDICTION in reference else []
    presence = [
        config.presence_column(c)
        for c in config.text_columns + config.image_columns
        if config.presence_column(c) in window and config.presence_column(c) in reference
    ]
    summaries = _embedding_summaries(
        reference, window, config, drift_reference, embedding_components
    )

    base = numeric + categorical + outputs + prediction + presence
    ref_frame = reference[base].copy()
    win_frame = window[base].copy()
    for column in presence:
        ref_frame[column] = ref_frame[column].fillna(0).astype(float)
        win_frame[column] = win_frame[column].fillna(0).astype(float)
    embedding_columns: dict[str, list[str]] = {}
    for _, (kind, ref_sum, win_sum) in summaries.items():
        # A modality absent from the whole window leaves nothing to compare (and
        # Evidently's drift tests fail on empty columns); our verdict covers it.
        if win_sum.notna().sum().min() < 2 or ref_sum.notna().sum().min() < 2:
            continue
        ref_frame = pd.concat([ref_frame, ref_sum], axis=1)
        win_frame = pd.concat([win_frame, win_sum], axis=1)
        embedding_columns.setdefault(kind, []).extend(ref_sum.columns)
    embedded = [c for cols in embedding_columns.values() for c in cols]
    definition = DataDefinition(
        numerical_columns=numeric + outputs + presence + embedded,
        categorical_columns=categorical + prediction,
    )

    benign = set(config.monitor_only)
    metrics: list[Any] = []
    if decision is not None:
        action, fingerprint, reasons = decision.action, decision.fingerprint, decision.reasons
    else:
        action, fingerprint, reasons = "not decided", "", []
    metrics.append(
        metrics_cls["summary"](
            action=action,
            fingerprint=fingerprint,
            reasons=list(reasons),
            facts=_summary_facts(drift, estimate, model_version),
            n_drifted=len(drift.drifted_modalities),
        )
    )
    for name, result in drift.modalities.items():
        metrics.append(
            metrics_cls["modality"](
                modality=name,
                p_value=result.p_value,
                threshold=result.threshold,
                drifted=result.drifted,
                score=result.score,
                n_tests=result.n_tests,
                n_window=result.n_window,
                n_reference=result.n_reference,
                top=[[t.test, t.name, _fmt(t.score), _fmt(t.p_value)] for t in result.top],
            )
        )

    def testable(column: str) -> bool:
        return bool(ref_frame[column].notna().sum() >= 2 and win_frame[column].notna().sum() >= 2)

    tabular = [c for c in numeric + categorical if c not in benign and testable(c)]
    monitored = [c for c in numeric + categorical if c in benign and testable(c)]
    outputs = [c for c in outputs if testable(c)]
    prediction = [c for c in prediction if testable(c)]
    for group, columns in (("tabular", tabular), ("benign", monitored), ("output", outputs)):
        threshold = _modality_threshold(drift, group, len(columns))
        for column in columns:
            method = "ks" if column in numeric or column in outputs else "chisquare"
            metrics.append(ValueDrift(column=column, method=method, threshold=threshold))
    for column in prediction:
        threshold = _modality_threshold(drift, "output", len(outputs) + 1)
        metrics.append(ValueDrift(column=column, method="chisquare", threshold=threshold))
    for kind, columns in embedding_columns.items():
        found = drift.modalities.get(kind)
        level = (
            found.threshold if found is not None else drift.alpha / max(len(drift.modalities), 1)
        )
        threshold = level / max(len(columns), 1)
        for column in columns:
            metrics.append(ValueDrift(column=column, method="ks", threshold=threshold))

    # Evidently's default quality tests compare the window's row and missing counts with
    # the reference's (+-10 %), which a window of another size always fails; the only
    # test kept is that a non-nullable numeric column has no missing value.
    not_nullable = {c.name for c in config.numeric if not c.nullable}
    metrics.append(DatasetStats(include_tests=False))
    metrics.extend(
        MissingValueCount(column=c, tests=[eq(0)] if c in not_nullable else [])
        for c in numeric + categorical
    )
    metrics.extend(MeanValue(column=c, tests=[]) for c in presence)

    metadata: dict[str, str] = {
        "window_start": str(drift.window_start),
        "window_end": str(drift.window_end),
        "action": action,
        "drifted_modalities": ",".join(drift.drifted_modalities) or "none",
    }
    if model_version is not None:
        metadata["model_version"] = str(model_version)
    tags = ["mmops", "monitoring", f"action:{action}"] + [
        f"drift:{m}" for m in drift.drifted_modalities
    ]
    snapshot = Report(metrics, metadata=metadata, tags=tags, include_tests=True).run(
        Dataset.from_pandas(win_frame, data_definition=definition),
        Dataset.from_pandas(ref_frame, data_definition=definition),
    )

    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    html, json_path, drift_json = (
        directory / REPORT_HTML,
        directory / REPORT_JSON,
        directory / DRIFT_JSON,
    )
    snapshot.save_html(str(html))
    json_path.write_text(snapshot.json(), encoding="utf-8")
    drift_json.write_text(drift.model_dump_json(indent=2), encoding="utf-8")
    drift_columns = tabular + monitored + outputs + prediction + embedded
    return WindowReport(
        directory=directory,
        html=html,
        json_path=json_path,
        drift_json=drift_json,
        window_start=drift.window_start,
        window_end=drift.window_end,
        n_window=len(win_frame),
        n_reference=len(ref_frame),
        columns=drift_columns,
        seconds=time.perf_counter() - started,
    )


# MLflow --------------------------------------------------------------------------------


def _window_metrics(
    drift: DriftResult, estimate: PerformanceEstimate | None, report: WindowReport | None
) -> dict[str, float]:
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
    if drift.realized is not None:
        values["realized.accuracy"] = drift.realized.accuracy
        values["realized.macro_f1"] = drift.realized.macro_f1
        values["realized.n_rows"] = float(drift.realized.n_rows)
    if report is not None:
        values["report.seconds"] = report.seconds
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def _client(client_or_tracking_uri: MlflowClient | str) -> MlflowClient:
    if isinstance(client_or_tracking_uri, str):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=client_or_tracking_uri)
    return client_or_tracking_uri


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        if artifact_location is None:
            return client.create_experiment(name)
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created concurrently by another window
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def log_window_report(
    client_or_tracking_uri: MlflowClient | str,
    experiment_name: str,
    report: WindowReport | None,
    drift: DriftResult,
    estimate: PerformanceEstimate | None,
    decision: Decision | None,
    tags: Mapping[str, str] | None = None,
    model_version: str | None = None,
    artifact_location: str | None = None,
) -> str:
    """Log one window to MLflow: one run per window in ``experiment_name``.

    Metrics: per-modality p-value, -log10 p, effect size, threshold and verdict; drifted
    count; estimated accuracy / macro-F1 with their bands; realized metrics when the
    window has labels; the report's build time. Params: window bounds and row count.
    Tags: action, fingerprint, reasons, drifted modalities, model version and ``tags``.
    Artifacts: ``report.html``, ``report.json`` and ``drift.json`` under ``report/``.

    A window logged before (same ``mmops.window_start`` tag) has its old run deleted, so
    each window keeps exactly one active run.

    ``artifact_location`` (a URI) is used only when the experiment is created here; without
    it MLflow picks its default, relative to the working directory for a SQLite store.

    Returns:
        The run id.
    """
    client = _client(client_or_tracking_uri)
    experiment_id = _experiment_id(client, experiment_name, artifact_location)
    window_key = "unknown" if drift.window_start is None else drift.window_start.isoformat()
    previous = client.search_runs(
        [experiment_id], filter_string=f"tags.`{WINDOW_TAG}` = '{window_key}'"
    )
    for run in previous:
        client.delete_run(run.info.run_id)

    run_tags = {
        WINDOW_TAG: window_key,
        "mmops.kind": "monitoring_window",
        "drifted_modalities": ",".join(drift.drifted_modalities) or "none",
    }
    if decision is not None:
        run_tags["decision.action"] = decision.action
        run_tags["decision.fingerprint"] = decision.fingerprint or "none"
        run_tags["decision.reasons"] = "; ".join(decision.reasons)[:4900]
    if model_version is not None:
        run_tags["model_version"] = str(model_version)
    run_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
    run_name = f"window-{_window_stamp(drift.window_start)}"
    run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    try:
        from mlflow.entities import Metric, Param

        when = (
            int(pd.Timestamp(drift.window_start).timestamp() * 1000)
            if drift.window_start is not None
            else int(time.time() * 1000)
        )
        metrics = [
            Metric(key, value, when, 0)
            for key, value in _window_metrics(drift, estimate, report).items()
        ]
        params = [
            Param("window_start", str(drift.window_start)),
            Param("window_end", str(drift.window_end)),
            Param("n_rows", str(drift.n_rows)),
            Param("alpha", str(drift.alpha)),
        ]
        client.log_batch(run_id, metrics=metrics, params=params)
        if report is not None:
            for path in (report.html, report.json_path, report.drift_json):
                client.log_artifact(run_id, str(path), artifact_path="report")
        else:
            client.log_text(run_id, drift.model_dump_json(indent=2), f"report/{DRIFT_JSON}")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


# Drift over time -----------------------------------------------------------------------


def drift_history_row(
    drift: DriftResult,
    estimate: PerformanceEstimate | None,
    decision: Decision | None,
) -> dict[str, Any]:
    """One record of the drift history (see :func:`plot_drift_history`).

    Keys: ``window_start``, ``p_<modality>`` per tested modality (adjusted p-value),
    ``threshold`` (the per-modality level, ``alpha / m``), ``estimated_accuracy`` with
    ``estimated_accuracy_low`` / ``_high``, ``realized_accuracy`` (NaN without labels),
    ``any_drift`` and ``action``.
    """
    row: dict[str, Any] = {"window_start": drift.window_start}
    thresholds = [m.threshold for m in drift.modalities.values()]
    row["threshold"] = min(thresholds) if thresholds else drift.alpha
    for name, result in drift.modalities.items():
        row[f"{_P_PREFIX}{name}"] = result.p_value
    if estimate is not None:
        row["estimated_accuracy"] = estimate.expected_accuracy
        row["estimated_accuracy_low"], row["estimated_accuracy_high"] = estimate.accuracy_band
    else:
        row["estimated_accuracy"] = math.nan
    row["realized_accuracy"] = drift.realized.accuracy if drift.realized is not None else math.nan
    row["any_drift"] = drift.any_drift
    row["action"] = decision.action if decision is not None else "none"
    return row


def plot_drift_history(
    records: pd.DataFrame,
    path: str | Path,
    onset: datetime | None = None,
    retrains: Iterable[datetime] = (),
    threshold: float | None = None,
    title: str = "Drift and performance over windows",
) -> Path:
    """Plot per-modality -log10(p) against the threshold, and estimated vs realized accuracy.

    Args:
        records: one row per window: ``window_start``, one ``p_<modality>`` column per
            modality, ``estimated_accuracy``, ``realized_accuracy`` (NaN when unknown),
            ``action``; optional ``threshold``, ``estimated_accuracy_low`` / ``_high``.
            :func:`drift_history_row` builds them.
        path: PNG file to write (its folder is created).
        onset: when the drift started, drawn as a dashed line.
        retrains: retraining times, drawn as solid lines (windows whose ``action`` is
            ``retrain`` are marked too).
        threshold: the p-value level when ``records`` has no ``threshold`` column.
        title: figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: ``records`` lacks ``window_start`` or has no rows.
    """
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    if "window_start" not in records or records.empty:
        raise ValueError("records need rows and a window_start column")
    frame = records.sort_values("window_start").reset_index(drop=True)
    x = pd.to_datetime(frame["window_start"], utc=True)
    figure = Figure(figsize=(11, 7), constrained_layout=True)
    top, bottom = figure.subplots(2, 1, sharex=True)

    modalities = [c for c in frame.columns if c.startswith(_P_PREFIX)]
    for column in modalities:
        p = pd.to_numeric(frame[column], errors="coerce").clip(lower=_P_FLOOR)
        top.plot(x, -np.log10(p), marker="o", markersize=3, label=column[len(_P_PREFIX) :])
    if "threshold" in frame:
        level = -np.log10(pd.to_numeric(frame["threshold"], errors="coerce").clip(lower=_P_FLOOR))
        top.step(x, level, where="mid", color="black", linestyle=":", label="threshold")
    elif threshold is not None:
        top.axhline(-math.log10(threshold), color="black", linestyle=":", label="threshold")
    if "action" in frame:
        alerts = frame["action"] == "alert"
        if alerts.any():
            top.scatter(
                x[alerts],
                np.zeros(int(alerts.sum())),
                marker="^",
                color="orange",
                zorder=3,
                label="alert",
            )
    top.set_ylabel("-log10 adjusted p-value")
    top.set_title(title)

    if "estimated_accuracy" in frame:
        estimated = pd.to_numeric(frame["estimated_accuracy"], errors="coerce")
        bottom.plot(x, estimated, marker="o", markersize=3, label="estimated accuracy")
        if {"estimated_accuracy_low", "estimated_accuracy_high"} <= set(frame.columns):
            bottom.fill_between(
                x,
                pd.to_numeric(frame["estimated_accuracy_low"], errors="coerce"),
                pd.to_numeric(frame["estimated_accuracy_high"], errors="coerce"),
                alpha=0.2,
                label="estimate band",
            )
    if "realized_accuracy" in frame:
        realized = pd.to_numeric(frame["realized_accuracy"], errors="coerce")
        known = realized.notna()
        if known.any():
            bottom.plot(
                x[known],
                realized[known],
                marker="s",
                markersize=4,
                linestyle="-",
                label="realized accuracy",
            )
    bottom.set_ylabel("accuracy")
    bottom.set_xlabel("window start")

    retrain_times = [pd.Timestamp(t) for t in retrains]
    if "action" in frame:
        retrain_times += list(x[frame["action"] == "retrain"])
    for axis in (top, bottom):
        if onset is not None:
            axis.axvline(_utc(onset), color="red", linestyle="--", label="drift onset")
        for i, moment in enumerate(sorted(set(_utc(t) for t in retrain_times))):
            axis.axvline(
                moment, color="green", linestyle="-", alpha=0.7, label="retrain" if i == 0 else None
            )
        axis.legend(loc="best", fontsize="small")
        axis.grid(alpha=0.3)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def _utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def history_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Records from :func:`drift_history_row` as a frame sorted by window start."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    return frame.sort_values("window_start").reset_index(drop=True)


__all__ = [
    "DRIFT_JSON",
    "REPORT_HTML",
    "REPORT_JSON",
    "WindowReport",
    "build_window_report",
    "drift_history_row",
    "history_frame",
    "log_window_report",
    "plot_drift_history",
    "report_directory",
]
