"""A small pipeline for integration tests: demo history ingested, a first champion, and
a production day under concept drift whose labels arrive at once (so the realized drop
is seen in the same window and one window is enough to retrain)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from features.demo_data import DEMO_START, DemoSources
from features.drift_sim import simulate_window

REVIEWS, IMAGES = 200, 500


def build_small_pipeline(runtime, rows: int = 1500, days: int = 12, epochs: int = 4, **ingest):
    """Ingest ``rows`` of demo history over ``days`` and train the first model.

    Returns:
        ``(history_end, train outcome)``.
    """
    from flows.ingest import IngestParams, ingest_flow
    from flows.runtime import ensure_demo_data
    from flows.train import TrainParams, train_flow

    history = ensure_demo_data(
        runtime.settings, n_rows=rows, days=days, review_pool=REVIEWS, image_pool=IMAGES
    )
    history_end = DEMO_START + timedelta(days=days)
    ingest_flow(IngestParams(start=DEMO_START, end=history_end, raw_path=str(history), **ingest))
    first = train_flow(TrainParams(train={"epochs": epochs, "show_progress": False, "patience": 2}))
    return history_end, first


def concept_drift_cycle(runtime, start: datetime, path: Path, seed: int, first_id: int, **monitor):
    """One daily cycle over 400 concept-drifted rows written to ``path``."""
    from flows.cycle import CycleParams, cycle_flow
    from flows.monitor import MonitorParams
    from monitoring.policy import PolicyConfig

    sources = DemoSources.load().subset(REVIEWS, IMAGES, runtime.settings.seed)
    raw, _ = simulate_window(
        sources,
        "concept",
        1.0,
        400,
        start,
        start + timedelta(days=1),
        seed=seed,
        first_id=first_id,
    )
    raw.to_parquet(path, index=False)
    policy = PolicyConfig(concept_persistence_k=1, concept_persistence_n=1, min_labeled_rows=50)
    return cycle_flow(
        CycleParams(
            start=start,
            end=start + timedelta(days=1),
            raw_path=str(path),
            monitor=MonitorParams(label_lag_hours=0, policy=policy, **monitor),
        )
    )
