"""Calibrated per-modality drift detection.

A window of scored feature rows is compared with a reference (rows the champion model was
validated on) one modality at a time. Every modality yields one p-value, so the decision
has a known false-alarm rate instead of Evidently's fixed distance thresholds (see
``/work/shared/ANCHORS.md``):

* ``tabular`` (model inputs) and ``benign`` (``monitor_only`` columns): two-sample KS per
  numeric column, chi-square per categorical column, Bonferroni across columns.
* ``text`` and ``image``: per embedding column, an MMD permutation test on PCA-reduced
  embeddings of the rows that have the modality, KS on their distance to the PCA
  subspace (a new domain moves embeddings into directions the reference never used, which
  the components barely see), and Fisher's exact test on the presence rate; Bonferroni
  across those tests.
* ``output``: BBSD (Rabanser et al. 2019, "Failing Loudly"): KS per class probability
  (the last ``k - 1`` for two classes, which carry everything), Bonferroni.
* ``label``: chi-square on the label distribution, when the window has labels.

A modality's p-value is the Bonferroni-adjusted smallest p-value of its tests; the window
is compared at ``alpha / m`` for each of the ``m`` modalities tested, so the probability
of any alarm on an undrifted window is at most ``alpha``.

Why this calibration holds at every window size: permutation p-values are exact by
construction (the RBF bandwidth is the median distance of the *pooled* sample, which is
invariant to the permutation); KS with the asymptotic Kolmogorov distribution, Fisher's
exact test and Bonferroni are conservative; chi-square is only asymptotic, so sparse
categories are pooled until every cell expects at least five window rows (Cochran's rule).

Why MMD on PCA components for embeddings: an RBF-kernel MMD sees any difference of
distributions, including mixture shifts (30 % of rows from another domain) that move
only a few directions, and it costs one ``(n, n) @ (n, P)`` product for ``P``
permutations (about 0.1 s for ``n = 2000``, ``P = 1000``). PCA is fitted on half of the
reference and the other half is kept as the reference sample, as in "Failing Loudly",
so the reducer is not tuned to the rows it is compared against. Per-component KS with
Bonferroni (``embedding_test="ks"``) is kept as an option: it is about three times
cheaper but weaker. Measured with the real encoders (``benchmarks/drift_speed.py
--real 20``; 30 % tweets among reviews, 30 % blurred and noised photos; 50-row windows)
MMD flagged text 1.00 / image 0.90 of windows, per-component KS 0.75 / 0.75; both
flag everything from 100 rows, and MMD raised no alarm on 60 undrifted windows.
On the synthetic frames of the unit tests, a 2,000-row window against a 10,000-row
reference takes about 1.0 s with MMD and 0.4 s with KS on a busy 2-core machine.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, computed_field
from scipy import stats

from features.schema import DatasetConfig
from monitoring.estimate import RealizedPerformance, realized_performance

Modality = Literal["tabular", "benign", "text", "image", "vector", "output", "label"]
MODALITIES: tuple[Modality, ...] = (
    "tabular",
    "benign",
    "text",
    "image",
    "vector",
    "output",
    "label",
)

_MISSING = "__missing__"
_OTHER = "__other__"
_FORMAT_VERSION = 1


class DriftConfig(BaseModel):
    """Parameters of drift detection; the defaults fit the demo's 384-d / 128-d embeddings."""

    model_config = ConfigDict(frozen=True)

    alpha: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="Target false-alarm rate of the combined decision on an undrifted "
        "window; split over the modalities tested (Bonferroni).",
    )
    text_components: int = Field(
        default=32, ge=1, description="PCA components kept for text embeddings."
    )
    image_components: int = Field(
        default=32, ge=1, description="PCA components kept for image embeddings."
    )
    fit_fraction: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="Share of the reference rows used to fit the reducers; the rest is "
        "the embedding reference sample.",
    )
    embedding_test: Literal["mmd", "ks"] = Field(
        default="mmd",
        description="MMD permutation test on the components, or KS per component with Bonferroni.",
    )
    permutations: int = Field(
        default=1000,
        ge=19,
        description="Permutations of the MMD test; the smallest p-value is 1/(n+1), so "
        "keep it well above the number of tests divided by alpha.",
    )
    mmd_max_window: int = Field(
        default=1000, ge=10, description="Window rows the MMD test subsamples to."
    )
    mmd_min_reference: int = Field(
        default=500, ge=10, description="Fewest reference rows the MMD test draws."
    )
    mmd_max_reference: int = Field(
        default=1000,
        ge=10,
        description="Most reference rows the MMD test draws (it draws twice the window "
        "rows between the two bounds).",
    )
    min_rows: int = Field(
        default=10,
        ge=2,
        description="A test needs at least this many window rows with a value; fewer "
        "and it is skipped.",
    )
    min_expected: float = Field(
        default=5.0,
        gt=0.0,
        description="Categories expected fewer window rows than this are pooled before "
        "a chi-square test.",
    )
    top_k: int = Field(default=5, ge=1, description="Columns or components reported per modality.")
    min_label_rows: int = Field(
        default=30,
        ge=2,
        description="Labelled rows a window needs before its label distribution is tested.",
    )


