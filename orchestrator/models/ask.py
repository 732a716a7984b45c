"""One measured model call: the library side of `orch ask` (try a new model; the command scripts use)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from orchestrator.config import ModelConfig, Settings
from orchestrator.cost.billing import bill, total
from orchestrator.cost.pricing import Usage, price_table
from orchestrator.errors import ModelError
from orchestrator.models.binding import resolve_profile
from orchestrator.profiles import ModelProfile
from orchestrator.providers import model_for
from orchestrator.providers.base import HttpChatModel
from orchestrator.providers.http import ProviderError

__all__ = ["AskResult", "aask"]


@dataclass
class AskResult:
    """What one call produced and cost. `usage` is in OTel's convention (input includes cached tokens)."""

    text: str
    model: str
    usage: Usage
    cost_usd: float | None
    ttft_ms: float | None
    duration_ms: float
    attempts: list[dict[str, Any]]
    price_source: str
    served_model: str | None = None
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    structured_output: str | None = None  # the rung structured output was asked on (providers/ladder.py)
    downgraded: list[dict[str, Any]] = field(default_factory=list)  # features the endpoint refused

    def to_dict(self) -> dict[str, Any]:
        """The `orch ask --json` object."""
        return {
            "text": self.text,
            "model": self.model,
            "served_model": self.served_model,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "price_source": self.price_source,
            "ttft_ms": self.ttft_ms,
            "duration_ms": self.duration_ms,
            "attempts": self.attempts,
            "finish_reason": self.finish_reason,
            "tool_calls": self.tool_calls,
            "structured_output": self.structured_output,
            "downgraded": self.downgraded,
        }


def ask_profile(
    name: str, *, settings: Settings, base_url: str | None = None, price_as: str | None = None
) -> ModelProfile:
    """Resolve a model name for a one-off call, with the user's price file if set."""
    return resolve_profile(
        name, price_as=price_as, table=price_table(settings.prices_path), base_url=base_url
    )


async def aask(
    profile: ModelProfile,
    prompt: str,
    *,
    settings: Settings,
    system: str | None = None,
    schema: dict[str, Any] | None = None,
    stream: bool = True,
    max_tokens: int = 1024,
    temperature: float | None = None,
    on_text: Callable[[str], None] | None = None,
    on_restart: Callable[[str], None] | None = None,
) -> AskResult:
    """Call `profile`'s model once with `prompt`; measure and price it.

    Raises ModelError when the call fails; the error's `attempts` hold what was tried (and billed).
    """
    messages: list[BaseMessage] = [SystemMessage(system)] if system else []
    messages.append(HumanMessage(prompt))
    model = model_for(profile, ModelConfig(model=profile.name, stream=stream), settings, "ask", temperature)
    kwargs: dict[str, Any] = {"max_tokens": max_tokens}
    if temperature is not None:
        kwargs["temperature"] = temperature
    if schema is not None:
        kwargs["response_format"] = {"type": "json_object", "schema": schema}
    t0 = time.perf_counter()
    if isinstance(model, HttpChatModel):
        completion = await model.complete(
            messages, stream=stream, on_text=on_text, on_restart=on_restart, **kwargs
        )
        msg = model.to_message(completion)
    else:
        try:
            reply = await model.ainvoke(messages, **kwargs)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"{profile.name}: {type(exc).__name__}: {exc}") from exc
        msg = reply if isinstance(reply, AIMessage) else AIMessage(content=str(reply.content))
        if on_text is not None and msg.content:
            on_text(str(msg.content))
    duration_ms = (time.perf_counter() - t0) * 1000
    meta = msg.response_metadata or {}
    attempts = list(meta.get("attempts") or [])
    charges = bill(
        msg, attempts, model=profile.name, price_of=lambda _name: profile.prices, wall_ms=duration_ms
    )
    usage, cost = total(charges)  # broken attempts were billed too
    return AskResult(
        text=str(msg.content),
        model=profile.name,
        usage=usage,
        cost_usd=cost,
        ttft_ms=meta.get("ttft_ms"),
        duration_ms=duration_ms,
        attempts=attempts,
        price_source=profile.price_source,
        served_model=meta.get("model") or meta.get("model_name"),
        finish_reason=meta.get("finish_reason"),
        tool_calls=[{"name": c["name"], "args": c["args"], "id": c.get("id")} for c in msg.tool_calls],
        structured_output=meta.get("structured_output"),
        downgraded=list(meta.get("downgraded") or []),
    )


def failed_attempts(exc: BaseException) -> list[dict[str, Any]]:
    """The attempts a failed call made, for reporting."""
    return [a.as_dict() for a in exc.attempts] if isinstance(exc, ProviderError) else []
