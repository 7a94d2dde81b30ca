"""Batch scoring into the prediction log, and the late join of labels.

The prediction log is partitioned Parquet under the data directory: one file per UTC day
of the scored rows' event timestamps, one row per (entity, timestamp). Scoring a window
again replaces its rows instead of duplicating them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.errors import EmptyWindowError
from features.schema import DatasetConfig
from features.store import RESCORE, merge_day_files, read_day_files

PREDICTION = "prediction"
MODEL_VERSION = "model_version"
SCORED_AT = "scored_at"


def proba_columns(config: DatasetConfig) -> list[str]:
    return [f"proba_{c}" for c in config.classes]


def feature_columns(config: DatasetConfig) -> list[str]:
    """The model-input columns a prediction-log row keeps (what the model saw)."""
    columns = list(config.tabular_columns)  # monitor_only kept too: drift is watched there
    for column in config.embedded_columns:
        columns += [config.embedding_column(column), config.presence_column(column)]
    return columns


def score_frame(
    model,
    features: pd.DataFrame,
    config: DatasetConfig,
    model_version: str,
    scored_at: datetime | None = None,
) -> pd.DataFrame:
    """Score a feature frame into prediction-log rows.

    Args:
        model: anything with ``predict(frame) -> DataFrame`` of ``proba_<class>`` columns
            (the champion's MLflow pyfunc model, or the classifier's ``predict_frame``).
        features: point-in-time features of the rows (entity key, timestamp, inputs).
        model_version: the registered version that scored them.

    Returns:
        entity, timestamp, model version, scored-at, the features used, class
        probabilities and the predicted class.

    Raises:
        ValueError: the model's output lacks a class probability or does not sum to 1.
    """
    if features.empty:
        raise EmptyWindowError("nothing to score: the feature frame is empty")
    outputs = model.predict(features) if hasattr(model, "predict") else model(features)
    outputs = pd.DataFrame(outputs).reset_index(drop=True)
    missing = [c for c in proba_columns(config) if c not in outputs.columns]
    if missing:
        raise ValueError(f"model output lacks probability columns {missing}")
    probas = outputs[proba_columns(config)].to_numpy(dtype=float)
    if not np.allclose(probas.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("model probabilities do not sum to 1 per row")
    log = features[
        [config.entity_key, config.timestamp]
        + [c for c in feature_columns(config) if c in features.columns]
    ].reset_index(drop=True)
    log.insert(2, MODEL_VERSION, str(model_version))
    log.insert(3, SCORED_AT, pd.Timestamp(scored_at or datetime.now(UTC)))
    for column in proba_columns(config):
        log[column] = outputs[column].to_numpy(dtype=float)
    log[PREDICTION] = np.asarray(config.classes, dtype=object)[probas.argmax(axis=1)]
    return log


def write_prediction_log(log: pd.DataFrame, config: DatasetConfig, directory: Path) -> int:
    """Merge scored rows into the prediction log (one row per entity and timestamp).

    Raises:
        CorruptStateError: a day file was unreadable (moved aside; re-score the day).
    """
    if log.empty:
        return 0
    table = pa.Table.from_pandas(_arrow_ready(log), preserve_index=False)
    return merge_day_files(
        table, Path(directory), config.entity_key, config.timestamp, recovery=RESCORE
    )


def _arrow_ready(log: pd.DataFrame) -> pd.DataFrame:
    frame = log.copy()
    for column in frame.columns:
        if column.endswith("_emb"):
            frame[column] = [np.asarray(v, dtype=np.float32).tolist() for v in frame[column]]
    return frame


def read_prediction_log(
    config: DatasetConfig,
    directory: Path,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pd.DataFrame:
    """Prediction-log rows stamped in ``[start, end)``, in time order.

    Raises:
        CorruptStateError: a day file is unreadable; it was moved aside and the error
            says which day to re-score (``mmops score --start ... --end ...``).
    """
    frame = read_day_files(
        directory, config.entity_key, config.timestamp, start, end, recovery=RESCORE
    )
    if frame.empty:
        return pd.DataFrame()
    for column in frame.columns:
        if column.endswith("_emb"):
            frame[column] = [np.asarray(v, dtype=np.float32) for v in frame[column]]
    return frame


def join_labels(log: pd.DataFrame, labels: pd.DataFrame, config: DatasetConfig) -> pd.DataFrame:
    """Attach labels that arrived later, by entity and timestamp (rows without one: NaN)."""
    keys = [config.entity_key, config.timestamp]
    if log.empty:
        return log
    right = labels[[*keys, config.label]].drop_duplicates(keys, keep="last")
    merged = log.drop(columns=[config.label], errors="ignore").merge(right, on=keys, how="left")
    return merged
