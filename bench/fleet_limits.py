"""Per-call overhead of a fleet-wide model cap: the PostgreSQL limiter (`providers/fleet_limits.py`) against a
DBOS queue per model with each call as its own workflow (issue 26, item 3).

Both hold one model's `max_concurrency` across processes; the question is what each costs per model call.
The call body is trivial (nothing), so what is measured is the cap's own cost, on the same PostgreSQL:

* limiter: `ModelState.acquire()` + `release()` with `use_fleet_limits(url)` installed: one slot statement
  (SKIP LOCKED) and one release statement (NOTIFY) per call, plus the process's own AIMD slot.
* budget (for comparison): `PostgresBudget.reserve` + `charge` + `release`, what the fleet's budget adds to
  a priced call (three statements on the caller's thread, synchronous).
* dbos: `queue.enqueue(call)` + `handle.get_result()`, the queue registered with `global_concurrency` = the
  cap; the executor dequeues by polling the queue every `polling_interval_sec` (DBOS's default 1 s, and a
  fast 10 ms), runs the workflow (its status rows written), and the caller polls for the result at the same
  interval (`get_result(polling_interval_sec=...)`, whose default is also 1 s).

Each is measured two ways, by P processes at once (P in --procs):
* latency: each process makes its calls one after another: ms per call (the median and p95);
* throughput: each process keeps C calls in flight (cap 64, so nobody waits for a slot): calls/s in all.
The cap is not what limits either here (64 > P x C is not required: the limiter's slots are all free when
P x C <= 64); what limits is the statements each call costs.

Run: `.venv/bin/python bench/fleet_limits.py [--url postgresql://...] [--calls 400] [--procs 1 4]`; without
--url it starts a throwaway PostgreSQL server from the machine's binaries (as tests/pgserver.py does).
Prints a Markdown table (bench/results/fleet_limits.md holds the one measured here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CAP = 64


# --- a throwaway server ---------------------------------------------------------------------------------
@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server on a random loopback port (tests/pgserver.py's, fsync off); yields its URL."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pgserver import start_postgres

    with start_postgres(max_connections=200) as server:
        yield server.url()


def _fresh(url: str) -> str:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    return url.rsplit("/", 1)[0] + "/" + name


# --- the limiter ------------------------------------------------------------------------------------------
def limiter_proc(
    url: str, calls: int, inflight: int, sync: tuple[Any, Any, Any, Any], cap: int, body_s: float
) -> None:
    ready, start, out, finish = sync
    from orchestrator.providers.fleet_limits import use_fleet_limits
    from orchestrator.providers.http import model_state

    limits = use_fleet_limits(url)
    assert limits is not None
    state = model_state("http://127.0.0.1:1/v1", "m", cap)

    async def main() -> list[float]:
        await state.acquire()  # warm: the slot rows, the connection, prepared statements
        await state.release()
        times: list[float] = []

        async def one() -> None:
            t0 = time.perf_counter()
            await state.acquire()
            if body_s:
                await asyncio.sleep(body_s)
            await state.release()
            times.append(time.perf_counter() - t0 - body_s)

        async def lane(n: int) -> None:
            for _ in range(n):
                await one()

        ready.put(os.getpid())
        start.wait()
        await asyncio.gather(*(lane(calls // inflight) for _ in range(inflight)))
        out.put({"times": times, "stats": dict(limits.stats)})
        finish.wait()  # the others may still wait for slots: this process's are given back by now
        await limits.aclose_loop()
        return times

    asyncio.run(main())
    use_fleet_limits(None)


# --- the fleet's budget: what PostgresBudget adds to a call (the same processes, for comparison) -------
def budget_proc(
    url: str, calls: int, inflight: int, sync: tuple[Any, Any, Any, Any], cap: int, body_s: float
) -> None:
    from orchestrator.cost.pg_budget import PostgresBudget

    ready, start, out, finish = sync
    pool = PostgresBudget(url, "bench", usd=1e9)
    times: list[float] = []
    lock = threading.Lock()

    def lane(n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            assert pool.reserve(2000, 0.01) is None
            pool.charge(1500, 0.007)
            pool.release(2000, 0.01)
            with lock:
                times.append(time.perf_counter() - t0)

    lane(1)  # warm
    times.clear()
    ready.put(os.getpid())
    start.wait()
    threads = [threading.Thread(target=lane, args=(calls // inflight,)) for _ in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put({"times": times, "stats": {}})
    finish.wait()
    pool.close()


# --- DBOS -------------------------------------------------------------------------------------------------
def dbos_proc(
    url: str,
    calls: int,
    inflight: int,
    sync: tuple[Any, Any, Any, Any],
    cap: int,
    body_s: float,
    poll: float,
    app: str,
) -> None:
    ready, start, out, finish = sync
    import logging

    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config={"name": app, "system_database_url": url, "log_level": "WARNING"})

    @DBOS.workflow()
    def call(x: int) -> int:
        if body_s:
            time.sleep(body_s)
        return x  # the trivial body: a model call would go here

    DBOS.launch()
    queue = DBOS.register_queue("model-m", global_concurrency=cap, polling_interval_sec=poll)
    queue.enqueue(call, 0).get_result(polling_interval_sec=poll)  # warm
    times: list[float] = []
    lock = threading.Lock()

    def lane(n: int) -> None:
        for i in range(n):
            t0 = time.perf_counter()
            queue.enqueue(call, i).get_result(polling_interval_sec=poll)
            with lock:
                times.append(time.perf_counter() - t0 - body_s)

    ready.put(os.getpid())
    start.wait()
    threads = [threading.Thread(target=lane, args=(calls // inflight,)) for _ in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put({"times": times, "stats": {}})
    finish.wait()  # this process's executor runs the others' workflows too, until every caller has its result
    DBOS.destroy()


def _make_budget(url: str) -> None:
    """Create the budget once, before its processes race to."""
    from orchestrator.cost.pg_budget import PostgresBudget

    PostgresBudget(url, "bench", usd=1e9).close()


def measure(
    kind: str,
    url: str,
    procs: int,
    calls: int,
    inflight: int,
    poll: float,
    cap: int = CAP,
    body_s: float = 0.0,
) -> dict[str, Any]:
    """`procs` processes, `calls` calls each with `inflight` at once; the wall time from one start signal."""
    ctx = multiprocessing.get_context("spawn")
    ready, start, out, finish = ctx.Queue(), ctx.Event(), ctx.Queue(), ctx.Event()
    sync = (ready, start, out, finish)
    db = _fresh(url)
    app = f"bench-{uuid.uuid4().hex[:6]}"
    if kind == "budget":
        _make_budget(db)
        workers = [
            ctx.Process(target=budget_proc, args=(db, calls, inflight, sync, cap, body_s))
            for _ in range(procs)
        ]
    elif kind == "limiter":
        workers = [
            ctx.Process(target=limiter_proc, args=(db, calls, inflight, sync, cap, body_s))
            for _ in range(procs)
        ]
    else:
        workers = [
            ctx.Process(target=dbos_proc, args=(db, calls, inflight, sync, cap, body_s, poll, app))
            for _ in range(procs)
        ]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get(timeout=300)  # each warmed up: imports, connections, DBOS launched, one call made
    t0 = time.perf_counter()
    start.set()
    results = [out.get(timeout=900) for _ in workers]
    wall = time.perf_counter() - t0
    finish.set()
    for w in workers:
        w.join(60)
    times = sorted(t for r in results for t in r["times"])
    n = len(times)
    tries = sum(r["stats"].get("tries", 0) for r in results)
    return {
        "kind": kind if kind != "dbos" else f"dbos (poll {poll * 1000:g} ms)",
        "procs": procs,
        "cap": cap,
        "body_ms": body_s * 1000,
        "inflight": inflight,
        "calls": n,
        "ms_median": 1000 * statistics.median(times),
        "ms_p95": 1000 * times[int(0.95 * (n - 1))],
        "calls_per_s": n / wall,
        "statements_per_call": (tries + n) / n if kind == "limiter" else 3.0 if kind == "budget" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL server URL (a database is made per measurement)")
    parser.add_argument("--calls", type=int, default=400, help="calls per process")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--inflight", type=int, default=16, help="calls in flight per process (throughput)")
    parser.add_argument("--polls", type=float, nargs="+", default=[1.0, 0.01], help="DBOS polling intervals")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run stops its server too
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(postgres())
        rows = []
        for procs in args.procs:
            for inflight in (1, args.inflight):
                calls = args.calls if inflight > 1 else max(50, args.calls // 4)
                rows.append(measure("limiter", url, procs, calls, inflight, 0.0))
                for poll in args.polls:
                    dbos_calls = calls if poll < 0.5 else max(inflight, min(calls, 20 * inflight))
                    rows.append(measure("dbos", url, procs, dbos_calls, inflight, poll))
                print(json.dumps(rows[-1 - len(args.polls) :]), file=sys.stderr, flush=True)
        for procs in args.procs:  # the budget's reserve + charge + release, one call after another
            rows.append(measure("budget", url, procs, max(50, args.calls // 4), 1, 0.0))
        print(json.dumps(rows[-len(args.procs) :]), file=sys.stderr, flush=True)
        # contended: a cap of 4 and 20 ms calls, so slots are waited for: the bound is 4 / 20 ms = 200 calls/s
        procs, calls = max(args.procs), max(40, args.calls // 4)
        rows.append(measure("limiter", url, procs, calls, args.inflight, 0.0, cap=4, body_s=0.02))
        rows.append(measure("dbos", url, procs, calls, args.inflight, min(args.polls), cap=4, body_s=0.02))
        print(json.dumps(rows[-2:]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(
        "| cap held by | processes | in flight each | cap | call body ms | calls | overhead ms/call median | "
        "p95 | calls/s | statements/call |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        spc = f"{r['statements_per_call']:.2f}" if r["statements_per_call"] is not None else "-"
        print(
            f"| {r['kind']} | {r['procs']} | {r['inflight']} | {r['cap']} | {r['body_ms']:g} | {r['calls']} | "
            f"{r['ms_median']:.2f} | {r['ms_p95']:.2f} | {r['calls_per_s']:.0f} | {spc} |"
        )


if __name__ == "__main__":
    main()
