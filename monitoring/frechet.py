"""Frechet-distance embedding drift per predicted class (DriftLens, arXiv 2406.17813).

A baseline beside the MMD test of ``monitoring.drift``: per embedding column, the window's
rows are grouped by predicted class, each group's PCA components (the reducer the drift
reference already fitted) are summarised by a Gaussian, and the Frechet distance

    FD = |mu_w - mu_r|^2 + tr(C_w + C_r - 2 (C_r^1/2 C_w C_r^1/2)^1/2)

to the reference Gaussian of the same class is averaged over the classes. The reference
sample is split in two halves: one gives the Gaussians, the other the null distribution
(windows of the same size drawn from it with replacement), so a window the size of the
null draws gets a p-value ``(1 + #null >= observed) / (1 + draws)``. Resampling the
other half with replacement adds that half's own sampling noise to the null, which makes
the test slightly conservative rather than liberal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from monitoring.drift import DriftReference


class FrechetConfig(BaseModel):
    """Parameters of the Frechet-distance embedding detector."""

    model_config = ConfigDict(frozen=True)

    alpha: float = Field(
        default=0.05, gt=0.0, lt=1.0, description="False-alarm target over all columns."
    )
    per_class: bool = Field(
        default=True, description="Per predicted class (DriftLens) or one Gaussian per column."
    )
    null_windows: int = Field(default=200, ge=19, description="Null draws per window size.")
    min_class_rows: int = Field(
        default=3, ge=2, description="Classes with fewer window rows are left out."
    )
    seed: int = Field(default=0, description="Seeds the split and the null draws.")


class FrechetColumnResult(BaseModel):
    """Frechet distance of one embedding column."""

    model_config = ConfigDict(frozen=True)

    column: str
    distance: float = Field(description="Mean Frechet distance over the predicted classes.")
    threshold: float = Field(description="(1 - alpha / m) quantile of the null distances.")
    p_value: float
    n_window: int


class FrechetResult(BaseModel):
    """Frechet drift of one window."""

    model_config = ConfigDict(frozen=True)

    columns: dict[str, FrechetColumnResult]
    alpha: float

    @property
    def drifted(self) -> bool:
        m = max(1, len(self.columns))
        return any(c.p_value <= self.alpha / m for c in self.columns.values())


@dataclass
class _Gaussian:
    mean: np.ndarray
    cov: np.ndarray
    cov_sqrt: np.ndarray


@dataclass
class _ColumnReference:
    column: str
    presence: str
    reduce: object  # EmbeddingReference.reduce
    dim: int
    gaussians: dict[int, _Gaussian]
    null_components: np.ndarray  # (n, k) other half
    null_classes: np.ndarray  # (n,)


@dataclass
class FrechetReference:
    """Reference Gaussians per column and class, and the other half for the null."""

    classes: list[str]
    columns: dict[str, _ColumnReference]
    config: FrechetConfig
    null_cache: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)


def _gaussian(values: np.ndarray) -> _Gaussian:
    mean = values.mean(axis=0)
    cov = np.cov(values, rowvar=False) if len(values) > 1 else np.zeros((values.shape[1],) * 2)
    cov = np.atleast_2d(cov)
    eigenvalues, vectors = np.linalg.eigh(cov)
    cov_sqrt = (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T
    return _Gaussian(mean=mean, cov=cov, cov_sqrt=cov_sqrt)


def frechet_distance(reference: _Gaussian, values: np.ndarray) -> float:
    """Frechet distance between a reference Gaussian and the Gaussian fitted to ``values``."""
    mean = values.mean(axis=0)
    cov = np.atleast_2d(np.cov(values, rowvar=False))
    inner = reference.cov_sqrt @ cov @ reference.cov_sqrt
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = mean - reference.mean
    return float(diff @ diff + np.trace(reference.cov) + np.trace(cov) - 2.0 * trace_sqrt)


def _statistic(
    column: _ColumnReference, components: np.ndarray, classes: np.ndarray, min_rows: int
) -> float:
    distances = []
    for cls, gaussian in column.gaussians.items():
        rows = components[classes == cls] if cls >= 0 else components
        if len(rows) >= min_rows:
            distances.append(frechet_distance(gaussian, rows))
    return float(np.mean(distances)) if distances else 0.0


def _predicted(frame: pd.DataFrame, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(str(v), -2) for v in frame["prediction"].to_numpy()])


def fit_frechet_reference(
    reference_frame: pd.DataFrame,
    drift_reference: DriftReference,
    config: FrechetConfig | None = None,
) -> FrechetReference:
    """Fit per-class reference Gaussians on half of the reference sample.

    Args:
        reference_frame: scored reference rows (embeddings, presence, ``prediction``).
        drift_reference: supplies the PCA reducer of each embedding column.
        config: detector parameters.

    Raises:
        ValueError: the reference frame has no ``prediction`` column.
    """
    config = config or FrechetConfig()
    if "prediction" not in reference_frame:
        raise ValueError("the reference frame needs the prediction column")
    dataset = drift_reference.dataset
    rng = np.random.default_rng(config.seed)
    columns: dict[str, _ColumnReference] = {}
    for name, reducer in drift_reference.embeddings.items():
        column, presence = dataset.embedding_column(name), dataset.presence_column(name)
        if column not in reference_frame or presence not in reference_frame:
            continue
        present = reference_frame[presence].fillna(0).to_numpy(dtype=float) > 0.5
        frame = reference_frame[present]
        if len(frame) < 20:
            continue
        embeddings = np.stack([np.asarray(v, dtype=np.float32) for v in frame[column]])
        components, _ = reducer.reduce(embeddings)
        components = components.astype(np.float64)
        predicted = _predicted(frame, dataset.classes)
        half = rng.permutation(len(frame))
        fit, null = half[: len(half) // 2], half[len(half) // 2 :]
        if config.per_class:
            gaussians = {
                i: _gaussian(components[fit][predicted[fit] == i])
                for i in range(len(dataset.classes))
                if (predicted[fit] == i).sum() >= config.min_class_rows
            }
        else:
            gaussians = {-1: _gaussian(components[fit])}
        columns[column] = _ColumnReference(
            column=column,
            presence=presence,
            reduce=reducer.reduce,
            dim=reducer.mean.shape[0],
            gaussians=gaussians,
            null_components=components[null],
            null_classes=predicted[null],
        )
    return FrechetReference(classes=list(dataset.classes), columns=columns, config=config)


def _null(reference: FrechetReference, column: _ColumnReference, n: int) -> np.ndarray:
    key = (column.column, n)
    if key not in reference.null_cache:
        config = reference.config
        rng = np.random.default_rng([config.seed, n])
        draws = rng.integers(0, len(column.null_components), size=(config.null_windows, n))
        reference.null_cache[key] = np.array(
            [
                _statistic(
                    column,
                    column.null_components[rows],
                    column.null_classes[rows],
                    config.min_class_rows,
                )
                for rows in draws
            ]
        )
    return reference.null_cache[key]


def frechet_drift(reference: FrechetReference, window: pd.DataFrame) -> FrechetResult:
    """Frechet distance of each embedding column of ``window`` with its null p-value.

    Columns with fewer than ``2 * min_class_rows`` present rows are left out.
    """
    config = reference.config
    results: dict[str, FrechetColumnResult] = {}
    m = max(1, len(reference.columns))
    for name, column in reference.columns.items():
        if name not in window or column.presence not in window:
            continue
        present = window[column.presence].fillna(0).to_numpy(dtype=float) > 0.5
        rows = window[present]
        if len(rows) < 2 * config.min_class_rows:
            continue
        embeddings = np.stack([np.asarray(v, dtype=np.float32) for v in rows[name]])
        components, _ = column.reduce(embeddings)  # type: ignore[operator]
        observed = _statistic(
            column,
            components.astype(np.float64),
            _predicted(rows, reference.classes),
            config.min_class_rows,
        )
        null = _null(reference, column, len(rows))
        results[name] = FrechetColumnResult(
            column=name,
            distance=observed,
            threshold=float(np.quantile(null, 1.0 - config.alpha / m)),
            p_value=float((1 + np.sum(null >= observed)) / (1 + len(null))),
            n_window=len(rows),
        )
    return FrechetResult(columns=results, alpha=config.alpha)


__all__ = [
    "FrechetColumnResult",
    "FrechetConfig",
    "FrechetReference",
    "FrechetResult",
    "fit_frechet_reference",
    "frechet_distance",
    "frechet_drift",
]
