"""Test helpers for users' own graphs: a scripted chat model that replays fixed replies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

from orchestrator.config import Settings
from orchestrator.providers.modelfiles import LOCAL_MODELS

__all__ = ["ScriptedChatModel", "serve_llama"]

Reply = str | Callable[[Sequence[BaseMessage]], str]


def _is_final_prompt(messages: Sequence[BaseMessage]) -> bool:
    from orchestrator.agent.controller import FINAL_PROMPT

    return bool(messages) and str(messages[0].content) == FINAL_PROMPT


class ScriptedChatModel(BaseChatModel):
    """Replays `replies`; with `by_turn=True` it picks reply i where i = model turns in the prompt.

    A model turn is an assistant message a model wrote: worked examples (`response_metadata["example"]`)
    and steps the controller's plan fixed (`response_metadata["decided_by"] == "plan"`) do not count.
    The agent controller asks for its final answer in a prompt of its own; with `by_turn`, that prompt
    always gets the last reply.
    `by_turn` makes the script a function of the conversation, so a run resumed in another process gets
    the reply it would have got. Usage is counted in whitespace tokens so costs are predictable.

    Example:
        >>> m = ScriptedChatModel(replies=['{"action": "final", "answer": "4"}'])
        >>> m.invoke("2+2?").content
        '{"action": "final", "answer": "4"}'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    replies: list[Reply]
    by_turn: bool = False
    delay_s: float = 0.0
    log_path: str | None = None
    name_: str = "scripted"
    _cursor: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _next(self, messages: Sequence[BaseMessage], worker_key: str | None) -> str:
        if self.by_turn and _is_final_prompt(messages):
            index = len(self.replies) - 1
        elif self.by_turn:
            index = sum(
                1
                for m in messages
                if isinstance(m, AIMessage)
                and not m.response_metadata.get("example")
                and m.response_metadata.get("decided_by") != "plan"
            )
        else:
            index, self._cursor = self._cursor, self._cursor + 1
        if index >= len(self.replies):
            raise IndexError(
                f"scripted model ran out of replies at call {index + 1} (has {len(self.replies)})"
            )
        reply = self.replies[index]
        return reply(messages) if callable(reply) else reply

    def _result(
        self, messages: list[BaseMessage], text: str, elapsed: float, max_tokens: int | None = None
    ) -> ChatResult:
        prompt_tokens = sum(len(str(m.content).split()) for m in messages)
        finish = "stop"
        if max_tokens is not None and len(text.split()) > max_tokens:  # a word a token: cut as a model is
            text, finish = " ".join(text.split()[:max_tokens]), "length"
        out_tokens = max(len(text.split()), 1)
        msg = AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": prompt_tokens,
                "output_tokens": out_tokens,
                "total_tokens": prompt_tokens + out_tokens,
            },
            response_metadata={"model_name": self.name_, "finish_reason": finish},
        )
        if self.log_path:
            with Path(self.log_path).open("a", encoding="utf-8") as fh:
                fh.write(text.replace("\n", " ") + "\n")
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        t0 = time.perf_counter()
        if self.delay_s:
            time.sleep(self.delay_s)
        text = self._next(messages, None)
        return self._result(messages, text, time.perf_counter() - t0, kwargs.get("max_tokens"))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        t0 = time.perf_counter()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = self._next(messages, None)
        return self._result(messages, text, time.perf_counter() - t0, kwargs.get("max_tokens"))


@contextlib.contextmanager
def serve_llama(model: str, n_ctx: int = 4096, timeout_s: float = 180.0) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server (the `server` extra), started through
    `orchestrator.providers.llama_server` (with the CPU probe's settings), with a local model
    (`qwen2.5-1.5b`, `qwen2.5-0.5b`) on a free loopback port; yields its API root
    (`http://127.0.0.1:PORT/v1`) for a slot's `base_url`, and stops the server after."""
    path = LOCAL_MODELS[model].path(Settings.resolve().models_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "orchestrator.providers.llama_server", "--model", str(path)]
    cmd += ["--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(os.cpu_count() or 2)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/models", timeout=2.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        if proc.poll() is None:
            proc.kill()
        log.unlink(missing_ok=True)
