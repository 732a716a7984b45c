"""`orch traces report --html`: the page in a real headless Chromium, its charts read back and checked
against the trace store; real runs (scripted models, priced) and a local-model run (cost 0, compute time).

Chromium is Debian's `chromium` (`.ci/run` installs it), driven over the DevTools protocol through a
websocket: no browser download, no network. A missing Chromium fails the tests, saying how to install it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from websockets.sync.client import connect

from orchestrator import Orchestrator, RunContext, Settings, SlotConfig, cli
from orchestrator.config import PriceOverride
from orchestrator.testing import ScriptedChatModel
from orchestrator.tracing import Tracing
from orchestrator.tracing import attrs as A
from orchestrator.tracing.spans import open_span
from orchestrator.tracing.store import TraceStore
from support import MakeOrch, act

# Names that are markup: the page must show them as text and run nothing they hold. (A node name holds no
# "/": the tracer reads one as a subgraph's path and keeps the last part.)
EVIL_NODE = "<img src=x onerror=alert(1)>"
QUOTES_NODE = "\"&'"
EVIL_TOOL = "<script>alert(2)</script>"
EVIL_MODEL = "local:q&a<b>"
EVIL_ERROR = '</title><b>bad</b> & "date"'

DAYS = {"tool": "days between 2026-03-02 and 2026-03-20"}
CLASSIFY = {"worker": "classify_request", "text": "my card has not arrived"}
TASK = "How many days from 2026-03-02 to 2026-03-20? Also classify: 'my card has not arrived'"
CALL = act(action="call_tool", tool="date_diff", args={"start": "2026-03-02", "end": "2026-03-20"})

# Read in the page: every chart's values from its data-* attributes and its drawn geometry.
READ_PAGE = """(() => {
  const num = (v) => (v === undefined || v === "" ? null : Number(v));
  const box = (el) => el.getBoundingClientRect();
  const flames = {};
  for (const svg of document.querySelectorAll("svg.flame")) {
    flames[svg.dataset.measure] = {
      total: Number(svg.dataset.total),
      cells: [...svg.querySelectorAll("g.cell")].map((c) => ({
        level: Number(c.dataset.level), node: c.dataset.node ?? null, kind: c.dataset.kind ?? null,
        model: c.dataset.model ?? null, tool: c.dataset.tool ?? null, value: Number(c.dataset.value),
        width: box(c.querySelector("rect")).width, title: c.querySelector("title").textContent,
      })),
    };
  }
  const tables = {};
  for (const t of document.querySelectorAll("table.hotspots")) {
    tables[t.dataset.by] = [...t.tBodies[0].rows].map((r) => ({
      key: r.dataset.key, shown: r.cells[0].textContent, calls: Number(r.dataset.calls),
      cost: num(r.dataset.cost), ms: Number(r.dataset.ms), errors: Number(r.dataset.errors),
    }));
  }
  const waterfalls = [...document.querySelectorAll("details.run")].map((d) => {
    const open = d.open;
    d.open = true;  // a folded run's bars have no size until shown
    const svg = d.querySelector("svg.waterfall");
    return {
      run: d.dataset.run, open, summary: d.querySelector("summary").textContent,
      extent: Number(svg.dataset.extentMs), barWidth: Number(svg.dataset.barWidth),
      bars: [...svg.querySelectorAll("g.bar")].map((b) => ({
        span: b.dataset.span, kind: b.dataset.kind, name: b.dataset.name, ms: Number(b.dataset.ms),
        label: b.querySelector("text").textContent, width: box(b.querySelector("rect")).width,
        title: b.querySelector("title").textContent, error: b.classList.contains("error"),
      })),
    };
  });
  const measure = document.querySelector(".measure");
  return {
    flames, tables, waterfalls, measures: measure.dataset.measures.split(" "), why: measure.textContent,
    h1: document.querySelector("h1").textContent, scripts: document.scripts.length,
    images: document.images.length, alerts: window.__alerts ?? 0, errors: window.__errors ?? [],
  };
})()"""


class Chromium:
    """Headless Chromium over the DevTools protocol: one page, commands and replies on a websocket."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            pytest.fail(
                "no chromium on PATH: install Debian's package (`apt-get install -y chromium`; .ci/run does "
                "this when it is missing) to test the HTML report in a real browser"
            )
        profile = workdir / "profile"
        self.log = workdir / "chromium.log"
        self._stack = contextlib.ExitStack()
        log = self._stack.enter_context(self.log.open("wb"))
        self.proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-breakpad",
                "--disable-crash-reporter",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # its helper processes go with it
        )
        self._stack.callback(self._stop)
        self.events: list[dict[str, Any]] = []
        self._id = 0
        self.session: str | None = None
        try:
            self.ws = self._stack.enter_context(connect(self._devtools_url(profile), max_size=None))
            page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
            self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Network"):
                self.call(f"{domain}.enable")
            # before any page script: count alerts and uncaught errors instead of blocking on a dialog
            self.call(
                "Page.addScriptToEvaluateOnNewDocument",
                source="window.__alerts = 0; window.alert = () => { window.__alerts += 1; };"
                "window.__errors = [];"
                "addEventListener('error', (e) => window.__errors.push(String(e.message)));",
            )
        except BaseException:
            self.close()
            raise

    def _devtools_url(self, profile: Path) -> str:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start its DevTools server; its log:\n{self.log.read_text()}")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        return f"ws://127.0.0.1:{port}{path}"

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv(timeout=20))
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return dict(reply["result"])
            self.events.append(reply)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Load a page and wait until its script has run."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 15
        ready = (  # this page, not the one before it: loaded, and its script run
            f"location.href === {json.dumps(url)} && document.readyState === 'complete' "
            "&& document.documentElement?.dataset.ready === '1'"
        )
        while not self.evaluate(ready):
            assert time.monotonic() < deadline, f"{url} did not finish loading"
            time.sleep(0.02)

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def screenshot(self, path: Path) -> Path:
        """The whole page as a PNG."""
        self.call("Emulation.clearDeviceMetricsOverride")  # the page's own height, not the last one's
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.call(
            "Emulation.setDeviceMetricsOverride", width=1280, height=height, deviceScaleFactor=1, mobile=False
        )
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        self._stack.close()

    def _stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    browser = Chromium(tmp_path_factory.mktemp("chromium"))
    yield browser
    browser.close()


