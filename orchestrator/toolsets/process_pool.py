"""Tools run where a timeout can stop them: synchronous tools execute in worker processes.

A synchronous tool in a thread can't be stopped: a catastrophic regular expression or a huge `round()`
holds the interpreter lock, so it freezes the event loop and every other run in the process, and a timeout
only stops waiting for it. Here each synchronous tool that can be imported by reference (a module-level
tool, as `@tool` makes) runs in a child process; on timeout the child is killed and replaced.

Every tool's output, wherever it runs (a child, the event loop, an MCP server), is capped at
`max_output_chars` with a marker saying how much was cut (`cap_output`); in a child the cut happens before the
result is pickled, so a runaway output never crosses the pipe whole.

Protocol: length-prefixed pickles over the child's stdin and stdout (the child's own `print`s go to
stderr). Requests: `("prepare", sys_path, modules)` and `("call", module, attribute, tool_name, args, cap)`.
Replies: `("ok", result)`, `("error", type_name, message)` or `("unresolved", why)`: the child could not
import the tool, so the parent runs it in process from then on.

Plain `subprocess` rather than `multiprocessing`: no re-import of the user's `__main__`, and blocking
pipes read from a thread work with whatever event loop calls them.

A child dies with its parent however the parent dies (SIGKILL and SIGTERM included, which run no `atexit`):
an idle child reads EOF on its stdin and returns, but a busy one is inside the tool, often in C code that
holds the interpreter lock, where no thread of its own can stop it. So the stop comes from outside the
child's interpreter (`bind_to_parent`): on Linux the kernel's parent-death signal (SIGKILL); elsewhere on
POSIX a forked guard process that waits for the parent's end of the child's stdin to hang up and then kills
the child. Linux sends that signal when the *thread* that spawned the child ends, not the process, so
every child is spawned by one long-lived thread (`_spawn`), never by a pool thread that an event loop's
shutdown ends.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import importlib
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from langchain_core.tools import BaseTool

from orchestrator.tracing.attrs import RUNNER_TAG  # the graph tracer leaves tools so tagged alone

__all__ = [
    "OUTPUT_CAP",
    "RUNNER_TAG",
    "ToolFailed",
    "ToolRunner",
    "bind_to_parent",
    "cap_output",
    "shared_runner",
    "tool_reference",
]

_HEADER = struct.Struct("!I")
OUTPUT_CAP = 20_000  # characters of a tool's output kept (the agent shows the model less: agent/graph.py)


def cap_output(result: Any, limit: int = OUTPUT_CAP) -> Any:
    """`result` unchanged if its text fits in `limit` characters; else its text cut there, with a marker.

    A result that is not a string is measured as the JSON the model would see.
    """
    if isinstance(result, str):
        text = result
    else:
        if isinstance(result, int | float | bool) or result is None:
            return result
        try:
            text = json.dumps(result, ensure_ascii=False, default=str)
        except (TypeError, ValueError):  # e.g. a circular structure: measured by its repr
            text = repr(result)
    if len(text) <= limit:
        return result
    return f"{text[:limit]}\n... [output truncated: {len(text):,} characters, the first {limit:,} kept]"


class ToolFailed(Exception):
    """The tool raised in its process; carries the original exception's type name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def tool_reference(tool: BaseTool) -> tuple[str, str] | None:
    """`(module, attribute)` under which `tool` is importable, for a synchronous tool; else None."""
    if getattr(tool, "coroutine", None) is not None:
        return None  # async tools don't block the loop: they run in process
    func = getattr(tool, "func", None)
    module_name = getattr(func, "__module__", None) or type(tool).__module__
    module = sys.modules.get(module_name or "")
    if module is None or module_name in {"__main__", "__mp_main__"}:
        return None
    for attr, value in vars(module).items():
        if value is tool:
            return module_name, attr
    return None


def _write(stream: IO[bytes], message: Any) -> None:
    blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(blob)) + blob)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError("tool process closed its pipe")
    (size,) = _HEADER.unpack(head)
    blob = stream.read(size)
    if len(blob) < size:
        raise EOFError("tool process closed its pipe")
    return pickle.loads(blob)


# The child's program; `{parent}` is the spawning process's id, which the child dies with
_CHILD_CODE = "from orchestrator.toolsets.process_pool import _serve; _serve({parent})"


