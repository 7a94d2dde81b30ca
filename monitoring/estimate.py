"""Label-free performance estimation from calibrated probabilities (NannyML's CBPE).

If the model's probabilities are calibrated, row ``i`` is correct with probability
``max_k p_ik``, and the confusion matrix has expected entries
``E[C[true=j, pred=k]] = sum_{i: pred_i = k} p_ij``. Expected accuracy and expected
macro-F1 follow from those entries without a single label. The estimate is blind to
concept drift (``P(y | x)`` changing): calibration is exactly what such drift breaks, so
realized performance on late labels remains the check for it.

The confidence band is the spread of the *realized* metric under calibration: labels are
drawn ``y_i ~ Categorical(p_i)`` many times and the metric recomputed, so the band says
where the realized value should fall if the model is still calibrated on this window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

Metric = Literal["macro_f1", "accuracy"]


class PerformanceEstimate(BaseModel):
    """Label-free estimate of a window's performance, with a band for the realized value."""

    model_config = ConfigDict(frozen=True)

    n_rows: int = Field(description="Rows the estimate is computed on.")
    classes: list[str] = Field(description="Class names, in the column order of the probabilities.")
    expected_accuracy: float = Field(description="Mean of the highest class probability.")
    expected_macro_f1: float = Field(
        description="Macro-F1 from the expected confusion-matrix entries (CBPE)."
    )
    accuracy_band: tuple[float, float] = Field(description="Band for the realized accuracy.")
    macro_f1_band: tuple[float, float] = Field(description="Band for the realized macro-F1.")
    confidence: float = Field(description="Nominal coverage of the bands.")
    expected_confusion: list[list[float]] = Field(
        description="Expected confusion matrix, rows = true class, columns = predicted class."
    )
    method: str = Field(
        default="cbpe",
        description="Estimator that produced the estimate (see monitoring.estimators).",
    )
    trusted: bool = Field(
        default=True,
        description="False when the window is so far from the reference that the estimate "
        "cannot be relied on (trust_reasons say why); read 'untrusted + drift' as a "
        "possible drop, not as 'no drop'.",
    )
    trust_reasons: list[str] = Field(
        default_factory=list, description="Why the estimate is untrusted; empty when trusted."
    )
    domain_auc: float | None = Field(
        default=None,
        description="Cross-validated ROC-AUC of a classifier telling window rows from "
        "reference rows (0.5: indistinguishable); None when not computed.",
    )
    far_share: float | None = Field(
        default=None,
        description="Share of window rows far from the reference in some embedding's PCA "
        "space; None when not computed.",
    )
    far_share_by_column: dict[str, float] = Field(
        default_factory=dict, description="Share of far window rows per embedding column."
    )
    accuracy_by_method: dict[str, float] = Field(
        default_factory=dict,
        description="Expected accuracy from every estimator computed on the window, for "
        "comparison in the report.",
    )

    def value(self, metric: Metric = "macro_f1") -> float:
        """The point estimate of ``metric``."""
        return self.expected_macro_f1 if metric == "macro_f1" else self.expected_accuracy

    def band(self, metric: Metric = "macro_f1") -> tuple[float, float]:
        """The band of ``metric``."""
        return self.macro_f1_band if metric == "macro_f1" else self.accuracy_band

    def trust_line(self) -> str:
        """'trusted (distance_checked)' or 'UNTRUSTED (distance_checked): <reasons>'."""
        if self.trusted:
            return f"trusted ({self.method})"
        return f"UNTRUSTED ({self.method}): {'; '.join(self.trust_reasons)}"


class RealizedPerformance(BaseModel):
    """Performance measured against labels."""

    model_config = ConfigDict(frozen=True)

    n_rows: int = Field(description="Labelled rows the metrics are computed on.")
    classes: list[str]
    accuracy: float
    macro_f1: float
    confusion: list[list[int]] = Field(
        description="Confusion matrix, rows = true class, columns = predicted class."
    )

    def value(self, metric: Metric = "macro_f1") -> float:
        """The realized value of ``metric``."""
        return self.macro_f1 if metric == "macro_f1" else self.accuracy