class ColumnDrift(BaseModel):
    """One test inside a modality: a column, an embedding component or a presence rate."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(
        description="Column, or 'column:embedding' / ':pcN' / ':residual' / ':presence'."
    )
    test: str = Field(description="ks, chi2, mmd or fisher.")
    score: float = Field(
        description="Effect size: KS D, total-variation distance, MMD^2, or presence-rate "
        "difference."
    )
    p_value: float | None = Field(
        description="Unadjusted p-value; None for a component only reported (MMD tests "
        "the components jointly)."
    )


class ModalityDrift(BaseModel):
    """Drift verdict of one modality."""

    model_config = ConfigDict(frozen=True)

    modality: Modality
    score: float = Field(description="Effect size of the modality's most significant test.")
    p_value: float = Field(
        description="Smallest p-value of the modality's tests, Bonferroni-adjusted within it."
    )
    threshold: float = Field(description="Level the p-value is compared with (alpha / m).")
    drifted: bool
    n_tests: int
    n_window: int = Field(description="Window rows the modality's tests used (largest).")
    n_reference: int = Field(description="Reference rows the modality's tests used (largest).")
    top: list[ColumnDrift] = Field(description="Most drifted columns or components first.")


class DriftResult(BaseModel):
    """Drift of one window against the reference, per modality."""

    model_config = ConfigDict(frozen=True)

    window_start: datetime | None = None
    window_end: datetime | None = None
    n_rows: int
    alpha: float
    modalities: dict[str, ModalityDrift]
    n_labeled: int = Field(default=0, description="Window rows with a label.")
    realized: RealizedPerformance | None = Field(
        default=None, description="Performance on the window's labelled rows, if any."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def drifted_modalities(self) -> list[str]:
        return sorted(name for name, m in self.modalities.items() if m.drifted)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def any_drift(self) -> bool:
        return any(m.drifted for m in self.modalities.values())

    @computed_field  # type: ignore[prop-decorator]
    @property
    def min_adjusted_p_value(self) -> float:
        """Smallest p-value adjusted for every test of the window (compare with alpha)."""
        m = len(self.modalities)
        if m == 0:
            return 1.0
        return min(min(1.0, d.p_value * m) for d in self.modalities.values())


@dataclass
class EmbeddingReference:
    """PCA reducer of one embedding column and the reduced reference sample."""

    kind: Literal["text", "image", "vector"]
    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d)
    sample: np.ndarray  # (n_held_present, k) float32
    residuals: np.ndarray  # (n_held_present,) distance to the PCA subspace, sorted
    n_rows: int  # held rows, present or not
    n_present: int

    def reduce(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """PCA components and distance to the PCA subspace of each embedding.

        Computed in float64 and rounded to 6 decimals, so the same embedding gets the same
        values in any process. A float32 product depends on the BLAS threads and blocking:
        a review repeated in the reference and the window tied with itself in one process
        and not in a Dask worker, and the KS statistic of its component jumped (0.2149 vs
        0.2055 on the same window, ``tests/integration/test_dask_cluster.py``).
        """
        components = self.components.astype(np.float64)
        centred = embeddings.astype(np.float64) - self.mean.astype(np.float64)
        reduced = centred @ components.T
        residual = np.linalg.norm(centred - reduced @ components, axis=1)
        return np.round(reduced, 6).astype(np.float32), np.round(residual, 6).astype(np.float32)


@dataclass
class DriftReference:
    """Everything ``compute_drift`` needs from the reference; stored with the model."""

    dataset: DatasetConfig
    n_rows: int
    numeric: dict[str, np.ndarray] = field(default_factory=dict)  # sorted, no NaN
    categorical: dict[str, dict[str, int]] = field(default_factory=dict)
    embeddings: dict[str, EmbeddingReference] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    label_counts: dict[str, int] | None = None
    seed: int = 0

    def save(self, path: str | Path) -> Path:
        """Write the reference as one ``.npz`` file (arrays plus JSON metadata)."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        meta: dict = {
            "format_version": _FORMAT_VERSION,
            "dataset": self.dataset.model_dump(mode="json"),
            "n_rows": self.n_rows,
            "categorical": self.categorical,
            "label_counts": self.label_counts,
            "seed": self.seed,
            "numeric": list(self.numeric),
            "outputs": list(self.outputs),
            "embeddings": {},
        }
        for name, values in self.numeric.items():
            arrays[f"numeric/{name}"] = values
        for name, values in self.outputs.items():
            arrays[f"outputs/{name}"] = values
        for name, emb in self.embeddings.items():
            meta["embeddings"][name] = {
                "kind": emb.kind,
                "n_rows": emb.n_rows,
                "n_present": emb.n_present,
            }
            arrays[f"embeddings/{name}/mean"] = emb.mean
            arrays[f"embeddings/{name}/components"] = emb.components
            arrays[f"embeddings/{name}/sample"] = emb.sample
            arrays[f"embeddings/{name}/residuals"] = emb.residuals
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        path.write_bytes(buffer.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> DriftReference:
        """Read a reference written by :meth:`save`.

        Raises:
            ValueError: the file was written by an incompatible version.
        """
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(bytes(data["__meta__"]).decode("utf-8"))
            if meta.get("format_version") != _FORMAT_VERSION:
                raise ValueError(
                    f"unsupported drift reference version {meta.get('format_version')}"
                )
            embeddings = {
                name: EmbeddingReference(
                    kind=info["kind"],
                    mean=data[f"embeddings/{name}/mean"],
                    components=data[f"embeddings/{name}/components"],
                    sample=data[f"embeddings/{name}/sample"],
                    residuals=data[f"embeddings/{name}/residuals"],
                    n_rows=info["n_rows"],
                    n_present=info["n_present"],
                )
                for name, info in meta["embeddings"].items()
            }
            return cls(
                dataset=DatasetConfig.model_validate(meta["dataset"]),
                n_rows=meta["n_rows"],
                numeric={n: data[f"numeric/{n}"] for n in meta["numeric"]},
                categorical=meta["categorical"],
                embeddings=embeddings,
                outputs={n: data[f"outputs/{n}"] for n in meta["outputs"]},
                label_counts=meta["label_counts"],
                seed=meta["seed"],
            )


# Reference fitting ------------------------------------------------------------------


def proba_column(cls: str) -> str:
    """Name of the model-output column holding the probability of class ``cls``."""
    return f"proba_{cls}"


def _output_columns(dataset: DatasetConfig) -> list[str]:
    # With two classes the probabilities sum to one: testing both only costs power.
    classes = dataset.classes[1:] if len(dataset.classes) == 2 else dataset.classes
    return [proba_column(c) for c in classes]


def _stack_embeddings(values: pd.Series) -> np.ndarray:
    if len(values) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in values.to_numpy()])


