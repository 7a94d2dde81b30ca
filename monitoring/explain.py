"""Drift you can see: which rows, clusters and columns drive a window's drift.

Per embedding column (in the PCA space of the drift reference):

* the MMD witness function ``f(x) = mean_w k(x, w) - mean_r k(x, r)`` (Gretton et al.
  2012; the same RBF kernel and median bandwidth as the MMD test) scores each window row;
  the highest-scoring rows sit where the window has mass the reference lacks, so they are
  the examples to show (scrubbed text snippets, image thumbnails);
* k-means clusters on the pooled components, ranked by how much more of the window than
  of the reference falls in them (Arize's drift-ranked clusters, without the UMAP).

For tabular columns, the largest effects (KS distance, or total-variation distance of the
category shares) with both distributions summarised.

The functions return row positions in the window and entity ids; rendering (scrubbing,
thumbnails, report and email layout) is left to the caller. :func:`render_image_grid`
draws a thumbnail grid PNG for image rows the caller has decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from monitoring.drift import DriftReference

_MISSING = "__missing__"
_OTHER = "__other__"


class ExplainConfig(BaseModel):
    """How much to explain."""

    model_config = ConfigDict(frozen=True)

    top_rows: int = Field(default=8, ge=1, description="Window rows reported per embedding.")
    clusters: int = Field(default=8, ge=2, description="k-means clusters per embedding.")
    examples_per_cluster: int = Field(default=3, ge=1, description="Rows shown per cluster.")
    top_columns: int = Field(default=5, ge=1, description="Tabular columns reported.")
    max_window: int = Field(
        default=2000, ge=10, description="Window rows scored at most (a seeded sample)."
    )
    max_reference: int = Field(
        default=1000, ge=10, description="Reference rows the witness and clusters use."
    )
    seed: int = Field(default=0)


class RowScore(BaseModel):
    """One window row and how much it drives the drift."""

    model_config = ConfigDict(frozen=True)

    row: int = Field(description="Position of the row in the window frame (0-based).")
    entity: str | None = Field(description="Entity id of the row, as text, if present.")
    score: float = Field(description="MMD witness value: > 0 where the window is denser.")


class ClusterShift(BaseModel):
    """A region of the embedding space and its share in the window and the reference."""

    model_config = ConfigDict(frozen=True)

    cluster: int
    window_share: float
    reference_share: float
    lift: float = Field(description="window_share / reference_share (inf if absent there).")
    n_window: int
    examples: list[RowScore] = Field(description="Window rows of the cluster, highest witness.")


class EmbeddingExplanation(BaseModel):
    """Why one embedding column drifted."""

    model_config = ConfigDict(frozen=True)

    column: str
    kind: Literal["text", "image"]
    n_window: int = Field(description="Window rows with the modality that were scored.")
    n_reference: int
    top_rows: list[RowScore] = Field(description="Highest witness scores first.")
    clusters: list[ClusterShift] = Field(
        description="Most over-represented in the window first (window - reference share)."
    )


class ColumnEffect(BaseModel):
    """One tabular column's shift, with both distributions summarised."""

    model_config = ConfigDict(frozen=True)

    column: str
    kind: Literal["numeric", "categorical"]
    effect: float = Field(description="KS distance (numeric) or total-variation distance.")
    benign: bool = Field(description="A monitor_only column (not a model input).")
    reference: dict[str, float] = Field(
        description="Quantiles p10/p50/p90 and mean, or the share per category."
    )
    window: dict[str, float]


class DriftExplanation(BaseModel):
    """Per-modality explanation of a window's drift."""

    model_config = ConfigDict(frozen=True)

    embeddings: dict[str, EmbeddingExplanation] = Field(default_factory=dict)
    tabular: list[ColumnEffect] = Field(default_factory=list)


