"""A tool's child process dies with its parent, however the parent dies (SIGKILL and SIGTERM run no atexit).

Each test starts a real parent process that runs a runaway regular expression in a child, kills the parent
with a real signal and waits for the child to be gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.toolsets.process_pool import ToolRunner
from support import ROOT
from tools.arithmetic import calculate

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")

PARENT = textwrap.dedent(
    """
    import asyncio, sys
    import orchestrator.toolsets.process_pool as tp
    from tools.extract import regex_find_all

    if sys.argv[1] == "guard":  # the fallback where there is no parent-death signal (not Linux)
        tp._CHILD_CODE = (
            "from orchestrator.toolsets.process_pool import _serve; _serve({parent}, death_signal=False)"
        )
    runner = tp.ToolRunner(max_processes=1)

    async def main() -> None:
        await runner.run(regex_find_all, {"pattern": "a", "text": "a"}, 120)  # the child is up and warm
        print(runner._idle[0].proc.pid, flush=True)
        await runner.run(regex_find_all, {"pattern": "(a|aa)+$", "text": "a" * 59 + "b"}, 600)

    asyncio.run(main())
    """
)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gone(pid: int) -> bool:
    """Whether `pid` has ended (a zombie waiting for its new parent to reap it has ended too)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


def wait_for(condition: object, timeout: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


@pytest.fixture
def parent_process(request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[str]]:
    path = [str(ROOT), str(ROOT / "tests"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT, request.param], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    yield proc
    proc.kill()
    proc.wait(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()


@pytest.mark.parametrize("parent_process", ["death-signal", "guard"], indirect=True)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_runaway_tools_child_dies_with_its_killed_parent(
    parent_process: subprocess.Popen[str], sig: signal.Signals
) -> None:
    assert parent_process.stdout is not None
    line = parent_process.stdout.readline()
    assert line.strip().isdigit(), f"the parent printed {line!r} instead of its child's pid"
    child = int(line)
    helpers = children(child)  # the guard, where there is one
    start = cpu_seconds(child)
    wait_for(lambda: cpu_seconds(child) - start >= 0.5, 120, "the child to run the runaway regex")

    parent_process.send_signal(sig)
    assert parent_process.wait(timeout=60) == -sig

    wait_for(lambda: gone(child), 60, f"the tool child {child} to die after its parent's {sig.name}")
    for pid in helpers:
        wait_for(lambda pid=pid: gone(pid), 60, f"the child's guard {pid} to end")  # type: ignore[misc]


def test_a_child_outlives_the_event_loop_and_thread_that_asked_for_it() -> None:
    """Linux's parent-death signal follows the spawning *thread*: a pool thread must not be the spawner."""
    runner = ToolRunner(max_processes=1)
    try:
        assert asyncio.run(runner.run(calculate, {"expression": "6*7"}, 60)) == 42
        first = runner._idle[0].proc.pid  # asyncio.run has ended its loop and the loop's pool threads
        time.sleep(0.5)  # a kernel signal to the child needs no time to arrive; this is margin, not timing
        assert not gone(first), "the child died with the thread that asked for it"
        assert asyncio.run(runner.run(calculate, {"expression": "2**10"}, 60)) == 1024
        assert runner._idle[0].proc.pid == first
    finally:
        runner.close()
