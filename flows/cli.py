"""The ``mmops`` command line."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer

from flows.settings import get_settings

app = typer.Typer(
    help="mmops: multimodal MLOps pipeline (Feast, GX, PyTorch, MLflow, Evidently, Prefect).",
    no_args_is_help=True,
    add_completion=False,
)


def _prepare():
    from flows.runtime import build_runtime, configure_environment

    settings = get_settings()
    configure_environment(settings)
    return build_runtime(settings)


@app.command()
def ingest(
    start: str = typer.Option(..., help="Window start, ISO 8601 (UTC if no offset)."),
    end: str = typer.Option(..., help="Window end (exclusive), ISO 8601."),
    raw_path: Path | None = typer.Option(None, help="Raw Parquet/CSV (default: settings)."),
) -> None:
    """Validate, embed and store the raw rows of one time window."""
    runtime = _prepare()
    from flows.ingest import IngestParams, ingest_flow

    result = ingest_flow(
        IngestParams(
            start=_utc(start), end=_utc(end), raw_path=str(raw_path) if raw_path else None
        ),
        runtime=runtime,
    )
    typer.echo(result.model_dump_json(indent=2))


def _utc(value: str) -> datetime:
    stamp = datetime.fromisoformat(value)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def feast(ctx: typer.Context) -> None:
    """Run the Feast CLI in the feature repository with this installation's settings
    (e.g. `mmops feast plan`, `mmops feast apply`, `mmops feast materialize ...`)."""
    from flows.runtime import build_runtime, configure_environment

    settings = get_settings()
    configure_environment(settings)
    runtime = build_runtime(settings)
    env = dict(
        os.environ,
        MMOPS_FEAST_PROJECT=runtime.config.name,
        MMOPS_DATASET_CONFIG=str(settings.dataset_config),
    )
    repo = Path(__file__).resolve().parent.parent / "features" / "repo"
    feast_bin = Path(sys.executable).parent / "feast"
    raise typer.Exit(subprocess.call([str(feast_bin), *ctx.args], cwd=repo, env=env))


@app.command()
def demo(
    rows: int = typer.Option(20_000, help="Rows of demo history."),
    days: int = typer.Option(90, help="Days the history spans."),
    production_days: int = typer.Option(10, help="Simulated production days."),
    rows_per_day: int = typer.Option(400, help="Orders per production day."),
    scenario: str = typer.Option("image_camera", help="Drift scenario switched on at onset."),
    intensity: float = typer.Option(1.0, help="Drift intensity in [0, 1]."),
    onset_day: int = typer.Option(3, help="First drifted production day."),
    epochs: int = typer.Option(30, help="Training epochs (early stopping applies)."),
) -> None:
    """Run the end-to-end demo on embedded defaults (history, training, drift, recovery)."""
    runtime = _prepare()
    from flows.demo import DemoParams, demo_flow

    demo_flow(
        DemoParams(
            rows=rows,
            days=days,
            production_days=production_days,
            rows_per_day=rows_per_day,
            scenario=scenario,
            intensity=intensity,
            onset_day=onset_day,
            epochs=epochs,
        ),
        runtime=runtime,
    )


if __name__ == "__main__":  # pragma: no cover
    app()