class RealizedWindow(BaseModel):
    """Realized performance of one labelled window, for the model version that scored it.

    Labels arrive late: the window monitored today usually carries the labels of an
    earlier window. This says which window and which version the numbers belong to.
    """

    model_config = ConfigDict(frozen=True)

    window_start: datetime = Field(description="Start of the window whose labels these are.")
    window_end: datetime = Field(description="End of that window.")
    model_version: str = Field(description="The version whose predictions were scored.")
    performance: RealizedPerformance
    reference_performance: float | None = Field(
        default=None, description="That version's reference value of the policy metric."
    )

    def describe(self, metric: Metric = "accuracy") -> str:
        """E.g. 'realized accuracy 0.640 on the labels of 08-02 (400 rows, v1)'."""
        return (
            f"realized {metric} {self.performance.value(metric):.3f} on the labels of "
            f"{self.window_start:%Y-%m-%d %H:%M} ({self.performance.n_rows} rows, "
            f"v{self.model_version})"
        )


def realized_windows(
    rows: pd.DataFrame,
    label: str,
    classes: Sequence[str],
    window_start: datetime,
    window_end: datetime,
    references: dict[str, float] | None = None,
    version_column: str = "model_version",
    prediction_column: str = "prediction",
) -> list[RealizedWindow]:
    """Realized performance of a labelled window, one entry per model version that scored it.

    Args:
        rows: prediction-log rows of the window with the labels joined (NaN: not arrived).
        label: the label column.
        classes: class names.
        window_start, window_end: the labelled window.
        references: each version's reference value of the policy metric, where known.

    Returns:
        Entries for the versions with at least one labelled row, largest first.
    """
    if rows.empty or label not in rows or version_column not in rows:
        return []
    labelled = rows[rows[label].notna() & rows[prediction_column].notna()]
    labelled = labelled[labelled[label].astype(str).isin([str(c) for c in classes])]
    out = []
    for version, part in labelled.groupby(labelled[version_column].astype(str)):
        performance = realized_performance(
            part[label].astype(str).to_numpy(),
            part[prediction_column].astype(str).to_numpy(),
            classes,
        )
        out.append(
            RealizedWindow(
                window_start=window_start,
                window_end=window_end,
                model_version=str(version),
                performance=performance,
                reference_performance=(references or {}).get(str(version)),
            )
        )
    return sorted(out, key=lambda r: -r.performance.n_rows)


class PerformanceComparison(BaseModel):
    """How an estimate compares with what the labels later said."""

    model_config = ConfigDict(frozen=True)

    metric: Metric
    estimated: float
    realized: float
    error: float = Field(description="estimated - realized.")
    within_band: bool = Field(description="Whether the realized value lies in the band.")


def _macro_f1(confusion: np.ndarray) -> np.ndarray:
    """Macro-F1 of one ``(k, k)`` or a stack of ``(..., k, k)`` confusion matrices.

    A class that is neither predicted nor present scores F1 = 1 (nothing to get wrong)
    only if the whole matrix is empty; otherwise it scores 0, as scikit-learn does.
    """
    confusion = np.asarray(confusion, dtype=float)
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    predicted = confusion.sum(axis=-2)
    actual = confusion.sum(axis=-1)
    denominator = predicted + actual
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2.0 * tp / denominator, 0.0)
    return f1.mean(axis=-1)


