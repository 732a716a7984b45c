"""Graph logic on scripted models: the four actions, limits, budgets, repairs and rejections."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator import Budget, Limits
from support import MakeOrch, act

FIND = act(action="find_tools", query="days between two dates")
CALL = act(action="call_tool", tool="date_diff", args={"start": "2026-03-02", "end": "2026-03-20"})
DELEGATE = act(action="delegate", worker="classify_request", input="my card has not arrived")
FINAL = act(action="final", answer="18 days; card_arrival")


async def test_full_loop_records_every_step(make_orch: MakeOrch) -> None:
    orch = make_orch([FIND, CALL, DELEGATE, FINAL], ['{"label": "card_arrival"}'])
    result = await orch.arun("agent", "How long has the customer waited?")
    assert result.status == "ok"
    assert result.answer == "18 days; card_arrival"
    assert result.results == [
        {
            "worker": "classify_request",
            "value": {"label": "card_arrival"},
            "model": "python:scripted",
            "repaired": False,
            "escalated": False,
        }
    ]
    nodes = [n.node for n in result.ledger.by_node()]
    assert nodes == ["controller", "call_tool", "worker"]
    controller = result.ledger.by_node()[0]
    assert controller.calls == 4 and controller.role == "racehorse"
    # whitespace-token usage of the scripted model, priced at 1e-6 in / 2e-6 out
    expected = sum(e["input_tokens"] * 1e-6 + e["output_tokens"] * 2e-6 for e in result.ledger.lines)
    assert result.ledger.cost_usd == pytest.approx(expected)
    assert result.ledger.cost_usd > 0


async def test_tool_observation_reaches_the_controller(make_orch: MakeOrch) -> None:
    seen: list[str] = []

    def final(messages: object) -> str:
        seen.extend(str(m.content) for m in messages)  # type: ignore[attr-defined]
        return FINAL

    orch = make_orch([FIND, CALL, final])
    result = await orch.arun("agent", "wait?")
    assert result.status == "ok"
    assert any("Observation (call_tool date_diff): 18" in s for s in seen)
    assert any(s.startswith("Observation (find_tools): found date_diff(start, end)") for s in seen)


async def test_tool_that_raises_goes_back_to_the_model(
    make_orch: MakeOrch, spans: InMemorySpanExporter
) -> None:
    seen: list[str] = []

    def final(messages: object) -> str:
        seen.extend(str(m.content) for m in messages)  # type: ignore[attr-defined]
        return act(action="final", answer="could not")

    find = act(action="find_tools", query="always raises explode")
    boom = act(action="call_tool", tool="explode", args={"reason": "x"})
    result = await make_orch([find, boom, final]).arun("agent", "try it")
    assert result.status == "ok"
    assert any("error: RuntimeError: boom: x" in s for s in seen)
    tool_span = next(s for s in spans.get_finished_spans() if s.name == "execute_tool explode")
    assert tool_span.status.status_code.name == "ERROR"
    assert "boom" in (tool_span.status.description or "")


async def test_calling_a_tool_that_was_not_found_is_repaired(make_orch: MakeOrch) -> None:
    # date_diff is in the catalog but not loaded: the reply is rejected and repaired once.
    result = await make_orch([CALL, FIND, CALL, FINAL]).arun("agent", "wait?")
    assert result.status == "ok"
    assert result.ledger.by_node()[0].calls == 4


async def test_invalid_json_gets_one_repair_then_the_run_fails(make_orch: MakeOrch) -> None:
    result = await make_orch(["{not json", "still not json"]).arun("agent", "x")
    assert result.status == "failed"
    assert result.error is not None and "not valid JSON" in result.error
    assert "after one repair" in result.error


async def test_repeating_an_action_is_refused(make_orch: MakeOrch) -> None:
    result = await make_orch([FIND, FIND, FIND]).arun("agent", "x")
    assert result.status == "failed"
    assert "already done" in (result.error or "")


async def test_step_limit_stops_a_looping_model(make_orch: MakeOrch) -> None:
    queries = [act(action="find_tools", query=f"query number {i}") for i in range(10)]
    result = await make_orch(queries, limits=Limits(max_steps=3)).arun("agent", "x")
    assert result.status == "budget_stop"
    assert result.stop_reason == "step limit of 3 reached"
    assert result.ledger.by_node()[0].calls == 3


async def test_budget_is_checked_before_the_call(make_orch: MakeOrch) -> None:
    # One controller call costs ~1e-4 worst case (max_tokens 256 * 2e-6 + prompt); allow about one.
    result = await make_orch([FIND, CALL, FINAL]).arun("agent", "x", budget=Budget(usd=0.0009))
    assert result.status == "budget_stop"
    assert result.stop_reason is not None and result.stop_reason.startswith("cost budget")
    assert result.ledger.cost_usd is not None and result.ledger.cost_usd <= 0.0009


async def test_token_budget(make_orch: MakeOrch) -> None:
    result = await make_orch([FIND, CALL, FINAL]).arun("agent", "x", budget=Budget(tokens=100))
    assert result.status == "budget_stop"
    assert result.ledger.tokens == 0  # the first call's worst case already exceeds it: nothing was spent


async def test_invalid_worker_output_is_rejected_not_passed_on(
    make_orch: MakeOrch, spans: InMemorySpanExporter
) -> None:
    seen: list[str] = []

    def final(messages: object) -> str:
        seen.extend(str(m.content) for m in messages)  # type: ignore[attr-defined]
        return act(action="final", answer="unknown")

    # label outside the enum, then still invalid after the repair
    orch = make_orch([DELEGATE, final], ['{"label": "mortgage"}', '{"label": "loan"}'])
    result = await orch.arun("agent", "x")
    assert result.status == "ok"
    assert result.results == []
    assert any("failed validation" in s and "label" in s for s in seen)
    worker_span = next(s for s in spans.get_finished_spans() if s.name == "invoke_agent worker")
    assert worker_span.status.status_code.name == "ERROR"
    assert worker_span.attributes is not None
    assert worker_span.attributes["error.type"] == "WorkerOutputError"
    assert result.ledger.by_node()[1].calls == 2  # the attempt and its one repair were both paid for


async def test_worker_output_repaired_once(make_orch: MakeOrch) -> None:
    orch = make_orch([DELEGATE, FINAL], ["not json at all", '{"label": "refund"}'])
    result = await orch.arun("agent", "x")
    assert result.results[0]["value"] == {"label": "refund"}
    assert result.results[0]["repaired"] is True


async def test_typed_extraction(make_orch: MakeOrch) -> None:
    delegate = act(action="delegate", worker="extract_payment", input="I paid 12.50 EUR")
    orch = make_orch(
        [delegate, FINAL], ['{"amount": "twelve", "currency": "EUR"}', '{"amount": 12.5, "currency": "EUR"}']
    )
    result = await orch.arun("agent", "x")
    assert result.results[0]["value"] == {"amount": 12.5, "currency": "EUR"}


async def test_astream_yields_node_events_in_order(make_orch: MakeOrch) -> None:
    orch = make_orch([FIND, CALL, FINAL])
    kinds = [(e.kind, e.node) async for e in orch.astream("agent", "x")]
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
    result = make_orch([FINAL]).run_sync("agent", "x")
    assert (result.status, result.answer) == ("ok", "18 days; card_arrival")


async def test_deadline_stops_the_run(make_orch: MakeOrch) -> None:
    result = await make_orch([FIND, CALL, FINAL], limits=Limits(deadline_s=1e-6)).arun("agent", "x")
    assert result.status == "budget_stop"
    assert result.stop_reason is not None and result.stop_reason.startswith("deadline")


async def test_seconds_budget(make_orch: MakeOrch) -> None:
    result = await make_orch([FIND, CALL, FINAL]).arun("agent", "x", budget=Budget(seconds=0))
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