def _category_values(values: pd.Series, categories: Sequence[str]) -> pd.Series:
    known = set(categories)
    as_str = values.astype(object).where(values.notna(), _MISSING).astype(str)
    return as_str.where(as_str.isin(known) | (as_str == _MISSING), _OTHER)


def _category_counts(values: pd.Series, categories: Sequence[str]) -> dict[str, int]:
    counts = _category_values(values, categories).value_counts()
    return {c: int(counts.get(c, 0)) for c in [*categories, _OTHER, _MISSING]}


def _fit_pca(embeddings: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    embeddings = embeddings.astype(np.float64)
    mean = embeddings.mean(axis=0)
    k = max(1, min(n_components, embeddings.shape[0] - 1, embeddings.shape[1]))
    centred = embeddings - mean
    # Eigenvectors of the d x d covariance: much faster than an SVD of the n x d data.
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    top = np.argsort(eigenvalues)[::-1][:k]
    return mean.astype(np.float32), eigenvectors[:, top].T.astype(np.float32)


def fit_drift_reference(
    reference_frame: pd.DataFrame,
    config: DatasetConfig,
    drift_config: DriftConfig | None = None,
    seed: int = 0,
) -> DriftReference:
    """Fit the drift reference from a scored feature frame.

    Tabular, output and label tests use every reference row (nothing is fitted for
    them). For each embedding column the rows are shuffled with ``seed``; PCA is fitted
    on ``fit_fraction`` of them and the others, reduced, are the reference sample.

    Pass rows the model did not train on (its validation split): outputs on training
    rows are over-confident and would make every later window look drifted.

    Raises:
        ValueError: the frame is empty or lacks an embedding's presence column.
    """
    drift_config = drift_config or DriftConfig()
    if len(reference_frame) == 0:
        raise ValueError("the reference frame is empty")
    frame = reference_frame.reset_index(drop=True)
    reference = DriftReference(dataset=config, n_rows=len(frame), seed=seed)

    for name in config.numeric_columns:
        if name in frame:
            values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
            reference.numeric[name] = np.sort(values[~np.isnan(values)])
    for column in config.categorical:
        if column.name in frame:
            reference.categorical[column.name] = _category_counts(
                frame[column.name], column.categories
            )

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frame))
    n_fit = int(round(len(frame) * drift_config.fit_fraction))
    if len(frame) >= 4:
        n_fit = min(max(n_fit, 2), len(frame) - 2)
    fit_rows, held_rows = order[:n_fit], order[n_fit:]
    for kind, columns, n_components in (
        ("text", config.text_columns, drift_config.text_components),
        ("image", config.image_columns, drift_config.image_components),
        ("vector", config.vector_columns, drift_config.image_components),
    ):
        for name in columns:
            emb_col, present_col = config.embedding_column(name), config.presence_column(name)
            if emb_col not in frame:
                continue
            if present_col not in frame:
                raise ValueError(f"{emb_col} has no presence column {present_col}")
            present = frame[present_col].fillna(0).to_numpy(dtype=float) > 0.5
            fit_present = fit_rows[present[fit_rows]]
            held_present = held_rows[present[held_rows]]
            if len(fit_present) < 2 or len(held_present) < 2:
                continue
            mean, components = _fit_pca(
                _stack_embeddings(frame[emb_col].iloc[fit_present]), n_components
            )
            emb = EmbeddingReference(
                kind=kind,
                mean=mean,
                components=components,
                sample=np.zeros((0, components.shape[0]), dtype=np.float32),
                residuals=np.zeros(0, dtype=np.float32),
                n_rows=len(held_rows),
                n_present=len(held_present),
            )
            sample, residuals = emb.reduce(_stack_embeddings(frame[emb_col].iloc[held_present]))
            emb.sample, emb.residuals = sample, np.sort(residuals)
            reference.embeddings[name] = emb

    for name in _output_columns(config):
        if name in frame:
            values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
            reference.outputs[name] = np.sort(values[~np.isnan(values)])

    if config.label in frame and frame[config.label].notna().any():
        labels = frame[config.label].dropna().astype(str)
        counts = labels.value_counts()
        reference.label_counts = {c: int(counts.get(c, 0)) for c in config.classes}
    return reference


