"""In-process GGUF models through llama-cpp-python.

A llama.cpp instance is not safe to call from several tasks at once: every model file is loaded once per
process and shared behind a lock (a FIFO queue of callers); calls run in a worker thread so the event loop
keeps serving other runs. Decoding (prefix reuse, prompt states on disk, lazy grammar) is in `llama_engine`.

A call stops at its `deadline` (`time.monotonic()`), or when the task awaiting it is cancelled: the worker
thread checks between tokens, returns what it generated and frees the model for the next caller.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from orchestrator._version import DIST_NAME
from orchestrator.errors import ConfigError, ModelError, PromptTooLongError
from orchestrator.providers.llama_engine import LlamaEngine, PromptTooLong
from orchestrator.providers.llama_probe import before_llama_loads, extra_buffers_for, load_params

__all__ = ["LocalChatModel", "loaded_instances"]


@dataclass
class _Instance:
    engine: LlamaEngine
    lock: threading.Lock
    load_s: float


_instances: dict[tuple[str, int], _Instance] = {}  # (file, context window)
_registry_lock = threading.Lock()
_load_count: dict[str, int] = {}


@atexit.register
def _close_all() -> None:
    """Free the loaded models before the interpreter tears its modules down (llama-cpp-python's finalizers
    then find its own functions gone and print a traceback at exit)."""
    with _registry_lock:
        _instances.clear()
    gc.collect()  # their finalizers run now, while llama-cpp-python's module is still whole
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):  # its /dev/null handles, else a ResourceWarning at exit
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()


def loaded_instances() -> dict[str, int]:
    """How many times each model file was loaded in this process (should be 1 each)."""
    return dict(_load_count)


def _model_id(path: str) -> str:
    """What identifies a model file's contents for its saved prompt states: name, size and mtime."""
    st = os.stat(path)
    return f"{os.path.basename(path)}|{st.st_size}|{st.st_mtime_ns}"


