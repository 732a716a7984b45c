"""Who runs something: this host's name, a process's start time, and whether that process still runs.

A run's record (the trace store's `runs` row) and its lease (`orchestrator.run.lease`) name their process by
(host, pid, start time), so a pid reused by a later process is not taken for the one that ended.
"""

from __future__ import annotations

import os
import socket

__all__ = ["HOST", "alive", "process_started"]

HOST = socket.gethostname()


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (Linux): state first; else None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_started(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart; else None."""
    fields = _stat(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def alive(pid: int, started: int | None) -> bool:
    """Whether process `pid` (started at `started`, when known) still runs on this host.

    A zombie has ended: it only waits for its parent to read its exit status, which a container's PID 1
    may never do, so it counts as dead (Linux: state Z or X in /proc/PID/stat).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OverflowError:
        return False  # no such pid can exist
    fields = _stat(pid)
    if fields is None:  # it ended since the signal; or there is no /proc to look in (not Linux)
        return not os.path.exists("/proc/self/stat")
    if fields[0] in ("Z", "X"):
        return False
    try:
        now = int(fields[19])
    except (ValueError, IndexError):
        return True
    return started is None or now == started
