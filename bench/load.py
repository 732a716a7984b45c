"""Load: many concurrent runs through the Python API against a loopback OpenAI-compatible server.

The server (`serve`) is a real HTTP/1.1 server on 127.0.0.1 (`asyncio.start_server`), in a process of its own so
its CPU does not count against the client's event loop. It streams every chat completion as SSE, one token per
chunk, on a script: 200 ms to the first token, then 50 tokens/s, `TOKENS` tokens, then the finish chunk, the
usage chunk and `[DONE]`. A call therefore takes at least 0.2 + 100/50 = 2.2 s. The streams are driven by one
timer that ticks every `TICK_S`: each stream's tokens are due at fixed times after its request arrived and are
written when due (never earlier, at most a tick late), so the server holds thousands of streams on one core.

The runs: a graph of three sequential nodes, each calling its own slot (`runtime.context.model(slot)`), bound to
`openai-compat:` models at the server's base URL with prices set, so every call is budgeted, traced and priced
like any user's. A run makes 3 calls of 100 output tokens; its scripted minimum is 3 x 2.2 = 6.6 s. With N runs
started at once and a server that serves them all concurrently, the ideal wall time is that 6.6 s, so the bound
is N / 6.6 runs/s; throughput is reported as a share of it (equivalently 6.6 s / the measured wall time).

Each client process starts its runs together (after one warm-up run each, which is not counted) and measures:
per-run latency (`arun` call to return), its RSS high-water mark over the runs (`VmHWM`, reset after the warm-up
through /proc/self/clear_refs) against the RSS before them and the most runs it had in flight, its CPU time, and
its event loop's lag. After all processes end, the trace store is read: spans expected (7 per run that ended ok:
the run span, 3 node spans, 3 chat spans) against spans stored. Both store files are created before the clients
start (several processes creating one trace store at once fail: see docs/reliability.md).

Checkpoints (`--checkpoints`): `default` is what the orchestrator does unless given a checkpointer (the SQLite
file, one store per process with group commit: `orchestrator/run/sqlite_saver.py`); `shared` passes one AsyncSqliteSaver per process as `checkpointer=`; `shared-normal`
the same with `synchronous=NORMAL`; `memory` an InMemorySaver per process. The trace store is one file for all.

Run: `.venv/bin/python bench/load.py [--runs 1000] [--procs P] [--checkpoints MODE] [--timeout S] [--json]`, or
`--docs` to run the rows of docs/reliability.md and write its load section (between its markers, nothing else).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import resource
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from langchain_core.messages import HumanMessage  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.runtime import Runtime  # noqa: E402

from bench.markers import machine, splice  # noqa: E402
from bench.profile_top import py_spy, table, top_frames  # noqa: E402
from orchestrator import Orchestrator, RunContext  # noqa: E402
from orchestrator.config import PriceOverride, Settings, SlotConfig  # noqa: E402

FIRST_TOKEN_S = 0.2  # scripted time to the first token
TOKENS_PER_S = 50.0
TOKENS = 100  # output tokens per call
CALLS = 3  # model calls per run
CALL_S = FIRST_TOKEN_S + TOKENS / TOKENS_PER_S  # 2.2 s: the scripted minimum of one call
RUN_S = CALLS * CALL_S  # 6.6 s: of one run
TICK_S = 0.005  # the server's timer: a token is written at most this late
SPANS_PER_RUN = 1 + CALLS + CALLS  # run span, node spans, chat spans
MAX_CONCURRENCY = 1024  # per slot (the configuration's maximum); the default of 16 would cap each model
PRICE_IN, PRICE_OUT = 1e-6, 4e-6  # USD per token, so every call is priced
SLOTS = ("draft", "review", "polish")  # one node per slot, in this order
SECTION_START, SECTION_END = "<!-- load:start -->", "<!-- load:end -->"
DOC = ROOT / "docs" / "reliability.md"


# --- the server ---------------------------------------------------------------------------------------
class _Stream:
    """One streamed reply in progress."""

    __slots__ = ("chunks", "done", "next", "t0", "writer")

    def __init__(self, writer: asyncio.StreamWriter, chunks: list[bytes], t0: float) -> None:
        self.writer = writer
        self.chunks = chunks  # the HTTP chunks after the headers: TOKENS tokens, then finish, usage, [DONE]
        self.t0 = t0
        self.next = 0  # the index of the next chunk to write
        self.done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def due(self, i: int) -> float:
        """When chunk `i` is due: token k at t0 + 0.2 + k/50; the rest when the last token's time is over."""
        k = min(i, TOKENS)
        return self.t0 + FIRST_TOKEN_S + k / TOKENS_PER_S


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _sse(obj: dict[str, Any]) -> bytes:
    return _http_chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


