"""The multimodal fusion network and its frame -> tensor adapter.

One encoder per modality (an MLP per text or image embedding, one MLP over the tabular
columns), a fused head over the concatenated modality codes and the modality mask. A row
without a modality has that code zeroed and its mask bit at 0, so the head learns to
predict from whatever is present (training drops modalities at random to teach it).

The module is self-contained (no import of ``features``) so that a logged model loads
anywhere ``torch`` and ``pandas`` do. Standardisation statistics and the calibration
temperature are buffers of the network: they travel inside the weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

TABULAR = "tabular"
WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "spec.json"


class EmbeddingInput(BaseModel):
    """One text or image modality as the model reads it."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Raw column name; also the modality name.")
    kind: Literal["text", "image", "vector"]
    column: str = Field(description="Embedding column in the feature frame.")
    presence_column: str = Field(description="0/1 presence column in the feature frame.")
    dim: int = Field(gt=0, description="Embedding width.")


class CategoricalInput(BaseModel):
    """A categorical column and its vocabulary (index 0 is reserved for unknown/missing)."""

    model_config = ConfigDict(frozen=True)

    name: str
    categories: list[str]


class ModelSpec(BaseModel):
    """Everything needed to rebuild the network and read a feature frame."""

    model_config = ConfigDict(frozen=True)

    classes: list[str] = Field(min_length=2)
    embeddings: list[EmbeddingInput] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)
    categorical: list[CategoricalInput] = Field(default_factory=list)
    hidden_size: int = Field(default=128, gt=0, description="Width of each modality code.")
    fusion_hidden_size: int = Field(default=128, gt=0, description="Width of the fused head.")
    categorical_dim: int = Field(default=8, gt=0, description="Width of a category embedding.")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    class_prior: list[float] = Field(
        default_factory=list, description="Class frequencies in the training split."
    )

    @property
    def has_tabular(self) -> bool:
        return bool(self.numeric or self.categorical)

    @property
    def modalities(self) -> list[str]:
        """Modality names in mask-column order."""
        names = [e.name for e in self.embeddings]
        return names + [TABULAR] if self.has_tabular else names

    @property
    def input_columns(self) -> list[str]:
        """Feature-frame columns the model reads."""
        columns: list[str] = []
        for e in self.embeddings:
            columns += [e.column, e.presence_column]
        return columns + self.numeric + [c.name for c in self.categorical]


@dataclass(frozen=True)
class ModelInputs:
    """A batch of model inputs as tensors."""

    embeddings: dict[str, torch.Tensor]
    numeric: torch.Tensor  # (n, n_numeric) raw values, NaN where missing
    categorical: torch.Tensor  # (n, n_categorical) int64 vocabulary indices
    mask: torch.Tensor  # (n, n_modalities) float 0/1

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def take(self, index: torch.Tensor) -> ModelInputs:
        return ModelInputs(
            embeddings={k: v[index] for k, v in self.embeddings.items()},
            numeric=self.numeric[index],
            categorical=self.categorical[index],
            mask=self.mask[index],
        )


def _mlp(n_in: int, n_hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, n_hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(n_hidden, n_out),
        nn.ReLU(),
    )


class FusionNetwork(nn.Module):
    """Per-modality encoders and a fused classification head (returns logits)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        hidden = spec.hidden_size
        self.encoders = nn.ModuleDict(
            {e.name: _mlp(e.dim, hidden, hidden, spec.dropout) for e in spec.embeddings}
        )
        self.category_embeddings = nn.ModuleList(
            [nn.Embedding(len(c.categories) + 1, spec.categorical_dim) for c in spec.categorical]
        )
        if spec.has_tabular:
            n_tab = len(spec.numeric) + spec.categorical_dim * len(spec.categorical)
            self.encoders[TABULAR] = _mlp(n_tab, hidden, hidden, spec.dropout)
        self.register_buffer("numeric_mean", torch.zeros(len(spec.numeric)))
        self.register_buffer("numeric_std", torch.ones(len(spec.numeric)))
        self.register_buffer("temperature", torch.ones(1))
        n_mod = len(spec.modalities)
        self.head = nn.Sequential(
            nn.Linear(n_mod * hidden + n_mod, spec.fusion_hidden_size),
            nn.ReLU(),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.fusion_hidden_size, len(spec.classes)),
        )

    def set_numeric_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Store standardisation statistics (fitted on the training split)."""
        self.numeric_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.numeric_std.copy_(torch.as_tensor(np.where(std > 1e-8, std, 1.0), dtype=torch.float32))

    def set_temperature(self, value: float) -> None:
        self.temperature.fill_(float(value))

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        codes = []
        for i, name in enumerate(self.spec.modalities):
            if name == TABULAR:
                parts = []
                if self.spec.numeric:
                    z = (inputs.numeric - self.numeric_mean) / self.numeric_std
                    parts.append(torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0))
                for j, layer in enumerate(self.category_embeddings):
                    parts.append(layer(inputs.categorical[:, j]))
                x = torch.cat(parts, dim=1)
            else:
                x = inputs.embeddings[name]
            codes.append(self.encoders[name](x) * inputs.mask[:, i : i + 1])
        return self.head(torch.cat([*codes, inputs.mask], dim=1))


