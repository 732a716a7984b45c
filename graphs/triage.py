"""A support-message triage pipeline, written only against the public API, as a user would write it.

Workhorse nodes classify the message, extract its details and summarize it; a workhorse writes the reply
in the house style. The racehorse is called only for the messages the classifier marks as hard.

    START -> classify -> extract -> summarize -> reply (easy) or escalate (hard) -> END
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from orchestrator import RunContext

LABELS = ["card_arrival", "lost_or_stolen_card", "refund", "payment_problem", "account_access", "other"]
HOUSE_STYLE = (
    "You are the support team of a bank. Reply directly to the customer, addressing them as 'you': warm, "
    "plain English, at most three sentences, no promises of dates or amounts that their message does not "
    "state. Sign off with '- The Support Team'."
)
# Words that always send a message to the racehorse, whatever the workhorse judged: a cheap rule and a
# cheap model together, so a small model's miss on a sensitive case does not decide alone.
RED_FLAGS = ("fraud", "lawyer", "sue ", "legal", "police", "stolen")


class Triage(TypedDict, total=False):
    input: str  # the customer's message
    label: str
    hard: bool
    details: dict[str, Any]
    summary: str
    answer: str  # the reply to send


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


CLASSIFY_SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": LABELS}, "needs_senior_agent": {"enum": ["no", "yes"]}},
    "required": ["label", "needs_senior_agent"],
}
DETAILS_SCHEMA = {
    "type": "object",
    "properties": {
        "order_or_card": {"type": ["string", "null"]},
        "amount": {"type": ["string", "null"]},
        "date": {"type": ["string", "null"]},
    },
    "required": ["order_or_card", "amount", "date"],
}


async def classify(state: Triage, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Label the message, and mark it hard when it needs a senior agent."""
    prompt = (
        f"Classify the customer message with one label of {', '.join(LABELS)}, and say whether it needs a "
        "senior agent: yes only when it threatens legal action or reports fraud; no for everything else.\n"
        'Example: "My card has not arrived yet." -> {"label": "card_arrival", "needs_senior_agent": "no"}\n'
        'Example: "Someone took money from my account, I will sue you." -> '
        '{"label": "payment_problem", "needs_senior_agent": "yes"}'
    )
    reply = await runtime.context.model("classify").ainvoke(
        [SystemMessage(prompt), HumanMessage(state["input"])],
        response_format={"type": "json_object", "schema": CLASSIFY_SCHEMA},
    )
    found = _json(str(reply.content))
    label = found.get("label") if found.get("label") in LABELS else "other"
    flagged = any(word in state["input"].lower() for word in RED_FLAGS)
    return {"label": label, "hard": flagged or found.get("needs_senior_agent") == "yes"}


async def extract(state: Triage, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Pull out the card or order, the amount and the date the message mentions (null when absent)."""
    prompt = "Copy from the message the card or order it names, the amount and the date; null if absent."
    reply = await runtime.context.model("extract").ainvoke(
        [SystemMessage(prompt), HumanMessage(state["input"])],
        response_format={"type": "json_object", "schema": DETAILS_SCHEMA},
    )
    found = _json(str(reply.content))
    # keep only what the message really says: a model may invent a value
    details = {k: v for k, v in found.items() if isinstance(v, str) and v and v in state["input"]}
    return {"details": details}


async def summarize(state: Triage, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """One sentence for the ticket queue."""
    reply = await runtime.context.model("summarize").ainvoke(
        [
            SystemMessage("Summarize the customer's message in one short sentence."),
            HumanMessage(state["input"]),
        ],
        max_tokens=60,
    )
    return {"summary": str(reply.content).strip()}


def _brief(state: Triage) -> str:
    facts = json.dumps(state.get("details") or {})
    return f"{HOUSE_STYLE} The message is about: {state.get('label')}. Facts it states: {facts}."


async def reply(state: Triage, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """An easy message: a workhorse writes the reply in the house style."""
    answer = await runtime.context.model("write").ainvoke(
        [SystemMessage(_brief(state)), HumanMessage(state["input"])], max_tokens=160
    )
    return {"answer": str(answer.content).strip()}


async def escalate(state: Triage, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """A hard message: the racehorse writes the reply."""
    answer = await runtime.context.model("controller").ainvoke(
        [
            SystemMessage(
                HOUSE_STYLE + " The case is sensitive: acknowledge it and say a senior agent follows up."
            ),
            HumanMessage(_brief(state)),
        ],
        max_tokens=200,
    )
    return {"answer": str(answer.content).strip()}


def route(state: Triage) -> str:
    """Only hard messages reach the racehorse."""
    return "escalate" if state.get("hard") else "reply"


def build() -> StateGraph[Triage, RunContext, Triage, Triage]:
    """The uncompiled triage graph."""
    g: StateGraph[Triage, RunContext, Triage, Triage] = StateGraph(Triage, context_schema=RunContext)
    g.add_node("classify", classify)
    g.add_node("extract", extract)
    g.add_node("summarize", summarize)
    g.add_node("reply", reply)
    g.add_node("escalate", escalate)
    g.add_edge(START, "classify")
    g.add_edge("classify", "extract")
    g.add_edge("extract", "summarize")
    g.add_conditional_edges("summarize", route, ["reply", "escalate"])
    g.add_edge("reply", END)
    g.add_edge("escalate", END)
    return g
