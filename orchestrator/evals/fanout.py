"""Items fanned out to local worker processes: `orch eval --workers N` and `orch trial --workers N`.

An item runner is a picklable callable (a frozen dataclass at module level): one item in, one picklable
result out (`ItemRunner`). `fan_out` starts N worker processes, sends each the runner once, then one item at a
time to whichever is free, and returns the results in the items' order whatever order they finish in;
`on_result(index, result)` sees each as it finishes. Any other transport (a durable queue) can call the same
runner on one item.

Each worker builds what the runner needs once and keeps it for its items (`project_orchestrator`: its own
Orchestrator from the project, with its own model engines: a local GGUF model loads once per worker
process). Runs in several processes write the same trace and checkpoint stores: the SQLite stores take
several writers (WAL, waits on the write lock; the checkpointer's tables are made by the caller before the
workers start, as its set-up lock holds within one process), and run ids are random (uuid4), so they stay
unique. An item's result does not depend on the items run before it in its process: models decode greedily
(temperature 0) unless a call samples, and a sample has a seed of its own (`agent.workhorse`), so the items
of a fanned-out run equal a serial run's (a slot configured with a temperature above 0 varies from run to
run, serial or not).

Nothing is lost when a worker dies: the item it held runs again, once, in another worker process; a second
death reports the item as failed, with the reason (`failed(item, reason)` makes that result). An exception
the runner raises stops the fan-out and is raised here, as it would be in a serial run. Cancelling (Ctrl-C)
kills every worker; a worker also dies with this process however it dies (the kernel's parent-death signal
on Linux; elsewhere it reads EOF on its pipe once idle), and its own tool processes die with it.

Plain `subprocess` rather than `multiprocessing`, as `orchestrator.toolsets.process_pool`: no re-import of the
user's `__main__`. Protocol: length-prefixed pickles over the worker's stdin and stdout (its own prints go
to stderr). To the worker: `("init", sys_path, runner_pickle)`, then `("item", index, item)`. From it:
`("ready",)`, then `("ok", index, result)` or `("raised", index, exception_pickle, "Type: message")`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from orchestrator.errors import ConfigError, RunError

if TYPE_CHECKING:
    from orchestrator.config import Settings
    from orchestrator.run.orchestrator import Orchestrator

__all__ = ["ItemRunner", "check_workers", "fan_out", "project_orchestrator", "project_root"]

T = TypeVar("T")
R = TypeVar("R")
T_contra = TypeVar("T_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)

_log = logging.getLogger("orchestrator.evals")
_HEADER = struct.Struct("!I")
_CLOSE_WAIT_S = 30.0  # a worker told to stop flushes its traces and closes its stores; then it is killed
# The worker's program; `{parent}` is this process's id, which the worker dies with
_WORKER_CODE = "from orchestrator.evals.fanout import _serve; _serve({parent})"


class ItemRunner(Protocol[T_contra, R_co]):
    """Runs one item in whatever process it is called in; picklable, and so is its result."""

    def __call__(self, item: T_contra, /) -> R_co: ...


def check_workers(workers: int) -> None:
    """A ConfigError for a worker count below 1 (the CLI's argument type refuses those first)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(
            f"workers must be a whole number, 1 or more (got {workers!r}); 1 runs the items in turn"
        )


class _Died(Exception):
    """The worker process ended: while it held an item (`held`), or before it was given one."""

    def __init__(self, held: bool) -> None:
        super().__init__()
        self.held = held


