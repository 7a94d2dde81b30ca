"""Reading and coercing raw rows: declared types, time zones, encodings, windows."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from features.ingest import coerce_raw, parse_timestamps, read_raw
from features.schema import DatasetConfig


def _config(**changes) -> DatasetConfig:
    spec = {
        "name": "t",
        "entity_key": "id",
        "timestamp": "ts",
        "label": "y",
        "classes": [0, 1],
        "text": [{"name": "body"}],
        "categorical": [
            {"name": "team", "dtype": "int", "categories": [1, 2]},
            {"name": "tier", "categories": ["a", "b"], "unknown_category": "other"},
        ],
    }
    spec.update(changes)
    return DatasetConfig.model_validate(spec)


def test_one_naive_timestamp_among_utc_ones_is_read_in_the_declared_zone():
    values = pd.Series(
        ["2026-03-01T10:00:00Z", "2026-03-01 10:00", "2026-03-01T10:00+02:00", "bad"]
    )
    parsed = parse_timestamps(values, "America/New_York")
    assert parsed.iloc[0] == pd.Timestamp("2026-03-01T10:00Z")
    assert parsed.iloc[1] == pd.Timestamp("2026-03-01T15:00Z")
    assert parsed.iloc[2] == pd.Timestamp("2026-03-01T08:00Z")
    assert pd.isna(parsed.iloc[3])


def test_coercion_follows_the_declared_types():
    raw = pd.DataFrame(
        {
            "id": ["7", "8", "9"],
            "ts": ["2026-03-01T10:00:00Z"] * 3,
            "y": [1.0, None, 0],
            "body": ["x", None, "z"],
            "team": [1, 2.0, "1"],
            "tier": ["a", "zzz", None],
        }
    )
    out = coerce_raw(raw, _config())
    assert out["id"].dtype == "int64" and out["id"].tolist() == [7, 8, 9]
    assert out["y"].tolist() == ["1", None, "0"]
    assert out["team"].tolist() == ["1", "2", "1"]
    assert out["tier"].tolist() == ["a", "other", None]
    strings = coerce_raw(raw, _config(entity_type="string"))
    assert strings["id"].tolist() == ["7", "8", "9"]


def test_a_csv_in_a_declared_encoding_reads_and_a_wrong_one_names_the_setting(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_bytes("id,ts,y,body,team,tier\n1,2026-03-01T10:00Z,1,Café,1,a\n".encode("latin-1"))
    with pytest.raises(ValueError, match="csv_encoding"):
        read_raw(path, _config())
    frame = read_raw(path, _config(csv_encoding="latin-1"))
    assert frame["body"].iloc[0] == "Café"


def test_only_the_windows_rows_are_read_and_a_bad_row_elsewhere_blocks_nothing(tmp_path):
    rows = [f"{i},2026-03-0{1 + i % 3}T10:00:00Z,1,t{i},1,a" for i in range(9)]
    rows.append("99,not a time,1,t,1,a")
    csv = tmp_path / "raw.csv"
    csv.write_text("id,ts,y,body,team,tier\n" + "\n".join(rows) + "\n")
    start, end = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    window = read_raw(csv, _config(), start, end)
    assert window["id"].tolist() == [1, 4, 7]
    parquet = tmp_path / "raw.parquet"
    read_raw(csv, _config()).dropna(subset=["ts"]).to_parquet(parquet)
    assert read_raw(parquet, _config(), start, end)["id"].tolist() == [1, 4, 7]
