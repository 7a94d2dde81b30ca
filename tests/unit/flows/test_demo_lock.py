"""One demo per data directory: a second one there would reset the state the first is
writing. The lock is held by another process, as a second `mmops demo` would find it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.demo import DEMO_LOCK, hold_demo_lock

HOLD = (
    "import fcntl, sys, time\n"
    "handle = open(sys.argv[1], 'a')\n"
    "fcntl.flock(handle, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def test_a_second_demo_in_the_same_folder_fails_and_a_finished_one_frees_it(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / DEMO_LOCK)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=f"another demo is running in {tmp_path}"):
            with hold_demo_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with hold_demo_lock(tmp_path):  # the holder is gone: its lock went with it
        pass
    with hold_demo_lock(tmp_path):  # and a finished demo released its own
        pass


def test_the_lock_creates_a_missing_data_directory(tmp_path):
    with hold_demo_lock(tmp_path / "new" / "data"):
        assert (tmp_path / "new" / "data" / DEMO_LOCK).exists()
