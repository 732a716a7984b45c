"""Workhorse workers: free-text summarize and style with validators, the escalation ladder, worker nodes."""

from __future__ import annotations

from typing import TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator import (
    Orchestrator,
    RunContext,
    Settings,
    SlotConfig,
    style_worker,
    summarize_worker,
    worker_node,
)
from orchestrator.testing import ScriptedChatModel
from orchestrator.validators import adds_no_facts, keeps_facts, names_in, rewrites, within_words
from support import PRICES

SOURCE = (
    "Our quarterly review moves from Tuesday to Thursday 12 March because the finance team at Acme Corp "
    "needs two more days to close the books. Maria Lopez will chair it in room 4B."
)


class State(TypedDict, total=False):
    input: str
    summary: str
    answer: str


def run_one(settings: Settings, worker_replies: list[str], racehorse_replies: list[str], worker: object):
    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    g.add_node("summarize", worker_node(worker, into="answer"))  # type: ignore[arg-type]
    g.add_edge(START, "summarize")
    g.add_edge("summarize", END)
    spans = InMemorySpanExporter()
    orch = Orchestrator(
        settings=settings,
        slots={
            "summarize": SlotConfig(model="python:scripted", role="workhorse", prices=PRICES),
            "style": SlotConfig(model="python:scripted", role="workhorse", prices=PRICES),
            "controller": SlotConfig(model="python:scripted", role="racehorse", prices=PRICES),
        },
        models={
            "summarize": ScriptedChatModel(replies=list(worker_replies)),
            "style": ScriptedChatModel(replies=list(worker_replies)),
            "controller": ScriptedChatModel(replies=list(racehorse_replies)),
        },
        graphs={"g": g},
    )
    orch.tracing.provider.add_span_processor(SimpleSpanProcessor(spans))  # type: ignore[attr-defined]
    return orch, spans


def test_validators_name_what_is_wrong() -> None:
    assert names_in(SOURCE) >= {"Acme Corp", "Maria Lopez", "Tuesday", "Thursday"}
    assert adds_no_facts(SOURCE, "The review moves to Thursday 12 March; Maria Lopez chairs it.") is None
    bad = adds_no_facts(SOURCE, "The review moves to Friday 13 March; John chairs it.")
    assert bad is not None and "13" in bad and "'Friday'" in bad and "'John'" in bad
    assert (
        keeps_facts(
            SOURCE, "Review: Thursday 12 March, not Tuesday; Acme Corp finance; Maria Lopez; room 4B."
        )
        is None
    )
    lost = keeps_facts(SOURCE, "The review moved.")
    assert lost is not None and "12" in lost and "Maria Lopez" in lost
    assert within_words(5, 10)("", "one two") == "it has 2 words; it must have 5 to 10"
    assert rewrites(SOURCE, SOURCE.replace("will chair", "chairs")) is not None  # a copy, near enough
    assert (
        rewrites(SOURCE, "Heads up: the review is now on Thursday 12 March, chaired by Maria Lopez.") is None
    )


async def test_a_summary_that_invents_is_repaired_then_escalated_to_the_racehorse(settings: Settings) -> None:
    invented = "The review moves to Friday 13 March."  # a date and a weekday the source doesn't have
    orch, spans = run_one(
        settings,
        [invented, invented],
        ["The review moves to Thursday 12 March; Maria Lopez chairs it in room 4B."],
        summarize_worker(words=(5, 30)),
    )
    result = await orch.arun("g", SOURCE)
    assert result.status == "ok", result.error
    assert result.answer == "The review moves to Thursday 12 March; Maria Lopez chairs it in room 4B."
    node = next(s for s in spans.get_finished_spans() if s.name == "summarize")
    chats = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    assert [c.attributes["orchestrator.role"] for c in chats] == ["workhorse", "workhorse", "racehorse"]  # type: ignore[index]
    assert all(c.parent is not None and c.parent.span_id == node.context.span_id for c in chats)
    assert [n.calls for n in result.ledger.by_node()] == [3]
    orch.close()


async def test_a_worker_that_stays_invalid_fails_its_node_and_nothing_enters_the_state(
    settings: Settings,
) -> None:
    invented = "The review moves to Friday 13 March."
    orch, _ = run_one(settings, [invented, invented], [invented], summarize_worker(words=(5, 30)))
    result = await orch.arun("g", SOURCE)
    assert result.status == "failed" and result.answer is None
    assert result.error is not None and "node 'summarize'" in result.error and "Friday" in result.error
    assert result.ledger.by_node()[0].calls == 3  # every attempt paid
    orch.close()


async def test_a_style_rewrite_must_keep_every_fact(settings: Settings) -> None:
    dropped = "Hey! The review moved to Thursday. Maria Lopez chairs."  # lost 12 March, Acme Corp, 4B...
    kept = (
        "Heads up: the quarterly review is now on Thursday 12 March instead of Tuesday, since Acme Corp's "
        "finance team needs two more days. Maria Lopez chairs, in room 4B."
    )
    orch, spans = run_one(settings, [dropped, kept], [], style_worker(style="friendly", escalate_to=()))
    result = await orch.arun("g", SOURCE)
    assert (result.status, result.answer) == ("ok", kept)
    node = next(s for s in spans.get_finished_spans() if s.name == "summarize")
    assert node.attributes is not None
    assert (
        node.attributes["orchestrator.worker.repairs"],
        node.attributes["orchestrator.worker.escalations"],
    ) == (1, 0)
    orch.close()


def test_the_summary_length_and_format_are_in_its_instructions() -> None:
    w = summarize_worker(sentences=(2, 4), bullets=True)
    assert "2 to 4 bullets" in w.instructions and "'- '" in w.instructions
    assert w.output is None and w.schema() is None
    assert w.escalation(("controller",)) == ("controller",)
    assert summarize_worker(escalate_to=()).escalation(("controller",)) == ()
    assert summarize_worker(escalate_to=("big", "summarize")).escalation() == ("big",)  # never itself


@pytest.mark.parametrize("reply", ["", "   "])
async def test_an_empty_text_output_is_invalid(settings: Settings, reply: str) -> None:
    orch, _ = run_one(settings, [reply, reply], [], summarize_worker(escalate_to=()))
    result = await orch.arun("g", SOURCE)
    assert result.status == "failed" and "empty" in (result.error or "")
    orch.close()
