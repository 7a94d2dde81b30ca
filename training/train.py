"""Fitting the fusion model on a point-in-time feature frame.

``train_model`` checks the frame, splits it by time (train < validation < test), fits
standardisation statistics on the training split, trains with modality dropout and early
stopping on validation loss, then fits the calibration temperature on validation. Every
random choice derives from ``TrainConfig.seed``; the global torch RNG is forked and
restored, so training leaves no global state behind.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from tqdm.auto import tqdm

from features.schema import DatasetConfig
from training.evaluate import PrimaryMetric, compute_metrics, fit_temperature, label_indices
from training.model import (
    TABULAR,
    CategoricalInput,
    EmbeddingInput,
    FusionNetwork,
    ModelInputs,
    ModelSpec,
    MultimodalClassifier,
    frame_to_inputs,
    softmax,
)


class TrainingDataError(ValueError):
    """The feature frame cannot be trained on (too small, one class, bad labels, columns)."""


class ValidationGateError(TrainingDataError):
    """The data-quality gate failed for this training set: nothing was trained."""


class ValidationOutcome(Protocol):
    """What ``train_model`` needs from a data-quality gate result (e.g. the GX gate)."""

    @property
    def success(self) -> bool: ...


class TrainConfig(BaseModel):
    """Training parameters (the training flow's parameters)."""

    model_config = ConfigDict(frozen=True)

    epochs: int | None = Field(
        default=None,
        ge=1,
        description="Maximum passes over the training split; None: adapted to the data size "
        "(at least 30, and enough passes for about 2,000 optimiser steps, at most 200).",
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Rows per optimiser step; None: adapted to the data size (about 1/20 of "
        "the training rows as a power of two, between 16 and 256).",
    )
    learning_rate: float = Field(default=1e-3, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(default=1e-4, ge=0.0, description="AdamW weight decay.")
    hidden_size: int = Field(default=128, ge=4, description="Width of each modality encoder.")
    fusion_hidden_size: int = Field(default=128, ge=4, description="Width of the fused head.")
    categorical_dim: int = Field(default=8, ge=1, description="Width of a category embedding.")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout inside MLPs.")
    modality_dropout: float = Field(
        default=0.15,
        ge=0.0,
        lt=1.0,
        description="Probability of hiding each modality of a training row (robustness "
        "to missing modalities).",
    )
    patience: int | None = Field(
        default=None,
        ge=1,
        description="Epochs without validation-loss improvement before stopping; None: "
        "adapted to the data size (5 from 5,000 training rows, up to 15 on small data, "
        "where one epoch is a few noisy steps).",
    )
    seed: int = Field(default=0, description="Seed of every random choice in training.")
    validation_fraction: float = Field(
        default=0.15, gt=0.0, lt=0.5, description="Share of rows (by time) for validation."
    )
    test_fraction: float = Field(
        default=0.15, gt=0.0, lt=0.5, description="Share of the latest rows for the test split."
    )
    min_rows: int = Field(default=200, ge=10, description="Refuse to train on fewer rows.")
    min_rows_per_class: int = Field(
        default=10, ge=1, description="Refuse to train when a class has fewer training rows."
    )
    primary_metric: PrimaryMetric = Field(
        default="macro_f1", description="Metric reported as primary and used by the gate."
    )
    modalities: list[str] | None = Field(
        default=None,
        description="Restrict the model to these modalities (text/image column names or "
        "'tabular'); None: all. Used for single-modality ablations.",
    )
    show_progress: bool = Field(default=True, description="Show a tqdm bar over epochs.")

    @model_validator(mode="after")
    def _fractions(self) -> TrainConfig:
        if self.validation_fraction + self.test_fraction >= 0.8:
            raise ValueError("validation_fraction + test_fraction must leave >= 20% for training")
        return self


class SplitWindow(BaseModel):
    model_config = ConfigDict(frozen=True)

    n_rows: int
    start: datetime | None
    end: datetime | None
    class_counts: dict[str, int]


class TrainingManifest(BaseModel):
    """What the model was trained on: recorded with the run."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    feature_service_name: str
    feature_service_version: int
    label: str
    classes: list[str]
    modalities: list[str]
    input_columns: list[str]
    train: SplitWindow
    validation: SplitWindow
    test: SplitWindow
    data_hash: str = Field(description="SHA-256 over keys, timestamps, labels and inputs.")


@dataclass
class DataSplits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    @property
    def unseen(self) -> pd.DataFrame:
        """Validation and test rows: data the weights were not fitted on."""
        return pd.concat([self.validation, self.test], ignore_index=True)


@dataclass
class TrainResult:
    """A fitted classifier with its splits, manifest and learning curve."""

    model: MultimodalClassifier
    splits: DataSplits
    manifest: TrainingManifest
    train_config: TrainConfig
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    validation_metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0


# Data-size defaults ----------------------------------------------------------------------
def resolve_train_config(train_config: TrainConfig, n_train_rows: int) -> TrainConfig:
    """``train_config`` with every size-adapted knob left at None filled in for
    ``n_train_rows`` training rows; explicit values are kept.

    With a fixed batch of 256 and patience 5, a few hundred rows make 2-5 optimiser steps
    per epoch, and early stopping ends training before the model leaves the class prior.
    """
    n = max(int(n_train_rows), 1)
    batch_size = train_config.batch_size
    if batch_size is None:
        batch_size = int(min(256, max(16, 2 ** round(np.log2(max(n / 20, 1.0))))))
    steps = max(1, -(-n // batch_size))
    epochs = train_config.epochs
    if epochs is None:
        epochs = int(min(200, max(30, -(-2000 // steps))))
    patience = train_config.patience
    if patience is None:
        patience = 5 if n >= 5000 else 10 if n >= 1000 else 15
    return train_config.model_copy(
        update={"batch_size": batch_size, "epochs": epochs, "patience": patience}
    )


# Checks and splits -----------------------------------------------------------------------
def check_training_frame(
    frame: pd.DataFrame, config: DatasetConfig, train_config: TrainConfig
) -> None:
    """Raise :class:`TrainingDataError` unless the frame can be trained on."""
    needed = [config.timestamp, config.label, *config.model_tabular_columns]
    for column in config.embedded_columns:
        needed.append(config.embedding_column(column))
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"feature frame lacks columns: {missing}")
    if len(frame) < train_config.min_rows:
        raise TrainingDataError(
            f"too few rows to train: {len(frame)} < min_rows={train_config.min_rows}"
        )
    labels = frame[config.label]
    if labels.isna().any():
        raise TrainingDataError(f"{int(labels.isna().sum())} rows have no label")
    try:
        label_indices(labels, config.classes)
    except ValueError as error:
        raise TrainingDataError(str(error)) from error
    present = sorted(set(labels.astype(str)))
    if len(present) < 2:
        raise TrainingDataError(f"only one class in the training data: {present}")


def split_by_time(
    frame: pd.DataFrame, config: DatasetConfig, train_config: TrainConfig
) -> DataSplits:
    """Oldest rows train, then validation, newest rows test (no shuffling across time)."""
    keys = [config.timestamp] + ([config.entity_key] if config.entity_key in frame else [])
    ordered = frame.sort_values(keys, kind="mergesort").reset_index(drop=True)
    n = len(ordered)
    n_test = max(1, int(round(n * train_config.test_fraction)))
    n_val = max(1, int(round(n * train_config.validation_fraction)))
    n_train = n - n_val - n_test
    return DataSplits(
        train=ordered.iloc[:n_train].reset_index(drop=True),
        validation=ordered.iloc[n_train : n_train + n_val].reset_index(drop=True),
        test=ordered.iloc[n_train + n_val :].reset_index(drop=True),
    )


def hash_frame(frame: pd.DataFrame, columns: list[str]) -> str:
    """Order-sensitive SHA-256 of ``columns`` (vectors hashed by their float32 bytes)."""
    digest = hashlib.sha256()
    for column in columns:
        digest.update(column.encode())
        values = frame[column]
        if values.dtype == object and any(isinstance(v, np.ndarray | list) for v in values[:5]):
            for value in values:
                if value is None:
                    digest.update(b"\x00")
                else:
                    digest.update(np.asarray(value, dtype=np.float32).tobytes())
        else:
            digest.update(pd.util.hash_pandas_object(values, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _window(part: pd.DataFrame, config: DatasetConfig) -> SplitWindow:
    ts = pd.to_datetime(part[config.timestamp], utc=True) if len(part) else None
    return SplitWindow(
        n_rows=len(part),
        start=ts.min().floor("us").to_pydatetime() if ts is not None else None,
        end=ts.max().floor("us").to_pydatetime() if ts is not None else None,
        class_counts={c: int((part[config.label].astype(str) == c).sum()) for c in config.classes},
    )


# Model construction ----------------------------------------------------------------------
def build_spec(
    frame: pd.DataFrame, config: DatasetConfig, train_config: TrainConfig, prior: np.ndarray
) -> ModelSpec:
    """The model's input declaration, from the dataset config and embedding widths."""
    wanted = set(train_config.modalities) if train_config.modalities is not None else None
    known = {*config.embedded_columns, TABULAR}
    if wanted is not None and (not wanted or wanted - known):
        raise TrainingDataError(f"modalities must be a non-empty subset of {sorted(known)}")
    embeddings = []
    for kind, columns in (
        ("text", config.text_columns),
        ("image", config.image_columns),
        ("vector", config.vector_columns),
    ):
        for column in columns:
            if wanted is not None and column not in wanted:
                continue
            emb = config.embedding_column(column)
            dim = next(
                (np.asarray(v).size for v in frame[emb] if v is not None and np.size(v) > 0), 0
            )
            if dim == 0:
                raise TrainingDataError(f"{emb}: no row has an embedding")
            embeddings.append(
                EmbeddingInput(
                    name=column,
                    kind=kind,
                    column=emb,
                    presence_column=config.presence_column(column),
                    dim=int(dim),
                )
            )
    use_tabular = wanted is None or TABULAR in wanted
    model_columns = set(config.model_tabular_columns) if use_tabular else set()
    return ModelSpec(
        classes=list(config.classes),
        embeddings=embeddings,
        numeric=[c for c in config.numeric_columns if c in model_columns],
        categorical=[
            CategoricalInput(name=c.name, categories=list(c.categories))
            for c in config.categorical
            if c.name in model_columns
        ],
        hidden_size=train_config.hidden_size,
        fusion_hidden_size=train_config.fusion_hidden_size,
        categorical_dim=train_config.categorical_dim,
        dropout=train_config.dropout,
        class_prior=prior.tolist(),
    )


def _loss_on(
    network: FusionNetwork, inputs: ModelInputs, y: torch.Tensor
) -> tuple[float, np.ndarray]:
    network.eval()
    with torch.no_grad():
        logits = network(inputs)
        loss = nn.functional.cross_entropy(logits, y).item()
    return float(loss), logits.numpy()


# Training --------------------------------------------------------------------------------
def train_model(
    frame: pd.DataFrame,
    config: DatasetConfig,
    train_config: TrainConfig,
    validation: ValidationOutcome | None = None,
) -> TrainResult:
    """Train, early-stop and calibrate a fusion classifier on a feature frame.

    Args:
        frame: point-in-time feature frame (``features.store.get_training_frame``).
        config: the dataset declaration; only ``model_tabular_columns`` feed the model.
        train_config: training parameters (seed included).
        validation: the data-quality gate's result for this frame; a failed gate stops
            training before anything is fitted.

    Returns:
        The classifier (temperature fitted on validation), splits, manifest and history.

    Raises:
        ValidationGateError: ``validation`` says the data failed its quality gate.
        TrainingDataError: too few rows, one class, unknown labels, missing columns, or a
            split too small to train or early-stop on.
    """
    if validation is not None and not validation.success:
        raise ValidationGateError("the training set failed its data-quality gate: not training")
    check_training_frame(frame, config, train_config)
    splits = split_by_time(frame, config, train_config)
    y_train = label_indices(splits.train[config.label], config.classes)
    counts = np.bincount(y_train, minlength=len(config.classes))
    if (counts > 0).sum() < 2:
        raise TrainingDataError("only one class in the training split (after the time split)")
    thin = [
        c
        for c, n in zip(config.classes, counts, strict=True)
        if 0 < n < train_config.min_rows_per_class
    ]
    if thin:
        raise TrainingDataError(
            f"classes with fewer than {train_config.min_rows_per_class} training rows: {thin}"
        )
    train_config = resolve_train_config(train_config, len(splits.train))
    started = time.perf_counter()
    spec = build_spec(splits.train, config, train_config, counts / counts.sum())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_config.seed)
        generator = torch.Generator().manual_seed(train_config.seed)
        result = _fit(splits, config, train_config, spec, y_train, generator)
    result.train_seconds = time.perf_counter() - started
    return result


def _fit(
    splits: DataSplits,
    config: DatasetConfig,
    train_config: TrainConfig,
    spec: ModelSpec,
    y_train_np: np.ndarray,
    generator: torch.Generator,
) -> TrainResult:
    network = FusionNetwork(spec)
    if spec.numeric:
        numeric = splits.train[spec.numeric].apply(pd.to_numeric, errors="coerce")
        network.set_numeric_stats(
            numeric.mean().fillna(0.0).to_numpy(), numeric.std(ddof=0).fillna(1.0).to_numpy()
        )
    train_inputs = frame_to_inputs(splits.train, spec)
    val_inputs = frame_to_inputs(splits.validation, spec)
    y_train = torch.from_numpy(y_train_np)
    y_val_np = label_indices(splits.validation[config.label], config.classes)
    y_val = torch.from_numpy(y_val_np)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )
    best_loss, best_epoch, best_state, stale = float("inf"), 0, None, 0
    history: list[dict[str, float]] = []
    n = len(train_inputs)
    bar = tqdm(
        range(1, train_config.epochs + 1),
        desc="training",
        unit="epoch",
        disable=not train_config.show_progress,
    )
    for epoch in bar:
        network.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, train_config.batch_size):
            batch = train_inputs.take(order[start : start + train_config.batch_size])
            if train_config.modality_dropout > 0:
                keep = (
                    torch.rand(batch.mask.shape, generator=generator)
                    >= train_config.modality_dropout
                )
                batch = ModelInputs(
                    batch.embeddings, batch.numeric, batch.categorical, batch.mask * keep
                )
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(
                network(batch), y_train[order[start : start + train_config.batch_size]]
            )
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        val_loss, _ = _loss_on(network, val_inputs, y_val)
        history.append({"epoch": epoch, "train_loss": total / n, "val_loss": val_loss})
        bar.set_postfix(train_loss=f"{total / n:.4f}", val_loss=f"{val_loss:.4f}")
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        else:
            stale += 1
            if stale >= train_config.patience:
                break
    bar.close()
    if best_state is not None:
        network.load_state_dict(best_state)
    _, val_logits = _loss_on(network, val_inputs, y_val)
    network.set_temperature(fit_temperature(val_logits, y_val_np))
    network.eval()
    model = MultimodalClassifier(network)
    k = len(spec.classes)
    raw = compute_metrics(y_val_np, softmax(val_logits), k)
    calibrated = compute_metrics(y_val_np, softmax(val_logits / model.temperature), k)
    validation_metrics = {
        "val_loss": best_loss,
        "val_accuracy": calibrated.accuracy,
        "val_macro_f1": calibrated.macro_f1,
        "val_ece_uncalibrated": float(raw.ece or 0.0),
        "val_ece": float(calibrated.ece or 0.0),
    }
    manifest = TrainingManifest(
        dataset=config.name,
        feature_service_name=config.feature_service_name,
        feature_service_version=config.feature_service_version,
        label=config.label,
        classes=list(config.classes),
        modalities=spec.modalities,
        input_columns=spec.input_columns,
        train=_window(splits.train, config),
        validation=_window(splits.validation, config),
        test=_window(splits.test, config),
        data_hash=hash_frame(
            pd.concat([splits.train, splits.validation, splits.test], ignore_index=True),
            [
                c
                for c in [config.entity_key, config.timestamp, config.label, *spec.input_columns]
                if c in splits.train.columns
            ],
        ),
    )
    return TrainResult(
        model=model,
        splits=splits,
        manifest=manifest,
        train_config=train_config,
        best_epoch=best_epoch,
        epochs_run=len(history),
        history=history,
        validation_metrics=validation_metrics,
    )
