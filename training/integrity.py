"""Training-data integrity: what a retrain is about to learn from, checked before it does.

:func:`check_training_integrity` looks at a point-in-time training frame for the traces
data poisoning leaves and returns an :class:`IntegrityResult`:

* label distribution: class shares against the previous training set (the champion's
  class prior) and against what the inputs explain (the champion's mean predicted
  probabilities), overall and per segment (categorical value), on the rows the champion
  never saw;
* exact duplicates (content hash of every model input) and near duplicates (nearest
  neighbour in the standardised input space, far closer than rows usually are);
* label issues by confident learning (cleanlab's ``find_label_issues``) on
  cross-validated probabilities of a linear probe;
* random label flips: the share of new labels drawn regardless of the inputs (maximum
  likelihood under a noise floor on the probe's probabilities), tested against the older
  rows' share by likelihood ratio;
* per-class outliers in embedding space (spectral signature: the projection on the top
  singular vector of the class's centred embeddings, robust z-score);
* labels overwritten after they were first stored (the label history);
* trigger tokens: a word new in the recent texts whose rows carry one label far more
  often than their inputs explain (a backdoor: ``features.tokens`` keeps the words).

Suspicious rows are returned for quarantine; past the bounds of :class:`IntegrityConfig`
the result is ``blocked`` with the reasons and what to look at.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.schema import DatasetConfig
from training.evaluate import label_indices

REASONS = (
    "exact_duplicate",
    "near_duplicate",
    "label_issue",
    "outlier",
    "label_tied_shift",
    "label_overwritten",
    "trigger_token",
)


class IntegrityConfig(BaseModel):
    """Bounds of the training-data integrity check."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = Field(default=True, description="Run the check before every training.")
    cv_folds: int = Field(default=5, ge=2, description="Folds of the cross-validated probe.")
    max_probe_dims: int = Field(
        default=64, ge=4, description="Inputs are reduced to this many components (SVD)."
    )
    near_duplicate_ratio: float = Field(
        default=0.05,
        ge=0.0,
        description="A row whose nearest neighbour is closer than this share of the median "
        "nearest-neighbour distance is a near duplicate.",
    )
    outlier_z: float = Field(
        default=6.0, gt=0.0, description="Robust z-score of a per-class outlier."
    )
    label_tied_z: float = Field(
        default=3.0,
        gt=0.0,
        description="Robust z-score of a new row along its class's own input shift "
        "(a trigger tied to a label).",
    )
    max_label_tied_share: float | None = Field(
        default=None,
        ge=0.0,
        description="Quarantine rows with a label-tied input shift and block when more new "
        "rows than this share carry one; None: only report them. Off by default: the demo's "
        "real camera drift moved the classes' photos differently (56 of ~700 new rows "
        "flagged), so on real embeddings this check blocked a clean retrain; on synthetic "
        "data 0.015 separates a trigger from a clean drift (tests/unit/training).",
    )
    segment_min_rows: int = Field(
        default=50, ge=5, description="Segments with fewer new rows are not judged."
    )
    max_segment_label_excess: float = Field(
        default=0.15,
        ge=0.0,
        description="Block when a segment's label shares depart from what the inputs explain "
        "by this much more than the whole window's do (total variation).",
    )
    max_duplicate_share: float = Field(
        default=0.02, ge=0.0, description="Block when more rows than this are duplicates."
    )
    max_label_issue_excess: float = Field(
        default=0.07,
        ge=0.0,
        description="Block when the share of label issues among the new rows exceeds the "
        "share among the older rows by more than this. Drift makes new rows harder for the "
        "probe too: the demo's text-domain shift raised it by 0.05 on clean labels, 10 % "
        "random flips by 0.06-0.08 on the synthetic benchmark.",
    )
    flip_z: float | None = Field(
        default=2.0,
        gt=0.0,
        description="Block when the new rows' share of labels drawn regardless of their "
        "inputs exceeds the older rows' share with this likelihood-ratio z (one-sided; 2.0 "
        "is p 0.023). Random flips land where the inputs are unambiguous, which clean "
        "label noise does not: on the synthetic benchmark clean windows reached z 1.3, "
        "5 % flips 0.4-4.5, 10 % flips 3.0-6.8. None (``--set integrity.flip_z=null``): "
        "only report it.",
    )
    flip_confidence: float = Field(
        default=0.9,
        gt=0.5,
        lt=1.0,
        description="The flip share is judged on rows whose probe probability of some class "
        "is at least this (where inputs are unambiguous).",
    )
    flip_min_rows: int = Field(
        default=100,
        ge=10,
        description="...and only with at least this many such new rows and older rows. On "
        "the demo's real data the probe is weak (9-49 sure rows of 357-1,078 new), and on "
        "its drifted text it was surer than right: not judged there.",
    )
    min_flip_excess: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="...and by at least this share (on large windows a tiny excess is "
        "significant without being an attack).",
    )
    max_overwrite_share: float = Field(
        default=0.02, ge=0.0, description="Block when more labels than this were overwritten."
    )
    max_quarantine_share: float = Field(
        default=0.25, ge=0.0, le=1.0, description="Block when more rows would be quarantined."
    )
    quarantine_label_issues: bool = Field(
        default=False,
        description="Keep rows with label issues out of training. Off by default: on the "
        "demo data a fifth of the genuine rows are flagged (its labels are noisy by "
        "design), and dropping them skews the model; the issues still count towards the "
        "block (excess of the new rows over the older ones).",
    )
    trigger_min_rows: int = Field(
        default=10, ge=2, description="A token in fewer new rows is not judged as a trigger."
    )
    trigger_min_share: float = Field(
        default=0.005,
        ge=0.0,
        le=1.0,
        description="Nor is one in a smaller share of the new rows (rare words are noise).",
    )
    trigger_novelty: float = Field(
        default=5.0,
        ge=1.0,
        description="A trigger is at least this many times more frequent in the new rows "
        "than in the older ones (a word the champion's data already had is no trigger).",
    )
    trigger_purity: float = Field(
        default=0.9,
        gt=0.5,
        le=1.0,
        description="Share of the token's new rows that carry its label.",
    )
    trigger_z: float = Field(
        default=4.0,
        gt=0.0,
        description="How far that label's count exceeds what the champion's probabilities "
        "on the same rows explain (z-score): a word of sentiment the inputs already carry "
        "is explained, a backdoor token is not.",
    )
    block_on_trigger: bool = Field(
        default=True,
        description="Block the retrain when a trigger token is found; False (after a person "
        "has looked at the rows): train without them, they stay quarantined.",
    )
    seed: int = Field(default=0, description="Seed of the probe's folds and SVD.")


