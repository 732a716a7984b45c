"""A person in the loop: calls of confirmed tools wait for approval (a LangGraph interrupt), kept in the
checkpoint, and the run goes on when it is resumed with the answer."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator import Orchestrator
from orchestrator.config import Manifest
from orchestrator.errors import ConfigError
from support import MakeOrch, act

TASK = "How many days from 2026-03-02 to 2026-03-20?"
PLAN = json.dumps({"plan": [{"tool": "days between 2026-03-02 and 2026-03-20"}]})
ARGS = {"start": "2026-03-02", "end": "2026-03-20"}
CALL = act(action="call_tool", tool="date_diff", args=ARGS)
FINAL = act(action="final", answer="18 days")
CONFIRM = Manifest(confirm_tools=["date_diff"])


def tool_calls(result: Any) -> int:
    return sum(line.calls for line in result.ledger.by_node() if line.node == "call_tool")


async def test_a_confirmed_call_waits_then_runs_once_when_approved(
    make_orch: MakeOrch, spans: InMemorySpanExporter, settings: Any
) -> None:
    orch = make_orch([PLAN, CALL, FINAL], by_turn=True, manifest=CONFIRM)
    first = await orch.arun("agent", TASK, run_id="r1")
    assert first.status == "waiting" and first.answer is None
    assert [w["value"] for w in first.waiting] == [
        {"type": "approve_tool_calls", "calls": [{"tool": "date_diff", "args": ARGS}]}
    ]
    assert tool_calls(first) == 0  # nothing ran before the person said yes
    with sqlite3.connect(settings.traces_path) as db:
        assert db.execute("select status from runs where run_id = 'r1'").fetchone() == ("waiting",)
    done = await orch.arun("agent", None, run_id="r1", resume=True, approve=["date_diff"])
    assert (done.status, done.answer, done.waiting) == ("ok", "18 days", [])
    assert tool_calls(done) == 1
    tool_spans = [s for s in spans.get_finished_spans() if s.name == "execute_tool date_diff"]
    assert [dict(s.attributes or {}).get("orchestrator.tool.approval") for s in tool_spans] == ["approved"]


async def test_a_declined_call_never_runs_and_its_part_fails_saying_so(make_orch: MakeOrch) -> None:
    orch = make_orch([PLAN, CALL, FINAL], by_turn=True, manifest=CONFIRM)
    assert (await orch.arun("agent", TASK, run_id="r2")).status == "waiting"
    done = await orch.arun("agent", None, run_id="r2", resume=True, approve=False)
    assert done.status == "ok" and tool_calls(done) == 0
    assert done.answer is not None and "the call of date_diff was declined" in done.answer


async def test_approved_in_advance_runs_without_waiting(make_orch: MakeOrch) -> None:
    orch = make_orch([PLAN, CALL, FINAL], by_turn=True, manifest=CONFIRM)
    result = await orch.arun("agent", TASK, approve=["date_diff"])
    assert (result.status, result.answer) == ("ok", "18 days")


async def test_a_waiting_run_resumed_without_an_answer_says_how(make_orch: MakeOrch) -> None:
    orch = make_orch([PLAN, CALL, FINAL], by_turn=True, manifest=CONFIRM)
    await orch.arun("agent", TASK, run_id="r3")
    with pytest.raises(ConfigError, match=r"waits for approval of date_diff; .*--approve TOOL"):
        await orch.arun("agent", None, run_id="r3", resume=True)
    with pytest.raises(ConfigError, match="answer with True, False"):
        await orch.arun("agent", None, run_id="r3", resume=True, answer="yes please")
    # the run is still waiting, and a good answer still resumes it
    done = await orch.arun("agent", None, run_id="r3", resume=True, answer={"date_diff": True})
    assert (done.status, done.answer) == ("ok", "18 days")


async def test_a_waiting_run_survives_its_process(make_orch: MakeOrch) -> None:
    orch = make_orch([PLAN, CALL, FINAL], by_turn=True, manifest=CONFIRM)
    assert (await orch.arun("agent", TASK, run_id="r4")).status == "waiting"
    orch.close()
    fresh = make_orch([PLAN, CALL, FINAL], by_turn=True, manifest=CONFIRM)  # a new orchestrator, same files
    done = await fresh.arun("agent", None, run_id="r4", resume=True, approve=True)
    assert (done.status, done.answer) == ("ok", "18 days")


def test_confirm_and_approve_name_catalog_tools(make_orch: MakeOrch) -> None:
    with pytest.raises(ConfigError, match=r"confirm_tools: there is no tool 'date_dif'.*date_diff"):
        make_orch([], manifest=Manifest(confirm_tools=["date_dif"]))


async def test_approve_names_catalog_tools(make_orch: MakeOrch) -> None:
    orch = make_orch([PLAN], by_turn=True, manifest=CONFIRM)
    with pytest.raises(ConfigError, match=r"approve: there is no tool 'wordcount'.*word_count"):
        await orch.arun("agent", TASK, approve=["wordcount"])


class Draft(TypedDict, total=False):
    text: str
    verdict: str


def review(state: Draft) -> dict[str, str]:
    return {"verdict": str(interrupt({"draft": state["text"]}))}


async def test_a_users_own_interrupt_waits_and_takes_the_answer(settings: Any) -> None:
    builder: StateGraph[Draft, Any, Any, Any] = StateGraph(Draft)
    builder.add_node("review", review)
    builder.add_edge(START, "review")
    builder.add_edge("review", END)
    orch = Orchestrator(
        settings=settings, graphs={"review": builder}, manifest=Manifest(outputs={"review": "verdict"})
    )
    first = await orch.arun("review", {"text": "ship it?"}, run_id="u1")
    assert first.status == "waiting" and [w["value"] for w in first.waiting] == [{"draft": "ship it?"}]
    with pytest.raises(
        ConfigError, match=r"waits for an answer \(\{\"draft\": \"ship it\?\"\}\); resume it with answer="
    ):
        await orch.arun("review", None, run_id="u1", resume=True)
    done = await orch.arun("review", None, run_id="u1", resume=True, answer="approved")
    assert (done.status, done.answer) == ("ok", "approved")
