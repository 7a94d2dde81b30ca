"""The golden holdout and the label history (issue 12)."""

from __future__ import annotations

import pandas as pd
import pytest

from features.golden import GoldenConfig, freeze_golden, golden_mask, latest_golden, split_golden
from features.store import read_label_history, read_labels, write_labels
from tests.unit.training.synthetic import synthetic_config


def _labels(n: int = 3000, label: str = "yes") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": range(n),
            "event_timestamp": pd.date_range("2026-06-01", periods=n, freq="10min", tz="UTC"),
            "reorder": label,
        }
    )


def test_membership_is_a_stable_share_of_entities():
    entities = pd.Series(range(20_000))
    mask = golden_mask(entities, 0.1, "golden")
    assert 0.09 < mask.mean() < 0.11
    assert (golden_mask(entities, 0.1, "golden") == mask).all()
    assert (golden_mask(entities[::-1], 0.1, "golden") == mask[::-1]).all()
    assert (golden_mask(entities, 0.1, "other") != mask).any()


def test_frozen_version_ignores_later_overwrites_and_training_never_sees_it(tmp_path):
    config = synthetic_config()
    labels = _labels()
    manifest = freeze_golden(labels, config, tmp_path, GoldenConfig(min_rows=50))
    assert manifest is not None and manifest.version == 1 and manifest.name == "golden-v1"
    found, rows = latest_golden(tmp_path)
    assert found == manifest and len(rows) == manifest.n_rows
    assert set(rows["reorder"]) == {"yes"}
    training, held = split_golden(_labels(label="no"), config, manifest.fraction, manifest.salt)
    assert held == manifest.n_rows
    assert not set(training["order_id"]) & set(rows["order_id"])
    # A frozen version is what it was: tampering is detected, not used.
    rows.assign(reorder="no").to_parquet(tmp_path / "v1.parquet", index=False)
    with pytest.raises(ValueError, match="changed after it was frozen"):
        latest_golden(tmp_path)


def test_too_few_members_freeze_nothing(tmp_path):
    assert freeze_golden(_labels(100), synthetic_config(), tmp_path, GoldenConfig()) is None
    assert latest_golden(tmp_path) is None


def test_label_overwrites_are_kept_as_history(tmp_path):
    config = synthetic_config()
    first = _labels(10)
    write_labels(first, config, tmp_path)
    assert read_label_history(config, tmp_path).empty
    changed = first.copy()
    changed.loc[[2, 5], "reorder"] = "no"
    write_labels(changed, config, tmp_path)
    write_labels(changed, config, tmp_path)  # a retried delivery records nothing new
    history = read_label_history(config, tmp_path)
    assert sorted(history["order_id"]) == [2, 5]
    assert set(history["previous_label"]) == {"yes"} and set(history["reorder"]) == {"no"}
    assert (
        read_labels(config, tmp_path).set_index("order_id").loc[[2, 5], "reorder"] == "no"
    ).all()


def test_a_confirmed_concept_change_freezes_the_next_version_with_its_reason(tmp_path):
    config = synthetic_config()
    labels = _labels(3000)
    first = freeze_golden(labels, config, tmp_path, GoldenConfig(min_rows=50))
    later = labels[labels[config.timestamp] >= labels[config.timestamp].median()]
    second = freeze_golden(later, config, tmp_path, GoldenConfig(min_rows=50), reason="confirmed")
    assert first is not None and second is not None
    assert (first.version, second.version) == (1, 2) and second.reason == "confirmed"
    manifest, rows = latest_golden(tmp_path)
    assert manifest.version == 2 and len(rows) == second.n_rows < first.n_rows
