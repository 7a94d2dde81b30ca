"""The Evidently report of one monitoring window, built from its assessment.

The report (Evidently 0.7 API) holds, in order:

* an overview (custom metric): 'k of m modalities drifted' and one sortable table of
  every verdict, per modality and per column, drifted first, with thresholds at 4
  significant digits and a glossary (p-value, p-value threshold, effect size; Evidently's
  "drift score" is a p-value). Its per-column tests replace ``ValueDrift``'s own, which
  round thresholds to two decimals;
* a window summary (custom metric): decision, reasons, model version, estimated
  performance, and the realized performance of the labelled window it belongs to;
* one custom metric per modality with our calibrated verdict (adjusted p-value against
  ``alpha / m``, effect size, most drifted tests) and a pass/fail test, drifted
  modalities first;
* Evidently's ``ValueDrift`` per tabular column, per tested class probability and for the
  predicted class, and per embedding summary column (below);
* data quality: Evidently's ``DatasetStats``, missing values per tabular column and the
  presence rate of every text / image modality.

Embeddings are never given to Evidently's ``EmbeddingsDrift``: it runs a t-SNE for its
plot (17-39 s for one 384-d block). Each embedding column becomes a few numeric columns
instead, projected with the drift reference's reducer: its first PCA components and the
distance to the PCA subspace (what our residual test looks at).

Evidently's per-column thresholds are set from our calibration: a tabular, benign or
output column is compared at its modality's threshold divided by the modality's number
of tests, so its flag equals the Bonferroni decision of ``compute_drift`` for that column
(up to the tests' implementations: Evidently's chi-square does not pool rare categories).
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.schema import DatasetConfig
from features.state_io import atomic_write_text
from monitoring.assessment import WindowAssessment, utc_stamp
from monitoring.drift import DriftReference, DriftResult, ModalityDrift
from monitoring.reports.evidently_metrics import evidently_metrics

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
DRIFT_JSON = "drift.json"
ASSESSMENT_JSON = "assessment.json"
_PREDICTION = "prediction"


class WindowReport(BaseModel):
    """Files written for one monitoring window."""

    model_config = ConfigDict(frozen=True)

    directory: Path = Field(description="Folder holding the files below.")
    html: Path = Field(description="Evidently report, self-contained HTML.")
    json_path: Path = Field(description="Evidently snapshot results (metrics and tests), JSON.")
    drift_json: Path = Field(description="The window's DriftResult, JSON.")
    assessment_json: Path | None = Field(
        default=None, description="The window's whole assessment, JSON."
    )
    window_start: datetime | None
    window_end: datetime | None
    n_window: int = Field(description="Window rows given to Evidently.")
    n_reference: int = Field(description="Reference rows given to Evidently (after subsampling).")
    columns: list[str] = Field(description="Columns whose drift Evidently computed.")
    seconds: float = Field(description="Wall time of build_window_report.")


def window_stamp(window_start: datetime | None) -> str:
    """The window start as ``YYYYmmddTHHMMSSZ`` (no colons: portable paths and names)."""
    return "unknown" if window_start is None else utc_stamp(window_start)


def report_directory(data_dir: str | Path, window_start: datetime | None) -> Path:
    """``<data_dir>/reports/<window start as YYYYmmddTHHMMSSZ>``."""
    return Path(data_dir) / "reports" / window_stamp(window_start)


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
    kinds = (
        {c: "text" for c in config.text_columns}
        | {c: "image" for c in config.image_columns}
        | {c: "vector" for c in config.vector_columns}
    )
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


def _summary_facts(assessment: WindowAssessment) -> list[list[str]]:
    drift, estimate = assessment.drift, assessment.estimate
    facts = [
        [
            "window",
            f"{assessment.window_start:%Y-%m-%d %H:%M} .. {assessment.window_end:%Y-%m-%d %H:%M} UTC",
        ],
        ["model version", f"v{assessment.champion.version}"],
        ["rows", str(drift.n_rows)],
        ["alpha (whole window)", _fmt(drift.alpha)],
        ["drifted modalities", ", ".join(drift.drifted_modalities) or "none"],
    ]
    if assessment.champion.reference_note:
        facts.append(["drift reference", assessment.champion.reference_note])
    low, high = estimate.accuracy_band
    facts.append(
        ["estimated accuracy", f"{estimate.expected_accuracy:.4f} [{low:.4f}, {high:.4f}]"]
    )
    low, high = estimate.macro_f1_band
    facts.append(
        ["estimated macro-F1", f"{estimate.expected_macro_f1:.4f} [{low:.4f}, {high:.4f}]"]
    )
    facts.append(["estimate", estimate.trust_line()])
    if estimate.accuracy_by_method:
        facts.append(
            [
                "accuracy by estimator",
                ", ".join(f"{m} {v:.3f}" for m, v in estimate.accuracy_by_method.items()),
            ]
        )
    facts.append([f"reference {assessment.metric}", f"{assessment.champion.performance:.4f}"])
    lines = assessment.realized_lines()
    facts += [["realized", line] for line in lines] or [["realized", "no labels have arrived"]]
    if assessment.decision.replayed:
        facts.append(["decision", "replayed: this window was decided before for this version"])
    return facts


def _overview_metric(metrics_cls: dict[str, Any], drift: DriftResult, specs: list[list[Any]]):
    """The report's first section: 'k of m modalities drifted' and one sortable table of
    every verdict (modalities and Evidently's columns), drifted first, with a glossary of
    p-value, p-value threshold and effect size."""
    ordered = sorted(drift.modalities.items(), key=lambda kv: (not kv[1].drifted, kv[1].p_value))
    return metrics_cls["overview"](
        modalities=[
            [name, r.drifted, r.p_value, r.threshold, r.score, r.n_tests] for name, r in ordered
        ],
        columns=specs,
    )


def build_window_report(
    reference: pd.DataFrame,
    window: pd.DataFrame,
    config: DatasetConfig,
    assessment: WindowAssessment,
    output_dir: str | Path,
    *,
    drift_reference: DriftReference | None = None,
    max_reference_rows: int = 5_000,
    embedding_components: int = 2,
    seed: int = 0,
    explanations: list[str] | None = None,
) -> WindowReport:
    """Build, for one window, the Evidently report and write it with our drift result.

    The reference is subsampled (without replacement, ``seed``) to ``max_reference_rows``
    for the report: Evidently's cost grows with it while the displayed distributions do
    not change. The calibrated decision (``drift``) is never recomputed here.

    Args:
        reference: scored reference rows (the frame the drift reference was fitted on).
        window: scored window rows, prediction-log layout.
        config: the dataset declaration.
        assessment: the window's assessment (drift, estimate, realized, decision).
        output_dir: folder to write ``report.html``, ``report.json``, ``drift.json`` and
            ``assessment.json`` to (created); see :func:`report_directory`.
        drift_reference: its embedding reducers project the embeddings; without it a PCA
            is fitted on the report's reference sample.
        max_reference_rows: reference rows given to Evidently at most.
        embedding_components: PCA components shown per embedding column.
        seed: seeds the reference subsample.
        explanations: what drives the drift, one line each
            (``monitoring.reports.explanation.explanation_lines``); shown in the summary,
            with the full page ``drift_examples.html`` beside the report.

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

    drift, decision = assessment.drift, assessment.decision
    model_version = assessment.champion.version
    metrics_cls = evidently_metrics()
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
        for c in config.embedded_columns
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
    action, fingerprint, reasons = decision.action, decision.fingerprint, decision.reasons
    metrics.append(
        metrics_cls["summary"](
            action=action,
            fingerprint=fingerprint,
            reasons=list(reasons),
            facts=_summary_facts(assessment)
            + [["what drives the drift", line] for line in explanations or []],
            n_drifted=len(drift.drifted_modalities),
        )
    )
    ordered = sorted(drift.modalities.items(), key=lambda kv: (not kv[1].drifted, kv[1].p_value))
    for name, result in ordered:
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
    specs: list[list[Any]] = []  # [column, modality, method, threshold]
    for group, columns in (("tabular", tabular), ("benign", monitored), ("output", outputs)):
        threshold = _modality_threshold(drift, group, len(columns))
        for column in columns:
            method = "ks" if column in numeric or column in outputs else "chisquare"
            specs.append([column, group, method, threshold])
    for column in prediction:
        specs.append(
            [column, "output", "chisquare", _modality_threshold(drift, "output", len(outputs) + 1)]
        )
    for kind, columns in embedding_columns.items():
        found = drift.modalities.get(kind)
        level = (
            found.threshold if found is not None else drift.alpha / max(len(drift.modalities), 1)
        )
        specs += [[column, kind, "ks", level / max(len(columns), 1)] for column in columns]
    # tests=[]: ValueDrift's own test prints its threshold rounded to 2 decimals; the
    # overview tests each column at full precision instead.
    metrics += [ValueDrift(column=c, method=m, threshold=t, tests=[]) for c, _, m, t in specs]
    metrics.insert(0, _overview_metric(metrics_cls, drift, specs))

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
        "model_version": str(model_version),
    }
    tags = ["mmops", "monitoring", f"action:{action}"] + [
        f"drift:{m}" for m in drift.drifted_modalities
    ]
    snapshot = Report(metrics, metadata=metadata, tags=tags, include_tests=True).run(
        Dataset.from_pandas(win_frame, data_definition=definition),
        Dataset.from_pandas(ref_frame, data_definition=definition),
    )

    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    html, json_path, drift_json, assessment_json = (
        directory / REPORT_HTML,
        directory / REPORT_JSON,
        directory / DRIFT_JSON,
        directory / ASSESSMENT_JSON,
    )
    snapshot.save_html(str(html))
    atomic_write_text(json_path, snapshot.json())
    atomic_write_text(drift_json, drift.model_dump_json(indent=2))
    atomic_write_text(assessment_json, assessment.model_dump_json(indent=2))
    drift_columns = tabular + monitored + outputs + prediction + embedded
    return WindowReport(
        directory=directory,
        html=html,
        json_path=json_path,
        drift_json=drift_json,
        assessment_json=assessment_json,
        window_start=drift.window_start,
        window_end=drift.window_end,
        n_window=len(win_frame),
        n_reference=len(ref_frame),
        columns=drift_columns,
        seconds=time.perf_counter() - started,
    )


__all__ = [
    "ASSESSMENT_JSON",
    "DRIFT_JSON",
    "REPORT_HTML",
    "REPORT_JSON",
    "WindowReport",
    "build_window_report",
    "report_directory",
    "window_stamp",
]
