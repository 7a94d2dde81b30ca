"""Evaluation: metrics, calibration, slices, ablation, plots, baseline and the promotion gate.

Computation returns typed results; plots are drawn from those results; the promotion
decision (:func:`check_promotion`) is a separate pure function over two evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import minimize_scalar
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from training.model import MultimodalClassifier, probability_columns, softmax

PrimaryMetric = Literal["macro_f1", "accuracy"]
ALL_PRESENT = "all_present"


class MetricSet(BaseModel):
    """Classification metrics on one set of rows."""

    model_config = ConfigDict(frozen=True)

    n_rows: int
    accuracy: float
    macro_f1: float
    roc_auc: float | None = Field(
        default=None, description="One-vs-rest macro ROC-AUC; None when a class is absent."
    )
    log_loss: float | None = None
    ece: float | None = Field(default=None, description="Expected calibration error (top class).")

    def value(self, metric: PrimaryMetric) -> float:
        return float(getattr(self, metric))


class SliceMetric(BaseModel):
    """Metrics on the rows of one slice (a category value or a missing-modality pattern)."""

    model_config = ConfigDict(frozen=True)

    slice_by: str = Field(description="Categorical column, or 'modalities' for presence patterns.")
    value: str
    metrics: MetricSet

    @property
    def key(self) -> str:
        return f"{self.slice_by}={self.value}"


class ReliabilityBins(BaseModel):
    """Per-bin mean confidence, accuracy and count of the top-class probability."""

    model_config = ConfigDict(frozen=True)

    edges: list[float]
    confidence: list[float | None]
    accuracy: list[float | None]
    count: list[int]


class EvaluationResult(BaseModel):
    """A model evaluated on one frame."""

    model_config = ConfigDict(frozen=True)

    classes: list[str]
    overall: MetricSet = Field(description="Calibrated (temperature-scaled) probabilities.")
    uncalibrated: MetricSet = Field(description="Raw softmax probabilities.")
    temperature: float
    baseline: MetricSet = Field(description="Majority class of the training split.")
    slices: list[SliceMetric] = Field(default_factory=list)
    ablation: dict[str, MetricSet] = Field(
        default_factory=dict, description="Metrics with one modality masked, by modality."
    )
    confusion: list[list[int]] = Field(description="Rows = true class, columns = predicted.")
    reliability_uncalibrated: ReliabilityBins
    reliability_calibrated: ReliabilityBins
    ece_sampling_error: float = Field(
        default=0.0,
        ge=0.0,
        description="95th percentile of the ECE that a perfectly calibrated model shows on "
        "this many rows (labels redrawn from its own probabilities, 200 draws): the part of "
        "the measured ECE that sampling noise alone explains.",
    )

    def flat_metrics(self, prefix: str = "test") -> dict[str, float]:
        """Metrics as a flat ``name -> value`` dict for tracking (None values dropped)."""
        out: dict[str, float] = {}

        def put(name: str, metrics: MetricSet) -> None:
            for key, value in metrics.model_dump().items():
                if value is not None and key != "n_rows":
                    out[f"{name}_{key}"] = float(value)

        put(prefix, self.overall)
        out[f"{prefix}_ece_uncalibrated"] = float(self.uncalibrated.ece or 0.0)
        out[f"{prefix}_ece_sampling_error"] = self.ece_sampling_error
        out["temperature"] = self.temperature
        put(f"{prefix}_baseline", self.baseline)
        for name, metrics in self.ablation.items():
            put(f"{prefix}_without_{name}", metrics)
        for s in self.slices:
            safe = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in s.key)
            out[f"{prefix}_slice_{safe}_macro_f1"] = s.metrics.macro_f1
        return out


# Metrics ---------------------------------------------------------------------------------
def expected_calibration_error(y: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> float:
    """Top-class ECE with equal-width bins."""
    bins = reliability_bins(y, proba, n_bins)
    n = max(sum(bins.count), 1)
    return float(
        sum(
            c / n * abs(a - p)
            for c, a, p in zip(bins.count, bins.accuracy, bins.confidence, strict=True)
            if c
        )
    )


def ece_sampling_error(
    proba: np.ndarray, quantile: float = 0.95, draws: int = 200, seed: int = 0
) -> float:
    """The ``quantile`` of the ECE of a perfectly calibrated model with these probabilities.

    Labels are redrawn from ``proba`` itself (consistency resampling, a parametric
    bootstrap), so every draw is calibrated by construction and its ECE is pure sampling
    noise: about 0.07 on 100 rows, 0.01 on 10,000.
    """
    if len(proba) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(proba / proba.sum(axis=1, keepdims=True), axis=1)
    values = []
    for _ in range(draws):
        u = rng.random((len(proba), 1))
        y = np.minimum((u > cumulative).sum(axis=1), proba.shape[1] - 1)
        values.append(expected_calibration_error(y, proba))
    return float(np.quantile(values, quantile))


def reliability_bins(y: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    confidence = proba.max(axis=1) if len(proba) else np.zeros(0)
    correct = proba.argmax(axis=1) == y if len(proba) else np.zeros(0, bool)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    conf, acc, count = [], [], []
    for b in range(n_bins):
        sel = which == b
        count.append(int(sel.sum()))
        conf.append(float(confidence[sel].mean()) if sel.any() else None)
        acc.append(float(correct[sel].mean()) if sel.any() else None)
    return ReliabilityBins(edges=edges.tolist(), confidence=conf, accuracy=acc, count=count)


def compute_metrics(y: np.ndarray, proba: np.ndarray, n_classes: int) -> MetricSet:
    """Accuracy, macro-F1, ROC-AUC, log-loss and ECE of ``proba`` against class indices ``y``."""
    if len(y) == 0:
        return MetricSet(n_rows=0, accuracy=float("nan"), macro_f1=float("nan"))
    labels = list(range(n_classes))
    pred = proba.argmax(axis=1)
    roc_auc = None
    if len(np.unique(y)) == n_classes:
        if n_classes == 2:
            roc_auc = float(roc_auc_score(y, proba[:, 1]))
        else:
            roc_auc = float(roc_auc_score(y, proba, multi_class="ovr", labels=labels))
    clipped = np.clip(proba, 1e-7, 1.0)
    return MetricSet(
        n_rows=len(y),
        accuracy=float(accuracy_score(y, pred)),
        macro_f1=float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        roc_auc=roc_auc,
        log_loss=float(log_loss(y, clipped / clipped.sum(1, keepdims=True), labels=labels)),
        ece=expected_calibration_error(y, proba),
    )


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of ``softmax(logits / T)``."""
    if len(y) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        p = softmax(logits / np.exp(log_t))
        return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0)).mean())

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def label_indices(labels: pd.Series, classes: Sequence[str]) -> np.ndarray:
    """Class indices of ``labels``.

    Raises:
        ValueError: a label is not one of ``classes``.
    """
    lookup = {c: i for i, c in enumerate(classes)}
    values = labels.astype(str).tolist()
    unknown = sorted({v for v in values if v not in lookup})
    if unknown:
        raise ValueError(f"labels not among the classes {list(classes)}: {unknown[:10]}")
    return np.asarray([lookup[v] for v in values], dtype=np.int64)


