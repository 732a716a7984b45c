"""Test helpers for users' own graphs: a scripted chat model that replays fixed replies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

__all__ = ["ScriptedChatModel"]

Reply = str | Callable[[Sequence[BaseMessage]], str]


def _is_final_prompt(messages: Sequence[BaseMessage]) -> bool:
    from orchestrator.controller import FINAL_PROMPT

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

    def _result(self, messages: list[BaseMessage], text: str, elapsed: float) -> ChatResult:
        prompt_tokens = sum(len(str(m.content).split()) for m in messages)
        out_tokens = max(len(text.split()), 1)
        msg = AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": prompt_tokens,
                "output_tokens": out_tokens,
                "total_tokens": prompt_tokens + out_tokens,
            },
            response_metadata={"model_name": self.name_, "finish_reason": "stop"},
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
        return self._result(messages, self._next(messages, None), time.perf_counter() - t0)

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
        return self._result(messages, self._next(messages, None), time.perf_counter() - t0)
