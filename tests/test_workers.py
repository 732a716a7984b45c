"""Workhorse workers: free-text summarize and style with validators, the escalation ladder, worker nodes."""

from __future__ import annotations

from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from loopback import Loopback
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
from orchestrator.tracing.store import decode_attributes
from orchestrator.workers.validators import adds_no_facts, keeps_facts, names_in, rewrites, within_words
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
    node_cost = result.ledger.by_node()[0]
    assert (node_cost.repairs, node_cost.escalations) == (1, 1)  # counted in the ledger, per node...
    assert sum(line.get("repairs", 0) for line in result.ledger.lines) == 1
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


LABELS = ["card_arrival", "card_lost", "refund"]


@pytest.fixture
async def http_clients():  # type: ignore[no-untyped-def]
    from orchestrator.providers.http import aclose_clients, reset_model_states

    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()


def confidence_server(loopback: Loopback, unsure_words: str = "maybe") -> dict[str, list[dict[str, Any]]]:
    """Two models on one loopback server, told apart by model name. The workhorse labels by a keyword and
    is unsure (a small lead of its label token) when the text holds `unsure_words`; the racehorse labels
    every text `card_lost`, sure. Replies come from each request's own text."""
    import json as _json

    from wire import openai_stream, openai_usage

    seen: dict[str, list[dict[str, Any]]] = {"small": [], "big": []}

    def answer(request):  # type: ignore[no-untyped-def]
        body = request.json()
        text = body["messages"][-1]["content"]
        if body["model"] == "small":
            seen["small"].append(body)
            label = "card_arrival" if "card" in text else "refund"
            lead = (-0.6, -0.9) if unsure_words in text else (-0.01, -5.0)
            reply = _json.dumps({"label": label})
            return openai_stream(
                [reply], openai_usage(50, 5), logprobs=[lead] if body.get("logprobs") else None
            )
        seen["big"].append(body)
        return openai_stream([_json.dumps({"label": "card_lost"})], openai_usage(50, 5))

    loopback.handle("/v1/chat/completions", answer)
    return seen


def router_orch(settings: Settings, loopback, worker) -> Orchestrator:  # type: ignore[no-untyped-def]
    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    g.add_node("triage", worker_node(worker, into="answer"))
    g.add_edge(START, "triage")
    g.add_edge("triage", END)
    url = loopback.url + "/v1"
    return Orchestrator(
        settings=settings,
        slots={
            "classify": SlotConfig(
                model="openai-compat:small", base_url=url, role="workhorse", prices=PRICES
            ),
            "controller": SlotConfig(
                model="openai-compat:big", base_url=url, role="racehorse", prices=PRICES
            ),
        },
        graphs={"g": g},
    )


async def test_a_worker_routes_unsure_answers_to_the_racehorse_by_the_margin_of_its_label(
    settings: Settings, loopback, http_clients
) -> None:  # type: ignore[no-untyped-def]
    from orchestrator import classify_worker

    seen = confidence_server(loopback)
    worker = classify_worker("triage", LABELS, "Triage", min_margin=1.0)
    orch = router_orch(settings, loopback, worker)
    sure = await orch.arun("g", "my card has not come")
    assert sure.status == "ok" and sure.answer == '{"label": "card_arrival"}'  # lead 4.99: kept
    unsure = await orch.arun("g", "maybe my card has not come")
    assert unsure.status == "ok" and unsure.answer == '{"label": "card_lost"}'  # lead 0.3: the racehorse's
    assert all(b["logprobs"] is True and b["top_logprobs"] == 5 for b in seen["small"])
    assert len(seen["small"]) == 2 and len(seen["big"]) == 1  # no repair of a valid answer: straight up
    assert "logprobs" not in seen["big"][0]  # the top of the chain is not asked how sure it is
    assert orch.store is not None
    nodes = {
        run.run_id: next(
            decode_attributes(s) for s in orch.store.run_spans(run.run_id) if s["kind"] == "node"
        )
        for run in (sure, unsure)
    }
    assert nodes[sure.run_id]["orchestrator.worker.route"] == "kept"
    assert nodes[unsure.run_id]["orchestrator.worker.route"] == "escalated"
    assert nodes[unsure.run_id]["orchestrator.worker.margin"] == pytest.approx(0.3)
    assert nodes[unsure.run_id]["orchestrator.worker.escalations"] == 1
    assert [n.escalations for n in unsure.ledger.by_node()] == [1]
    assert [n.escalations for n in sure.ledger.by_node()] == [0]
    per_model = {line["name"]: line.get("escalations") for line in unsure.ledger.lines}
    assert per_model == {"openai-compat:small": 0, "openai-compat:big": 1}  # ...and per model
    orch.close()


async def test_an_unsure_answer_stands_when_nothing_up_the_chain_is_valid_and_with_no_chain_none_is_asked(
    settings: Settings, loopback, http_clients
) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from orchestrator import classify_worker

    seen = confidence_server(loopback)
    narrow = classify_worker("triage", ["card_arrival", "refund"], "Triage", min_margin=1.0)
    orch = router_orch(settings, loopback, narrow)  # the racehorse's card_lost is not one of these labels
    result = await orch.arun("g", "maybe my card has not come")
    assert result.status == "ok" and result.answer == '{"label": "card_arrival"}'  # valid, if unsure
    orch.close()
    seen["small"].clear()
    alone = dataclasses.replace(narrow, escalate_to=())
    orch = router_orch(settings, loopback, alone)
    result = await orch.arun("g", "maybe my card has not come")
    assert result.answer == '{"label": "card_arrival"}'
    assert "logprobs" not in seen["small"][0]  # nowhere to route to: the margin is not asked for
    orch.close()


async def test_an_output_cut_off_at_max_tokens_is_never_an_answer(settings: Settings) -> None:
    """A rewrite cut off mid-way can keep every fact and add none, and still be half a letter: a reply that
    stopped at the token limit is rejected and goes up the ladder."""
    long = "Dear Maria Lopez, the quarterly review at Acme Corp moves from Tuesday to Thursday 12 March " * 3
    short = "The review moves to Thursday 12 March; Maria Lopez chairs it in room 4B."
    worker = summarize_worker(words=(5, 60), max_tokens=30)
    orch, _ = run_one(settings, [long, long], [short], worker)
    result = await orch.arun("g", SOURCE)
    assert result.status == "ok", result.error
    assert result.answer == short  # the racehorse's: both workhorse replies hit the limit
    assert result.ledger.by_node()[0].calls == 3
    orch.close()