class Server:
    """The scripted OpenAI-compatible server (run it with `serve`)."""

    def __init__(self) -> None:
        self.requests = 0
        self.streams = 0  # in progress
        self.peak_streams = 0
        self.call_s: list[float] = []  # request read -> last chunk written, per call
        self.late_s: list[float] = []  # how late each call's last chunk was written
        self._buckets: dict[int, list[_Stream]] = defaultdict(list)
        self._tokens: dict[str, list[bytes]] = {}

    def _token_chunks(self, model: str) -> list[bytes]:
        chunks = self._tokens.get(model)
        if chunks is None:
            chunks = [
                _sse(
                    {
                        "id": "load",
                        "object": "chat.completion.chunk",
                        "model": model,
                        "choices": [{"index": 0, "delta": {"content": f" w{k}"}, "finish_reason": None}],
                    }
                )
                for k in range(TOKENS)
            ]
            self._tokens[model] = chunks
        return chunks

    def _reply(self, model: str, prompt_chars: int, number: int) -> list[bytes]:
        base = {"id": f"load-{number}", "object": "chat.completion.chunk", "model": model}
        first = _sse(
            {**base, "choices": [{"index": 0, "delta": {"content": f"r{number}"}, "finish_reason": None}]}
        )
        usage = {"prompt_tokens": max(1, prompt_chars // 4), "completion_tokens": TOKENS}
        usage["total_tokens"] = usage["prompt_tokens"] + TOKENS
        return [
            first,  # the first token names the request, so a run's answer shows which call it came from
            *self._token_chunks(model)[1:],
            _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            _sse({**base, "choices": [], "usage": usage}),
            _http_chunk(b"data: [DONE]\n\n"),
            b"0\r\n\r\n",
        ]

    def _schedule(self, stream: _Stream) -> None:
        self._buckets[int(stream.due(stream.next) / TICK_S) + 1].append(stream)

    async def tick(self) -> None:
        """Write every chunk that is due, once per tick."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for key in [k for k in self._buckets if k * TICK_S <= now]:
                for s in self._buckets.pop(key):
                    parts = []
                    while s.next < len(s.chunks) and s.due(s.next) <= now:
                        parts.append(s.chunks[s.next])
                        s.next += 1
                    if s.writer.is_closing():
                        s.done.set_result(now)
                        continue
                    if parts:
                        s.writer.write(b"".join(parts))
                    if s.next < len(s.chunks):
                        self._schedule(s)
                    else:
                        s.done.set_result(now)
            await asyncio.sleep(TICK_S)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection between requests
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET" and path.startswith("/stats"):
                    data = json.dumps(self.stats(reset="reset" in path)).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                        % (len(data), data)
                    )
                    continue
                t0 = loop.time()
                request = json.loads(body)
                self.requests += 1
                prompt = sum(len(str(m.get("content") or "")) for m in request.get("messages", []))
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                stream = _Stream(writer, self._reply(str(request.get("model")), prompt, self.requests), t0)
                self.streams += 1
                self.peak_streams = max(self.peak_streams, self.streams)
                self._schedule(stream)
                try:
                    end = await stream.done
                finally:
                    self.streams -= 1
                self.call_s.append(end - t0)
                self.late_s.append(end - stream.due(len(stream.chunks) - 1))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.transport.abort()

    def stats(self, reset: bool = False) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out = {
            "requests": self.requests,
            "peak_streams": self.peak_streams,
            "call_s": _quantiles(self.call_s),
            "late_s": _quantiles(self.late_s),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        }
        if reset:
            self.requests, self.peak_streams, self.call_s, self.late_s = 0, self.streams, [], []
        return out


def serve(port_out: Any) -> None:
    """The server process: listen on 127.0.0.1, send the port back, serve until terminated."""

    async def main() -> None:
        server = Server()
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, backlog=4096)
        ticker = asyncio.create_task(server.tick())
        port_out.send(listener.sockets[0].getsockname()[1])
        async with listener:
            await listener.serve_forever()
        ticker.cancel()

    asyncio.run(main())


# --- the runs -----------------------------------------------------------------------------------------
class Chain(TypedDict, total=False):
    input: str
    draft: str
    review: str
    answer: str


async def draft(state: Chain, runtime: Runtime[RunContext]) -> dict[str, str]:
    reply = await runtime.context.model("draft").ainvoke(
        [HumanMessage(f"Draft: {state['input']}")], max_tokens=TOKENS
    )
    return {"draft": str(reply.content)}


async def review(state: Chain, runtime: Runtime[RunContext]) -> dict[str, str]:
    reply = await runtime.context.model("review").ainvoke(
        [HumanMessage(f"Review: {state['draft']}")], max_tokens=TOKENS
    )
    return {"review": str(reply.content)}


async def polish(state: Chain, runtime: Runtime[RunContext]) -> dict[str, str]:
    reply = await runtime.context.model("polish").ainvoke(
        [HumanMessage(f"Polish: {state['review']}")], max_tokens=TOKENS
    )
    return {"answer": str(reply.content)}


def build() -> StateGraph[Chain, RunContext, Chain, Chain]:
    g: StateGraph[Chain, RunContext, Chain, Chain] = StateGraph(Chain, context_schema=RunContext)
    g.add_node("draft", draft)
    g.add_node("review", review)
    g.add_node("polish", polish)
    g.add_edge(START, "draft")
    g.add_edge("draft", "review")
    g.add_edge("review", "polish")
    g.add_edge("polish", END)
    return g


CHECKPOINTS = {  # how the runs checkpoint (the ledger is in the checkpoint file in every mode)
    "default": "what the orchestrator does unless given a checkpointer: the SQLite file, one store per process "
    "(a writer thread with group commit, reads on the loop)",
    "shared": "one AsyncSqliteSaver connection per process on the file, passed as Orchestrator(checkpointer=...)",
    "shared-normal": "as shared, with PRAGMA synchronous=NORMAL (WAL commits not fsynced, as the trace store's)",
    "memory": "LangGraph's InMemorySaver per process, passed as Orchestrator(checkpointer=...)",
}


def orchestrator(base_url: str, traces: Path, checkpoints: Path, saver: Any = None) -> Orchestrator:
    """The orchestrator a client process runs: three slots on the loopback server, priced, traced."""
    slots = {
        slot: SlotConfig(
            model=f"openai-compat:load-{slot}",
            base_url=base_url,
            prices=PriceOverride(input=PRICE_IN, output=PRICE_OUT),
            max_concurrency=MAX_CONCURRENCY,
        )
        for slot in SLOTS
    }
    settings = Settings(traces_path=traces, checkpoints_path=checkpoints)  # the ledger's file in every mode
    return Orchestrator(slots=slots, settings=settings, graphs={"load": build}, checkpointer=saver)


async def _saver(mode: str, stack: contextlib.AsyncExitStack, checkpoints: Path) -> Any:
    if mode in ("shared", "shared-normal"):
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(checkpoints)))
        if mode == "shared-normal":
            await saver.conn.execute("PRAGMA synchronous = NORMAL")
        return saver
    if mode == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver()
    return None


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: '5' to clear_refs); False when it can't be."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


async def _drive(
    proc: int, runs: int, base_url: str, stores: tuple[Path, Path, str], sync: tuple[Any, Any], timeout: float
) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        traces, ckpt, mode = stores
        orch = orchestrator(base_url, traces, ckpt, await _saver(mode, stack, ckpt))
        return await _measure(orch, proc, runs, sync, timeout)


async def _measure(
    orch: Orchestrator, proc: int, runs: int, sync: tuple[Any, Any], timeout: float
) -> dict[str, Any]:
    from orchestrator.providers.http import aclose_clients

    warm = await orch.arun("load", "warm up", run_id=f"warm{proc}-{os.getpid()}")
    assert warm.status == "ok", warm.error
    ready, go = sync
    ready.put(proc)
    await asyncio.to_thread(go.wait)  # every process starts its runs at once
    baseline_kb = _status_kb("VmRSS")
    peak_reset = _reset_peak()
    in_flight = most = 0
    peak_rss_kb = baseline_kb
    lags: list[float] = []

    async def sample() -> None:
        nonlocal peak_rss_kb
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.05)
            lags.append(loop.time() - t - 0.05)
            peak_rss_kb = max(peak_rss_kb, _status_kb("VmRSS"))

    latencies: dict[str, float] = {}
    results: dict[str, Any] = {}

    async def one(run_id: str) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        t0 = time.perf_counter()
        try:
            results[run_id] = await orch.arun("load", f"request {run_id}", run_id=run_id)
            latencies[run_id] = time.perf_counter() - t0
        finally:
            in_flight -= 1

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    sampler = asyncio.create_task(sample())
    started = time.time()
    tasks = [asyncio.create_task(one(f"load{proc}-{i:05d}")) for i in range(runs)]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    ended = time.time()
    sampler.cancel()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    hwm_kb = _status_kb("VmHWM") if peak_reset else peak_rss_kb
    statuses: dict[str, int] = defaultdict(int)
    for r in results.values():
        statuses[r.status] += 1
    statuses["timed_out"] = len(pending)
    errors = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
    ok = [r for r in results.values() if r.status == "ok"]
    orch.close()
    await aclose_clients()
    return {
        "proc": proc,
        "runs": runs,
        "statuses": dict(statuses),
        "errors": sorted(set(errors))[:5] + sorted({r.error or "" for r in results.values() if r.error})[:5],
        "ok_ids": [r.run_id for r in ok],
        "latencies": [latencies[r.run_id] for r in ok],
        "calls": sum(line.calls for r in ok for line in r.ledger.by_node()),
        "output_tokens": sum(r.ledger.output_tokens for r in ok),
        "cost_usd": sum(r.ledger.cost_usd or 0.0 for r in ok),
        "answers": {r.run_id: r.answer for r in ok[:3]},
        "started": started,
        "ended": ended,
        "baseline_kb": baseline_kb,
        "hwm_kb": hwm_kb,
        "peak_measure": "VmHWM" if peak_reset else "VmRSS sampled every 50 ms",
        "most_in_flight": most,
        "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "loop_lag_s": _quantiles(lags),
        "threads": len(os.listdir("/proc/self/task")),
    }


def client(
    proc: int,
    runs: int,
    base_url: str,
    stores: tuple[Path, Path, str],
    sync: tuple[Any, Any],
    out: Any,
    timeout: float,
) -> None:
    """A client process: one warm-up run, then `runs` runs at once; its measures go to `out`."""
    try:
        out.put(asyncio.run(_drive(proc, runs, base_url, stores, sync, timeout)))
    except BaseException as exc:
        out.put({"proc": proc, "crashed": f"{type(exc).__name__}: {exc}"})
        raise


# --- one scenario -------------------------------------------------------------------------------------
def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731
    return {"p50": round(at(0.5), 3), "p99": round(at(0.99), 3), "max": round(ordered[-1], 3)}


def _stats(base_url: str, reset: bool = False) -> dict[str, Any]:
    import httpx

    root = base_url.removesuffix("/v1")
    return dict(httpx.get(f"{root}/stats" + ("?reset" if reset else ""), timeout=30).json())


def _stored(traces: Path, run_ids: list[str]) -> dict[str, Any]:
    """What the trace store holds for these runs: spans by kind, and the runs' rows by status."""
    db = sqlite3.connect(f"file:{traces}?mode=ro", uri=True)
    try:
        db.execute("create temp table ids (run_id text primary key)")
        db.executemany("insert into ids values (?)", [(r,) for r in run_ids])
        kinds = dict(
            db.execute(
                "select kind, count(*) from spans where run_id in (select run_id from ids) group by kind"
            ).fetchall()
        )
        rows = dict(
            db.execute(
                "select status, count(*) from runs where run_id in (select run_id from ids) group by status"
            ).fetchall()
        )
        chat = db.execute(
            "select count(*), sum(output_tokens), round(sum(cost_usd), 6), sum(cost_usd is null) from spans "
            "where kind = 'chat' and run_id in (select run_id from ids)"
        ).fetchone()
        ttft = [
            r[0]
            for r in db.execute(
                "select ttft_ms from spans where kind = 'chat' and run_id in (select run_id from ids)"
            )
        ]
    finally:
        db.close()
    return {
        "spans_by_kind": kinds,
        "run_rows": rows,
        "chat_output_tokens": chat[1],
        "chat_cost_usd": chat[2],
        "chat_unpriced": chat[3],
        "ttft_ms": _quantiles([t for t in ttft if t is not None]),
    }


def scenario(
    runs: int,
    procs: int,
    timeout: float,
    checkpoints: str = "default",
    workdir: Path | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    """N runs over P client processes, all writing one trace store and one checkpoint file; with `profile`,
    the first client process is recorded with py-spy while its runs go (`result["profile"]`)."""
    ctx = multiprocessing.get_context("spawn")
    work = workdir or Path(tempfile.mkdtemp(prefix="orch-load-"))
    work.mkdir(parents=True, exist_ok=True)
    traces, ckpt = work / "traces.db", work / "checkpoints.db"
    _create_stores(traces, ckpt)
    load_before = os.getloadavg()
    receive, send = ctx.Pipe(duplex=False)
    server = ctx.Process(target=serve, args=(send,), daemon=True)
    server.start()
    workers: list[Any] = []
    try:
        if not receive.poll(30):
            raise RuntimeError("the loopback server did not start")
        base_url = f"http://127.0.0.1:{receive.recv()}/v1"
        ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
        shares = [runs // procs + (1 if i < runs % procs else 0) for i in range(procs)]
        workers = [
            ctx.Process(
                target=client, args=(i, n, base_url, (traces, ckpt, checkpoints), (ready, go), out, timeout)
            )
            for i, n in enumerate(shares)
        ]
        for w in workers:
            w.start()
        # the warm-up runs: each process's first run, then the server's counters start from zero
        waiting, deadline = len(workers), time.monotonic() + 120
        while waiting:
            try:
                ready.get(timeout=1)
                waiting -= 1
            except queue.Empty:
                if time.monotonic() > deadline or not all(w.is_alive() for w in workers):
                    raise RuntimeError(f"client processes not ready: {_early(out)}") from None
        _stats(base_url, reset=True)
        spy = work / "client.spy"
        recording = py_spy(workers[0].pid, spy) if profile else contextlib.nullcontext(spy)
        reports = []
        with recording:
            go.set()
            for _ in workers:
                try:
                    reports.append(out.get(timeout=timeout + 120))
                except queue.Empty:
                    raise RuntimeError(
                        f"client processes did not report {timeout + 120:.0f} s after the start"
                    ) from None
        for w in workers:
            w.join(60)
        served = _stats(base_url)
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
        server.terminate()
        server.join(10)
    crashed = [r["crashed"] for r in reports if "crashed" in r]
    if crashed:
        raise RuntimeError(f"client processes failed: {crashed}")
    load_after = os.getloadavg()
    ok_ids = [i for r in reports for i in r["ok_ids"]]
    stored = _stored(traces, ok_ids)
    # the event loop's share: the client's own threads (the checkpoint and trace writers) are not on it
    where = top_frames(work / "client.spy", 60, within="_run_once") if profile else None
    if workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    wall = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    latencies = [x for r in reports for x in r["latencies"]]
    statuses: dict[str, int] = defaultdict(int)
    for r in reports:
        for k, v in r["statuses"].items():
            statuses[k] += v
    bound = runs / RUN_S
    expected = SPANS_PER_RUN * len(ok_ids)
    spans = sum(stored["spans_by_kind"].values())
    per_proc_mem = [(r["hwm_kb"] - r["baseline_kb"]) / max(1, r["most_in_flight"]) for r in reports]
    calls = sum(r["calls"] for r in reports)
    return {
        "runs": runs,
        "procs": procs,
        "ok": len(ok_ids),
        "statuses": dict(statuses),
        "errors": sorted({e for r in reports for e in r["errors"]})[:5],
        "wall_s": round(wall, 2),
        "bound_runs_per_s": round(bound, 2),
        "runs_per_s": round(len(ok_ids) / wall, 2),
        "share_of_bound": round(len(ok_ids) / wall / bound, 3),
        "latency_s": _quantiles(latencies),
        "latency_min_s": round(min(latencies), 3) if latencies else None,
        "ttft_ms": stored["ttft_ms"],
        "mem_per_run_kib": round(statistics.mean(per_proc_mem), 1),
        "mem": [
            {
                "proc": r["proc"],
                "baseline_mib": round(r["baseline_kb"] / 1024, 1),
                "peak_mib": round(r["hwm_kb"] / 1024, 1),
                "most_in_flight": r["most_in_flight"],
                "measure": r["peak_measure"],
            }
            for r in reports
        ],
        "spans_expected": expected,
        "spans_stored": spans,
        "spans_lost": expected - spans,
        "spans_by_kind": stored["spans_by_kind"],
        "run_rows": stored["run_rows"],
        "calls": calls,
        "output_tokens": sum(r["output_tokens"] for r in reports),
        "cost_usd": round(sum(r["cost_usd"] for r in reports), 6),
        "chat_spans_output_tokens": stored["chat_output_tokens"],
        "chat_spans_cost_usd": stored["chat_cost_usd"],
        "unpriced_calls": stored["chat_unpriced"],
        "client_cpu_share": [round(r["cpu_s"] / max(wall, 1e-9), 2) for r in reports],
        "client_cpu_ms_per_call": round(1000 * sum(r["cpu_s"] for r in reports) / max(1, calls), 2),
        "client_loop_lag_s": [r["loop_lag_s"] for r in reports],
        "client_threads": [r["threads"] for r in reports],
        "server": served,
        "sample_answers": {k: (v or "")[:60] for r in reports for k, v in r["answers"].items()},
        "max_concurrency": MAX_CONCURRENCY,
        "checkpoints": checkpoints,
        "checkpoints_how": CHECKPOINTS[checkpoints]
        + (", the file shared by every process" if procs > 1 and checkpoints != "memory" else ""),
        "store": str(traces) if workdir is not None else None,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        **({"profile": where} if where is not None else {}),
    }


def _create_stores(traces: Path, checkpoints: Path) -> None:
    """Create and migrate both store files before the client processes open them. Several processes creating
    one trace store file at once fail ("database is locked" in `TraceStore.__init__`, creating `_migrations`);
    that is reported in docs/reliability.md and kept out of what this bench measures."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from orchestrator.cost.ledger import LedgerBook
    from orchestrator.tracing.store import TraceStore

    TraceStore(traces).close()
    LedgerBook(checkpoints).close()

    async def setup() -> None:
        async with AsyncSqliteSaver.from_conn_string(str(checkpoints)) as saver:
            await saver.setup()

    asyncio.run(setup())


def _early(out: Any) -> str:
    """Why a client process ended before its runs, if it said."""
    try:
        return str(out.get(timeout=1).get("crashed"))
    except queue.Empty:
        return "no report"


def summary(r: dict[str, Any]) -> str:
    """A few lines for a person."""
    lat, mem = r["latency_s"], r["mem"]
    return "\n".join(
        [
            f"{r['runs']} runs, {r['procs']} client process(es), checkpoints {r['checkpoints']}, load {r['load_before'][0]} before, {r['load_after'][0]} after",
            f"  ok {r['ok']}  statuses {r['statuses']}  wall {r['wall_s']} s",
            f"  throughput {r['runs_per_s']} runs/s of a bound of {r['bound_runs_per_s']} ({100 * r['share_of_bound']:.1f}%)",
            f"  latency p50 {lat['p50']} s  p99 {lat['p99']} s  (min {r['latency_min_s']}, scripted {RUN_S:.1f})",
            f"  ttft ms {r['ttft_ms']}  server call s {r['server']['call_s']}  late s {r['server']['late_s']}",
            f"  peak memory per run in flight {r['mem_per_run_kib']} KiB  {mem}",
            f"  spans expected {r['spans_expected']} stored {r['spans_stored']} lost {r['spans_lost']}  {r['spans_by_kind']}",
            f"  calls {r['calls']} output tokens {r['output_tokens']} cost ${r['cost_usd']}  runs rows {r['run_rows']}",
            f"  client cpu share {r['client_cpu_share']}  loop lag {r['client_loop_lag_s']}  threads {r['client_threads']}",
            f"  server {r['server']}",
            f"  errors {r['errors']}",
        ]
    )


DOC_SCENARIOS = (  # (runs, client processes, checkpoints), in the order of the table
    (100, 1, "default"),
    (100, 1, "memory"),
    (1000, 1, "default"),
    (1000, 1, "shared"),
    (1000, 1, "shared-normal"),
    (1000, 1, "memory"),
    (1000, 4, "default"),
    (1000, 4, "memory"),
)


def _row(r: dict[str, Any]) -> str:
    lat = r["latency_s"]
    bad = {k: v for k, v in r["statuses"].items() if k != "ok" and v}
    ok = f"{r['ok']:,}" + (" (" + ", ".join(f"{v:,} {k}" for k, v in bad.items()) + ")" if bad else "")
    p50 = "-" if lat["p50"] is None else f"{lat['p50']:.1f}"
    p99 = "-" if lat["p99"] is None else f"{lat['p99']:.1f}"
    return (
        f"| {r['runs']:,} x {r['procs']} | {r['checkpoints']} | {r['load_before'][0]} / {r['load_after'][0]} | {ok} | "
        f"{r['wall_s']:.1f} | {r['runs_per_s']:.1f} | {100 * r['share_of_bound']:.1f}% | {p50} | {p99} | "
        f"{r['mem_per_run_kib']:,.0f} | {r['spans_expected']:,} / {r['spans_stored']:,} / {r['spans_lost']:,} | "
        f"{r['server']['peak_streams']:,} | {r['client_cpu_ms_per_call']} | {sum(r['client_cpu_share']):.2f} |"
    )


def render(results: list[dict[str, Any]], profiled: dict[str, Any] | None = None) -> str:
    """The load section of docs/reliability.md, markers included."""
    first = results[0]
    by = {(r["runs"], r["procs"], r["checkpoints"]): r for r in results}
    default = by.get((1000, 1, "default"))
    shared = by.get((1000, 1, "shared"))
    normal = by.get((1000, 1, "shared-normal"))
    memory = by.get((1000, 1, "memory"))
    lines = [
        SECTION_START,
        "## Load: 1,000 concurrent runs",
        "",
        f"`bench/load.py --docs`, {first['date']}, {first['machine']}. The machine was shared with other engineers' "
        "test runs while this ran: the load average (1 minute) before and after each row is in the table, and the "
        "client processes competed with those runs for the 2 cores.",
        "",
        "**Setup.** A loopback OpenAI-compatible server (`asyncio.start_server`, HTTP/1.1 keep-alive, SSE in "
        "chunked encoding) runs in a process of its own, so its CPU does not count against the client's event "
        f"loop. It streams every reply one token per chunk: {FIRST_TOKEN_S * 1000:.0f} ms to the first token, then "
        f"{TOKENS_PER_S:.0f} tokens/s, {TOKENS} tokens, then the finish and usage chunks and `[DONE]`; one timer "
        f"({TICK_S * 1000:.0f} ms tick) writes each stream's due tokens, so it holds thousands of streams. The "
        "runs go through the Python API (`Orchestrator.arun`), all started at once (after one warm-up run per "
        "process, not counted): a user graph of 3 sequential nodes, each calling its own slot "
        "(`runtime.context.model(slot).ainvoke`, `max_tokens=100`) bound to an `openai-compat:` model at the "
        f"server with prices set, so every call is budgeted, traced and priced. Each slot has `max_concurrency = "
        f"{MAX_CONCURRENCY}` (the configuration's maximum; the default of 16 per model would cap 1,000 runs at "
        "16 calls in flight per node). Traces go to one SQLite trace store file, shared by every client process.",
        "",
        f"**The bound.** A run makes {CALLS} calls of at least {FIRST_TOKEN_S:g} + {TOKENS}/{TOKENS_PER_S:.0f} = "
        f"{CALL_S:.1f} s each, so it takes at least {RUN_S:.1f} s. With N runs started together and a server that "
        f"serves them all concurrently, the ideal wall time is {RUN_S:.1f} s, so the bound is N / {RUN_S:.1f} runs/s "
        f"({1000 / RUN_S:.1f} runs/s for 1,000 runs). Throughput is the runs that ended `ok` divided by the wall "
        "time (first run started to last run ended), as a share of that bound. The server kept to its script in "
        "every row (server-side time per call p99 at most "
        f"{max(r['server']['call_s']['p99'] or 0 for r in results):.2f} s against {CALL_S:.1f} s), so every shortfall is "
        "the client's.",
        "",
        "**The measures.** Latency: per run, from the `arun` call to its return (p50 and p99 over the runs that "
        "ended `ok`). Peak memory per run in flight: the client process's RSS high-water mark during the runs "
        "(`VmHWM`, reset after the warm-up) minus its RSS before them, divided by the most runs it had in flight "
        "(all of its runs: they start together); averaged over the processes. With `memory` checkpoints the peak "
        "also holds every finished run's checkpoints. Spans lost: for every run that "
        f"ended `ok`, {SPANS_PER_RUN} spans expected (the run span, 3 node spans, 3 `chat` spans: what one run "
        "stores), minus the spans of those runs found in the store after all processes closed. Client CPU: "
        "user + system time of the client processes during the runs, per model call of the runs that ended `ok` "
        "(a row with failed runs counts their CPU too), and as cores used (CPU seconds / wall seconds, summed "
        "over the processes).",
        "",
        "Checkpoints (the ledger is in the checkpoint file in every mode):",
        "",
        *[f"- `{k}`: {v}." for k, v in CHECKPOINTS.items()],
        "",
        "With several processes, `shared` means one checkpoint file and one trace store file for all of them "
        "(a connection each); `memory` one trace store file, checkpoints in each process's memory.",
        "",
        "| runs x processes | checkpoints | load before / after | ok | wall s | runs/s | share of bound | "
        "p50 s | p99 s | peak KiB per run in flight | spans expected / stored / lost | server peak streams | "
        "client CPU ms per call | client cores used |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[_row(r) for r in results],
        "",
        _spans_sentence(results),
        (
            f"The chat spans' output tokens and costs match the runs' ledgers ({memory['output_tokens']:,} tokens, "
            f"${memory['cost_usd']:.4f} for 1,000 runs), and each answer is the server's reply to that run's "
            "third call (its first token names the request)."
            if memory
            else ""
        ),
        "",
        "The figures move with the machine's load. The first runs of these rows, on 2026-11-26 (AMD EPYC), "
        'before issue 27 ("The hot path"): `1,000 x 1 default` 86.3 s, 7.7% of the bound, 31.46 ms of client '
        "CPU per call (a checkpoint connection per run); `1,000 x 1 memory` 39.9 s, 16.6%, 13.19 ms (the HTTP "
        "stack); `1,000 x 4 memory` 20.8 s, 31.7%. No run of any row lost a span.",
        "",
        "One more limit found here, now fixed: several processes *creating* one trace store file at once failed "
        "(`database is locked` in all but one process, 15 times out of 15 with 4 processes). SQLite does not "
        "wait on the locks that switching a file to WAL and creating its tables take. A process that finds the "
        "store new or older than its code now takes an exclusive lock on a lock file beside it "
        "(`traces.db.lock`) while it switches and migrates; a store already up to date is opened without it. "
        "`tests/test_trace_scale.py` opens a new store from 4 processes at once.",
        "",
        "### What limits throughput",
        "",
        "In order, from the first wall a service hits:",
        "",
    ]
    if default:
        failed = default["statuses"].get("failed", 0)
        if failed:
            lines += [
                f"1. **The default SQLite checkpointer fails under this load.** With 1,000 concurrent runs, "
                f"{failed:,} ended `failed` ({_errors(default)}), raised when a step's checkpoint is written.",
            ]
        else:
            versus = (
                f", against {memory['client_cpu_ms_per_call']} ms with checkpoints in memory"
                if memory
                else ""
            )
            lines += [
                "1. **The default SQLite checkpointer costs about what memory does.** All 1,000 concurrent runs "
                f"ended `ok` in {default['wall_s']:.0f} s, at {default['client_cpu_ms_per_call']} ms of client "
                f"CPU per call{versus}. A process keeps one store per checkpoint file "
                "(`orchestrator/run/sqlite_saver.py`): the schema is set up once, reads run on the caller's "
                "thread from a few read connections, and one writer thread commits every write that arrived "
                "while the last commit went in one transaction (group commit); a run's write returns once the "
                "commit that holds it is done, so a crash loses nothing a run was told was stored. Before it, "
                "each run opened its own aiosqlite connection and thread and set up the schema, and 1,000 "
                "runs' commits queued for the file's write lock one by one.",
            ]
    if shared and normal:
        fsync = (
            "The commits' fsync is not what limits it: with `synchronous=NORMAL` (`shared-normal`) the runs "
            f"still end together, after {normal['latency_min_s']:.0f} s"
            if normal["latency_min_s"] >= 0.85 * shared["latency_min_s"]
            else "The commits' fsync is part of it: with `synchronous=NORMAL` (`shared-normal`) the runs end "
            f"together after {normal['latency_min_s']:.0f} s"
        )
        lines += [
            "2. **A given `AsyncSqliteSaver` shared by every run serializes them.** Passing one `AsyncSqliteSaver` "
            f"as `checkpointer=` (leave it out: the default store is faster) works, but all 1,000 runs then end "
            f"together, after {shared['latency_min_s']:.0f} to {shared['latency_s']['max']:.0f} s: every "
            "checkpoint read and write of the process goes through that saver's one `asyncio.Lock` and one "
            "aiosqlite thread, one at a time, in FIFO order, so every run's step waits behind every other run's "
            f"(about 9 commits and 3 reads per run). {fsync}; each operation also waits for the busy event loop "
            "to take its result from the aiosqlite thread before the next can start."
            + _procs_sentence(shared, by.get((1000, 4, "shared")), "one connection each to the one file")
        ]
    if default:
        per_call = default["client_cpu_ms_per_call"]
        lines += [
            "3. **Then the client's CPU.** At "
            f"{per_call} ms of client CPU per model call, one event loop on one core finishes about "
            f"{1000 / (CALLS * per_call):.0f} runs/s, {100 * 1000 / (CALLS * per_call) / (1000 / RUN_S):.0f}% of the "
            f"bound; the bound needs {RUN_S / CALLS:.1f} ms per call or less. Reading a streamed reply is no longer "
            "most of it: `orchestrator/providers/wire.py` reads the 100 SSE chunks of a call in the event loop's "
            "read callbacks (no task switch, no httpx/httpcore/h11 layers per chunk; httpcore's O(connections) "
            "pool walk is off this path), about 2 ms a call measured alone (`bench/stream_cpu.py`, docs/benchmarks.md; "
            "asyncio's own reading of the same stream, a bare `Protocol`, is 1 ms of it), and a call no one but the "
            "graph tracer listens to makes no LangChain run. The rest is the graph's own steps (LangGraph's task "
            "preparation, channel writes and checkpoints), the messages the nodes build, and our spans, ledger and "
            "budget per call"
            + (": the profile below." if profiled else ".")
            + _procs_sentence(default, by.get((1000, 4, "default")), "one store each on the one file"),
        ]
    if profiled:
        lines += [
            "",
            f"Where the client's event loop spends its time (`--profile`: a separate `1,000 x 1 default` run, "
            f"{profiled['wall_s']:.0f} s, {profiled['client_cpu_ms_per_call']} ms of client CPU per call, recorded "
            f"with py-spy; {int(profiled['profile']['samples'][0][1]):,} samples of the loop's thread; inclusive "
            "share, asyncio's own plumbing left out):",
            "",
            *table(profiled["profile"])[:36],
        ]
    lines += [
        "",
        "### Changed in `orchestrator/`",
        "",
        "`orchestrator/providers/http.py`, `_client`: the shared `httpx.AsyncClient`'s pool had "
        "`max_connections=256`, a cap no setting could change, below the slots' `max_concurrency` (up to "
        "1,024). Requests past it queue inside httpcore's pool, whose queue handling is O(queued x connections) "
        "on the event loop each time a request enters or leaves. Measured before the change (1,000 x 1, "
        "`memory`, load 5.4): no run finished within the 300 s timeout, the event loop stalled for up to 67 s "
        "at a time inside `_assign_requests_to_connections`, the server never saw more than 256 streams, and "
        "256 runs ended `budget_stop` on their 120 s deadline. The pool now has no connection cap "
        "(`max_connections=None`); each (base URL, model)'s `ModelState` caps requests, as documented "
        "(`max_concurrency`). Keep-alive stays at 64. Streamed calls no longer go through it "
        "(`orchestrator/providers/wire.py`, unless a proxy is set); non-streamed calls still do.",
        "",
        "Run: `.venv/bin/python bench/load.py [--runs 1000] [--procs P] [--checkpoints MODE] [--timeout S] "
        "[--json] [--profile]`; `--docs` runs the rows above and rewrites this section (with `--profile`, one "
        "more recorded run for the profile).",
        SECTION_END,
    ]
    return "\n".join(line for line in lines if line is not None)


def _procs_sentence(one: dict[str, Any], several: dict[str, Any] | None, how: str) -> str:
    """How the same runs did over several client processes."""
    if several is None:
        return ""
    cores = sum(several["client_cpu_share"])
    ratio = several["wall_s"] / one["wall_s"]
    verdict = "better" if ratio < 0.85 else "slightly better" if ratio < 0.97 else "no better"
    return (
        f" Over {several['procs']} client processes ({how}) they did {verdict}: {several['wall_s']:.0f} s against "
        f"{one['wall_s']:.0f} s, with {cores:.2f} cores used between them at a load of {several['load_before'][0]} "
        f"to {several['load_after'][0]}."
    )


def _errors(r: dict[str, Any]) -> str:
    if r["errors"] and all("database is locked" in e for e in r["errors"]):
        return "every one with `sqlite3.OperationalError: database is locked`"
    return "errors: " + "; ".join(f"`{e[:120]}`" for e in r["errors"])


def _spans_sentence(results: list[dict[str, Any]]) -> str:
    lost = [r for r in results if r["spans_lost"]]
    if not lost:
        return (
            "No span was lost in any row: every run that ended `ok` has its 7 spans in the store, also with "
            "4 processes writing one store file."
        )
    return (
        "Spans were lost in: "
        + "; ".join(f"{r['runs']:,} x {r['procs']} `{r['checkpoints']}` ({r['spans_lost']:,})" for r in lost)
        + "."
    )


def write_docs(section: str) -> None:
    """Replace the load section of docs/reliability.md (only it; the file is read again just before)."""
    splice(DOC, section, SECTION_START, SECTION_END, "Reliability")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs in all (default 1000)")
    parser.add_argument(
        "--procs", type=int, default=1, help="client processes sharing the runs and the stores"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds the runs may take; runs still going are cancelled",
    )
    parser.add_argument(
        "--dir", type=Path, help="where the trace store and checkpoint file go (default: a temp dir)"
    )
    parser.add_argument(
        "--checkpoints",
        choices=sorted(CHECKPOINTS),
        default="default",
        help="; ".join(f"{k}: {v}" for k, v in CHECKPOINTS.items()),
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--docs", action="store_true", help="run the rows of docs/reliability.md and write its section"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the (first) client process with py-spy and list where its event loop's time goes; with "
        "--docs, one more 1,000 x 1 default run, recorded, outside the table",
    )
    args = parser.parse_args()
    if args.docs:
        results = []
        for runs, procs, mode in DOC_SCENARIOS:
            results.append(scenario(runs, procs, args.timeout, mode))
            print(json.dumps(results[-1]) if args.json else summary(results[-1]), flush=True)
        profiled = scenario(1000, 1, args.timeout, "default", profile=True) if args.profile else None
        write_docs(render(results, profiled))
        print(f"wrote {DOC}")
        return
    if not 1 <= args.runs <= 10_000 or not 1 <= args.procs <= 16:
        parser.error("--runs is 1..10000 and --procs 1..16")
    result = scenario(args.runs, args.procs, args.timeout, args.checkpoints, args.dir, args.profile)
    print(json.dumps(result, indent=2) if args.json else summary(result))
    if args.profile and not args.json:
        print("\n".join(table(result["profile"])))


if __name__ == "__main__":
    main()
