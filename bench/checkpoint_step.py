"""Checkpoint cost per step: what one graph step's checkpoint I/O costs the process, per checkpointer.

A step, as LangGraph's loop does it with durability="sync": the task's writes (`aput_writes`), then the new
checkpoint (`aput`); each run first reads its latest checkpoint (`aget_tuple`). `--runs` runs at once on one
event loop, `--steps` steps each, state of about `--kib` KiB per checkpoint. Measured: the event loop
thread's CPU per step (`time.thread_time`), the whole process's CPU per step (other threads included:
aiosqlite's, the store's writer), and wall time. Savers:

- `memory`: LangGraph's InMemorySaver (the floor: serialization only);
- `store`: ours, `orchestrator.run.sqlite_saver` (one store per file, group commit, synchronous=FULL);
- `aiosqlite-per-run`: what `Checkpoints.open()` did before: an AsyncSqliteSaver connection per run, set up
  per run under a lock, busy_timeout set;
- `aiosqlite-shared`: one AsyncSqliteSaver for all runs.

Run: `.venv/bin/python bench/checkpoint_step.py [--runs 200] [--steps 9] [--kib 2] [--savers a,b]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from langgraph.checkpoint.base import empty_checkpoint  # noqa: E402

SAVERS = ("memory", "store", "aiosqlite-per-run", "aiosqlite-shared")


@contextlib.asynccontextmanager
async def _per_run(kind: str, path: Path) -> AsyncIterator[Any]:
    """A context per run that yields its saver."""
    if kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        saver = InMemorySaver()

        @contextlib.asynccontextmanager
        async def same() -> AsyncIterator[Any]:
            yield saver

        yield same
    elif kind == "store":
        from orchestrator.run.sqlite_saver import SqliteCheckpointer, SqliteStore

        store = SqliteStore.acquire(path)
        shared = SqliteCheckpointer(store)

        @contextlib.asynccontextmanager
        async def ours() -> AsyncIterator[Any]:
            yield shared

        try:
            yield ours
        finally:
            store.close()
    elif kind == "aiosqlite-shared":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(str(path)) as one:
            await one.setup()

            @contextlib.asynccontextmanager
            async def shared_one() -> AsyncIterator[Any]:
                yield one

            yield shared_one
    else:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        lock = asyncio.Lock()

        @contextlib.asynccontextmanager
        async def each() -> AsyncIterator[Any]:
            async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
                await saver.conn.execute("PRAGMA busy_timeout = 60000")
                async with lock:
                    await saver.setup()
                yield saver

        yield each


async def _scenario(kind: str, runs: int, steps: int, kib: int, folder: Path) -> dict[str, float]:
    payload = "x" * (kib * 1024)

    async def run(i: int, opener: Any) -> None:
        async with opener() as saver:
            parent: Any = {"configurable": {"thread_id": f"r{i}", "checkpoint_ns": ""}}
            await saver.aget_tuple(parent)
            for n in range(steps):
                if n:
                    await saver.aput_writes(parent, [("value", f"{i}-{n}")], task_id=f"t{n}")
                checkpoint = empty_checkpoint()
                checkpoint["channel_values"] = {"value": f"{i}-{n}", "payload": payload}
                parent = await saver.aput(
                    parent, checkpoint, {"source": "loop", "step": n, "parents": {}}, {}
                )

    async with _per_run(kind, folder / f"{kind}.db") as opener:
        await run(-1, opener)  # warm: set-up, imports
        t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
        await asyncio.gather(*(run(i, opener) for i in range(runs)))
        wall, loop_cpu, cpu = time.perf_counter() - t0, time.thread_time() - c0, time.process_time() - p0
    n = runs * steps
    return {"wall_s": wall, "loop_us_per_step": 1e6 * loop_cpu / n, "cpu_us_per_step": 1e6 * cpu / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--kib", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the savers interleaved in each")
    parser.add_argument("--savers", default=",".join(SAVERS))
    args = parser.parse_args()
    kinds = args.savers.split(",")
    results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            with tempfile.TemporaryDirectory() as folder:
                results[kind].append(
                    asyncio.run(_scenario(kind, args.runs, args.steps, args.kib, Path(folder)))
                )
    print(f"{args.runs} runs x {args.steps} steps, {args.kib} KiB state; median of {args.rounds} rounds")
    for kind, rows in results.items():
        med = {key: sorted(r[key] for r in rows)[len(rows) // 2] for key in rows[0]}
        print(
            f"  {kind:18} loop CPU {med['loop_us_per_step']:7.1f} us/step  process CPU "
            f"{med['cpu_us_per_step']:7.1f} us/step  wall {med['wall_s']:6.2f} s"
        )


if __name__ == "__main__":
    main()