class TriggerToken(BaseModel):
    """A word of the new texts tied to one label beyond what the inputs explain."""

    model_config = ConfigDict(frozen=True)

    column: str
    token: str
    n_new: int = Field(description="New rows whose text holds the token.")
    n_old: int = Field(description="Older rows whose text holds it.")
    label: str
    share: float = Field(description="Share of the token's new rows labelled ``label``.")
    explained: float = Field(description="The champion's mean probability of ``label`` there.")
    z: float

    def line(self) -> str:
        return (
            f"token {self.token!r} ({self.column}) in {self.n_new} new rows, "
            f"{self.share:.0%} labelled {self.label!r} where their inputs explain "
            f"{self.explained:.0%} (z {self.z:.1f}); {self.n_old} older rows hold it"
        )


class SegmentLabelShift(BaseModel):
    """Label shares of one group of new rows against what the champion explains."""

    model_config = ConfigDict(frozen=True)

    segment: str
    n_rows: int
    observed: dict[str, float]
    explained: dict[str, float]
    distance: float = Field(description="Total variation between observed and explained.")
    excess: float = Field(description="distance minus the whole window's distance.")
    z: float = Field(description="Largest per-class |observed - explained| / standard error.")


class IntegritySummary(BaseModel):
    """What the check found (logged with the run as JSON)."""

    model_config = ConfigDict(frozen=True)

    n_rows: int
    n_new_rows: int
    counts: dict[str, int] = Field(description="Rows flagged, by reason.")
    quarantined: int
    blocked: bool
    reasons: list[str] = Field(default_factory=list, description="Why the retrain is blocked.")
    look_at: list[str] = Field(default_factory=list, description="What an operator should check.")
    class_share_new: dict[str, float] = Field(default_factory=dict)
    class_share_previous: dict[str, float] = Field(default_factory=dict)
    class_share_explained: dict[str, float] = Field(default_factory=dict)
    label_issue_share_new: float = 0.0
    label_issue_share_old: float | None = None
    flip_share_new: float = Field(
        default=0.0, description="Estimated share of new labels drawn regardless of inputs."
    )
    flip_share_old: float | None = Field(
        default=None, description="The same, older rows; None: not judged (too few rows)."
    )
    flip_rows_new: int = Field(default=0, description="New rows where the probe is sure.")
    flip_z: float = Field(default=0.0, description="Likelihood-ratio z of new over older.")
    segments: list[SegmentLabelShift] = Field(default_factory=list)
    trigger_tokens: list[TriggerToken] = Field(default_factory=list)


