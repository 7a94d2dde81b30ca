"""The end-to-end demo on embedded defaults (the README's main command)."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from features.demo_data import DEMO_START
from flows.ingest import IngestParams, ingest_flow
from flows.runtime import Runtime, build_runtime, ensure_demo_data


class DemoParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    rows: int = Field(default=20_000, ge=500, description="Rows of demo history.")
    days: int = Field(default=90, ge=7, description="Days the history spans.")


@flow(name="demo", flow_run_name="demo {params.rows} rows over {params.days} days")
def demo_flow(params: DemoParams, runtime: Runtime | None = None) -> dict:
    """Build the demo history, ingest and validate it, and print what the stores hold."""
    runtime = runtime or build_runtime()
    path = ensure_demo_data(runtime.settings, n_rows=params.rows, days=params.days)
    start = DEMO_START
    end = DEMO_START + timedelta(days=params.days)
    result = ingest_flow(IngestParams(start=start, end=end, raw_path=str(path)), runtime=runtime)
    summary = {
        "raw rows": result.n_rows,
        "labels": result.n_labels,
        **{f"offline rows ({view})": n for view, n in result.rows_per_view.items()},
        "online store": str(runtime.settings.feast_dir / "online.db"),
        "data docs": str(runtime.settings.gx_dir),
    }
    print(pd.Series(summary).to_string())
    return summary