class _Process:
    """One child process; used by one call at a time. Create it with `_spawn()`."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE.format(parent=os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        self.path: list[str] = []
        self.loaded: set[str] = set()

    def prepare(self, modules: Sequence[str] = ()) -> None:
        """Send the parent's import path if it changed, and import `modules` ahead of the first call."""
        path = [p for p in sys.path if p]
        new = [m for m in modules if m not in self.loaded]
        if path != self.path or new:
            _write(self.stdin, ("prepare", path, new))
            self.path = path
            self.loaded.update(new)

    def call(self, ref: tuple[str, str], name: str, args: dict[str, Any], cap: int) -> Any:
        self.prepare()
        _write(self.stdin, ("call", ref[0], ref[1], name, args, cap))
        return _read(self.stdout)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        for stream in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                stream.close()


class ToolRunner:
    """Runs tools with a timeout that holds: synchronous importable tools in killable child processes.

    One runner serves the whole process (`shared_runner()`), from any event loop and any thread. At most
    `max_processes` children exist; a call waits for a free one. Children are stopped at exit. Outputs
    longer than `max_output_chars` are cut, with a marker.
    """

    def __init__(
        self, *, max_processes: int = 4, isolate: bool = True, max_output_chars: int = OUTPUT_CAP
    ) -> None:
        self.max_processes = max_processes
        self.isolate = isolate
        self.max_output_chars = max_output_chars
        self._idle: list[_Process] = []
        self._count = 0
        self._lock = threading.Lock()
        self._free = threading.Condition(self._lock)
        self._unresolved: set[tuple[str, str]] = set()
        weakref.finalize(self, _kill_all, self._idle)  # the list object, not self: runs after self is gone

    def warm(self, modules: Sequence[str] = ()) -> None:
        """Have a child ready with `modules` imported, so that its imports overlap other set-up work."""
        if not self.isolate:
            return
        with self._lock:
            if not self._idle and self._count < self.max_processes:
                self._count += 1
                self._idle.append(_spawn())
            if self._idle:
                with contextlib.suppress(OSError):
                    self._idle[-1].prepare(modules)

    def isolated(self, tool: BaseTool) -> bool:
        """Whether `tool` runs in a child process."""
        ref = tool_reference(tool) if self.isolate else None
        return ref is not None and ref not in self._unresolved

    async def run(self, tool: BaseTool, args: dict[str, Any], timeout_s: float) -> Any:
        """Result; `TimeoutError` after `timeout_s` (its child is killed); `ToolFailed` if it raised."""
        ref = tool_reference(tool) if self.isolate else None
        if ref is None or ref in self._unresolved:
            async with asyncio.timeout(timeout_s):
                return cap_output(await tool.ainvoke(args, {"tags": [RUNNER_TAG]}), self.max_output_chars)
        loop = asyncio.get_running_loop()
        acquiring = loop.run_in_executor(None, self._acquire)
        try:
            proc = await asyncio.shield(acquiring)
        except asyncio.CancelledError:  # hand the process back once the waiting thread gets it
            acquiring.add_done_callback(self._release_when_acquired)
            raise
        future = loop.run_in_executor(None, proc.call, ref, tool.name, args, self.max_output_chars)
        try:
            reply = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except BaseException:  # timeout or cancellation: the child may be mid-computation
            proc.kill()
            self._discard()
            with contextlib.suppress(BaseException):
                await future
            raise
        self._release(proc)
        kind = reply[0]
        if kind == "ok":
            return reply[1]
        if kind == "error":
            raise ToolFailed(reply[1], reply[2])
        self._unresolved.add(ref)  # "unresolved": the child can't import it; run it here from now on
        async with asyncio.timeout(timeout_s):
            return cap_output(await tool.ainvoke(args, {"tags": [RUNNER_TAG]}), self.max_output_chars)

    def _acquire(self) -> _Process:
        with self._free:
            while True:
                while self._idle:
                    proc = self._idle.pop()
                    if proc.proc.poll() is None:
                        return proc
                    proc.kill()
                    self._count -= 1
                if self._count < self.max_processes:
                    self._count += 1
                    break
                self._free.wait()
        try:
            return _spawn()
        except BaseException:
            self._discard()
            raise

    def _release_when_acquired(self, acquired: asyncio.Future[_Process]) -> None:
        if not acquired.cancelled() and acquired.exception() is None:
            self._release(acquired.result())

    def _release(self, proc: _Process) -> None:
        with self._free:
            self._idle.append(proc)
            self._free.notify()

    def _discard(self) -> None:
        with self._free:
            self._count -= 1
            self._free.notify()

    def close(self) -> None:
        """Stop the idle children (a call in flight keeps its child until it ends)."""
        with self._lock:
            idle = list(self._idle)
            self._idle.clear()
            self._count -= len(idle)
        _kill_all(idle)


