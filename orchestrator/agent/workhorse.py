"""Running a workhorse worker: typed structured output, validated, repaired once, escalated, never
passed on invalid.

The ladder for structured output: schema-constrained decoding (JSON schema / grammar) -> validate ->
one repair with the validation error -> escalate to the racehorse slot (if the worker allows) -> reject
with `WorkerOutputError`. An invalid result never reaches the state.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from opentelemetry import trace
from pydantic import ValidationError

from orchestrator.cost.ledger import LedgerEntry
from orchestrator.errors import WorkerOutputError
from orchestrator.models.calls import call_model
from orchestrator.models.context import RunContext
from orchestrator.tracing import attrs as A
from orchestrator.tracing.callbacks import node_span
from orchestrator.workers.definitions import Worker, WorkerResult
from orchestrator.workers.router import Router

__all__ = ["SAMPLE_TEMPERATURE", "reject", "run_worker", "worker_node"]

SAMPLE_TEMPERATURE = 0.7  # a repair by sampling (`Worker.repair == "sample"`) draws at this temperature


def _validate(worker: Worker, source: str, text: str) -> Any:
    """The output as it enters the state (a dict for structured output, else the text), or ValueError
    saying why it is rejected."""
    value: Any = text.strip()
    data: Any = None
    if worker.shape is not None or worker.output is not None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    if worker.shape is not None:  # an output in a form: its JSON, made back into the output (text or record)
        data = worker.shape.output(source, data if isinstance(data, dict) else {})
        if worker.output is None:
            value = text = data
    if worker.output is not None:
        try:
            value = worker.output.model_validate(data).model_dump(mode="json")
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(details) from None
        if worker.shape is not None:  # the validators read the record, not the spans it was copied as
            text = json.dumps(value, ensure_ascii=False)
    elif worker.shape is None and not value:
        raise ValueError("the output is empty")
    reasons = [
        r for check in worker.validators if (r := check(source, value if isinstance(value, str) else text))
    ]
    if reasons:
        raise ValueError("; ".join(reasons))
    return value


def racehorses(ctx: RunContext) -> tuple[str, ...]:
    """The run's racehorse slots: where a worker escalates when it names no slots of its own."""
    return tuple(name for name, binding in ctx.slots.items() if binding.role == "racehorse")


