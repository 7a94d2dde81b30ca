"""The ``mmops`` command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from flows.settings import get_settings

app = typer.Typer(
    help="mmops: multimodal MLOps pipeline (Feast, GX, PyTorch, MLflow, Evidently, Prefect).",
    no_args_is_help=True,
    add_completion=False,
)

_START = typer.Option(None, help="Window start, ISO 8601 (UTC if no offset).")
_END = typer.Option(None, help="Window end (exclusive), ISO 8601; default: the current hour.")


def _exit_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def _prepare():
    """Read the settings, point Prefect and HF at them, return the runtime."""
    from flows.runtime import configure_environment, get_runtime

    # A flow run turns SIGTERM into a crash report, then re-sends it to the handler it
    # found. Python's default one kills the process on the spot, and the temporary
    # Prefect server it started outlives it; exiting instead stops that server.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    settings = get_settings()
    configure_environment(settings)
    return get_runtime(settings)


def _utc(value: str | None) -> datetime | None:
    if value is None:
        return None
    stamp = datetime.fromisoformat(value)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _echo(model) -> None:
    typer.echo(model.model_dump_json(indent=2))


_SET = typer.Option(
    None,
    "--set",
    help="Any training, gate or integrity knob as KEY=VALUE (repeatable): "
    "train.learning_rate=3e-4, gate.max_ece=0.15, integrity.block_on_trigger=false, or a "
    "bare field name (batch_size=64). Values are YAML.",
)


def _knobs(settings, explicit: dict[str, object], sets: list[str] | None):
    """The settings' TrainConfig, GateConfig and IntegrityConfig with CLI values on top;
    an unknown key or a bad value is an error naming it."""
    import yaml
    from pydantic import ValidationError

    from training.evaluate import GateConfig
    from training.integrity import IntegrityConfig
    from training.train import TrainConfig

    models = {"train": TrainConfig, "gate": GateConfig, "integrity": IntegrityConfig}
    values = {name: getattr(settings, name).model_dump(exclude_unset=True) for name in models}
    fields = {name: model.model_fields for name, model in models.items()}
    updates = [(k, v) for k, v in explicit.items() if v is not None]
    for item in sets or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set {item!r}: expected KEY=VALUE")
        updates.append((key.strip(), yaml.safe_load(raw)))
    for key, value in updates:
        section, _, field = key.rpartition(".")
        if not section:
            owners = [name for name, known in fields.items() if field in known]
            if len(owners) > 1:
                raise typer.BadParameter(
                    f"ambiguous knob {key!r}: say which, "
                    + " or ".join(f"{o}.{field}" for o in owners)
                )
            if not owners:
                known = sorted({f"{n}.{f}" for n, fs in fields.items() for f in fs})
                raise typer.BadParameter(f"unknown knob {key!r}; known: {', '.join(known)}")
            section = owners[0]
        if section not in fields or field not in fields[section]:
            raise typer.BadParameter(
                f"unknown knob {key!r}; known: {', '.join(sorted(fields.get(section, fields['train'])))}"
            )
        values[section][field] = value
    try:
        return tuple(model.model_validate(values[name]) for name, model in models.items())
    except ValidationError as error:
        raise typer.BadParameter(str(error)) from error


@app.command()
def demo(
    rows: int = typer.Option(12_000, help="Rows of demo history."),
    days: int = typer.Option(60, help="Days the history spans."),
    review_pool: int = typer.Option(2_500, help="Distinct reviews drawn from (0: all 4,988)."),
    image_pool: int = typer.Option(4_000, help="Distinct photos drawn from (0: all 10,000)."),
    production_days: int = typer.Option(10, help="Simulated production days."),
    rows_per_day: int = typer.Option(400, help="Orders per production day."),
    scenario: str = typer.Option(
        "image_camera",
        help="Drift or poisoning scenario switched on at onset (join with '+', e.g. "
        "image_camera+poison_segment; see features/drift_sim.py).",
    ),
    intensity: float = typer.Option(1.0, help="Drift intensity in [0, 1]."),
    onset_day: int = typer.Option(3, help="First drifted production day."),
    then: str = typer.Option(
        "text_domain", "--then", help="A second shift added from --then-day ('none': one shift)."
    ),
    then_day: int = typer.Option(7, help="First day of the second shift."),
    epochs: int = typer.Option(15, help="Training epochs (early stopping applies)."),
    performance_drop: float = typer.Option(0.03, help="Macro-F1 drop that matters."),
) -> None:
    """Run the end-to-end demo on embedded defaults (history, training, drift, recovery)."""
    runtime = _prepare()
    from flows.demo import DemoParams, check_demo_can_start, demo_flow

    params = DemoParams(
        rows=rows,
        days=days,
        review_pool=review_pool or None,
        image_pool=image_pool or None,
        production_days=production_days,
        rows_per_day=rows_per_day,
        scenario=scenario,
        intensity=intensity,
        onset_day=onset_day,
        then_scenario=None if then == "none" else then,
        then_day=then_day,
        epochs=epochs,
        performance_drop=performance_drop,
    )
    try:
        check_demo_can_start(runtime.settings, params)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--scenario/--then") from None
    except (RuntimeError, OSError) as error:
        message = error.strerror if isinstance(error, OSError) and error.strerror else error
        typer.echo(f"mmops demo: {message}", err=True)
        raise typer.Exit(1) from None
    demo_flow(params)


@app.command()
def ingest(
    start: str | None = _START,
    end: str | None = _END,
    window_hours: float = typer.Option(1.0, help="Window length when --start is not given."),
    raw_path: Path | None = typer.Option(None, help="Raw Parquet/CSV (default: settings)."),
    materialize_days: float | None = typer.Option(
        None, help="Load only the last N days into the online store (backfills)."
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help='Print only {"rows_in", "stored", "quarantined", "reasons"} '
        "(rows_in = stored + quarantined).",
    ),
) -> None:
    """Validate, embed and store the raw rows of one time window; bad rows are
    quarantined with their reasons, the rest proceed."""
    _prepare()
    from features.ingest import whole_batch_counts
    from features.validation import DataQualityError
    from flows.ingest import IngestParams, ingest_flow

    try:
        result = ingest_flow(
            IngestParams(
                start=_utc(start),
                end=_utc(end),
                window_hours=window_hours,
                raw_path=str(raw_path) if raw_path else None,
                materialize_days=materialize_days,
            )
        )
    except DataQualityError as error:
        counts = whole_batch_counts(error, getattr(error, "rows_in", error.result.n_rows))
        if as_json:
            typer.echo(json.dumps(counts, indent=2))
        else:
            typer.echo(error.result.summary(), err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result.counts(), indent=2))
    else:
        _echo(result)


@app.command()
def labels(
    path: Path = typer.Argument(..., help="CSV or Parquet of entity key, label [, timestamp]."),
) -> None:
    """Join labels that arrive after their rows (training reads them from the label
    store); labels without a timestamp go to the latest ingested row of their entity."""
    runtime = _prepare()
    import pandas as pd

    from features.ingest import ingest_labels

    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, encoding=runtime.config.csv_encoding)
    else:
        frame = pd.read_parquet(path)
    s = runtime.settings
    _echo(ingest_labels(frame, runtime.config, s.labels_dir, s.feast_dir))


@app.command()
def train(
    start: str | None = typer.Option(None, help="Oldest label used (default: all)."),
    end: str | None = typer.Option(None, help="Labels before this time (default: all)."),
    trigger: str = typer.Option("manual", help="scheduled, drift or manual (recorded)."),
    epochs: int | None = typer.Option(None, help="Maximum epochs (default: from data size)."),
    batch_size: int | None = typer.Option(None, help="Rows per step (default: from data size)."),
    patience: int | None = typer.Option(None, help="Early-stopping patience (default: adapted)."),
    learning_rate: float | None = typer.Option(None, help="AdamW learning rate."),
    max_ece: float | None = typer.Option(None, help="Gate: calibration bound."),
    sets: list[str] | None = _SET,
) -> None:
    """Train on the labelled window, register the version and run the promotion gate.

    Every knob defaults to the settings (MMOPS_TRAIN__*, MMOPS_GATE__*)."""
    runtime = _prepare()
    from flows.train import TrainParams, train_flow

    train_config, gate, integrity = _knobs(
        runtime.settings,
        {
            "train.epochs": epochs,
            "train.batch_size": batch_size,
            "train.patience": patience,
            "train.learning_rate": learning_rate,
            "gate.max_ece": max_ece,
        },
        sets,
    )
    _echo(
        train_flow(
            TrainParams(
                start=_utc(start),
                end=_utc(end),
                trigger=trigger,
                train=train_config,
                gate=gate,
                integrity=integrity,
            )
        )
    )


@app.command()
def score(
    start: str | None = _START,
    end: str | None = _END,
    window_hours: float = typer.Option(24.0, help="Window length when --start is not given."),
) -> None:
    """Score the window's ingested rows with the champion into the prediction log."""
    _prepare()
    from flows.score import ScoreParams, score_flow

    _echo(score_flow(ScoreParams(start=_utc(start), end=_utc(end), window_hours=window_hours)))