# Tests --------------------------------------------------------------------------------


def _ks(reference: np.ndarray, values: np.ndarray, name: str) -> ColumnDrift:
    result = stats.ks_2samp(reference, values, method="asymp")
    return ColumnDrift(
        name=name, test="ks", score=float(result.statistic), p_value=float(result.pvalue)
    )


def _ks_statistics(reference: np.ndarray, window: np.ndarray) -> list[float]:
    """KS distance of every column (no p-values: the components are reported only)."""
    distances = []
    for j in range(reference.shape[1]):
        ref_col, win_col = np.sort(reference[:, j]), np.sort(window[:, j])
        grid = np.concatenate([ref_col, win_col])
        ref_cdf = np.searchsorted(ref_col, grid, side="right") / len(ref_col)
        win_cdf = np.searchsorted(win_col, grid, side="right") / len(win_col)
        distances.append(float(np.abs(ref_cdf - win_cdf).max()))
    return distances


def _chi2(
    reference_counts: np.ndarray, window_counts: np.ndarray, name: str, min_expected: float
) -> ColumnDrift:
    """Chi-square homogeneity test after pooling categories too rare for the window."""
    reference_counts = np.asarray(reference_counts, dtype=float)
    window_counts = np.asarray(window_counts, dtype=float)
    n_ref, n_win = reference_counts.sum(), window_counts.sum()
    tvd = 0.5 * float(np.abs(reference_counts / n_ref - window_counts / n_win).sum())
    pooled = (reference_counts + window_counts) / (n_ref + n_win)
    expected = pooled * n_win
    rare = [i for i in range(len(expected)) if expected[i] < min_expected]
    keep = sorted(set(range(len(expected))) - set(rare), key=lambda i: expected[i])
    # A pooled bucket still too small absorbs the next smallest categories.
    while rare and expected[rare].sum() < min_expected and keep:
        rare.append(keep.pop(0))
    cells_ref = [reference_counts[i] for i in keep]
    cells_win = [window_counts[i] for i in keep]
    if rare:
        cells_ref.append(reference_counts[rare].sum())
        cells_win.append(window_counts[rare].sum())
    table = np.array([cells_ref, cells_win])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return ColumnDrift(name=name, test="chi2", score=tvd, p_value=1.0)
    result = stats.chi2_contingency(table, correction=False)
    return ColumnDrift(name=name, test="chi2", score=tvd, p_value=float(result.pvalue))


