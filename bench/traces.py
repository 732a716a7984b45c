"""The trace store at scale: ingest through the real OpenTelemetry exporter, then the `top` query.

Fills a fresh store with N realistic spans: runs of a racehorse-led agent (a run span; controller, find_tools,
call_tool and worker node spans; chat spans with tokens, cost, compute time, TTFT; tool spans; some errors),
created by the orchestrator's tracer (or the SDK's: `--sdk`) with the attribute names the orchestrator
records, exported by the store's own processor and exporter. Ingest is timed from the first span created
until the last is committed (the processor's force_flush returns only then), and checked by counting the
rows. Then `top` (the hotspot
query behind `orch traces top`) is timed in process, by node, model and tool, over the whole store; and
`orch traces top` in a subprocess, for the wall time a user sees.

Run: `.venv/bin/python bench/traces.py --spans 1000000 [--procs P] [--sdk] [--json] [--store FILE]`, or
`--docs` to measure with one and two producer processes (and one on the SDK path) and write the section of
docs/benchmarks.md. Spans are made as the orchestrator makes them (its tracer's plain span records), or with
`--sdk` through the OpenTelemetry SDK's tracer (the path before records), for comparison.

PostgreSQL (`--postgres URL`, or `--postgres auto` to start a throwaway server from the machine's PostgreSQL
binaries, as tests/pgserver.py does, with its default durability settings): the same, into a fresh database
made on that server for the run (and dropped after). With `--docs`, the table goes to
bench/results/traces_postgres.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import pwd
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.trace import Status, StatusCode  # noqa: E402

from bench.markers import splice  # noqa: E402
from orchestrator.tracing import attrs as A  # noqa: E402
from orchestrator.tracing.report import hotspots  # noqa: E402
from orchestrator.tracing.setup import (  # noqa: E402
    SCOPE,
    NodeFlushSpanProcessor,
    SQLiteSpanExporter,
    Tracing,
)
from orchestrator.tracing.store import TraceStore  # noqa: E402

MODELS = {  # model -> (provider, slot, role, $/input token, $/output token); local models cost 0
    "openai:gpt-4o": ("openai", "controller", "racehorse", 2.5e-6, 1e-5),
    "openai:gpt-4o-mini": ("openai", "extract", "workhorse", 1.5e-7, 6e-7),
    "anthropic:claude-haiku-4-5": ("anthropic", "classify", "workhorse", 1e-6, 5e-6),
    "local:qwen2.5-0.5b": ("local", "summarize", "workhorse", 0.0, 0.0),
}
TOOLS = ("date_diff", "word_count", "currency_convert", "weather_lookup", "search_docs", "calculator")


def _run(tracer: Any, rng: random.Random, run_no: int, start: Callable[[str], None] | None = None) -> int:
    """One agent run's spans (recorded as a run first by `start`, as the runner does); returns how many
    were made."""
    run_id = f"bench-{run_no:08d}"
    if start is not None:
        start(run_id)
    made = 0
    with tracer.start_as_current_span(
        "invoke_workflow assistant",
        attributes={
            A.KIND: "run",
            A.RUN_ID: run_id,
            A.OPERATION: "invoke_workflow",
            A.WORKFLOW_NAME: "assistant",
        },
    ):
        made += 1
        for step in range(rng.randint(3, 6)):
            node = ("controller", "find_tools", "call_tool", "worker")[step % 4]
            with tracer.start_as_current_span(
                f"invoke_agent {node}" if node in ("controller", "worker") else node,
                attributes={A.KIND: "node", A.RUN_ID: run_id, A.NODE: node},
            ):
                made += 1
                if node in ("controller", "worker"):
                    model = "openai:gpt-4o" if node == "controller" else rng.choice(list(MODELS)[1:])
                    provider, slot, role, pin, pout = MODELS[model]
                    tin, tout = rng.randint(200, 3000), rng.randint(10, 400)
                    cached = rng.choice((0, 0, tin // 2))
                    attributes = {
                        A.KIND: "chat",
                        A.RUN_ID: run_id,
                        A.NODE: node,
                        A.OPERATION: "chat",
                        A.PROVIDER: provider,
                        A.REQUEST_MODEL: model,
                        A.RESPONSE_MODEL: model,
                        A.SLOT: slot,
                        A.ROLE: role,
                        A.INPUT_TOKENS: tin,
                        A.OUTPUT_TOKENS: tout,
                        A.CACHE_READ: cached,
                        A.COST: (tin - cached) * pin + cached * pin / 2 + tout * pout,
                        A.TTFT_MS: rng.uniform(80, 900),
                        A.TOKENS_PER_S: rng.uniform(20, 200),
                        A.FINISH_REASONS: ("stop",),
                    }
                    if provider == "local":
                        attributes[A.COMPUTE_MS] = rng.uniform(200, 4000)
                    with tracer.start_as_current_span(f"chat {model}", attributes=attributes) as span:
                        made += 1
                        if rng.random() < 0.02:
                            span.set_status(Status(StatusCode.ERROR, "rate limited"))
                            span.set_attribute(A.ERROR_TYPE, "429")
                elif node == "call_tool":
                    tool = rng.choice(TOOLS)
                    with tracer.start_as_current_span(
                        f"execute_tool {tool}",
                        attributes={A.KIND: "tool", A.RUN_ID: run_id, A.NODE: node, A.TOOL_NAME: tool},
                    ) as span:
                        made += 1
                        if rng.random() < 0.05:
                            span.set_status(Status(StatusCode.ERROR, "tool failed"))
    return made


def _produce(
    store_path: str, spans: int, seed: int, first_run: int, start_at: float, sdk: bool = False
) -> tuple[int, int, float, float]:
    """One producer process: its runs' spans into the store; (spans, runs, time the last was committed,
    CPU seconds the process spent, its writer thread included). Spans are made as the orchestrator makes
    them (`Tracing.tracer`: plain records), or, with `sdk`, through the OpenTelemetry SDK's tracer with the
    store's processor on its provider (the path before records, for comparison)."""
    store = TraceStore(store_path)
    tracing: Tracing | None = None
    processor: NodeFlushSpanProcessor | None = None
    provider: TracerProvider | None = None
    if sdk:
        provider = TracerProvider()
        processor = NodeFlushSpanProcessor(SQLiteSpanExporter(store))
        provider.add_span_processor(processor)
        tracer: Any = provider.get_tracer(SCOPE)
    else:
        tracing = Tracing(store)
        tracer = tracing.tracer
    if tracing is not None:  # as the runner records a run: its row goes with the span writer's next commit
        start = partial(tracing.start_run, graph="assistant", config_hash="bench", version="bench")
    else:  # the path before: a commit of its own per run, on the producer's thread
        start = partial(store.start_run, graph="assistant", config_hash="bench", version="bench")
    rng = random.Random(seed)
    while time.time() < start_at:  # all producers start together
        time.sleep(0.001)
    cpu0 = time.process_time()
    made = runs = 0
    while made < spans:
        made += _run(tracer, rng, first_run + runs, start)
        runs += 1
    if tracing is not None:
        tracing.flush()  # returns once everything handed over is committed
    elif processor is not None:
        processor.force_flush()
    done, cpu = time.time(), time.process_time() - cpu0
    if tracing is not None:
        tracing.close()
    if provider is not None:
        provider.shutdown()
    store.close()
    return made, runs, done, cpu


