"""Day-partition files: corrupt or truncated files are moved aside and named with the
step that rebuilds them; merges stay idempotent."""

from __future__ import annotations

import logging

import pandas as pd
import pyarrow as pa
import pytest

from features.errors import PermanentError
from features.state_io import CorruptStateError
from features.store import RESCORE, merge_day_files, read_day_files


def _rows(ids, day="2026-06-01") -> pa.Table:
    stamps = pd.Timestamp(f"{day}T06:00Z") + pd.to_timedelta(list(ids), unit="s")
    return pa.Table.from_pandas(
        pd.DataFrame({"id": list(ids), "ts": stamps, "x": [float(i) for i in ids]}),
        preserve_index=False,
    )


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_merging_twice_keeps_one_row_per_entity_and_timestamp(tmp_path):
    merge_day_files(_rows(range(10)), tmp_path, "id", "ts")
    assert merge_day_files(_rows(range(5, 15)), tmp_path, "id", "ts") == 15
    assert len(read_day_files(tmp_path, "id", "ts")) == 15


def test_a_truncated_day_file_is_moved_aside_and_the_reader_names_it_and_the_fix(tmp_path, caplog):
    merge_day_files(_rows(range(10)), tmp_path, "id", "ts")
    merge_day_files(_rows(range(10), day="2026-06-02"), tmp_path, "id", "ts")
    day = tmp_path / "2026-06-01.parquet"
    _truncate(day)
    with caplog.at_level(logging.WARNING), pytest.raises(CorruptStateError) as caught:
        read_day_files(tmp_path, "id", "ts", recovery=RESCORE)
    message = str(caught.value)
    assert str(day) in message
    assert "mmops score --start 2026-06-01 --end 2026-06-02" in message
    assert isinstance(caught.value, PermanentError)  # a retry cannot fix it
    assert not day.exists()
    assert caught.value.moved_to is not None and caught.value.moved_to.exists()
    assert str(day) in caplog.text
    # The next read no longer trips on it; the healthy day is intact.
    assert len(read_day_files(tmp_path, "id", "ts")) == 10


def test_a_truncated_day_file_met_by_a_merge_keeps_the_new_rows_and_names_the_fix(tmp_path):
    merge_day_files(_rows(range(10)), tmp_path, "id", "ts")
    _truncate(tmp_path / "2026-06-01.parquet", keep=0.3)
    with pytest.raises(CorruptStateError, match="mmops ingest --start 2026-06-01 --end 2026-06-02"):
        merge_day_files(_rows(range(100, 104)), tmp_path, "id", "ts")
    assert sorted(read_day_files(tmp_path, "id", "ts")["id"]) == [100, 101, 102, 103]
    assert len(list(tmp_path.glob("2026-06-01.parquet.corrupt-*"))) == 1


def test_a_missing_column_is_not_mistaken_for_corruption(tmp_path):
    merge_day_files(_rows(range(3)), tmp_path, "id", "ts")
    with pytest.raises(Exception) as caught:
        read_day_files(tmp_path, "id", "ts", columns=["id", "ts", "absent"])
    assert not isinstance(caught.value, CorruptStateError)
    assert (tmp_path / "2026-06-01.parquet").exists()


def test_no_temporary_or_lock_file_is_read_as_a_day(tmp_path):
    merge_day_files(_rows(range(3)), tmp_path, "id", "ts")
    (tmp_path / ".2026-06-01.parquet.abc.tmp").write_bytes(b"half a file")
    assert len(read_day_files(tmp_path, "id", "ts")) == 3