def _rbf(a: np.ndarray, b: np.ndarray, bandwidth: float) -> np.ndarray:
    sq = np.maximum(
        (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * a @ b.T, 0.0
    )
    return np.exp(-sq / bandwidth)


def witness_scores(
    reference: np.ndarray, window: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, float]:
    """MMD witness value of each window row, and the bandwidth used.

    The kernel is the RBF of the MMD test with the median squared distance of the pooled
    sample as bandwidth. A row's own kernel value is left out of the window mean, so an
    isolated row is not scored as dense.
    """
    pooled = np.vstack([reference, window]).astype(np.float64)
    rng = np.random.default_rng(seed)
    probe = pooled[rng.choice(len(pooled), size=min(len(pooled), 400), replace=False)]
    sq = np.maximum(
        (probe * probe).sum(axis=1)[:, None]
        + (probe * probe).sum(axis=1)[None, :]
        - 2.0 * probe @ probe.T,
        0.0,
    )[np.triu_indices(len(probe), k=1)]
    bandwidth = float(np.median(sq[sq > 0])) if np.any(sq > 0) else 1.0
    window = window.astype(np.float64)
    k_ww = _rbf(window, window, bandwidth)
    n = len(window)
    window_mean = (k_ww.sum(axis=1) - 1.0) / max(n - 1, 1)
    reference_mean = _rbf(window, reference.astype(np.float64), bandwidth).mean(axis=1)
    return window_mean - reference_mean, bandwidth


def _kmeans(
    points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding: (centres, labels)."""
    k = min(k, len(points))
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d2 = np.min(((points[:, None, :] - np.array(centres)[None]) ** 2).sum(axis=2), axis=1)
        total = d2.sum()
        probs = d2 / total if total > 0 else np.full(len(points), 1.0 / len(points))
        centres.append(points[rng.choice(len(points), p=probs)])
    centre_arr = np.array(centres)
    labels = np.zeros(len(points), dtype=int)
    for _ in range(iterations):
        d2 = ((points[:, None, :] - centre_arr[None]) ** 2).sum(axis=2)
        new = d2.argmin(axis=1)
        if _ > 0 and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            if np.any(labels == j):
                centre_arr[j] = points[labels == j].mean(axis=0)
    return centre_arr, labels


def _entity(window: pd.DataFrame, column: str | None, row: int) -> str | None:
    if column is None or column not in window:
        return None
    value = window[column].iloc[row]
    return None if pd.isna(value) else str(value)


def explain_embedding(
    drift_reference: DriftReference,
    window: pd.DataFrame,
    name: str,
    config: ExplainConfig | None = None,
) -> EmbeddingExplanation | None:
    """Rows and clusters that drive the drift of one embedding column.

    Args:
        drift_reference: the fitted drift reference (PCA reducer and reduced sample).
        window: scored window rows with the embedding and presence columns.
        name: the text or image column (``review``), not its ``_emb`` column.
        config: how many rows and clusters.

    Returns:
        None when the column is not in the reference or the window has fewer than two
        rows with the modality.
    """
    config = config or ExplainConfig()
    if name not in drift_reference.embeddings:
        return None
    dataset = drift_reference.dataset
    reducer = drift_reference.embeddings[name]
    column, presence = dataset.embedding_column(name), dataset.presence_column(name)
    if column not in window or presence not in window:
        return None
    window = window.reset_index(drop=True)
    positions = np.flatnonzero(window[presence].fillna(0).to_numpy(dtype=float) > 0.5)
    rng = np.random.default_rng(config.seed)
    if len(positions) > config.max_window:
        positions = np.sort(rng.choice(positions, config.max_window, replace=False))
    if len(positions) < 2 or len(reducer.sample) < 2:
        return None
    embeddings = np.stack([np.asarray(v, dtype=np.float32) for v in window[column].iloc[positions]])
    reduced, _ = reducer.reduce(embeddings)
    reference = reducer.sample
    if len(reference) > config.max_reference:
        reference = reference[rng.choice(len(reference), config.max_reference, replace=False)]
    scores, _ = witness_scores(reference, reduced, seed=config.seed)
    entity_col = dataset.entity_key

    def row_score(i: int) -> RowScore:
        pos = int(positions[i])
        return RowScore(row=pos, entity=_entity(window, entity_col, pos), score=float(scores[i]))

    order = np.argsort(-scores)
    top = [row_score(int(i)) for i in order[: config.top_rows]]

    pooled = np.vstack([reference, reduced]).astype(np.float64)
    _, labels = _kmeans(pooled, config.clusters, rng)
    ref_labels, win_labels = labels[: len(reference)], labels[len(reference) :]
    clusters = []
    for j in np.unique(labels):
        members = np.flatnonzero(win_labels == j)
        window_share = len(members) / len(reduced)
        reference_share = float(np.mean(ref_labels == j))
        ranked = members[np.argsort(-scores[members])][: config.examples_per_cluster]
        clusters.append(
            ClusterShift(
                cluster=int(j),
                window_share=float(window_share),
                reference_share=reference_share,
                lift=float(window_share / reference_share) if reference_share else float("inf"),
                n_window=len(members),
                examples=[row_score(int(i)) for i in ranked],
            )
        )
    clusters.sort(key=lambda c: -(c.window_share - c.reference_share))
    return EmbeddingExplanation(
        column=column,
        kind=reducer.kind,
        n_window=len(reduced),
        n_reference=len(reference),
        top_rows=top,
        clusters=clusters,
    )


def _ks_distance(reference_sorted: np.ndarray, values: np.ndarray) -> float:
    values = np.sort(values)
    grid = np.concatenate([reference_sorted, values])
    ref_cdf = np.searchsorted(reference_sorted, grid, side="right") / len(reference_sorted)
    win_cdf = np.searchsorted(values, grid, side="right") / len(values)
    return float(np.abs(ref_cdf - win_cdf).max())


def _numeric_summary(values: np.ndarray) -> dict[str, float]:
    p10, p50, p90 = np.quantile(values, [0.1, 0.5, 0.9])
    return {"p10": float(p10), "p50": float(p50), "p90": float(p90), "mean": float(values.mean())}


def explain_tabular(
    drift_reference: DriftReference, window: pd.DataFrame, config: ExplainConfig | None = None
) -> list[ColumnEffect]:
    """Tabular columns with the largest shift, largest first, with both distributions."""
    config = config or ExplainConfig()
    dataset = drift_reference.dataset
    benign = set(dataset.monitor_only)
    effects: list[ColumnEffect] = []
    for name, reference in drift_reference.numeric.items():
        if name not in window or len(reference) == 0:
            continue
        values = pd.to_numeric(window[name], errors="coerce").to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        if len(values) == 0:
            continue
        effects.append(
            ColumnEffect(
                column=name,
                kind="numeric",
                effect=_ks_distance(reference, values),
                benign=name in benign,
                reference=_numeric_summary(reference),
                window=_numeric_summary(values),
            )
        )
    for name, counts in drift_reference.categorical.items():
        if name not in window:
            continue
        categories = dataset.categorical_column(name).categories
        as_str = window[name].astype(object).where(window[name].notna(), _MISSING).astype(str)
        as_str = as_str.where(as_str.isin(set(categories)) | (as_str == _MISSING), _OTHER)
        window_counts = as_str.value_counts()
        total_ref = sum(counts.values()) or 1
        ref_share = {c: counts.get(c, 0) / total_ref for c in counts}
        win_share = {c: float(window_counts.get(c, 0)) / max(len(as_str), 1) for c in counts}
        tvd = 0.5 * sum(abs(ref_share[c] - win_share[c]) for c in counts)
        effects.append(
            ColumnEffect(
                column=name,
                kind="categorical",
                effect=float(tvd),
                benign=name in benign,
                reference={c: float(v) for c, v in ref_share.items() if v or win_share[c]},
                window={c: float(v) for c, v in win_share.items() if v or ref_share[c]},
            )
        )
    effects.sort(key=lambda e: -e.effect)
    return effects[: config.top_columns]


def explain_drift(
    drift_reference: DriftReference,
    window: pd.DataFrame,
    config: ExplainConfig | None = None,
    columns: Sequence[str] | None = None,
) -> DriftExplanation:
    """Explain a window's drift per modality.

    Args:
        drift_reference: the champion's fitted drift reference.
        window: the window's scored rows.
        config: sizes of the explanation.
        columns: text or image columns to explain (e.g. the drifted modalities' columns);
            all embedding columns by default.
    """
    config = config or ExplainConfig()
    names = list(columns) if columns is not None else list(drift_reference.embeddings)
    embeddings = {}
    for name in names:
        explanation = explain_embedding(drift_reference, window, name, config)
        if explanation is not None:
            embeddings[name] = explanation
    return DriftExplanation(
        embeddings=embeddings, tabular=explain_tabular(drift_reference, window, config)
    )


def render_image_grid(
    images: Sequence[np.ndarray],
    path: str | Path,
    captions: Sequence[str] | None = None,
    columns: int = 8,
    cell_inches: float = 1.2,
) -> Path:
    """Write a thumbnail grid PNG of decoded images (``(h, w)`` or ``(h, w, 3)`` arrays).

    Raises:
        ValueError: no images, or captions of another length.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    if not images:
        raise ValueError("no images to render")
    if captions is not None and len(captions) != len(images):
        raise ValueError("captions and images differ in length")
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    figure = Figure(figsize=(columns * cell_inches, rows * cell_inches))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, image in enumerate(images):
        ax = axes.ravel()[i]
        array = np.asarray(image)
        ax.imshow(array, cmap="gray" if array.ndim == 2 else None)
        if captions is not None:
            ax.set_title(captions[i], fontsize=7)
    path = Path(path)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


__all__ = [
    "ClusterShift",
    "ColumnEffect",
    "DriftExplanation",
    "EmbeddingExplanation",
    "ExplainConfig",
    "RowScore",
    "explain_drift",
    "explain_embedding",
    "explain_tabular",
    "render_image_grid",
    "witness_scores",
]
