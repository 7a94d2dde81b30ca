"""Small, safe file I/O for every state file and day partition the pipeline keeps.

* Writes are atomic: a uniquely named temporary file in the target's folder, flushed and
  fsynced, then ``os.replace``; a reader sees the old file or the new one, never half.
* Read-modify-write cycles hold a lock file beside the target (``filelock``), so two
  processes merging into the same file never lose each other's rows.
* A file that cannot be parsed is moved aside with a warning that names it, then rebuilt
  from its source of truth where one exists; otherwise :class:`CorruptStateError` names
  the file and the way to recover.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from features.errors import PermanentError

logger = logging.getLogger(__name__)

T = TypeVar("T")

LOCK_TIMEOUT_S = 600.0


class CorruptStateError(PermanentError, RuntimeError):
    """A state file could not be read and has no source to rebuild it from.

    Permanent: the file has been moved aside, so a blind retry would carry on without
    its content; an operator follows ``recovery`` instead.
    """

    def __init__(self, path: Path, moved_to: Path | None, recovery: str, cause: str) -> None:
        where = f" (moved aside to {moved_to})" if moved_to else ""
        super().__init__(f"{path} is unreadable{where}: {cause}. {recovery}".strip())
        self.path = path
        self.moved_to = moved_to
        self.recovery = recovery


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic(path: Path, write: Callable[[int, str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        write(fd, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""

    def write(fd: int, _: str) -> None:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    return _atomic(Path(path), write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_table(table: pa.Table, path: str | Path) -> Path:
    """Write an Arrow table as Parquet to ``path`` atomically."""

    def write(fd: int, temporary: str) -> None:
        os.close(fd)
        pq.write_table(table, temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())

    return _atomic(Path(path), write)


def atomic_write_frame(frame, path: str | Path) -> Path:
    """Write a pandas frame as Parquet to ``path`` atomically (index dropped)."""
    return atomic_write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def lock_path(path: str | Path) -> Path:
    """The lock file that guards ``path``."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextmanager
def locked(path: str | Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the lock of ``path`` (across processes) for a read-modify-write cycle."""
    target = lock_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target), timeout=timeout):
        yield


def move_aside(path: str | Path) -> Path:
    """Rename an unreadable file to ``<name>.corrupt-<UTC stamp>`` and say so in the log."""
    path = Path(path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, aside)
    logger.warning("%s was unreadable and has been moved aside to %s", path, aside)
    return aside


def read_state(
    path: str | Path,
    parse: Callable[[Path], T],
    default: Callable[[], T],
    rebuild: Callable[[], T] | None = None,
    recovery: str = "",
) -> T:
    """Read a state file, surviving a missing or corrupt one.

    Args:
        path: the file.
        parse: reads the file; any exception it raises means the file is corrupt.
        default: the state when the file does not exist yet.
        rebuild: rebuilds the state from its source of truth after a corrupt file was
            moved aside; None when there is none.
        recovery: what an operator should do when the file is corrupt and cannot be
            rebuilt (part of the error message).

    Raises:
        CorruptStateError: the file is corrupt and ``rebuild`` is None or failed.
    """
    path = Path(path)
    if not path.exists():
        return default()
    try:
        return parse(path)
    except Exception as error:  # noqa: BLE001 - any parse failure means a corrupt file
        cause = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        aside = move_aside(path)
        if rebuild is None:
            raise CorruptStateError(path, aside, recovery, cause) from error
        try:
            state = rebuild()
        except Exception as failure:
            raise CorruptStateError(
                path, aside, recovery, f"{cause}; rebuilding failed: {failure}"
            ) from failure
        logger.warning("%s rebuilt from its source of truth", path)
        return state


__all__ = [
    "CorruptStateError",
    "atomic_write_bytes",
    "atomic_write_frame",
    "atomic_write_table",
    "atomic_write_text",
    "lock_path",
    "locked",
    "move_aside",
    "read_state",
]