def _instance(model: LocalChatModel) -> _Instance:
    path, n_ctx = model.model_path, model.n_ctx
    with _registry_lock:
        inst = _instances.get((path, n_ctx))
        if inst is None:
            before_llama_loads()
            try:
                from llama_cpp import Llama
            except ImportError:
                raise ConfigError(
                    "local models need llama-cpp-python: install the 'local' extra "
                    f"(pip install '{DIST_NAME}[local]')"
                ) from None
            # a CPU whose fast path crashes is found by a probe in a child process, once per machine
            extra = extra_buffers_for(path, model.model_name, model.probe_cache(), n_threads=model.n_threads)
            t0 = time.perf_counter()
            with load_params(extra):
                llama = Llama(model_path=path, n_ctx=n_ctx, n_threads=model.n_threads, verbose=False)
            kv_dir = Path(model.kv_dir) if model.kv_dir else None
            engine = LlamaEngine(llama, model_id=_model_id(path), kv_dir=kv_dir)
            inst = _Instance(engine, threading.Lock(), time.perf_counter() - t0)
            _instances[(path, n_ctx)] = inst
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
    kv_dir: str | None = None  # where prompt-prefix states are kept across processes (None: memory only)
    probe_path: str | None = None  # the CPU probe's cache (llama_probe); None: beside the default model files
    streams_text: ClassVar[bool] = True  # takes an on_text callback (see `calls.call_model`)
    takes_deadline: ClassVar[bool] = True  # stops itself at a `deadline` (see `calls.call_model`)

    @property
    def _llm_type(self) -> str:
        return "llama-cpp"

    def preload(self) -> None:
        """Load the model now rather than at its first call.

        llama-cpp-python silences a model's load by pointing the process's stdout and stderr at /dev/null,
        so any thread's output meanwhile is lost (a run's progress lines were). The orchestrator loads every
        slot's model before a run starts, while nothing else is printing.
        """
        _instance(self)

    def probe_cache(self) -> Path:
        """Where the CPU probe's outcome for this machine is kept."""
        if self.probe_path is not None:
            return Path(self.probe_path)
        from orchestrator.config import Settings

        return Settings.resolve(None).models_dir / "probe.json"

    def _call(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any) -> ChatResult:
        inst = _instance(self)
        engine = inst.engine
        grammar = kwargs.get("grammar")
        response_format = kwargs.get("response_format") or {}
        if grammar is None and response_format.get("type") == "json_object":
            schema = response_format.get("schema")
            grammar = engine.grammar_for(schema) if schema else engine.grammar_for({})
        if grammar is not None and not isinstance(grammar, str):
            grammar = str(getattr(grammar, "_grammar", grammar))  # a llama_cpp LlamaGrammar
        deadline: float | None = kwargs.get("deadline")
        halt: threading.Event | None = kwargs.get("halt")

        def halted() -> bool:
            late = deadline is not None and time.monotonic() >= deadline
            return late or (halt is not None and halt.is_set())

        queued = time.perf_counter()
        if not _acquire(inst.lock, halted):  # stopped while waiting for the model: nothing was used
            return _stopped(self.model_name, (time.perf_counter() - queued) * 1000)
        try:
            start = time.perf_counter()
            try:
                done = engine.complete(
                    _to_chat(messages),
                    max_tokens=int(kwargs.get("max_tokens") or 256),
                    temperature=float(kwargs.get("temperature") or 0.0),
                    grammar=grammar,
                    seed=kwargs.get("seed"),
                    on_text=None if stop else kwargs.get("on_text"),  # stop strings cut the text afterwards
                    confidence=bool(kwargs.get("logprobs")),
                    stop=halted if deadline is not None or halt is not None else None,
                )
            except PromptTooLong as exc:
                raise PromptTooLongError(f"{self.model_name}: {exc}") from None
            except Exception as exc:
                raise ModelError(f"{self.model_name}: llama.cpp failed: {type(exc).__name__}: {exc}") from exc
            end = time.perf_counter()
        finally:
            inst.lock.release()
        text = done.text
        if stop:
            cut = [text.index(s) for s in stop if s in text]
            text = text[: min(cut)] if cut else text
        msg = AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": done.prompt_tokens,
                "output_tokens": done.completion_tokens,
                "total_tokens": done.prompt_tokens + done.completion_tokens,
                "input_token_details": {"cache_read": done.cached_tokens},
            },
            response_metadata={
                "model_name": self.model_name,
                "finish_reason": done.finish_reason,
                "ttft_ms": done.ttft_s * 1000 if done.ttft_s is not None else None,
                "compute_ms": (end - start) * 1000,
                "queue_ms": (start - queued) * 1000,
                "generation_ms": done.generation_s * 1000,
                "prompt_eval_ms": done.prompt_eval_s * 1000,
                "grammar_fallbacks": done.grammar_fallbacks,
                **({"margin": done.margin} if kwargs.get("logprobs") else {}),
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
        on_text = kwargs.pop("on_text", None)
        kwargs.pop("on_restart", None)  # a local call never starts over
        if on_text is not None:  # generation runs in a worker thread: hand each piece to this loop
            loop = asyncio.get_running_loop()
            kwargs["on_text"] = lambda text: loop.call_soon_threadsafe(on_text, text)
        halt = threading.Event()
        try:
            return await asyncio.to_thread(self._call, messages, stop, halt=halt, **kwargs)
        except asyncio.CancelledError:
            halt.set()  # the thread stops at its next token and frees the model for the next caller
            raise


def _acquire(lock: threading.Lock, stop: Callable[[], bool]) -> bool:
    """Wait for the model's lock until `stop` says to stop (checked every 50 ms); True once it is held."""
    while not lock.acquire(timeout=0.05):
        if stop():
            return False
    return True


def _stopped(model_name: str, queue_ms: float) -> ChatResult:
    """The reply of a call stopped before the model was free: empty, and nothing used."""
    msg = AIMessage(
        content="",
        usage_metadata={"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        response_metadata={"model_name": model_name, "finish_reason": "deadline", "queue_ms": queue_ms},
    )
    return ChatResult(generations=[ChatGeneration(message=msg)])
