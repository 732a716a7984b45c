"""One path for every cost: what a call used, what it cost, and the ledger entries it makes.

Every caller that pays for a model call goes through `bill`: `calls.call_model` (the agent loop and the
slot models), the graph tracer (models a user calls directly) and `orch ask`. A call is billed for its
reply and for every failed attempt that generated tokens before it broke (its usage is estimated). A tool
call's entry, which records its time at no cost, is made here too (`tool_entry`).

Prompt sizes are estimated in one place, `estimate_prompt`, with three bounds: the budget check uses the
high one (never under-reserve), the context-window check the low one (never refuse a prompt that fits),
and a stream that broke before its usage arrived is billed at the likely one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage

from orchestrator.cost.ledger import LedgerEntry
from orchestrator.cost.pricing import Prices, Usage, cost_usd

__all__ = [
    "MESSAGE_TOKENS",
    "TEMPLATE_TOKENS",
    "TOOLS_TOKENS",
    "Attempt",
    "Charge",
    "PromptEstimate",
    "bill",
    "estimate_prompt",
    "tool_entry",
    "total",
    "usage_of",
]


@dataclass
class Attempt:
    """One HTTP attempt of a call; a failed one that generated tokens carries an estimated `usage`."""

    model: str
    status: int | None
    error: str | None
    duration_ms: float
    wait_ms: float = 0.0
    usage: Usage | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (used in response metadata and `orch ask --json`)."""
        out: dict[str, Any] = {
            "model": self.model,
            "status": self.status,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 3),
            "wait_ms": round(self.wait_ms, 3),
        }
        if self.usage is not None:
            out["usage"] = self.usage.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Attempt:
        """The inverse of `as_dict` (attempts travel in response metadata as plain data)."""
        u = d.get("usage")
        return cls(
            str(d["model"]),
            d.get("status"),
            d.get("error"),
            float(d.get("duration_ms") or 0.0),
            float(d.get("wait_ms") or 0.0),
            Usage.from_dict(u) if u else None,
        )


@dataclass(frozen=True)
class PromptEstimate:
    """Bounds on a prompt's token count, with no tokenizer (any model, no cost).

    `low` counts 6 characters a token and `likely` 4 (English text on common BPE vocabularies) plus a few
    tokens a message for the chat template. `high` is a bound: every token of a byte-level BPE or a
    SentencePiece vocabulary with byte fallback spans at least one byte of UTF-8, so a prompt has at most
    as many tokens as bytes, plus its chat template's tokens (`TEMPLATE_TOKENS` a prompt, for text such
    as Qwen2.5's default system message, and `MESSAGE_TOKENS` a message) and, with tools, the
    instructions a provider adds for them (`TOOLS_TOKENS`: Anthropic documents 346 at most).
    """

    low: int
    likely: int
    high: int


TEMPLATE_TOKENS = 64  # a chat template's own text, at most (Qwen2.5's default system message: 30 tokens)
MESSAGE_TOKENS = 8  # a chat template's role and separator tokens, per message, at most
TOOLS_TOKENS = 512  # a provider's own tool-use instructions, at most


