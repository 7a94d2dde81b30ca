"""The classifier as an MLflow pyfunc model: features in, calibrated ``proba_<class>`` out."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array

from training.model import (
    MultimodalClassifier,
    load_classifier,
    probability_columns,
    save_classifier,
)

CLASSIFIER_ARTIFACT = "classifier"
CODE_FILE = Path(__file__).resolve().parent / "pyfunc_code.py"
DIGEST_KEY = "classifier_sha256"


class ModelIntegrityError(RuntimeError):
    """The classifier's files differ from those the model was logged with."""


def classifier_digest(directory: Path) -> str:
    """SHA-256 over the classifier's files (spec and weights), by name then content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class FusionPyfuncModel(mlflow.pyfunc.PythonModel):
    """Scores a feature frame (embeddings as lists or arrays, tabular columns) into
    calibrated class probabilities, one ``proba_<class>`` column per class.

    Logged as a model from code (``pyfunc_code.py``); the weights' SHA-256, kept in the
    model's config, is checked before they are loaded."""

    def load_context(self, context) -> None:
        directory = Path(context.artifacts[CLASSIFIER_ARTIFACT])
        expected = (context.model_config or {}).get(DIGEST_KEY)
        if expected is None:
            raise ModelIntegrityError(f"{directory}: the model records no {DIGEST_KEY}")
        actual = classifier_digest(directory)
        if actual != expected:
            raise ModelIntegrityError(
                f"classifier files changed since logging (sha256 {actual[:12]}..., "
                f"expected {expected[:12]}...): refusing to load them"
            )
        self._model = load_classifier(directory)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        proba = self._model.predict_proba(pd.DataFrame(model_input), calibrated=True)
        return pd.DataFrame(proba, columns=probability_columns(self._model.classes))


def model_signature(model: MultimodalClassifier) -> ModelSignature:
    """Input: embeddings (float arrays), optional presence flags, numeric, categorical."""
    spec = model.spec
    inputs = []
    for e in spec.embeddings:
        inputs.append(ColSpec(Array(DataType.double), e.column))
        inputs.append(ColSpec(DataType.double, e.presence_column, required=False))
    inputs += [ColSpec(DataType.double, c) for c in spec.numeric]
    inputs += [ColSpec(DataType.string, c.name) for c in spec.categorical]
    outputs = [ColSpec(DataType.double, c) for c in probability_columns(spec.classes)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def pyfunc_input(frame: pd.DataFrame, model: MultimodalClassifier) -> pd.DataFrame:
    """The model's input columns of ``frame`` in the types of :func:`model_signature`."""
    spec = model.spec
    out = pd.DataFrame(index=frame.index)
    for e in spec.embeddings:
        out[e.column] = [
            np.zeros(e.dim, np.float32) if v is None else np.asarray(v, np.float32)
            for v in frame[e.column]
        ]
        if e.presence_column in frame.columns:
            out[e.presence_column] = frame[e.presence_column].astype(float)
    for column in spec.numeric:
        out[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in spec.categorical:
        out[column.name] = frame[column.name].astype(str)
    return out.reset_index(drop=True)


def save_pyfunc(
    model: MultimodalClassifier,
    path: Path,
    example: pd.DataFrame | None = None,
    mlflow_model: Model | None = None,
) -> Path:
    """Write the classifier as an MLflow pyfunc model directory at ``path``.

    Args:
        model: the trained classifier.
        path: target directory (must not exist).
        example: feature rows to store as the input example (a few are kept).
        mlflow_model: the ``MLmodel`` to fill (a logged model's: its id, run and
            artifact location); a fresh one when None.
    """
    with tempfile.TemporaryDirectory() as tmp:
        classifier_dir = save_classifier(model, Path(tmp) / CLASSIFIER_ARTIFACT)
        input_example = None
        if example is not None and len(example):
            input_example = pyfunc_input(example.head(3), model)
            for column in input_example.columns:
                if input_example[column].dtype == object and isinstance(
                    input_example[column].iloc[0], np.ndarray
                ):
                    input_example[column] = [v.tolist() for v in input_example[column]]
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(CODE_FILE),
            model_config={DIGEST_KEY: classifier_digest(classifier_dir)},
            artifacts={CLASSIFIER_ARTIFACT: str(classifier_dir)},
            signature=model_signature(model),
            input_example=input_example,
            code_paths=[str(Path(__file__).resolve().parent)],
            mlflow_model=mlflow_model,
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"torch=={torch.__version__.split('+')[0]}",
                f"pandas=={pd.__version__}",
                f"numpy=={np.__version__}",
                "pydantic>=2.7",
            ],
        )
    return Path(path)


def load_pyfunc(path_or_uri: str | Path):
    """Load a pyfunc model from a local directory or an artifact URI."""
    return mlflow.pyfunc.load_model(str(path_or_uri))