def _stack_embeddings(values: Sequence, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack a column of vectors (arrays, lists or None) into (n, dim) plus a validity mask."""
    out = np.zeros((len(values), dim), dtype=np.float32)
    valid = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        vector = np.asarray(value, dtype=np.float32).reshape(-1)
        if vector.shape[0] != dim:
            raise ValueError(f"embedding of width {vector.shape[0]} where {dim} was expected")
        out[i] = vector
        valid[i] = True
    return out, valid


def frame_to_inputs(frame: pd.DataFrame, spec: ModelSpec) -> ModelInputs:
    """Convert a feature frame to model inputs.

    A missing presence column is inferred from the embedding (present when non-zero);
    a null embedding counts as absent whatever its flag says. Unknown or missing
    categories map to index 0.

    Raises:
        KeyError: an embedding, numeric or categorical column is missing from the frame.
    """
    n = len(frame)
    embeddings: dict[str, torch.Tensor] = {}
    mask_columns: list[np.ndarray] = []
    for e in spec.embeddings:
        matrix, valid = _stack_embeddings(frame[e.column].tolist(), e.dim)
        if e.presence_column in frame.columns:
            flag = pd.to_numeric(frame[e.presence_column], errors="coerce").fillna(0).to_numpy()
            present = (flag > 0) & valid
        else:
            present = valid & np.any(matrix != 0, axis=1)
        matrix[~present] = 0.0
        embeddings[e.name] = torch.from_numpy(matrix)
        mask_columns.append(present.astype(np.float32))
    if spec.numeric:
        numeric = frame[spec.numeric].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    else:
        numeric = np.zeros((n, 0), dtype=np.float32)
    categorical = np.zeros((n, len(spec.categorical)), dtype=np.int64)
    for j, column in enumerate(spec.categorical):
        lookup = {value: k + 1 for k, value in enumerate(column.categories)}
        categorical[:, j] = [lookup.get(v, 0) for v in frame[column.name].astype(object)]
    if spec.has_tabular:
        mask_columns.append(np.ones(n, dtype=np.float32))
    mask = np.stack(mask_columns, axis=1) if mask_columns else np.zeros((n, 0), np.float32)
    return ModelInputs(
        embeddings=embeddings,
        numeric=torch.from_numpy(np.ascontiguousarray(numeric)),
        categorical=torch.from_numpy(categorical),
        mask=torch.from_numpy(np.ascontiguousarray(mask)),
    )


class MultimodalClassifier:
    """A trained fusion network with its spec: the object everything downstream scores with."""

    def __init__(self, network: FusionNetwork) -> None:
        self.network = network

    @property
    def spec(self) -> ModelSpec:
        return self.network.spec

    @property
    def classes(self) -> list[str]:
        return self.spec.classes

    @property
    def temperature(self) -> float:
        return float(self.network.temperature.item())

    def logits(
        self, frame: pd.DataFrame, mask_modalities: Sequence[str] = (), batch_size: int = 4096
    ) -> np.ndarray:
        """Uncalibrated logits, shape (n, n_classes); ``mask_modalities`` are treated as absent."""
        unknown = set(mask_modalities) - set(self.spec.modalities)
        if unknown:
            raise ValueError(f"unknown modalities to mask: {sorted(unknown)}")
        inputs = frame_to_inputs(frame, self.spec)
        if mask_modalities:
            mask = inputs.mask.clone()
            for name in mask_modalities:
                mask[:, self.spec.modalities.index(name)] = 0.0
            inputs = ModelInputs(inputs.embeddings, inputs.numeric, inputs.categorical, mask)
        self.network.eval()
        outputs = []
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                index = torch.arange(start, min(start + batch_size, len(inputs)))
                outputs.append(self.network(inputs.take(index)))
        if not outputs:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return torch.cat(outputs).numpy()

    def predict_proba(
        self, frame: pd.DataFrame, calibrated: bool = True, mask_modalities: Sequence[str] = ()
    ) -> np.ndarray:
        """Class probabilities (n, n_classes), temperature-scaled unless ``calibrated=False``."""
        logits = self.logits(frame, mask_modalities)
        if calibrated:
            logits = logits / self.temperature
        return softmax(logits)

    def predict_frame(self, frame: pd.DataFrame, calibrated: bool = True) -> pd.DataFrame:
        """Calibrated probabilities as columns ``proba_<class>`` plus ``prediction``."""
        proba = self.predict_proba(frame, calibrated=calibrated)
        out = pd.DataFrame(proba, columns=probability_columns(self.classes), index=frame.index)
        out["prediction"] = np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
        return out


def probability_columns(classes: Sequence[str]) -> list[str]:
    return [f"proba_{c}" for c in classes]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def save_classifier(model: MultimodalClassifier, directory: Path) -> Path:
    """Write the spec (JSON) and weights (state dict) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPEC_FILE).write_text(model.spec.model_dump_json(indent=2), encoding="utf-8")
    torch.save(model.network.state_dict(), directory / WEIGHTS_FILE)
    return directory


def load_classifier(directory: Path) -> MultimodalClassifier:
    """Read a classifier written by :func:`save_classifier`."""
    directory = Path(directory)
    spec = ModelSpec.model_validate(json.loads((directory / SPEC_FILE).read_text("utf-8")))
    network = FusionNetwork(spec)
    state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    network.eval()
    return MultimodalClassifier(network)
