"""A damaged trace store: told apart from a locked or full one, remembered beside the file, checked on demand.

A store file whose pages were overwritten (a disk fault, a copy taken mid-write, a tool that wrote into it)
makes SQLite answer "database disk image is malformed", or hands back text that is not UTF-8. Every read and
write of the store turns that into one `TraceStoreDamaged` line naming the file and the fix, and the store
object writes nothing more into the file. The verdict is kept in `<store>.damaged` (the file's device and
inode, and why), so the next process knows without scanning: `orch run` then runs without recording into
it, `orch traces ...` refuses at once. Moving the store aside (a new file has another inode) or an
`orch traces check` that finds it sound clears the verdict.

A file up to `QUICK_CHECK_MAX_BYTES` (16 MiB, some 900 runs of the bundled agent) is also checked with
SQLite's `pragma quick_check` when it is opened. It reads every page: measured on a busy 2-core machine, about
2 ms per MB when the file is cached (a 32 MB store 60-90 ms, a 330 MB store of 400,000 spans 350-800 ms;
`integrity_check` about 4 times that), too slow for every run of a big store, nothing for a small one. A big
store's damage is found where a read or write meets it, or by `orch traces check`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import TraceStoreDamaged

__all__ = [
    "QUICK_CHECK_MAX_BYTES",
    "CheckResult",
    "TraceStoreDamaged",
    "check_store",
    "damage_of",
    "forget",
    "known_damage",
    "quick_check",
    "remember",
]

QUICK_CHECK_MAX_BYTES = 16 << 20  # checked at open up to this size (~30-45 ms); see the docstring
_SHOWN = 20  # problems listed at most


def damage_of(exc: BaseException) -> str | None:
    """Why SQLite says the file is damaged, in a few words; None for any other error (a lock, a full disk,
    a file that is no database at all)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    text = str(exc)
    decode = re.match(r"Could not decode to UTF-8 column '([^']*)'", text)
    if decode:  # the text itself may be long, and is the store's data: not repeated
        return f"a text in column {decode.group(1)!r} is not valid UTF-8"
    code = getattr(exc, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF == sqlite3.SQLITE_CORRUPT) or "malformed" in text:
        return text
    return None


def _mark(path: str) -> Path:
    return Path(path + ".damaged")


def known_damage(path: str) -> str | None:
    """Why the file at `path` was found damaged before, if that verdict is about this very file."""
    mark = _mark(path)
    try:
        seen = json.loads(mark.read_text(encoding="utf-8"))
        st = os.stat(path)
    except FileNotFoundError:  # no verdict, or no store any more (moved aside): nothing known
        if mark.exists():
            forget(path)
        return None
    except (OSError, ValueError):
        return None
    if not isinstance(seen, dict) or [seen.get("dev"), seen.get("ino")] != [st.st_dev, st.st_ino]:
        forget(path)  # about a file moved aside since: this one is another
        return None
    return str(seen.get("why") or "found damaged before")


def remember(path: str, why: str) -> None:
    """Keep the verdict beside the file (best effort: a folder we can't write to keeps none)."""
    mark = _mark(path)
    part = mark.with_name(f"{mark.name}.{os.getpid()}.part")
    try:
        st = os.stat(path)
        part.write_text(
            json.dumps({"dev": st.st_dev, "ino": st.st_ino, "why": why, "at": time.time()}), encoding="utf-8"
        )
        os.replace(part, mark)
    except OSError:
        part.unlink(missing_ok=True)


def forget(path: str) -> None:
    """Drop the verdict (the file was found sound, or is gone)."""
    with contextlib.suppress(OSError):
        _mark(path).unlink(missing_ok=True)


def quick_check(conn: sqlite3.Connection, full: bool = False) -> list[str]:
    """SQLite's `quick_check` (or with `full`, `integrity_check`) of an open file: [] when sound, else the
    problems it names, one a line. Another error (a file that is no database at all, a lock) is raised."""
    pragma = "integrity_check" if full else "quick_check"
    try:
        rows = conn.execute(f"pragma {pragma}").fetchall()
    except sqlite3.DatabaseError as exc:  # too damaged to walk at all, or no database
        why = damage_of(exc)
        if why is None:
            raise
        return [why]
    lines = [line for (row,) in rows for line in str(row).splitlines()]
    problems = [line for line in lines if line != "ok" and not line.startswith("*** in database")]
    return problems if problems or lines != ["ok"] else []


@dataclass(frozen=True)
class CheckResult:
    """What `check_store` found."""

    path: str
    check: str  # "quick_check" | "integrity_check"
    problems: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether SQLite found nothing wrong."""
        return not self.problems

    def shown(self) -> list[str]:
        """The problems to print: the first ones, and how many more."""
        more = len(self.problems) - _SHOWN
        return self.problems[:_SHOWN] + ([f"... and {more} more"] if more > 0 else [])

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "path": self.path,
            "ok": self.ok,
            "check": self.check,
            "problems": self.problems,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


def check_store(path: str | Path, *, full: bool = False) -> CheckResult:
    """Check a store file with SQLite's own check, and remember the verdict beside it (a sound file's old
    verdict is dropped). Reads only: nothing is written into the file.

    Example:
        >>> import tempfile
        >>> db = Path(tempfile.mkdtemp()) / "t.db"
        >>> sqlite3.connect(db).execute("create table t (x)").connection.close()
        >>> check_store(db).ok
        True
    """
    name = str(path)
    t0 = time.perf_counter()
    try:
        conn = sqlite3.connect(Path(name).absolute().as_uri() + "?mode=ro", uri=True)
        try:
            problems = quick_check(conn, full)
        finally:
            conn.close()
    except sqlite3.Error as exc:  # e.g. "file is not a database": wrong all the same
        problems = [str(exc)]
    result = CheckResult(
        name, "integrity_check" if full else "quick_check", problems, (time.perf_counter() - t0) * 1000
    )
    if result.ok:
        forget(name)
    else:
        remember(name, problems[0])
    return result
