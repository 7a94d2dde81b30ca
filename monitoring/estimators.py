"""Label-free performance estimators side by side, with a trust signal on every estimate.

CBPE (``monitoring.estimate``) reads the model's own confidence, so it is right only while
the model stays calibrated, which is exactly what a covariate shift breaks. The other
estimators use the champion's labelled reference sample (``reference.parquet``: features,
``proba_<class>``, ``prediction`` and the label) and the fitted ``DriftReference``:

* ``cbpe``: mean highest probability (NannyML's CBPE).
* ``atc``: average thresholded confidence (Garg et al., ICLR 2022): a score threshold is
  fitted on the reference so that the share of reference rows above it equals the
  reference accuracy; the estimate is the share of window rows above it.
* ``doc``: difference of confidences (Guillory et al. 2021): the reference accuracy
  moved by the change of mean confidence from the reference to the window.
* ``iw_cbpe``: importance-weighted CBPE (NannyML's PAPE): a domain classifier (reference
  vs window, on the tabular inputs and the PCA components of each embedding) weighs the
  reference rows by ``p(window | x) / p(reference | x)``; a weighted isotonic map from
  confidence to correctness fitted on them is applied to the window's confidences.
* ``distance_checked`` (default): ATC, except for window rows far from the reference in
  an embedding's PCA space (distance to the PCA subspace or to the k-th nearest reference
  row beyond the reference's own 99th percentile; Roschewitz & Glocker 2023). Their
  confidence is not taken at its word: a proxy label model (logistic regression on the
  reference's labels, the far embeddings left out) gives the probability that their
  prediction is right if the far embedding carried no information, ATC gives it if the
  embedding were as informative as in the reference, and the estimate is the middle of
  that bracket (``far_rows="bracket"``; "proxy", "prior" and "wrong" are options).

Every estimator yields a per-row probability of being right; its mean is the expected
accuracy, and the expected confusion matrix, macro-F1 and the bands follow from it as in
CBPE (labels are drawn row by row from those probabilities). The band of
``distance_checked`` spans the bracket, and on a trusted window every estimate's band
also covers the sampling bands of ATC, DoC and IW-CBPE: their disagreement is part of
what is not known.

Trust: the estimate is marked untrusted when the domain classifier's cross-validated AUC
or the share of far rows passes its bound. Under such a shift no estimator here has a
guarantee (the bracket's middle is a guess between two bounds); the policy should read
"untrusted + drift" as a possible drop and look at the band's low end.

Measured on the drift simulator with a demo-like champion: ``benchmarks/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from features.schema import DatasetConfig
from monitoring.drift import DriftReference, EmbeddingReference, proba_column
from monitoring.estimate import (
    Metric,
    PerformanceEstimate,
    _macro_f1,
    _validate_probas,
    simulated_bands,
)

EstimatorMethod = Literal["cbpe", "atc", "doc", "iw_cbpe", "distance_checked"]
ESTIMATOR_METHODS: tuple[EstimatorMethod, ...] = (
    "cbpe",
    "atc",
    "doc",
    "iw_cbpe",
    "distance_checked",
)


# Estimators calibrated on the reference's labels (CBPE trusts the model instead).
_CALIBRATED: tuple[EstimatorMethod, ...] = ("atc", "doc", "iw_cbpe")


class EstimatorConfig(BaseModel):
    """Which label-free estimator to use, its parameters and the trust bounds."""

    model_config = ConfigDict(frozen=True)

    method: EstimatorMethod = Field(
        default="distance_checked",
        description="Estimator whose value is reported (benchmarks/README.md compares them).",
    )
    confidence: float = Field(default=0.9, gt=0.0, lt=1.0, description="Nominal band coverage.")
    n_simulations: int = Field(default=400, ge=10, description="Label draws for the bands.")
    band_spans_estimators: bool = Field(
        default=True,
        description="On a trusted window, widen the band to cover the sampling bands of "
        "ATC, DoC and IW-CBPE too (their disagreement is uncertainty about the estimate).",
    )
    atc_score: Literal["max_confidence", "negative_entropy"] = Field(
        default="max_confidence",
        description="Score ATC thresholds (Garg et al. report negative entropy slightly "
        "better on images; both are offered).",
    )
    far_quantile: float = Field(
        default=0.99,
        gt=0.5,
        lt=1.0,
        description="A window row is far from the reference in an embedding when its "
        "distance to the PCA subspace or to its k-th nearest reference row exceeds this "
        "quantile of the reference's own distances.",
    )
    far_neighbours: int = Field(default=5, ge=1, description="k of the nearest-row distance.")
    far_rows: Literal["bracket", "proxy", "prior", "wrong"] = Field(
        default="bracket",
        description="What a far row counts as in distance_checked. 'proxy': its confidence "
        "is replaced by the probability that its prediction is right given the row's other "
        "modalities (a logistic regression fitted on the reference's labels without the "
        "far embeddings): right if the far embedding carries no information. 'bracket' "
        "(default): midway between 'proxy' and the ATC value (the far embedding as "
        "informative as in the reference), with the band spanning both. 'prior': right as "
        "often as its predicted class occurs in the reference. 'wrong': counted wrong, as "
        "in Roschewitz & Glocker.",
    )
    proxy_regularization: float = Field(
        default=0.5, gt=0.0, description="Inverse L2 strength (C) of the proxy label model."
    )
    domain_max_reference: int = Field(
        default=3000, ge=50, description="Most reference rows the domain classifier uses."
    )
    domain_folds: int = Field(
        default=5, ge=2, description="Folds of the domain classifier's out-of-fold scores."
    )
    domain_regularization: float = Field(
        default=0.1, gt=0.0, description="Inverse L2 strength (C) of the domain classifier."
    )
    max_weight: float = Field(
        default=20.0, gt=1.0, description="Importance weights are clipped at this multiple."
    )
    max_domain_auc: float = Field(
        default=0.8,
        gt=0.5,
        le=1.0,
        description="Trust bound: above this domain-classifier AUC the estimate is untrusted.",
    )
    max_far_share: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="Trust bound: above this share of far rows the estimate is untrusted.",
    )
    min_trust_rows: int = Field(
        default=30,
        ge=2,
        description="Smaller windows are marked untrusted: their AUC and far share are "
        "too noisy to tell a shift.",
    )
    seed: int = Field(default=0, description="Seeds the folds and the label draws.")


@dataclass
class _EmbeddingSpace:
    """One embedding column's reducer and the reference's distances in it."""

    name: str
    column: str
    presence: str
    reducer: EmbeddingReference
    reference_components: np.ndarray  # (n_present_ref, k)
    component_scale: np.ndarray  # (k,)
    residual_threshold: float
    neighbour_threshold: float
    residual_mean: float
    residual_std: float


@dataclass
class EstimatorReference:
    """What the estimators need from the champion's reference; fit once per champion."""

    dataset: DatasetConfig
    probas: np.ndarray  # (n, k) reference probabilities
    correct: np.ndarray  # (n,) bool: prediction == label
    label_prior: np.ndarray  # (k,)
    features: np.ndarray  # (n, f) domain-classifier features
    labels: np.ndarray  # (n,) label index
    atc_threshold: float
    spaces: list[_EmbeddingSpace] = field(default_factory=list)
    numeric_mean: dict[str, float] = field(default_factory=dict)
    numeric_std: dict[str, float] = field(default_factory=dict)
    feature_owner: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    proxies: dict[frozenset[str], LogisticRegression] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


