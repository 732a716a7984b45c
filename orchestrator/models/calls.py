"""The one path every model call takes: budget check, span, usage, cost, ledger entry."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.messages import AIMessage, BaseMessage
from opentelemetry.trace import Span

from orchestrator.cost.billing import bill, estimate_prompt, total
from orchestrator.errors import ModelError, PromptTooLongError, ToolsUnsupportedError
from orchestrator.tracing.attrs import TRACED
from orchestrator.tracing.callbacks import node_path_attribute, node_span

if TYPE_CHECKING:  # annotations only: the context makes slot models, which call this module
    from orchestrator.models.context import RunContext
from orchestrator.cost.ledger import BudgetStop, LedgerEntry
from orchestrator.cost.pricing import Prices, Usage, cost_usd, warn_unpriced
from orchestrator.profiles import ModelProfile
from orchestrator.providers.http import Attempt
from orchestrator.tracing import attrs as A
from orchestrator.tracing.spans import open_span

__all__ = ["call_model", "check_context"]

T = TypeVar("T")


def check_context(profile: ModelProfile, low_estimate: int, max_tokens: int, slot: str) -> None:
    """Refuse, before the call, a prompt that can't fit the model's context window with its reply.

    The count is the prompt's low estimate, so only prompts that surely overflow are refused; local models
    also count exactly, before generating.
    """
    window = profile.context_window
    if not window:
        return
    if low_estimate + max_tokens > window:
        raise PromptTooLongError(
            f"slot {slot!r}: the prompt is at least {low_estimate} tokens; with max_tokens {max_tokens} it "
            f"can't fit the context window of {profile.name!r} ({window} tokens). Shorten the input, or use "
            "a model with a larger window (a local model's window is the slot's context_window)"
        )


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
    on_text: Callable[[str, bool], None] | None = None,
    attempt: str | None = None,
    node_path: Sequence[str] | None = None,
) -> tuple[AIMessage, list[LedgerEntry]]:
    """Call the model bound to `slot`, after checking the budget against the worst case.

    Returns the reply and the ledger entries it cost: the answering model's, plus one per failed attempt
    that was billed (estimated usage). Raises BudgetStop before the call when it could break the budget or
    the deadline, and ModelError when the model (and its fallbacks) fail; that error carries the billed
    attempts' entries in `ledger_entries`.

    The run's wall time (`RunContext.stop_time`: the deadline, or a time budget) also bounds a call under
    way. A model that takes a `deadline` (`takes_deadline`: the HTTP clients, the local engine) stops
    itself then and returns what it had (`finish_reason` "deadline"); any other model's call is cancelled
    then. Either way the call is billed for what it used (its prompt, the tokens generated so far), and
    BudgetStop follows.

    The reply's text goes, as it arrives, to `on_text(text, restart)` and to the run's text sink: a model
    that streams delivers it in pieces, any other model in one piece when it has answered.

    `attempt` marks the entries of a worker's "repair" or "escalation" call, which the ledger counts.
    """
    binding = ctx.slots[slot]
    profile = binding.profile
    if parent is None:
        parent = node_span()  # a plain node's span (the graph tracer's); else the current span
    model = ctx.models[slot]
    stop_at, why = ctx.stop_time()
    if time.monotonic() >= stop_at:
        raise BudgetStop(why)
    estimate = estimate_prompt(messages, (options or {}).get("tools") or ())
    check_context(profile, estimate.low, max_tokens, slot)
    est_in = estimate.high
    worst = [cost_usd(Usage(est_in, max_tokens), p.prices) for p in binding.chain]
    est_usd = None if any(w is None for w in worst) else max(w for w in worst if w is not None)
    # the worst case stays reserved while the call runs: concurrent calls can't jointly overspend
    with ctx.meter.hold(est_in + max_tokens, est_usd) as reason:
        if reason:
            raise BudgetStop(reason)
        if profile.prices is None:
            warn_unpriced(profile.name)

        kwargs: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": binding.temperature,
            **(options or {}),
        }
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        text = _TextOut(on_text, ctx.text_sink, node, slot)
        if text.wanted and getattr(model, "streams_text", False):
            kwargs["on_text"], kwargs["on_restart"] = text.piece, text.restart
        stops_itself = bool(getattr(model, "takes_deadline", False))
        if stops_itself:
            kwargs["deadline"] = stop_at
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
        path = node_path_attribute(node_path)  # a subgraph's node: the nodes around it
        if path is not None:
            attributes[A.NODE_PATH] = path
        if ctx.capture_content:
            attributes[A.INPUT_MESSAGES] = json.dumps(
                [{"role": m.type, "content": str(m.content)} for m in messages]
            )

        def price_of(name: str) -> Prices | None:
            return binding.profile_of(name).prices

        entries: list[LedgerEntry] = []
        with open_span(ctx.tracer, f"chat {profile.name}", "chat", attributes, parent) as span:
            t0 = time.perf_counter()

            def charge_failed(attempts: Sequence[Attempt | dict[str, Any]]) -> list[LedgerEntry]:
                wall_ms = (time.perf_counter() - t0) * 1000
                charges = bill(None, attempts, model=profile.name, price_of=price_of, wall_ms=wall_ms)
                billed = [c.entry(node, binding.role, attempt) for c in charges]
                if charges:
                    used, cost = total(charges)
                    span.set_attributes(
                        {
                            A.INPUT_TOKENS: used.input_tokens,
                            A.OUTPUT_TOKENS: used.output_tokens,
                            A.USAGE_ESTIMATED: True,
                            **({A.COST: cost} if cost is not None else {}),
                        }
                    )
                for e in billed:
                    ctx.meter.add(e)
                return billed

            reply: BaseMessage | None = None
            try:
                reply = await _until(
                    model.ainvoke(list(messages), config={"tags": [TRACED]}, **kwargs),
                    None if stops_itself else stop_at,
                )
            except BudgetStop:
                raise
            except _CutShort:  # cancelled at the stop time: billed for its prompt and the text it sent
                usage = Usage(estimate.likely, (text.chars + 3) // 4, estimated=True)
                wall_ms = (time.perf_counter() - t0) * 1000
                charge_failed([Attempt(profile.name, None, why, wall_ms, usage=usage)])
                span.set_attributes({A.FINISH_REASONS: ["deadline"], A.STOP_REASON: why})
            except Exception as exc:
                entries = charge_failed(getattr(exc, "attempts", []))
                if isinstance(exc, PromptTooLongError):
                    error: ModelError = PromptTooLongError(f"slot {slot!r}: {exc}")
                elif isinstance(exc, ToolsUnsupportedError):  # kept as itself: the caller changes strategy
                    error = ToolsUnsupportedError(
                        f"slot {slot!r}: {exc}", feature=exc.feature, attempts=exc.attempts
                    )
                else:
                    error = ModelError(
                        f"model {profile.name!r} (slot {slot!r}) failed: {type(exc).__name__}: {exc}"
                    )
                error.ledger_entries = entries  # type: ignore[attr-defined]
                raise error from exc
            if reply is not None:  # else it was cut short: the span ends as cut, not as failed
                wall_ms = (time.perf_counter() - t0) * 1000
                if not isinstance(reply, AIMessage):
                    raise ModelError(
                        f"model {profile.name!r} returned {type(reply).__name__}, expected an AIMessage"
                    )
                msg = reply
                meta = msg.response_metadata or {}
                served = binding.profile_of(str(meta.get("served_by") or profile.name))
                attempts = list(meta.get("attempts") or [])
                charges = bill(msg, attempts, model=served.name, price_of=price_of, wall_ms=wall_ms)
                entries = [c.entry(node, binding.role, attempt) for c in charges]
                usage = charges[-1].usage
                used, cost = total(charges)
                ttft = meta.get("ttft_ms")
                compute = meta.get("compute_ms")
                result: dict[str, Any] = {
                    A.INPUT_TOKENS: used.input_tokens,
                    A.OUTPUT_TOKENS: used.output_tokens,
                    A.CACHE_READ: usage.cache_read_tokens,
                    A.CACHE_WRITE: usage.cache_write_tokens,
                    A.RESPONSE_MODEL: served.name,
                }
                if usage.cache_write_1h_tokens:
                    result[A.CACHE_WRITE_1H] = usage.cache_write_1h_tokens
                if usage.reasoning_tokens:
                    result[A.REASONING] = usage.reasoning_tokens
                if used.estimated:
                    result[A.USAGE_ESTIMATED] = True
                if cost is not None:
                    result[A.COST] = cost
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
                if meta.get("downgraded"):  # the endpoint refused a feature: the rung it went down to
                    result[A.DOWNGRADED] = json.dumps(meta["downgraded"])
                if meta.get("structured_output"):
                    result[A.STRUCTURED_OUTPUT] = str(meta["structured_output"])
                if meta.get("finish_reason") == "deadline":  # it stopped itself at the stop time
                    result[A.STOP_REASON] = why
                span.set_attributes(result)  # one call: the SDK takes its lock once, not per attribute
                if ctx.capture_content:
                    span.set_attribute(
                        A.OUTPUT_MESSAGES, json.dumps([{"role": "assistant", "content": str(msg.content)}])
                    )
        for e in entries:
            ctx.meter.add(e)
        if reply is None or msg.response_metadata.get("finish_reason") == "deadline":
            text.restart()  # what it had at the stop time is billed, not used
            raise BudgetStop(why)
        if text.wanted and not text.sent and msg.content:
            text.piece(str(msg.content))  # a model that does not stream: its text in one piece
        return msg, entries


class _CutShort(Exception):
    """A model call cancelled at the run's stop time."""


