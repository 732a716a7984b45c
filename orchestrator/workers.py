"""Workhorse workers: typed structured output, validated, repaired once, escalated, never passed on invalid.

The ladder for structured output: schema-constrained decoding (JSON schema / grammar) -> validate ->
one repair with the validation error -> escalate to the racehorse slot (if the worker allows) -> reject
with `WorkerOutputError`. An invalid result never reaches the state.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def classify_worker(
    name: str,
    labels: Sequence[str],
    description: str,
    *,
    slot: str = "classify",
    escalate_to: str | None = None,
) -> Worker:
    """A worker that picks exactly one label from a fixed set.

    Example:
        >>> w = classify_worker("triage", ["refund", "other"], "Triage a message")
        >>> w.output.model_validate({"label": "refund"}).label
        'refund'
    """
    if not labels:
        raise ConfigError(f"classify worker {name!r} needs at least one label")
    label_type: Any = Literal[tuple(labels)]
    output: type[BaseModel] = create_model(
        f"{name}_output", __config__=ConfigDict(extra="forbid"), label=(label_type, ...)
    )
    instructions = (
        f"{description}. Classify the user's text into exactly one label from: {', '.join(labels)}. "
        'Reply with JSON: {"label": "<label>"}.'
    )
    return Worker(name, description, slot, output, instructions, max_tokens=24, escalate_to=escalate_to)


def extract_worker(
    name: str,
    output: type[BaseModel],
    description: str,
    *,
    slot: str = "extract",
    escalate_to: str | None = None,
) -> Worker:
    """A worker that fills a typed record from text."""
    fields = ", ".join(
        f"{k} ({(f.description or '').strip() or f.annotation})" for k, f in output.model_fields.items()
    )
    instructions = (
        f"{description}. Extract these fields from the user's text: {fields}. "
        "Use null for a field the text does not give. Reply with one JSON object only."
    )
    return Worker(name, description, slot, output, instructions, max_tokens=160, escalate_to=escalate_to)


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
