"""Chunk files a killed scoring run left behind are swept by a later run."""

from __future__ import annotations

import os
import time

from flows.task_runners import STALE_CHUNK_SECONDS, sweep_stale_chunks


def test_only_chunk_files_older_than_a_day_are_swept(tmp_path):
    old = time.time() - STALE_CHUNK_SECONDS - 60
    stale = tmp_path / "score-dead.parquet"
    live = tmp_path / "score-live.parquet"
    other = tmp_path / "notes.parquet"  # not a chunk file, however old
    for path in (stale, live, other):
        path.write_bytes(b"rows")
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    assert sweep_stale_chunks(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    assert sweep_stale_chunks(tmp_path / "missing") == []  # no folder yet: nothing to do
