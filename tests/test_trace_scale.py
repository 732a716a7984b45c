"""The trace store at scale: roll-ups kept at ingest agree with the spans, several processes write one store
without losing a span, retention, a subgraph's inclusive cost, and the report's scopes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TypedDict

import pytest
from langchain_core.messages import HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime

from orchestrator import Orchestrator, RunContext, Settings, SlotConfig
from orchestrator.config import PriceOverride
from orchestrator.testing import ScriptedChatModel
from orchestrator.tracing import report
from orchestrator.tracing.report import Scope, hotspots
from orchestrator.tracing.store import TraceStore

ROOT = Path(__file__).resolve().parent.parent
PRODUCE = f"""
import sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "bench")!r}]
from traces import _produce
_produce(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[3]) * 100000, float(sys.argv[4]))
"""


def _sums(store: TraceStore, sql: str) -> dict[str, tuple[float, ...]]:
    return {str(r[0]): tuple(round(float(x or 0), 4) for x in r[1:]) for r in store.db.execute(sql)}


def test_several_processes_write_one_store_and_the_rollups_agree_with_the_spans(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    TraceStore(path).close()
    start = time.time() + 1.0
    procs = [
        subprocess.Popen([sys.executable, "-c", PRODUCE, str(path), "400", str(i), str(start)])
        for i in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    store = TraceStore(path)
    runs = store.db.execute("select count(*) from runs").fetchone()[0]
    spans = store.db.execute("select count(*) from spans").fetchone()[0]
    assert runs >= 3 * 40 and spans >= 3 * 400  # every process's runs and spans are there
    by_model = _sums(
        store,
        "select model, count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(compute_ms) "
        "from spans where kind = 'chat' group by model",
    )
    rolled = _sums(
        store,
        "select key, sum(spans), sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(compute_ms) "
        "from rollups where dim = 'model' group by key",
    )
    assert rolled == by_model
    assert _sums(
        store, "select node, count(*), sum(duration_ms) from spans where kind = 'node' group by node"
    ) == (
        _sums(store, "select key, sum(spans), sum(duration_ms) from rollups where dim = 'node' group by key")
    )
    # the report read from the roll-ups (a large store) agrees with the one read from every span
    exact = {h.key: h for h in hotspots(store, "model")}
    orig = report.EXACT_SPANS
    try:
        report.EXACT_SPANS = 0
        rolled_up = {h.key: h for h in hotspots(store, "model")}
    finally:
        report.EXACT_SPANS = orig
    assert set(exact) == set(rolled_up) == set(by_model)
    for key, h in exact.items():
        r = rolled_up[key]
        assert (r.calls, r.input_tokens, r.errors) == (h.calls, h.input_tokens, h.errors)
        assert r.cost_usd == pytest.approx(h.cost_usd) and r.compute_ms == pytest.approx(h.compute_ms)
        assert r.p50_ms == pytest.approx(h.p50_ms, rel=0.1) and r.ttft_p50_ms == pytest.approx(
            h.ttft_p50_ms, rel=0.1
        )
    shares = [h.compute_share or 0 for h in exact.values()]
    assert sum(shares) == pytest.approx(1.0) and max(shares) == 1.0  # only the local model computes here
    store.close()


def test_a_span_written_twice_is_stored_and_counted_once(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.db")
    row = {"span_id": "a1", "run_id": "r", "kind": "tool", "tool": "t", "start_ns": 1, "duration_ms": 5.0}
    store.write_spans([row, {**row, "span_id": "a2"}])
    store.write_spans([row, {**row, "span_id": "a3"}])  # a1 again, with a new one
    assert store.db.execute("select count(*) from spans").fetchone()[0] == 3
    assert store.db.execute("select spans, duration_ms from rollups where dim = 'tool'").fetchone() == (
        3.0,
        15.0,
    )
    store.close()


def test_prune_deletes_old_runs_and_keeps_the_rollups_true(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    subprocess.run([sys.executable, "-c", PRODUCE, str(path), "300", "0", "0"], check=True, timeout=120)
    store = TraceStore(path)
    runs = [r for (r,) in store.db.execute("select run_id from runs order by run_id")]
    old, kept = runs[: len(runs) // 2], runs[len(runs) // 2 :]
    long_ago = time.time() - 40 * 86_400
    with store.db.conn:
        for run_id in old:  # these ran 40 days ago
            store.db.execute(
                "update runs set status = 'ok', started_at = ?, ended_at = ? where run_id = ?",
                [long_ago, long_ago, run_id],
            )
        for run_id in kept:
            store.db.execute(
                "update runs set status = 'ok', ended_at = started_at where run_id = ?", [run_id]
            )
    deleted_runs, deleted_spans = store.prune(time.time() - 30 * 86_400)
    assert deleted_runs == len(old) and deleted_spans > 0
    assert store.db.execute("select count(*) from runs").fetchone()[0] == len(kept)
    left = store.db.execute("select count(*) from spans where kind = 'chat'").fetchone()[0]
    assert store.db.execute("select sum(spans) from rollups where dim = 'model'").fetchone()[0] == left
    store.close()


class S(TypedDict, total=False):
    input: str
    answer: str


async def _draft(state: S, runtime: Runtime[RunContext]) -> dict[str, str]:
    reply = await runtime.context.model("write").ainvoke([HumanMessage(state["input"])])
    return {"answer": str(reply.content)}


async def test_a_subgraphs_cost_is_inclusive_in_its_parent_node(settings: Settings) -> None:
    inner: StateGraph[S, RunContext, S, S] = StateGraph(S, context_schema=RunContext)
    inner.add_node("draft", _draft)
    inner.add_edge(START, "draft")
    outer: StateGraph[S, RunContext, S, S] = StateGraph(S, context_schema=RunContext)
    outer.add_node("write/up", inner.compile())
    outer.add_edge(START, "write/up")
    price = PriceOverride(input=1e-6, output=4e-6)
    orch = Orchestrator(
        settings=settings,
        slots={"write": SlotConfig(model="python:scripted", prices=price)},
        models={"write": ScriptedChatModel(replies=["a draft"])},
        graphs={"nested": outer},
    )
    result = await orch.arun("nested", "write it")
    assert result.status == "ok", result.error
    assert orch.store is not None
    chat = next(s for s in orch.store.run_spans(result.run_id) if s["kind"] == "chat")
    assert (chat["node"], chat["node_path"]) == ("draft", '["write/up", "draft"]')
    spots = {h.key: h for h in hotspots(orch.store, "node", scope=Scope(run_ids=(result.run_id,)))}
    cost = result.ledger.cost_usd
    assert cost and spots["draft"].cost_usd == pytest.approx(cost)
    assert spots["write/up"].cost_usd == 0.0 and spots["write/up"].cost_incl == pytest.approx(cost)
    assert spots["write/up"].time_excl_ms < spots["write/up"].time_ms  # the nested node's time is inside
    orch.close()


def test_top_scopes_and_errors_in_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    subprocess.run([sys.executable, "-c", PRODUCE, str(path), "200", "0", "0"], check=True, timeout=120)
    env = {**os.environ, "COLUMNS": "250"}

    def orch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", "traces", *args, "--traces", str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    last = orch("top", "--by", "slot", "--last", "3", "--json")
    assert last.returncode == 0, last.stderr
    rows = json.loads(last.stdout)
    assert sum(r["model_calls"] for r in rows) > 0 and {r["key"] for r in rows} <= {
        "controller",
        "extract",
        "classify",
        "summarize",
    }
    table = orch("top", "--by", "model", "--since", "1h", "--graph", "assistant")
    assert table.returncode == 0, table.stderr
    assert "shares of cost and compute time" in table.stdout and "local:qwen2.5-0.5b" in table.stdout
    bad = orch("top", "--since", "yesterday")
    assert bad.returncode == 2 and "--since 'yesterday' is not a duration" in bad.stderr
    both = orch("top", "--run", "x", "--last", "2")
    assert both.returncode == 2 and "either --run RUN or --last N" in both.stderr


OPEN = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from orchestrator.tracing.store import TraceStore
while time.time() < float(sys.argv[2]):
    time.sleep(0.001)
store = TraceStore(sys.argv[1])
store.start_run(sys.argv[3], "g", config_hash="h", version="v")
store.close()
"""


def test_several_processes_can_create_one_new_store_at_once(tmp_path: Path) -> None:
    path, start = tmp_path / "new.db", time.time() + 1.5
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN, str(path), str(start), f"r{i}"], stderr=subprocess.PIPE)
        for i in range(4)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    store = TraceStore(path)
    assert store.db.execute("select count(*) from runs").fetchone()[0] == 4
    store.close()
