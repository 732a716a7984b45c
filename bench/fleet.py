"""The fleet benchmark: runs through 1, 2 and 4 `orch worker` processes on one PostgreSQL, against a scripted API.

Every run makes 3 model calls to one model; every call streams 100 tokens at 50 tokens/s after a 200 ms TTFT
(2.2 s), and the model is capped at 64 concurrent requests fleet-wide (its `max_concurrency`, held in
PostgreSQL), so the bound is 64 / 2.2 s = 29 calls/s. The server (bench/scripted_api.py, its own process)
refuses a request over 64 with a 429, and reports what it billed and the most it held at once.

Phases (each on a fresh database, a fresh server, fresh workers):
- throughput with 1, 2 and 4 workers: `--runs` runs submitted at once; calls/s as a share of the bound;
- the same with 4 workers, one of them SIGKILLed when half the runs have ended: runs lost, calls paid twice;
- queue wait: 4 workers, runs submitted at a steady 80 % of the bound; p50/p95 wait from enqueue to start;
- budget: 4 workers drawing from one fleet budget capped below what the runs would cost; overshoot.

    python bench/fleet.py                    # the whole benchmark (about 15 minutes here)
    python bench/fleet.py --runs 200 --workers 4 --no-kill --no-queue --no-budget   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from pgserver import start_postgres  # noqa: E402

from bench.markers import machine, splice  # noqa: E402
from bench.profile_top import py_spy, table, top_frames  # noqa: E402

START, END = "<!-- fleet:start -->", "<!-- fleet:end -->"

TTFT, TOKENS, TPS, CAP = 0.2, 100, 50.0, 64
CALL_S = TTFT + TOKENS / TPS
BOUND = CAP / CALL_S  # calls per second the cap allows
PRICE_IN, PRICE_OUT = 1e-6, 2e-6
CALL_USD = (
    20 * PRICE_IN + TOKENS * PRICE_OUT
)  # the server's usage: 20 prompt tokens, TOKENS completion tokens


@dataclass
class Api:
    proc: subprocess.Popen[str]
    url: str

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/stats", timeout=30) as r:
            return dict(json.loads(r.read()))


@contextmanager
def api_server() -> Iterator[Api]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "scripted_api.py"),
            "--port",
            "0",
            "--ttft",
            str(TTFT),
            "--tokens",
            str(TOKENS),
            "--tps",
            str(TPS),
            "--cap",
            str(CAP),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        yield Api(proc, line.split()[-1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def project(folder: Path, api: Api) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.orchestrator]
            default_graph = "three"
            [tool.orchestrator.graphs]
            three = "usergraphs.three_calls:build"
            [tool.orchestrator.slots]
            step = {{ model = "openai-compat:small", base_url = "{api.url}/v1", max_retries = 4, max_concurrency = {CAP}, prices = {{ input = {PRICE_IN}, output = {PRICE_OUT} }} }}
            """
        )
    )
    return folder


@dataclass
class Fleet:
    url: str
    folder: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, n: int, concurrency: int) -> None:
        for i in range(1, n + 1):
            name = f"w{i}"
            log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115
            self.procs[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "orchestrator",
                    "--project",
                    str(self.folder),
                    "worker",
                    "--id",
                    name,
                    "--concurrency",
                    str(concurrency),
                    "--drain-timeout",
                    "5",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if count(self.url, "select count(*) from orch_workers where state = 'running'") >= n:
                return
            if any(p.poll() is not None for p in self.procs.values()):
                break
            time.sleep(0.5)
        raise RuntimeError(f"workers did not start; see {self.folder}/w*.log")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


def count(url: str, sql: str, *params: Any) -> int:
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute(sql, params).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0] or 0) if row else 0


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def fresh_db(server: Any, name: str) -> str:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f"drop database if exists {name}")
        conn.execute(f"create database {name}")
    return str(server.url(name))


async def submit_all(
    folder: Path, env: dict[str, str], runs: int, rate: float | None = None, budget: str | None = None
) -> float:
    """Submit the runs (all at once, or `rate` a second); the time the first was submitted."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("ORCH_")})
    from orchestrator import Budget, Orchestrator

    orch = Orchestrator.from_project(folder)
    shared = None
    if budget is not None:
        from orchestrator.cost.pg_budget import PostgresBudget

        cap = float(budget.split(":")[1])
        shared = PostgresBudget(env["ORCH_CHECKPOINTS"], budget.split(":")[0], usd=cap)
    t0 = time.time()
    try:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                b = Budget(shared=shared) if shared is not None else None
                await orch.submit("three", f"task {i}", run_id=f"run-{i:05d}", budget=b)

        if rate is None:
            await asyncio.gather(*(one(i) for i in range(runs)))
        else:
            for i in range(runs):
                due = t0 + i / rate
                await asyncio.sleep(max(0.0, due - time.time()))
                await one(i)
    finally:
        orch.close()
    return t0


def db_work(url: str) -> dict[str, int]:
    """The fleet database's transactions and rows written so far (pg_stat_database)."""
    row = rows(
        url,
        "select xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted "
        "from pg_stat_database where datname = current_database()",
    )[0]
    return {"transactions": int(row[0]), "rows_written": int(row[1])}


