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
    get_monitoring_frame,
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


def _assert_same_frames(left: pd.DataFrame, right: pd.DataFrame, config) -> None:
    embedded = [config.embedding_column(c) for c in config.embedded_columns]
    pd.testing.assert_frame_equal(left.drop(columns=embedded), right.drop(columns=embedded))
    for name in embedded:
        for a, b in zip(left[name], right[name], strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                assert a.dtype == b.dtype == np.float32
                assert np.array_equal(a, b)


def test_a_retrieval_in_chunks_equals_one_call(raw_rows, demo_config, encoders, paths, monkeypatch):
    """Time-ordered chunks give the rows, values, order and dtypes of one call: rows
    whose features are newer than them, unknown entities and repeated rows included."""
    config = demo_config
    key, ts = config.entity_key, config.timestamp
    store = prepare_store(config, paths.feast_dir)
    rows = raw_rows.head(120).reset_index(drop=True)
    early = embed_frame(rows, config, encoders, cache_dir=paths.embedding_cache_dir)
    late = early.head(40).copy()
    late[ts] = late[ts] + pd.Timedelta(hours=6)
    late["price"] = late["price"] + 1000.0
    late["review_emb"] = [np.full(384, 0.05, np.float32)] * len(late)
    write_offline(early, config, paths.feast_dir)
    write_offline(late, config, paths.feast_dir)

    keys = early[[key, ts, config.label]]
    entity_df = pd.concat(
        [
            keys.assign(**{ts: keys[ts] + pd.Timedelta(hours=1)}),  # early values
            keys.head(40).assign(**{ts: keys[ts].head(40) + pd.Timedelta(hours=7)}),  # late
            keys.head(10).assign(**{ts: keys[ts].head(10) - pd.Timedelta(hours=1)}),  # none yet
            keys.head(3).assign(**{key: keys[key].head(3) + 10**9}),  # unknown entities
            keys.iloc[[5, 5]],  # a repeated row
        ],
        ignore_index=True,
    ).sample(frac=1.0, random_state=3)  # chunks follow time, not the frame's order

    calls = []
    ask = store.get_historical_features
    monkeypatch.setattr(
        store,
        "get_historical_features",
        lambda entity_df, features: calls.append(len(entity_df)) or ask(entity_df, features),
    )
    service = store.get_feature_service(config.feature_service_name)
    feast_frame = ask(entity_df.copy(), service).to_df()  # Feast's own conversion
    for name in ("review_emb", "photo_emb"):
        feast_frame[name] = [None if v is None else v.astype(np.float32) for v in feast_frame[name]]
    feast_frame = feast_frame.sort_values([ts, key]).reset_index(drop=True)
    for retrieve in (get_training_frame, get_monitoring_frame):
        calls.clear()
        whole = retrieve(store, config, entity_df.copy(), chunk_rows=None)
        chunked = retrieve(store, config, entity_df.copy(), chunk_rows=37)
        assert calls == [175, 37, 37, 37, 37, 27]
        _assert_same_frames(chunked, whole, config)
        if retrieve is get_training_frame:
            _assert_same_frames(whole, feast_frame, config)
        assert len(whole) == len(entity_df)
        assert whole["price"].isna().sum() == 13  # before any features, unknown entities
        assert (whole["price"] > 1000).sum() == 40


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
