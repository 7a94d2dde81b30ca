"""Fault injection on the shared files, with real processes: concurrent merges of one day
partition, concurrent embedding-cache saves, and SIGKILL in the middle of each write.

"Nothing lost" is asserted by counting: every row or key written by a process that
finished is in the file afterwards, and a killed write leaves the old file complete.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.encoders import EmbeddingCache
from features.store import merge_day_files, read_day_files

pytestmark = pytest.mark.integration

# fork: the children inherit the imported modules (spawn would re-import Feast and torch).
CTX = multiprocessing.get_context("fork")
ROUNDS, ROWS = 20, 50
DAY = "2026-06-01"


def _rows(ids) -> pa.Table:
    ids = list(ids)
    stamps = pd.Timestamp(f"{DAY}T00:00Z") + pd.to_timedelta(ids, unit="ms")  # all in one day
    embedding = np.random.default_rng(len(ids)).standard_normal((len(ids), 128))
    return pa.Table.from_pandas(
        pd.DataFrame(
            {"id": ids, "ts": stamps, "x": np.arange(len(ids), dtype=float), "emb": list(embedding)}
        ),
        preserve_index=False,
    )


def _writer(folder, writer: int, start) -> None:
    start.wait()
    for round_ in range(ROUNDS):
        first = writer * 100_000 + round_ * ROWS
        merge_day_files(_rows(range(first, first + ROWS)), folder, "id", "ts")


def _reader(folder, stop, counts) -> None:
    seen = []
    while not stop.is_set():
        seen.append(len(read_day_files(folder, "id", "ts")))
    counts.put(seen)


def test_two_processes_merging_one_day_20_times_lose_no_row(tmp_path):
    start, stop, counts = CTX.Event(), CTX.Event(), CTX.Queue()
    writers = [CTX.Process(target=_writer, args=(tmp_path, w, start)) for w in (1, 2)]
    reader = CTX.Process(target=_reader, args=(tmp_path, stop, counts))
    merge_day_files(_rows(range(5)), tmp_path, "id", "ts")  # a file for the reader from the start
    reader.start()
    for process in writers:
        process.start()
    start.set()
    for process in writers:
        process.join(timeout=240)
    stop.set()
    seen = counts.get(timeout=60)
    reader.join(timeout=60)
    assert [p.exitcode for p in writers] == [0, 0]
    assert reader.exitcode == 0  # never crashed on a half-written file
    rows = read_day_files(tmp_path, "id", "ts")
    written_in = 5 + 2 * ROUNDS * ROWS
    assert len(rows) == written_in
    assert rows["id"].is_unique
    assert seen == sorted(seen)  # a reader never sees rows disappear
    assert all(5 <= n <= written_in for n in seen)


def _cache_saver(directory, process: int, start) -> None:
    start.wait()
    cache = EmbeddingCache(directory, "enc@1")
    rng = np.random.default_rng(process)
    for round_ in range(5):
        keys = [f"p{process}-r{round_}-k{i}" for i in range(300)]
        cache.put(keys, rng.standard_normal((len(keys), 16)).astype(np.float32))
        cache.save()


def test_two_processes_saving_the_embedding_cache_lose_no_key(tmp_path):
    start = CTX.Event()
    savers = [CTX.Process(target=_cache_saver, args=(tmp_path, p, start)) for p in (1, 2)]
    for process in savers:
        process.start()
    start.set()
    for process in savers:
        process.join(timeout=240)
    assert [p.exitcode for p in savers] == [0, 0]
    cache = EmbeddingCache(tmp_path, "enc@1")
    assert len(cache) == 2 * 5 * 300
    rng = np.random.default_rng(2)
    assert np.allclose(cache.get("p2-r0-k0"), rng.standard_normal((300, 16))[0])
    assert not list(tmp_path.glob("*.tmp"))


def _stall_in_the_middle_of_writing(started) -> None:
    """Make the next Parquet write stop half-way (as a kill mid-write leaves it)."""
    import pyarrow.parquet as pq

    real = pq.write_table

    def half_then_hang(table, where, *args, **kwargs):
        real(table, where, *args, **kwargs)
        with open(where, "r+b") as handle:
            handle.truncate(os.path.getsize(where) // 2)
        started.set()
        signal.pause()

    pq.write_table = half_then_hang


def _killed_merge(folder, started) -> None:
    _stall_in_the_middle_of_writing(started)
    merge_day_files(_rows(range(1000, 1100)), folder, "id", "ts")


def _kill_when_stalled(target, args, started) -> None:
    process = CTX.Process(target=target, args=args)
    process.start()
    assert started.wait(timeout=120), "the writer never reached its write"
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=60)
    assert process.exitcode == -signal.SIGKILL


def test_sigkill_during_a_day_file_write_leaves_the_old_file_and_frees_the_lock(tmp_path):
    merge_day_files(_rows(range(50)), tmp_path, "id", "ts")
    started = CTX.Event()
    _kill_when_stalled(_killed_merge, (tmp_path, started), started)
    assert sorted(read_day_files(tmp_path, "id", "ts")["id"]) == list(range(50))
    # The lock died with the process: the next writer merges at once, nothing is lost.
    assert merge_day_files(_rows(range(1000, 1100)), tmp_path, "id", "ts") == 150


def _killed_cache_save(directory, started) -> None:
    cache = EmbeddingCache(directory, "enc@1")
    cache.put([f"new{i}" for i in range(100)], np.ones((100, 16), np.float32))
    _stall_in_the_middle_of_writing(started)
    cache.save()


def test_sigkill_during_a_cache_save_leaves_the_old_cache_readable(tmp_path):
    cache = EmbeddingCache(tmp_path, "enc@1")
    cache.put([f"old{i}" for i in range(200)], np.zeros((200, 16), np.float32))
    cache.save()
    started = CTX.Event()
    _kill_when_stalled(_killed_cache_save, (tmp_path, started), started)
    after = EmbeddingCache(tmp_path, "enc@1")
    assert len(after) == 200 and "old199" in after
    assert not list(tmp_path.glob("*.corrupt-*"))  # the old file was never touched
    after.put(["again"], np.ones((1, 16), np.float32))
    after.save()  # the lock died with the killed process
    assert len(EmbeddingCache(tmp_path, "enc@1")) == 201
