"""Graph logic on scripted models: the plan and its steps, grounding checks, limits, budgets, repairs."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from langchain_core.messages import BaseMessage
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator import Budget, Limits, Orchestrator, Settings
from orchestrator.agent.controller import search_query
from support import PRICES, TOOLS, MakeOrch, act

TASK = "How many days from 2026-03-02 to 2026-03-20? Also classify: 'my card has not arrived'"


def plan(*parts: dict[str, str]) -> str:
    return json.dumps({"plan": list(parts)})


DAYS = {"tool": "days between 2026-03-02 and 2026-03-20"}
CLASSIFY = {"worker": "classify_request", "text": "my card has not arrived"}
CALL = act(action="call_tool", tool="date_diff", args={"start": "2026-03-02", "end": "2026-03-20"})
FINAL = act(action="final", answer="18 days; card_arrival")


def node_spans(spans: InMemorySpanExporter, name: str) -> list[dict[str, object]]:
    return [dict(s.attributes or {}) for s in spans.get_finished_spans() if s.name == name]


async def test_plan_tool_part_and_worker_part(make_orch: MakeOrch, spans: InMemorySpanExporter) -> None:
    orch = make_orch([plan(DAYS, CLASSIFY), CALL, FINAL], ['{"label": "card_arrival"}'], by_turn=True)
    result = await orch.arun("agent", TASK)
    assert (result.status, result.answer) == ("ok", "18 days; card_arrival")
    assert result.results == [
        {
            "worker": "classify_request",
            "value": {"label": "card_arrival"},
            "model": "python:scripted",
            "repaired": False,
            "escalated": False,
        }
    ]
    by_node = {n.node: n for n in result.ledger.by_node()}
    assert by_node["controller"].calls == 3  # plan, the call, the answer: search and delegation are fixed
    assert by_node["worker"].calls == 1 and by_node["call_tool"].calls == 1
    expected = sum(e["input_tokens"] * 1e-6 + e["output_tokens"] * 2e-6 for e in result.ledger.lines)
    assert result.ledger.cost_usd == pytest.approx(expected)
    controllers = node_spans(spans, "invoke_agent controller")
    assert controllers[0]["orchestrator.plan.parts"] == ("tool", "worker:classify_request")
    assert "orchestrator.plan" not in controllers[0]  # the parts quote the request: content capture only
    assert [c["orchestrator.action"] for c in controllers] == ["find_tools", "call_tool", "delegate", "final"]
    assert [c["orchestrator.decided_by"] for c in controllers] == ["plan", "model", "plan", "model"]


async def test_search_uses_the_part_words_without_its_quoted_text(make_orch: MakeOrch) -> None:
    seen: list[str] = []

    def call(messages: Sequence[BaseMessage]) -> str:
        seen.extend(str(m.content) for m in messages)
        return CALL

    orch = make_orch([plan(DAYS), call, act(action="final", answer="18 days")], by_turn=True)
    result = await orch.arun("agent", TASK)
    assert result.answer == "18 days"
    assert '{"action": "find_tools", "query": "days between 2026-03-02 and 2026-03-20"}' in seen
    quoted = "count the words in 'convert the date' and \u201cadd days\u201d"
    assert search_query(quoted) == "count the words in and"
    assert any(s.startswith("Observation (find_tools): found date_diff(start; end)") for s in seen)
    assert (
        "Part 1 of 1: days between 2026-03-02 and 2026-03-20. Call the found tool that does it, or skip."
        in seen
    )


async def test_an_empty_plan_says_it_cannot_answer_without_more_calls(make_orch: MakeOrch) -> None:
    result = await make_orch([plan()], by_turn=True).arun("agent", "What's the weather in Oslo?")
    assert result.status == "ok"
    assert result.answer == "I can't answer that: none of my tools or workers can do it."
    assert result.ledger.by_node()[0].calls == 1


async def test_a_tool_that_raises_twice_fails_its_part_honestly(
    make_orch: MakeOrch, spans: InMemorySpanExporter
) -> None:
    seen: list[str] = []
    boom = act(action="call_tool", tool="explode", args={"reason": "x"})

    def again(messages: Sequence[BaseMessage]) -> str:
        seen.extend(str(m.content) for m in messages)
        return boom

    result = await make_orch([plan({"tool": "explode with reason x"}), boom, again], by_turn=True).arun(
        "agent", "Explode with reason x"
    )
    assert result.status == "ok"
    assert any("error: RuntimeError: boom: x" in s for s in seen)
    assert result.answer is not None and result.answer.startswith(
        "I can't answer that with my tools and workers"
    )
    assert "boom: x" in result.answer
    tool_spans = [s for s in spans.get_finished_spans() if s.name == "execute_tool explode"]
    assert len(tool_spans) == 2 and all(s.status.status_code.name == "ERROR" for s in tool_spans)


async def test_calling_a_tool_not_found_for_the_part_is_repaired(make_orch: MakeOrch) -> None:
    count = act(action="call_tool", tool="word_count", args={"text": "x"})
    result = await make_orch([plan(DAYS), count, CALL, FINAL]).arun("agent", TASK)
    assert result.status == "ok"
    assert result.ledger.by_node()[0].calls == 4


async def test_invalid_json_gets_one_repair_then_the_run_fails(make_orch: MakeOrch) -> None:
    result = await make_orch(["{not json", "still not json"]).arun("agent", "x")
    assert result.status == "failed"
    assert result.error is not None and "not valid JSON" in result.error
    assert "after one repair" in result.error


async def test_an_invented_argument_is_repaired_before_the_call(
    make_orch: MakeOrch, spans: InMemorySpanExporter
) -> None:
    invented = act(action="call_tool", tool="date_diff", args={"start": "2026-01-01", "end": "2026-03-20"})
    seen: list[str] = []

    def repaired(messages: Sequence[BaseMessage]) -> str:
        seen.append(str(messages[-1].content))
        return CALL

    result = await make_orch([plan(DAYS), invented, repaired, FINAL]).arun("agent", TASK)
    assert result.status == "ok"
    assert "the date 2026-01-01 is in neither the request nor an observation" in seen[0]
    (tool,) = [
        dict(s.attributes or {}) for s in spans.get_finished_spans() if s.name == "execute_tool date_diff"
    ]
    controller = node_spans(spans, "invoke_agent controller")[1]
    assert controller["orchestrator.repairs"] == 1
    assert controller["orchestrator.ungrounded.count"] == 1
    assert "orchestrator.ungrounded" not in controller  # the values are the user's: content capture only
    assert tool["orchestrator.node"] == "call_tool"


async def test_a_call_still_ungrounded_after_its_repair_is_not_made(
    make_orch: MakeOrch, spans: InMemorySpanExporter
) -> None:
    invented = act(action="call_tool", tool="date_diff", args={"start": "2026-01-01", "end": "2026-03-20"})
    result = await make_orch([plan(DAYS), invented, invented]).arun("agent", TASK)
    assert result.status == "ok"
    assert not [s for s in spans.get_finished_spans() if s.name.startswith("execute_tool")]
    assert result.answer == (
        "I can't answer that with my tools and workers (not called: a value in its arguments is in neither "
        "the request nor an observation)."
    )


async def test_an_answer_with_an_unsupported_number_is_repaired_then_replaced(
    make_orch: MakeOrch, spans: InMemorySpanExporter
) -> None:
    wrong = act(action="final", answer="There are 19 days.")
    result = await make_orch([plan(DAYS), CALL, wrong, wrong]).arun("agent", TASK)
    assert result.answer == "Results: days between 2026-03-02 and 2026-03-20: 18."
    final = node_spans(spans, "invoke_agent controller")[-1]
    assert final["orchestrator.answer_fallback"] is True
    assert final["orchestrator.ungrounded.count"] == 2  # 19 is unsupported, and 18 is not stated
    fixed = await make_orch([plan(DAYS), CALL, wrong, FINAL]).arun("agent", TASK)
    assert fixed.answer == "18 days; card_arrival"


async def test_a_worker_written_as_a_tool_part_becomes_its_worker_part(make_orch: MakeOrch) -> None:
    # A small model sometimes names a worker as a tool part: it gets the request's quoted text, no repair.
    orch = make_orch([plan({"tool": "classify_request"})], ['{"label": "card_arrival"}'])
    result = await orch.arun("agent", TASK)
    assert result.results[0]["value"] == {"label": "card_arrival"}
    assert result.answer == "card_arrival"
    assert result.ledger.by_node()[0].calls == 1  # the plan: a worker's output is the answer as it is


async def test_worker_text_not_in_the_request_is_never_sent(make_orch: MakeOrch) -> None:
    made_up = {"worker": "classify_request", "text": "a customer lost a card"}
    result = await make_orch([plan(made_up), plan(made_up)]).arun("agent", TASK)
    assert result.results == []
    assert result.answer == "I can't answer that with my tools and workers (its text is not in the request)."


async def test_skipping_a_part_keeps_the_others(make_orch: MakeOrch) -> None:
    skip = act(action="skip", reason="no found tool gives the weather")
    steps = [
        plan({"tool": "count the words of the forecast"}, DAYS),
        skip,
        CALL,
        act(action="final", answer="18 days"),
    ]
    result = await make_orch(steps, by_turn=True).arun("agent", TASK + " And the weather in Oslo?")
    assert result.answer == "18 days"
    # nothing found for the part's words nor the request's: the model writes the search once more
    again = act(action="find_tools", query="forecast for a city")
    nothing = await make_orch([plan({"tool": "weather in Oslo"}), again], by_turn=True).arun(
        "agent", "Weather in Oslo?"
    )
    assert nothing.answer == (
        "I can't answer that with my tools and workers (no tool matches 'forecast for a city')."
    )
    # or it skips the part
    gave_up = act(action="skip", reason="no tool gives the weather")
    skipped = await make_orch([plan({"tool": "weather in Oslo"}), gave_up], by_turn=True).arun(
        "agent", "Weather in Oslo?"
    )
    assert skipped.answer == "I can't answer that with my tools and workers (no tool gives the weather)."


async def test_a_later_part_uses_an_earlier_result(make_orch: MakeOrch) -> None:
    hours = {"tool": "count the words of the result"}
    count = act(action="call_tool", tool="word_count", args={"text": "18"})  # 18 comes from an observation
    steps = [plan(DAYS, hours), CALL, count, act(action="final", answer="18 days, 1 word")]
    result = await make_orch(steps, by_turn=True).arun("agent", TASK)
    assert result.answer == "18 days, 1 word"


async def test_step_limit_counts_model_decisions(make_orch: MakeOrch) -> None:
    steps = [plan(DAYS, DAYS), CALL, CALL, FINAL]
    result = await make_orch(steps, limits=Limits(max_steps=2), by_turn=True).arun("agent", TASK)
    assert result.status == "budget_stop"
    assert result.stop_reason == "step limit of 2 reached"
    assert result.ledger.by_node()[0].calls == 2


async def test_budget_is_checked_before_the_call(make_orch: MakeOrch) -> None:
    # One controller call costs ~1e-4 worst case (max_tokens 256 * 2e-6 + prompt); allow about one.
    result = await make_orch([plan(DAYS), CALL, FINAL], by_turn=True).arun(
        "agent", TASK, budget=Budget(usd=0.0009)
    )
    assert result.status == "budget_stop"
    assert result.stop_reason is not None and result.stop_reason.startswith("cost budget")
    assert result.ledger.cost_usd is not None and result.ledger.cost_usd <= 0.0009


async def test_token_budget(make_orch: MakeOrch) -> None:
    result = await make_orch([plan(DAYS), CALL, FINAL]).arun("agent", "x", budget=Budget(tokens=100))
    assert result.status == "budget_stop"
    assert result.ledger.tokens == 0  # the first call's worst case already exceeds it: nothing was spent


async def test_invalid_worker_output_is_rejected_not_passed_on(
    make_orch: MakeOrch, spans: InMemorySpanExporter
) -> None:
    # label outside the enum, then still invalid after the repair
    orch = make_orch([plan(CLASSIFY)], ['{"label": "mortgage"}', '{"label": "loan"}'], by_turn=True)
    result = await orch.arun("agent", TASK)
    assert result.status == "ok"
    assert result.results == []
    assert result.answer == "I can't answer that with my tools and workers."
    (worker,) = [s for s in spans.get_finished_spans() if s.name == "invoke_agent worker"]
    assert worker.status.status_code.name == "ERROR"
    assert worker.attributes is not None and worker.attributes["error.type"] == "WorkerOutputError"
    # the first answer, its repair, then the racehorse (the default end of a worker's escalation chain)
    assert worker.attributes["orchestrator.worker.repairs"] == 1
    assert worker.attributes["orchestrator.worker.escalations"] == 1
    assert {n.node: n.calls for n in result.ledger.by_node()}["worker"] == 3  # every attempt was paid for


async def test_worker_output_repaired_once(make_orch: MakeOrch) -> None:
    orch = make_orch([plan(CLASSIFY), FINAL], ["not json at all", '{"label": "refund"}'], by_turn=True)
    result = await orch.arun("agent", TASK)
    assert result.results[0]["value"] == {"label": "refund"}
    assert result.results[0]["repaired"] is True


async def test_typed_extraction(make_orch: MakeOrch) -> None:
    part = {"worker": "extract_payment", "text": "I paid 12.50 EUR"}
    orch = make_orch(
        [plan(part)],
        ['{"amount": "twelve", "currency": "EUR"}', '{"amount": 12.5, "currency": "EUR"}'],
        by_turn=True,
    )
    result = await orch.arun("agent", "Extract: 'I paid 12.50 EUR'")
    assert result.results[0]["value"] == {"amount": 12.5, "currency": "EUR"}
    assert result.answer == "amount: 12.5, currency: EUR"


async def test_astream_yields_node_events_in_order(make_orch: MakeOrch) -> None:
    orch = make_orch([plan(DAYS), CALL, FINAL], by_turn=True)
    events = [e async for e in orch.astream("agent", TASK)]
    assert [e.text for e in events if e.kind == "token"] == [plan(DAYS), CALL, FINAL]
    kinds = [(e.kind, e.node) for e in events if e.kind != "token"]
    assert kinds == [
        ("start", None),
        ("node", "controller"),
        ("node", "find_tools"),
        ("node", "controller"),
        ("node", "call_tool"),
        ("node", "controller"),
        ("end", None),
    ]


def test_run_sync(make_orch: MakeOrch) -> None:
    result = make_orch([plan()]).run_sync("agent", "x")
    assert (result.status, result.answer) == (
        "ok",
        "I can't answer that: none of my tools or workers can do it.",
    )


async def test_deadline_stops_the_run(make_orch: MakeOrch) -> None:
    result = await make_orch([plan(DAYS), CALL, FINAL], limits=Limits(deadline_s=1e-6)).arun("agent", "x")
    assert result.status == "budget_stop"
    assert result.stop_reason is not None and result.stop_reason.startswith("deadline")


async def test_seconds_budget(make_orch: MakeOrch) -> None:
    result = await make_orch([plan(DAYS), CALL, FINAL]).arun("agent", "x", budget=Budget(seconds=0))
    assert result.status == "budget_stop"
    assert result.stop_reason == "time budget of 0s used up"


async def test_a_model_that_raises_fails_the_run_and_is_recorded(make_orch: MakeOrch) -> None:
    def crash(messages: object) -> str:
        raise KeyError("bug in a custom model")

    orch = make_orch([crash])
    result = await orch.arun("agent", "x")
    assert result.status == "failed"
    assert result.error is not None and "bug in a custom model" in result.error
    assert orch.store is not None
    assert orch.store.get_run(result.run_id)["status"] == "failed"  # type: ignore[index]


def test_worked_examples_are_chosen_for_the_request() -> None:
    from orchestrator.agent.plan import NO_STEP_EXAMPLES, select_examples
    from tools.catalog import PLAN_EXAMPLES

    bank = (*PLAN_EXAMPLES, *NO_STEP_EXAMPLES)
    chosen = select_examples("How many miles is 10 kilometers?", bank, 3)
    assert chosen[-1].request == "How far is 5 miles in kilometers?"  # the best match goes last
    assert sum(1 for e in chosen if not e.plan) == 1  # always one that needs no step
    assert select_examples("anything", bank, 0) == []


async def test_plan_and_problems_are_recorded_only_with_content_capture(
    make_orch: MakeOrch, spans: InMemorySpanExporter
) -> None:
    import dataclasses

    invented = act(action="call_tool", tool="date_diff", args={"start": "2026-01-01", "end": "2026-03-20"})
    orch = make_orch([plan(DAYS, CLASSIFY), invented, CALL, FINAL], ['{"label": "card_arrival"}'])
    await orch.arun("agent", TASK)
    attributes = " ".join(str(dict(s.attributes or {})) for s in spans.get_finished_spans())
    assert "my card has not arrived" not in attributes and "2026-01-01" not in attributes
    spans.clear()
    orch = make_orch([plan(DAYS, CLASSIFY), invented, CALL, FINAL], ['{"label": "card_arrival"}'])
    orch.settings = dataclasses.replace(orch.settings, capture_content=True)
    await orch.arun("agent", TASK)
    controllers = node_spans(spans, "invoke_agent controller")
    assert json.loads(str(controllers[0]["orchestrator.plan"]))["plan"] == [DAYS, CLASSIFY]
    assert "2026-01-01" in str(controllers[1]["orchestrator.ungrounded"])


async def test_an_ungrounded_optional_argument_is_dropped_not_repaired(make_orch: MakeOrch) -> None:
    from langchain_core.tools import tool

    from orchestrator.toolsets.catalog import Catalog

    @tool
    def round_to(value: float, places: int = 0) -> float:
        """Round a number to some decimal places."""
        return round(value, places)

    call = act(action="call_tool", tool="round_to", args={"value": 3.1416, "places": 37})
    orch = make_orch(
        [plan({"tool": "round 3.1416"}), call, act(action="final", answer="3.1416 rounds to 3.")]
    )
    orch.catalog = Catalog.from_tools([round_to])
    result = await orch.arun("agent", "Round 3.1416 please")
    assert result.answer == "3.1416 rounds to 3."  # places=37 was dropped: the default 0 gave 3.0
    assert result.ledger.by_node()[0].calls == 3  # plan, call, answer: no repair


async def test_an_answer_that_repeats_the_repair_message_is_replaced(make_orch: MakeOrch) -> None:
    def parrot(messages: Sequence[BaseMessage]) -> str:
        return act(action="final", answer=str(messages[-1].content).replace("19", "")[:200])  # states 18

    wrong = act(action="final", answer="There are 19 days.")
    result = await make_orch([plan(DAYS), CALL, wrong, parrot]).arun("agent", TASK)
    assert result.answer == "Results: days between 2026-03-02 and 2026-03-20: 18."


def test_an_answer_built_from_results_states_no_value_they_do_not_give() -> None:
    from orchestrator.agent.controller import fallback_answer
    from orchestrator.agent.plan import new_part
    from orchestrator.workers.grounding import Evidence, check_answer

    parts = [
        {**new_part(tool="calculate 7**2"), "status": "done", "result": "49"},
        {**new_part(tool="calculate 12"), "status": "done", "result": "12"},
        new_part(tool="add the results"),
    ]
    evidence = Evidence("What is 7 squared plus 12?", ["49", "12"])
    answer = fallback_answer(parts, evidence)  # type: ignore[arg-type]
    assert answer == "Results: calculate: 49; calculate 12: 12; add the results: could not be done."
    assert check_answer(answer, evidence) == []  # "7**2" would have stated a 2 nothing gives


async def test_the_agent_graph_takes_its_parts_as_arguments(settings: Settings) -> None:
    """Catalog, workers, planning slot, tool search, prompt phrase and examples come from the builder."""
    from langchain_core.tools import tool

    from orchestrator import PlanExample, SlotConfig, build_agent_graph, classify_worker
    from orchestrator.testing import ScriptedChatModel
    from orchestrator.toolsets.catalog import Catalog, ToolHit

    @tool
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    searched: list[str] = []

    def retrieve(catalog: Catalog, query: str, k: int) -> list[ToolHit]:
        searched.append(query)
        return list(catalog.search(query, k=k))

    prompts: list[str] = []

    def planner_reply(messages: Sequence[BaseMessage]) -> str:
        prompts.extend(str(m.content) for m in messages)
        return plan({"tool": "shout the text 'hello'"})

    builder = build_agent_graph(
        catalog=[shout],
        workers=[],
        controller="planner",
        retrieve=retrieve,
        covers="making texts louder",
        examples=[PlanExample("Make 'abc' loud", ({"tool": "shout the text 'abc'"},))],
    )
    planner = ScriptedChatModel(
        replies=[
            planner_reply,
            act(action="call_tool", tool="shout", args={"text": "hello"}),
            act(action="final", answer="HELLO"),
        ],
        by_turn=True,
    )
    orch = Orchestrator(
        settings=settings,
        slots={"planner": SlotConfig(model="python:scripted", role="racehorse", prices=PRICES)},
        models={"planner": planner},
        tools=TOOLS,  # the manifest's tools: this graph uses its own catalog instead
        workers=[classify_worker("manifest_worker", ["a", "b"], "Sort a message", slot="planner")],
        graphs={"loud": builder},
        tracing=False,
    )
    result = await orch.arun("loud", "Shout 'hello' please")
    assert (result.status, result.answer) == ("ok", "HELLO")
    assert searched == ["shout the text"]
    system = prompts[0]
    assert "for making texts louder." in system
    assert "manifest_worker" not in system  # its workers (none), not the manifest's
    assert "Make 'abc' loud" in prompts  # its worked example
    assert {n.node for n in result.ledger.by_node()} == {"controller", "call_tool"}


async def test_worker_parts_in_a_row_fan_out_in_one_step(
    make_orch: MakeOrch, spans: InMemorySpanExporter
) -> None:
    """Worker parts take their texts from the request, never from an earlier result: consecutive ones run
    at once, one worker node each, in the same step."""
    text = "I paid 20 EUR to Acme on 2026-03-02 and my card has not arrived"
    extract = {"worker": "extract_payment", "text": text}
    classify = {"worker": "classify_request", "text": text}

    def worker_reply(messages: Sequence[BaseMessage]) -> str:
        system = str(messages[0].content)
        if "Classify" in system:
            return '{"label": "card_arrival"}'
        return json.dumps({"amount": 20, "currency": "EUR", "date": "2026-03-02", "merchant": "Acme"})

    final = act(action="final", answer="card_arrival; 20 EUR to Acme on 2026-03-02")
    orch = make_orch([plan(classify, extract), final], [worker_reply] * 2, by_turn=True, worker_delay_s=0.3)
    result = await orch.arun("agent", f"Classify and extract this: '{text}'")
    assert result.status == "ok", result.error
    assert sorted(r["worker"] for r in result.results) == ["classify_request", "extract_payment"]
    workers = [s for s in spans.get_finished_spans() if s.name == "invoke_agent worker"]
    assert len(workers) == 2
    steps = {s.parent.span_id if s.parent else None for s in workers}
    assert len(steps) == 1  # both under the same run span, side by side
    starts = sorted((s.start_time or 0, s.end_time or 0) for s in workers)
    assert starts[1][0] < starts[0][1]  # the second began before the first ended: they ran at once


def test_a_catalog_of_services_can_say_what_is_beyond_its_tools() -> None:
    """The empty plan's topics (live data, actions in the world) and their worked empty plans are the
    default catalog's; a graph over service APIs names its own or none, and the built-in ones go."""
    from orchestrator.agent.controller import BEYOND, AgentParts, _bank
    from orchestrator.agent.controller import system_prompt as _system
    from orchestrator.agent.plan import NO_STEP_EXAMPLES

    assert f"can answer ({BEYOND}), reply" in _system((), "x")
    assert "can answer, reply" in _system((), "x", "")
    assert "can answer (medical advice), reply" in _system((), "x", "medical advice")
    assert set(NO_STEP_EXAMPLES) <= set(_bank((), AgentParts()))
    assert not set(NO_STEP_EXAMPLES) & set(_bank((), AgentParts(beyond="")))