def estimate_prompt(
    messages: Sequence[BaseMessage], tools: Sequence[Mapping[str, Any]] = ()
) -> PromptEstimate:
    """Bound the tokens of `messages` (and of the tool schemas sent with them)."""
    texts = [_sent(m) for m in messages]
    if tools:
        texts.append(json.dumps(list(tools), ensure_ascii=False))
    chars = sum(len(t) for t in texts)
    size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    n = len(messages)
    high = size + TEMPLATE_TOKENS + MESSAGE_TOKENS * n + (TOOLS_TOKENS if tools else 0)
    return PromptEstimate(low=chars // 6, likely=chars // 4 + 4 * n, high=high)


def _sent(message: BaseMessage) -> str:
    """What a message puts in the prompt: its content, its name and the tool calls it carries."""
    text = str(message.content)
    calls = getattr(message, "tool_calls", None)
    if calls:
        text += json.dumps(calls, ensure_ascii=False, default=str)
    return text + (message.name or "")


def usage_of(message: BaseMessage) -> Usage:
    """A reply's usage in OTel's convention (input includes cached tokens), from LangChain's
    `usage_metadata`; `response_metadata["usage_estimated"]` marks counts a provider could only guess."""
    um: Any = getattr(message, "usage_metadata", None)
    if not um:
        return Usage()
    details: Mapping[str, Any] = um.get("input_token_details") or {}
    out_details: Mapping[str, Any] = um.get("output_token_details") or {}
    return Usage(
        input_tokens=int(um.get("input_tokens") or 0),
        output_tokens=int(um.get("output_tokens") or 0),
        cache_read_tokens=int(details.get("cache_read") or 0),
        cache_write_tokens=int(details.get("cache_creation") or 0),
        cache_write_1h_tokens=int(details.get("ephemeral_1h_input_tokens") or 0),
        reasoning_tokens=int(out_details.get("reasoning") or 0),
        estimated=bool((getattr(message, "response_metadata", None) or {}).get("usage_estimated")),
    )


@dataclass(frozen=True)
class Charge:
    """What one model (one answer, or one broken attempt) used and cost."""

    model: str
    usage: Usage
    cost_usd: float | None
    wall_ms: float = 0.0
    ttft_ms: float | None = None
    compute_ms: float | None = None

    def entry(self, node: str, role: str | None, attempt: str | None = None) -> LedgerEntry:
        """This charge as a run ledger entry under `node` (`attempt`: a worker's "repair" or "escalation")."""
        entry = LedgerEntry(
            node=node,
            kind="model",
            name=self.model,
            role=role,
            input_tokens=self.usage.input_tokens,
            output_tokens=self.usage.output_tokens,
            cost_usd=self.cost_usd,
            wall_ms=self.wall_ms,
            ttft_ms=self.ttft_ms,
            compute_ms=self.compute_ms,
        )
        if attempt is not None:
            entry["attempt"] = attempt
        return entry


PriceOf = Callable[[str], Prices | None]


def bill(
    reply: BaseMessage | None,
    attempts: Sequence[Attempt | Mapping[str, Any]],
    *,
    model: str,
    price_of: PriceOf,
    wall_ms: float,
) -> list[Charge]:
    """The charges of one call: one per failed attempt that was billed, then the reply's (if any).

    `model` names the reply's model (a fallback chain names the member that answered); `price_of` prices
    any model of the call by name. With no reply (the call failed), the billed attempts carry the wall time.
    """
    charges = []
    for a in attempts:
        attempt = a if isinstance(a, Attempt) else Attempt.from_dict(a)
        if attempt.error and attempt.usage is not None:
            usage = attempt.usage if attempt.usage.estimated else _estimated(attempt.usage)
            waited = wall_ms if reply is None else 0.0
            charges.append(Charge(attempt.model, usage, cost_usd(usage, price_of(attempt.model)), waited))
    if reply is not None:
        meta = getattr(reply, "response_metadata", None) or {}
        usage = usage_of(reply)
        ttft, compute = meta.get("ttft_ms"), meta.get("compute_ms")
        charges.append(
            Charge(
                model,
                usage,
                cost_usd(usage, price_of(model)),
                wall_ms,
                float(ttft) if ttft is not None else None,
                float(compute) if compute is not None else None,
            )
        )
    return charges


def tool_entry(node: str, name: str, wall_ms: float) -> LedgerEntry:
    """A tool call's ledger entry: its time, at no cost (tools are not priced)."""
    return LedgerEntry(
        node=node,
        kind="tool",
        name=name,
        role=None,
        input_tokens=0,
        output_tokens=0,
        cost_usd=0.0,
        wall_ms=wall_ms,
        ttft_ms=None,
        compute_ms=None,
    )


def _estimated(u: Usage) -> Usage:
    return Usage(
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.cache_write_1h_tokens,
        u.reasoning_tokens,
        estimated=True,
    )


def total(charges: Sequence[Charge]) -> tuple[Usage, float | None]:
    """The summed usage and cost of charges (cost `None` when any is unpriced)."""
    usage = sum((c.usage for c in charges), Usage())
    costs = [c.cost_usd for c in charges]
    return usage, None if None in costs else sum(c for c in costs if c is not None)
