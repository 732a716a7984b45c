"""Chat-model clients behind slots. Heavy imports (llama-cpp) happen only when a slot needs them."""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

from langchain_core.language_models import BaseChatModel

from orchestrator.config import Settings
from orchestrator.errors import ConfigError, ManifestError, ModelFileError
from orchestrator.modelfiles import LOCAL_MODELS, ensure_model_file, is_verified
from orchestrator.stable import SlotBinding
from orchestrator.tracing import attrs as A

__all__ = ["create_chat_model", "provenance"]


def create_chat_model(binding: SlotBinding, settings: Settings) -> BaseChatModel:
    """The one place a slot binding becomes a chat model."""
    profile = binding.profile
    if profile.provider == "local":
        from orchestrator.providers.local import LocalChatModel

        if profile.file is not None:
            if not profile.file.is_file():
                raise ModelFileError(f"slot {binding.slot!r}: GGUF file {str(profile.file)!r} does not exist")
            path = profile.file
        else:
            path = ensure_model_file(LOCAL_MODELS[profile.model], settings.models_dir, _say)
        return LocalChatModel(model_path=str(path), model_name=profile.name)
    if profile.provider == "python":
        return _python_model(binding)
    raise ConfigError(
        f"slot {binding.slot!r}: provider {profile.provider!r} has no client in this version; bind a "
        "local model, or any LangChain chat model with 'python:module:attr'"
    )


def _say(message: str) -> None:
    import sys

    print(f"[models] {message}", file=sys.stderr, flush=True)


def _python_model(binding: SlotBinding) -> BaseChatModel:
    ref = binding.profile.model
    module_name, _, attr = ref.partition(":")
    try:
        target: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ManifestError(f"slot {binding.slot!r}: cannot load chat model {ref!r}: {exc}") from None
    model = target if isinstance(target, BaseChatModel) else target()
    if not isinstance(model, BaseChatModel):
        raise ManifestError(
            f"slot {binding.slot!r}: {ref!r} is not a LangChain chat model (got {type(model).__name__})"
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