def ingest(
    store_path: Path | str, spans: int, procs: int = 1, seed: int = 7, sdk: bool = False
) -> dict[str, Any]:
    TraceStore(store_path).close()  # created and migrated before the clock starts
    start_at = time.time() + (1.5 if procs > 1 else 0.0)
    if procs == 1:
        results = [_produce(str(store_path), spans, seed, 0, start_at, sdk)]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(procs) as pool:
            results = pool.starmap(
                _produce,
                [
                    (str(store_path), spans // procs, seed + i, i * 10_000_000, start_at, sdk)
                    for i in range(procs)
                ],
            )
    made = sum(r[0] for r in results)
    elapsed = max(r[2] for r in results) - start_at
    store = TraceStore(store_path)
    stored = store.rows("select count(*) from spans")[0][0]
    store.close()
    return {
        "procs": procs,
        "path": "sdk" if sdk else "records",
        "spans": made,
        "runs": sum(r[1] for r in results),
        "stored": stored,
        "lost": made - stored,
        "ingest_s": round(elapsed, 3),
        "ingest_spans_per_s": round(made / elapsed),
        "cpu_us_per_span": round(sum(r[3] for r in results) / made * 1e6, 1),
    }


def time_top(store_path: Path | str, repeats: int = 3) -> dict[str, Any]:
    store = TraceStore(store_path)
    out: dict[str, Any] = {}
    for by in ("node", "model", "tool"):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rows = hotspots(store, by)  # type: ignore[arg-type]
            times.append((time.perf_counter() - t0) * 1000)
        out[by] = {"ms": round(statistics.median(times), 1), "rows": len(rows)}
    store.close()
    out["top_ms"] = out["node"]["ms"]
    return out


def cli_top(store_path: Path | str, repeats: int = 3) -> float:
    """The median wall time of `orch traces top --json` in a subprocess (Python start-up included)."""
    return statistics.median(_cli_top(store_path) for _ in range(repeats))


def _cli_top(store_path: Path | str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "traces", "top", "--traces", str(store_path), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return round((time.perf_counter() - t0) * 1000, 1)


def measure(
    spans: int, procs: int, keep: Path | None = None, postgres: str | None = None, sdk: bool = False
) -> dict[str, Any]:
    if postgres is not None:
        with _fresh_database(postgres) as url:
            result = _measure(url, spans, procs, sdk)
            result["store_mb"] = _pg_size_mb(url)
            result["postgres"] = _pg_version(url)
            return result
    tmp = Path(tempfile.mkdtemp(prefix="orch-traces-"))
    path = keep or tmp / "traces.db"
    if path.exists():
        raise SystemExit(f"{path} exists: give a fresh path")
    result = _measure(path, spans, procs, sdk)
    result["store_mb"] = round(path.stat().st_size / 1e6, 1)
    if keep is None:
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    return result


def _measure(store: Path | str, spans: int, procs: int, sdk: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "load_before": round(os.getloadavg()[0], 2),
    }
    result.update(ingest(store, spans, procs, sdk=sdk))
    top = time_top(store)
    result["top_ms"] = top.pop("top_ms")
    result["top"] = top
    result["cli_top_wall_ms"] = cli_top(store)
    return result


# --- PostgreSQL ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _fresh_database(given: str) -> Iterator[str]:
    """A new database for one measurement, on the server given (or, for "auto", a throwaway one)."""
    import psycopg

    with contextlib.ExitStack() as stack:
        server = stack.enter_context(_throwaway_server()) if given == "auto" else given
        name = f"orch_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"create database {name}")
        try:
            yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
        finally:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f"drop database if exists {name} with (force)")


@contextlib.contextmanager
def _throwaway_server() -> Iterator[str]:
    """PostgreSQL from the machine's binaries on a free loopback port, its data in a temp folder (run as
    nobody when we are root: the server refuses root); stopped and removed after."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parent.parent.name)
    bindir = found[-1].parent if found else Path(shutil.which("initdb") or "initdb").parent
    folder = Path(tempfile.mkdtemp(prefix="orch-bench-pg-"))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "HOME": str(folder)}

    def pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bindir / args[0]), *args[1:]], capture_output=True, text=True, env=env, cwd=folder,
            timeout=300, check=False, **run_as,
        )  # fmt: skip

    data = folder / "data"
    init = pg("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
    if init.returncode != 0:
        raise SystemExit(f"initdb failed: {init.stderr}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
    started = pg("pg_ctl", "-D", str(data), "-l", str(folder / "log"), "-w", "-o", options, "start")
    if started.returncode != 0:
        raise SystemExit(f"pg_ctl start failed: {started.stderr}{started.stdout}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _pg_size_mb(url: str) -> float:
    import psycopg

    from orchestrator.tracing.pg import SCHEMA

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select sum(pg_total_relation_size(c.oid)) from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace where n.nspname = %s and c.relkind = 'r'",
            (SCHEMA,),
        ).fetchone()
    return round(float(row[0] if row and row[0] else 0) / 1e6, 1)


def _pg_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("show server_version").fetchone()
    return str(row[0] if row else "?").split()[0]


START, END = "<!-- traces:start -->", "<!-- traces:end -->"


def render(runs: list[dict[str, Any]]) -> str:
    first = runs[0]
    lines = [
        START,
        "## The trace store at scale",
        "",
        f"`bench/traces.py`, {time.strftime('%Y-%m-%d')}, {first['machine']} (load average before each run in "
        "the table: a shared machine). Realistic agent runs (a run span; controller, find_tools, call_tool and "
        "worker node spans; chat spans with tokens, cost, compute time, TTFT; tool spans; 2-5% errors) created "
        "as the orchestrator creates them (`records`: its tracer's plain span records; `sdk`: the OpenTelemetry "
        "SDK tracer, the path before, for comparison) with the orchestrator's attributes, each run recorded in "
        "`runs` first as the runner does, written by the store's own processor; ingest is timed from the first "
        "span created until the last is committed, and the rows are counted; CPU is the producer processes' "
        "(their writer threads included) per span. `top` is `hotspots()` over the whole "
        "store, in process (median of 3); the CLI's wall time (`orch traces top --json` in a subprocess, Python "
        "start-up included) beside it.",
        "",
        "| spans | span path | producer processes | load | ingest spans/s | CPU µs/span | lost | "
        "top by node / model / tool (ms) | CLI wall (ms) | store MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        t = r["top"]
        lines.append(
            f"| {r['spans']:,} | {r['path']} | {r['procs']} | {r['load_before']} | {r['ingest_spans_per_s']:,} | "
            f"{r['cpu_us_per_span']} | {r['lost']} | {t['node']['ms']} / {t['model']['ms']} / {t['tool']['ms']} | "
            f"{r['cli_top_wall_ms']} | {r['store_mb']} |"
        )
    lines += ["", END]
    return "\n".join(lines)


def write_docs(section: str) -> None:
    splice(ROOT / "docs" / "benchmarks.md", section, START, END, "Benchmarks")


def render_postgres(runs: list[dict[str, Any]]) -> str:
    """The PostgreSQL figures, for bench/results/traces_postgres.md (the lead copies them into the docs)."""
    first = runs[0]
    lines = [
        "## The trace store at scale, on PostgreSQL",
        "",
        f"`bench/traces.py --postgres`, {time.strftime('%Y-%m-%d %H:%M %Z')}, {first['machine']}, PostgreSQL "
        f"{first['postgres']} on the same machine (loopback, default durability settings; load average "
        "before each run in the table: a shared machine). The same runs as the SQLite table: spans created "
        "through the OpenTelemetry SDK, each run recorded in `runs` first, exported by the store's own "
        "processor into `ORCH_TRACES=postgresql://...` (copied in per batch, roll-ups upserted in the same "
        "transaction); ingest timed from the first span created until the last is committed, rows counted. "
        "`top` is `hotspots()` in process (median of 3); the CLI's wall time is `orch traces top --json` in "
        "a subprocess (median of 3, Python start-up and the connection included).",
        "",
        "| spans | producer processes | load | ingest spans/s | lost | top by node / model / tool (ms) | "
        "CLI wall (ms) | tables MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        t = r["top"]
        lines.append(
            f"| {r['spans']:,} | {r['procs']} | {r['load_before']} | {r['ingest_spans_per_s']:,} | {r['lost']} | "
            f"{t['node']['ms']} / {t['model']['ms']} / {t['tool']['ms']} | {r['cli_top_wall_ms']} | {r['store_mb']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--procs", type=int, default=1, help="producer processes writing the one store")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--store", help="the store file to fill and keep (default: a temporary file, removed)"
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help="run 1 and 2 producer processes (and 1 on the SDK path) and write docs/benchmarks.md",
    )
    parser.add_argument(
        "--sdk", action="store_true", help="make the spans through the OpenTelemetry SDK's tracer instead"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="measure a PostgreSQL trace store: a fresh database on this server, or 'auto' for a throwaway one",
    )
    args = parser.parse_args()
    if args.docs:
        runs = [measure(args.spans, procs, postgres=args.postgres) for procs in (1, 2)]
        if not args.postgres:
            runs.append(measure(args.spans, 1, sdk=True))
        if args.postgres:
            (ROOT / "bench" / "results" / "traces_postgres.md").write_text(render_postgres(runs))
        else:
            write_docs(render(runs))
        print(json.dumps(runs, indent=2))
        return
    keep = Path(args.store) if args.store else None
    result = measure(args.spans, args.procs, keep, postgres=args.postgres, sdk=args.sdk)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
