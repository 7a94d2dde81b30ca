"""The drift history: one row per window, upserted, with the realized performance of a
window filled in when its labels arrive (in a later window's run), and its plot.

The history is a cache of what the monitoring runs in MLflow hold: a corrupt file is
moved aside and rebuilt from those runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.state_io import atomic_write_frame, read_state
from monitoring.assessment import WindowAssessment, as_utc

if TYPE_CHECKING:
    from mlflow import MlflowClient

_P_PREFIX = "p_"
_P_FLOOR = 1e-16  # p-values below this are plotted at it (KS underflows to 0)
REALIZED_COLUMNS = ("realized_accuracy", "realized_macro_f1", "realized_n", "realized_version")


def drift_history_row(assessment: WindowAssessment) -> dict[str, Any]:
    """One record of the drift history (see :func:`plot_drift_history`).

    Keys: ``window_start``, ``model_version``, ``p_<modality>`` per tested modality
    (adjusted p-value), ``threshold`` (the per-modality level, ``alpha / m``),
    ``estimated_accuracy`` with ``estimated_accuracy_low`` / ``_high``,
    ``estimate_trusted``, ``any_drift``,
    ``drifted`` and ``action``. The window's realized performance is not known yet (its
    labels arrive later): :func:`upsert_history` fills it in from a later window.
    """
    drift, estimate = assessment.drift, assessment.estimate
    row: dict[str, Any] = {
        "window_start": pd.Timestamp(assessment.window_start),
        "model_version": assessment.champion.version,
    }
    thresholds = [m.threshold for m in drift.modalities.values()]
    row["threshold"] = min(thresholds) if thresholds else drift.alpha
    for name, result in drift.modalities.items():
        row[f"{_P_PREFIX}{name}"] = result.p_value
    row["estimated_accuracy"] = estimate.expected_accuracy
    row["estimated_accuracy_low"], row["estimated_accuracy_high"] = estimate.accuracy_band
    row["estimate_trusted"] = estimate.trusted
    row["any_drift"] = drift.any_drift
    row["drifted"] = ",".join(drift.drifted_modalities)
    row["action"] = assessment.decision.action
    return row


def upsert_history(history: pd.DataFrame | None, assessment: WindowAssessment) -> pd.DataFrame:
    """The history with this window's row replaced (or added) and the labelled window's
    realized performance written into that window's own row.

    A window's realized columns survive the replacement of its row: they came from a
    later window's labels.
    """
    frame = history if history is not None and not history.empty else pd.DataFrame()
    rows = frame.to_dict("records") if not frame.empty else []
    by_start = {as_utc(r["window_start"]): r for r in rows}
    new = drift_history_row(assessment)
    key = as_utc(new["window_start"])
    old = by_start.get(key, {})
    for column in REALIZED_COLUMNS:
        value = old.get(column)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            new[column] = value
    by_start[key] = new
    labelled = assessment.main_realized
    if labelled is not None:
        target = as_utc(labelled.window_start)
        row = dict(by_start.get(target, {"window_start": target}))
        row.update(
            realized_accuracy=labelled.performance.accuracy,
            realized_macro_f1=labelled.performance.macro_f1,
            realized_n=labelled.performance.n_rows,
            realized_version=labelled.model_version,
        )
        by_start[target] = row
    return history_frame(list(by_start.values()))


def load_history(path: Path, rebuild=None) -> pd.DataFrame:
    """The drift history at ``path`` (empty when missing); a corrupt file is moved aside
    and rebuilt with ``rebuild`` (e.g. :func:`history_from_runs`)."""
    return read_state(
        path,
        pd.read_parquet,
        pd.DataFrame,
        rebuild=rebuild,
        recovery="Delete it to start an empty history, or rebuild it from the MLflow "
        "monitoring runs (mmops monitor rebuilds it when the tracking server is reachable).",
    )


def save_history(history: pd.DataFrame, path: Path) -> Path:
    """Write the history atomically."""
    return atomic_write_frame(history, path)


def history_from_runs(client: MlflowClient, experiment_name: str) -> pd.DataFrame:
    """Rebuild the drift history from the monitoring runs in MLflow (its source of truth)."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return pd.DataFrame()
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`mmops.kind` = 'monitoring_window'",
        max_results=10_000,
    )
    by_start: dict[pd.Timestamp, dict[str, Any]] = {}
    labelled: list[tuple[pd.Timestamp, dict[str, Any]]] = []
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):  # the latest run wins
        tags, metrics = run.data.tags, run.data.metrics
        if "mmops.window_start" not in tags:
            continue
        start = as_utc(tags["mmops.window_start"])
        row: dict[str, Any] = {
            "window_start": start,
            "model_version": tags.get("model_version", ""),
            "action": tags.get("decision.action", "none"),
            "drifted": ""
            if tags.get("drifted_modalities") == "none"
            else tags.get("drifted_modalities", ""),
            "any_drift": bool(metrics.get("drift.any", 0.0)),
            "estimated_accuracy": metrics.get("estimate.accuracy", math.nan),
            "estimated_accuracy_low": metrics.get("estimate.accuracy_low", math.nan),
            "estimated_accuracy_high": metrics.get("estimate.accuracy_high", math.nan),
            "estimate_trusted": bool(metrics.get("estimate.trusted", 1.0)),
        }
        thresholds = []
        for key, value in metrics.items():
            if key.startswith("drift.") and key.endswith(".p_value") and key.count(".") == 2:
                row[f"{_P_PREFIX}{key.split('.')[1]}"] = value
            if key.startswith("drift.") and key.endswith(".threshold"):
                thresholds.append(value)
        row["threshold"] = min(thresholds) if thresholds else math.nan
        by_start.setdefault(start, {}).update(row)
        if "labelled.window_start" in tags and "labelled.accuracy" in metrics:
            labelled.append(
                (
                    as_utc(tags["labelled.window_start"]),
                    {
                        "realized_accuracy": metrics["labelled.accuracy"],
                        "realized_macro_f1": metrics.get("labelled.macro_f1", math.nan),
                        "realized_n": metrics.get("labelled.n_rows", math.nan),
                        "realized_version": tags.get("labelled.model_version", ""),
                    },
                )
            )
    for start, values in labelled:
        by_start.setdefault(start, {"window_start": start}).update(values)
    return history_frame(list(by_start.values()))


