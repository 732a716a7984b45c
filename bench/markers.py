"""One way for a benchmark to write its section of a doc: between its own markers, the rest kept as it is."""

from __future__ import annotations

from pathlib import Path


def splice(doc: Path, block: str, start: str, end: str, title: str) -> None:
    """Replace what lies from `start` to `end` (both included) in `doc` with `block`, which holds both
    markers; a doc without them gets the block at its end, a missing doc starts with `title`. The file is
    read just before it is written: other benchmarks keep their sections in it."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else f"# {title}\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")