def baseline_metrics(y: np.ndarray, class_prior: Sequence[float], n_classes: int) -> MetricSet:
    """The trivial model: the training split's class frequencies, predicting the majority."""
    prior = np.asarray(class_prior if len(class_prior) else np.ones(n_classes), dtype=float)
    prior = np.clip(prior / prior.sum(), 1e-6, 1.0)
    return compute_metrics(y, np.tile(prior, (len(y), 1)), n_classes)


def modality_pattern(frame: pd.DataFrame, model: MultimodalClassifier) -> pd.Series:
    """Per row: ``all_present`` or ``missing_<a>+<b>`` over the text and image modalities."""
    missing = pd.DataFrame(index=frame.index)
    for e in model.spec.embeddings:
        if e.presence_column in frame.columns:
            flag = pd.to_numeric(frame[e.presence_column], errors="coerce").fillna(0)
            missing[e.name] = flag.to_numpy() <= 0
        else:
            missing[e.name] = False
    if missing.shape[1] == 0:
        return pd.Series(ALL_PRESENT, index=frame.index)
    return missing.apply(
        lambda row: (
            "missing_" + "+".join(c for c in missing.columns if row[c])
            if row.any()
            else ALL_PRESENT
        ),
        axis=1,
    )


def evaluate_model(
    model: MultimodalClassifier,
    frame: pd.DataFrame,
    label_column: str,
    slice_columns: Sequence[str] | None = None,
) -> EvaluationResult:
    """Evaluate a classifier on a labelled feature frame.

    Args:
        model: the trained classifier.
        frame: feature frame with the label column.
        label_column: name of the label column.
        slice_columns: categorical columns to slice by (default: the model's categoricals).

    Raises:
        ValueError: the frame is empty or holds labels outside the model's classes.
    """
    if len(frame) == 0:
        raise ValueError("cannot evaluate on an empty frame")
    classes = model.classes
    k = len(classes)
    y = label_indices(frame[label_column], classes)
    logits = model.logits(frame)
    proba_raw = softmax(logits)
    proba = softmax(logits / model.temperature)
    if slice_columns is None:
        slice_columns = [c.name for c in model.spec.categorical]
    slices: list[SliceMetric] = []
    for column in slice_columns:
        values = frame[column].astype(str).to_numpy()
        for value in sorted(set(values)):
            sel = values == value
            slices.append(
                SliceMetric(
                    slice_by=column, value=value, metrics=compute_metrics(y[sel], proba[sel], k)
                )
            )
    patterns = modality_pattern(frame, model).to_numpy()
    for value in sorted(set(patterns)):
        sel = patterns == value
        slices.append(
            SliceMetric(
                slice_by="modalities", value=value, metrics=compute_metrics(y[sel], proba[sel], k)
            )
        )
    ablation = {}
    if len(model.spec.modalities) > 1:
        for name in model.spec.modalities:
            masked = model.predict_proba(frame, calibrated=True, mask_modalities=[name])
            ablation[name] = compute_metrics(y, masked, k)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y, proba.argmax(axis=1)), 1)
    return EvaluationResult(
        classes=classes,
        overall=compute_metrics(y, proba, k),
        uncalibrated=compute_metrics(y, proba_raw, k),
        temperature=model.temperature,
        baseline=baseline_metrics(y, model.spec.class_prior, k),
        slices=slices,
        ablation=ablation,
        confusion=confusion.tolist(),
        reliability_uncalibrated=reliability_bins(y, proba_raw),
        reliability_calibrated=reliability_bins(y, proba),
        ece_sampling_error=ece_sampling_error(proba),
    )


