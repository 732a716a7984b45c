"""Spare disk space beside each SQLite store, given back when a write finds the disk full.

A model call can take a minute, and the disk can fill while it runs. Its reply is paid for by then; if the
write that records it (the ledger row, the node's checkpoint, its spans) fails, the record is lost and a
resumed run pays for the call again. So each SQLite store we write keeps a file of spare bytes beside it,
`<store>.reserve`. A write that fails with a full disk deletes the reserve and is tried once more: the
finished work lands. The reserve is then *spent*, and the run fails clearly at its next safe point (the
checkpointer after the step's writes, the runner at the run's end), to be resumed once space is freed.
The next run makes the reserve again; if it can't, that run refuses to start, before anything is spent.

One `Reserve` per file per process (`reserve_for`), shared by every writer of that file (the checkpointer
and the ledger share the checkpoint file's). Several processes share the file on disk: the first to find
the disk full takes it; the others meet the full disk as it is.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["RESERVE_BYTES", "DiskFull", "Reserve", "disk_full", "reserve_for"]

RESERVE_BYTES = 1 << 20  # 1 MiB: a step's checkpoint, its ledger rows and its spans, many times over
T = TypeVar("T")


def disk_full(exc: BaseException) -> bool:
    """The error of a write that found no space left: SQLite's SQLITE_FULL, or ENOSPC."""
    if isinstance(exc, sqlite3.OperationalError):
        return "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


class DiskFull(OSError):
    """A store's disk is full; what was being written is stored (from the reserve), and the run must stop."""

    def __init__(self, store: str) -> None:
        super().__init__(
            errno.ENOSPC, "no space left on device; the step in flight was stored in its reserve"
        )
        self.filename = store

    def __str__(self) -> str:
        return str(self.strerror)


class Reserve:
    """The spare file beside one store (see the module's text).

    Example:
        >>> import tempfile
        >>> r = Reserve(Path(tempfile.mkdtemp()) / "c.db", size=4096)
        >>> r.ensure(); r.path.stat().st_size
        4096
        >>> r.release(), r.spent, r.path.exists()
        (True, True, False)
    """

    def __init__(self, store: str | Path, size: int = RESERVE_BYTES) -> None:
        self.store = Path(store)
        self.path = self.store.with_name(self.store.name + ".reserve")
        self.size = size
        self.spent = False  # released since it was last made: the disk is (or was) full
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Make the reserve if it is missing (an `OSError`, ENOSPC, when the disk has no room for it)."""
        with self._lock:
            try:
                if self.path.stat().st_size >= self.size:
                    self.spent = False
                    return
            except FileNotFoundError:
                pass
            part = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")
            try:
                with open(part, "wb") as f:
                    try:
                        os.posix_fallocate(f.fileno(), 0, self.size)  # really taken, not a sparse file
                    except OSError as exc:
                        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                            raise
                        f.write(b"\0" * self.size)
                        f.flush()
                        os.fsync(f.fileno())
                os.replace(part, self.path)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            self.spent = False

    def release(self) -> bool:
        """Give the space back (a write found the disk full); False if there was none to give."""
        with self._lock:
            try:
                self.path.unlink()
            except FileNotFoundError:
                return False
            self.spent = True
            return True

    def write(self, fn: Callable[[], T]) -> T:
        """`fn()`; if it finds the disk full, release the reserve and call it once more."""
        try:
            return fn()
        except (OSError, sqlite3.Error) as exc:
            if not disk_full(exc) or not self.release():
                raise
        return fn()


_reserves: dict[str, Reserve] = {}
_reserves_lock = threading.Lock()


def reserve_for(store: str | Path) -> Reserve:
    """The one `Reserve` of a store file in this process."""
    key = os.path.realpath(store)
    with _reserves_lock:
        if key not in _reserves:
            _reserves[key] = Reserve(key)
        return _reserves[key]
