"""The windows of a monitoring backfill, and the settings that choose the chunked path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from features.errors import InvalidConfigError
from flows.backfill import backfill_windows
from flows.settings import get_settings
from flows.task_runners import run_chunked

START = datetime(2026, 6, 1, tzinfo=UTC)


def test_windows_cover_the_range_back_to_back_and_the_last_one_is_clipped():
    windows = backfill_windows(START, START + timedelta(hours=60), 24)
    assert windows == [
        (START, START + timedelta(hours=24)),
        (START + timedelta(hours=24), START + timedelta(hours=48)),
        (START + timedelta(hours=48), START + timedelta(hours=60)),
    ]


def test_an_empty_or_reversed_range_is_refused():
    with pytest.raises(InvalidConfigError, match="not before its end"):
        backfill_windows(START, START, 24)


def test_only_the_dask_runner_chunks_and_the_settings_validate(tmp_path, monkeypatch):
    monkeypatch.setenv("MMOPS_TASK_RUNNER", "dask")
    monkeypatch.setenv("MMOPS_TEXT_ENCODER", "int8")
    monkeypatch.setenv("MMOPS_CHUNK_ROWS", "300")
    settings = get_settings(data_dir=tmp_path)
    assert run_chunked(settings) and settings.chunk_rows == 300
    assert settings.text_encoder == "int8"
    assert not run_chunked(get_settings(data_dir=tmp_path, task_runner="default"))
    with pytest.raises(ValueError, match="text_encoder"):
        get_settings(data_dir=tmp_path, text_encoder="int4")
    with pytest.raises(ValueError, match="chunk_rows"):
        get_settings(data_dir=tmp_path, chunk_rows=0)
