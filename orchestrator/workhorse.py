"""Running a workhorse worker: typed structured output, validated, repaired once, escalated, never
passed on invalid.

The ladder for structured output: schema-constrained decoding (JSON schema / grammar) -> validate ->
one repair with the validation error -> escalate to the racehorse slot (if the worker allows) -> reject
with `WorkerOutputError`. An invalid result never reaches the state.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import ValidationError

from orchestrator.calls import call_model
from orchestrator.context import RunContext
from orchestrator.errors import WorkerOutputError
from orchestrator.ledger import LedgerEntry
from orchestrator.workers import Worker, WorkerResult

__all__ = ["reject", "run_worker"]


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