_spawner: tuple[int, ThreadPoolExecutor] | None = None
_spawner_lock = threading.Lock()


def _spawn() -> _Process:
    """A new child, spawned by this process's one long-lived spawning thread (see the module docstring)."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner[0] != os.getpid():  # none yet, or inherited through a fork
            _spawner = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="orch-tool-spawner"))
        pool = _spawner[1]
    return pool.submit(_Process).result()


def _kill_all(procs: list[_Process]) -> None:
    while procs:
        procs.pop().kill()


_shared: ToolRunner | None = None
_shared_lock = threading.Lock()


def shared_runner() -> ToolRunner:
    """The process-wide runner that isolates tools (created on first use, stopped at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ToolRunner()
            atexit.register(_shared.close)
        return _shared


# --- the child ---------------------------------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _set_parent_death_signal() -> bool:
    """Have the kernel SIGKILL this process when its parent ends (Linux); whether that is in place."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _start_guard() -> None:
    """Fork a guard that SIGKILLs this process once the parent's end of our stdin hangs up.

    The parent holds the only writing end of our stdin, so the hang-up means the parent is gone (or closed
    it to stop us). The guard only polls, never reads, so no request is taken from us; it leaves when we end.
    """
    if not hasattr(os, "fork") or not hasattr(select, "poll"):
        return  # e.g. Windows: only an idle child notices (EOF on stdin)
    ours, theirs = os.pipe()  # the guard sees our end of this pipe hang up when we end
    server = os.getpid()
    if os.fork() != 0:
        os.close(ours)
        return
    try:  # the guard: no Python objects of the server's are touched, only descriptors and signals
        os.close(theirs)
        os.close(1)  # the parent reads EOF on our stdout when we end, not when the guard does
        poller = select.poll()
        poller.register(0, 0)  # hang-ups and errors are always reported
        poller.register(ours, 0)
        while True:
            events = dict(poller.poll())
            if ours in events:  # the server ended first
                break
            if events.get(0, 0) & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                with contextlib.suppress(OSError):
                    os.kill(server, signal.SIGKILL)
                break
    finally:
        os._exit(0)


def bind_to_parent(parent: int, *, death_signal: bool = True) -> None:
    """Make this child die with `parent` however it dies (see the module docstring); also used by the
    worker processes of `orchestrator.evals.fanout`, which read their requests from stdin the same way."""
    if death_signal and _set_parent_death_signal():
        if os.getppid() != parent:  # it ended before the signal was in place: nobody will send it
            os._exit(0)
        return
    if os.getppid() != parent:
        os._exit(0)
    _start_guard()


def _serve(parent: int | None = None, *, death_signal: bool = True) -> None:
    if parent is not None:
        bind_to_parent(parent, death_signal=death_signal)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a tool's print() must not corrupt the protocol
    inp = sys.stdin.buffer
    tools: dict[tuple[str, str], BaseTool] = {}
    while True:
        try:
            request = _read(inp)
        except EOFError:
            return
        if request[0] == "prepare":
            sys.path[:] = request[1]
            for name in request[2]:
                with contextlib.suppress(Exception):
                    importlib.import_module(name)
            continue
        _, module_name, attr, name, args, cap = request
        key = (module_name, attr)
        if key not in tools:
            try:
                found = getattr(importlib.import_module(module_name), attr)
            except Exception as exc:  # reported to the parent, which runs the tool itself
                _write(out, ("unresolved", f"{type(exc).__name__}: {exc}"))
                continue
            if not isinstance(found, BaseTool) or found.name != name:
                _write(out, ("unresolved", f"{module_name}:{attr} is not the tool {name!r}"))
                continue
            tools[key] = found
        try:
            reply: tuple[Any, ...] = ("ok", cap_output(tools[key].invoke(args), cap))
            blob = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # the parent turns it into an observation
            reply = ("error", type(exc).__name__, cap_output(str(exc), cap))
            blob = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_HEADER.pack(len(blob)) + blob)
        out.flush()
