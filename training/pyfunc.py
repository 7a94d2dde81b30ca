"""The classifier as an MLflow pyfunc model: features in, calibrated ``proba_<class>`` out."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array

from training.model import (
    MultimodalClassifier,
    load_classifier,
    probability_columns,
    save_classifier,
)

CLASSIFIER_ARTIFACT = "classifier"


class FusionPyfuncModel(mlflow.pyfunc.PythonModel):
    """Scores a feature frame (embeddings as lists or arrays, tabular columns) into
    calibrated class probabilities, one ``proba_<class>`` column per class."""

    def load_context(self, context) -> None:
        self._model = load_classifier(Path(context.artifacts[CLASSIFIER_ARTIFACT]))

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
    model: MultimodalClassifier, path: Path, example: pd.DataFrame | None = None
) -> Path:
    """Write the classifier as an MLflow pyfunc model directory at ``path``.

    Args:
        model: the trained classifier.
        path: target directory (must not exist).
        example: feature rows to store as the input example (a few are kept).
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
            python_model=FusionPyfuncModel(),
            artifacts={CLASSIFIER_ARTIFACT: str(classifier_dir)},
            signature=model_signature(model),
            input_example=input_example,
            code_paths=[str(Path(__file__).resolve().parent)],
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