class _Worker:
    """One worker process, given one item at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, runner_blob: bytes, spawned: set[asyncio.subprocess.Process] | None = None
    ) -> _Worker:
        creating = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _WORKER_CODE.format(parent=os.getpid()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        )
        if spawned is not None:  # every process started is known to the fan-out, whatever happens next
            creating.add_done_callback(
                lambda f: None if f.cancelled() or f.exception() is not None else spawned.add(f.result())
            )
        try:
            proc = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # cancelled while the process started (another worker's item raised): it is killed and reaped
            # here, or its transport outlived the event loop ("Event loop is closed" on the command's stderr)
            with contextlib.suppress(Exception):
                await cls(await creating).kill()
            raise
        worker = cls(proc)
        try:
            await worker._send(("init", [p for p in sys.path if p], runner_blob))
            reply = await worker._receive()
        except _Died:
            code = await proc.wait()
            raise RunError(
                f"a worker process ended before it was ready ({_how(code)}; its error, if any, is above): "
                "run with --workers 1 to see the error in this process"
            ) from None
        except BaseException:
            await worker.kill()
            raise
        if reply != ("ready",):
            await worker.kill()
            raise RunError(f"a worker process answered {reply!r} to its start, not ready")
        return worker

    async def run(self, index: int, item: Any) -> tuple[Any, ...]:
        """The worker's reply for one item; `_Died` when it ends first."""
        await self._send(("item", index, item))
        reply: tuple[Any, ...] = await self._receive()
        return reply

    async def _send(self, message: Any) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            stdin.write(_HEADER.pack(len(blob)) + blob)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:  # it ended before it read this
            raise _Died(held=False) from exc

    async def _receive(self) -> Any:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            (size,) = _HEADER.unpack(await stdout.readexactly(_HEADER.size))
            return pickle.loads(await stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            raise _Died(held=True) from exc

    async def died(self) -> str:
        """How the process ended, for the report (it is reaped here)."""
        return f"worker process {self.proc.pid} {_how(await self.proc.wait())}"

    async def close(self) -> None:
        """Ask it to stop (EOF on its stdin) and wait; killed if it does not stop in time."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), _CLOSE_WAIT_S)
        except TimeoutError:
            await self.kill()
        except asyncio.CancelledError:
            await self.kill()
            raise
        self._release()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        # reaped even when the caller is cancelled: no zombie is left behind
        await asyncio.shield(self.proc.wait())
        self._release()

    def _release(self) -> None:
        """Close the process's transport and pipes now, on this loop: left to the garbage collector after the
        loop ended, asyncio printed 'Event loop is closed' with a traceback on the command's stderr."""
        transport = getattr(self.proc, "_transport", None)
        if transport is not None:
            transport.close()


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


async def fan_out(
    runner: ItemRunner[T, R],
    items: Sequence[T],
    workers: int,
    *,
    failed: Callable[[T, str], R],
    on_result: Callable[[int, R], None] | None = None,
) -> list[R]:
    """Run `runner` on every item in `workers` worker processes; the results in the items' order.

    A worker that dies takes its item with it: the item runs again once, in another worker process, and after
    a second death `failed(item, reason)` is its result. An exception raised by the runner is raised here
    (the other workers are stopped first). Cancelled, every worker is killed.
    """
    check_workers(workers)
    if not items:
        return []
    blob = pickle.dumps(runner, protocol=pickle.HIGHEST_PROTOCOL)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(items)):
        queue.put_nowait(index)
    results: dict[int, R] = {}
    deaths: dict[int, list[str]] = {}
    finished = asyncio.Event()
    live: set[_Worker] = set()
    spawned: set[asyncio.subprocess.Process] = set()

    def finish(index: int, result: R) -> None:
        results[index] = result
        if on_result is not None:
            on_result(index, result)
        if len(results) == len(items):
            finished.set()

    async def drive() -> None:
        worker: _Worker | None = None
        try:
            while True:
                index = await queue.get()
                if worker is None:
                    worker = await _Worker.start(blob, spawned)
                    live.add(worker)
                try:
                    reply = await worker.run(index, items[index])
                except _Died as death:
                    live.discard(worker)
                    how = await worker.died()
                    worker = None
                    seen = deaths.setdefault(index, [])
                    if death.held:  # a worker that ended between items did not take this one with it
                        seen.append(how)
                    where = f"item {index + 1} of {len(items)}"
                    if len(seen) < 2:
                        if death.held:
                            _log.warning("%s while running %s; it runs again in another", how, where)
                        queue.put_nowait(index)  # once more, in whichever worker is free next
                    else:
                        _log.warning("%s while running %s, which is reported failed", how, where)
                        finish(index, failed(items[index], f"{'; then '.join(seen)}, while running it"))
                    continue
                if reply[0] == "raised":
                    raise _exception(reply[2], reply[3])
                finish(index, reply[2])
        finally:
            if worker is not None:
                live.discard(worker)
                if finished.is_set():
                    await worker.close()
                else:
                    await worker.kill()

    drivers = [asyncio.create_task(drive()) for _ in range(min(workers, len(items)))]
    waiting = asyncio.create_task(finished.wait())
    try:
        while not finished.is_set():
            await asyncio.wait([waiting, *drivers], return_when=asyncio.FIRST_COMPLETED)
            for task in drivers:
                error = task.exception() if task.done() else None
                if error is not None:
                    raise error
    finally:
        waiting.cancel()
        for task in drivers:
            task.cancel()
        # every worker stopped (closed when all is done, else killed) before this returns or raises
        await asyncio.gather(*drivers, return_exceptions=True)
        for worker in list(live):
            await worker.kill()
        for proc in spawned:  # any process a cancelled start left behind: killed and reaped on this loop
            await _Worker(proc).kill()
    return [results[index] for index in range(len(items))]