async def run_worker(
    ctx: RunContext, worker: Worker, text: str, node: str
) -> tuple[WorkerResult | None, list[LedgerEntry], str | None]:
    """Run one worker on `text`; returns (result or None, ledger entries, rejection reason or None).

    The ladder: the worker's slot (schema-constrained where the model supports it, under the worker's shape
    for this text if it has one), its repairs there (`Worker.repair`: one re-prompt with the reason, or more
    draws at a temperature, or none), then each escalation slot in turn with the original request. The
    first valid output wins; every attempt is billed and recorded on the current span (repairs,
    escalations).
    """
    messages: list[BaseMessage] = [SystemMessage(worker.instructions), HumanMessage(text)]
    schema = worker.schema(text)
    entries: list[LedgerEntry] = []
    chain = [s for s in worker.escalation(racehorses(ctx)) if s in ctx.slots]
    attempts = _attempts(worker, chain)
    span = node_span() or trace.get_current_span()  # a plain node's span, or the agent's worker span
    last_error = last_reply = ""
    if (
        worker.router is not None and chain
    ):  # routing before generation: a likely wrong answer is not paid for
        p = await asyncio.to_thread(_p_right, worker.router, text)
        span.set_attribute(A.WORKER_P_RIGHT, p)
        if p < worker.router.min_p:
            span.set_attribute(A.WORKER_ROUTE, "sent up")
            attempts = [(slot, "first") for slot in chain]
            last_error = f"sent up by the router (p {p:.2f} < {worker.router.min_p:g}), then"
    repairs = escalations = 0
    unsure = False  # the last answer was valid but less sure than the worker's `min_margin`
    fallback: WorkerResult | None = None  # that answer, kept in case nothing up the chain is valid
    for slot, how in attempts:
        prompt = messages
        is_repair = how in ("repair", "sample")
        if is_repair and unsure:
            continue  # nothing to repair: the answer goes up the chain
        if how == "sample":
            repairs += 1
        elif is_repair:
            # The rejection goes into the instructions; the user's turn stays the text alone. (As a last
            # user turn, small models took the note for the text to work on: they summarized the note.)
            repairs += 1
            prompt = [
                SystemMessage(
                    f"{worker.instructions}\n\nA first output for the user's text was rejected: {last_error}."
                    f"\nThe rejected output:\n{last_reply}\nWrite a new output that fixes this."
                ),
                HumanMessage(text),
            ]
        elif slot != worker.slot:
            escalations += 1
        # the worker routes by confidence and a slot up the chain can take an unsure answer: its own
        # model's margin is measured (and reported on the result: `orch trial --tune` reads it)
        measured = worker.min_margin is not None and slot == worker.slot and bool(chain)
        options: dict[str, Any] = {"logprobs": True} if measured else {}
        if how == "sample":  # another draw: a temperature, and a seed of its own so the draws differ
            options.update(temperature=SAMPLE_TEMPERATURE, seed=repairs)
        msg, new_entries = await call_model(
            ctx,
            slot,
            node,
            prompt,
            max_tokens=worker.budget(text),
            schema=schema,
            options=options or None,
            attempt="repair" if is_repair else "escalation" if slot != worker.slot else None,
        )
        entries.extend(new_entries)
        last_reply = str(msg.content)
        try:
            # cut off at the token limit: it may pass the checks (half a letter keeps and adds no facts),
            # but it is never an answer
            if msg.response_metadata.get("finish_reason") in ("length", "max_tokens"):
                raise ValueError(f"it was cut off at {worker.budget(text)} tokens; write a shorter one")
            value = _validate(worker, text, last_reply)
        except ValueError as exc:
            last_error = str(exc)
            continue
        got = msg.response_metadata.get("margin") if measured else None
        margin = float(got) if isinstance(got, int | float) and not isinstance(got, bool) else None
        if margin is not None and worker.min_margin is not None:
            span.set_attribute(A.WORKER_MARGIN, margin)
            unsure = margin < worker.min_margin
            span.set_attribute(A.WORKER_ROUTE, "escalated" if unsure else "kept")
            if unsure:  # valid but unsure: the next slot up the chain takes it
                last_error = f"unsure (margin {margin:.2f} < {worker.min_margin:g})"
                fallback = WorkerResult(
                    worker.name, value, ctx.slots[slot].profile.name, False, False, margin=margin
                )
                continue
        span.set_attributes({A.WORKER_REPAIRS: repairs, A.WORKER_ESCALATIONS: escalations})
        result = WorkerResult(
            worker.name,
            value,
            ctx.slots[slot].profile.name,
            repaired=repairs > 0,
            escalated=slot != worker.slot,
            margin=margin,
        )
        return result, entries, None
    span.set_attributes({A.WORKER_REPAIRS: repairs, A.WORKER_ESCALATIONS: escalations})
    if fallback is not None:  # nothing up the chain did better than the unsure answer, which is valid
        return fallback, entries, None
    tried = f"after {repairs} repair(s) and {escalations} escalation(s)"
    return None, entries, f"worker {worker.name!r} output failed validation {tried}: {last_error}"


def _p_right(router: Router, text: str) -> float:
    """The router's estimate for `text` (its MiniLM embedding: the embed extra, as the router's fit was)."""
    from orchestrator.toolsets.retrieval.dense import MiniLM

    return router.p_right(MiniLM.shared().embed([text])[0])


def _attempts(worker: Worker, chain: list[str]) -> list[tuple[str, str]]:
    """(slot, how) for each call the ladder may make: the first answer, the worker's repairs (`repair`:
    one re-prompt, `samples` draws, or none), then each escalation slot."""
    first = [(worker.slot, "first")]
    if worker.repair == "prompt":
        first.append((worker.slot, "repair"))
    elif worker.repair == "sample":
        first += [(worker.slot, "sample")] * max(0, worker.samples)
    return first + [(slot, "first") for slot in chain]


def reject(reason: str) -> WorkerOutputError:
    """The error recorded on the worker span when its output is rejected."""
    return WorkerOutputError(reason)


def worker_node(worker: Worker, *, source: str = "input", into: str | None = None) -> Any:
    """A graph node that runs `worker` on the state's `source` key and writes its validated output to
    `into` (default: the worker's name). An output that stays invalid fails the node with
    `WorkerOutputError`: it never enters the state.

    Example:
        >>> from orchestrator import summarize_worker
        >>> node = worker_node(summarize_worker(words=(5, 40)), into="summary")
        >>> node.__name__
        'summarize'
    """
    key = into or worker.name

    async def node(state: Any, runtime: Any) -> dict[str, Any]:
        ctx: RunContext = runtime.context
        result, _, reason = await run_worker(ctx, worker, str(state[source]), _node_name() or worker.name)
        if result is None:
            raise reject(reason or "invalid output")
        return {key: result.value}

    node.__name__ = worker.name
    return node


def _node_name() -> str | None:
    try:
        from langgraph.config import get_config

        return str(get_config().get("metadata", {}).get("langgraph_node") or "") or None
    except Exception:
        return None
