"""Fault matrix: every fault class at every node kind, with real components, and what each run kept.

    .venv/bin/python bench/faults.py            # the whole matrix (about 4 minutes on 2 cores); writes its
                                                # table into docs/reliability.md between its markers
    .venv/bin/python bench/faults.py --fault 5xx --node worker --no-write

The components are real: the controller, the worker and a user graph's nodes call loopback HTTP servers that
speak OpenAI's wire protocol (`tests/loopback.py`); the tool is an MCP server over streamable HTTP
(`tests/mcp_servers/toolbox.py`) reached through a fault-injecting HTTP proxy; the kill cells run `orch run`
in a child process and SIGKILL it mid-call; the full-disk cells put the trace store or the checkpoint file
on a small tmpfs (mounting needs root: where it is refused, those cells are reported "not run") and fill it
to the last byte while the node's call is in flight.

Each cell is checked, not assumed: the run's status and error, the answer and the finished results, the
ledger (the authoritative cost record) against the stored spans' cost and against what the model server
billed (every reply it completed, and every stream it broke after tokens went out), and for the failed,
killed and full-disk cells, `--resume` after the fault is cleared: the run completes and no completed model
call is made (paid) twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from loopback import Loopback, Reply, Request  # noqa: E402
from wire import error_body, openai_stream, openai_usage  # noqa: E402

from bench.markers import splice  # noqa: E402
from orchestrator import Orchestrator, Settings  # noqa: E402
from orchestrator.providers.http import aclose_clients, reset_model_states  # noqa: E402

START, END = "<!-- faults:start -->", "<!-- faults:end -->"
DOC = ROOT / "docs" / "reliability.md"
TOOLBOX = ROOT / "tests" / "mcp_servers" / "toolbox.py"

HTTP_FAULTS = ("429", "5xx", "stall", "cut", "malformed")
FAULTS = (*HTTP_FAULTS, "kill", "disk-traces", "disk-checkpoints")
NODES = ("controller", "worker", "tool", "user-node")
FAULT_NAMES = {
    "429": "429 + Retry-After",
    "5xx": "5xx",
    "stall": "stall",
    "cut": "stream cut mid-way",
    "malformed": "malformed chunk",
    "kill": "process kill",
    "disk-traces": "full disk: trace store",
    "disk-checkpoints": "full disk: checkpointer",
}

READ_TIMEOUT_S = 1.0  # the slots' `timeout_s`: the longest silence between two chunks
STALL_S = 4.0  # a stalled reply stays silent this long (longer than the read timeout)
TOOL_TIMEOUT_S = 3.0
RETRY_AFTER_S = "1"
PRICE_IN, PRICE_OUT = 1e-6, 4e-6

# The agent's request: a tool part (the MCP tool) and a worker part; the answer states both results.
TASK = "How many days are there from 2026-03-02 to 2026-03-20? Also classify this message: 'My card never arrived.'"
TOOL_PART = "days between 2026-03-02 and 2026-03-20"
TOOL_CALL = ("days_between", {"start": "2026-03-02", "end": "2026-03-20"})
WORKER_TEXT = "My card never arrived."
PIPELINE_INPUT = "My card was ordered on 2026-03-02 and never arrived."
DRAFT = "A card ordered on 2026-03-02 has not arrived."
POLISHED = "Sorry your card has not arrived: a new one is on its way."

USAGE = {  # what the model server bills per completed reply: (input, output) tokens
    "ctl": (300, 20),
    "wrk": (40, 5),
    "draft": (100, 10),
    "polish": (80, 8),
}

# A project's definitions: the worker the agent delegates to, and a user's own two-node graph.
DEFS = '''
"""Definitions for the fault matrix: a classify worker and a two-node pipeline of the user's own."""

from typing import TypedDict

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from orchestrator import RunContext, classify_worker

WORKERS = [classify_worker("classify_request", ["card_arrival", "refund", "other"], "Classify a customer message")]


class State(TypedDict, total=False):
    input: str
    draft: str
    answer: str


async def draft(state: State, runtime: Runtime[RunContext]) -> dict[str, str]:
    reply = await runtime.context.model("draft").ainvoke([HumanMessage(f"Restate: {state['input']}")])
    return {"draft": str(reply.content)}


async def polish(state: State, runtime: Runtime[RunContext]) -> dict[str, str]:
    reply = await runtime.context.model("polish").ainvoke([HumanMessage(f"Reply kindly to: {state['draft']}")])
    return {"answer": str(reply.content)}


def pipeline():
    g = StateGraph(State, context_schema=RunContext)
    g.add_node("draft", draft)
    g.add_node("polish", polish)
    g.add_edge(START, "draft")
    g.add_edge("draft", "polish")
    g.add_edge("polish", END)
    return g