def _exception(blob: bytes | None, text: str) -> BaseException:
    """The runner's exception as raised in the worker; a RunError with its text when it can't be rebuilt."""
    if blob is not None:
        with contextlib.suppress(Exception):
            exc = pickle.loads(blob)
            if isinstance(exc, BaseException):
                return exc
    return RunError(f"in a worker process: {text}")


def project_root(orch: Orchestrator) -> Path:
    """The project folder worker processes build their Orchestrators from; a ConfigError without one."""
    root = orch.manifest.root
    if root is None:
        raise ConfigError(
            "workers above 1 run the items in worker processes, each building its own Orchestrator from the "
            "project: create this one with Orchestrator.from_project(folder), or run with workers=1"
        )
    return root


# --- in the worker process ---------------------------------------------------------------------------------
_orchestrators: dict[tuple[str, Settings, bool], Orchestrator] = {}


def project_orchestrator(project: str | Path, settings: Settings, *, tracing: bool = True) -> Orchestrator:
    """This process's Orchestrator for the project: built once, with its own models; closed at exit."""
    from orchestrator.run.orchestrator import Orchestrator

    key = (str(project), settings, tracing)
    if key not in _orchestrators:
        if not _orchestrators:
            atexit.register(_close_orchestrators)
        _orchestrators[key] = Orchestrator.from_project(project, settings=settings, tracing=tracing)
    return _orchestrators[key]


def _close_orchestrators() -> None:
    while _orchestrators:
        _, orch = _orchestrators.popitem()
        with contextlib.suppress(Exception):
            orch.close()


def _write(out: Any, message: Any) -> None:
    blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(blob)) + blob)
    out.flush()


def _read(inp: Any) -> Any:
    head = inp.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(head)
    blob = inp.read(size)
    if len(blob) < size:
        raise EOFError
    return pickle.loads(blob)


def _serve(parent: int) -> None:
    """The worker's loop: items in, results out, until EOF on stdin."""
    from orchestrator.toolsets.process_pool import bind_to_parent

    bind_to_parent(parent)  # dies with the parent, however the parent dies
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a tool's or a model's print() must not corrupt the protocol
    inp = sys.stdin.buffer
    try:
        _, path, runner_blob = _read(inp)
        sys.path[:] = path
        runner = pickle.loads(runner_blob)
        _write(out, ("ready",))
        while True:
            _, index, item = _read(inp)
            try:
                reply = pickle.dumps(("ok", index, runner(item)), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # raised in the parent, as in a serial run
                reply = pickle.dumps(("raised", index, _pickled(exc), f"{type(exc).__name__}: {exc}"))
            out.write(_HEADER.pack(len(reply)) + reply)
            out.flush()
    except EOFError:
        return


def _pickled(exc: BaseException) -> bytes | None:
    """The exception pickled, when it survives the round trip; else None (the parent gets its text)."""
    try:
        blob = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(blob)
    except Exception:
        return None
    return blob
