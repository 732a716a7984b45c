"""Requests for a worker answered in the form asked: a summary or a rewrite is the answer, a classification
names its label, an extraction lists every field it found; and the bundled project routes such requests
to its workers."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence

import pytest
from langchain_core.messages import BaseMessage
from pydantic import BaseModel

from orchestrator import classify_worker, extract_worker, style_worker, summarize_worker
from orchestrator.agent.controller import fallback_answer
from orchestrator.agent.plan import NO_STEP_EXAMPLES, new_part, select_examples, worker_examples
from orchestrator.workers.definitions import output_text
from support import ROOT, MakeOrch, act

EMAIL = (
    "Hi team, the quarterly review moved from Monday to Wednesday at 10. Please send your slides to Dana "
    "by Tuesday noon. Lunch is provided."
)
SUMMARY = "The quarterly review moved to Wednesday at 10; slides go to Dana by Tuesday noon."
NOTE = "hey, cant make it to the 3pm call with Acme tmrw, can we move it to Friday"
FORMAL = "I am unable to attend the 3pm call with Acme tomorrow. Could we move it to Friday?"


class Booking(BaseModel):
    guest: str | None
    nights: int | None
    city: str | None


WORKERS = [
    summarize_worker("summarize_text", "Summarize a text", escalate_to=()),
    style_worker("rewrite_formal", "formal English", "Rewrite a text formally", slot="write", escalate_to=()),
    classify_worker("classify_request", ["card_arrival", "refund", "other"], "Classify a message"),
    extract_worker("extract_booking", Booking, "Extract the booking"),
]


def plan(*parts: dict[str, str]) -> str:
    return json.dumps({"plan": list(parts)})


# What a small racehorse writes when asked for the final answer: the output retold, not stated.
RETOLD = act(action="final", answer="The message is about a meeting and some slides.")


@pytest.mark.parametrize(
    ("worker", "text", "output", "request_words"),
    [
        ("summarize_text", EMAIL, SUMMARY, "Sum up this email"),
        ("rewrite_formal", NOTE, FORMAL, "Rewrite this more formally"),
    ],
)
async def test_a_text_workers_output_is_the_answer_itself(
    make_orch: MakeOrch, worker: str, text: str, output: str, request_words: str
) -> None:
    orch = make_orch(
        [plan({"worker": worker, "text": text}), RETOLD], [output], by_turn=True, workers=WORKERS
    )
    result = await orch.arun("agent", f"{request_words}: '{text}'")
    assert result.status == "ok", result.error
    assert result.answer == output
    calls = {n.node: n.calls for n in result.ledger.by_node()}
    assert calls == {"controller": 1, "worker": 1}  # the plan and the worker: no model retells the output


async def test_a_classification_is_answered_with_its_label(make_orch: MakeOrch) -> None:
    text = "my card has not arrived yet"
    orch = make_orch(
        [plan({"worker": "classify_request", "text": text}), RETOLD],
        ['{"label": "card_arrival"}'],
        by_turn=True,
        workers=WORKERS,
    )
    result = await orch.arun("agent", f"Which type of request is this: '{text}'")
    assert result.answer == "card_arrival"


async def test_an_extraction_lists_every_field_it_found(make_orch: MakeOrch) -> None:
    text = "Book 3 nights in Lisbon for Ana Costa"
    orch = make_orch(
        [plan({"worker": "extract_booking", "text": text}), RETOLD],
        ['{"guest": "Ana Costa", "nights": 3, "city": "Lisbon"}'],
        by_turn=True,
        workers=WORKERS,
    )
    result = await orch.arun("agent", f"Get the booking out of this: '{text}'")
    assert result.answer == "guest: Ana Costa, nights: 3, city: Lisbon"


async def test_several_worker_parts_each_give_their_output(make_orch: MakeOrch) -> None:
    def output(messages: Sequence[BaseMessage]) -> str:
        return SUMMARY if "Summarize" in str(messages[0].content) else '{"label": "other"}'

    parts = ({"worker": "summarize_text", "text": EMAIL}, {"worker": "classify_request", "text": EMAIL})
    orch = make_orch([plan(*parts), RETOLD], [output, output], by_turn=True, workers=WORKERS)
    result = await orch.arun("agent", f"Summarize and classify: '{EMAIL}'")
    assert result.answer == f"summarize_text: {SUMMARY}\nclassify_request: other"


async def test_a_plan_with_a_tool_part_is_answered_by_the_model_shown_the_label(make_orch: MakeOrch) -> None:
    """A tool's result still needs words around it: the model writes that answer, shown the worker's label
    as a label (not the JSON it is kept as)."""
    text = "my card has not arrived yet"
    shown: list[str] = []

    def final(messages: Sequence[BaseMessage]) -> str:
        shown.append(str(messages[-1].content))
        return act(action="final", answer="It is 4 words long, and the request is card_arrival.")

    steps = [
        plan({"tool": "count the words of the text"}, {"worker": "classify_request", "text": text}),
        act(action="call_tool", tool="word_count", args={"text": "my card has not"}),
        final,
    ]
    orch = make_orch(steps, ['{"label": "card_arrival"}'], by_turn=True, workers=WORKERS)
    result = await orch.arun("agent", f"Count the words of 'my card has not' and classify: '{text}'")
    assert result.answer == "It is 4 words long, and the request is card_arrival."
    assert "- classify_request of the text: card_arrival" in shown[-1].splitlines()


def test_an_answer_built_from_the_results_states_a_record_field_by_field() -> None:
    record = '{"guest": "Ana", "nights": 2.0, "city": null}'
    parts = [
        {**new_part(worker="extract_booking", text="x"), "status": "done", "result": record},
        {**new_part(worker="classify_request", text="x"), "status": "done", "result": '{"label": "refund"}'},
    ]
    assert fallback_answer(parts) == (  # type: ignore[arg-type]
        "Results: extract_booking of the message: guest: Ana, nights: 2 (not in the text: city); "
        "classify_request of the message: refund."
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("  A summary.  ", "A summary."),
        ({"label": "card_arrival"}, "card_arrival"),
        (
            {"amount": 1250.0, "currency": "EUR", "merchant": "Ryanair"},
            "amount: 1250, currency: EUR, merchant: Ryanair",
        ),
        ({"amount": None, "currency": None}, "not in the text: amount, currency"),
        ({"tags": ["a", "b"], "urgent": True}, "tags: a, b, urgent: yes"),
    ],
)
def test_output_text(value: object, text: str) -> None:
    assert output_text(value) == text


# --- the bundled project ---------------------------------------------------------------------------------


def test_every_workhorse_slot_of_the_bundled_project_has_a_worker() -> None:
    from workers.builtin import WORKERS as BUNDLED

    slots = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["orchestrator"]["slots"]
    workhorses = {name for name, slot in slots.items() if slot["role"] == "workhorse"}
    assert {w.slot for w in BUNDLED} == workhorses == {"classify", "extract", "summarize", "write"}
    by_slot = {w.slot: w for w in BUNDLED}
    assert by_slot["summarize"].output is None and by_slot["write"].output is None  # free text, validated
    assert all(w.example_requests for w in BUNDLED)


# Requests in users' words, none of them one of the workers' example requests; None: a tool's request.
ROUTED = [
    ("Rewrite this more formally: 'hey, can't make it tmrw, something came up'", "rewrite_formal"),
    ("Can you make this sound professional? 'yo, the report is late again, sorry'", "rewrite_formal"),
    (
        "Please rewrite this email in a formal tone: 'we need the money by friday or we walk'",
        "rewrite_formal",
    ),
    ("Summarize this: 'The board met and agreed to open a second shop.'", "summarize_text"),
    (
        "Can you sum up this message for me: 'Your parcel was left with a neighbour at number 12.'",
        "summarize_text",
    ),
    ("Classify this customer message: 'my card never arrived'", "classify_request"),
    ("Make this title case: 'the old man and the sea'", None),
    ("Pull out the email addresses in this: 'write to jo@shop-example.com or anna@example.org'", None),
]


@pytest.mark.parametrize(("request_text", "worker"), ROUTED)
def test_the_bundled_planner_is_shown_the_matching_worker_for_a_request(
    request_text: str, worker: str | None
) -> None:
    """The worked plans the planner sees for a request (its closest examples, the best last) show the
    worker that does what it asks, and for a rewrite never a letter-case tool's example: a formal rewrite
    is not a change of letter case. A change of letter case, or finding addresses, is a tool's."""
    from tools.catalog import PLAN_EXAMPLES
    from workers.builtin import WORKERS as BUNDLED

    mix = next(e for e in PLAN_EXAMPLES if len(e.plan) == 1 and "tool" in e.plan[0])
    bank = (
        *PLAN_EXAMPLES,
        *NO_STEP_EXAMPLES,
        *worker_examples([(w.name, w.description, w.example_requests) for w in BUNDLED], mix),
    )
    shown = select_examples(request_text, bank, 3)
    if worker is None:
        assert [list(p) for p in shown[-1].plan] == [["tool"]]
        return
    assert [p.get("worker") for p in shown[-1].plan] == [worker]
    if worker == "rewrite_formal":
        # never a change of letter case (another tool's example may share a word, as "email" does)
        assert not [e.request for e in shown if any("case" in p.get("tool", "") for p in e.plan)]