@app.command()
def monitor(
    start: str | None = _START,
    end: str | None = _END,
    window_hours: float = typer.Option(24.0, help="Window length when --start is not given."),
    email: bool = typer.Option(True, help="Send drift alert emails."),
    act: bool = typer.Option(True, help="Start retraining when the decision says so."),
) -> None:
    """Check a window of the prediction log for drift and act on the decision."""
    _prepare()
    from flows.monitor import MonitorParams, monitor_flow

    _echo(
        monitor_flow(
            MonitorParams(
                start=_utc(start),
                end=_utc(end),
                window_hours=window_hours,
                send_email=email,
                act=act,
            )
        )
    )


@app.command()
def backfill(
    start: str = typer.Option(..., help="Start of the first window, ISO 8601."),
    end: str = typer.Option(..., help="End of the last window (exclusive), ISO 8601."),
    window_hours: float = typer.Option(24.0, help="Length of each window."),
) -> None:
    """Assess many past windows of the prediction log in parallel (on Dask with
    MMOPS_TASK_RUNNER=dask); each window on its own, nothing written or sent."""
    _prepare()
    import json

    from flows.backfill import BackfillParams, monitor_backfill_flow

    results = monitor_backfill_flow(
        BackfillParams(start=_utc(start), end=_utc(end), window_hours=window_hours)
    )
    typer.echo(json.dumps([json.loads(a.model_dump_json()) for a in results], indent=2))


