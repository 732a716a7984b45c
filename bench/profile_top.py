"""Where a process's time goes: py-spy's samples of it, summed per function (inclusive and self).

The benchmarks that report "where the remaining time goes" record their client or worker process with py-spy
(`pip install py-spy`; it samples a running process from outside, so the process runs unchanged) and print
the top entries with this module. Inclusive: the share of samples with the function anywhere on the stack
(each function counted once per sample); self: the share with it on top. Samples of threads that only wait
(py-spy's default drops idle ones) are left out by py-spy itself.

    with py_spy(pid, out) as recording: ...   # then top_frames(out)
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_LIB = re.compile(r"/[^ ;]*?/(site-packages|python3\.\d+)/")
_LINE = re.compile(r":\d+\)$")


def available() -> str | None:
    """The py-spy executable beside this Python, or on PATH (None: not installed)."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else shutil.which("py-spy")


@contextlib.contextmanager
def py_spy(pid: int, out: Path, rate: int = 200) -> Iterator[Path]:
    """Record process `pid` with py-spy until the block ends (raw collapsed stacks in `out`)."""
    exe = available()
    if exe is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    proc = subprocess.Popen(
        [exe, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield out
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _name(frame: str) -> str:
    frame = _LINE.sub(")", frame)
    frame = _LIB.sub("", frame)
    return frame.replace(os.getcwd() + "/", "")


def top_frames(raw: Path, n: int = 25, within: str | None = None) -> dict[str, list[tuple[str, float]]]:
    """The `n` functions with the largest inclusive and self shares of the samples (percent); with
    `within`, only samples whose stack holds a frame containing that text (e.g. the event loop's
    `_run_once`)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")[1:]  # the first is the thread
        if within and not any(within in f for f in frames):
            continue
        weight = int(count)
        total += weight
        for name in {_name(f) for f in frames}:
            inclusive[name] += weight
        if frames:
            own[_name(frames[-1])] += weight
    if not total:
        return {"inclusive": [], "self": [], "samples": []}
    return {
        "inclusive": [(k, 100 * v / total) for k, v in inclusive.most_common(n)],
        "self": [(k, 100 * v / total) for k, v in own.most_common(n)],
        "samples": [("samples", float(total))],
    }


def table(
    top: dict[str, list[tuple[str, float]]], skip: tuple[str, ...] = ("asyncio/", "threading.py")
) -> list[str]:
    """Markdown rows: the inclusive entries (without the event loop's and threads' own plumbing). An idle
    event loop shows as `EpollSelector.select`: the share of the samples it spent waiting."""
    rows = ["| inclusive | function (file) |", "|---|---|"]
    for name, share in top["inclusive"]:
        if any(s in name for s in skip) or name.startswith("<module>") or share > 99.5:
            continue  # plumbing, and the process's roots (on every sample)
        rows.append(f"| {share:.1f}% | `{name}` |")
    return rows
