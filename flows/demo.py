"""The end-to-end demo on embedded defaults (the README's main command).

Ingest the demo history, train and register the first champion, then simulate production
one scheduled cycle per day with a named drift scenario switched on at day ``onset_day``:
drift is detected, an alert email is received by a local SMTP server, retraining is
triggered, the new version is promoted only if the gate says it is better, and accuracy
recovers. Prints a summary table and saves a plot (also logged to MLflow).
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, ConfigDict, Field

from features.demo_data import DEMO_START, DemoSources
from features.drift_sim import POISONING, SCENARIOS, check_scenario, simulate_window
from features.store import read_labels
from flows.cycle import CycleParams, cycle_flow
from flows.ingest import IngestParams, ingest_flow
from flows.mailbox import Mailbox, check_can_listen, local_mailbox
from flows.monitor import MonitorParams
from flows.runtime import Runtime, ensure_demo_data, get_runtime
from flows.settings import Settings
from flows.train import TrainParams, registered_model_name, train_flow
from monitoring.policy import PolicyConfig
from monitoring.reports import plot_drift_history
from monitoring.scoring import read_prediction_log
from training.registry import (
    alias_history,
    connect,
    current_champion,
    ensure_experiment,
)

# State a demo run starts without (the embedding cache and the demo history are kept).
DEMO_LOCK = "demo.lock"  # held while a demo runs; not state, never reset
_DEMO_STATE = (
    "feast",
    "labels",
    "predictions",
    "reports",
    "state",
    "quarantine",
    "outbox",
    "mailbox",
    "models",
    "gx",
    "mlartifacts",
    "mlflow.db",
)


class DemoParams(BaseModel):
    """Parameters of the demo."""

    model_config = ConfigDict(frozen=True)

    rows: int = Field(default=12_000, ge=1000, description="Rows of demo history.")
    days: int = Field(default=60, ge=14, description="Days the history spans.")
    review_pool: int | None = Field(
        default=2_500,
        ge=100,
        description="Distinct reviews the demo draws from (None: all 4,988); fewer texts "
        "to embed keeps the demo within minutes.",
    )
    image_pool: int | None = Field(
        default=4_000, ge=100, description="Distinct photos drawn from (None: all 10,000)."
    )
    production_days: int = Field(default=10, ge=3, description="Simulated production days.")
    rows_per_day: int = Field(default=400, ge=50, description="Orders per production day.")
    scenario: str = Field(
        default="image_camera",
        description=f"One of {', '.join(SCENARIOS + POISONING)}, or several joined by '+' "
        "(image_camera+poison_segment: a drift that triggers a retrain on poisoned labels).",
    )
    intensity: float = Field(default=1.0, ge=0.0, le=1.0)
    onset_day: int = Field(default=3, ge=0, description="First drifted production day.")
    then_scenario: str | None = Field(
        default="text_domain",
        description="A second, different shift added on top of the first from then_day on "
        "(None: one shift only).",
    )
    then_day: int = Field(default=7, ge=1, description="First day of the second shift.")
    epochs: int = Field(default=15, ge=1, description="Training epochs (early stopping applies).")
    performance_drop: float = Field(
        default=0.03, gt=0, description="Drop of macro-F1 below the champion's that matters."
    )


@flow(name="demo", flow_run_name="demo: {params.scenario} from day {params.onset_day}")
def demo_flow(params: DemoParams) -> pd.DataFrame:
    """Run the whole story and return the per-day summary table."""
    _check_scenarios(params)
    runtime = get_runtime()
    settings = runtime.settings
    # Another demo in the same folder, or holding the mailbox's port, fails this one now:
    # before the state that run is writing is reset, not minutes into ingest and training.
    with _claim_machine(settings):
        _reset_state(settings.data_dir)
        with local_mailbox(
            settings.smtp.host, settings.smtp.port, settings.data_dir / "mailbox"
        ) as box:
            return _run_story(runtime, params, box)


def check_demo_can_start(settings: Settings, params: DemoParams) -> None:
    """What the demo flow checks first, without starting it (the CLI's early, one-line
    answer): known scenarios, a data directory no other demo holds, a free mailbox port.

    Raises:
        ValueError: an unknown scenario.
        RuntimeError: another demo holds the data directory.
        OSError: the mailbox's port is taken.
    """
    _check_scenarios(params)
    with _claim_machine(settings):
        pass


@contextmanager
def _claim_machine(settings: Settings) -> Iterator[None]:
    """Hold the data directory for this demo, once its mailbox port is known to be free."""
    with hold_demo_lock(settings.data_dir):
        check_can_listen(settings.smtp.host, settings.smtp.port)
        yield


def _check_scenarios(params: DemoParams) -> None:
    for name in (params.scenario, params.then_scenario):
        if name is not None:
            check_scenario(name)


def _run_story(runtime: Runtime, params: DemoParams, box: Mailbox) -> pd.DataFrame:
    logger = get_run_logger()
    settings = runtime.settings
    history_path = ensure_demo_data(
        settings,
        n_rows=params.rows,
        days=params.days,
        review_pool=params.review_pool,
        image_pool=params.image_pool,
    )
    history_end = DEMO_START + timedelta(days=params.days)

    logger.info("1/4 ingesting %d history rows (embeddings are cached across runs)", params.rows)
    ingest_flow(
        IngestParams(
            start=DEMO_START, end=history_end, raw_path=str(history_path), materialize_days=2
        )
    )

    logger.info("2/4 training the first model")
    train = TrainParams(train={"epochs": params.epochs, "show_progress": False})
    first = train_flow(train)
    logger.info("v%s: %s", first.version, first.reason)

    logger.info(
        "3/4 simulating %d production days, %s from day %d",
        params.production_days,
        params.scenario,
        params.onset_day,
    )
    production = _write_production(runtime, params, history_end)
    rows = []
    for day in range(params.production_days):
        start = history_end + timedelta(days=day)
        outcome = cycle_flow(
            CycleParams(
                start=start,
                end=start + timedelta(days=1),
                raw_path=str(production),
                monitor=MonitorParams(
                    retrain_lookback_days=params.days + params.production_days,
                    policy=PolicyConfig(performance_drop=params.performance_drop),
                ),
            )
        )
        m = outcome.monitor
        rows.append(
            {
                "day": day,
                "date": f"{start:%Y-%m-%d}",
                "scenario": _scenario_of(params, day),
                "model": f"v{m.model_version}",
                "drifted": ",".join(m.drifted) or "-",
                "est. acc": round(m.estimated_accuracy, 3),
                "action": m.action,
                "email": _email_cell(m.action, m.email),
                "retrain": _retrain_cell(m.retrain_version, m.retrain_promoted),
                "_p": m.p_values,
                "_start": start,
            }
        )
        logger.info("day %d: v%s drifted=%s action=%s", day, m.model_version, m.drifted, m.action)
    received = box.count()

    logger.info("4/4 measuring realized accuracy and plotting")
    table = _summary(runtime, rows, params, history_end)
    plot = _plot(runtime, table, params, history_end)
    client = connect(settings.tracking_uri)
    name = registered_model_name(runtime)
    moves = alias_history(client, name)
    _log_demo_run(runtime, table, plot, params)
    shown = table.drop(columns=[c for c in table.columns if c.startswith("_")])
    print("\n" + shown.to_string(index=False))
    print(
        f"\n{_story(table, params)}\n"
        f"alert emails received by the local SMTP server: {received} "
        f"(in {settings.data_dir / 'mailbox'}); champion now v{current_champion(client, name)}; "
        f"alias moves: {[f'{e.action} v{e.version}' for e in moves]}\n"
        f"plot: {plot}\nMLflow UI: .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri}"
    )
    create_table_artifact(key="demo-summary", table=shown.to_dict("records"))
    create_markdown_artifact(key="demo-plot", markdown=f"Drift and accuracy plot: `{plot}`")
    return table


def _retrain_cell(version: str | None, promoted: bool | None) -> str:
    if version is None:
        return "-"
    if version == "":
        return "blocked (integrity)"
    return f"v{version} {'promoted' if promoted else 'rejected'}"


def _email_cell(action: str, email: str) -> str:
    if email.startswith("sent"):
        return "sent"
    if email.startswith("failed"):
        return "in outbox"
    if action == "none" or email == "disabled":
        return "-"
    return "deduplicated"


def _scenario_of(params: DemoParams, day: int) -> str:
    """The scenario in force on production day ``day``."""
    if day < params.onset_day:
        return "none"
    if params.then_scenario and day >= params.then_day:
        return f"{params.scenario}+{params.then_scenario}"
    return params.scenario


def _first_day(table: pd.DataFrame, modality_days: pd.Series, from_day: int) -> str:
    hit = table.loc[(table["day"] >= from_day) & modality_days, "day"]
    return str(int(hit.min())) if len(hit) else "never"


def _story(table: pd.DataFrame, params: DemoParams) -> str:
    """What the run shows, one line per shift."""
    drifted = table["drifted"].fillna("")
    lines = [
        f"{params.scenario} from day {params.onset_day}: first detected on day "
        f"{_first_day(table, drifted != '-', params.onset_day)}"
    ]
    promoted = table[table["retrain"].str.contains("promoted")]
    if len(promoted):
        day = int(promoted["day"].min())
        first = params.scenario.split("_")[0]
        after = table[
            (table["day"] > day)
            & (table["day"] < (params.then_day if params.then_scenario else 10**6))
        ]
        quiet = int((~after["drifted"].str.contains(first)).sum())
        lines.append(
            f"retrained on day {day} ({promoted['retrain'].iloc[0]}); {first} drift quiet on "
            f"{quiet} of the {len(after)} days after it"
        )
    if params.then_scenario:
        second = params.then_scenario.split("_")[0]
        lines.append(
            f"{params.then_scenario} from day {params.then_day}: first detected on day "
            f"{_first_day(table, drifted.str.contains(second), params.then_day)}"
        )
    return "; ".join(lines)


@contextmanager
def hold_demo_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory for one demo: a second one there would reset the state
    the first is writing.

    Raises:
        RuntimeError: another demo holds it, naming the folder and the way out.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DEMO_LOCK
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"another demo is running in {data_dir} (it holds {path}): wait for it, or "
                "set MMOPS_DATA_DIR to another folder (and MMOPS_SMTP__PORT to a free port)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _reset_state(data_dir: Path) -> None:
    for name in _DEMO_STATE:
        path = data_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _write_production(runtime: Runtime, params: DemoParams, history_end) -> Path:
    """Raw rows of every production day, drifted from ``onset_day`` on (labels included:
    the monitor only reads them a day late)."""
    sources = DemoSources.load().subset(
        params.review_pool, params.image_pool, runtime.settings.seed
    )
    frames = []
    next_id = params.rows
    for day in range(params.production_days):
        start = history_end + timedelta(days=day)
        scenario = _scenario_of(params, day)
        raw, _ = simulate_window(
            sources,
            scenario,
            params.intensity,
            params.rows_per_day,
            start,
            start + timedelta(days=1),
            seed=runtime.settings.seed + 1000 + day,
            first_id=next_id,
        )
        next_id += len(raw)
        frames.append(raw)
    path = runtime.settings.demo_dir / "production.parquet"
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
    return path


def _summary(runtime: Runtime, rows: list[dict], params: DemoParams, history_end) -> pd.DataFrame:
    """Add each day's realized accuracy (all labels have arrived by the end of the demo)."""
    config = runtime.config
    end = history_end + timedelta(days=params.production_days)
    log = read_prediction_log(config, runtime.settings.prediction_log_dir, history_end, end)
    labels = read_labels(config, runtime.settings.labels_dir, history_end, end)
    joined = log.merge(labels, on=[config.entity_key, config.timestamp], how="inner")
    day = (joined[config.timestamp] - pd.Timestamp(history_end)).dt.total_seconds() // 86400
    realized = (joined["prediction"] == joined[config.label]).groupby(day.astype(int)).mean()
    table = pd.DataFrame(rows)
    table.insert(6, "real. acc", table["day"].map(realized).round(3))
    return table


