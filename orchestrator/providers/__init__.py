"""Chat-model clients behind slots, found through one registry of providers.

Every `provider:` prefix is an entry point of the `orchestrator.providers` group (`registry.py`); the
built-ins (`builtin.py`) are registered that way too, in this distribution's pyproject.toml. A third-party
package subclasses `Provider` (or configures an `HttpProvider`) and declares its own entry point;
what it needs is importable from here (`Provider`, `ModelRequest`, `ModelProfile`, `Capabilities`, `Prices`).
Heavy imports (llama-cpp) happen only when a slot needs them.
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING

from orchestrator.config import ModelConfig, Settings, SlotConfig
from orchestrator.cost.pricing import Prices
from orchestrator.profiles import Capabilities, ModelProfile
from orchestrator.providers.builtin import HttpProvider
from orchestrator.providers.modelfiles import LOCAL_MODELS, is_verified
from orchestrator.providers.registry import GROUP, ModelRequest, Provider, get_provider, provider_names
from orchestrator.tracing import attrs as A

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from orchestrator.profiles import SlotBinding

__all__ = [
    "GROUP",
    "Capabilities",
    "HttpProvider",
    "ModelProfile",
    "ModelRequest",
    "Prices",
    "Provider",
    "create_chat_model",
    "get_provider",
    "model_for",
    "provenance",
    "provider_names",
]


def create_chat_model(binding: SlotBinding, settings: Settings) -> BaseChatModel:
    """The one place a slot binding becomes a chat model (a fallback chain when the slot lists fallbacks)."""
    config = binding.config or SlotConfig(model=binding.profile.name)
    primary = model_for(binding.profile, config, settings, binding.slot, binding.temperature)
    if not binding.fallbacks:
        return primary
    from orchestrator.providers.fallback import FallbackChatModel

    members = [primary] + [
        model_for(p, c, settings, binding.slot, binding.temperature) for p, c in binding.fallbacks
    ]
    return FallbackChatModel(
        members=members,
        names=[p.name for p in binding.chain],
        cooldown_after=config.cooldown_after,
        cooldown_s=config.cooldown_s,
    )


def model_for(
    profile: ModelProfile,
    config: ModelConfig,
    settings: Settings,
    slot: str = "ask",
    temperature: float | None = None,
) -> BaseChatModel:
    """A chat model for one resolved profile and its endpoint settings, made by the profile's provider."""
    return get_provider(profile.provider, profile.name).chat_model(
        profile, config, settings, slot=slot, temperature=temperature
    )


def provenance(slots: dict[str, SlotBinding], settings: Settings) -> dict[str, str]:
    """Run-span attributes naming exactly what ran: model file hashes and the llama-cpp version."""
    out: dict[str, str] = {}
    for binding in slots.values():
        p = binding.profile
        if p.provider != "local":
            continue
        spec = LOCAL_MODELS.get(p.model)
        if spec is not None:
            out[A.MODEL_SHA256 + p.name] = (
                spec.sha256 if is_verified(spec, settings.models_dir) else "unverified"
            )
        else:
            out[A.MODEL_SHA256 + p.name] = "unverified (user file)"
        try:
            out[A.LLAMA_CPP_VERSION] = importlib.metadata.version("llama-cpp-python")
        except importlib.metadata.PackageNotFoundError:
            out[A.LLAMA_CPP_VERSION] = "not installed"
    return out
