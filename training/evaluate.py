"""Evaluation: metrics, calibration, slices, ablation, plots, baseline and the promotion gate.

Computation returns typed results; plots are drawn from those results; the promotion
decision (:func:`check_promotion`) is a separate pure function over two evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import minimize_scalar
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from training.model import MultimodalClassifier, probability_columns, softmax

PrimaryMetric = Literal["macro_f1", "accuracy"]
ComparedMetric = Literal["macro_f1", "accuracy", "brier"]
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
    brier: float | None = Field(
        default=None,
        description="Mean multi-class Brier score: per row, the squared distance of the "
        "probabilities from the one-hot label (0 perfect, 2 worst; lower is better).",
    )

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
    row_labels: list[int] = Field(
        default_factory=list,
        exclude=True,
        description="Per row: the true class index (for paired tests; not serialised).",
    )
    row_predictions: list[int] = Field(
        default_factory=list,
        exclude=True,
        description="Per row: the predicted class index (for paired tests; not serialised).",
    )
    row_slices: dict[str, list[str]] = Field(
        default_factory=dict,
        exclude=True,
        description="Per slice column: each row's value (for paired slice tests).",
    )
    row_brier: list[float] = Field(
        default_factory=list,
        exclude=True,
        description="Per row: the Brier score of the calibrated probabilities (for the "
        "paired Brier test; not serialised).",
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


def brier_scores(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Per-row multi-class Brier score: ``sum_k (proba_k - [y == k])^2``."""
    proba = np.asarray(proba, dtype=np.float64)
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(y)), np.asarray(y, dtype=np.int64)] = 1.0
    return ((proba - onehot) ** 2).sum(axis=1)


