"""A graph run whose controller is an API model on loopback: faults never lose a finished node or its cost."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from loopback import Loopback, Reply
from wire import anthropic_stream, anthropic_usage, body_of, error_body, openai_stream, openai_usage

from orchestrator import Limits, Orchestrator, Settings, SlotConfig
from orchestrator.config import ModelConfig, PriceOverride
from orchestrator.providers.http import aclose_clients, reset_model_states
from orchestrator.tracing.store import TraceStore
from support import TOOLS, WORKERS, act

# The request holds the values the scripted call uses (tool arguments are checked against it).
TASK = "How many days from 2026-03-02 to 2026-03-20?"
PLAN = json.dumps({"plan": [{"tool": "days between 2026-03-02 and 2026-03-20"}]})
CALL = act(action="call_tool", tool="date_diff", args={"start": "2026-03-02", "end": "2026-03-20"})
FINAL = act(action="final", answer="18 days")
DATE_ARGS = json.dumps({"start": "2026-03-02", "end": "2026-03-20"})
PRICE = PriceOverride(input=1e-6, output=4e-6)


@pytest.fixture(autouse=True)
async def _clean() -> AsyncIterator[None]:
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()


def orchestrator(settings: Settings, controller: SlotConfig) -> Orchestrator:
    return Orchestrator(
        settings=settings,
        slots={"controller": controller},
        tools=TOOLS,
        workers=[w for w in WORKERS if w.slot == "controller"],
        graphs={"agent": "orchestrator.graph:build_agent_graph"},
        limits=Limits(max_steps=6),
    )


def openai_slot(server: Loopback, **kw: Any) -> SlotConfig:
    return SlotConfig(
        model="openai-compat:ctl",
        base_url=server.url + "/v1",
        role="racehorse",
        prices=PRICE,
        max_retries=1,
        **kw,
    )


async def test_a_broken_stream_fails_the_run_but_keeps_the_finished_node_and_all_costs(
    loopback: Loopback, settings: Settings
) -> None:
    # model decisions: the plan (the search for its part is fixed, no call), the date_diff call, the answer
    loopback.push(openai_stream([PLAN], openai_usage(300, 20)))
    cut = openai_stream([CALL[:10], CALL[10:30], CALL[30:]], openai_usage(400, 30), cut_after=3)
    loopback.push(cut, cut)  # both attempts of the second decision break after tokens arrived
    orch = orchestrator(settings, openai_slot(loopback))
    result = await orch.arun("agent", TASK, run_id="r-cut")
    assert result.status == "failed"
    assert "failed after 2 attempts" in (result.error or "")
    first = 300 * 1e-6 + 20 * 4e-6
    assert result.ledger.cost_usd > first  # the broken attempts were billed (estimated), not $0
    assert result.ledger.input_tokens > 300

    store = TraceStore(settings.traces_path)
    chats = [s for s in store.spans("run_id = ?", ["r-cut"]) if s["kind"] == "chat"]
    assert chats[0]["cost_usd"] == pytest.approx(first)
    broken = chats[-1]
    assert broken["status"] == "error" and broken["cost_usd"] and broken["cost_usd"] > 0
    assert json.loads(broken["attributes"])["orchestrator.usage_estimated"] is True
    run = store.get_run("r-cut")
    assert (
        run is not None
        and run["status"] == "failed"
        and run["cost_usd"] == pytest.approx(result.ledger.cost_usd)
    )
    store.close()

    # the server recovers; the run resumes without asking for the plan again
    loopback.push(openai_stream([CALL], openai_usage(400, 30)), openai_stream([FINAL], openai_usage(450, 10)))
    resumed = await orch.arun("agent", None, run_id="r-cut", resume=True)
    assert resumed.status == "ok" and resumed.answer == "18 days"
    assert len(loopback.requests) == 1 + 2 + 2  # plan, two broken attempts, then the call and the answer
    orch.close()


async def test_the_controller_falls_back_to_another_protocol_and_is_priced_by_the_model_that_answered(
    loopback: Loopback, settings: Settings
) -> None:
    loopback.route("/v1/chat/completions", *[Reply(status=500, body=error_body("down")) for _ in range(4)])
    loopback.route(
        "/v1/messages",
        # native tool calls: the plan tool, the loaded tool itself, the final tool
        anthropic_stream([], anthropic_usage(200, 15), tool_use=("t1", "plan", [PLAN])),
        anthropic_stream([], anthropic_usage(220, 20), tool_use=("t2", "date_diff", [DATE_ARGS])),
        anthropic_stream(
            [], anthropic_usage(250, 10), tool_use=("t3", "final", [json.dumps({"answer": "18 days"})])
        ),
    )
    backup = ModelConfig(model="anthropic:claude-haiku-4-5", base_url=loopback.url)
    slot = openai_slot(loopback, max_concurrency=4).model_copy(
        update={"fallback": [backup], "max_retries": 0}
    )
    orch = orchestrator(settings, slot)
    result = await orch.arun("agent", TASK, run_id="r-fb")
    assert result.status == "ok" and result.answer == "18 days", result.error
    haiku = 1e-6 * (200 + 220 + 250) + 5e-6 * (15 + 20 + 10)  # plan, call, answer: all answered by haiku
    assert result.ledger.cost_usd == pytest.approx(haiku)
    assert {(line["node"], line["name"]) for line in result.ledger.lines} == {
        ("controller", "anthropic:claude-haiku-4-5"),
        ("call_tool", "date_diff"),  # the tool call's line (no model, $0)
    }
    sent = body_of(next(r for r in loopback.requests if r.path == "/v1/messages"))
    assert sent["tool_choice"] == {"type": "tool", "name": "plan"}
    store = TraceStore(settings.traces_path)
    models = {s["model"] for s in store.spans("run_id = ?", ["r-fb"]) if s["kind"] == "chat"}
    assert models == {"anthropic:claude-haiku-4-5"}
    store.close()
    orch.close()
