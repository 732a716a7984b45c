"""Model profiles: what a model can do (capabilities, context, tool limits), what it costs, and slot bindings.

Types only: `orchestrator.models.binding.resolve_profile` turns a `"provider:model"` name into a profile (its
provider makes it). The role (racehorse / workhorse) belongs to the slot binding, never to the profile.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cost.pricing import Prices

if TYPE_CHECKING:  # annotations only: config imports this module for the capability names
    from orchestrator.config import ModelConfig, Role, SlotConfig

__all__ = [
    "CAPABILITY_NAMES",
    "Capabilities",
    "ModelProfile",
    "RateLimits",
    "SlotBinding",
    "ToolLimits",
    "UnknownModelWarning",
]


@dataclass(frozen=True)
class Capabilities:
    """What a model's endpoint can do; decisions and structured output are chosen from these.

    A slot overrides any of them in the manifest (`capabilities = { tool_calling = false }`).
    """

    tool_calling: bool = False  # native tool calls, and a tool can be forced
    json_schema: bool = False  # a JSON-schema response format
    grammar: bool = False  # grammar-constrained decoding (in-process local models)
    prefill: bool = False  # the reply continues a trailing assistant message
    streaming_usage: bool = False
    prompt_caching: bool = False
    parallel_tool_calls: bool = False  # several tool calls in one reply


CAPABILITY_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Capabilities))


def capability_error(name: str) -> str:
    """The message for a capability name that does not exist, naming the ones that do."""
    close = difflib.get_close_matches(name, CAPABILITY_NAMES, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown capability {name!r}{hint}; the capabilities are: {', '.join(CAPABILITY_NAMES)}"


@dataclass(frozen=True)
class RateLimits:
    """Known limits: requests and tokens per minute (from the price table), concurrent requests (config)."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int = 16


@dataclass(frozen=True)
class ToolLimits:
    """What one request to a model may bind: tools per request, the length of a tool's name, and the size of
    one tool's JSON schema (characters; None: no limit). Past them the controller unloads tools that are
    not in use, binds long names under aliases, and shortens schemas (`decisions.fit_schema`).

    A slot overrides any of them in the manifest (`tool_limits = { max_tools = 32 }`): a self-hosted
    server with a small context wants fewer, smaller tools than the API providers take.
    """

    max_tools: int = 128  # OpenAI's limit on tools per request (with the controller's own 3 included)
    max_name: int = 64  # OpenAI's and Anthropic's limit on a tool name ([A-Za-z0-9_-])
    max_schema_chars: int | None = None

    def tightest(self, other: ToolLimits) -> ToolLimits:
        """The limits both models keep (a slot and its fallbacks)."""
        schema = [n for n in (self.max_schema_chars, other.max_schema_chars) if n is not None]
        return ToolLimits(
            min(self.max_tools, other.max_tools),
            min(self.max_name, other.max_name),
            min(schema) if schema else None,
        )


@dataclass(frozen=True)
class ModelProfile:
    """Everything the orchestrator knows about one model."""

    name: str
    provider: str
    model: str
    capabilities: Capabilities
    context_window: int | None
    prices: Prices | None
    file: Path | None = None  # a GGUF path for `local:` models given by path
    protocol: str | None = None  # "openai" | "anthropic" for API models
    base_url: str | None = None
    api_key_env: str | None = None
    key_required: bool = False  # the provider's public endpoint: a missing key is an error
    rate_limits: RateLimits = field(default_factory=RateLimits)
    tool_limits: ToolLimits = field(default_factory=ToolLimits)

    @property
    def price_source(self) -> str:
        """Where the price came from, or "unknown"."""
        return self.prices.source if self.prices else "unknown (cost recorded as null)"


LOCAL_CONTEXT = 4096  # the KV cache allocated for a local model, unless its slot sets context_window


class UnknownModelWarning(UserWarning):
    """A model the price table does not know: it runs, with cost null."""


@dataclass(frozen=True)
class SlotBinding:
    """A slot (controller, extract, classify, ...) bound to a model in a role, with its fallback chain."""

    slot: str
    profile: ModelProfile
    role: Role
    temperature: float = 0.0
    config: SlotConfig | None = None
    fallbacks: tuple[tuple[ModelProfile, ModelConfig], ...] = ()

    @property
    def chain(self) -> tuple[ModelProfile, ...]:
        """The slot's model, then its fallbacks, in the order they are tried."""
        return (self.profile, *(p for p, _ in self.fallbacks))

    @property
    def tool_limits(self) -> ToolLimits:
        """The tool limits every model of the chain keeps: a fallback may take over any request."""
        out = self.profile.tool_limits
        for profile, _ in self.fallbacks:
            out = out.tightest(profile.tool_limits)
        return out

    def profile_of(self, name: str) -> ModelProfile:
        """The chain member called `name` (the slot's own profile when unknown)."""
        return next((p for p in self.chain if p.name == name), self.profile)
