"""A slot's fallback chain: try each model in order; a model that keeps failing cools down.

Tools and tool choice are bound in the neutral (OpenAI function) form, so they are forwarded unchanged to
whichever member answers: binding survives fallback. Every attempt of every member is kept in the answer's
`response_metadata["attempts"]` (with the estimated usage of broken streams) so the caller can bill them at
each member's own price.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict

from orchestrator.errors import ToolsUnsupportedError
from orchestrator.providers.base import NeutralToolsChatModel
from orchestrator.providers.http import Attempt, ProviderError, model_state
from orchestrator.sync import run_blocking
from orchestrator.tracing.attrs import TRACED

__all__ = ["FallbackChatModel"]


class FallbackChatModel(NeutralToolsChatModel):
    """Members tried in order; `cooldown_after` failed calls in a row bench a member for `cooldown_s`.

    Members in cooldown are tried last (after every healthy one), not never: a chain whose members are all
    cooling still makes its call.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    members: list[BaseChatModel]
    names: list[str]
    cooldown_after: int = 2
    cooldown_s: float = 30.0
    streams_text: ClassVar[bool] = True  # passes on_text to members that take it

    @property
    def takes_deadline(self) -> bool:
        """Every member stops itself at a `deadline` (see `calls.call_model`), so the chain does."""
        return all(getattr(m, "takes_deadline", False) for m in self.members)

    @property
    def _llm_type(self) -> str:
        return "orchestrator-fallback"

    def order(self) -> list[int]:
        """Member indexes in the order they will be tried now."""
        states = [model_state("chain", name) for name in self.names]
        healthy = [i for i, s in enumerate(states) if not s.cooling()]
        return healthy + [i for i, s in enumerate(states) if s.cooling()]

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        attempts: list[dict[str, Any]] = []
        errors: list[str] = []
        refusals: list[ToolsUnsupportedError] = []
        on_text = kwargs.pop("on_text", None)
        on_restart = kwargs.pop("on_restart", None)
        for i in self.order():
            name, member = self.names[i], self.members[i]
            state = model_state("chain", name)
            t0 = time.perf_counter()
            text: dict[str, Any] = {}
            if on_text is not None and getattr(member, "streams_text", False):
                text = {"on_text": on_text, "on_restart": on_restart}
            try:
                # the chain's own run is the traced unit: its members' runs are not counted again
                msg = await member.ainvoke(messages, config={"tags": [TRACED]}, stop=stop, **kwargs, **text)
            except Exception as exc:
                if text and on_restart is not None:
                    on_restart(f"{name} failed; the next model of the chain answers")
                if isinstance(exc, ToolsUnsupportedError):
                    refusals.append(exc)  # a way of asking this member refuses, not a failing member
                else:
                    state.record(False, cooldown_after=self.cooldown_after, cooldown_s=self.cooldown_s)
                if isinstance(exc, ProviderError | ToolsUnsupportedError):
                    attempts += [a.as_dict() for a in exc.attempts]
                else:
                    attempts.append(
                        Attempt(
                            name, None, f"{type(exc).__name__}: {exc}", (time.perf_counter() - t0) * 1000
                        ).as_dict()
                    )
                errors.append(str(exc) if str(exc).startswith(name) else f"{name}: {exc}")
                continue
            state.record(True, cooldown_after=self.cooldown_after, cooldown_s=self.cooldown_s)
            if not isinstance(msg, AIMessage):
                msg = AIMessage(content=str(msg.content))
            meta = dict(msg.response_metadata or {})
            own = meta.get("attempts") or [
                Attempt(name, 200, None, (time.perf_counter() - t0) * 1000).as_dict()
            ]
            meta["attempts"] = attempts + list(own)
            meta["served_by"] = name
            meta["fallbacks"] = len(errors)
            msg.response_metadata = meta
            return ChatResult(generations=[ChatGeneration(message=msg)])
        if len(refusals) == len(self.members):  # the caller must ask another way (e.g. without tools)
            raise ToolsUnsupportedError(
                "no model in the fallback chain takes tools: " + "; ".join(errors),
                feature=refusals[0].feature,
                attempts=[Attempt.from_dict(a) for a in attempts],
            )
        raise ProviderError(
            "every model in the fallback chain failed: " + "; ".join(errors),
            [Attempt.from_dict(a) for a in attempts],
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return run_blocking(lambda: self._agenerate(messages, stop, **kwargs))