@dataclass
class IntegrityResult:
    """The summary and, per row of the frame, which checks flagged it."""

    summary: IntegritySummary
    flags: pd.DataFrame

    @property
    def quarantine(self) -> np.ndarray:
        """Boolean mask over the frame's rows: keep these out of training."""
        return self.flags["quarantine"].to_numpy()

    @property
    def blocked(self) -> bool:
        return self.summary.blocked


# Inputs ----------------------------------------------------------------------------------
def input_matrix(frame: pd.DataFrame, config: DatasetConfig) -> np.ndarray:
    """Every model input as one float matrix: embeddings (zeros when missing), standardised
    numerics, one-hot categoricals."""
    parts = []
    for column in config.embedded_columns:
        values = frame[config.embedding_column(column)]
        dim = next((np.size(v) for v in values if v is not None and np.size(v) > 0), 0)
        block = np.zeros((len(frame), dim), dtype=np.float32)
        for i, v in enumerate(values):
            if v is not None and np.size(v) == dim:
                block[i] = np.asarray(v, dtype=np.float32)
        parts.append(block)
    model_columns = set(config.model_tabular_columns)
    for column in config.numeric_columns:
        if column in model_columns:
            x = pd.to_numeric(frame[column], errors="coerce").astype(float).to_numpy()
            x = np.nan_to_num((x - np.nanmean(x)) / (np.nanstd(x) or 1.0))
            parts.append(x[:, None].astype(np.float32))
    for c in config.categorical:
        if c.name in model_columns:
            values = frame[c.name].astype(str).to_numpy()
            parts.append(np.stack([values == v for v in c.categories], axis=1).astype(np.float32))
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0), np.float32)


def content_hashes(frame: pd.DataFrame, config: DatasetConfig) -> list[str]:
    """Per row: SHA-256 of every model input (not the key, timestamp or label)."""
    matrix = input_matrix(frame, config)
    return [hashlib.sha256(np.round(row, 6).tobytes()).hexdigest() for row in matrix]