def _mmd_permutation(
    reference: np.ndarray, window: np.ndarray, permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Biased MMD^2 with an RBF kernel and its permutation p-value.

    All permutations are evaluated at once: with ``a`` the 0/1 indicator of the window
    rows, the three kernel sums are ``a'Ka``, ``a'K1 - a'Ka`` and ``1'K1 - 2a'K1 + a'Ka``,
    so one ``K @ A`` product gives the statistic for every permutation.
    """
    pooled = np.vstack([reference, window]).astype(np.float32)
    n, m = len(pooled), len(window)
    sq = (pooled * pooled).sum(axis=1)
    distances = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (pooled @ pooled.T), 0.0)
    # Median heuristic on the pooled sample: invariant to permutations, so exactness holds.
    probe = rng.choice(n, size=min(n, 400), replace=False)
    sub = distances[np.ix_(probe, probe)][np.triu_indices(len(probe), k=1)]
    bandwidth = float(np.median(sub[sub > 0])) if np.any(sub > 0) else 1.0
    kernel = np.exp(-distances / bandwidth, dtype=np.float32)
    row_sums = kernel.sum(axis=1)
    total = float(row_sums.sum())

    base = np.zeros((n, permutations + 1), dtype=np.float32)
    base[:m] = 1.0
    assign = rng.permuted(base, axis=0)
    assign[:, 0] = 0.0
    assign[n - m :, 0] = 1.0  # column 0: the observed split (window rows last)
    a_k_a = (assign * (kernel @ assign)).sum(axis=0, dtype=np.float64)
    a_k_1 = (assign.T @ row_sums).astype(np.float64)
    n_ref = n - m
    within_window = a_k_a / (m * m)
    within_ref = (total - 2.0 * a_k_1 + a_k_a) / (n_ref * n_ref)
    across = (a_k_1 - a_k_a) / (m * n_ref)
    mmd2 = within_window + within_ref - 2.0 * across
    observed = mmd2[0]
    # Ties are counted as exceeding: keeps the p-value valid with float round-off.
    exceed = int(np.sum(mmd2[1:] >= observed - 1e-12 * abs(observed)))
    return float(observed), (1.0 + exceed) / (1.0 + permutations)


def _embedding_tests(
    name: str,
    ref: EmbeddingReference,
    window: pd.DataFrame,
    dataset: DatasetConfig,
    drift_config: DriftConfig,
    rng: np.random.Generator,
) -> tuple[list[ColumnDrift], list[ColumnDrift], int, int]:
    """Tests of one embedding column: (tests, informational component scores, n_win, n_ref)."""
    present_col, emb_col = dataset.presence_column(name), dataset.embedding_column(name)
    tests: list[ColumnDrift] = []
    info: list[ColumnDrift] = []
    present = window[present_col].fillna(0).to_numpy(dtype=float) > 0.5
    n_present = int(present.sum())
    ref_absent = ref.n_rows - ref.n_present
    fisher = stats.fisher_exact([[ref.n_present, ref_absent], [n_present, len(window) - n_present]])
    rate_change = n_present / len(window) - ref.n_present / ref.n_rows
    tests.append(
        ColumnDrift(
            name=f"{name}:presence",
            test="fisher",
            score=float(rate_change),
            p_value=float(fisher.pvalue),
        )
    )
    if n_present < drift_config.min_rows:
        return tests, info, len(window), ref.n_rows
    reduced, residuals = ref.reduce(_stack_embeddings(window[emb_col][present]))
    # Shifts into directions the reference never used (a new domain) barely move the
    # components but lengthen the distance to their subspace.
    tests.append(_ks(ref.residuals, residuals, f"{name}:residual"))
    if drift_config.embedding_test == "ks":
        tests.extend(
            _ks(ref.sample[:, j], reduced[:, j], f"{name}:pc{j}") for j in range(reduced.shape[1])
        )
        return tests, info, n_present, len(ref.sample)
    info.extend(
        ColumnDrift(name=f"{name}:pc{j}", test="ks", score=d, p_value=None)
        for j, d in enumerate(_ks_statistics(ref.sample, reduced))
    )
    window_sample = reduced
    if len(window_sample) > drift_config.mmd_max_window:
        window_sample = window_sample[
            rng.choice(len(window_sample), drift_config.mmd_max_window, replace=False)
        ]
    n_ref = min(
        len(ref.sample),
        drift_config.mmd_max_reference,
        max(drift_config.mmd_min_reference, 2 * len(window_sample)),
    )
    ref_sample = ref.sample[rng.choice(len(ref.sample), n_ref, replace=False)]
    statistic, p_value = _mmd_permutation(ref_sample, window_sample, drift_config.permutations, rng)
    tests.append(
        ColumnDrift(name=f"{name}:embedding", test="mmd", score=statistic, p_value=p_value)
    )
    return tests, info, n_present, len(ref.sample)


def _combine(
    modality: Modality,
    tests: list[ColumnDrift],
    info: list[ColumnDrift],
    n_window: int,
    n_reference: int,
    top_k: int,
) -> tuple[ModalityDrift, int]:
    ranked = sorted(tests, key=lambda t: (t.p_value, -abs(t.score)))
    best = ranked[0]
    extra = sorted(info, key=lambda t: -abs(t.score))
    drift = ModalityDrift(
        modality=modality,
        score=best.score,
        p_value=min(1.0, best.p_value * len(tests)),
        threshold=0.0,
        drifted=False,
        n_tests=len(tests),
        n_window=n_window,
        n_reference=n_reference,
        top=(ranked + extra)[:top_k],
    )
    return drift, len(tests)


def _window_bounds(window: pd.DataFrame, column: str) -> tuple[datetime | None, datetime | None]:
    if column not in window or window[column].isna().all():
        return None, None
    times = pd.to_datetime(window[column], utc=True)
    return times.min().to_pydatetime(), times.max().to_pydatetime()


def compute_drift(
    reference: DriftReference,
    window: pd.DataFrame,
    drift_config: DriftConfig | None = None,
    seed: int = 0,
    labels: pd.Series | None = None,
) -> DriftResult:
    """Test one window of scored feature rows against the reference, per modality.

    Columns missing from the window are skipped; a modality with no testable column is
    left out (and does not count in the Bonferroni split). With labels (``config.label``)
    the window also gets a label-drift test and, with a ``prediction`` column, its
    realized performance.

    ``labels`` are the labels that have arrived (usually those of an earlier window,
    since labels come late): when given, the label-drift test uses them instead of the
    window's own label column, provided there are ``min_label_rows`` of them.

    Args:
        reference: from :func:`fit_drift_reference`.
        window: the rows to test.
        drift_config: test parameters; ``alpha`` is the combined false-alarm target.
        seed: seeds the MMD subsampling and permutations (results are reproducible).

    Raises:
        ValueError: the window is empty.
    """
    drift_config = drift_config or DriftConfig()
    if len(window) == 0:
        raise ValueError("the window is empty")
    dataset = reference.dataset
    window = window.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    min_rows = drift_config.min_rows
    found: dict[Modality, tuple[list[ColumnDrift], list[ColumnDrift], int, int]] = {}

    def add(modality: Modality, tests, info, n_win: int, n_ref: int) -> None:
        if not tests:
            return
        prev = found.get(modality, ([], [], 0, 0))
        found[modality] = (
            prev[0] + tests,
            prev[1] + info,
            max(prev[2], n_win),
            max(prev[3], n_ref),
        )

    benign = set(dataset.monitor_only)
    for name, ref_values in reference.numeric.items():
        if name not in window or len(ref_values) < min_rows:
            continue
        values = pd.to_numeric(window[name], errors="coerce").to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        if len(values) >= min_rows:
            group: Modality = "benign" if name in benign else "tabular"
            add(group, [_ks(ref_values, values, name)], [], len(values), len(ref_values))
    for name, ref_counts in reference.categorical.items():
        if name not in window or len(window) < min_rows:
            continue
        categories = dataset.categorical_column(name).categories
        counts = _category_counts(window[name], categories)
        group = "benign" if name in benign else "tabular"
        test = _chi2(
            np.array(list(ref_counts.values())),
            np.array([counts[c] for c in ref_counts]),
            name,
            drift_config.min_expected,
        )
        add(group, [test], [], len(window), sum(ref_counts.values()))
    for name, emb in reference.embeddings.items():
        needed = (dataset.embedding_column(name), dataset.presence_column(name))
        if all(c in window for c in needed):
            add(emb.kind, *_embedding_tests(name, emb, window, dataset, drift_config, rng))
    for name, ref_values in reference.outputs.items():
        if name not in window:
            continue
        values = pd.to_numeric(window[name], errors="coerce").to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        if len(values) >= min_rows:
            add("output", [_ks(ref_values, values, name)], [], len(values), len(ref_values))

    def label_test(values: pd.Series) -> None:
        values = values.dropna().astype(str)
        if not reference.label_counts or len(values) < max(min_rows, drift_config.min_label_rows):
            return
        counts = _category_counts(values, dataset.classes)
        test = _chi2(
            np.array([reference.label_counts.get(c, 0) for c in counts]),
            np.array(list(counts.values())),
            dataset.label,
            drift_config.min_expected,
        )
        add("label", [test], [], len(values), sum(reference.label_counts.values()))

    n_labeled = 0
    realized = None
    if labels is not None:
        label_test(labels)
    if dataset.label in window:
        labeled = window[window[dataset.label].notna()]
        n_labeled = len(labeled)
        labels_here = labeled[dataset.label].astype(str)
        if labels is None:
            label_test(labels_here)
        labels = labels_here
        if n_labeled and "prediction" in labeled:
            usable = labeled[labels.isin(dataset.classes) & labeled["prediction"].notna()]
            if len(usable):
                realized = realized_performance(
                    usable[dataset.label].astype(str),
                    usable["prediction"].astype(str),
                    dataset.classes,
                )

    m = len(found)
    threshold = drift_config.alpha / m if m else drift_config.alpha
    modalities: dict[str, ModalityDrift] = {}
    for modality in MODALITIES:
        if modality not in found:
            continue
        tests, info, n_win, n_ref = found[modality]
        drift, _ = _combine(modality, tests, info, n_win, n_ref, drift_config.top_k)
        modalities[modality] = drift.model_copy(
            update={"threshold": threshold, "drifted": drift.p_value <= threshold}
        )
    start, end = _window_bounds(window, dataset.timestamp)
    return DriftResult(
        window_start=start,
        window_end=end,
        n_rows=len(window),
        alpha=drift_config.alpha,
        modalities=modalities,
        n_labeled=n_labeled,
        realized=realized,
    )


__all__ = [
    "MODALITIES",
    "ColumnDrift",
    "DriftConfig",
    "DriftReference",
    "DriftResult",
    "EmbeddingReference",
    "Modality",
    "ModalityDrift",
    "compute_drift",
    "fit_drift_reference",
    "proba_column",
]