async def run_statuses(url: str) -> dict[str, int]:
    """How the runs ended, as their results say (ok, budget_stop, ...)."""
    from orchestrator.run.jobs import Jobs

    jobs = Jobs(url)
    try:
        states = await jobs.recent(100_000)
    finally:
        jobs.close()
    out: dict[str, int] = {}
    for s in states:
        out[s.status] = out.get(s.status, 0) + 1
    return out


def wait_ended(url: str, runs: int, on_half: Any = None, timeout: float = 1800) -> dict[str, int]:
    """Wait for every run to end; the most database connections seen meanwhile (sampled every 0.5 s)."""
    deadline = time.monotonic() + timeout
    fired = False
    peak = {"connections": 0}
    while time.monotonic() < deadline:
        peak["connections"] = max(
            peak["connections"],
            count(url, "select count(*) - 1 from pg_stat_activity where backend_type = 'client backend'"),
        )
        done = count(
            url,
            "select count(*) from dbos.workflow_status where name = 'orch_run' and "
            "status in ('SUCCESS', 'ERROR', 'CANCELLED')",
        )
        if on_half is not None and not fired and done >= runs // 2:
            on_half()
            fired = True
        if done >= runs:
            return peak
        time.sleep(0.5)
    raise TimeoutError(f"only {done} of {runs} runs ended")