def _reduce(matrix: np.ndarray, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD

    centred = matrix - matrix.mean(axis=0)
    if centred.shape[1] <= dims:
        return centred
    return TruncatedSVD(dims, random_state=seed).fit_transform(centred)


# Checks ----------------------------------------------------------------------------------
def find_duplicates(
    frame: pd.DataFrame, config: DatasetConfig, reduced: np.ndarray, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(exact, near)`` masks: every copy after the first of identical inputs, and rows
    whose nearest earlier neighbour is far closer than rows usually are."""
    from sklearn.neighbors import NearestNeighbors

    hashes = pd.Series(content_hashes(frame, config))
    exact = hashes.duplicated(keep="first").to_numpy()
    near = np.zeros(len(frame), dtype=bool)
    if len(frame) > 2:
        neighbours = NearestNeighbors(n_neighbors=2).fit(reduced)
        distance, index = neighbours.kneighbors(reduced)
        d, j = distance[:, 1], index[:, 1]
        typical = float(np.median(d[d > 0])) if (d > 0).any() else 0.0
        near = (d < ratio * typical) & (j < np.arange(len(frame))) & ~exact
    return exact, near


def cross_validated_proba(
    reduced: np.ndarray, y: np.ndarray, n_classes: int, folds: int, seed: int
) -> np.ndarray:
    """Out-of-fold probabilities of a logistic-regression probe (every class column kept)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    proba = np.full((len(y), n_classes), 1.0 / n_classes)
    smallest = np.bincount(y, minlength=n_classes)
    folds = int(min(folds, smallest[smallest > 0].min()))
    if folds < 2:
        return proba
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(reduced, y):
        probe = LogisticRegression(max_iter=300).fit(reduced[train], y[train])
        proba[np.ix_(test, probe.classes_)] = probe.predict_proba(reduced[test])
    return proba


def find_label_issues(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Confident learning (Northcutt et al. 2021) via cleanlab: rows whose given label
    the out-of-fold probabilities confidently contradict."""
    from cleanlab.filter import find_label_issues as cleanlab_issues

    present = np.unique(y)
    if len(present) < 2:
        return np.zeros(len(y), dtype=bool)
    # cleanlab needs labels 0..k-1 all present: restrict to the classes seen.
    remap = {c: i for i, c in enumerate(present)}
    sub = proba[:, present]
    sub = sub / sub.sum(axis=1, keepdims=True)
    # n_jobs=1: cleanlab's default forks a process pool, and forked children of a
    # Prefect task inherit its SIGTERM handler and exit hooks (they took the test's
    # Prefect server down with them).
    return np.asarray(cleanlab_issues(np.asarray([remap[v] for v in y]), sub, n_jobs=1), dtype=bool)


def label_flip_share(
    p_label: np.ndarray, n_classes: int, baseline: float = 0.0
) -> tuple[float, float]:
    """The share of labels drawn regardless of the inputs, and how sure that it exceeds
    ``baseline``.

    Under ``P(label) = (1 - e) p + e (1 - p) / (K - 1)``, with ``p`` the out-of-fold
    probability of the given label, ``e`` is the share of labels flipped to a random other
    class. Clean label noise sits where the inputs are ambiguous and is already in ``p``;
    a flip where the probe is sure is not, so ``e`` measures it.

    Returns:
        ``(e, z)``: the maximum-likelihood ``e`` (in [0, 0.5]) and the likelihood-ratio z
        of ``e > baseline`` (0 when the estimate is not above it).
    """
    from scipy.optimize import minimize_scalar

    p = np.clip(np.asarray(p_label, dtype=float), 1e-6, 1.0 - 1e-6)
    if len(p) == 0 or n_classes < 2:
        return 0.0, 0.0
    other = (1.0 - p) / (n_classes - 1)

    def log_likelihood(e: float) -> float:
        return float(np.log((1.0 - e) * p + e * other).sum())

    # Concave in e (a sum of logs of functions linear in e): one bounded search finds it.
    e = float(minimize_scalar(lambda v: -log_likelihood(v), bounds=(0.0, 0.5), method="bounded").x)
    base = float(np.clip(baseline, 0.0, 0.5))
    if e <= base:
        return e, 0.0
    return e, float(np.sqrt(max(2.0 * (log_likelihood(e) - log_likelihood(base)), 0.0)))


def find_class_outliers(reduced: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
    """Per class, rows far out along the top singular vector of the class's centred inputs
    (spectral signature, Tran et al. 2018) by a robust z-score."""
    out = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(rows) < 20:
            continue
        centred = reduced[rows] - reduced[rows].mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        score = np.abs(centred @ vt[0])
        median = np.median(score)
        mad = np.median(np.abs(score - median)) * 1.4826 or 1e-12
        out[rows] = (score - median) / mad > z
    return out


def find_label_tied_shift(
    blocks: list[np.ndarray], y: np.ndarray, new: np.ndarray, z: float, min_rows: int = 30
) -> np.ndarray:
    """New rows carrying an input shift tied to their label (a trigger: a token or patch
    the attacker adds to rows he labels with one class).

    Per embedding block and class: the direction in which the class's new rows moved
    away from its older rows beyond how the other classes moved; new rows of the class
    far out along it (robust z-score) are flagged. Drift that moves every class alike
    cancels out, and so does one that moves all of a class's new rows alike: only rows
    far out against the class's new rows as well count.
    """
    out = np.zeros(len(y), dtype=bool)
    if new.all() or not new.any():
        return out
    for block in blocks:
        shifts = {}
        for c in np.unique(y):
            old_c, new_c = (y == c) & ~new, (y == c) & new
            if old_c.sum() >= min_rows and new_c.sum() >= min_rows:
                shifts[c] = block[new_c].mean(axis=0) - block[old_c].mean(axis=0)
        if len(shifts) < 2:
            continue
        for c, shift in shifts.items():
            others = np.mean([v for k, v in shifts.items() if k != c], axis=0)
            direction = shift - others
            norm = np.linalg.norm(direction)
            if norm == 0:
                continue
            rows = np.flatnonzero((y == c) & new)
            reference = np.flatnonzero((y == c) & ~new)
            score = block[rows] @ (direction / norm)
            far = np.ones(len(rows), dtype=bool)
            # Far out against the class's older rows *and* against its own new rows: a
            # drift moves the whole class (one mode), a trigger only the rows that carry
            # it (a second mode).
            for base in (block[reference] @ (direction / norm), score):
                median = np.median(base)
                mad = np.median(np.abs(base - median)) * 1.4826 or 1e-12
                far &= (score - median) / mad > z
            out[rows] |= far
    return out


def find_trigger_tokens(
    tokens: dict[str, list[list[str]]],
    y: np.ndarray,
    new: np.ndarray,
    explained: np.ndarray,
    classes: list[str],
    integrity: IntegrityConfig,
) -> tuple[list[TriggerToken], np.ndarray]:
    """Words that arrived with the new rows and carry one label beyond what the inputs
    explain: the trace of a backdoor (a token the attacker adds to rows he labels alike).

    Per text column, a token is judged when it is in at least ``trigger_min_rows`` (and
    ``trigger_min_share``) of the new rows and ``trigger_novelty`` times more frequent
    there than in the older rows. For each class, the count of its rows labelled so is
    compared with the sum of the champion's probabilities for that class on the same rows
    (a Poisson-binomial z-score): a sentiment word the inputs already carry is explained;
    a trigger is not, and is nearly pure.

    Returns:
        The tokens found (largest z first) and the mask of new rows carrying one with its
        label.
    """
    rows = np.zeros(len(y), dtype=bool)
    found: list[TriggerToken] = []
    n_new, n_old = int(new.sum()), int((~new).sum())
    if n_new == 0 or n_old == 0:
        return found, rows
    least = max(integrity.trigger_min_rows, int(np.ceil(integrity.trigger_min_share * n_new)))
    for column, lists in tokens.items():
        where_new: dict[str, list[int]] = {}
        old_count: dict[str, int] = {}
        for i, words in enumerate(lists):
            if new[i]:
                for w in words:
                    where_new.setdefault(w, []).append(i)
            else:
                for w in words:
                    old_count[w] = old_count.get(w, 0) + 1
        for word, index in where_new.items():
            k = len(index)
            old = old_count.get(word, 0)
            if k < least or k / n_new < integrity.trigger_novelty * old / n_old:
                continue
            at = np.asarray(index)
            counts = np.bincount(y[at], minlength=len(classes))
            label = int(counts.argmax())
            share = counts[label] / k
            p = explained[at, label]
            z = (counts[label] - p.sum()) / np.sqrt(max(float((p * (1 - p)).sum()), 1e-9))
            if share >= integrity.trigger_purity and z >= integrity.trigger_z:
                found.append(
                    TriggerToken(
                        column=column,
                        token=word,
                        n_new=k,
                        n_old=old,
                        label=classes[label],
                        share=float(share),
                        explained=float(p.mean()),
                        z=float(z),
                    )
                )
                rows[at[y[at] == label]] = True
    return sorted(found, key=lambda t: -t.z), rows


def _shares(y: np.ndarray, classes: list[str]) -> dict[str, float]:
    counts = np.bincount(y, minlength=len(classes)) if len(y) else np.zeros(len(classes))
    total = max(counts.sum(), 1)
    return {c: float(n / total) for c, n in zip(classes, counts, strict=True)}


def label_shifts(
    frame: pd.DataFrame,
    config: DatasetConfig,
    y: np.ndarray,
    explained: np.ndarray,
    min_rows: int,
) -> tuple[SegmentLabelShift, list[SegmentLabelShift]]:
    """Observed label shares against the champion's mean probabilities, overall and per
    categorical value (segments with at least ``min_rows`` rows)."""
    classes = list(config.classes)

    def shift(name: str, sel: np.ndarray, base: float) -> SegmentLabelShift:
        observed = np.bincount(y[sel], minlength=len(classes)) / max(sel.sum(), 1)
        expected = explained[sel].mean(axis=0)
        se = np.sqrt(np.clip(expected * (1 - expected), 1e-6, None) / max(sel.sum(), 1))
        distance = float(0.5 * np.abs(observed - expected).sum())
        return SegmentLabelShift(
            segment=name,
            n_rows=int(sel.sum()),
            observed=dict(zip(classes, observed.round(4).tolist(), strict=True)),
            explained=dict(zip(classes, expected.round(4).tolist(), strict=True)),
            distance=distance,
            excess=distance - base,
            z=float(np.max(np.abs(observed - expected) / se)),
        )

    overall = shift("all", np.ones(len(y), dtype=bool), 0.0)
    segments = []
    for c in config.categorical:
        if c.name not in frame.columns:
            continue
        values = frame[c.name].astype(str).to_numpy()
        for value in sorted(set(values)):
            sel = values == value
            if sel.sum() >= min_rows:
                segments.append(shift(f"{c.name}={value}", sel, overall.distance))
    return overall, segments


# The check -------------------------------------------------------------------------------
def check_training_integrity(
    frame: pd.DataFrame,
    config: DatasetConfig,
    integrity: IntegrityConfig | None = None,
    explained_proba: np.ndarray | None = None,
    previous_prior: list[float] | None = None,
    new_since: pd.Timestamp | None = None,
    overwritten: np.ndarray | None = None,
    tokens: dict[str, list[list[str]]] | None = None,
) -> IntegrityResult:
    """Check a training frame for poisoning before anything is fitted on it.

    Args:
        frame: the point-in-time training frame (features and labels).
        config: the dataset declaration.
        integrity: the bounds.
        explained_proba: the champion's calibrated probabilities on ``frame`` (what the
            inputs explain); None on a first training.
        previous_prior: the champion's training class shares; None on a first training.
        new_since: rows stamped from here on are new (the champion never saw them); the
            label checks judge these. None: every row is new.
        overwritten: per row, whether its label replaced an earlier, different one.
        tokens: per text column, each row's distinct tokens (``features.tokens``); the
            trigger check runs when they and ``explained_proba`` are given.

    Returns:
        The summary (logged with the run) and per-row flags; ``flags['quarantine']`` marks
        the rows to keep out of training.

    Raises:
        ValueError: the frame is empty or a label is not one of the classes.
    """
    integrity = integrity or IntegrityConfig()
    if len(frame) == 0:
        raise ValueError("cannot check an empty training frame")
    classes = list(config.classes)
    y = label_indices(frame[config.label], classes)
    new = np.ones(len(frame), dtype=bool)
    if new_since is not None:
        since = pd.Timestamp(new_since)
        since = since.tz_localize("UTC") if since.tzinfo is None else since.tz_convert("UTC")
        new = (pd.to_datetime(frame[config.timestamp], utc=True) >= since).to_numpy()
    reduced = _reduce(input_matrix(frame, config), integrity.max_probe_dims, integrity.seed)
    exact, near = find_duplicates(frame, config, reduced, integrity.near_duplicate_ratio)
    proba = cross_validated_proba(reduced, y, len(classes), integrity.cv_folds, integrity.seed)
    p_label = proba[np.arange(len(y)), y]  # the probe's probability of each given label
    issues = find_label_issues(y, proba)
    outliers = find_class_outliers(reduced, y, integrity.outlier_z)
    blocks = [
        np.stack(
            [
                np.asarray(v, np.float32)
                if v is not None and np.size(v)
                else np.zeros(0, np.float32)
                for v in frame[config.embedding_column(c)]
            ]
        )
        for c in config.embedded_columns
    ]
    tied = find_label_tied_shift([b for b in blocks if b.ndim == 2], y, new, integrity.label_tied_z)
    overwritten = (
        np.zeros(len(frame), dtype=bool) if overwritten is None else np.asarray(overwritten, bool)
    )
    triggers: list[TriggerToken] = []
    trigger_rows = np.zeros(len(frame), dtype=bool)
    if tokens and explained_proba is not None:
        triggers, trigger_rows = find_trigger_tokens(
            tokens, y, new, np.asarray(explained_proba, dtype=float), classes, integrity
        )
    flags = pd.DataFrame(
        {
            config.entity_key: frame[config.entity_key].to_numpy(),
            config.timestamp: frame[config.timestamp].to_numpy(),
            config.label: frame[config.label].astype(str).to_numpy(),
            "new": new,
            "exact_duplicate": exact,
            "near_duplicate": near,
            "label_issue": issues,
            "outlier": outliers,
            "label_tied_shift": tied,
            "label_overwritten": overwritten,
            "trigger_token": trigger_rows,
            "label_issue_score": 1.0 - p_label,
        }
    )
    flags["quarantine"] = exact | near | outliers | overwritten | trigger_rows
    if integrity.max_label_tied_share is not None:
        flags["quarantine"] |= tied
    if integrity.quarantine_label_issues:
        flags["quarantine"] |= issues
    counts = {reason: int(flags[reason].sum()) for reason in REASONS}
    n = len(frame)
    reasons: list[str] = []
    look_at: list[str] = []
    duplicates = counts["exact_duplicate"] + counts["near_duplicate"]
    if duplicates > integrity.max_duplicate_share * n:
        reasons.append(
            f"{duplicates} duplicate rows ({duplicates / n:.1%} > {integrity.max_duplicate_share:.0%})"
        )
        look_at.append("the duplicate rows (same inputs under new keys): who sent them")
    has_old = int((~new).sum()) >= 50  # enough older rows to compare the new ones with
    issue_new = float(issues[new].mean()) if new.any() else 0.0
    issue_old = float(issues[~new].mean()) if has_old else None
    if issue_old is not None and issue_new - issue_old > integrity.max_label_issue_excess:
        reasons.append(
            f"label issues in {issue_new:.1%} of the new rows against {issue_old:.1%} of the "
            f"older rows (excess > {integrity.max_label_issue_excess:.0%})"
        )
        look_at.append("the flagged labels of the new rows (flags.parquet, label_issue)")
    # Judged on the rows where the probe is sure, old against new: a weak probe's
    # miscalibration (the demo's, on drifted text) looks like a floor in bulk but not
    # where it is sure; real labels have a floor of their own (judged against the older
    # rows'); a first training has no older rows to compare with.
    sure = proba.max(axis=1) >= integrity.flip_confidence
    flip_rows = int((new & sure).sum())
    flip_new, flip_old, flip_z = 0.0, None, 0.0
    if has_old and min(flip_rows, int((~new & sure).sum())) >= integrity.flip_min_rows:
        flip_old = label_flip_share(p_label[~new & sure], len(classes))[0]
        flip_new, flip_z = label_flip_share(p_label[new & sure], len(classes), flip_old)
    if (
        flip_old is not None
        and integrity.flip_z is not None
        and flip_z > integrity.flip_z
        and flip_new - flip_old > integrity.min_flip_excess
    ):
        reasons.append(
            f"about {flip_new:.1%} of the new labels where the inputs are unambiguous "
            f"({flip_rows} rows) contradict them, as random flips do, against "
            f"{flip_old:.1%} of the older labels (z {flip_z:.1f} > {integrity.flip_z})"
        )
        look_at.append(
            "the new labels the probe contradicts most (flags.parquet, highest "
            "label_issue_score among new rows): who labelled them"
        )
    tied_new = int(tied[new].sum())
    if integrity.max_label_tied_share is not None and tied_new > (
        integrity.max_label_tied_share * max(int(new.sum()), 1)
    ):
        reasons.append(
            f"{tied_new} new rows carry an input shift tied to their label "
            f"(> {integrity.max_label_tied_share:.0%} of the new rows): a possible trigger"
        )
        look_at.append("the inputs of the label_tied_shift rows: a token or patch they share")
    for trigger in triggers if integrity.block_on_trigger else []:
        reasons.append(f"a possible trigger: {trigger.line()}")
        look_at.append(
            f"the new rows whose {trigger.column} holds {trigger.token!r} "
            "(flags.parquet, trigger_token): who sent them and who labelled them"
        )
    if counts["label_overwritten"] > integrity.max_overwrite_share * n:
        reasons.append(
            f"{counts['label_overwritten']} labels were overwritten after first delivery "
            f"(> {integrity.max_overwrite_share:.0%})"
        )
        look_at.append("the label history (who re-sent labels for known rows)")
    segments: list[SegmentLabelShift] = []
    explained_share: dict[str, float] = {}
    if explained_proba is not None and new.sum() >= integrity.segment_min_rows:
        explained_proba = np.asarray(explained_proba, dtype=float)
        overall, segments = label_shifts(
            frame[new].reset_index(drop=True),
            config,
            y[new],
            explained_proba[new],
            integrity.segment_min_rows,
        )
        segments = [overall, *segments]
        explained_share = overall.explained
        for s in segments[1:]:
            if s.excess > integrity.max_segment_label_excess and s.z > 4:
                reasons.append(
                    f"segment {s.segment}: labels {s.observed} where the inputs explain "
                    f"{s.explained} (excess {s.excess:.2f} > {integrity.max_segment_label_excess})"
                )
                look_at.append(f"the new labels of {s.segment} (who labelled them, and when)")
    quarantined = int(flags["quarantine"].sum())
    if quarantined > integrity.max_quarantine_share * n:
        reasons.append(
            f"{quarantined} suspicious rows ({quarantined / n:.1%} > "
            f"{integrity.max_quarantine_share:.0%})"
        )
    prior = previous_prior or []
    summary = IntegritySummary(
        n_rows=n,
        n_new_rows=int(new.sum()),
        counts=counts,
        quarantined=quarantined,
        blocked=bool(reasons),
        reasons=reasons,
        look_at=list(dict.fromkeys(look_at)),
        class_share_new=_shares(y[new], classes),
        class_share_previous=dict(zip(classes, map(float, prior), strict=True))
        if len(prior) == len(classes)
        else {},
        class_share_explained=explained_share,
        label_issue_share_new=issue_new,
        label_issue_share_old=issue_old,
        flip_share_new=flip_new,
        flip_share_old=flip_old,
        flip_rows_new=flip_rows,
        flip_z=flip_z,
        segments=segments,
        trigger_tokens=triggers,
    )
    return IntegrityResult(summary=summary, flags=flags)


# Report ----------------------------------------------------------------------------------
def plot_integrity(result: IntegrityResult, path: Path) -> Path:
    """Class shares (previous / explained / new), segment excess, the flip share (older /
    new rows) and flag counts as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    s = result.summary
    figure = Figure(figsize=(18, 4))
    left, middle, flips, right = figure.subplots(1, 4)
    classes = list(s.class_share_new)
    x = np.arange(len(classes))
    for offset, (name, shares) in zip(
        (-0.25, 0.0, 0.25),
        (
            ("previous training set", s.class_share_previous),
            ("explained by inputs", s.class_share_explained),
            ("new rows", s.class_share_new),
        ),
        strict=True,
    ):
        if shares:
            left.bar(x + offset, [shares[c] for c in classes], width=0.25, label=name)
    left.set_xticks(x, classes)
    left.set_ylabel("share of labels")
    left.legend(fontsize=8)
    left.set_title("Label distribution")
    segments = [g for g in s.segments if g.segment != "all"]
    if segments:
        middle.barh([g.segment for g in segments], [g.excess for g in segments], color="tab:orange")
        middle.axvline(0, color="grey")
    middle.set_xlabel("label shift beyond what the inputs explain (TV excess)")
    middle.set_title("Segments (new rows)")
    if s.flip_share_old is None:
        flips.text(0.5, 0.5, f"not judged\n({s.flip_rows_new} sure new rows)", ha="center")
        flips.set_axis_off()
    else:
        flips.bar(
            ["older rows", "new rows"], [s.flip_share_old, s.flip_share_new], color="tab:purple"
        )
        flips.set_ylabel("estimated share of flipped labels")
    judged = "" if s.flip_share_old is None else f" (z {s.flip_z:.1f})"
    flips.set_title(f"Random flips, sure rows{judged}")
    right.bar(list(s.counts), list(s.counts.values()), color="tab:red")
    right.tick_params(axis="x", rotation=30)
    right.set_title(f"Flagged rows ({s.quarantined} quarantined{', BLOCKED' if s.blocked else ''})")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


def integrity_markdown(summary: IntegritySummary) -> str:
    """The summary as a short markdown report."""
    lines = [
        f"**Training-data integrity: {'BLOCKED' if summary.blocked else 'passed'}** "
        f"({summary.n_rows} rows, {summary.n_new_rows} new, {summary.quarantined} quarantined)",
        "",
        "| check | rows flagged |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in summary.counts.items()],
    ]
    lines += [
        "",
        "Labels contradicting unambiguous inputs (random flips): "
        + (
            f"not judged ({summary.flip_rows_new} new rows where the inputs are unambiguous)."
            if summary.flip_share_old is None
            else f"new rows {summary.flip_share_new:.1%} of {summary.flip_rows_new}, older rows "
            f"{summary.flip_share_old:.1%} (z {summary.flip_z:.1f})."
        ),
    ]
    if summary.trigger_tokens:
        lines += ["", "Trigger tokens:", *[f"- {t.line()}" for t in summary.trigger_tokens]]
    if summary.reasons:
        lines += ["", "Blocked because:", *[f"- {r}" for r in summary.reasons]]
    if summary.look_at:
        lines += ["", "Look at:", *[f"- {r}" for r in summary.look_at]]
    return "\n".join(lines) + "\n"