class WindowEvidence(BaseModel):
    """Per-row correctness probabilities of every estimator and the trust evidence."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    probas: np.ndarray
    row_correct: dict[str, np.ndarray] = Field(description="Per-row P(correct) per method.")
    row_bounds: dict[str, tuple[np.ndarray, np.ndarray]] = Field(
        default_factory=dict,
        description="Per-row P(correct) at the low and high end of a method's bracket.",
    )
    domain_auc: float | None
    far: np.ndarray = Field(description="Bool per window row: far in some embedding.")
    far_by_column: dict[str, float]


# Reference ----------------------------------------------------------------------------


def _stack(values: pd.Series, dim: int) -> np.ndarray:
    if len(values) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    rows = [
        np.zeros(dim, dtype=np.float32) if v is None else np.asarray(v, dtype=np.float32)
        for v in values.to_numpy()
    ]
    return np.stack(rows)


def _probas(frame: pd.DataFrame, dataset: DatasetConfig) -> np.ndarray:
    columns = [proba_column(c) for c in dataset.classes]
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"the frame has no model outputs {missing}")
    return _validate_probas(frame[columns].to_numpy(dtype=float), dataset.classes)


def _scores(probas: np.ndarray, kind: str) -> np.ndarray:
    if kind == "negative_entropy":
        clipped = np.clip(probas, 1e-12, 1.0)
        return (probas * np.log(clipped)).sum(axis=1)
    return probas.max(axis=1)


def _kth_neighbour_distance(
    queries: np.ndarray, points: np.ndarray, k: int, exclude_self: bool = False
) -> np.ndarray:
    """Euclidean distance from each query to its k-th nearest point (chunked)."""
    k_eff = min(k + int(exclude_self), len(points)) - 1
    if k_eff < 0:
        return np.full(len(queries), np.inf)
    sq_points = (points * points).sum(axis=1)
    out = np.empty(len(queries), dtype=np.float64)
    for start in range(0, len(queries), 512):
        chunk = queries[start : start + 512]
        sq = np.maximum(
            (chunk * chunk).sum(axis=1)[:, None] + sq_points[None, :] - 2.0 * chunk @ points.T,
            0.0,
        )
        out[start : start + 512] = np.sqrt(np.partition(sq, k_eff, axis=1)[:, k_eff])
    return out


def _embedding_space(
    name: str,
    reducer: EmbeddingReference,
    frame: pd.DataFrame,
    dataset: DatasetConfig,
    config: EstimatorConfig,
) -> _EmbeddingSpace | None:
    column, presence = dataset.embedding_column(name), dataset.presence_column(name)
    if column not in frame or presence not in frame:
        return None
    present = frame[presence].fillna(0).to_numpy(dtype=float) > 0.5
    if present.sum() <= config.far_neighbours + 1:
        return None
    dim = reducer.mean.shape[0]
    components, residuals = reducer.reduce(_stack(frame.loc[present, column], dim))
    neighbours = _kth_neighbour_distance(
        components, components, config.far_neighbours, exclude_self=True
    )
    scale = components.std(axis=0) + 1e-6
    return _EmbeddingSpace(
        name=name,
        column=column,
        presence=presence,
        reducer=reducer,
        reference_components=components,
        component_scale=scale,
        # The drift reference keeps the residuals of rows the PCA was not fitted on.
        residual_threshold=float(np.quantile(reducer.residuals, config.far_quantile))
        if len(reducer.residuals)
        else float(np.quantile(residuals, config.far_quantile)),
        neighbour_threshold=float(np.quantile(neighbours, config.far_quantile)),
        residual_mean=float(residuals.mean()),
        residual_std=float(residuals.std() + 1e-6),
    )


def _domain_features(
    frame: pd.DataFrame, reference: EstimatorReference
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Domain-classifier features; per embedding column (components, residual, present);
    and the embedding column each feature comes from ('' for tabular features)."""
    dataset = reference.dataset
    n = len(frame)
    blocks: list[np.ndarray] = []
    owners: list[str] = []
    for name in reference.numeric_mean:
        values = (
            pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
            if name in frame
            else np.full(n, np.nan)
        )
        missing = np.isnan(values)
        scaled = (values - reference.numeric_mean[name]) / reference.numeric_std[name]
        blocks.append(np.where(missing, 0.0, np.clip(scaled, -10, 10))[:, None])
        blocks.append(missing.astype(float)[:, None])
        owners += ["", ""]
    for name in dataset.categorical_columns:
        if name in dataset.monitor_only:
            continue
        values = frame[name].astype(object).astype(str) if name in frame else pd.Series([""] * n)
        categories = dataset.categorical_column(name).categories
        blocks.append(np.stack([(values == c).to_numpy(dtype=float) for c in categories], axis=1))
        owners += [""] * len(categories)
    geometry: dict[str, np.ndarray] = {}
    for space in reference.spaces:
        k = space.reference_components.shape[1]
        components = np.zeros((n, k), dtype=np.float32)
        residual = np.zeros(n, dtype=np.float32)
        present = np.zeros(n, dtype=bool)
        if space.column in frame and space.presence in frame:
            present = frame[space.presence].fillna(0).to_numpy(dtype=float) > 0.5
            if present.any():
                dim = space.reducer.mean.shape[0]
                reduced, res = space.reducer.reduce(_stack(frame.loc[present, space.column], dim))
                components[present], residual[present] = reduced, res
        geometry[space.name] = np.column_stack([components, residual, present])
        blocks.append(components / space.component_scale)
        blocks.append(
            np.where(present, (residual - space.residual_mean) / space.residual_std, 0.0)[:, None]
        )
        blocks.append(present.astype(float)[:, None])
        owners += [space.column] * (k + 2)
    return np.hstack(blocks).astype(np.float64), geometry, np.array(owners, dtype=object)