def phase(
    server: Any,
    name: str,
    workers: int,
    runs: int,
    kill: bool = False,
    rate: float | None = None,
    budget_calls: int | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    url = fresh_db(server, f"fleet_{name}")
    folder = Path(tempfile.mkdtemp(prefix=f"orch-fleet-{name}-"))
    with api_server() as api:
        project(folder, api)
        env = {
            **os.environ,
            "ORCH_CHECKPOINTS": url,
            "ORCH_TRACES": str(folder / "traces.db"),
            "PYTHONPATH": str(ROOT / "tests"),
        }
        fleet = Fleet(url, folder, env)
        concurrency = -(-int(CAP * 1.25) // workers)  # enough runs in flight to keep 64 calls going
        fleet.start(workers, concurrency)
        killed: dict[str, Any] = {}
        budget = None if budget_calls is None else f"bench_{name}:{budget_calls * CALL_USD}"

        def kill_one() -> None:
            victim = "w1"
            killed["victim"] = victim
            killed["pending"] = count(
                url,
                "select count(*) from dbos.workflow_status where status = 'PENDING' and executor_id = %s",
                victim,
            )
            fleet.procs[victim].send_signal(signal.SIGKILL)
            killed["at"] = time.time()

        db_before = db_work(url)
        spy = folder / "worker.spy"
        recording = py_spy(fleet.procs["w1"].pid, spy) if profile else contextlib.nullcontext(spy)
        try:
            with recording:
                t0 = asyncio.run(submit_all(folder, env, runs, rate, budget))
                peak = wait_ended(url, runs, kill_one if kill else None)
                t_end = time.time()
                worker_cpu = _cpu_s(fleet.procs["w1"].pid)
        finally:
            fleet.stop()
        stats = api.stats()
    db_after = db_work(url)
    wf = rows(
        url,
        "select status, output, created_at, started_at_epoch_ms, completed_at from dbos.workflow_status "
        "where name = 'orch_run'",
    )
    ledger = count(url, "select count(*) from orch_ledger")
    waits = sorted((r[3] - r[2]) / 1000 for r in wf if r[3] is not None)
    last = max((r[4] for r in wf if r[4] is not None), default=t_end * 1000) / 1000
    elapsed = last - t0
    statuses: dict[str, int] = {}
    for r in wf:
        statuses[r[0]] = statuses.get(r[0], 0) + 1
    out: dict[str, Any] = {
        "phase": name,
        "workers": workers,
        "concurrency_per_worker": concurrency,
        "runs": runs,
        "ended": statuses,
        "elapsed_s": round(elapsed, 1),
        "billed_calls": stats["billed"],
        "ledger_rows": ledger,
        "calls_per_s": round(stats["billed"] / elapsed, 2),
        "share_of_bound": round(stats["billed"] / elapsed / BOUND, 3),
        "server": stats,
        "peak_db_connections": peak["connections"],
        "db_per_call": {  # the database's work for each billed call: transactions, rows written
            k: round((db_after[k] - db_before[k]) / max(1, stats["billed"]), 1) for k in db_after
        },
        "queue_wait_s": {
            "p50": round(statistics.median(waits), 3) if waits else None,
            "p95": round(waits[min(len(waits) - 1, int(0.95 * len(waits)))], 3) if waits else None,
        },
        **({"killed": killed} if killed else {}),
        "worker_cpu_ms_per_call": round(worker_cpu * 1000 / max(1, stats["billed"]), 2)
        if workers == 1
        else None,
    }
    if profile:
        out["profile"] = top_frames(spy, 40)
    out["run_status"] = asyncio.run(run_statuses(url))
    ok = statuses.get("SUCCESS", 0)
    out["runs_lost"] = runs - ok
    out["calls_paid_twice"] = max(0, stats["billed"] - ledger)
    if budget_calls is not None:
        spent = rows(url, "select coalesce(sum((entry::json->>'cost_usd')::float), 0) from orch_ledger")[0][0]
        cap = budget_calls * CALL_USD
        out["budget"] = {
            "cap_usd": cap,
            "spent_usd": spent,
            "billed_usd": stats["billed"] * CALL_USD,
            "overshoot_usd": max(0.0, stats["billed"] * CALL_USD - cap),
        }
    return out


def _cpu_s(pid: int) -> float:
    """A process's CPU seconds so far (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        f"Machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Bound: {CAP} concurrent "
        f"calls / {CALL_S:.1f} s per call = {BOUND:.1f} calls/s.",
        "",
        "| phase | workers | runs | ended ok | elapsed | calls/s | share of bound | max in flight (cap 64) | "
        "429s | queue wait p50 / p95 | runs lost | calls paid twice | peak DB connections |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['phase']} | {r['workers']} | {r['runs']} | {r['ended'].get('SUCCESS', 0)} | {r['elapsed_s']} s | "
            f"{r['calls_per_s']} | {r['share_of_bound']:.0%} | {r['server']['max_in_flight']} | "
            f"{r['server']['refused_429']} | {r['queue_wait_s']['p50']} / {r['queue_wait_s']['p95']} s | "
            f"{r['runs_lost']} | {r['calls_paid_twice']} | {r['peak_db_connections']} |"
        )
    for r in results:
        if "budget" in r:
            b = r["budget"]
            lines.append(
                f"\nBudget ({r['phase']}): cap ${b['cap_usd']:.6f}; the ledger says ${b['spent_usd']:.6f}, the "
                f"server billed ${b['billed_usd']:.6f}; overshoot ${b['overshoot_usd']:.6f}. Runs ended: "
                f"{r['run_status']}."
            )
        if "killed" in r:
            k = r["killed"]
            lines.append(
                f"\nKill ({r['phase']}): {k['victim']} SIGKILLed with {k['pending']} runs in progress."
            )
    work = [
        f"{r['phase']}: {r['db_per_call']['transactions']} transactions and {r['db_per_call']['rows_written']} "
        "rows written"
        for r in results
        if "db_per_call" in r
    ]
    lines.append("\nThe fleet database's work per billed call (pg_stat_database): " + "; ".join(work) + ".")
    for r in results:
        if r.get("worker_cpu_ms_per_call") is not None:
            lines.append(
                f"\nOne worker ({r['phase']}): {r['worker_cpu_ms_per_call']} ms of the worker's CPU per model call "
                "(its process's user + system time over the phase, start-up included, per billed call)."
            )
        if "profile" in r:
            lines += [
                "",
                f"Where the worker's time goes ({r['phase']}; py-spy, {int(r['profile']['samples'][0][1]):,} samples of "
                "its busy threads; inclusive share, the event loop's and threads' plumbing left out):",
                "",
                *table(r["profile"])[:32],
            ]
    s = results[0]["server"]
    lines.append(
        f"\nThe server kept to its script: TTFB median {s['ttfb_s']['median']} s (script {TTFT}), call duration "
        f"median {s['duration_s']['median']} s, p95 {s['duration_s']['p95']} s (script {CALL_S:.1f})."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    p.add_argument("--no-kill", action="store_true")
    p.add_argument("--no-queue", action="store_true")
    p.add_argument("--no-budget", action="store_true")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "fleet.md"))
    p.add_argument("--docs", action="store_true", help="also write the section of docs/benchmarks.md")
    p.add_argument("--profile", action="store_true", help="record the 1-worker phase's worker with py-spy")
    a = p.parse_args()
    results = []
    with start_postgres(max_connections=500) as server:
        for n in (int(x) for x in a.workers.split(",")):
            results.append(phase(server, f"w{n}", n, a.runs, profile=a.profile and n == 1))
            print(json.dumps(results[-1]), flush=True)
        if not a.no_kill:
            results.append(phase(server, "kill", 4, a.runs, kill=True))
            print(json.dumps(results[-1]), flush=True)
        if not a.no_queue:
            rate = 0.8 * BOUND / 3  # runs a second: 80 % of the bound's calls
            results.append(phase(server, "steady80", 4, int(rate * 90), rate=rate))
            print(json.dumps(results[-1]), flush=True)
        if not a.no_budget:
            results.append(phase(server, "budget", 4, 100, budget_calls=150))
            print(json.dumps(results[-1]), flush=True)
    text = report(results)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("# Fleet benchmark (bench/fleet.py)\n\n" + text)
    Path(a.out).with_suffix(".json").write_text(json.dumps(results, indent=2))
    if a.docs:
        block = f"{START}\n## A fleet: runs through worker processes on one PostgreSQL\n\n{text}{END}"
        splice(
            ROOT / "docs" / "benchmarks.md",
            block,
            START,
            END,
            "Benchmarks",
            before="## The local engine on this CPU",
        )
    print(text)


if __name__ == "__main__":
    main()
