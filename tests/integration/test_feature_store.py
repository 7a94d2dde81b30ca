"""Feast on local files: idempotent ingestion, point-in-time correctness, online lookups."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.demo_data import DEMO_START, generate_rows
from features.embedding import embed_frame
from features.ingest import IngestPaths, ingest_window
from features.store import (
    get_online_frame,
    get_training_frame,
    prepare_store,
    read_labels,
    write_offline,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def paths(tmp_path, embedding_cache_dir) -> IngestPaths:
    return IngestPaths(
        feast_dir=tmp_path / "feast",
        labels_dir=tmp_path / "labels",
        quarantine_dir=tmp_path / "quarantine",
        embedding_cache_dir=embedding_cache_dir,
        gx_dir=tmp_path / "gx",
    )


@pytest.fixture(scope="module")
def raw_rows(demo_sources):
    raw, _ = generate_rows(demo_sources, 240, DEMO_START, DEMO_START + timedelta(days=3), seed=11)
    return raw


def _offline_rows(feast_dir: Path) -> dict[str, int]:
    counts = {}
    for folder in sorted((feast_dir / "offline").iterdir()):
        counts[folder.name] = sum(len(pd.read_parquet(f)) for f in folder.glob("*.parquet"))
    return counts


def test_ingesting_a_window_twice_leaves_no_duplicates(raw_rows, demo_config, encoders, paths):
    store = prepare_store(demo_config, paths.feast_dir)
    start, end = DEMO_START, DEMO_START + timedelta(days=3)
    first = ingest_window(raw_rows, demo_config, store, encoders, paths, start, end)
    once = _offline_rows(paths.feast_dir)
    second = ingest_window(raw_rows, demo_config, store, encoders, paths, start, end)
    assert first.n_rows == second.n_rows == len(raw_rows)
    assert _offline_rows(paths.feast_dir) == once
    assert set(once.values()) == {len(raw_rows)}
    assert len(read_labels(demo_config, paths.labels_dir)) == len(raw_rows)

    # Training sets come from get_historical_features and match what was ingested.
    entity_df = read_labels(demo_config, paths.labels_dir)
    training = get_training_frame(store, demo_config, entity_df)
    assert len(training) == len(raw_rows)
    merged = training.merge(raw_rows, on=demo_config.entity_key, suffixes=("", "_raw"))
    assert np.allclose(merged["price"], merged["price_raw"])
    assert (merged["review_present"] == merged["review"].notna()).all()
    assert training["review_emb"].map(len).eq(384).all()

    # The online store was materialised with the latest values.
    ids = raw_rows[demo_config.entity_key].head(5).tolist()
    online = get_online_frame(store, demo_config, ids)
    expected = raw_rows.set_index(demo_config.entity_key).loc[ids, "price"].to_numpy()
    assert np.allclose(online["price"].to_numpy(), expected)


def test_no_feature_value_stamped_after_a_row_leaks_into_it(raw_rows, demo_config, encoders, paths):
    """Each entity gets a second, later feature row; queries before it must not see it."""
    store = prepare_store(demo_config, paths.feast_dir)
    rows = raw_rows.head(60).reset_index(drop=True)
    early = embed_frame(rows, demo_config, encoders, cache_dir=paths.embedding_cache_dir)
    late = early.copy()
    late[demo_config.timestamp] = late[demo_config.timestamp] + pd.Timedelta(hours=6)
    late["price"] = 999.0
    late["review_emb"] = [np.full(384, 0.05, np.float32)] * len(late)
    write_offline(early, demo_config, paths.feast_dir)
    write_offline(late, demo_config, paths.feast_dir)

    keys = early[[demo_config.entity_key, demo_config.timestamp]]
    before = keys.assign(
        **{demo_config.timestamp: keys[demo_config.timestamp] + pd.Timedelta(hours=5)}
    )
    after = keys.assign(
        **{demo_config.timestamp: keys[demo_config.timestamp] + pd.Timedelta(hours=7)}
    )
    seen_before = get_training_frame(store, demo_config, before)
    seen_after = get_training_frame(store, demo_config, after)
    assert (seen_before["price"] != 999.0).all()
    assert all(not np.allclose(v, 0.05) for v in seen_before["review_emb"])
    assert (seen_after["price"] == 999.0).all()
    assert all(np.allclose(v, 0.05) for v in seen_after["review_emb"])


def test_feast_cli_apply_works_from_the_repo_folder(tmp_path, demo_config):
    env = dict(os.environ, MMOPS_DATA_DIR=str(tmp_path), MMOPS_FEAST_PROJECT=demo_config.name)
    feast = Path(sys.executable).parent / "feast"
    repo = REPO / "features" / "repo"
    applied = subprocess.run(
        [str(feast), "apply"], cwd=repo, env=env, capture_output=True, text=True, timeout=180
    )
    assert applied.returncode == 0, applied.stderr[-2000:]
    listed = subprocess.run(
        [str(feast), "feature-services", "list"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo_config.feature_service_name in listed.stdout