def fit_estimator_reference(
    reference_frame: pd.DataFrame,
    drift_reference: DriftReference,
    config: EstimatorConfig | None = None,
) -> EstimatorReference:
    """Prepare the reference side of every estimator (once per champion).

    Args:
        reference_frame: the champion's ``reference.parquet`` sample: features, embeddings,
            presence columns, ``proba_<class>``, ``prediction`` and the label.
        drift_reference: the fitted drift reference; its PCA reducers define the space
            in which rows are far from the reference.
        config: estimator settings (quantiles of the far check, ATC score).

    Raises:
        ValueError: the reference has no labelled rows with model outputs.
    """
    config = config or EstimatorConfig()
    dataset = drift_reference.dataset
    if dataset.label not in reference_frame or "prediction" not in reference_frame:
        raise ValueError("the reference frame needs the label and the prediction column")
    frame = reference_frame[
        reference_frame[dataset.label].notna()
        & reference_frame[dataset.label].astype(str).isin(dataset.classes)
    ].reset_index(drop=True)
    if len(frame) < 10:
        raise ValueError("the reference frame has fewer than 10 labelled rows")
    probas = _probas(frame, dataset)
    classes = np.array(dataset.classes)
    predicted = classes[probas.argmax(axis=1)]
    correct = predicted == frame[dataset.label].astype(str).to_numpy()
    counts = frame[dataset.label].astype(str).value_counts()
    prior = np.array([counts.get(c, 0) for c in dataset.classes], dtype=float) / len(frame)

    scores = _scores(probas, config.atc_score)
    # Threshold t with share(scores > t) == reference accuracy (Garg et al., eq. 1).
    threshold = float(np.quantile(scores, 1.0 - correct.mean()))

    numeric_mean: dict[str, float] = {}
    numeric_std: dict[str, float] = {}
    for name in dataset.numeric_columns:
        if name in dataset.monitor_only or name not in frame:
            continue
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        if np.isnan(values).all():
            continue
        numeric_mean[name] = float(np.nanmean(values))
        numeric_std[name] = float(np.nanstd(values) + 1e-9)
    spaces = [
        space
        for name, reducer in drift_reference.embeddings.items()
        if (space := _embedding_space(name, reducer, frame, dataset, config)) is not None
    ]
    reference = EstimatorReference(
        dataset=dataset,
        probas=probas,
        correct=correct,
        label_prior=prior,
        features=np.zeros((len(frame), 0)),
        labels=np.array([dataset.classes.index(v) for v in frame[dataset.label].astype(str)]),
        atc_threshold=threshold,
        spaces=spaces,
        numeric_mean=numeric_mean,
        numeric_std=numeric_std,
    )
    reference.features, _, reference.feature_owner = _domain_features(frame, reference)
    return reference


