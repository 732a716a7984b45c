"""The built-in providers, registered through the `orchestrator.providers` entry points like any plugin.

`HttpProvider` is also the base for a third-party provider that speaks the OpenAI or Anthropic protocol:
its instances only describe an endpoint; the clients are imported when a chat model is made. Nothing
heavy loads here: `local:` imports llama-cpp only when its chat model is created.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from orchestrator.config import ModelConfig, Settings
from orchestrator.cost.pricing import ZERO, PriceTable
from orchestrator.errors import ConfigError, ManifestError, ModelFileError, UnknownModelError, did_you_mean
from orchestrator.profiles import LOCAL_CONTEXT, Capabilities, ModelProfile, RateLimits, UnknownModelWarning
from orchestrator.providers.modelfiles import LOCAL_MODELS, ensure_model_file
from orchestrator.providers.registry import ModelRequest, Provider

__all__ = ["HttpProvider", "LocalProvider", "PythonProvider"]

_API = Capabilities(tool_calling=True, json_schema=True, streaming_usage=True, parallel_tool_calls=True)
_SELF_HOSTED = Capabilities(tool_calling=True, json_schema=True, streaming_usage=True)
_LOCAL = Capabilities(grammar=True, json_schema=True, prefill=True)


@dataclass(frozen=True)
class HttpProvider(Provider):
    """An endpoint speaking OpenAI chat completions (`protocol="openai"`) or Anthropic Messages.

    Prices and context windows come from the price table, under `table_prefix + model` (e.g. `groq/…`);
    `table_owner` also lists the table's unprefixed keys of that owner (`openai`, `anthropic`).
    A key is required only on the provider's own public endpoint (`default_base_url`).
    `strict_schemas` sends JSON schemas in OpenAI's strict mode (OpenAI's own API).
    """

    protocol: str = "openai"
    capabilities: Capabilities = _API
    default_base_url: str | None = None
    api_key_env: str | None = None
    table_prefix: str = ""
    table_owner: str | None = None
    max_tokens_field: str = "max_tokens"
    strict_schemas: bool = False

    def profile(self, request: ModelRequest) -> ModelProfile:
        """The model's profile from the price table; an unknown model runs with cost null and a warning."""
        url = request.base_url or self.default_base_url
        if url is None:
            raise UnknownModelError(
                f"model {request.name!r}: provider {request.provider!r} needs a base URL; set base_url on "
                "the slot (e.g. 'http://127.0.0.1:8080/v1' for llama.cpp's server) or pass --base-url"
            )
        table, price_as = request.table, request.price_as
        key = self.table_prefix + request.model
        found = request.prices or table.lookup(price_as or key)
        if price_as and found is None and request.prices is None:
            raise UnknownModelError(
                f"price_as={price_as!r} is not in the price table" + did_you_mean(price_as, table.keys())
            )
        if table.lookup(key) is None and request.prices is None and price_as is None:
            warnings.warn(
                f"model {request.model!r} is not in the price table for provider {request.provider!r}; it "
                "runs with cost null. Set price_as= or prices= on its slot to price it"
                + did_you_mean(key, [k for k in table.keys() if k.startswith(self.table_prefix)]),  # noqa: SIM118
                UnknownModelWarning,
                stacklevel=4,  # the caller of resolve_profile
            )
        entry = table.entry(price_as or key) or table.entry(key)
        return ModelProfile(
            request.name,
            request.provider,
            request.model,
            _capabilities(self.capabilities, entry),
            table.context_window(key) or table.context_window(price_as or key),
            found,
            protocol=self.protocol,
            base_url=url,
            api_key_env=request.api_key_env or self.api_key_env,
            key_required=self.default_base_url is not None
            and url == self.default_base_url
            and bool(self.api_key_env),
            rate_limits=RateLimits(_int(entry.get("rpm")), _int(entry.get("tpm")), request.max_concurrency),
        )

    def chat_model(
        self,
        profile: ModelProfile,
        config: ModelConfig,
        settings: Settings,
        *,
        slot: str,
        temperature: float | None,
    ) -> BaseChatModel:
        """Our httpx client for the profile's protocol (a missing key fails here, before any call)."""
        if profile.base_url is None:
            raise ConfigError(f"slot {slot!r}: model {profile.name!r} has no endpoint")
        from orchestrator.providers.http import Endpoint

        if profile.key_required:
            Endpoint(profile.base_url, profile.api_key_env, key_required=True).api_key()  # fail early
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
            "tool_calling": profile.capabilities.tool_calling,
        }
        if (profile.protocol or self.protocol) == "anthropic":
            from orchestrator.providers.anthropic import AnthropicChatModel

            return AnthropicChatModel(prompt_cache=config.cache, **common)
        from orchestrator.providers.openai import OpenAIChatModel

        return OpenAIChatModel(
            json_schema=profile.capabilities.json_schema,
            strict=self.strict_schemas,
            max_tokens_field=self.max_tokens_field,
            **common,
        )

    def known_models(self, table: PriceTable) -> list[str]:
        """The price table's chat models under this provider's key prefix (or owner)."""
        names = []
        for key in table.keys():  # noqa: SIM118 (a PriceTable, not a dict)
            entry = table.entry(key)
            if entry.get("mode") != "chat":
                continue
            if self.table_prefix and key.startswith(self.table_prefix):
                names.append(key.removeprefix(self.table_prefix))
            elif self.table_owner and "/" not in key and entry.get("litellm_provider") == self.table_owner:
                names.append(key)
        return names