# Plots -----------------------------------------------------------------------------------
def plot_reliability(evaluation: EvaluationResult, path: Path) -> Path:
    """Reliability diagram (before and after temperature scaling) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    for name, bins in (
        (f"raw (ECE {evaluation.uncalibrated.ece:.3f})", evaluation.reliability_uncalibrated),
        (
            f"T={evaluation.temperature:.2f} (ECE {evaluation.overall.ece:.3f})",
            evaluation.reliability_calibrated,
        ),
    ):
        points = [
            (c, a) for c, a in zip(bins.confidence, bins.accuracy, strict=True) if c is not None
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, marker="o", label=name)
    axes.set_xlabel("confidence (top class)")
    axes.set_ylabel("accuracy")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left")
    axes.set_title("Reliability diagram")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


def plot_confusion(evaluation: EvaluationResult, path: Path) -> Path:
    """Confusion matrix (counts) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    matrix = np.asarray(evaluation.confusion)
    figure = Figure(
        figsize=(1.2 * len(evaluation.classes) + 2.5, 1.2 * len(evaluation.classes) + 2)
    )
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    ticks = range(len(evaluation.classes))
    axes.set_xticks(list(ticks), evaluation.classes)
    axes.set_yticks(list(ticks), evaluation.classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (i, j), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        axes.text(j, i, str(value), ha="center", va="center", color=colour)
    axes.set_title("Confusion matrix")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


# Reference for monitoring ----------------------------------------------------------------
def build_reference_sample(
    model: MultimodalClassifier,
    frame: pd.DataFrame,
    label_column: str,
    keep_columns: Sequence[str],
    max_rows: int = 5000,
    seed: int = 0,
) -> pd.DataFrame:
    """Features, model outputs (``proba_<class>``, ``prediction``) and label for monitoring.

    ``frame`` must be data the model did not train on (validation + test). Rows are a
    seeded random sample of at most ``max_rows``, kept in time order.
    """
    if len(frame) > max_rows:
        rng = np.random.default_rng(seed)
        frame = frame.iloc[np.sort(rng.choice(len(frame), max_rows, replace=False))]
    columns = list(dict.fromkeys(c for c in keep_columns if c in frame.columns))
    reference = frame[columns].reset_index(drop=True).copy()
    outputs = model.predict_frame(frame.reset_index(drop=True))
    for column in [*probability_columns(model.classes), "prediction"]:
        reference[column] = outputs[column].to_numpy()
    if label_column in frame.columns and label_column not in reference.columns:
        reference[label_column] = frame[label_column].astype(str).to_numpy()
    return reference


# Promotion gate --------------------------------------------------------------------------
class GateConfig(BaseModel):
    """When a challenger may become champion."""

    model_config = ConfigDict(frozen=True)

    primary_metric: PrimaryMetric = Field(
        default="macro_f1", description="Metric compared on the shared holdout."
    )
    min_improvement: float = Field(
        default=0.0,
        ge=0.0,
        description="The challenger must beat the champion's primary metric by more than this.",
    )
    min_improvement_over_baseline: float = Field(
        default=0.05,
        ge=0.0,
        description="A first version must beat the majority-class baseline by more than this.",
    )
    slice_tolerance: float = Field(
        default=0.05,
        ge=0.0,
        description="No slice's primary metric may fall by more than this against the champion.",
    )
    min_slice_rows: int = Field(
        default=100,
        ge=1,
        description="Slices with fewer holdout rows are not compared: on a 40-row slice "
        "macro-F1 moves by more than the tolerance by chance alone, and a veto on noise "
        "would keep a better model out.",
    )
    max_ece: float = Field(
        default=0.1, gt=0.0, description="Calibrated ECE on the holdout must stay under this."
    )
    ece_allows_sampling_error: bool = Field(
        default=True,
        description="Judge the ECE bound with its sampling error: reject only when the "
        "holdout ECE exceeds max_ece by more than a perfectly calibrated model's ECE would "
        "by chance on as many rows (95th percentile). ECE is that noisy on small holdouts "
        "(about 0.07 on 100 rows); on large ones the allowance shrinks to about 0.01.",
    )


class GateCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    passed: bool
    detail: str


class PromotionDecision(BaseModel):
    """Whether a challenger becomes champion, with every check and the reason."""

    model_config = ConfigDict(frozen=True)

    promote: bool
    reason: str
    checks: list[GateCheck]
    candidate_metric: float
    reference_metric: float = Field(description="The champion's metric, or the baseline's.")
    against: Literal["champion", "baseline"]


def check_promotion(
    candidate: EvaluationResult,
    champion: EvaluationResult | None,
    gate: GateConfig,
) -> PromotionDecision:
    """Decide promotion from two evaluations on the same holdout (``champion=None``: first)."""
    metric = gate.primary_metric
    value = candidate.overall.value(metric)
    checks: list[GateCheck] = []
    if champion is None:
        reference = candidate.baseline.value(metric)
        needed = reference + gate.min_improvement_over_baseline
        checks.append(
            GateCheck(
                name=f"{metric}_vs_baseline",
                passed=value > needed,
                detail=f"{value:.4f} vs baseline {reference:.4f} "
                f"+ margin {gate.min_improvement_over_baseline}",
            )
        )
    else:
        reference = champion.overall.value(metric)
        needed = reference + gate.min_improvement
        checks.append(
            GateCheck(
                name=f"{metric}_vs_champion",
                passed=value > needed,
                detail=f"{value:.4f} vs champion {reference:.4f} + margin {gate.min_improvement}",
            )
        )
        theirs = {s.key: s.metrics for s in champion.slices}
        worse = []
        for s in candidate.slices:
            other = theirs.get(s.key)
            if other is None or min(s.metrics.n_rows, other.n_rows) < gate.min_slice_rows:
                continue
            drop = other.value(metric) - s.metrics.value(metric)
            if drop > gate.slice_tolerance:
                worse.append(f"{s.key} (-{drop:.3f})")
        checks.append(
            GateCheck(
                name="slices",
                passed=not worse,
                detail="no slice worse than tolerance"
                if not worse
                else f"worse by more than {gate.slice_tolerance}: {', '.join(worse)}",
            )
        )
    ece = candidate.overall.ece if candidate.overall.ece is not None else float("inf")
    allowance = candidate.ece_sampling_error if gate.ece_allows_sampling_error else 0.0
    checks.append(
        GateCheck(
            name="calibration",
            passed=ece <= gate.max_ece + allowance,
            detail=f"ECE {ece:.4f} vs bound {gate.max_ece}"
            + (
                f" + sampling error {allowance:.4f} on {candidate.overall.n_rows} rows"
                if allowance
                else ""
            ),
        )
    )
    promote = all(c.passed for c in checks)
    failed = [c for c in checks if not c.passed]
    reason = (
        "passed: " + "; ".join(c.detail for c in checks)
        if promote
        else "rejected: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
    )
    return PromotionDecision(
        promote=promote,
        reason=reason,
        checks=checks,
        candidate_metric=value,
        reference_metric=reference,
        against="baseline" if champion is None else "champion",
    )