# Evidence -----------------------------------------------------------------------------


def _far_rows(
    geometry: dict[str, np.ndarray],
    reference: EstimatorReference,
    config: EstimatorConfig,
    n: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Whether each window row is far in any embedding, and the mask per embedding column."""
    far = np.zeros(n, dtype=bool)
    masks: dict[str, np.ndarray] = {}
    for space in reference.spaces:
        values = geometry[space.name]
        present = values[:, -1] > 0.5
        column_far = np.zeros(n, dtype=bool)
        if present.any():
            components = values[present, :-2].astype(np.float32)
            residual = values[present, -2]
            distance = _kth_neighbour_distance(
                components, space.reference_components, config.far_neighbours
            )
            column_far[present] = (residual > space.residual_threshold) | (
                distance > space.neighbour_threshold
            )
        masks[space.column] = column_far
        far |= column_far
    return far, masks


def _domain_classifier(
    window_features: np.ndarray, reference: EstimatorReference, config: EstimatorConfig
) -> tuple[float | None, np.ndarray]:
    """Out-of-fold AUC of reference-vs-window and importance weights of the reference rows."""
    n_ref = len(reference.features)
    rng = np.random.default_rng(config.seed)
    use = np.arange(n_ref)
    if n_ref > config.domain_max_reference:
        use = np.sort(rng.choice(n_ref, config.domain_max_reference, replace=False))
    n_win = len(window_features)
    folds = min(config.domain_folds, n_win)
    if folds < 2:
        return None, np.ones(n_ref)
    x = np.vstack([reference.features[use], window_features])
    y = np.concatenate([np.zeros(len(use)), np.ones(n_win)])
    scores = np.zeros(len(y))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    for train, test in splitter.split(x, y):
        model = LogisticRegression(
            C=config.domain_regularization, class_weight="balanced", max_iter=300
        )
        model.fit(x[train], y[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
    auc = float(roc_auc_score(y, scores))
    # Balanced classes: the odds of the out-of-fold score estimate p_win(x) / p_ref(x).
    p = np.clip(scores[: len(use)], 1e-6, 1 - 1e-6)
    weights_used = p / (1 - p)
    weights_used = np.minimum(weights_used / weights_used.mean(), config.max_weight)
    weights = np.zeros(n_ref)
    weights[use] = weights_used / weights_used.mean()
    return auc, weights


def _shift_to_mean(confidence: np.ndarray, target: float) -> np.ndarray:
    """Per-row probabilities: ``confidence`` moved by one logit offset to average ``target``."""
    target = float(np.clip(target, 0.0, 1.0))
    if target <= 0.0 or target >= 1.0:
        return np.full_like(confidence, target)
    logits = np.log(np.clip(confidence, 1e-6, 1 - 1e-6)) - np.log(
        np.clip(1 - confidence, 1e-6, 1 - 1e-6)
    )
    low, high = -30.0, 30.0
    for _ in range(60):
        mid = (low + high) / 2
        if (1 / (1 + np.exp(-(logits + mid)))).mean() < target:
            low = mid
        else:
            high = mid
    return 1 / (1 + np.exp(-(logits + (low + high) / 2)))


def _proxy(
    reference: EstimatorReference, excluded: frozenset[str], config: EstimatorConfig
) -> tuple[LogisticRegression | None, np.ndarray]:
    """Label model on the reference without the ``excluded`` embeddings (cached)."""
    keep = ~np.isin(reference.feature_owner, list(excluded))
    if excluded not in reference.proxies:
        if len(np.unique(reference.labels)) < 2 or not keep.any():
            return None, keep
        model = LogisticRegression(C=config.proxy_regularization, max_iter=500)
        model.fit(reference.features[:, keep], reference.labels)
        reference.proxies[excluded] = model
    return reference.proxies[excluded], keep


def _far_row_accuracy(
    reference: EstimatorReference,
    probas: np.ndarray,
    features: np.ndarray,
    far_masks: dict[str, np.ndarray],
    config: EstimatorConfig,
) -> np.ndarray:
    """P(correct) of each row if it were far (only far rows' values are used)."""
    if config.far_rows == "wrong":
        return np.zeros(len(probas))
    predicted = probas.argmax(axis=1)
    prior = reference.label_prior[predicted]
    if config.far_rows == "prior":
        return prior
    accuracy = prior.copy()
    columns = list(far_masks)
    if not columns:
        return accuracy
    patterns = np.stack([far_masks[c] for c in columns], axis=1)
    for pattern in {tuple(p) for p in patterns[patterns.any(axis=1)]}:
        rows = np.flatnonzero((patterns == np.array(pattern)).all(axis=1))
        excluded = frozenset(c for c, far in zip(columns, pattern, strict=True) if far)
        model, keep = _proxy(reference, excluded, config)
        if model is None:
            continue
        proba = model.predict_proba(features[np.ix_(rows, keep)])
        index = np.searchsorted(model.classes_, predicted[rows])
        found = (index < len(model.classes_)) & (
            model.classes_[np.minimum(index, len(model.classes_) - 1)] == predicted[rows]
        )
        accuracy[rows] = np.where(
            found, proba[np.arange(len(rows)), np.minimum(index, proba.shape[1] - 1)], 0.0
        )
    return accuracy


def collect_evidence(
    reference: EstimatorReference,
    window_frame: pd.DataFrame,
    config: EstimatorConfig | None = None,
    methods: tuple[EstimatorMethod, ...] = ESTIMATOR_METHODS,
) -> WindowEvidence:
    """Per-row correctness probabilities of ``methods`` on a window, and the trust evidence.

    Raises:
        ValueError: the window is empty or has no model outputs.
    """
    config = config or EstimatorConfig()
    if len(window_frame) == 0:
        raise ValueError("cannot estimate performance on an empty window")
    window_frame = window_frame.reset_index(drop=True)
    probas = _probas(window_frame, reference.dataset)
    confidence = probas.max(axis=1)
    features, geometry, _ = _domain_features(window_frame, reference)
    far, far_masks = _far_rows(geometry, reference, config, len(window_frame))
    far_by_column = {c: float(m.mean()) for c, m in far_masks.items()}
    auc, weights = _domain_classifier(features, reference, config)

    ref_conf = reference.probas.max(axis=1)
    rows: dict[str, np.ndarray] = {}
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    atc_estimate = float((_scores(probas, config.atc_score) > reference.atc_threshold).mean())
    atc_rows = _shift_to_mean(confidence, atc_estimate)
    for method in methods:
        if method == "cbpe":
            rows[method] = confidence
        elif method == "atc":
            rows[method] = atc_rows
        elif method == "doc":
            target = confidence.mean() + (reference.accuracy - ref_conf.mean())
            rows[method] = _shift_to_mean(confidence, target)
        elif method == "iw_cbpe":
            calibrator = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            calibrator.fit(ref_conf, reference.correct.astype(float), sample_weight=weights)
            rows[method] = np.asarray(calibrator.predict(confidence), dtype=float)
        elif method == "distance_checked":
            far_value = _far_row_accuracy(reference, probas, features, far_masks, config)
            if config.far_rows == "bracket":
                low = np.where(far, np.minimum(far_value, atc_rows), atc_rows)
                high = np.where(far, np.maximum(far_value, atc_rows), atc_rows)
                bounds[method] = (low, high)
                rows[method] = (low + high) / 2.0
            else:
                rows[method] = np.where(far, far_value, atc_rows)
    return WindowEvidence(
        probas=probas,
        row_correct=rows,
        row_bounds=bounds,
        domain_auc=auc,
        far=far,
        far_by_column=far_by_column,
    )


# Estimates ----------------------------------------------------------------------------


def _estimate_from_rows(
    probas: np.ndarray,
    correct: np.ndarray,
    classes: list[str],
    confidence: float,
    n_simulations: int,
    seed: int,
) -> tuple[float, float, tuple[float, float], tuple[float, float], np.ndarray]:
    """Accuracy, macro-F1, their bands and the expected confusion from per-row P(correct).

    A wrong row's true class is spread over the other classes in proportion to the
    model's probabilities for them.
    """
    n, k = probas.shape
    predicted = probas.argmax(axis=1)
    correct = np.clip(correct, 0.0, 1.0)
    others = probas.copy()
    others[np.arange(n), predicted] = 0.0
    mass = others.sum(axis=1, keepdims=True)
    uniform = (1.0 - np.eye(k)[predicted]) / max(k - 1, 1)
    others = np.where(mass > 1e-12, others / np.where(mass > 1e-12, mass, 1.0), uniform)
    row_true = others * (1.0 - correct)[:, None]
    row_true[np.arange(n), predicted] = correct
    expected_confusion = row_true.T @ np.eye(k)[predicted]
    accuracy = float(correct.mean())
    macro_f1 = float(_macro_f1(expected_confusion))

    acc_band, f1_band = simulated_bands(
        row_true, predicted, confidence, n_simulations, np.random.default_rng(seed)
    )
    return accuracy, macro_f1, acc_band, f1_band, expected_confusion  # type: ignore[return-value]


def trust_reasons(
    domain_auc: float | None,
    far_by_column: dict[str, float],
    far_share: float,
    config: EstimatorConfig,
    n_rows: int | None = None,
) -> list[str]:
    """Why an estimate cannot be trusted (empty when it can)."""
    if n_rows is not None and n_rows < config.min_trust_rows:
        return [
            f"the window has {n_rows} rows, fewer than the {config.min_trust_rows} needed "
            "to tell whether it is shifted"
        ]
    reasons = []
    if domain_auc is not None and domain_auc > config.max_domain_auc:
        reasons.append(
            f"a classifier tells the window from the reference with AUC {domain_auc:.2f} "
            f"(bound {config.max_domain_auc:.2f})"
        )
    if far_share > config.max_far_share:
        columns = ", ".join(
            f"{c} {s:.0%}" for c, s in sorted(far_by_column.items(), key=lambda kv: -kv[1]) if s
        )
        reasons.append(
            f"{far_share:.0%} of rows are far from the reference embeddings ({columns}; "
            f"bound {config.max_far_share:.0%})"
        )
    return reasons


def estimate_from_evidence(
    evidence: WindowEvidence,
    classes: list[str],
    config: EstimatorConfig | None = None,
    method: EstimatorMethod | None = None,
) -> PerformanceEstimate:
    """The estimate of ``method`` (default: ``config.method``) from collected evidence."""
    config = config or EstimatorConfig()
    method = method or config.method
    if method not in evidence.row_correct:
        raise ValueError(f"the evidence has no {method!r} estimate")
    accuracy, macro_f1, acc_band, f1_band, confusion = _estimate_from_rows(
        evidence.probas,
        evidence.row_correct[method],
        classes,
        config.confidence,
        config.n_simulations,
        config.seed,
    )
    far_share = float(evidence.far.mean())
    reasons = trust_reasons(
        evidence.domain_auc, evidence.far_by_column, far_share, config, len(evidence.probas)
    )
    spans: list[np.ndarray] = []
    if method in evidence.row_bounds:
        # The realized value may lie anywhere in the bracket: the band spans it.
        spans.extend(evidence.row_bounds[method])
    if config.band_spans_estimators and not reasons:
        # Inside the reference's support the reference-calibrated estimators are all
        # plausible; where they disagree, nobody knows which is right.
        spans.extend(
            evidence.row_correct[m]
            for m in _CALIBRATED
            if m != method and m in evidence.row_correct
        )
    for rows in spans:
        other = _estimate_from_rows(
            evidence.probas, rows, classes, config.confidence, config.n_simulations, config.seed
        )
        acc_band = (min(acc_band[0], other[2][0]), max(acc_band[1], other[2][1]))
        f1_band = (min(f1_band[0], other[3][0]), max(f1_band[1], other[3][1]))
    return PerformanceEstimate(
        n_rows=len(evidence.probas),
        classes=list(classes),
        expected_accuracy=accuracy,
        expected_macro_f1=macro_f1,
        accuracy_band=acc_band,
        macro_f1_band=f1_band,
        confidence=config.confidence,
        expected_confusion=confusion.tolist(),
        method=method,
        trusted=not reasons,
        trust_reasons=reasons,
        domain_auc=evidence.domain_auc,
        far_share=far_share,
        far_share_by_column=evidence.far_by_column,
        accuracy_by_method={m: float(v.mean()) for m, v in evidence.row_correct.items()},
    )


def estimate_window(
    reference_frame: pd.DataFrame | EstimatorReference,
    drift_reference: DriftReference,
    window_frame: pd.DataFrame,
    dataset_config: DatasetConfig | None = None,
    config: EstimatorConfig | None = None,
) -> PerformanceEstimate:
    """Label-free estimate of a window's accuracy and macro-F1, with a trust signal.

    Args:
        reference_frame: the champion's reference sample, or the result of
            :func:`fit_estimator_reference` on it (fit once per champion to save time).
        drift_reference: the champion's fitted drift reference (its PCA reducers).
        window_frame: scored window rows (``proba_<class>``, embeddings, presence and
            tabular columns); labels, if any, are ignored.
        dataset_config: defaults to the drift reference's dataset.
        config: estimator choice and trust bounds; ``EstimatorConfig()`` by default.

    Returns:
        The estimate of ``config.method`` with ``trusted``, ``trust_reasons``,
        ``domain_auc``, ``far_share`` and every method's accuracy in ``accuracy_by_method``.

    Raises:
        ValueError: empty window, missing model outputs, or an unlabelled reference.
    """
    config = config or EstimatorConfig()
    reference = (
        reference_frame
        if isinstance(reference_frame, EstimatorReference)
        else fit_estimator_reference(reference_frame, drift_reference, config)
    )
    classes = list((dataset_config or reference.dataset).classes)
    evidence = collect_evidence(reference, window_frame, config)
    return estimate_from_evidence(evidence, classes, config)


class EstimateCheck(BaseModel):
    """Whether a label-free estimate points at a performance drop that matters."""

    model_config = ConfigDict(frozen=True)

    possible_drop: bool
    reasons: list[str] = Field(default_factory=list)


def check_estimate(
    estimate: PerformanceEstimate,
    reference_value: float,
    min_drop: float,
    drifted: bool,
    metric: Metric = "macro_f1",
) -> EstimateCheck:
    """Gate: a possible drop when the estimate falls ``min_drop`` below the reference, or
    when it is untrusted, the window drifted and its band reaches that far down.

    An untrusted estimate on a drifted window is not read as "no drop": the realized
    value can be anywhere in the band, so its low end decides.
    """
    floor = reference_value - min_drop
    value = estimate.value(metric)
    if value <= floor:
        return EstimateCheck(
            possible_drop=True,
            reasons=[
                f"estimated {metric} {value:.3f} is {reference_value - value:.3f} below the "
                f"reference {reference_value:.3f} (threshold {min_drop:.3f}, {estimate.method})"
            ],
        )
    low = estimate.band(metric)[0]
    if not estimate.trusted and drifted and low <= floor:
        return EstimateCheck(
            possible_drop=True,
            reasons=[
                f"the {metric} estimate is untrusted ({'; '.join(estimate.trust_reasons)}) "
                f"on a drifted window, and its band reaches {low:.3f}, "
                f"{reference_value - low:.3f} below the reference {reference_value:.3f}"
            ],
        )
    return EstimateCheck(possible_drop=False)


__all__ = [
    "ESTIMATOR_METHODS",
    "EstimateCheck",
    "EstimatorConfig",
    "EstimatorMethod",
    "EstimatorReference",
    "WindowEvidence",
    "check_estimate",
    "collect_evidence",
    "estimate_from_evidence",
    "estimate_window",
    "fit_estimator_reference",
    "trust_reasons",
]
