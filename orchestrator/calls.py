"""The one path every model call takes: budget check, span, usage, cost, ledger entry."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from opentelemetry.trace import Span

from orchestrator.context import BudgetStop, RunContext
from orchestrator.errors import ModelError, PromptTooLongError
from orchestrator.instrument import TRACED
from orchestrator.ledger import LedgerEntry
from orchestrator.pricing import Usage, cost_usd, warn_unpriced
from orchestrator.stable import ModelProfile
from orchestrator.tracing import attrs as A
from orchestrator.tracing.spans import open_span

__all__ = ["call_model", "estimate_tokens"]


def estimate_tokens(messages: Sequence[BaseMessage]) -> int:
    """A deliberately high prompt-token estimate (3 characters a token, plus per-message overhead)."""
    return sum(len(str(m.content)) // 3 + 8 for m in messages)


def check_context(profile: ModelProfile, messages: Sequence[BaseMessage], max_tokens: int, slot: str) -> None:
    """Refuse, before the call, a prompt that can't fit the model's context window with its reply.

    The count is a low estimate (6 characters a token), so only prompts that surely overflow are refused;
    local models also count exactly, before generating.
    """
    window = profile.context_window
    if not window:
        return
    low = sum(len(str(m.content)) for m in messages) // 6
    if low + max_tokens > window:
        raise PromptTooLongError(
            f"slot {slot!r}: the prompt is at least {low} tokens; with max_tokens {max_tokens} it can't fit "
            f"the context window of {profile.name!r} ({window} tokens). Shorten the input, or use a model "
            "with a larger window (a local model's window is the slot's context_window)"
        )


def usage_of(msg: AIMessage) -> Usage:
    """Usage in OTel's convention (input includes cached tokens) from langchain's `usage_metadata`."""
    um = msg.usage_metadata
    if not um:
        return Usage()
    details: dict[str, Any] = dict(um.get("input_token_details") or {})
    out_details: dict[str, Any] = dict(um.get("output_token_details") or {})
    return Usage(
        input_tokens=int(um.get("input_tokens", 0)),
        output_tokens=int(um.get("output_tokens", 0)),
        cache_read_tokens=int(details.get("cache_read", 0) or 0),
        cache_write_tokens=int(details.get("cache_creation", 0) or 0),
        cache_write_1h_tokens=int(details.get("ephemeral_1h_input_tokens", 0) or 0),
        reasoning_tokens=int(out_details.get("reasoning", 0) or 0),
        estimated=bool((msg.response_metadata or {}).get("usage_estimated")),
    )


def _billed(attempts: Sequence[dict[str, Any]]) -> list[tuple[str, Usage]]:
    """Failed attempts that generated tokens (a dropped stream): billed by the provider, so by us."""
    out = []
    for a in attempts:
        u = a.get("usage")
        if a.get("error") and u:
            out.append(
                (
                    str(a["model"]),
                    Usage(
                        input_tokens=u["input_tokens"],
                        output_tokens=u["output_tokens"],
                        cache_read_tokens=u["cache_read_input_tokens"],
                        cache_write_tokens=u["cache_creation_input_tokens"],
                        cache_write_1h_tokens=u.get("cache_creation_1h_input_tokens", 0),
                        estimated=True,
                    ),
                )
            )
    return out


async def call_model(
    ctx: RunContext,
    slot: str,
    node: str,
    messages: Sequence[BaseMessage],
    *,
    max_tokens: int,
    schema: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    parent: Span | None = None,
) -> tuple[AIMessage, list[LedgerEntry]]:
    """Call the model bound to `slot`, after checking the budget against the worst case.

    Returns the reply and the ledger entries it cost: the answering model's, plus one per failed attempt
    that was billed (estimated usage). Raises BudgetStop before the call when it could break the budget or
    the deadline, and ModelError when the model (and its fallbacks) fail; that error carries the billed
    attempts' entries in `ledger_entries`.
    """
    binding = ctx.slots[slot]
    profile = binding.profile
    model = ctx.models[slot]
    if time.monotonic() >= ctx.deadline:
        raise BudgetStop(f"deadline of {ctx.limits.deadline_s:g}s reached")
    est_in = estimate_tokens(messages)
    check_context(profile, messages, max_tokens, slot)
    worst = [cost_usd(Usage(est_in, max_tokens), p.prices) for p in binding.chain]
    est_usd = None if any(w is None for w in worst) else max(w for w in worst if w is not None)
    reason = ctx.meter.refusal(est_in + max_tokens, est_usd)
    if reason:
        raise BudgetStop(reason)
    if profile.prices is None:
        warn_unpriced(profile.name)

    kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": binding.temperature, **(options or {})}
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

    def entry(
        name: str, usage: Usage, cost: float | None, wall_ms: float, ttft: Any, compute: Any
    ) -> LedgerEntry:
        return LedgerEntry(
            node=node,
            kind="model",
            name=name,
            role=binding.role,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost,
            wall_ms=wall_ms,
            ttft_ms=float(ttft) if ttft is not None else None,
            compute_ms=float(compute) if compute is not None else None,
        )

    entries: list[LedgerEntry] = []
    with open_span(ctx.tracer, f"chat {profile.name}", "chat", attributes, parent) as span:
        t0 = time.perf_counter()
        try:
            msg = await model.ainvoke(list(messages), config={"tags": [TRACED]}, **kwargs)
        except BudgetStop:
            raise
        except Exception as exc:
            wall_ms = (time.perf_counter() - t0) * 1000
            billed = _billed([a.as_dict() for a in getattr(exc, "attempts", [])])
            for name, usage in billed:
                entries.append(
                    entry(name, usage, cost_usd(usage, binding.profile_of(name).prices), wall_ms, None, None)
                )
            if billed:
                total = sum((u for _, u in billed), Usage())
                costs = [e["cost_usd"] for e in entries]
                span.set_attributes(
                    {
                        A.INPUT_TOKENS: total.input_tokens,
                        A.OUTPUT_TOKENS: total.output_tokens,
                        A.USAGE_ESTIMATED: True,
                        **({A.COST: sum(c for c in costs if c is not None)} if None not in costs else {}),
                    }
                )
            for e in entries:
                ctx.meter.add(e)
            if isinstance(exc, PromptTooLongError):
                error: ModelError = PromptTooLongError(f"slot {slot!r}: {exc}")
            else:
                error = ModelError(
                    f"model {profile.name!r} (slot {slot!r}) failed: {type(exc).__name__}: {exc}"
                )
            error.ledger_entries = entries  # type: ignore[attr-defined]
            raise error from exc
        wall_ms = (time.perf_counter() - t0) * 1000
        if not isinstance(msg, AIMessage):
            raise ModelError(f"model {profile.name!r} returned {type(msg).__name__}, expected an AIMessage")
        meta = msg.response_metadata or {}
        served = binding.profile_of(str(meta.get("served_by") or profile.name))
        usage = usage_of(msg)
        cost = cost_usd(usage, served.prices)
        ttft = meta.get("ttft_ms")
        compute = meta.get("compute_ms")
        attempts = list(meta.get("attempts") or [])
        for name, extra in _billed(attempts):
            entries.append(
                entry(name, extra, cost_usd(extra, binding.profile_of(name).prices), 0.0, None, None)
            )
        entries.append(entry(served.name, usage, cost, wall_ms, ttft, compute))
        total = sum((Usage(e["input_tokens"], e["output_tokens"]) for e in entries), Usage())
        costs = [e["cost_usd"] for e in entries]
        result: dict[str, Any] = {
            A.INPUT_TOKENS: total.input_tokens,
            A.OUTPUT_TOKENS: total.output_tokens,
            A.CACHE_READ: usage.cache_read_tokens,
            A.CACHE_WRITE: usage.cache_write_tokens,
            A.RESPONSE_MODEL: served.name,
        }
        if usage.cache_write_1h_tokens:
            result[A.CACHE_WRITE_1H] = usage.cache_write_1h_tokens
        if usage.reasoning_tokens:
            result[A.REASONING] = usage.reasoning_tokens
        if usage.estimated or len(entries) > 1:
            result[A.USAGE_ESTIMATED] = usage.estimated or len(entries) > 1
        if None not in costs:
            result[A.COST] = sum(c for c in costs if c is not None)
        if attempts:
            result[A.ATTEMPTS] = len(attempts)
            result[A.RETRY_WAIT_MS] = float(meta.get("retry_wait_ms") or 0.0)
        if ttft is not None:
            result[A.TTFT_MS] = float(ttft)
            result[A.TTFC] = float(ttft) / 1000
        if compute is not None:
            result[A.COMPUTE_MS] = float(compute)
        if meta.get("queue_ms") is not None:
            result[A.QUEUE_MS] = float(meta["queue_ms"])
        if meta.get("grammar_fallbacks") is not None:
            result[A.GRAMMAR_FALLBACKS] = int(meta["grammar_fallbacks"])
        gen_ms = float(meta.get("generation_ms") or meta.get("duration_ms") or wall_ms)
        if usage.output_tokens and gen_ms > 0:
            result[A.TOKENS_PER_S] = usage.output_tokens / (gen_ms / 1000)
        if meta.get("finish_reason"):
            result[A.FINISH_REASONS] = [str(meta["finish_reason"])]
        span.set_attributes(result)  # one call: the SDK takes its lock once, not per attribute
        if ctx.capture_content:
            span.set_attribute(
                A.OUTPUT_MESSAGES, json.dumps([{"role": "assistant", "content": str(msg.content)}])
            )
    for e in entries:
        ctx.meter.add(e)
    return msg, entries
