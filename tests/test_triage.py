"""The triage example graph: its routing, on scripted models (the real models run it in test_local_models)."""

from __future__ import annotations

import json

import pytest

from orchestrator import Orchestrator, Settings, SlotConfig
from orchestrator.config import PriceOverride
from orchestrator.testing import ScriptedChatModel

PRICE = PriceOverride(input=1e-6, output=2e-6)


def _orch(settings: Settings, senior: str) -> tuple[Orchestrator, dict[str, ScriptedChatModel]]:
    models = {
        "classify": ScriptedChatModel(
            replies=[json.dumps({"label": "refund", "needs_senior_agent": senior})]
        ),
        "extract": ScriptedChatModel(
            replies=[json.dumps({"order_or_card": None, "amount": "3.20", "date": "x"})]
        ),
        "summarize": ScriptedChatModel(replies=["Charged twice for a coffee."]),
        "write": ScriptedChatModel(replies=["We are sorry: we will look into it. - The Support Team"]),
        "controller": ScriptedChatModel(replies=["A senior agent follows this up. - The Support Team"]),
    }
    slots = {name: SlotConfig(model="python:scripted", prices=PRICE) for name in models}
    orch = Orchestrator(
        settings=settings, slots=slots, models=models, graphs={"triage": "graphs.triage:build"}
    )
    return orch, models


@pytest.mark.parametrize(("senior", "last"), [("no", "reply"), ("yes", "escalate")])
async def test_only_hard_messages_reach_the_racehorse(settings: Settings, senior: str, last: str) -> None:
    orch, _ = _orch(settings, senior)
    result = await orch.arun("triage", "I was charged twice for my coffee, 3.20 each time.")
    assert result.status == "ok", result.error
    nodes = [n.node for n in result.ledger.by_node()]
    assert nodes == ["classify", "extract", "summarize", last]
    assert result.answer and result.answer.endswith("- The Support Team")
    assert result.ledger.cost_usd and result.ledger.cost_usd > 0
    orch.close()


async def test_a_red_flag_word_escalates_whatever_the_workhorse_said(settings: Settings) -> None:
    orch, _ = _orch(settings, "no")
    result = await orch.arun("triage", "This is fraud: 450 EUR left my account.")
    assert [n.node for n in result.ledger.by_node()][-1] == "escalate"
    orch.close()


async def test_details_the_message_does_not_state_are_dropped(settings: Settings) -> None:
    orch, _ = _orch(settings, "no")
    updates = {}
    async for event in orch.astream("triage", "I was charged twice for my coffee, 3.20 each time."):
        if event.kind == "node":
            updates[event.node] = dict(event.update)
    assert updates["extract"] == {
        "details": {"amount": "3.20"}
    }  # the invented date "x" and the null are gone
    assert updates["classify"] == {"label": "refund", "hard": False}
    orch.close()