'''


# --- the model server: OpenAI's wire protocol, replies derived from the request ---------------------------
@dataclass
class Served:
    """One request the model server answered, and whether a provider would bill it."""

    model: str
    step: str  # plan / act / final for the controller; the model name otherwise
    outcome: (
        str  # ok (a completed reply), partial (tokens sent, then broken), refused (429/5xx), held (killed)
    )
    body: str = ""  # the request as sent: a completed request sent twice is a step paid twice


@dataclass
class Fault:
    """A fault to inject at the requests `match` picks: `times` of them (None: until `heal()`)."""

    kind: str
    match: Callable[[str, str], bool]  # (model, step) -> bool
    times: int | None = 1
    hook: Callable[[], None] | None = None  # run when the fault fires (fill a disk, signal a kill)
    fired: int = 0


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


class ModelServer:
    """A loopback OpenAI-compatible server for every model of the matrix (`ctl`, `wrk`, `draft`, `polish`).

    The controller's replies are derived from the request, as a real model's would be: the plan, a call of
    the tool bound for the part (skipped when it was not found), the final answer from the results given.
    """

    def __init__(self) -> None:
        self.loop = Loopback().start()
        self.url = self.loop.url + "/v1"
        self.served: list[Served] = []
        self.fault: Fault | None = None
        self.lock = threading.Lock()
        self.loop.handle("/v1/chat/completions", self.answer)

    def close(self) -> None:
        self.loop.close()

    def heal(self) -> None:
        """No more faults: the next requests are answered normally."""
        with self.lock:
            self.fault = None

    def billable(self) -> int:
        """Replies a provider bills: completed ones, and streams broken after their tokens went out."""
        return sum(s.outcome in ("ok", "partial") for s in self.served)

    def answer(self, request: Request) -> Reply:
        body = request.json()
        model = str(body["model"])
        step, normal = self._normal(model, body)
        with self.lock:
            fault = self.fault
            firing = fault is not None and fault.match(model, step)
            if firing and fault is not None:
                fault.fired += 1
                if fault.times is not None and fault.fired >= fault.times:
                    self.fault = None
        sent = request.body.decode()
        if not firing or fault is None:
            self.served.append(Served(model, step, "ok", sent))
            return normal
        if fault.hook is not None:
            fault.hook()
        reply, outcome = _broken(fault.kind, normal)
        self.served.append(Served(model, step, outcome, sent))
        return reply

    def _normal(self, model: str, body: dict[str, Any]) -> tuple[str, Reply]:
        usage = openai_usage(*USAGE.get(model, (10, 1)))
        if model == "wrk":
            return model, openai_stream([json.dumps({"label": "card_arrival"})], usage)
        if model == "draft":
            return model, openai_stream([DRAFT], usage)
        if model == "polish":
            return model, openai_stream([POLISHED], usage)
        choice = body.get("tool_choice")
        wanted = choice["function"]["name"] if isinstance(choice, dict) else str(choice)
        users = [_text(m.get("content") or "") for m in body["messages"] if m["role"] == "user"]
        if wanted == "plan":
            step = "plan"
            call: tuple[str, dict[str, Any]] = (
                "plan",
                {"plan": [{"tool": TOOL_PART}, {"worker": "classify_request", "text": WORKER_TEXT}]},
            )
        elif wanted == "final":
            step = "final"
            results = re.findall(r"^- (.+?): (.+)$", users[-1], flags=re.M)
            call = ("final", {"answer": "; ".join(f"{what}: {value[:80]}" for what, value in results)})
        else:
            step = "act"
            tools = [t["function"]["name"] for t in body.get("tools", [])]
            call = (
                TOOL_CALL if TOOL_CALL[0] in tools else ("skip", {"reason": "no bound tool does this part"})
            )
        return step, openai_stream([], usage, tool_calls=[("c1", call[0], [json.dumps(call[1])])])


def _broken(kind: str, normal: Reply) -> tuple[Reply, str]:
    """The faulty version of a normal streamed reply, and what a provider would bill for it."""
    if kind == "429":
        return Reply(
            429, {"retry-after": RETRY_AFTER_S}, error_body("Rate limit reached for requests")
        ), "refused"
    if kind == "5xx":
        return Reply(503, body=error_body("The server is overloaded, please retry")), "refused"
    if kind == "stall":  # the role chunk and the first token, then silence past the read timeout
        return dataclasses.replace(normal, stall_after_events=2, stall=STALL_S), "partial"
    if kind == "cut":  # the connection closes after the first token, without the terminating chunk
        return dataclasses.replace(normal, cut_after=2), "partial"
    if kind == "malformed":  # a chunk that is not JSON, after the first token
        events = list(normal.events or [])
        events[2] = 'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"oo\n\n'
        return dataclasses.replace(normal, events=events), "partial"
    if kind == "hold":  # the reply never comes (the process is killed meanwhile)
        return Reply(stall=60.0), "held"
    if kind == "pass":  # a hook only (a disk filled mid-call): the reply itself is normal
        return normal, "ok"
    raise ValueError(kind)


# --- the tool: an MCP server over streamable HTTP, behind a fault-injecting proxy --------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class McpUpstream:
    """tests/mcp_servers/toolbox.py over streamable HTTP in a child process; `calls()` reads its call log."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / "toolbox.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(TOOLBOX), "http", str(self.port)],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TOOLBOX_LOG": str(self.log)},
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the MCP toolbox server did not start") from None
                time.sleep(0.1)
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    def calls(self, name: str = "days_between") -> int:
        if not self.log.exists():
            return 0
        return sum(line.split()[1] == name for line in self.log.read_text().splitlines())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class McpProxy:
    """An HTTP proxy in front of the MCP server: forwards the streamable-HTTP POSTs (and answers the optional
    GET stream with 405), and breaks the `tools/call` requests a `Fault` picks (step = the tool's name)."""

    def __init__(self, upstream: McpUpstream) -> None:
        self.upstream = upstream
        self.client = httpx.Client(timeout=30.0)
        self.loop = Loopback().start()
        self.url = self.loop.url + "/mcp"
        self.fault: Fault | None = None
        self.lock = threading.Lock()
        self.runs_before = upstream.calls()
        self.loop.handle("/mcp", self.answer)

    def tool_runs(self) -> int:
        """How many times the tool ran on the MCP server since this proxy started."""
        return self.upstream.calls() - self.runs_before

    def close(self) -> None:
        self.loop.close()
        self.client.close()

    def heal(self) -> None:
        with self.lock:
            self.fault = None

    def _forward(self, request: Request) -> Reply:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k in ("content-type", "accept", "mcp-session-id", "mcp-protocol-version", "last-event-id")
        }
        resp = self.client.request(request.method, self.upstream.url, content=request.body, headers=headers)
        keep = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "mcp-session-id")}
        return Reply(resp.status_code, keep, resp.content)

    def answer(self, request: Request) -> Reply:
        if request.method == "GET":  # the optional server-to-client stream: not offered
            return Reply(405, body="")
        message = json.loads(request.body) if request.body else {}
        tool = message.get("params", {}).get("name") if message.get("method") == "tools/call" else None
        fault = None
        if tool is not None:
            with self.lock:
                fault = self.fault
                if fault is not None and fault.match("mcp", str(tool)):
                    fault.fired += 1
                    if fault.times is not None and fault.fired >= fault.times:
                        self.fault = None
                else:
                    fault = None
        if fault is None:
            return self._forward(request)
        if fault.hook is not None:
            fault.hook()
        if fault.kind == "429":
            return Reply(429, {"retry-after": RETRY_AFTER_S}, body={"error": "rate limited"})
        if fault.kind == "5xx":
            return Reply(503, body={"error": "overloaded"})
        if fault.kind in ("stall", "hold"):
            return Reply(stall=60.0 if fault.kind == "hold" else STALL_S + TOOL_TIMEOUT_S)
        if fault.kind == "pass":
            return self._forward(request)
        done = self._forward(request)  # the tool ran; its reply breaks on the way back
        data = done.body if isinstance(done.body, bytes) else b""
        ctype = {
            "content-type": "text/event-stream",
            "mcp-session-id": request.headers.get("mcp-session-id", ""),
        }
        if fault.kind == "cut":
            half = len(data) // 2
            return Reply(200, ctype, events=[data[:half], data[half:]], cut_after=1)
        if fault.kind == "malformed":
            rid = message.get("id")
            bad = f'event: message\ndata: {{"jsonrpc":"2.0","id":{json.dumps(rid)},"result":{{"content":[{{"type"\n\n'
            return Reply(200, ctype, events=[bad])
        raise ValueError(fault.kind)


# --- a project on those servers ----------------------------------------------------------------------------
def write_project(root: Path, models: ModelServer, mcp_url: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "faultdefs.py").write_text(DEFS, encoding="utf-8")

    def slot(name: str, model: str, role: str, extra: str = "") -> str:
        return (
            f'{name} = {{ model = "openai-compat:{model}", base_url = "{models.url}", role = "{role}", '
            f"prices = {{ input = {PRICE_IN}, output = {PRICE_OUT} }}, timeout_s = {READ_TIMEOUT_S}{extra} }}"
        )

    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.orchestrator]
            default_graph = "agent"
            workers = ["faultdefs:WORKERS"]

            [tool.orchestrator.graphs]
            agent = "orchestrator.graph:build_agent_graph"
            pipeline = "faultdefs:pipeline"

            [tool.orchestrator.slots]
            {slot("controller", "ctl", "racehorse", ", capabilities = { parallel_tool_calls = false }")}
            {slot("classify", "wrk", "workhorse")}
            {slot("draft", "draft", "workhorse")}
            {slot("polish", "polish", "workhorse")}

            [tool.orchestrator.limits]
            max_steps = 12
            tool_timeout_s = {TOOL_TIMEOUT_S}

            [tool.orchestrator.mcp_servers.box]
            url = "{mcp_url}"
            """
        ),
        encoding="utf-8",
    )
    return root


# --- reading what a run left ---------------------------------------------------------------------------------
MATCH: dict[str, Callable[[str, str], bool]] = {
    "controller": lambda model, step: model == "ctl" and step == "final",  # after the tool and the worker
    "worker": lambda model, step: model == "wrk",
    "tool": lambda model, step: model == "mcp" and step == TOOL_CALL[0],
    "user-node": lambda model, step: model == "polish",  # the second node, after `draft`
}
GRAPH = {"controller": "agent", "worker": "agent", "tool": "agent", "user-node": "pipeline"}


@dataclass
class Audit:
    """What one run returned, and what the stores and the servers hold for it."""

    run_id: str
    status: str
    error: str | None
    answer: str | None
    kept: bool  # the answer states every result (the tool's and the worker's; the pipeline's reply)
    ledger_calls: int  # model entries in the ledger
    ledger_usd: float
    spans_usd: float  # the chat spans' cost in the trace store
    billable: int  # replies the model server bills (completed, or broken after tokens went out)
    repeated: int  # completed model calls sent twice with the same request: a finished step paid again
    run_row: str | None  # the run's status in the trace store's runs table
    resumable: bool
    tool_errors: list[str]  # the failed tool spans' messages
    tool_runs: int  # times the MCP tool ran on its server
    unavailable: list[str]  # tools the catalog no longer offers (their server was given up)

    @property
    def costs_agree(self) -> bool:
        return abs(self.ledger_usd - self.spans_usd) < 1e-9

    @property
    def records_complete(self) -> bool:
        """Every billed reply has its ledger entry, once, and the stored spans cost what the ledger says."""
        return self.ledger_calls == self.billable and self.costs_agree


def kept_in(graph: str, answer: str | None) -> bool:
    text = answer or ""
    if graph == "pipeline":
        return text == POLISHED
    return ": 18" in text and "card_arrival" in text


def audit(
    result: Any,
    graph: str,
    models: ModelServer,
    proxy: McpProxy,
    settings: Settings,
    unavailable: list[str] | None = None,
) -> Audit:
    """Read what the run returned (a `RunResult`, or `orch run --json`'s object), its ledger and its spans as
    stored (opened afresh), and the servers' logs."""
    from orchestrator.cost.ledger import LedgerBook
    from orchestrator.tracing.store import TraceStore

    got = result if isinstance(result, dict) else result.to_dict()
    run_id = got["run_id"]
    book = LedgerBook(settings.checkpoints_path)
    try:
        entries = [e for e in book.entries(run_id) if e["kind"] == "model"]
    finally:
        book.close()
    store = TraceStore(settings.traces_path)
    try:
        stored = store.run_spans(run_id)
        row = store.get_run(run_id)
    finally:
        store.close()
    bodies: dict[str, int] = {}
    for s in models.served:
        if s.outcome == "ok":
            bodies[s.body] = bodies.get(s.body, 0) + 1
    return Audit(
        run_id=run_id,
        status=got["status"],
        error=got["error"],
        answer=got["answer"],
        kept=kept_in(graph, got["answer"]),
        ledger_calls=len(entries),
        ledger_usd=sum(e["cost_usd"] or 0.0 for e in entries),
        spans_usd=sum(s["cost_usd"] or 0.0 for s in stored if s["kind"] == "chat"),
        billable=models.billable(),
        repeated=sum(n - 1 for n in bodies.values()),
        run_row=row["status"] if row else None,
        resumable=bool(got.get("resumable")),
        tool_errors=[
            str(s["status_message"]) for s in stored if s["kind"] == "tool" and s["status"] == "error"
        ],
        tool_runs=proxy.tool_runs(),
        unavailable=list(unavailable or []),
    )


class Bench:
    """The shared parts of a matrix run: a work folder and the MCP server (each cell gets its own proxy,
    model server and stores)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.upstream = McpUpstream(work)
        self.cells = 0

    def close(self) -> None:
        self.upstream.close()

    @contextlib.contextmanager
    def cell(self) -> Iterator[tuple[Path, ModelServer, McpProxy]]:
        from orchestrator.toolsets.mcp import close_all

        self.cells += 1
        folder = self.work / f"cell{self.cells}"
        folder.mkdir()
        reset_model_states()
        models = ModelServer()
        proxy = McpProxy(self.upstream)
        try:
            yield folder, models, proxy
        finally:
            close_all()  # the cell's MCP sessions end while the proxy still answers
            proxy.close()
            models.close()


def settings_for(folder: Path, traces: Path | None = None, checkpoints: Path | None = None) -> Settings:
    return Settings(
        traces_path=traces or folder / "traces.db",
        checkpoints_path=checkpoints or folder / "ckpt.db",
        models_dir=folder / "models",
    )


def given_for(graph: str) -> str:
    return TASK if graph == "agent" else PIPELINE_INPUT


# --- the HTTP faults, in process ----------------------------------------------------------------------------
async def run_once(
    folder: Path, models: ModelServer, proxy: McpProxy, graph: str, run_id: str | None = None
) -> Audit:
    """One run (or a resume of `run_id`) on a fresh Orchestrator, as a new process would make it."""
    settings = settings_for(folder)
    orch = Orchestrator.from_project(write_project(folder / "proj", models, proxy.url), settings=settings)
    try:
        if run_id is None:
            result = await orch.arun(graph, given_for(graph))
        else:
            result = await orch.arun(graph, None, run_id=run_id, resume=True)
        unavailable = sorted(orch.catalog.unavailable())
    finally:
        await aclose_clients()
        orch.close()
    return audit(result, graph, models, proxy, settings, unavailable)


@dataclass
class HttpRuns:
    once: Audit  # the fault on one attempt: the retry (or the controller's second call of the tool) gets past it
    hard: Audit | None  # the fault on every attempt
    resumed: Audit | None  # the hard run resumed once the fault was cleared (when it failed)
    seconds: float = 0.0
    once_stderr: str | None = None  # what `orch run` printed, when the ×1 run went through the CLI


async def http_cell(
    bench: Bench, fault: str, node: str, *, every: bool = True, cli: bool = False
) -> HttpRuns:
    """An HTTP fault at one node: once, then (`every`) on every attempt; a failed run is resumed once the
    fault is cleared. `cli`: the ×1 run is `orch run` in a child process, so what it prints is checked too."""
    graph = GRAPH[node]
    t0 = time.perf_counter()
    stderr = None
    with bench.cell() as (folder, models, proxy):
        target: ModelServer | McpProxy = proxy if node == "tool" else models
        target.fault = Fault(fault, MATCH[node], times=1)
        if cli:
            settings = settings_for(folder)
            done = cli_run(
                write_project(folder / "proj", models, proxy.url), settings, graph, given_for(graph)
            )
            if done.result is None:
                raise RuntimeError(
                    f"{fault} at the {node}: `orch run` printed no result: {done.stderr[-2000:]}"
                )
            once = audit(done.result, graph, models, proxy, settings)
            stderr = done.stderr
        else:
            once = await run_once(folder, models, proxy, graph)
    hard = resumed = None
    if every:
        with bench.cell() as (folder, models, proxy):
            target = proxy if node == "tool" else models
            target.fault = Fault(fault, MATCH[node], times=None)
            hard = await run_once(folder, models, proxy, graph)
            if hard.status == "failed":
                target.heal()
                resumed = await run_once(folder, models, proxy, graph, hard.run_id)
    return HttpRuns(once, hard, resumed, time.perf_counter() - t0, stderr)


# --- a process kill, and a full disk: `orch run` in a child process ------------------------------------------
def orch_cli(root: Path, settings: Settings, *args: str, popen: bool = False) -> Any:
    """`orch --project ROOT ARGS` in a child process, on the cell's stores (a `Popen` with `popen=True`)."""
    env = {
        **os.environ,
        "ORCH_TRACES": str(settings.traces_path),
        "ORCH_CHECKPOINTS": str(settings.checkpoints_path),
    }
    cmd = [sys.executable, "-m", "orchestrator", "--project", str(root), *args]
    if popen:
        return subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=180)


@dataclass
class CliRun:
    """One `orch run ... --json` in a child process: its exit code, what it printed, and the audit of its
    result (read from the stores afterwards)."""

    exit: int
    stderr: str
    result: dict[str, Any] | None
    audit: Audit | None = None

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.stderr


def cli_run(root: Path, settings: Settings, *args: str) -> CliRun:
    done = orch_cli(root, settings, "run", *args, "--json")
    got = json.loads(done.stdout) if done.stdout.strip().startswith("{") else None
    return CliRun(done.returncode, done.stderr, got)


@dataclass
class Killed:
    """A run SIGKILLed mid-call: its row in the trace store afterwards, and its resume."""

    row_status: str | None
    row_error: str | None
    resumed: CliRun
    seconds: float = 0.0


def kill_cell(bench: Bench, node: str, *, cli_resume: bool = True) -> Killed:
    """`orch run` in a child process, SIGKILLed while the call at `node` is in flight; then `orch run
    --resume` (`cli_resume=False`: `arun(resume=True)` in this process, one child process fewer)."""
    from orchestrator.tracing.store import TraceStore

    graph = GRAPH[node]
    t0 = time.perf_counter()
    with bench.cell() as (folder, models, proxy):
        fired = threading.Event()
        target: ModelServer | McpProxy = proxy if node == "tool" else models
        target.fault = Fault("hold", MATCH[node], times=1, hook=fired.set)
        settings = settings_for(folder)
        root = write_project(folder / "proj", models, proxy.url)
        run_id = f"kill-{node}"
        proc = orch_cli(root, settings, "run", graph, given_for(graph), "--run-id", run_id, popen=True)
        if not fired.wait(120):
            proc.kill()
            _, err = proc.communicate()
            raise RuntimeError(f"kill cell {node}: the call never came ({err[-2000:]})")
        time.sleep(0.3)  # mid-call: the request is out, its reply never comes
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        store = TraceStore(settings.traces_path)
        try:
            row = store.get_run(run_id)  # reading marks a run whose process died
        finally:
            store.close()
        if cli_resume:
            resumed = cli_run(root, settings, "--resume", run_id)
            if resumed.result is not None:
                resumed.audit = audit(resumed.result, graph, models, proxy, settings)
        else:
            again = asyncio.run(run_once(folder, models, proxy, graph, run_id))
            resumed = CliRun(0, "", {"run_id": run_id}, again)
        return Killed(
            row["status"] if row else None, row["error"] if row else None, resumed, time.perf_counter() - t0
        )


@contextlib.contextmanager
def small_disk(where: Path, size: str = "4m") -> Iterator[Path | None]:
    """A small tmpfs mounted at `where` (None when mounting is refused: not root, or no tmpfs)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path) -> None:
    """Fill the filesystem under `disk` to the last byte (a file of zeros, until ENOSPC)."""
    with open(disk / "filler", "ab", buffering=0) as f:
        for block in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    f.write(b"\0" * block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


def free(disk: Path) -> None:
    (disk / "filler").unlink(missing_ok=True)


@dataclass
class FullDisk:
    """A run whose store's disk filled mid-call (`orch run`), then resumed once the space was freed."""

    first: CliRun | None
    resumed: CliRun | None
    seconds: float = 0.0


def disk_cell(bench: Bench, store: str, node: str) -> FullDisk:
    """The disk under the trace store (`store="traces"`) or the checkpointer (`"checkpoints"`) fills up while
    the call at `node` is in flight; then the space is freed and the run resumed with `orch run --resume`.
    None of either run when a tmpfs can't be mounted here."""
    graph = GRAPH[node]
    t0 = time.perf_counter()
    with bench.cell() as (folder, models, proxy), small_disk(folder / "disk") as disk:
        if disk is None:
            return FullDisk(None, None)
        settings = settings_for(
            folder,
            traces=disk / "traces.db" if store == "traces" else None,
            checkpoints=disk / "ckpt.db" if store == "checkpoints" else None,
        )
        target: ModelServer | McpProxy = proxy if node == "tool" else models
        target.fault = Fault("pass", MATCH[node], times=1, hook=lambda: fill(disk))
        root = write_project(folder / "proj", models, proxy.url)
        run_id = f"disk-{store}-{node}"
        first = cli_run(root, settings, graph, given_for(graph), "--run-id", run_id)
        free(disk)
        if first.result is not None:
            first.audit = audit(first.result, graph, models, proxy, settings)
        resumed = None
        if first.exit != 0:
            resumed = cli_run(root, settings, "--resume", run_id)
            if resumed.result is not None:
                resumed.audit = audit(resumed.result, graph, models, proxy, settings)
        return FullDisk(first, resumed, time.perf_counter() - t0)


# --- judging each cell ---------------------------------------------------------------------------------------
FINISHED_BEFORE = {  # what the run had finished when the fault hit the node
    "controller": "plan, tool result, worker result",
    "worker": "plan, tool result",
    "tool": "plan",
    "user-node": "the `draft` node",
}


@dataclass
class Row:
    """One cell of the matrix, as the table shows it."""

    fault: str
    node: str
    outcome: str = ""
    kept: str = ""
    records: str = ""
    resume: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ran: bool = True

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    @property
    def verdict(self) -> str:
        if not self.ran:
            return "not run"
        return "FAIL" if self.problems else "pass"


def short(text: str | None, limit: int = 150, *, head: bool = False) -> str:
    """A message for a table cell: one line, the cell's temporary folder left out, and when it is long its
    tail (a provider error says what happened last; the row names the node), or its `head`."""
    text = " ".join((text or "").split())
    text = re.sub(r"/\S*?/orch-faults-[^/]+/cell\d+/", ".../", text)
    if len(text) <= limit:
        return text
    return text[:limit] + "..." if head else "..." + text[-limit:]


def clear(error: str | None, *words: str) -> bool:
    """A clear failure: one message, no traceback, naming what failed."""
    text = error or ""
    return bool(text) and "Traceback" not in text and all(w in text for w in words)


def records(*audits: Audit | None) -> str:
    """'ledger = billed = spans' per run, as counts of model calls."""
    shown = [a for a in audits if a is not None]
    calls = "/".join(str(a.ledger_calls) for a in shown)
    billed = "/".join(str(a.billable) for a in shown)
    spans = "spans = ledger" if all(a.costs_agree for a in shown) else "spans < ledger"
    same = all(a.ledger_calls == a.billable for a in shown)
    return f"ledger {calls} calls {'=' if same else '≠'} billed {billed}; {spans}"


def judge_http(fault: str, node: str, runs: HttpRuns) -> Row:
    row = Row(fault, node, seconds=runs.seconds)
    once, hard, resumed = runs.once, runs.hard, runs.resumed
    if runs.once_stderr is not None:
        row.check(
            "Traceback" not in runs.once_stderr, f"×1: `orch run` printed a traceback: {runs.once_stderr}"
        )
    if hard is None:  # ×1 only (the regression tests' short form)
        row.check(once.records_complete and once.repeated == 0, f"×1: cost records: {records(once)}")
        row.check(once.status == "ok" and once.kept, f"×1: `{once.status}`, answer {once.answer!r}")
        return row
    for name, a in (("×1", once), ("every attempt", hard), ("resumed", resumed)):
        if a is None:
            continue
        row.check(a.records_complete, f"{name}: cost records: {records(a)}")
        row.check(a.repeated == 0, f"{name}: {a.repeated} completed model calls made again")
        row.check(a.run_row == a.status, f"{name}: the store says `{a.run_row}`, the run `{a.status}`")
        row.check(not a.unavailable, f"{name}: tools given up for the process: {a.unavailable}")
    row.check(once.status == "ok" and once.kept, f"×1: `{once.status}`, answer {once.answer!r}")
    if node == "tool":
        row.check(once.tool_runs >= 1, "×1: the tool never ran")
        row.check(hard.status == "ok", f"every attempt: `{hard.status}`: {hard.error}")
        row.check("could not be done" in (hard.answer or ""), "every attempt: the answer hides the failure")
        row.check("card_arrival" in (hard.answer or ""), "every attempt: the worker's result was lost")
        errors = sorted(set(once.tool_errors + hard.tool_errors))
        row.outcome = (
            f"×1: `{once.status}`, the controller calls the tool again; every attempt: `{hard.status}`, the "
            f"part fails; the model sees `{short(errors[0] if errors else '', 110)}`"
        )
        row.kept = (
            "answer with both results (×1); the worker's result, and the part's failure said (every attempt)"
        )
        row.records = records(once, hard)
        row.resume = "not needed (the run goes on)"
        if fault == "stall":
            row.notes.append(
                "bounded by `tool_timeout_s`; the server answers the ping after it, so it is kept"
            )
        return row
    row.check(
        hard.status == "failed" and hard.resumable,
        f"every attempt: `{hard.status}`, resumable {hard.resumable}",
    )
    row.check(clear(hard.error, "failed"), f"every attempt: unclear error {hard.error!r}")
    row.check(
        resumed is not None and resumed.status == "ok" and resumed.kept, "resume did not complete the run"
    )
    if resumed is not None and GRAPH[node] == "agent":
        row.check(resumed.tool_runs == 1, f"resumed: the tool ran {resumed.tool_runs} times")
    row.outcome = (
        f"×1: `{once.status}` after a retry; every attempt: `{hard.status}`, resumable: {short(hard.error)}"
    )
    row.kept = f"{FINISHED_BEFORE[node]}: checkpointed, not redone"
    row.records = records(once, hard, resumed)
    row.resume = (
        f"`{resumed.status}`, {resumed.repeated} finished calls repeated" if resumed is not None else "—"
    )
    return row


def judge_kill(node: str, k: Killed) -> Row:
    row = Row("kill", node, seconds=k.seconds)
    a = k.resumed.audit
    row.check(k.row_status == "interrupted", f"the killed run shows `{k.row_status}`")
    row.check("orch run --resume" in (k.row_error or ""), f"no resume hint: {k.row_error!r}")
    row.check(k.resumed.exit == 0 and not k.resumed.traceback, f"resume exited {k.resumed.exit}")
    row.outcome = f"SIGKILL mid-call; `orch traces list` shows `{k.row_status}`: {short(k.row_error, 90)}"
    row.kept = f"{FINISHED_BEFORE[node]}: checkpointed, not redone"
    if a is None:
        row.check(False, f"resume printed no result: {short(k.resumed.stderr, 300)}")
        return row
    row.check(a.status == "ok" and a.kept, f"resumed: `{a.status}`, answer {a.answer!r}")
    row.check(a.records_complete, f"cost records: {records(a)}")
    row.check(a.repeated == 0, f"{a.repeated} completed model calls made again")
    if GRAPH[node] == "agent":
        row.check(a.tool_runs == 1, f"the tool ran {a.tool_runs} times")
    row.records = records(a)
    row.resume = f"`{a.status}` (exit {k.resumed.exit}), {a.repeated} finished calls repeated"
    row.notes.append(
        "the call in flight at the kill had no reply yet, so nothing was billed for it; a provider that had "
        "finished it would have billed a reply that no process lived to record"
    )
    return row


def judge_disk(store: str, node: str, d: FullDisk) -> Row:
    row = Row(f"disk-{store}", node, seconds=d.seconds)
    if d.first is None:
        row.ran = False
        row.outcome = "a tmpfs could not be mounted here"
        return row
    first, resumed = d.first, d.resumed
    row.check(
        first.exit == 1 and not first.traceback, f"`orch run` exited {first.exit}: {short(first.stderr, 300)}"
    )
    fa = first.audit
    row.check(
        fa is not None and clear(fa.error, "disk") and fa.resumable, f"unclear failure: {fa and fa.error!r}"
    )
    said = short(fa.error if fa else first.stderr, head=True)
    row.outcome = f"`{fa.status if fa else '?'}` (exit {first.exit}), resumable: {said}"
    row.kept = f"{FINISHED_BEFORE[node]}: checkpointed"
    if resumed is None or resumed.audit is None:
        row.check(False, "not resumed")
        return row
    a = resumed.audit
    row.check(resumed.exit == 0 and a.status == "ok" and a.kept, f"resume: exit {resumed.exit}, `{a.status}`")
    row.check(
        a.ledger_calls == a.billable, f"{a.billable - a.ledger_calls} billed call(s) missing from the ledger"
    )
    row.check(a.repeated == 0, f"{a.repeated} completed model call(s) paid again on resume")
    row.check(a.costs_agree, f"the stored spans cost ${a.spans_usd:.6f} of the ledger's ${a.ledger_usd:.6f}")
    if GRAPH[node] == "agent":
        row.check(a.tool_runs == 1, f"the tool ran {a.tool_runs} times")
    row.check(a.run_row == "ok", f"the store says `{a.run_row}`")
    row.records = records(fa, a) if fa else records(a)
    row.resume = f"`{a.status}` (exit {resumed.exit}), {a.repeated} finished calls repeated"
    return row


# --- the table -------------------------------------------------------------------------------------------------
WHY = {  # what a failing cell of this fault needs: the fix, described (too large to make in passing)
    "disk-checkpoints": (
        "**Full disk under the checkpointer: the call in flight is paid twice and its ledger row is lost.** "
        "The disk fills while a model call runs. The call is billed; its ledger row and its node's "
        "checkpoint write both fail (the run then fails clearly, resumable). The ledger holds the row in "
        "memory and writes it with the next write that succeeds, but `orch run` exits first, so the row is "
        "lost (logged: `ledger: 1 entries could not be written ...; they are lost`); and since the node's "
        "result was never checkpointed, `--resume` runs the node again and pays for the call a second time. "
        "Fix (not made here: a new mechanism on the user's disk): keep a reserve file beside a SQLite "
        "checkpoint store (`checkpoints.db.reserve`, a few MB, made when the store opens; a store whose "
        "reserve can't be made refuses to start a run, before anything is spent). Wrap the saver's "
        "`aput`/`aput_writes` and `SqliteLedger.insert`: on SQLITE_FULL, delete the reserve, write again "
        "(the space is there now), then fail the run with the disk-full error. The finished node's writes and "
        "its ledger row are then stored, so the resume neither loses the record nor pays again; the resume "
        "makes the reserve again once space was freed. (PostgreSQL and a saver you pass in are not covered.)"
    ),
    "disk-traces": (
        "**Full disk under the trace store: the spans ended while it was full are not stored.** The run goes "
        "on (tracing never breaks a run), then fails clearly when its end can't be recorded; `--resume` "
        "records it, with the totals from the ledger, which is complete. But the span writer drops a batch "
        "it can't write, so `orch traces show`/`top` miss the calls made while the disk was full. Fix (not "
        "made here): keep unwritten batches in memory, bounded, and write them before the next batch (spans "
        "are written once by id, so a retry can't double them); a long-lived process then loses nothing once "
        "space is freed. A process that exits first (the CLI) still loses them unless the resume rebuilds "
        "the missing `chat` spans from the ledger rows."
    ),
}


def table(rows: list[Row]) -> str:
    lines = [
        "| fault | node | outcome | kept | cost records | resume | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [FAULT_NAMES.get(r.fault, r.fault), r.node, r.outcome, r.kept, r.records, r.resume]
        verdict = f"**{r.verdict}**" if r.verdict == "FAIL" else r.verdict
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in [*cells, verdict]) + " |")
    return "\n".join(lines)


def section(rows: list[Row], seconds: float) -> str:
    passed = sum(r.verdict == "pass" for r in rows)
    failed = [r for r in rows if r.verdict == "FAIL"]
    skipped = sum(r.verdict == "not run" for r in rows)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    out = [
        "## Fault matrix",
        "",
        f"Measured {when} on {machine} by `.venv/bin/python bench/faults.py` ({seconds:.0f} s). Every "
        "fault class at every node kind, with real components: "
        "the controller, the worker and a user graph's node (`polish`, the second of two) call loopback HTTP "
        "servers that speak OpenAI's wire protocol; the tool is an MCP server over streamable HTTP "
        "(`tests/mcp_servers/toolbox.py`) behind a fault-injecting HTTP proxy. The agent's run plans a tool "
        "part and a worker part, calls the MCP tool, delegates to the worker and answers from both results; "
        "the controller's fault is on its last call (the answer), after both results are in. "
        "`tests/test_faults.py` runs one cell per fault class and the cells that found bugs.",
        "",
        "- HTTP faults (429 with `Retry-After: 1`, 503, a stall past the slot's 1 s read timeout, a stream cut "
        "after the first token, a chunk that is not JSON) hit once (×1: the provider client's retry gets past "
        "it; at the tool, the controller's second call) and then every attempt (the call fails after its 3 "
        "attempts); a failed run is resumed in a new `Orchestrator` once the fault is cleared. At the tool the "
        "×1 run is `orch run` in a child process, so what it prints is checked too.",
        "- Kill: `orch run` in a child process, SIGKILLed while the node's call is in flight; then `orch run "
        "--resume`. Full disk: `orch run` with the trace store or the checkpoint file (with its ledger) on a "
        "4 MB tmpfs, filled to the last byte when the node's call reaches its server; then the space is freed "
        "and `orch run --resume` runs.",
        "- *kept*: what had finished before the fault; the checks are that the resume did not redo it (the "
        "tool's runs on its server are counted, and no completed model request is sent twice).",
        "- *cost records*: model calls in the ledger as stored, per run (×1 / every attempt / resumed), "
        "against the replies the model server billed (completed ones, and streams broken after tokens went "
        "out); and the stored `chat` spans' cost against the ledger's.",
        "",
        f"**{passed} of {len(rows)} cells pass**"
        + (f", {len(failed)} fail" if failed else "")
        + (f", {skipped} not run" if skipped else "")
        + ".",
        "",
        table(rows),
    ]
    notes: dict[tuple[str, str], list[str]] = {}  # (fault, note) -> the nodes it holds for
    for r in rows:
        for n in r.notes:
            if r.verdict != "not run":
                notes.setdefault((r.fault, n), []).append(r.node)
    if notes:
        out += ["", "Notes:", ""]
        for (fault, n), where in notes.items():
            out.append(f"- {FAULT_NAMES.get(fault, fault)} ({', '.join(where)}): {n}.")
    if failed:
        out += ["", "### Failing cells", ""]
        for r in failed:
            out.append(
                f"- {FAULT_NAMES.get(r.fault, r.fault)} at the {r.node}: " + "; ".join(r.problems) + "."
            )
        for fault in dict.fromkeys(r.fault for r in failed):
            if fault in WHY:
                out += ["", WHY[fault]]
    return "\n".join(out)


def write_doc(text: str) -> None:
    """Put the section between its markers in docs/reliability.md; the rest of the file is kept as it is."""
    splice(DOC, f"{START}\n{text}\n{END}", START, END, "Reliability")


# --- the matrix ------------------------------------------------------------------------------------------------
def run_cell(bench: Bench, fault: str, node: str) -> Row:
    if fault in HTTP_FAULTS:
        return judge_http(fault, node, asyncio.run(http_cell(bench, fault, node, cli=node == "tool")))
    if fault == "kill":
        return judge_kill(node, kill_cell(bench, node))
    store = fault.removeprefix("disk-")
    return judge_disk(store, node, disk_cell(bench, store, node))


def matrix(faults: tuple[str, ...] = FAULTS, nodes: tuple[str, ...] = NODES) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="orch-faults-") as tmp:
        bench = Bench(Path(tmp))
        try:
            for fault in faults:
                for node in nodes:
                    row = run_cell(bench, fault, node)
                    rows.append(row)
                    print(
                        f"{fault:>17} @ {node:<10} {row.verdict:<7} {row.seconds:5.1f}s  {'; '.join(row.problems)}",
                        flush=True,
                    )
        finally:
            bench.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", action="append", choices=FAULTS, help="only these fault classes")
    parser.add_argument("--node", action="append", choices=NODES, help="only these node kinds")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/reliability.md")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = matrix(tuple(args.fault or FAULTS), tuple(args.node or NODES))
    text = section(rows, time.perf_counter() - t0)
    print(text)
    if not args.no_write:
        if args.fault or args.node:
            print("(a partial matrix is not written to docs/reliability.md)", file=sys.stderr)
        else:
            write_doc(text)
    return 1 if any(r.verdict == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
