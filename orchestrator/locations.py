"""Where checkpoints and traces live: a SQLite file or a PostgreSQL URL, read from a setting (no LangGraph
import, so settings resolve fast for the light commands)."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from orchestrator.errors import ConfigError

__all__ = [
    "ACCEPTED",
    "Location",
    "checkpoints_location",
    "describe",
    "is_postgres",
    "one_line",
    "redact",
    "traces_location",
    "unreachable",
    "use_wal",
]

ACCEPTED = "a file path or sqlite:///PATH (SQLite), or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
Location = Path | str  # a SQLite file, or a PostgreSQL URL
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")  # two letters at least: C:/ is a Windows drive
_POSTGRES = ("postgresql", "postgres")
_SETTINGS = {
    "checkpoints": "ORCH_CHECKPOINTS (or --checkpoints, or the manifest's checkpoints)",
    "traces": "ORCH_TRACES (or --traces, or the manifest's traces)",
}


def traces_location(value: str | os.PathLike[str], source: str = "traces") -> Location:
    """A `traces` setting as a SQLite file `Path` or a PostgreSQL URL; any other URL is a ConfigError.

    Example:
        >>> traces_location("postgresql://orch@db.internal/orch")
        'postgresql://orch@db.internal/orch'
    """
    return checkpoints_location(value, source, setting="traces")


def is_postgres(location: Location) -> bool:
    """Whether a location is a PostgreSQL URL (else a SQLite file)."""
    return isinstance(location, str)


def checkpoints_location(
    value: str | os.PathLike[str], source: str = "checkpoints", setting: str = "checkpoints"
) -> Location:
    """A `checkpoints` setting as a SQLite file `Path` or a PostgreSQL URL; any other URL is a ConfigError.

    Example:
        >>> checkpoints_location("sqlite:///runs/c.db")
        PosixPath('runs/c.db')
        >>> checkpoints_location("postgresql://orch@db.internal/orch")
        'postgresql://orch@db.internal/orch'
    """
    text = os.fspath(value)
    scheme = _SCHEME.match(text)
    if isinstance(value, Path):
        if scheme:  # Path() folded the URL's '//' to '/': it can't be told from a folder named 'postgresql:'
            raise ConfigError(f"{source} {text!r} looks like a URL made into a Path; pass it as a str")
        return value.expanduser()
    if not scheme or "://" not in text:
        return Path(text).expanduser()
    name = scheme.group(1).lower()
    if name in _POSTGRES:
        return text
    if name == "sqlite":
        parts = urlsplit(text)
        path = text[len("sqlite:///") :] if text.lower().startswith("sqlite:///") else ""
        if parts.netloc or not path or parts.query:
            raise ConfigError(
                f"{source} {text!r}: a SQLite URL is sqlite:///PATH (relative) or sqlite:////PATH "
                "(absolute), with no host or query"
            )
        return Path(path).expanduser()
    raise ConfigError(f"{source} {redact(text)!r}: unknown scheme {name!r}; {setting} take {ACCEPTED}")


def redact(url: str) -> str:
    """A URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def describe(location: Location) -> str:
    """A location for messages: the file path, or the URL without its password."""
    return str(location) if isinstance(location, Path) else redact(location)


def unreachable(url: str, exc: BaseException, setting: str = "checkpoints") -> ConfigError:
    """A PostgreSQL store that can't be used: one line naming the server and why; never the password."""
    parts = urlsplit(url)
    host = f"{parts.hostname or 'the local socket'}:{parts.port or 5432}"
    what = "checkpoint store" if setting == "checkpoints" else "trace store"
    why = one_line(exc)
    if parts.password and len(parts.password) >= 4:  # a driver's message may quote the connection string
        why = why.replace(parts.password, "***")
    return ConfigError(
        f"{what} {redact(url)!r}: cannot use PostgreSQL at {host}: {why}; "
        f"start the server or point {_SETTINGS[setting]} at one that runs"
    )


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def use_wal(conn: sqlite3.Connection, wait_s: float = 60.0) -> None:
    """Put the checkpoint file in WAL mode, as LangGraph's saver does, from the first connection to open it.

    The switch needs the file to itself, and SQLite reports "database is locked" at once, whatever the busy
    timeout, while another connection reads or writes. The ledger, the leases and every run's checkpointer
    share the file: switched by the first of them, before the others start, nobody races for it later (20
    concurrent runs did: their savers' set-up failed). A file that is in WAL mode stays so.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