def plot_drift_history(
    records: pd.DataFrame,
    path: str | Path,
    onset: datetime | Sequence[datetime] | None = None,
    retrains: Iterable[datetime] = (),
    threshold: float | None = None,
    title: str = "Drift and performance over windows",
) -> Path:
    """Plot per-modality -log10(p) against the threshold, and estimated vs realized accuracy.

    Args:
        records: one row per window: ``window_start``, one ``p_<modality>`` column per
            modality, ``estimated_accuracy``, ``realized_accuracy`` (NaN when unknown),
            ``action``; optional ``threshold``, ``estimated_accuracy_low`` / ``_high``.
            :func:`drift_history_row` builds them.
        path: PNG file to write (its folder is created).
        onset: when the drift started (one time, or one per shift), drawn as dashed lines.
        retrains: retraining times, drawn as solid lines (windows whose ``action`` is
            ``retrain`` are marked too).
        threshold: the p-value level when ``records`` has no ``threshold`` column.
        title: figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: ``records`` lacks ``window_start`` or has no rows.
    """
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    if "window_start" not in records or records.empty:
        raise ValueError("records need rows and a window_start column")
    frame = records.sort_values("window_start").reset_index(drop=True)
    x = pd.to_datetime(frame["window_start"], utc=True)
    figure = Figure(figsize=(11, 7), constrained_layout=True)
    top, bottom = figure.subplots(2, 1, sharex=True)

    modalities = [c for c in frame.columns if c.startswith(_P_PREFIX)]
    for column in modalities:
        p = pd.to_numeric(frame[column], errors="coerce").clip(lower=_P_FLOOR)
        top.plot(x, -np.log10(p), marker="o", markersize=3, label=column[len(_P_PREFIX) :])
    if "threshold" in frame:
        level = -np.log10(pd.to_numeric(frame["threshold"], errors="coerce").clip(lower=_P_FLOOR))
        top.step(x, level, where="mid", color="black", linestyle=":", label="threshold")
    elif threshold is not None:
        top.axhline(-math.log10(threshold), color="black", linestyle=":", label="threshold")
    if "action" in frame:
        alerts = frame["action"] == "alert"
        if alerts.any():
            top.scatter(
                x[alerts],
                np.zeros(int(alerts.sum())),
                marker="^",
                color="orange",
                zorder=3,
                label="alert",
            )
    top.set_ylabel("-log10 adjusted p-value")
    top.set_title(title)

    if "estimated_accuracy" in frame:
        estimated = pd.to_numeric(frame["estimated_accuracy"], errors="coerce")
        bottom.plot(x, estimated, marker="o", markersize=3, label="estimated accuracy")
        if {"estimated_accuracy_low", "estimated_accuracy_high"} <= set(frame.columns):
            bottom.fill_between(
                x,
                pd.to_numeric(frame["estimated_accuracy_low"], errors="coerce"),
                pd.to_numeric(frame["estimated_accuracy_high"], errors="coerce"),
                alpha=0.2,
                label="estimate band",
            )
        if "estimate_trusted" in frame:
            untrusted = ~frame["estimate_trusted"].fillna(True).astype(bool).to_numpy()
            if untrusted.any():
                bottom.scatter(
                    x[untrusted],
                    estimated[untrusted],
                    marker="x",
                    s=60,
                    color="black",
                    zorder=4,
                    label="estimate untrusted (shift too large)",
                )
    if "realized_accuracy" in frame:
        realized = pd.to_numeric(frame["realized_accuracy"], errors="coerce")
        known = realized.notna()
        if known.any():
            bottom.plot(
                x[known],
                realized[known],
                marker="s",
                markersize=4,
                linestyle="-",
                label="realized accuracy",
            )
    bottom.set_ylabel("accuracy")
    bottom.set_xlabel("window start")

    retrain_times = [pd.Timestamp(t) for t in retrains]
    if "action" in frame:
        retrain_times += list(x[frame["action"] == "retrain"])
    for axis in (top, bottom):
        onsets = [] if onset is None else [onset] if isinstance(onset, datetime) else onset
        for i, moment in enumerate(onsets):
            axis.axvline(
                as_utc(moment), color="red", linestyle="--", label="drift onset" if i == 0 else None
            )
        for i, moment in enumerate(sorted(set(as_utc(t) for t in retrain_times))):
            axis.axvline(
                moment, color="green", linestyle="-", alpha=0.7, label="retrain" if i == 0 else None
            )
        axis.legend(loc="best", fontsize="small")
        axis.grid(alpha=0.3)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def history_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Records from :func:`drift_history_row` as a frame sorted by window start."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    return frame.sort_values("window_start").reset_index(drop=True)


__all__ = [
    "REALIZED_COLUMNS",
    "drift_history_row",
    "history_frame",
    "history_from_runs",
    "load_history",
    "plot_drift_history",
    "save_history",
    "upsert_history",
]
