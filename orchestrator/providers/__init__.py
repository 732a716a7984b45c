"""Chat-model clients behind slots. Heavy imports (llama-cpp) happen only when a slot needs them."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from typing import Any

from langchain_core.language_models import BaseChatModel

from orchestrator.config import ModelConfig, Settings, SlotConfig
from orchestrator.errors import ConfigError, ManifestError, ModelFileError
from orchestrator.modelfiles import LOCAL_MODELS, ensure_model_file, is_verified
from orchestrator.providers.http import Endpoint
from orchestrator.stable import LOCAL_CONTEXT, ModelProfile, SlotBinding
from orchestrator.tracing import attrs as A

__all__ = ["create_chat_model", "model_for", "provenance"]


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
    """A chat model for one resolved profile and its endpoint settings."""
    if profile.provider == "local":
        from orchestrator.providers.local import LocalChatModel

        if profile.file is not None:
            if not profile.file.is_file():
                raise ModelFileError(f"slot {slot!r}: GGUF file {str(profile.file)!r} does not exist")
            path = profile.file
        else:
            path = ensure_model_file(LOCAL_MODELS[profile.model], settings.models_dir, _say)
        return LocalChatModel(
            model_path=str(path),
            model_name=profile.name,
            kv_dir=str(settings.models_dir / "kv"),
            n_ctx=profile.context_window or LOCAL_CONTEXT,
        )
    if profile.provider == "python":
        return _python_model(slot, profile.model)
    if profile.base_url is None or profile.protocol is None:
        raise ConfigError(f"slot {slot!r}: model {profile.name!r} has no endpoint")
    if profile.key_required:
        Endpoint(profile.base_url, profile.api_key_env, key_required=True).api_key()  # fail early, clearly
    common: dict[str, Any] = {
        "model": profile.model,
        "model_name": profile.name,
        "base_url": profile.base_url,
        "api_key_env": profile.api_key_env,
        "key_required": profile.key_required,
        "headers": dict(config.headers),
        "use_streaming": config.stream,
        "temperature": temperature,
        "read_timeout_s": config.timeout_s,
        "max_retries": config.max_retries,
        "max_concurrency": config.max_concurrency,
    }
    if profile.protocol == "anthropic":
        from orchestrator.providers.anthropic import AnthropicChatModel

        return AnthropicChatModel(prompt_cache=config.cache, **common)
    from orchestrator.providers.openai import OpenAIChatModel

    return OpenAIChatModel(
        json_schema=profile.capabilities.json_schema,
        max_tokens_field="max_completion_tokens" if profile.provider == "openai" else "max_tokens",
        **common,
    )


def _say(message: str) -> None:
    """Model-file progress goes to logging (the library never prints; the CLI shows these records)."""
    logging.getLogger("orchestrator.models").info("%s", message)


def _python_model(slot: str, ref: str) -> BaseChatModel:
    module_name, _, attr = ref.partition(":")
    try:
        target: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ManifestError(f"slot {slot!r}: cannot load chat model {ref!r}: {exc}") from None
    model = target if isinstance(target, BaseChatModel) else target()
    if not isinstance(model, BaseChatModel):
        raise ManifestError(
            f"slot {slot!r}: {ref!r} is not a LangChain chat model (got {type(model).__name__})"
        )
    return model


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
