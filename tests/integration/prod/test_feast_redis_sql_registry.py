"""Feast in the prod profile: Redis online store, SQL registry on PostgreSQL, and a
Redis restart between materialisations."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from features.store import (
    feast_repo_config,
    get_online_frame,
    materialize,
    offline_dir,
    open_store,
    prepare_store,
    write_offline,
)
from flows.profiles import feast_stores
from flows.settings import get_settings
from tests.integration.prod.conftest import unique
from tests.unit.training.synthetic import synthetic_config, synthetic_frame

pytestmark = [pytest.mark.integration, pytest.mark.prod]


def _offline_rows(feast_dir) -> dict[str, int]:
    return {
        folder.name: sum(len(pd.read_parquet(f)) for f in folder.glob("*.parquet"))
        for folder in sorted(offline_dir(feast_dir).iterdir())
    }


def _assert_online_matches(store, config, expected: pd.DataFrame) -> None:
    ids = expected["order_id"].tolist()
    online = get_online_frame(store, config, ids).set_index("order_id").loc[ids]
    np.testing.assert_allclose(online["price"].to_numpy(), expected["price"].to_numpy())
    assert online["channel"].tolist() == expected["channel"].tolist()
    for got, want in zip(online["review_emb"], expected["review_emb"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_materialize_lookup_and_redis_restart(postgres, databases, redis_instance, tmp_path):
    config = synthetic_config().model_copy(update={"name": unique("synth")})
    settings = get_settings(
        profile="prod",
        data_dir=tmp_path,
        postgres=postgres.model_copy(update={"feast_database": databases("mmops_t_feast")}),
        redis={"host": "127.0.0.1", "port": redis_instance.port},
    )
    stores = feast_stores(settings)
    assert stores["online_store"]["type"] == "redis"
    assert stores["registry"]["path"].startswith("postgresql+psycopg://")
    store = prepare_store(config, settings.feast_dir, **stores)

    frame = synthetic_frame(120, seed=3)
    # Real event times carry at most microseconds (Feast's Redis path casts to us).
    frame["event_timestamp"] = frame["event_timestamp"].dt.floor("ms")
    write_offline(frame, config, settings.feast_dir)
    start = frame["event_timestamp"].min().to_pydatetime()
    end = frame["event_timestamp"].max().to_pydatetime() + timedelta(seconds=1)
    materialize(store, start, end)
    sample = frame.sample(20, random_state=0)
    _assert_online_matches(store, config, sample)
    assert redis_instance.dbsize() == len(frame)  # one hash per entity

    # The registry lives in PostgreSQL: a store opened afresh elsewhere (another worker,
    # nothing applied there) sees the definitions and reads the same online values.
    other = open_store(feast_repo_config(config, tmp_path / "elsewhere", **stores))
    assert {v.name for v in other.list_feature_views()} == {
        f"{config.name}_{kind}" for kind in ("tabular", "text", "image")
    }
    _assert_online_matches(other, config, sample)

    # Redis restarts without persistence: the online values are gone ...
    redis_instance.restart()
    assert redis_instance.dbsize() == 0
    assert get_online_frame(store, config, sample["order_id"].tolist())["price"].isna().all()

    # ... the same window is ingested again (a retry) plus newer values for some entities,
    # and materialising again through the same store object (stale connections) succeeds.
    counts_before = _offline_rows(settings.feast_dir)
    write_offline(frame, config, settings.feast_dir)
    assert _offline_rows(settings.feast_dir) == counts_before  # no duplicate rows
    newer = frame.head(10).copy()
    newer["event_timestamp"] = end + timedelta(hours=1)
    newer["price"] = newer["price"] + 100.0
    write_offline(newer, config, settings.feast_dir)
    assert _offline_rows(settings.feast_dir) == {
        name: rows + len(newer) for name, rows in counts_before.items()
    }
    materialize(store, start, end + timedelta(hours=2))
    materialize(store, start, end + timedelta(hours=2))  # twice: idempotent

    assert redis_instance.dbsize() == len(frame)
    latest = pd.concat([frame.iloc[10:], newer]).sort_values("order_id")
    _assert_online_matches(store, config, latest)
