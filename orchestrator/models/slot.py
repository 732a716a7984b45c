"""`SlotModel`, what `runtime.context.model(slot)` returns: the slot's model as a langchain-core chat model.

Every call takes the orchestrator's own path (`orchestrator.models.calls.call_model`: a budget check against
the worst case, a chat span under the current node's span, usage, cost and timing in the run's ledger), tagged
`TRACED` so that the graph tracer does not count it a second time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.utils import LC_ID_PREFIX
from pydantic import Field

from orchestrator.errors import ConfigError
from orchestrator.models.calls import call_model
from orchestrator.streaming import Pieces, last_chunk
from orchestrator.tracing.attrs import TRACED
from orchestrator.tracing.callbacks import config_node, only_graph_tracer, tracer_of

__all__ = ["SlotModel"]


class SlotModel(BaseChatModel):
    """A slot's model as a langchain-core chat model; every call takes the orchestrator's traced path.

    Use it inside a node: `await runtime.context.model("summarize").ainvoke([...])`. `bind_tools` and
    `with_structured_output` work; the budget is checked before each call.
    """

    slot: str
    context: Any = Field(default=None, repr=False)  # the RunContext; None: the current run's, at call time
    tags: list[str] | None = Field(default_factory=lambda: [TRACED])

    @property
    def _llm_type(self) -> str:
        return "orchestrator-slot"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        """Bind tools in the OpenAI format that the orchestrator's providers take."""
        schemas = [t if isinstance(t, dict) else convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=schemas, **kwargs)

    async def ainvoke(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """The call, without a LangChain run of its own when no one but the graph tracer listens.

        A slot model's call is already traced, budgeted and priced by `call_model`, and the graph tracer
        ignores its (TRACED) run: LangChain's run around it (a callback manager, a run id, two events to
        each handler, the invocation parameters) cost as much as the whole LangChain call inside it. A
        caller's own callbacks, LangSmith tracing, or a config with callbacks take LangChain's path as
        before."""
        manager = only_graph_tracer(config)
        if manager is False:
            return await super().ainvoke(input, config, stop=stop, **kwargs)
        messages = self._convert_input(input).to_messages()
        result = await self._agenerate(messages, stop, manager, **kwargs)
        message = result.generations[0].message
        if message.id is None:  # as LangChain names a run's message
            message.id = f"{LC_ID_PREFIX}-{uuid.uuid4()}"
        return message  # type: ignore[return-value]

    def _ctx(self) -> Any:
        if self.context is not None:
            return self.context
        from langgraph.runtime import get_runtime

        try:
            return get_runtime().context
        except Exception:  # not inside a run
            raise ConfigError(
                f"slot model {self.slot!r} was called outside a run; call it inside a node of a graph "
                "that the orchestrator runs"
            ) from None

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        ctx = self._ctx()
        tracer = tracer_of(run_manager)
        parent = run_manager.parent_run_id if run_manager else None
        path = tracer.path_of(parent) if tracer else None
        node = path[-1] if path else (config_node() or "graph")
        span = tracer.span_of(parent) if tracer else None
        max_tokens = int(kwargs.pop("max_tokens", None) or ctx.limits.max_tokens)
        on_text = kwargs.pop("on_text", None)
        if stop:
            kwargs["stop"] = stop
        msg, _ = await call_model(
            ctx,
            self.slot,
            node,
            messages,
            max_tokens=max_tokens,
            options=kwargs,
            parent=span,
            on_text=on_text,
            node_path=path,
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """The reply's text in pieces as the model writes them, then a last chunk with its usage and tool
        calls. Text voided by a restart (a broken stream, a fallback) can't be taken back from a stream:
        the call then fails rather than yield it twice."""
        pieces = Pieces()

        def on_text(text: str, restart: bool) -> None:
            if restart:
                pieces.restart()
            else:
                pieces.text(text)

        task = asyncio.ensure_future(self._agenerate(messages, stop, run_manager, on_text=on_text, **kwargs))
        broken = f"slot {self.slot!r}: the stream broke after text was delivered"
        async for chunk in pieces.chunks(task, run_manager, broken):
            yield chunk
        yield last_chunk(task.result().generations[0].message, pieces.sent)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """A synchronous call: LangGraph runs a sync node in a worker thread, so the call is handed to the
        run's event loop and waited for. Called on that loop's own thread it would wait for ever: refused."""
        ctx = self._ctx()
        loop = getattr(ctx, "loop", None)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            raise NotImplementedError(
                f"slot model {self.slot!r}: a synchronous call can't be made from the run's event loop; "
                "in an `async def` node, use `await ...ainvoke(...)`"
            )
        manager = _AsyncManagerOf(run_manager)
        future = asyncio.run_coroutine_threadsafe(
            self._agenerate(messages, stop, manager, **kwargs),  # type: ignore[arg-type]
            loop,
        )
        return future.result()


class _AsyncManagerOf:
    """What `_agenerate` reads of a run manager (its handlers and parent), taken from a sync one."""

    def __init__(self, sync: Any) -> None:
        self.handlers = getattr(sync, "handlers", None) or []
        self.inheritable_handlers = getattr(sync, "inheritable_handlers", None) or []
        self.parent_run_id = getattr(sync, "parent_run_id", None)
