"""Span trees (in-memory exporter), the SQLite store, hotspots, and the host's TracerProvider."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.tracing.report import hotspots, span_tree
from orchestrator.tracing.store import MIGRATIONS, TraceStore, migrate
from support import MakeOrch, act

# The request holds every value the scripted steps use (tool arguments and worker text are checked).
TASK = "How many days from 2026-03-02 to 2026-03-20? Also classify: 'my card has not arrived'"
DAYS = {"tool": "days between 2026-03-02 and 2026-03-20"}
CLASSIFY = {"worker": "classify_request", "text": "my card has not arrived"}
CALL = act(action="call_tool", tool="date_diff", args={"start": "2026-03-02", "end": "2026-03-20"})
FINAL = act(action="final", answer="18 days; card_arrival")  # states every result, as the answer must
DAYS_FINAL = act(action="final", answer="18 days")


def plan(*parts: dict[str, str]) -> str:
    return json.dumps({"plan": list(parts)})


# Model decisions: the plan, the date_diff call, the answer. The search for the tool part and the
# delegation of the worker part are fixed by the plan (no model call), so a run of these takes four
# controller executions: plan (+ fixed find_tools), call_tool, (fixed) delegate, final.
STEPS = [plan(DAYS, CLASSIFY), CALL, FINAL]


async def test_span_tree_and_attributes(make_orch: MakeOrch, spans: InMemorySpanExporter) -> None:
    result = await make_orch(STEPS, ['{"label": "card_arrival"}']).arun("agent", TASK)
    assert (result.status, result.answer) == ("ok", "18 days; card_arrival")
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    names = sorted(s.name for s in finished)
    assert names == sorted(
        ["invoke_workflow agent"]
        + ["invoke_agent controller"] * 4
        + ["chat python:scripted"] * 4  # 3 controller calls + 1 worker call
        + ["find_tools", "call_tool", "execute_tool date_diff", "invoke_agent worker"]
    )
    run = next(s for s in finished if s.name == "invoke_workflow agent")
    assert run.parent is None
    assert run.attributes is not None
    assert run.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert run.attributes["orchestrator.run_id"] == result.run_id
    assert run.attributes["orchestrator.version"] == "0.1.0"
    assert len(str(run.attributes["orchestrator.config_hash"])) == 16
    for s in finished:
        assert s.attributes is not None and s.attributes["orchestrator.run_id"] == result.run_id
        if s.name.startswith("invoke_agent") or s.name in {"find_tools", "call_tool"}:
            assert s.parent is not None and by_id[s.parent.span_id] is run
        if s.name.startswith("chat "):
            parent = by_id[s.parent.span_id]  # type: ignore[union-attr]
            assert parent.name in {"invoke_agent controller", "invoke_agent worker"}
            assert s.attributes["gen_ai.operation.name"] == "chat"
            assert s.attributes["gen_ai.usage.input_tokens"] > 0  # type: ignore[operator]
            assert s.attributes["orchestrator.cost_usd"] > 0  # type: ignore[operator]
            expected_role = "racehorse" if parent.name.endswith("controller") else "workhorse"
            assert s.attributes["orchestrator.role"] == expected_role
        if s.name == "execute_tool date_diff":
            assert by_id[s.parent.span_id].name == "call_tool"  # type: ignore[union-attr]
            assert s.attributes["gen_ai.tool.name"] == "date_diff"
    controllers = [dict(s.attributes or {}) for s in finished if s.name == "invoke_agent controller"]
    assert [c["orchestrator.action"] for c in controllers] == ["find_tools", "call_tool", "delegate", "final"]
    # the search and the delegation are fixed by the plan; the plan, the call and the answer are the model's
    assert [c["orchestrator.decided_by"] for c in controllers] == ["plan", "model", "plan", "model"]


async def test_prompts_are_not_stored_unless_asked(make_orch: MakeOrch, spans: InMemorySpanExporter) -> None:
    result = await make_orch([plan(DAYS), CALL, DAYS_FINAL]).arun(
        "agent", "secret customer text: how many days from 2026-03-02 to 2026-03-20?"
    )
    assert result.status == "ok" and result.answer == "18 days"
    for s in spans.get_finished_spans():
        blob = json.dumps(dict(s.attributes or {}))
        assert "secret customer text" not in blob
        assert "gen_ai.input.messages" not in blob


async def test_prompts_stored_on_opt_in(
    make_orch: MakeOrch, settings: object, spans: InMemorySpanExporter
) -> None:
    from dataclasses import replace

    orch = make_orch([plan()], settings=replace(settings, capture_content=True))  # type: ignore[type-var]
    await orch.arun("agent", "secret customer text")
    chat = next(s for s in spans.get_finished_spans() if s.name.startswith("chat "))
    assert "secret customer text" in str((chat.attributes or {})["gen_ai.input.messages"])


async def test_sqlite_store_holds_the_run(make_orch: MakeOrch) -> None:
    orch = make_orch(STEPS, ['{"label": "card_arrival"}'])
    result = await orch.arun("agent", TASK)
    assert result.status == "ok"
    store = orch.store
    assert store is not None
    run = store.get_run(result.run_id)
    assert run is not None
    assert run["status"] == "ok" and run["graph"] == "agent"
    assert run["cost_usd"] == pytest.approx(result.ledger.cost_usd)
    assert run["input_tokens"] == result.ledger.input_tokens
    rows = store.run_spans(result.run_id)
    assert {r["kind"] for r in rows} == {"run", "node", "chat", "tool"}
    assert sum(r["cost_usd"] or 0 for r in rows if r["kind"] == "chat") == pytest.approx(
        result.ledger.cost_usd
    )
    (root,) = span_tree(store, result.run_id)
    assert root["kind"] == "run" and len(root["children"]) == 7  # 4 controller + find + call + worker


async def test_hotspots_by_node_model_tool(make_orch: MakeOrch) -> None:
    orch = make_orch(STEPS, ['{"label": "card_arrival"}'])
    result = await orch.arun("agent", TASK)
    assert orch.store is not None
    nodes = {h.key: h for h in hotspots(orch.store, "node")}
    assert set(nodes) == {"controller", "find_tools", "call_tool", "worker"}
    assert nodes["controller"].calls == 4  # node executions: plan/find, call, delegate (fixed), final
    total = result.ledger.cost_usd or 0.0
    assert nodes["controller"].cost_usd == pytest.approx(result.ledger.by_node()[0].cost_usd)
    assert sum(h.share or 0 for h in nodes.values()) == pytest.approx(1.0)
    assert nodes["controller"].cost_usd + nodes["worker"].cost_usd == pytest.approx(total)  # type: ignore[operator]
    assert nodes["find_tools"].cost_usd == 0.0
    assert nodes["controller"].p95_ms >= nodes["controller"].p50_ms
    (model,) = hotspots(orch.store, "model")
    assert model.key == "python:scripted" and model.calls == 4  # 3 controller calls + 1 worker call
    (tool,) = hotspots(orch.store, "tool")
    assert tool.key == "date_diff" and tool.calls == 1


async def test_a_search_the_plan_fixes_runs_in_the_execution_that_decides_its_part(
    make_orch: MakeOrch,
) -> None:
    """After the first part, a tool part is searched and decided in one controller execution: the search's
    observation and tools are in the call that decides it, and its span is the find_tools node nested in
    that controller (its time counted as nested, not as the controller's own)."""
    words = {"tool": "count the words of 'my card has not arrived'"}
    count = act(action="call_tool", tool="word_count", args={"text": "my card has not arrived"})
    seen: list[str] = []

    def decide(messages: list[Any]) -> str:
        seen.append(str(messages[-2].content) + " | " + str(messages[-1].content))
        return count

    orch = make_orch([plan(DAYS, words), CALL, decide, act(action="final", answer="18 days; 5 words")])
    result = await orch.arun("agent", TASK)
    assert (result.status, result.answer) == ("ok", "18 days; 5 words")
    # the second part's search observation, then its instruction, in the very call that decides it
    assert (
        seen
        and seen[0].startswith("Observation (find_tools): found word_count(")
        and "Part 2 of 2" in seen[0]
    )
    assert orch.store is not None
    spans = orch.store.run_spans(result.run_id)
    controllers = [s for s in spans if s["kind"] == "node" and s["node"] == "controller"]
    searches = [s for s in spans if s["kind"] == "node" and s["node"] == "find_tools"]
    assert len(controllers) == 4  # plan (+ the first search, a node), part 1, part 2 (+ its search), answer
    assert len(searches) == 2 and searches[0]["node_path"] is None
    nested = searches[1]
    assert json.loads(nested["node_path"]) == ["controller", "find_tools"]
    assert nested["parent_id"] == controllers[2]["span_id"]
    node = {h.key: h for h in hotspots(orch.store, "node")}
    assert node["find_tools"].calls == 2
    orch.close()


def test_each_killed_attempt_is_one_stand_in_root_whatever_parents_it_lost(tmp_path: Path) -> None:
    """A killed attempt never stored its run span nor the node open around the call it was in: its spans
    that lost either parent go under one "interrupted attempt" root per trace; a later attempt is its own."""
    store = TraceStore(tmp_path / "t.db")

    def span(span_id: str, trace: str, parent: str | None, start: int, kind: str = "node") -> dict[str, Any]:
        return {
            "span_id": span_id,
            "trace_id": trace,
            "parent_id": parent,
            "run_id": "r",
            "name": span_id,
            "kind": kind,
            "node": "n",
            "start_ns": start,
            "end_ns": start + 5,
            "duration_ms": 0.0,
        }

    store.write_spans(
        [
            span("a1", "t1", "run1", 10),  # the killed run span's child
            span("a2", "t1", "ctl1", 20),  # nested in a controller span that never ended
            span("b1", "t2", "run2", 30),  # a second killed attempt
            span("run3", "t3", None, 40, "run"),
            span("c1", "t3", "run3", 41),
        ]
    )
    roots = span_tree(store, "r")
    assert [(r["name"].split(" (")[0], [c["span_id"] for c in r["children"]]) for r in roots] == [
        ("interrupted attempt", ["a1", "a2"]),
        ("interrupted attempt", ["b1"]),
        ("run3", ["c1"]),
    ]
    store.close()


async def test_unpriced_model_costs_null_not_zero(make_orch: MakeOrch) -> None:
    with pytest.warns(UserWarning, match="no price known"):
        result = await make_orch([plan(DAYS), CALL, DAYS_FINAL], priced=False).arun("agent", TASK)
    assert result.status == "ok"
    assert result.ledger.cost_usd is None
    assert result.ledger.unpriced_calls == 3  # plan, call, answer
    assert result.ledger.by_node()[0].cost_usd is None


async def test_node_spans_are_flushed_when_the_node_ends(make_orch: MakeOrch) -> None:
    seen_in_store: list[int] = []

    def call(messages: object) -> str:
        assert orch.store is not None
        deadline = time.monotonic() + 2.0  # written by the trace writer thread within milliseconds
        while len(orch.store.spans("kind = 'node'")) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        seen_in_store.append(len(orch.store.spans("kind = 'node'")))
        return CALL

    orch = make_orch([plan(DAYS), call, DAYS_FINAL])
    result = await orch.arun("agent", TASK)
    assert result.answer == "18 days"
    # by the second model call (the date_diff call), the first controller node (the plan and its fixed
    # search) and find_tools are already in SQLite
    assert seen_in_store == [2]


def test_migrations_are_named_and_recorded() -> None:
    db = sqlite_utils.Database(memory=True)
    assert (
        migrate(db)
        == [m.__name__ for m in MIGRATIONS]
        == ["m001_runs_spans", "m002_run_owner", "m003_span_columns", "m004_rollups", "m005_one_kind_index"]
    )
    assert migrate(db) == []
    assert {"runs", "spans", "_migrations"} <= set(db.table_names())


def test_store_uses_wal_and_lists_a_started_run(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db")
    assert store.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    store.start_run("r1", "g", config_hash="h", version="v")
    (row,) = store.list_runs()
    assert row["status"] == "running"  # a killed run stays listed


def test_host_tracer_provider_is_used_not_replaced(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from orchestrator import Orchestrator, Settings, SlotConfig
        from orchestrator.testing import ScriptedChatModel

        host = TracerProvider()
        memory = InMemorySpanExporter()
        host.add_span_processor(SimpleSpanProcessor(memory))
        trace.set_tracer_provider(host)
        with trace.get_tracer("host.app").start_as_current_span("http request"):
            orch = Orchestrator(
                settings=Settings(traces_path={str(tmp_path / "t.db")!r},
                                  checkpoints_path={str(tmp_path / "c.db")!r}),
                slots={{"controller": SlotConfig(model="python:x", role="racehorse")}},
                models={{"controller": ScriptedChatModel(replies=['{{"plan": []}}'])}},
                graphs={{"g": "orchestrator.graph:build_agent_graph"}})
            import warnings; warnings.simplefilter("ignore")
            result = asyncio.run(orch.arun("g", "hi"))
        assert trace.get_tracer_provider() is host
        names = [s.name for s in memory.get_finished_spans()]
        assert "invoke_workflow g" in names and "http request" in names, names
        run = next(s for s in memory.get_finished_spans() if s.name == "invoke_workflow g")
        assert run.parent is not None  # nested under the host's own span
        rows = orch.store.run_spans(result.run_id)
        assert "http request" not in [r["name"] for r in rows]  # only our scope goes to SQLite
        assert len(rows) == 3, rows  # run, controller (an empty plan: answered without a second call), chat
        assert result.status == "ok", result
        print("OK")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"


def test_a_store_with_the_four_kind_indexes_keeps_one(tmp_path: Path) -> None:
    """m005: the four (kind, x) indexes of a store made before give way to one on kind; the spans stay,
    and the SQL recipes of `orch traces` find a kind's spans through it."""
    import sqlite3

    from orchestrator.tracing.queries import QUERIES

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    db.table("_migrations").create({"name": str, "applied_at": float}, pk="name")
    for fn in MIGRATIONS[:4]:
        fn(db)
        db.table("_migrations").insert({"name": fn.__name__, "applied_at": 0.0})
    db.table("spans").insert({"span_id": "s1", "run_id": "r1", "kind": "chat", "model": "m", "cost_usd": 0.5})
    db.close()

    def indexes() -> set[str]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute(
                "select name from sqlite_master where type = 'index' and name like 'idx_spans%'"
            )
            return {n for (n,) in rows}

    assert {"idx_spans_kind_model", "idx_spans_kind_node"} <= indexes()
    store = TraceStore(path)
    assert store.rows("select name from _migrations order by name")[-1] == ("m005_one_kind_index",)
    assert indexes() == {"idx_spans_kind", "idx_spans_run_id_start_ns", "idx_spans_start_ns"}
    assert store.rows("select span_id, cost_usd from spans") == [("s1", 0.5)]
    plan = store.rows("explain query plan " + QUERIES["slowest_tools"][1])
    assert any("idx_spans_kind" in str(row[-1]) for row in plan), plan
    store.close()


def test_a_store_of_the_day_before_migrates_in_place_and_reads_the_same(tmp_path: Path) -> None:
    import json
    import shutil

    fixture = Path(__file__).resolve().parent / "fixtures" / "store_m002"
    shutil.copyfile(fixture / "traces.db", tmp_path / "traces.db")
    expected = json.loads((fixture / "expected.json").read_text())
    store = TraceStore(tmp_path / "traces.db")
    assert [r["run_id"] for r in store.list_runs()] == [r["run_id"] for r in expected["list"]]
    chats = store.spans("kind = 'chat'")
    # the new columns are filled in from each stored span's attributes
    assert {c["slot"] for c in chats} == {"controller", "classify"}
    local = [c for c in chats if c["model"] == "local:qwen2.5-1.5b"]
    assert local and all(c["compute_ms"] and c["compute_ms"] > 0 and c["provider"] == "local" for c in local)
    assert all(c["compute_ms"] is None for c in chats if c["model"] == "python:defs:controller")
    store.close()