def compute_metrics(y: np.ndarray, proba: np.ndarray, n_classes: int) -> MetricSet:
    """Accuracy, macro-F1, ROC-AUC, log-loss, ECE and Brier score of ``proba`` against
    class indices ``y``."""
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
        brier=float(brier_scores(y, proba).mean()),
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
    row_slices = {column: frame[column].astype(str).tolist() for column in slice_columns}
    row_slices["modalities"] = [str(v) for v in patterns]
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
        row_labels=y.tolist(),
        row_predictions=proba.argmax(axis=1).tolist(),
        row_slices=row_slices,
        row_brier=brier_scores(y, proba).tolist(),
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
    recent_test: Literal["brier", "primary_metric"] = Field(
        default="brier",
        description="How 'better on the recent holdout' is judged. 'brier': a paired "
        "bootstrap of the per-row Brier score of the calibrated probabilities (a proper "
        "scoring rule, it uses the probabilities and not only the argmax), whose lower "
        "bound of the improvement must exceed min_brier_improvement, and the primary "
        "metric may not fall by more than max_metric_drop. 'primary_metric': a paired "
        "bootstrap of the primary metric, whose lower bound must exceed min_improvement. "
        "On the challenger's ~300 newest rows the primary-metric test misses most real "
        "gains of 0.02-0.03 macro-F1; the Brier test sees them (benchmarks/README.md, "
        "Poisoning).",
    )
    min_brier_improvement: float = Field(
        default=0.0,
        ge=0.0,
        description="recent_test='brier': the lower bound of the paired interval of the "
        "Brier improvement (champion's mean Brier - challenger's) must exceed this.",
    )
    max_metric_drop: float = Field(
        default=0.0,
        ge=0.0,
        description="recent_test='brier': on the recent holdout the challenger's primary "
        "metric may be below the champion's by at most this (point difference), so a "
        "model that is better calibrated but decides worse does not promote.",
    )
    min_improvement: float = Field(
        default=0.0,
        ge=0.0,
        description="recent_test='primary_metric': on the recent holdout the challenger "
        "must beat the champion by more than this, judged on the lower bound of the "
        "paired bootstrap interval of the difference (so a gain within noise does not "
        "promote).",
    )
    non_inferiority_margin: float = Field(
        default=0.03,
        ge=0.0,
        description="On the golden holdout the challenger may be worse than the champion "
        "by at most this: the lower bound of the paired interval of the difference must "
        "stay above -margin.",
    )
    confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1.0,
        description="One-sided confidence of each paired bootstrap bound.",
    )
    n_resamples: int = Field(
        default=2000, ge=100, description="Bootstrap resamples of the paired tests."
    )
    min_improvement_over_baseline: float = Field(
        default=0.05,
        ge=0.0,
        description="A first version must beat the majority-class baseline by more than this.",
    )
    slice_tolerance: float = Field(
        default=0.05,
        ge=0.0,
        description="No slice's primary metric may fall by more than this against the champion "
        "(on the golden holdout: and the fall must be significant in the paired test).",
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


class PairedComparison(BaseModel):
    """Challenger against champion on the same rows: the difference and its interval."""

    model_config = ConfigDict(frozen=True)

    holdout: Literal["recent", "golden"]
    slice: str = Field(default="overall", description="'overall' or a slice key.")
    metric: ComparedMetric
    n_rows: int
    champion: float
    challenger: float
    delta: float = Field(
        description="The challenger's improvement: challenger - champion (for 'brier', "
        "where lower is better, champion - challenger)."
    )
    low: float = Field(description="Lower one-sided bound of delta (nan without a test).")
    high: float = Field(description="Upper one-sided bound of delta (nan without a test).")
    test: str = Field(description="How the interval was computed.")
    mcnemar_p: float | None = Field(
        default=None, description="Exact McNemar p-value of the accuracy difference."
    )


class PromotionDecision(BaseModel):
    """Whether a challenger becomes champion, with every check and the reason."""

    model_config = ConfigDict(frozen=True)

    promote: bool
    reason: str
    checks: list[GateCheck]
    candidate_metric: float
    reference_metric: float = Field(description="The champion's metric, or the baseline's.")
    against: Literal["champion", "baseline"]
    comparisons: list[PairedComparison] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    def verdict_markdown(self) -> str:
        """The gate's verdict as a markdown table (champion vs challenger per holdout and
        slice, with the test used), then the failed checks and warnings."""
        head = (
            f"**Gate verdict: {'PROMOTE' if self.promote else 'REJECT'}** "
            f"(against the {self.against})\n\n"
        )
        lines = []
        if self.comparisons:
            lines += [
                "| holdout | slice | metric | rows | champion | challenger | improvement | bound "
                "| test |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for c in self.comparisons:
                bound = "-" if np.isnan(c.low) else f"[{c.low:+.4f}, {c.high:+.4f}]"
                lines.append(
                    f"| {c.holdout} | {c.slice} | {c.metric} | {c.n_rows} | {c.champion:.4f} | "
                    f"{c.challenger:.4f} | {c.delta:+.4f} | {bound} | {c.test} |"
                )
            lines.append("")
        lines += [f"- {'pass' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        lines += [f"- warning: {w}" for w in self.warnings]
        return head + "\n".join(lines) + "\n"


def _bootstrap_scores(
    y: np.ndarray, pred: np.ndarray, idx: np.ndarray, n_classes: int, metric: PrimaryMetric
) -> np.ndarray:
    """The metric of ``pred`` on each resample (rows ``idx``: resamples x rows)."""
    ys, ps = y[idx], pred[idx]
    if metric == "accuracy":
        return (ys == ps).mean(axis=1)
    f1 = np.zeros(len(idx))
    for c in range(n_classes):
        tp = ((ys == c) & (ps == c)).sum(axis=1)
        denom = (ys == c).sum(axis=1) + (ps == c).sum(axis=1)
        f1 += np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return f1 / n_classes


def _point(y: np.ndarray, pred: np.ndarray, n_classes: int, metric: PrimaryMetric) -> float:
    idx = np.arange(len(y))[None, :]
    return float(_bootstrap_scores(y, pred, idx, n_classes, metric)[0])


def _resampled(
    n_rows: int, n_resamples: int, seed: int, statistic: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``statistic`` of each of ``n_resamples`` bootstrap resamples of ``n_rows`` rows
    (``statistic`` takes a resamples x rows index block), drawn in blocks of at most
    about 2 million indices to bound memory."""
    rng = np.random.default_rng(seed)
    values = []
    chunk = max(1, min(n_resamples, 2_000_000 // n_rows))
    done = 0
    while done < n_resamples:
        m = min(chunk, n_resamples - done)
        values.append(statistic(rng.integers(0, n_rows, size=(m, n_rows))))
        done += m
    return np.concatenate(values)


def paired_bootstrap(
    y: np.ndarray,
    pred_challenger: np.ndarray,
    pred_champion: np.ndarray,
    n_classes: int,
    metric: PrimaryMetric,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Difference ``challenger - champion`` of ``metric`` on the same rows, with one-sided
    ``confidence`` bounds from a paired bootstrap (both models scored on each resample).

    Returns:
        ``(delta, low, high)``.

    Raises:
        ValueError: the arrays differ in length or are empty.
    """
    y, a, b = (np.asarray(v, dtype=np.int64) for v in (y, pred_challenger, pred_champion))
    if not (len(y) == len(a) == len(b)) or len(y) == 0:
        raise ValueError(f"paired test needs equal, non-empty rows: {len(y)}, {len(a)}, {len(b)}")
    spread = _resampled(
        len(y),
        n_resamples,
        seed,
        lambda idx: (
            _bootstrap_scores(y, a, idx, n_classes, metric)
            - _bootstrap_scores(y, b, idx, n_classes, metric)
        ),
    )
    delta = _point(y, a, n_classes, metric) - _point(y, b, n_classes, metric)
    low, high = np.quantile(spread, [1 - confidence, confidence])
    return float(delta), float(low), float(high)


def paired_mean_bootstrap(
    gain: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of per-row paired differences ``gain`` (e.g. the champion's Brier score minus
    the challenger's on the same rows), with one-sided ``confidence`` bounds from a
    bootstrap of the rows.

    Returns:
        ``(mean, low, high)``.

    Raises:
        ValueError: ``gain`` is empty or not finite.
    """
    gain = np.asarray(gain, dtype=np.float64)
    if len(gain) == 0 or not np.isfinite(gain).all():
        raise ValueError(f"paired test needs finite, non-empty rows: {len(gain)} rows")
    means = _resampled(len(gain), n_resamples, seed, lambda idx: gain[idx].mean(axis=1))
    low, high = np.quantile(means, [1 - confidence, confidence])
    return float(gain.mean()), float(low), float(high)


def mcnemar_p(y: np.ndarray, pred_challenger: np.ndarray, pred_champion: np.ndarray) -> float:
    """Exact (binomial) McNemar p-value, two-sided, of the two models' accuracy."""
    from scipy.stats import binomtest

    right_a = np.asarray(pred_challenger) == np.asarray(y)
    right_b = np.asarray(pred_champion) == np.asarray(y)
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def _has_rows(*evaluations: EvaluationResult) -> bool:
    first = evaluations[0]
    return all(
        len(e.row_predictions) == len(first.row_labels) > 0 and e.row_labels == first.row_labels
        for e in evaluations
    )


def compare_brier(
    challenger: EvaluationResult,
    champion: EvaluationResult,
    gate: GateConfig,
    holdout: Literal["recent", "golden"],
) -> PairedComparison | None:
    """Paired bootstrap of the per-row Brier score on the same rows (``delta``: the
    champion's mean Brier minus the challenger's, positive when the challenger is better).
    None when either evaluation lacks per-row scores."""
    if not (
        _has_rows(challenger, champion)
        and len(challenger.row_brier) == len(champion.row_brier) == len(challenger.row_labels)
    ):
        return None
    a, b = np.asarray(challenger.row_brier), np.asarray(champion.row_brier)
    delta, low, high = paired_mean_bootstrap(b - a, gate.confidence, gate.n_resamples, seed=len(a))
    return PairedComparison(
        holdout=holdout,
        metric="brier",
        n_rows=len(a),
        champion=float(b.mean()),
        challenger=float(a.mean()),
        delta=delta,
        low=low,
        high=high,
        test=f"paired bootstrap of per-row Brier, {gate.n_resamples} resamples, "
        f"one-sided {gate.confidence:.1%}",
    )


def compare_paired(
    challenger: EvaluationResult,
    champion: EvaluationResult,
    gate: GateConfig,
    holdout: Literal["recent", "golden"],
    rows: np.ndarray | None = None,
    slice_key: str = "overall",
) -> PairedComparison:
    """Paired comparison of two evaluations of the same rows (``rows``: a boolean mask of
    a slice). Without per-row predictions, the metrics are compared as points."""
    metric = gate.primary_metric
    k = len(challenger.classes)
    if not _has_rows(challenger, champion):
        a, b = challenger.overall.value(metric), champion.overall.value(metric)
        return PairedComparison(
            holdout=holdout,
            slice=slice_key,
            metric=metric,
            n_rows=challenger.overall.n_rows,
            champion=b,
            challenger=a,
            delta=a - b,
            low=float("nan"),
            high=float("nan"),
            test="none (metrics only, no per-row predictions)",
        )
    y = np.asarray(challenger.row_labels)
    a, b = np.asarray(challenger.row_predictions), np.asarray(champion.row_predictions)
    if rows is not None:
        y, a, b = y[rows], a[rows], b[rows]
    delta, low, high = paired_bootstrap(
        y, a, b, k, metric, gate.confidence, gate.n_resamples, seed=len(y)
    )
    return PairedComparison(
        holdout=holdout,
        slice=slice_key,
        metric=metric,
        n_rows=len(y),
        champion=_point(y, b, k, metric),
        challenger=_point(y, a, k, metric),
        delta=delta,
        low=low,
        high=high,
        test=f"paired bootstrap, {gate.n_resamples} resamples, one-sided {gate.confidence:.1%}",
        mcnemar_p=mcnemar_p(y, a, b),
    )


def _slice_checks(
    candidate: EvaluationResult,
    champion: EvaluationResult,
    gate: GateConfig,
    holdout: Literal["recent", "golden"],
    comparisons: list[PairedComparison],
    skipped: list[str],
) -> GateCheck:
    """Slices whose primary metric fell by more than the tolerance (on the golden holdout:
    and significantly, in the paired test, each slice at the gate's confidence: a
    Bonferroni correction over the slices let a model worse than the champion through,
    benchmarks/README.md, Poisoning)."""
    metric = gate.primary_metric
    theirs = {s.key: s.metrics for s in champion.slices}
    worse = []
    paired = holdout == "golden" and _has_rows(candidate, champion)
    for s in candidate.slices:
        other = theirs.get(s.key)
        if other is None:
            continue
        if min(s.metrics.n_rows, other.n_rows) < gate.min_slice_rows:
            skipped.append(f"{holdout} {s.key} ({s.metrics.n_rows} rows)")
            continue
        drop = other.value(metric) - s.metrics.value(metric)
        if paired:
            values = np.asarray(candidate.row_slices.get(s.slice_by, []))
            if len(values) == len(candidate.row_labels):
                comparison = compare_paired(
                    candidate, champion, gate, holdout, values == s.value, s.key
                )
                comparisons.append(comparison)
                if drop > gate.slice_tolerance and comparison.high < 0:
                    worse.append(f"{s.key} (-{drop:.3f}, bound {comparison.high:+.3f})")
                continue
        if drop > gate.slice_tolerance:
            worse.append(f"{s.key} (-{drop:.3f})")
    name = "slices" if holdout == "recent" else "golden_slices"
    return GateCheck(
        name=name,
        passed=not worse,
        detail="no slice worse than tolerance"
        if not worse
        else f"worse by more than {gate.slice_tolerance}: {', '.join(worse)}",
    )


def _ablation_warnings(evaluation: EvaluationResult, metric: PrimaryMetric) -> list[str]:
    full = evaluation.overall.value(metric)
    return [
        f"the model without {name} scores {m.value(metric):.4f} > the full model's {full:.4f}"
        for name, m in evaluation.ablation.items()
        if m.value(metric) > full
    ]


def _recent_checks(
    candidate: EvaluationResult,
    champion: EvaluationResult,
    gate: GateConfig,
    comparisons: list[PairedComparison],
) -> list[GateCheck]:
    """Is the challenger better than the champion on the recent holdout? With the Brier
    test (the default): significantly better Brier score and the primary metric not
    worse; else (or without per-row scores): significantly better primary metric."""
    metric = gate.primary_metric
    recent = compare_paired(candidate, champion, gate, "recent")
    comparisons.append(recent)
    brier = compare_brier(candidate, champion, gate, "recent")
    if gate.recent_test == "brier" and brier is not None:
        comparisons.append(brier)
        return [
            GateCheck(
                name="brier_vs_champion",
                passed=brier.low > gate.min_brier_improvement,
                detail=f"Brier {brier.challenger:.4f} vs champion {brier.champion:.4f} "
                f"(improvement {brier.delta:+.4f}, lower bound {brier.low:+.4f} must "
                f"exceed {gate.min_brier_improvement})",
            ),
            GateCheck(
                name=f"{metric}_vs_champion",
                passed=recent.delta >= -gate.max_metric_drop,
                detail=f"{recent.challenger:.4f} vs champion {recent.champion:.4f} "
                f"(delta {recent.delta:+.4f} must be at least -{gate.max_metric_drop})",
            ),
        ]
    judged = recent.delta if np.isnan(recent.low) else recent.low
    return [
        GateCheck(
            name=f"{metric}_vs_champion",
            passed=judged > gate.min_improvement,
            detail=f"{recent.challenger:.4f} vs champion {recent.champion:.4f} "
            + (
                f"(point difference) + margin {gate.min_improvement}"
                if np.isnan(recent.low)
                else f"(delta {recent.delta:+.4f}, lower bound {recent.low:+.4f} must "
                f"exceed {gate.min_improvement})"
            ),
        )
    ]


def check_promotion(
    candidate: EvaluationResult,
    champion: EvaluationResult | None,
    gate: GateConfig,
    golden_candidate: EvaluationResult | None = None,
    golden_champion: EvaluationResult | None = None,
) -> PromotionDecision:
    """Decide promotion from evaluations on the same holdouts (``champion=None``: first).

    ``candidate``/``champion`` are scored on the recent holdout (the challenger's test
    split): the challenger must be better there, judged on a paired bootstrap bound
    (``gate.recent_test``: of the Brier score, with the primary metric not worse; or of
    the primary metric).
    ``golden_*`` are scored on the golden holdout (entities no training window holds,
    labels frozen): there the challenger must be non-inferior within
    ``gate.non_inferiority_margin``, and no slice may fall significantly. Poisoned recent
    labels sit in the recent holdout too; the golden holdout is what they cannot reach.
    """
    metric = gate.primary_metric
    value = candidate.overall.value(metric)
    checks: list[GateCheck] = []
    comparisons: list[PairedComparison] = []
    skipped: list[str] = []
    warnings = _ablation_warnings(candidate, metric)
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
        if golden_candidate is not None:
            golden_value = golden_candidate.overall.value(metric)
            golden_base = golden_candidate.baseline.value(metric)
            checks.append(
                GateCheck(
                    name=f"golden_{metric}_vs_baseline",
                    passed=golden_value > golden_base + gate.min_improvement_over_baseline,
                    detail=f"golden {golden_value:.4f} vs baseline {golden_base:.4f} "
                    f"+ margin {gate.min_improvement_over_baseline}",
                )
            )
    else:
        reference = champion.overall.value(metric)
        checks += _recent_checks(candidate, champion, gate, comparisons)
        checks.append(_slice_checks(candidate, champion, gate, "recent", comparisons, skipped))
        if golden_candidate is not None and golden_champion is not None:
            golden = compare_paired(golden_candidate, golden_champion, gate, "golden")
            comparisons.append(golden)
            judged = golden.delta if np.isnan(golden.low) else golden.low
            checks.append(
                GateCheck(
                    name=f"golden_{metric}_non_inferior",
                    passed=judged > -gate.non_inferiority_margin,
                    detail=f"golden {golden.challenger:.4f} vs champion {golden.champion:.4f} "
                    f"(delta {golden.delta:+.4f}, lower bound {judged:+.4f} must exceed "
                    f"-{gate.non_inferiority_margin})",
                )
            )
            checks.append(
                _slice_checks(
                    golden_candidate, golden_champion, gate, "golden", comparisons, skipped
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
    if skipped:
        warnings.append(
            f"slices skipped for size (< {gate.min_slice_rows} rows): {', '.join(skipped)}"
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
        comparisons=comparisons,
        warnings=warnings,
    )