class LocalProvider(Provider):
    """GGUF models in process through llama-cpp-python: the pinned local models, or any `.gguf` path."""

    def profile(self, request: ModelRequest) -> ModelProfile:
        """Local models are priced 0 by an explicit entry (unless the slot prices them, or names a model
        of the price table to price them as: `price_as = "gpt-4o-mini"` shows what an API would charge)."""
        priced_as = request.table.lookup(request.price_as) if request.price_as else None
        if request.price_as and priced_as is None:
            raise UnknownModelError(
                f"price_as={request.price_as!r} is not in the price table"
                + did_you_mean(request.price_as, request.table.keys())
            )
        model, prices = request.model, request.prices or priced_as or ZERO
        if model.endswith(".gguf"):
            path = Path(model).expanduser()
            return ModelProfile(
                request.name, request.provider, model, _LOCAL, LOCAL_CONTEXT, prices, file=path
            )
        if model not in LOCAL_MODELS:
            raise UnknownModelError(
                f"unknown model {model!r} for provider 'local'"
                + did_you_mean(model, LOCAL_MODELS)
                + " (or give a path ending in .gguf)"
            )
        return ModelProfile(request.name, request.provider, model, _LOCAL, LOCAL_CONTEXT, prices)

    def chat_model(
        self,
        profile: ModelProfile,
        config: ModelConfig,
        settings: Settings,
        *,
        slot: str,
        temperature: float | None,
    ) -> BaseChatModel:
        """The model file (built and verified on first use), loaded once per process."""
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
            probe_path=str(settings.models_dir / "probe.json"),
            n_ctx=profile.context_window or LOCAL_CONTEXT,
        )


class PythonProvider(Provider):
    """`python:module:attr`: any LangChain chat model object (or a function returning one)."""

    def profile(self, request: ModelRequest) -> ModelProfile:
        """Priced only by the slot's `prices` or `price_as`."""
        found = request.prices or (request.table.lookup(request.price_as) if request.price_as else None)
        return ModelProfile(request.name, request.provider, request.model, Capabilities(), None, found)

    def chat_model(
        self,
        profile: ModelProfile,
        config: ModelConfig,
        settings: Settings,
        *,
        slot: str,
        temperature: float | None,
    ) -> BaseChatModel:
        """Import `module:attr`; call it when it is not already a chat model."""
        ref = profile.model
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


def _say(message: str) -> None:
    """Model-file progress goes to logging (the library never prints; the CLI shows these records)."""
    logging.getLogger("orchestrator.models").info("%s", message)


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _capabilities(default: Capabilities, entry: dict[str, Any]) -> Capabilities:
    """The provider's defaults, refined by what the price table says of this model."""
    if not entry:
        return default

    def flag(key: str, fallback: bool) -> bool:
        value = entry.get(key)
        return bool(value) if isinstance(value, bool) else fallback

    return Capabilities(
        tool_calling=flag("supports_function_calling", default.tool_calling),
        json_schema=flag("supports_response_schema", default.json_schema),
        grammar=default.grammar,
        prefill=flag("supports_assistant_prefill", default.prefill),
        streaming_usage=default.streaming_usage,
        prompt_caching=flag("supports_prompt_caching", default.prompt_caching),
        parallel_tool_calls=flag("supports_parallel_function_calling", default.parallel_tool_calls),
    )


# --- the registered objects (see [project.entry-points."orchestrator.providers"] in pyproject.toml) ---------
local = LocalProvider()
python = PythonProvider()
openai = HttpProvider(
    "openai",
    _API,
    "https://api.openai.com/v1",
    "OPENAI_API_KEY",
    table_owner="openai",
    max_tokens_field="max_completion_tokens",
    strict_schemas=True,
)
anthropic = HttpProvider(
    "anthropic",
    Capabilities(
        tool_calling=True, prefill=True, streaming_usage=True, prompt_caching=True, parallel_tool_calls=True
    ),
    "https://api.anthropic.com",
    "ANTHROPIC_API_KEY",
    table_owner="anthropic",
)
openai_compat = HttpProvider("openai", _SELF_HOSTED)
groq = HttpProvider("openai", _API, "https://api.groq.com/openai/v1", "GROQ_API_KEY", "groq/")
together = HttpProvider("openai", _API, "https://api.together.xyz/v1", "TOGETHER_API_KEY", "together_ai/")
mistral = HttpProvider("openai", _API, "https://api.mistral.ai/v1", "MISTRAL_API_KEY", "mistral/")
ollama = HttpProvider("openai", _SELF_HOSTED, "http://127.0.0.1:11434/v1", table_prefix="ollama/")
vllm = HttpProvider("openai", _SELF_HOSTED, "http://127.0.0.1:8000/v1")
