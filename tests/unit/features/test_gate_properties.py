"""Property tests of the row-level gate over frames with injected faults: it never
crashes, and every row is either stored or quarantined with a named reason."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.ingest import coerce_raw
from features.schema import DatasetConfig
from features.validation import DataQualityError, gate_rows

pytestmark = pytest.mark.slow

CONFIG = DatasetConfig.model_validate(
    {
        "name": "prop",
        "entity_key": "id",
        "timestamp": "ts",
        "label": "y",
        "classes": ["a", "b"],
        "text": [{"name": "body", "min_chars": 2, "max_chars": 40}],
        "numeric": [{"name": "x", "min_value": 0, "max_value": 10}],
        "categorical": [
            {"name": "c", "dtype": "int", "categories": [1, 2]},
            {"name": "d", "categories": ["p", "q"], "unknown_category": "other"},
        ],
    }
)
NOW = datetime(2026, 3, 2, tzinfo=UTC)

keys = st.one_of(st.integers(0, 6), st.none(), st.just("k7"), st.just(3.5))
stamps = st.sampled_from(
    ["2026-03-01T10:00:00Z", "2026-03-01 11:00", "2027-01-01T00:00:00Z", "garbage", None]
)
labels = st.sampled_from(["a", "b", None, "zzz", 1])
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.none(), st.just("abc"), st.integers(-5, 20)
)
categories = st.sampled_from([1, 2, "1", 2.0, 9, None, "x"])
tiers = st.sampled_from(["p", "q", "new", None])
texts = st.one_of(
    st.text(max_size=60), st.none(), st.just(""), st.just("ok \ud800 bad"), st.just(b"\xff\xfe")
)
rows = st.fixed_dictionaries(
    {
        "id": keys,
        "ts": stamps,
        "y": labels,
        "x": numbers,
        "c": categories,
        "d": tiers,
        "body": texts,
    }
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(rows, min_size=1, max_size=12), st.sampled_from([0.0, 0.5, 1.0]))
def test_the_gate_never_crashes_and_accounts_for_every_row(tmp_path, data, share):
    frame = coerce_raw(pd.DataFrame(data), CONFIG)
    try:
        outcome = gate_rows(
            frame,
            CONFIG,
            kind="raw",
            quarantine_dir=tmp_path / "q",
            batch_name="prop",
            max_bad_share=share,
            now=NOW,
        )
    except DataQualityError as error:  # the whole batch, kept with its reasons
        assert error.result.n_quarantined == len(frame)
        assert error.result.reasons()
        kept = pd.read_parquet(f"{error.result.quarantine_path}/batch.parquet")
        assert len(kept) == len(frame)
        return
    assert len(outcome.passed) + outcome.n_quarantined == len(frame)
    if outcome.n_quarantined:
        kept = pd.read_parquet(f"{outcome.result.quarantine_path}/rows.parquet")
        assert len(kept) == outcome.n_quarantined
        assert kept["quarantine_reasons"].str.len().gt(0).all()
        assert outcome.n_quarantined / len(frame) <= share
    passed = outcome.passed
    assert passed["y"].isin(["a", "b"]).where(passed["y"].notna(), True).all()
    assert passed["c"].isin(["1", "2"]).all() and passed["d"].isin(["p", "q", "other"]).all()
    assert np.isfinite(passed["x"].astype(float)).all()


configs = st.builds(
    lambda optional, unknown, entity_type, low, share: DatasetConfig.model_validate(
        {
            "name": "prop",
            "entity_key": "id",
            "entity_type": entity_type,
            "timestamp": "ts",
            "label": "y",
            "classes": [0, 1],
            "text": [{"name": "body", "optional": optional, "min_chars": 1}],
            "numeric": [{"name": "x", "min_value": low, "nullable": optional}],
            "categorical": [{"name": "d", "categories": ["p", "q"], "unknown_category": unknown}],
            "max_bad_row_share": share,
        }
    ),
    st.booleans(),
    st.sampled_from(["quarantine", "other"]),
    st.sampled_from(["int64", "string"]),
    st.one_of(st.none(), st.floats(-5, 5)),
    st.floats(0, 1),
)
loose_rows = st.fixed_dictionaries(
    {
        "id": keys,
        "ts": stamps,
        "y": st.sampled_from([0, 1, 1.0, "1", None, 7]),
        "x": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none()),
        "d": tiers,
        "body": texts,
    }
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(configs, st.lists(loose_rows, min_size=1, max_size=10))
def test_over_configs_every_row_is_stored_or_quarantined_with_a_reason(tmp_path, config, data):
    frame = coerce_raw(pd.DataFrame(data), config)
    try:
        outcome = gate_rows(
            frame, config, kind="raw", quarantine_dir=tmp_path / "q", batch_name="p", now=NOW
        )
    except DataQualityError as error:
        assert error.result.n_quarantined == len(frame) and error.result.reasons()
        return
    assert len(outcome.passed) + outcome.n_quarantined == len(frame)
    assert sum(1 for _ in outcome.bad_rows) == outcome.n_quarantined
    assert outcome.n_quarantined <= config.max_bad_row_share * len(frame) + 1e-9
    if outcome.n_quarantined:
        assert outcome.reasons and all(count > 0 for count in outcome.reasons.values())