# --- runs into a real store ------------------------------------------------------------------------------
def _lookup(order_id: str) -> str:
    return "shipped"


def _evil_graph() -> StateGraph[Any, Any, Any, Any]:
    """A user's graph whose node and tool names are markup: two slots (two models, two prices), a tool."""
    tool = StructuredTool.from_function(_lookup, name=EVIL_TOOL, description="Look an order up.")

    async def plan(state: MessagesState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        reply = await runtime.context.model("big").ainvoke([HumanMessage("plan the order lookup")])
        call = {"name": EVIL_TOOL, "args": {"order_id": "A7"}, "id": "c1", "type": "tool_call"}
        return {"messages": [AIMessage(str(reply.content), tool_calls=[call])]}

    async def write(state: MessagesState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        reply = await runtime.context.model("small").ainvoke([HumanMessage("write the answer")])
        return {"messages": [AIMessage(str(reply.content))]}

    g: StateGraph[Any, Any, Any, Any] = StateGraph(MessagesState, context_schema=RunContext)
    g.add_node(EVIL_NODE, plan)
    g.add_node("tools", ToolNode([tool]))
    g.add_node(QUOTES_NODE, write)
    g.add_edge(START, EVIL_NODE)
    g.add_edge(EVIL_NODE, "tools")
    g.add_edge("tools", QUOTES_NODE)
    g.add_edge(QUOTES_NODE, END)
    return g


async def _priced_runs(make_orch: MakeOrch, settings: Settings) -> list[str]:
    """Two runs of the bundled agent (tool and worker parts) and one of the user graph, most recent last."""
    ids = []
    for _ in range(2):
        orch = make_orch(
            [
                json.dumps({"plan": [DAYS, CLASSIFY]}),
                CALL,
                act(action="final", answer="18 days; card_arrival"),
            ],
            ['{"label": "card_arrival"}'],
            by_turn=True,
        )
        result = await orch.arun("agent", TASK)
        assert result.status == "ok", result.error
        ids.append(result.run_id)
        orch.close()
    orch = Orchestrator(
        settings=settings,
        slots={
            "big": SlotConfig(
                model="python:big", role="racehorse", prices=PriceOverride(input=3e-6, output=15e-6)
            ),
            "small": SlotConfig(model="python:small", prices=PriceOverride(input=1e-7, output=4e-7)),
        },
        models={
            "big": ScriptedChatModel(replies=["a plan of a few words"]),
            "small": ScriptedChatModel(replies=["done"]),
        },
        graphs={"evil": _evil_graph},
    )
    result = await orch.arun("evil", "Where is order A7?")
    assert result.status == "ok", result.error
    ids.append(result.run_id)
    orch.close()
    return ids


def _local_run(store: TraceStore, run_id: str) -> None:
    """A run as the local models record it (cost 0, compute time), through the real exporter."""
    tracing = Tracing(store)
    tracer = tracing.tracer
    store.start_run(run_id, "local-graph", config_hash="test", version="test")
    base = {A.RUN_ID: run_id}

    def chat(node: str, model: str, compute_ms: float, sleep_s: float) -> None:
        with open_span(
            tracer,
            f"chat {model}",
            "chat",
            {
                **base,
                A.NODE: node,
                A.REQUEST_MODEL: model,
                A.COST: 0.0,
                A.COMPUTE_MS: compute_ms,
                A.INPUT_TOKENS: 200,
                A.OUTPUT_TOKENS: 20,
            },
        ):
            time.sleep(sleep_s)

    with open_span(tracer, "invoke_workflow local-graph", "run", base):
        for node, model, compute_ms in (
            ("planner", "local:qwen2.5-1.5b", 30.0),
            ("writer", EVIL_MODEL, 12.0),
            ("planner", "local:qwen2.5-1.5b", 25.0),
        ):
            with open_span(tracer, f"invoke_agent {node}", "node", {**base, A.NODE: node}):
                chat(node, model, compute_ms, sleep_s=0.035 if node == "planner" else 0.015)
        tool = {**base, A.NODE: "call_tool", A.TOOL_NAME: "date_diff"}
        with (
            open_span(tracer, "call_tool", "node", {**base, A.NODE: "call_tool"}),
            contextlib.suppress(ValueError),  # the tool's span ends as an error, its node's does not
            open_span(tracer, "execute_tool date_diff", "tool", tool),
        ):
            time.sleep(0.01)
            raise ValueError(EVIL_ERROR)
    tracing.close()
    store.end_run(run_id, status="ok", cost_usd=0.0, input_tokens=600, output_tokens=60)


# --- what the store says -----------------------------------------------------------------------------
def _sums(store: TraceStore, run_ids: list[str], *keys: str) -> dict[Any, float]:
    """Cost of the model calls grouped by columns, straight from the spans table."""
    marks = ", ".join("?" * len(run_ids))
    cols = ", ".join(keys)
    rows = store.db.execute(
        f"select {cols}, sum(cost_usd) from spans where kind = 'chat' and run_id in ({marks}) "
        f"and cost_usd is not null group by {cols}",
        run_ids,
    ).fetchall()
    return {(r[0] if len(keys) == 1 else tuple(r[:-1])): r[-1] for r in rows if r[-1]}


def _check_flame(flame: dict[str, Any], by_node: dict[Any, float], by_leaf: dict[Any, float]) -> None:
    """Values as the store gives them; each cell drawn at its share of the 1000 px chart."""
    total = flame["total"]
    assert total == pytest.approx(sum(by_node.values()))
    cells = flame["cells"]
    assert [c["value"] for c in cells if c["level"] == 0] == [pytest.approx(total)]
    assert {c["node"]: c["value"] for c in cells if c["level"] == 1} == pytest.approx(by_node)
    leaves = {(c["node"], c["model"] or c["tool"] or "own"): c["value"] for c in cells if c["level"] == 2}
    assert leaves == pytest.approx(by_leaf)
    for c in cells:
        assert c["width"] == pytest.approx(c["value"] / total * 1000, abs=0.05)


def _check_waterfalls(store: TraceStore, page: dict[str, Any], run_ids: list[str]) -> None:
    """One waterfall per run, most recent first and open; every span of the run, each bar its duration."""
    assert [w["run"] for w in page["waterfalls"]] == run_ids
    assert [w["open"] for w in page["waterfalls"]] == [True] + [False] * (len(run_ids) - 1)
    for w in page["waterfalls"]:
        spans = store.run_spans(w["run"])
        assert f"{len(spans)} spans" in w["summary"]
        assert sorted(b["span"] for b in w["bars"]) == sorted(s["span_id"] for s in spans)
        extent = (max(s["end_ns"] for s in spans) - min(s["start_ns"] for s in spans)) / 1e6
        assert w["extent"] == pytest.approx(extent)
        bars = sorted(w["bars"], key=lambda b: b["span"])
        for bar, span in zip(bars, sorted(spans, key=lambda s: s["span_id"]), strict=True):
            assert bar["kind"] == span["kind"] and bar["name"] == span["name"]
            assert bar["ms"] == pytest.approx((span["end_ns"] - span["start_ns"]) / 1e6)
            assert bar["width"] == pytest.approx(max(1.0, bar["ms"] / extent * w["barWidth"]), abs=0.05)


def _load(chromium: Chromium, path: Path, shot: Path) -> dict[str, Any]:
    chromium.open(path.as_uri())
    page: dict[str, Any] = chromium.evaluate(READ_PAGE)
    assert page["errors"] == [] and page["alerts"] == 0
    assert chromium.requests() == [path.as_uri()]  # the page itself, nothing else: no network, no CDN
    print(f"screenshot: {chromium.screenshot(shot)}")
    return page


# --- the tests ---------------------------------------------------------------------------------------------
async def test_priced_runs_report_in_chromium(
    make_orch: MakeOrch,
    settings: Settings,
    chromium: Chromium,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = await _priced_runs(make_orch, settings)
    html_path = tmp_path / "out" / "report.html"
    db = str(settings.traces_path)
    assert cli.main(["traces", "report", "--last", "3", "--html", str(html_path), "--traces", db]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {html_path}" in printed
    assert "3 runs" in printed and "charts by cost (USD);" in printed

    page = _load(chromium, html_path, tmp_path / "report.png")
    store = TraceStore(settings.traces_path)
    newest_first = ids[::-1]
    assert page["h1"] == "Trace report: the last 3 runs"
    assert page["measures"] == ["cost"] and "all 3 runs are priced" in page["why"]
    assert set(page["flames"]) == {"cost"}
    _check_flame(page["flames"]["cost"], _sums(store, ids, "node"), _sums(store, ids, "node", "model"))
    nodes = {c["node"] for c in page["flames"]["cost"]["cells"] if c["level"] == 1}
    assert {"controller", "worker", EVIL_NODE, QUOTES_NODE} <= nodes  # markup names read back as they are

    by_node = {r["key"]: r for r in page["tables"]["node"]}
    for node, cost in _sums(store, ids, "node").items():
        assert by_node[node]["cost"] == pytest.approx(cost)
    marks = ", ".join("?" * len(ids))
    for kind, by in (("node", "node"), ("chat", "model"), ("tool", "tool")):
        counts = store.db.execute(
            f"select {by}, count(*) from spans where kind = ? and run_id in ({marks}) group by {by}",
            [kind, *ids],
        ).fetchall()
        assert {r["key"]: r["calls"] for r in page["tables"][by]} == dict(counts)
    assert by_node["find_tools"]["cost"] is None  # no model call there: no cost, not a zero
    assert {r["shown"] for r in page["tables"]["tool"]} == {"date_diff", EVIL_TOOL}
    assert by_node[EVIL_NODE]["shown"] == EVIL_NODE and by_node[QUOTES_NODE]["shown"] == QUOTES_NODE
    # nothing from the store became markup: the page's own script only, no image from the node's name
    assert page["scripts"] == 1 and page["images"] == 0
    _check_waterfalls(store, page, newest_first)
    evil = page["waterfalls"][0]
    assert f"execute_tool {EVIL_TOOL}" in [b["name"] for b in evil["bars"]]
    assert EVIL_NODE in [b["label"] for b in evil["bars"]]

    # a click on a node zooms it to the full width; the top row zooms out again
    zoomed = chromium.evaluate(
        """(() => {
      const svg = document.querySelector("svg.flame");
      const cell = [...svg.querySelectorAll("g.level1")].find((c) => c.dataset.node === "worker");
      cell.dispatchEvent(new MouseEvent("click"));
      const width = cell.querySelector("rect").getBoundingClientRect().width;
      const hidden = [...svg.querySelectorAll("g.level1")].filter((c) => c.style.display === "none").length;
      svg.querySelector("g.level0").dispatchEvent(new MouseEvent("click"));
      return [width, hidden, cell.querySelector("rect").getBoundingClientRect().width];
    })()"""
    )
    worker = next(c for c in page["flames"]["cost"]["cells"] if c["level"] == 1 and c["node"] == "worker")
    assert zoomed == [pytest.approx(1000), len(nodes) - 1, pytest.approx(worker["width"], abs=0.05)]
    store.close()


async def test_local_runs_weigh_compute_time_and_a_mixed_scope_shows_both(
    make_orch: MakeOrch, settings: Settings, chromium: Chromium, tmp_path: Path
) -> None:
    orch = make_orch(
        [json.dumps({"plan": [DAYS]}), CALL, act(action="final", answer="18 days")], by_turn=True
    )
    priced = await orch.arun("agent", TASK)
    orch.close()
    store = TraceStore(settings.traces_path)
    _local_run(store, "local-run-1")
    spans = store.run_spans("local-run-1")
    assert {s["compute_ms"] for s in spans if s["kind"] == "chat"} == {30.0, 12.0, 25.0}

    # what the time chart must show, from the spans table: a model call's compute time, a tool's duration,
    # and each node's own time (its duration less its children's)
    child_ms: dict[str, float] = defaultdict(float)
    for s in spans:
        child_ms[s["parent_id"]] += s["duration_ms"]
    leaves: dict[Any, float] = defaultdict(float)
    for s in spans:
        if s["kind"] == "chat":
            leaves[(s["node"], s["model"])] += s["compute_ms"]
        elif s["kind"] == "tool":
            leaves[(s["node"], s["tool"])] += s["duration_ms"]
        elif s["kind"] == "node":
            leaves[(s["node"], "own")] += max(0.0, s["duration_ms"] - child_ms[s["span_id"]])
    nodes: dict[Any, float] = defaultdict(float)
    for (node, _), ms in leaves.items():
        nodes[node] += ms

    one = tmp_path / "local.html"
    summary = json.loads(_cli_json(["traces", "report", "local-run", "--html", str(one)], settings))
    assert summary["measures"] == ["time"] and summary["cost_usd"] == 0.0
    page = _load(chromium, one, tmp_path / "local.png")
    assert page["measures"] == ["time"] and "no model call in this run has a cost" in page["why"]
    assert set(page["flames"]) == {"time"}
    _check_flame(page["flames"]["time"], dict(nodes), dict(leaves))
    by_model = {r["key"]: r for r in page["tables"]["model"]}
    assert by_model["local:qwen2.5-1.5b"]["ms"] == pytest.approx(55.0)
    assert by_model[EVIL_MODEL]["shown"] == EVIL_MODEL and by_model[EVIL_MODEL]["cost"] == 0.0
    _check_waterfalls(store, page, ["local-run-1"])
    (failed,) = [b for b in page["waterfalls"][0]["bars"] if b["error"]]
    assert failed["name"] == "execute_tool date_diff"
    assert failed["title"].endswith(f"error: ValueError: {EVIL_ERROR}")  # the message as it was raised
    assert page["tables"]["tool"][0]["errors"] == 1

    both = tmp_path / "both.html"
    _cli_json(["traces", "report", "--last", "2", "--html", str(both)], settings)
    page = _load(chromium, both, tmp_path / "both.png")
    assert page["measures"] == ["cost", "time"]
    assert "1 of the 2 runs is priced and 1 ran at no cost" in page["why"]
    runs = ["local-run-1", priced.run_id]
    _check_flame(page["flames"]["cost"], _sums(store, runs, "node"), _sums(store, runs, "node", "model"))
    planner = [
        c["value"] for c in page["flames"]["time"]["cells"] if c["node"] == "planner" and c["level"] == 1
    ]
    assert planner == [pytest.approx(nodes["planner"])]  # the local run's node, in the scope's time chart
    _check_waterfalls(store, page, runs)
    store.close()


def _cli_json(argv: list[str], settings: Settings) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert cli.main([*argv, "--json", "--traces", str(settings.traces_path)]) == 0
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "no run 'nope' in "),
        (["--last", "0"], "argument --last: got '0'; give a whole number, 1 or more"),
        ([], "give a run id or --last N"),
        (["run-a", "--last", "2"], "give a run id or --last N"),
    ],
)
def test_report_errors_name_the_value_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    db = tmp_path / "traces.db"
    store = TraceStore(db)
    _local_run(store, "run-a")
    store.close()
    assert cli.main(["traces", "report", *argv, "--html", str(tmp_path / "r.html"), "--traces", str(db)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_report_of_an_empty_store_or_to_an_unwritable_path_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.db"
    TraceStore(empty).close()
    assert (
        cli.main(
            ["traces", "report", "--last", "3", "--html", str(tmp_path / "r.html"), "--traces", str(empty)]
        )
        == 2
    )
    assert f"no runs in {empty} yet; run a graph first" in capsys.readouterr().err

    db = tmp_path / "traces.db"
    store = TraceStore(db)
    _local_run(store, "run-a")
    store.close()
    for target, why in (
        (tmp_path, "Is a directory"),
        (db / "r.html", f"{str(db)!r} is a file, not a folder"),
    ):
        assert cli.main(["traces", "report", "run-a", "--html", str(target), "--traces", str(db)]) == 2
        err = capsys.readouterr().err
        assert f"can't write the report to {str(target)!r}: {why}; pass --html a file path" in err