async def _until(call: Awaitable[T], at: float | None) -> T:
    """Await `call`, cancelling it at `at` (`time.monotonic()`; None: never) with `_CutShort`."""
    if at is None:
        return await call
    loop = asyncio.get_running_loop()
    scope = asyncio.timeout_at(loop.time() + (at - time.monotonic()))  # the loop's clock may differ
    try:
        async with scope:
            return await call
    except TimeoutError:
        if scope.expired():
            raise _CutShort from None
        raise


class _TextOut:
    """A call's text, sent to the caller's callback and to the run's sink."""

    __slots__ = ("callback", "chars", "node", "sent", "sink", "slot")

    def __init__(self, callback: Callable[[str, bool], None] | None, sink: Any, node: str, slot: str) -> None:
        self.callback, self.sink, self.node, self.slot = callback, sink, node, slot
        self.sent = False
        self.chars = 0  # of text received, to estimate the usage of a call cut short

    @property
    def wanted(self) -> bool:
        return self.callback is not None or self.sink is not None

    def piece(self, text: str) -> None:
        self.sent = True
        self.chars += len(text)
        if self.callback is not None:
            self.callback(text, False)
        if self.sink is not None:
            self.sink(self.node, self.slot, text)

    def restart(self, reason: str = "") -> None:
        if not self.sent:
            return
        self.sent = False
        if self.callback is not None:
            self.callback("", True)
        if self.sink is not None:
            self.sink(self.node, self.slot, "", restart=True)