def _validate_probas(probas: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    probas = np.asarray(probas, dtype=float)
    if probas.ndim != 2 or probas.shape[1] != len(classes):
        raise ValueError(f"probas must have shape (n_rows, {len(classes)}), got {probas.shape}")
    if len(probas) == 0:
        raise ValueError("cannot estimate performance on an empty window")
    if not np.all(np.isfinite(probas)) or probas.min() < -1e-6:
        raise ValueError("probas must be finite and non-negative")
    sums = probas.sum(axis=1, keepdims=True)
    if np.abs(sums - 1.0).max() > 1e-3:
        raise ValueError("each row of probas must sum to 1")
    return np.clip(probas, 0.0, None) / sums


def simulated_bands(
    true_probas: np.ndarray,
    predicted: np.ndarray,
    confidence: float,
    n_simulations: int,
    rng: np.random.Generator,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Bands of the realized accuracy and macro-F1 when each row's true class is drawn
    from ``true_probas`` (``(n, k)``) and its prediction is ``predicted``.

    Returns:
        ``(accuracy_band, macro_f1_band)``, each the central ``confidence`` interval.
    """
    n, k = true_probas.shape
    cumulative = np.cumsum(true_probas, axis=1)
    cumulative[:, -1] = 1.0
    draws = rng.random((n_simulations, n, 1))
    labels = (draws > cumulative[None, :, :]).sum(axis=2)  # (sims, n) in [0, k)
    cells = labels * k + predicted[None, :]
    offsets = (np.arange(n_simulations) * k * k)[:, None]
    counts = np.bincount((cells + offsets).ravel(), minlength=n_simulations * k * k)
    confusions = counts.reshape(n_simulations, k, k)
    accuracies = np.trace(confusions, axis1=1, axis2=2) / n
    f1s = _macro_f1(confusions)
    tail = (1.0 - confidence) / 2.0
    accuracy_band = tuple(float(q) for q in np.quantile(accuracies, [tail, 1.0 - tail]))
    f1_band = tuple(float(q) for q in np.quantile(f1s, [tail, 1.0 - tail]))
    return accuracy_band, f1_band  # type: ignore[return-value]


def estimate_performance(
    probas: np.ndarray,
    classes: Sequence[str],
    confidence: float = 0.9,
    n_simulations: int = 400,
    seed: int = 0,
) -> PerformanceEstimate:
    """Estimate accuracy and macro-F1 of a window from its calibrated probabilities.

    Args:
        probas: ``(n_rows, n_classes)`` calibrated class probabilities; the prediction is
            their argmax (ties go to the first class, as ``numpy.argmax`` does).
        classes: class names in column order.
        confidence: nominal coverage of the bands.
        n_simulations: label draws used for the bands.
        seed: seed of the label draws.

    Raises:
        ValueError: the probabilities are empty, mis-shaped or do not sum to one.
    """
    probas = _validate_probas(probas, classes)
    n, k = probas.shape
    predicted = probas.argmax(axis=1)
    one_hot_pred = np.eye(k)[predicted]
    expected_confusion = probas.T @ one_hot_pred  # [true j, pred k]
    expected_accuracy = float(probas.max(axis=1).mean())
    expected_f1 = float(_macro_f1(expected_confusion))

    accuracy_band, f1_band = simulated_bands(
        probas, predicted, confidence, n_simulations, np.random.default_rng(seed)
    )

    return PerformanceEstimate(
        n_rows=n,
        classes=list(classes),
        expected_accuracy=expected_accuracy,
        expected_macro_f1=expected_f1,
        accuracy_band=accuracy_band,
        macro_f1_band=f1_band,
        confidence=confidence,
        expected_confusion=expected_confusion.tolist(),
    )


def realized_performance(
    y_true: Sequence[str] | np.ndarray,
    y_pred: Sequence[str] | np.ndarray,
    classes: Sequence[str],
) -> RealizedPerformance:
    """Accuracy, macro-F1 and confusion matrix of predictions against labels.

    Raises:
        ValueError: lengths differ, nothing is labelled, or a value is not in ``classes``.
    """
    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {len(y_true)} rows but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("cannot measure performance without labelled rows")
    index = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted((set(y_true) | set(y_pred)) - set(index))
    if unknown:
        raise ValueError(f"values not among the classes: {unknown[:5]}")
    k = len(classes)
    true_idx = np.array([index[v] for v in y_true])
    pred_idx = np.array([index[v] for v in y_pred])
    confusion = np.bincount(true_idx * k + pred_idx, minlength=k * k).reshape(k, k)
    return RealizedPerformance(
        n_rows=len(y_true),
        classes=[str(c) for c in classes],
        accuracy=float(np.trace(confusion) / len(y_true)),
        macro_f1=float(_macro_f1(confusion)),
        confusion=confusion.tolist(),
    )


def compare_performance(
    estimate: PerformanceEstimate,
    realized: RealizedPerformance,
    metric: Metric = "macro_f1",
) -> PerformanceComparison:
    """Compare a label-free estimate with the realized performance of the same window."""
    low, high = estimate.band(metric)
    estimated = estimate.value(metric)
    actual = realized.value(metric)
    return PerformanceComparison(
        metric=metric,
        estimated=estimated,
        realized=actual,
        error=estimated - actual,
        within_band=bool(low <= actual <= high),
    )
