"""In-process GGUF models through llama-cpp-python.

A llama.cpp instance is not safe to call from several tasks at once: every model file is loaded once per
process and shared behind a lock (a FIFO queue of callers); calls run in a worker thread so the event loop
keeps serving other runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from orchestrator.errors import ConfigError, ModelError

__all__ = ["LocalChatModel", "loaded_instances"]


@dataclass
class _Instance:
    llama: Any
    lock: threading.Lock
    load_s: float


_instances: dict[str, _Instance] = {}
_registry_lock = threading.Lock()
_load_count: dict[str, int] = {}


def loaded_instances() -> dict[str, int]:
    """How many times each model file was loaded in this process (should be 1 each)."""
    return dict(_load_count)


def _instance(path: str, n_ctx: int, n_threads: int) -> _Instance:
    with _registry_lock:
        inst = _instances.get(path)
        if inst is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise ConfigError(
                    "local models need llama-cpp-python: install the 'local' extra "
                    "(pip install 'orchestrator[local]')"
                ) from None
            t0 = time.perf_counter()
            llama = Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, verbose=False)
            inst = _Instance(llama, threading.Lock(), time.perf_counter() - t0)
            _instances[path] = inst
            _load_count[path] = _load_count.get(path, 0) + 1
        return inst


def _to_chat(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    roles = {"system": "system", "human": "user", "ai": "assistant", "tool": "user"}
    return [{"role": roles.get(m.type, "user"), "content": str(m.content)} for m in messages]


class LocalChatModel(BaseChatModel):
    """A GGUF model run in process. Reports TTFT, compute and queue time in `response_metadata`.

    Example:
        >>> m = LocalChatModel(model_path="qwen.gguf", model_name="local:qwen2.5-0.5b")  # doctest: +SKIP
        >>> m.invoke("Say hi", max_tokens=8).usage_metadata["output_tokens"] <= 8      # doctest: +SKIP
        True
    """

    model_path: str
    model_name: str
    n_ctx: int = 4096
    n_threads: int = 2

    @property
    def _llm_type(self) -> str:
        return "llama-cpp"

    def _call(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any) -> ChatResult:
        inst = _instance(self.model_path, self.n_ctx, self.n_threads)
        queued = time.perf_counter()
        with inst.lock:
            start = time.perf_counter()
            first: list[float] = []

            def mark_first(_ids: Any, scores: Any) -> Any:
                if not first:
                    first.append(time.perf_counter())
                return scores

            params: dict[str, Any] = {
                "max_tokens": int(kwargs.get("max_tokens") or 256),
                "temperature": float(kwargs.get("temperature", 0.0)),
                "logits_processor": [mark_first],
            }
            if stop:
                params["stop"] = stop
            if kwargs.get("response_format"):
                params["response_format"] = kwargs["response_format"]
            if kwargs.get("grammar") is not None:
                params["grammar"] = kwargs["grammar"]
            try:
                out = inst.llama.create_chat_completion(messages=_to_chat(messages), **params)
            except Exception as exc:
                raise ModelError(f"{self.model_name}: llama.cpp failed: {type(exc).__name__}: {exc}") from exc
            end = time.perf_counter()
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        text = choice["message"].get("content") or ""
        ttft_ms = (first[0] - start) * 1000 if first else None
        msg = AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": int(usage.get("prompt_tokens", 0)),
                "output_tokens": int(usage.get("completion_tokens", 0)),
                "total_tokens": int(usage.get("total_tokens", 0)),
            },
            response_metadata={
                "model_name": self.model_name,
                "finish_reason": choice.get("finish_reason"),
                "ttft_ms": ttft_ms,
                "compute_ms": (end - start) * 1000,
                "queue_ms": (start - queued) * 1000,
                "generation_ms": (end - first[0]) * 1000 if first else None,
            },
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._call(messages, stop, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await asyncio.to_thread(self._call, messages, stop, **kwargs)