def _plot(runtime: Runtime, table: pd.DataFrame, params: DemoParams, history_end) -> Path:
    records = pd.DataFrame(
        {
            "window_start": table["_start"],
            **{
                f"p_{k}": table["_p"].map(lambda p, k=k: p.get(k, np.nan))
                for k in sorted({k for p in table["_p"] for k in p})
            },
            "estimated_accuracy": table["est. acc"],
            "realized_accuracy": table["real. acc"],
            "action": table["action"],
        }
    )
    retrains = table.loc[table["retrain"].str.contains("promoted"), "_start"].tolist()
    onset = [history_end + timedelta(days=params.onset_day)]
    if params.then_scenario:
        onset.append(history_end + timedelta(days=params.then_day))
    path = runtime.settings.reports_dir / "demo_drift_and_accuracy.png"
    return plot_drift_history(
        records,
        path,
        onset=onset,
        retrains=retrains,
        title=f"Demo: {params.scenario} (intensity {params.intensity}) from day {params.onset_day}"
        + (f", {params.then_scenario} from day {params.then_day}" if params.then_scenario else ""),
    )


def _log_demo_run(runtime: Runtime, table: pd.DataFrame, plot: Path, params: DemoParams) -> None:
    client = connect(runtime.settings.tracking_uri)
    experiment = ensure_experiment(client, f"{runtime.config.name}-demo", runtime.artifact_location)
    mlflow.set_tracking_uri(runtime.settings.tracking_uri)
    with mlflow.start_run(experiment_id=experiment, run_name=f"demo {params.scenario}"):
        mlflow.log_params(params.model_dump())
        mlflow.log_artifact(str(plot))
        shown = table.drop(columns=[c for c in table.columns if c.startswith("_")])
        mlflow.log_text(shown.to_markdown(index=False), "demo_summary.md")
        for _, row in table.iterrows():
            if not np.isnan(row["real. acc"]):
                mlflow.log_metric("realized_accuracy", row["real. acc"], step=int(row["day"]))
            mlflow.log_metric("estimated_accuracy", row["est. acc"], step=int(row["day"]))
