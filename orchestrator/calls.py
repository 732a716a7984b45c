"""The one path every model call takes: budget check, span, usage, cost, ledger entry."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from orchestrator.context import BudgetStop, RunContext
from orchestrator.errors import ModelError
from orchestrator.ledger import LedgerEntry
from orchestrator.pricing import Usage, cost_usd, warn_unpriced
from orchestrator.tracing import attrs as A
from orchestrator.tracing.spans import open_span

__all__ = ["call_model", "estimate_tokens"]


def estimate_tokens(messages: Sequence[BaseMessage]) -> int:
    """A deliberately high prompt-token estimate (3 characters a token, plus per-message overhead)."""
    return sum(len(str(m.content)) // 3 + 8 for m in messages)


def usage_of(msg: AIMessage) -> Usage:
    """Usage in OTel's convention (input includes cached tokens) from langchain's `usage_metadata`."""
    um = msg.usage_metadata
    if not um:
        return Usage()
    details = um.get("input_token_details") or {}
    return Usage(
        input_tokens=int(um.get("input_tokens", 0)),
        output_tokens=int(um.get("output_tokens", 0)),
        cache_read_tokens=int(details.get("cache_read", 0) or 0),
        cache_write_tokens=int(details.get("cache_creation", 0) or 0),
    )


async def call_model(
    ctx: RunContext,
    slot: str,
    node: str,
    messages: Sequence[BaseMessage],
    *,
    max_tokens: int,
    schema: dict[str, Any] | None = None,
) -> tuple[AIMessage, LedgerEntry]:
    """Call the model bound to `slot`, after checking the budget against the worst case.

    Raises BudgetStop before the call when it could break the budget or the deadline, and ModelError when
    the model fails.
    """
    binding = ctx.slots[slot]
    profile = binding.profile
    model = ctx.models[slot]
    if time.monotonic() >= ctx.deadline:
        raise BudgetStop(f"deadline of {ctx.limits.deadline_s:g}s reached")
    est_in = estimate_tokens(messages)
    est_usd = cost_usd(Usage(est_in, max_tokens), profile.prices)
    reason = ctx.meter.refusal(est_in + max_tokens, est_usd)
    if reason:
        raise BudgetStop(reason)
    if profile.prices is None:
        warn_unpriced(profile.name)

    kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": binding.temperature}
    if schema is not None:
        kwargs["response_format"] = {"type": "json_object", "schema": schema}
    attributes: dict[str, Any] = {
        A.OPERATION: "chat",
        A.PROVIDER: profile.provider,
        A.REQUEST_MODEL: profile.name,
        A.MAX_TOKENS: max_tokens,
        A.TEMPERATURE: binding.temperature,
        A.RUN_ID: ctx.run_id,
        A.NODE: node,
        A.ROLE: binding.role,
        A.SLOT: slot,
    }
    if ctx.capture_content:
        attributes[A.INPUT_MESSAGES] = json.dumps(
            [{"role": m.type, "content": str(m.content)} for m in messages]
        )
    with open_span(ctx.tracer, f"chat {profile.name}", "chat", attributes) as span:
        t0 = time.perf_counter()
        try:
            msg = await model.ainvoke(list(messages), **kwargs)
        except BudgetStop:
            raise
        except Exception as exc:
            raise ModelError(
                f"model {profile.name!r} (slot {slot!r}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        wall_ms = (time.perf_counter() - t0) * 1000
        if not isinstance(msg, AIMessage):
            raise ModelError(f"model {profile.name!r} returned {type(msg).__name__}, expected an AIMessage")
        usage = usage_of(msg)
        cost = cost_usd(usage, profile.prices)
        meta = msg.response_metadata or {}
        ttft = meta.get("ttft_ms")
        compute = meta.get("compute_ms")
        result: dict[str, Any] = {
            A.INPUT_TOKENS: usage.input_tokens,
            A.OUTPUT_TOKENS: usage.output_tokens,
            A.CACHE_READ: usage.cache_read_tokens,
            A.CACHE_WRITE: usage.cache_write_tokens,
        }
        if cost is not None:
            result[A.COST] = cost
        if ttft is not None:
            result[A.TTFT_MS] = float(ttft)
            result[A.TTFC] = float(ttft) / 1000
        if compute is not None:
            result[A.COMPUTE_MS] = float(compute)
        if meta.get("queue_ms") is not None:
            result[A.QUEUE_MS] = float(meta["queue_ms"])
        gen_ms = float(meta.get("generation_ms") or wall_ms)
        if usage.output_tokens and gen_ms > 0:
            result[A.TOKENS_PER_S] = usage.output_tokens / (gen_ms / 1000)
        if meta.get("finish_reason"):
            result[A.FINISH_REASONS] = [str(meta["finish_reason"])]
        span.set_attributes(result)  # one call: the SDK takes its lock once, not per attribute
        if ctx.capture_content:
            span.set_attribute(
                A.OUTPUT_MESSAGES, json.dumps([{"role": "assistant", "content": str(msg.content)}])
            )
    entry = LedgerEntry(
        node=node,
        kind="model",
        name=profile.name,
        role=binding.role,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=cost,
        wall_ms=wall_ms,
        ttft_ms=float(ttft) if ttft is not None else None,
        compute_ms=float(compute) if compute is not None else None,
    )
    ctx.meter.add(entry)
    return msg, entry
