"""Workhorse workers: typed structured output, validated, repaired once, escalated, never passed on invalid.

The ladder for structured output: schema-constrained decoding (JSON schema / grammar) -> validate ->
one repair with the validation error -> escalate to the racehorse slot (if the worker allows) -> reject
with `WorkerOutputError`. An invalid result never reaches the state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from orchestrator.calls import call_model
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError, WorkerOutputError
from orchestrator.ledger import LedgerEntry

__all__ = ["Worker", "WorkerResult", "classify_worker", "extract_worker", "run_worker"]


@dataclass(frozen=True)
class Worker:
    """A workhorse task: instructions, the slot whose model runs it, and the type its output must have."""

    name: str
    description: str
    slot: str
    output: type[BaseModel]
    instructions: str
    max_tokens: int = 128
    escalate_to: str | None = None  # a racehorse slot to try once after a failed repair
    example_requests: tuple[str, ...] = ()  # requests it serves, each quoting its text: taught to the planner

    def schema(self) -> dict[str, Any]:
        """The output's JSON schema, as given to constrained decoding."""
        return self.output.model_json_schema()


@dataclass(frozen=True)
class WorkerResult:
    """A validated worker output."""

    worker: str
    value: dict[str, Any]
    model: str
    repaired: bool
    escalated: bool


def _shots_text(shots: Sequence[tuple[str, str]]) -> str:
    """Few-shot examples as lines of `text -> output`, appended to a worker's instructions."""
    if not shots:
        return ""
    return "\nExamples:\n" + "\n".join(
        f"{json.dumps(text, ensure_ascii=False)} -> {out}" for text, out in shots
    )


def classify_worker(
    name: str,
    labels: Sequence[str] | Mapping[str, str],
    description: str,
    *,
    slot: str = "classify",
    escalate_to: str | None = None,
    shots: Sequence[tuple[str, str]] = (),
    example_requests: Sequence[str] = (),
) -> Worker:
    """A worker that picks exactly one label from a fixed set.

    `labels` may map each label to a short description; `shots` are (text, label) examples. A small model
    classifies far better with both (Qwen2.5-0.5B on five banking labels and "other", 72 messages of
    Banking77: 65 % with bare labels, 75 % with descriptions and a dozen examples). `example_requests`
    teach the planner when to call this worker.

    Example:
        >>> w = classify_worker("triage", {"refund": "money back", "other": "else"}, "Triage a message")
        >>> w.output.model_validate({"label": "refund"}).label
        'refund'
    """
    names = list(labels)
    if not names:
        raise ConfigError(f"classify worker {name!r} needs at least one label")
    for _, label in shots:
        if label not in names:
            raise ConfigError(f"classify worker {name!r}: example label {label!r} is not one of its labels")
    label_type: Any = Literal[tuple(names)]
    output: type[BaseModel] = create_model(
        f"{name}_output", __config__=ConfigDict(extra="forbid"), label=(label_type, ...)
    )
    if isinstance(labels, Mapping):
        listed = "Labels:\n" + "\n".join(f"{label}: {meaning}" for label, meaning in labels.items())
    else:
        listed = f"Labels: {', '.join(names)}."
    instructions = (
        f"{description}. Classify the user's text into exactly one label.\n{listed}"
        + _shots_text([(text, json.dumps({"label": label})) for text, label in shots])
        + '\nReply with JSON: {"label": "<label>"}.'
    )
    return Worker(
        name,
        description,
        slot,
        output,
        instructions,
        max_tokens=24,
        escalate_to=escalate_to,
        example_requests=tuple(example_requests),
    )


def extract_worker(
    name: str,
    output: type[BaseModel],
    description: str,
    *,
    slot: str = "extract",
    escalate_to: str | None = None,
    shots: Sequence[tuple[str, Mapping[str, Any]]] = (),
    example_requests: Sequence[str] = (),
) -> Worker:
    """A worker that fills a typed record from text; `shots` are (text, record) examples."""
    for text, record in shots:
        try:
            output.model_validate(record)
        except ValidationError as exc:
            raise ConfigError(
                f"extract worker {name!r}: example for {text[:40]!r} is invalid: {exc}"
            ) from None
    fields = ", ".join(
        f"{k} ({(f.description or '').strip() or f.annotation})" for k, f in output.model_fields.items()
    )
    instructions = (
        f"{description}. Extract these fields from the user's text: {fields}. "
        "Use null for a field the text does not give. Reply with one JSON object only."
        + _shots_text([(text, json.dumps(dict(record), ensure_ascii=False)) for text, record in shots])
    )
    return Worker(
        name,
        description,
        slot,
        output,
        instructions,
        max_tokens=160,
        escalate_to=escalate_to,
        example_requests=tuple(example_requests),
    )


def _validate(worker: Worker, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    try:
        return worker.output.model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        raise ValueError(details) from None


async def run_worker(
    ctx: RunContext, worker: Worker, text: str, node: str
) -> tuple[WorkerResult | None, list[LedgerEntry], str | None]:
    """Run one worker on `text`; returns (result or None, ledger entries, rejection reason or None)."""
    messages: list[BaseMessage] = [SystemMessage(worker.instructions), HumanMessage(text)]
    schema = worker.schema()
    entries: list[LedgerEntry] = []
    attempts: list[tuple[str, bool]] = [(worker.slot, False), (worker.slot, True)]
    if worker.escalate_to and worker.escalate_to in ctx.slots:
        attempts.append((worker.escalate_to, True))
    last_error = last_reply = ""
    for i, (slot, is_retry) in enumerate(attempts):
        prompt = messages
        if is_retry:
            prompt = [
                *messages,
                AIMessage(last_reply),
                HumanMessage(f"That output is invalid: {last_error}. Reply again with corrected JSON only."),
            ]
        msg, new_entries = await call_model(
            ctx, slot, node, prompt, max_tokens=worker.max_tokens, schema=schema
        )
        entries.extend(new_entries)
        last_reply = str(msg.content)
        try:
            value = _validate(worker, last_reply)
        except ValueError as exc:
            last_error = str(exc)
            continue
        result = WorkerResult(
            worker.name, value, ctx.slots[slot].profile.name, repaired=i > 0, escalated=slot != worker.slot
        )
        return result, entries, None
    reason = (
        f"worker {worker.name!r} output failed validation after {len(attempts) - 1} repair(s): {last_error}"
    )
    return None, entries, reason


def reject(reason: str) -> WorkerOutputError:
    """The error recorded on the worker span when its output is rejected."""
    return WorkerOutputError(reason)
