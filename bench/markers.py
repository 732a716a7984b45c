"""What every benchmark shares: writing its section of a doc between its own markers (the rest kept as it is),
and one line naming the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def splice(
    doc: Path, block: str, start: str, end: str, title: str, *, before: str = "", after: str = ""
) -> None:
    """Replace what lies from `start` to `end` (both included) in `doc` with `block`, which holds both
    markers. A doc without them gets the block just after `after` or before `before` (when given and found),
    else at its end; a missing doc starts with `title`. The file is read just before it is written: other
    benchmarks keep their sections in it."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else f"# {title}\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    elif after and after in text:
        head, tail = text.split(after, 1)
        text = head + after + "\n\n" + block + tail
    elif before and before in text:
        head, tail = text.split(before, 1)
        text = head + block + "\n\n" + before + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")


def machine() -> str:
    """The machine, for a section's first line: cores, CPU model, memory, Python, OS."""
    cpu = platform.processor() or platform.machine() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = ""
    try:
        gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        memory = f", {gib:.0f} GiB"
    except (AttributeError, ValueError, OSError):
        pass
    return (
        f"{os.cpu_count()} cores, {cpu}{memory}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}"
    )