outbox_app = typer.Typer(help="Alert emails that could not be delivered.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
golden_app = typer.Typer(help="The golden holdout no training window holds.", no_args_is_help=True)
app.add_typer(golden_app, name="golden")


@golden_app.command("freeze")
def golden_freeze(
    since: str = typer.Option(
        ..., help="Freeze the golden entities' labels stamped from here (UTC)."
    ),
    reason: str = typer.Option(
        ..., help="Why (recorded in the manifest), e.g. the confirmed concept change."
    ),
    min_rows: int = typer.Option(200, help="Golden labels needed at least."),
) -> None:
    """Freeze a new golden version from recent labels, after a confirmed concept change.

    A change of what the labels mean and label poisoning look alike to the data: both make
    a retrained model disagree with the golden holdout frozen before. Only a person can
    tell them apart; this command records that decision, after which `mmops promote N`
    judges the refused version against the new golden labels."""
    if not reason.strip():
        raise typer.BadParameter("--reason must say why the golden labels are replaced")
    from features.golden import GoldenConfig, freeze_golden
    from features.store import read_labels

    runtime = _prepare()
    labels = read_labels(runtime.config, runtime.settings.labels_dir, _utc(since), None)
    config = GoldenConfig(min_rows=min_rows)
    manifest = freeze_golden(
        labels, runtime.config, runtime.settings.data_dir / "golden", config, reason=reason
    )
    if manifest is None:
        raise typer.BadParameter(
            f"fewer than {config.min_rows} golden labels since {since}: wait for more labels"
        )
    _echo(manifest)


@outbox_app.command("send")
def outbox_send() -> None:
    """Deliver the alert emails waiting in the outbox (each delivered one moves to sent/)."""
    runtime = _prepare()
    from monitoring.alerts import SmtpConfig, send_outbox

    s = runtime.settings
    result = send_outbox(SmtpConfig(**s.smtp.model_dump(), outbox_dir=s.outbox_dir))
    _echo(result)
    if result.failed:
        raise typer.Exit(1)


@outbox_app.command("list")
def outbox_list() -> None:
    """The alert emails waiting in the outbox."""
    runtime = _prepare()
    for path in sorted(runtime.settings.outbox_dir.glob("*.eml")):
        typer.echo(str(path))


def _registry():
    from flows.train import registered_model_name
    from training.registry import connect

    runtime = _prepare()
    return runtime, connect(runtime.settings.tracking_uri), registered_model_name(runtime)


@app.command()
def promote(
    version: str = typer.Argument(..., help="Registered version to put through the gate."),
    days: float = typer.Option(7.0, help="Holdout: labelled rows of the last N days."),
    max_ece: float | None = typer.Option(None, help="Gate: calibration bound."),
    sets: list[str] | None = _SET,
    force: bool = typer.Option(
        False, help="Make the version champion even if the gate rejects it (needs --reason)."
    ),
    reason: str | None = typer.Option(None, help="Why (required with --force; recorded)."),
) -> None:
    """Run the promotion gate for a version against the champion on a recent holdout.

    With --force --reason, a rejected version is made champion anyway and the override,
    its reason and the gate's verdict are recorded in the alias history."""
    if force and not (reason or "").strip():
        raise typer.BadParameter("--force needs --reason: the override is recorded")
    runtime, client, name = _registry()
    from features.store import get_training_frame, read_labels
    from training.registry import force_champion, promote_if_better

    _, gate, _ = _knobs(runtime.settings, {"gate.max_ece": max_ece}, sets)
    labels = read_labels(runtime.config, runtime.settings.labels_dir)
    if labels.empty:
        raise typer.BadParameter("no labels: ingest labelled data first")
    latest = labels[runtime.config.timestamp].max()
    recent = labels[labels[runtime.config.timestamp] >= latest - timedelta(days=days)]
    holdout = get_training_frame(runtime.store, runtime.config, recent)
    from features.golden import latest_golden

    found = latest_golden(runtime.settings.data_dir / "golden")
    golden = get_training_frame(runtime.store, runtime.config, found[1]) if found else None
    decision = promote_if_better(
        client,
        name,
        version,
        holdout,
        runtime.config.label,
        gate,
        lock=runtime.promotion_lock,
        golden=golden,
    )
    if force and not decision.promote and not decision.reason.endswith("already champion"):
        event = force_champion(
            client, name, version, reason, gate_reason=decision.reason, lock=runtime.promotion_lock
        )
        typer.echo(
            json.dumps({"decision": decision.model_dump(), "forced": event.model_dump()}, indent=2)
        )
        return
    _echo(decision)


@app.command()
def rollback(reason: str = typer.Option("manual rollback", help="Recorded with the move.")) -> None:
    """Move the champion alias back to the previous holder (recorded in the history)."""
    runtime, client, name = _registry()
    from training.registry import rollback_champion

    _echo(rollback_champion(client, name, reason=reason, lock=runtime.promotion_lock))


@app.command("simulate-drift")
def simulate_drift(
    scenario: str = typer.Argument(..., help="none, image_camera, text_domain, ..."),
    intensity: float = typer.Option(1.0, help="Drift intensity in [0, 1]."),
    rows: int = typer.Option(400, help="Rows to generate."),
    start: str = typer.Option(..., help="Window start, ISO 8601."),
    hours: float = typer.Option(24.0, help="Window length."),
    out: Path = typer.Option(..., help="Parquet file to write the raw rows to."),
    seed: int = typer.Option(0),
    first_id: int = typer.Option(10_000_000, help="First entity id of the generated rows."),
) -> None:
    """Generate raw demo rows for one window under a named drift scenario."""
    from features.demo_data import DemoSources
    from features.drift_sim import simulate_window

    begin = _utc(start)
    raw, _ = simulate_window(
        DemoSources.load(),
        scenario,
        intensity,
        rows,
        begin,
        begin + timedelta(hours=hours),
        seed=seed,
        first_id=first_id,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    raw.to_parquet(out, index=False)
    typer.echo(f"wrote {len(raw)} rows ({scenario}, intensity {intensity}) to {out}")


@app.command()
def status() -> None:
    """Champion and challenger, the latest drift decisions and the next scheduled runs."""
    runtime, client, name = _registry()
    from training.registry import alias_history, current_champion

    settings = runtime.settings
    out: dict[str, object] = {"registered_model": name}
    try:
        out["champion"] = current_champion(client, name)
        try:
            out["challenger"] = client.get_model_version_by_alias(name, "challenger").version
        except Exception:  # no challenger: the alias is not set
            out["challenger"] = None
        history = alias_history(client, name)
        out["last_alias_move"] = history[-1].model_dump(mode="json") if history else None
    except Exception as error:  # no model registered yet
        out["champion"] = None
        out["registry"] = str(error).splitlines()[0]
    state = settings.state_dir / "policy_state.json"
    if state.exists():
        records = json.loads(state.read_text()).get("history", [])
        out["last_decision"] = records[-1] if records else None
        out["latest_windows"] = [
            {k: r.get(k) for k in ("window_start", "model_version", "action", "drifted")}
            for r in records[-5:]
        ]
    else:
        out["last_decision"] = None
        out["latest_windows"] = []
    out["next_runs"] = _next_runs()
    typer.echo(json.dumps(out, indent=2, default=str))


def _next_runs() -> object:
    """Next scheduled flow runs from the Prefect server, or the schedules in prefect.yaml."""
    if os.environ.get("PREFECT_API_URL"):
        from flows.deployments import next_scheduled_runs

        return next_scheduled_runs()
    from flows.deployments import declared_schedules

    return {"server": "none (embedded mode)", "declared schedules": declared_schedules()}


@app.command()
def deploy() -> None:
    """`prefect deploy --all` against PREFECT_API_URL, keeping paused schedules paused."""
    if not os.environ.get("PREFECT_API_URL"):
        raise typer.BadParameter("set PREFECT_API_URL to the Prefect server to deploy to")
    from flows.deployments import deploy_all

    repaused = deploy_all()
    typer.echo(f"deployed prefect.yaml; {repaused} paused schedule(s) kept paused")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def feast(ctx: typer.Context) -> None:
    """Run the Feast CLI in the feature repository with this installation's settings
    (e.g. `mmops feast plan`, `mmops feast apply`, `mmops feast materialize ...`)."""
    runtime = _prepare()
    env = dict(
        os.environ,
        MMOPS_FEAST_PROJECT=runtime.config.name,
        MMOPS_DATASET_CONFIG=str(runtime.settings.dataset_config),
    )
    repo = Path(__file__).resolve().parent.parent / "features" / "repo"
    feast_bin = Path(sys.executable).parent / "feast"
    raise typer.Exit(subprocess.call([str(feast_bin), *ctx.args], cwd=repo, env=env))


if __name__ == "__main__":  # pragma: no cover
    app()
