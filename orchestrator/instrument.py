"""Tracing and pricing for any LangGraph graph, with nothing for its author to declare.

Two pieces:

- `GraphTracer`, a LangChain callback handler attached to every run. LangGraph reports each node's
  execution, each chat-model call and each tool call to it, so it opens a node span for every node of any
  graph (subgraphs and prebuilt agents included), and a chat or tool span, with a ledger entry, for calls
  that nothing else instruments: a model the user built and calls inside a node, a `ToolNode`'s tools.
- `SlotModel`, what `runtime.context.model(slot)` returns: the slot's model as a langchain-core chat
  model whose every call takes the orchestrator's own path (`calls.call_model`: budget check against the
  worst case, a chat span under the current node's span, usage, cost and timing in the run's ledger).

Calls made by that path are tagged `TRACED` so that the handler does not count them a second time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from pydantic import Field

from orchestrator.billing import Charge, usage_of
from orchestrator.ledger import BudgetMeter, LedgerEntry
from orchestrator.pricing import PriceTable, Usage, cost_usd
from orchestrator.streaming import Pieces, last_chunk
from orchestrator.toolproc import RUNNER_TAG
from orchestrator.tracing import attrs as A

__all__ = ["TRACED", "GraphTracer", "SlotModel"]

TRACED = "orch:traced"  # a run tagged so is traced by the orchestrator's own path
_CONTROL_FLOW = {"GraphInterrupt", "GraphBubbleUp", "ParentCommand", "NodeInterrupt"}


class _Open:
    __slots__ = ("first_token", "kind", "name", "node", "span", "t0")

    def __init__(self, kind: str, node: str | None, span: Span, name: str) -> None:
        self.kind = kind
        self.node = node
        self.span = span
        self.t0 = time.perf_counter()
        self.first_token: float | None = None
        self.name = name


class GraphTracer(BaseCallbackHandler):
    """One per run: spans for every node, and for chat and tool calls no other path traced."""

    run_inline = True  # called in the node's own task: span parents and timings stay exact

    def __init__(
        self,
        *,
        run_id: str,
        tracer: trace.Tracer,
        root: Span,
        meter: BudgetMeter,
        prices: PriceTable,
        capture_content: bool = False,
        text_sink: Any = None,
    ) -> None:
        self.run_id = run_id
        self.text_sink = text_sink  # a `context.TextSink`: the text of the models it traces, as it arrives
        self.tracer = tracer
        self.root = root
        self.meter = meter
        self.prices = prices
        self.capture_content = capture_content
        self._parents: dict[UUID, UUID | None] = {}
        self._open: dict[UUID, _Open] = {}
        self._nodes: dict[UUID, tuple[str, ...]] = {}  # run id -> node path, for every run inside a node
        self._tasks: set[str] = set()  # node executions seen (a nested run of the same name is not one)
        self._traced: set[UUID] = set()  # model and tool runs the orchestrator's own path traces
        self.node_seconds: dict[str, float] = {}  # the last finished execution of each node
        self.failed_node: str | None = None  # the node where an error was first raised

    # --- where a run sits ------------------------------------------------------------------------------
    def _parent_span(self, parent_run_id: UUID | None) -> Span:
        seen = parent_run_id
        while seen is not None:
            found = self._open.get(seen)
            if found is not None:
                return found.span
            seen = self._parents.get(seen)
        return self.root

    def _within_traced(self, run_id: UUID | None) -> bool:
        seen = run_id
        while seen is not None:
            if seen in self._traced:
                return True
            seen = self._parents.get(seen)
        return False

    def node_of(self, run_id: UUID | None) -> str | None:
        """The graph node a LangChain run (or its nearest ancestor) belongs to."""
        path = self.path_of(run_id)
        return path[-1] if path else None

    def path_of(self, run_id: UUID | None) -> tuple[str, ...] | None:
        """The same node as its path: a subgraph's node after the nodes around it (outermost first)."""
        seen = run_id
        while seen is not None:
            if seen in self._nodes:
                return self._nodes[seen]
            seen = self._parents.get(seen)
        return None

    def span_of(self, run_id: UUID | None) -> Span:
        """The innermost open span around a LangChain run (the run span if none)."""
        return self._parent_span(run_id)

    def open_span_of(self, run_id: UUID | None) -> Span | None:
        """The innermost span this tracer opened around a LangChain run, or None."""
        seen = run_id
        while seen is not None:
            found = self._open.get(seen)
            if found is not None:
                return found.span
            seen = self._parents.get(seen)
        return None

    def _start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        kind: str,
        name: str,
        node: tuple[str, ...] | None,
        attributes: dict[str, Any],
    ) -> None:
        parent = self._parent_span(parent_run_id)
        path = node_path_attribute(node)
        innermost = node[-1] if node else None
        span = self.tracer.start_span(
            name,
            context=trace.set_span_in_context(parent),
            attributes={
                A.KIND: kind,
                A.RUN_ID: self.run_id,
                **({A.NODE: innermost} if innermost else {}),
                **({A.NODE_PATH: path} if path else {}),
                **attributes,
            },
        )
        self._open[run_id] = _Open(kind, innermost, span, name)

    def _end(self, run_id: UUID, error: BaseException | None = None) -> _Open | None:
        done = self._open.pop(run_id, None)
        if done is None:
            return None
        if error is not None and type(error).__name__ not in _CONTROL_FLOW:
            done.span.record_exception(error)
            done.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))
            done.span.set_attribute(A.ERROR_TYPE, type(error).__qualname__)
        done.span.end()
        return done

    # --- nodes -----------------------------------------------------------------------------------------
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._parents[run_id] = parent_run_id
        meta = metadata or {}
        node = meta.get("langgraph_node")
        if node is None or kwargs.get("name") != node or _task_key(meta) in self._tasks:
            inherited = self.path_of(parent_run_id)
            if inherited is not None:
                self._nodes[run_id] = inherited
            return
        self._nodes[run_id] = _node_path(meta, str(node))
        self._tasks.add(_task_key(meta))
        if meta.get("orch_traced"):
            return  # the bundled agent's nodes open their own spans
        step = meta.get("langgraph_step")
        self._start(
            run_id,
            parent_run_id,
            "node",
            str(node),
            self._nodes[run_id],
            {"orchestrator.step": step} if step else {},
        )

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        done = self._end(run_id)
        if done is not None and done.kind == "node" and done.node:
            self.node_seconds[done.node] = time.perf_counter() - done.t0

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if self.failed_node is None and type(error).__name__ not in _CONTROL_FLOW and run_id in self._nodes:
            self.failed_node = self._nodes[run_id][-1]  # the innermost node the error passed through first
        done = self._end(run_id, error)
        if done is not None and done.kind == "node" and done.node:
            self.node_seconds[done.node] = time.perf_counter() - done.t0

    # --- chat models the user calls directly -----------------------------------------------------------
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._parents[run_id] = parent_run_id
        if TRACED in (tags or []) or self._within_traced(parent_run_id):
            self._traced.add(run_id)
            return
        meta = metadata or {}
        params = kwargs.get("invocation_params") or {}
        model = str(meta.get("ls_model_name") or params.get("model") or params.get("model_name") or "unknown")
        provider = str(meta.get("ls_provider") or params.get("_type") or "unknown")
        attributes: dict[str, Any] = {A.OPERATION: "chat", A.PROVIDER: provider, A.REQUEST_MODEL: model}
        if self.capture_content and messages:
            attributes[A.INPUT_MESSAGES] = json.dumps(
                [{"role": m.type, "content": str(m.content)} for m in messages[0]]
            )
        self._start(run_id, parent_run_id, "chat", f"chat {model}", self.path_of(parent_run_id), attributes)
        self._open[run_id].name = f"{provider}/{model}"

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        found = self._open.get(run_id)
        if found is None:
            return
        if found.first_token is None:
            found.first_token = time.perf_counter()
        if self.text_sink is not None and isinstance(token, str) and token:
            self.text_sink(found.node or "graph", found.name.partition("/")[2], token)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        found = self._open.get(run_id)
        if found is None or found.kind != "chat":
            return
        usage = _usage(response)
        provider, _, model = found.name.partition("/")
        prices = self.prices.lookup(model) or self.prices.lookup(f"{provider}/{model}")
        cost = cost_usd(usage, prices) if prices else None
        wall_ms = (time.perf_counter() - found.t0) * 1000
        ttft = (found.first_token - found.t0) * 1000 if found.first_token else None
        found.span.set_attributes(
            {
                A.INPUT_TOKENS: usage.input_tokens,
                A.OUTPUT_TOKENS: usage.output_tokens,
                A.CACHE_READ: usage.cache_read_tokens,
                A.RESPONSE_MODEL: model,
                **({A.COST: cost} if cost is not None else {}),
                **({A.TTFT_MS: ttft} if ttft is not None else {}),
            }
        )
        self._end(run_id)
        self.meter.add(Charge(model, usage, cost, wall_ms, ttft).entry(found.node or "graph", None))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    # --- tools run by the graph itself (a ToolNode, an agent) ------------------------------------------
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._parents[run_id] = parent_run_id
        if TRACED in (tags or []) or self._within_traced(parent_run_id):
            self._traced.add(run_id)
            return
        if RUNNER_TAG in (tags or []):
            return  # the agent's call_tool node traces this call (span, ledger entry); what it calls is ours
        name = str(kwargs.get("name") or (serialized or {}).get("name") or "tool")
        attributes: dict[str, Any] = {A.OPERATION: "execute_tool", A.TOOL_NAME: name}
        if self.capture_content:
            attributes[A.TOOL_ARGS] = json.dumps(inputs, default=str) if inputs is not None else input_str
        self._start(
            run_id, parent_run_id, "tool", f"execute_tool {name}", self.path_of(parent_run_id), attributes
        )
        self._open[run_id].name = name

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        found = self._open.get(run_id)
        if found is None or found.kind != "tool":
            return
        if self.capture_content:
            found.span.set_attribute(A.TOOL_RESULT, str(getattr(output, "content", output))[:2000])
        self._tool_entry(found)
        self._end(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        found = self._open.get(run_id)
        if found is not None and found.kind == "tool":
            self._tool_entry(found)
        self._end(run_id, error)

    def _tool_entry(self, found: _Open) -> None:
        self.meter.add(
            LedgerEntry(
                node=found.node or "graph",
                kind="tool",
                name=found.name,
                role=None,
                input_tokens=0,
                output_tokens=0,
                cost_usd=0.0,
                wall_ms=(time.perf_counter() - found.t0) * 1000,
                ttft_ms=None,
                compute_ms=None,
            )
        )

    def close(self) -> None:
        """End spans left open (a run cancelled mid-node)."""
        for run_id in list(self._open):
            self._end(run_id, asyncio.CancelledError("the run ended first"))


def _node_path(meta: dict[str, Any], node: str) -> tuple[str, ...]:
    """A node's path from LangGraph's checkpoint namespace ("outer:<task>|inner:<task>" -> outer, inner)."""
    names = [seg.split(":", 1)[0] for seg in str(meta.get("langgraph_checkpoint_ns") or "").split("|") if seg]
    return tuple(names) if len(names) > 1 and names[-1] == node else (node,)


def node_path_attribute(path: Sequence[str] | None) -> str | None:
    """A nested node's path as a span attribute (a JSON list, outermost first); None for a top-level one."""
    return json.dumps(list(path)) if path and len(path) > 1 else None


def _task_key(meta: Mapping[str, Any]) -> str:
    """One node execution: its checkpoint namespace (unique per task) and step."""
    return f"{meta.get('langgraph_checkpoint_ns') or ''}|{meta.get('langgraph_step')}"


def _usage(response: LLMResult) -> Usage:
    """A result's usage: its message's `usage_metadata`, else the provider's `llm_output` token counts."""
    for generations in response.generations:
        for gen in generations:
            message = getattr(gen, "message", None)
            if message is not None and getattr(message, "usage_metadata", None):
                return usage_of(message)
    usage = (response.llm_output or {}).get("token_usage") or (response.llm_output or {}).get("usage") or {}
    return Usage(
        int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0),
        int(usage.get("completion_tokens") or usage.get("output_tokens") or 0),
    )


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

    def _ctx(self) -> Any:
        if self.context is not None:
            return self.context
        from langgraph.runtime import get_runtime

        try:
            return get_runtime().context
        except Exception:  # not inside a run
            from orchestrator.errors import ConfigError

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
        from orchestrator.calls import call_model

        ctx = self._ctx()
        tracer = _tracer_of(run_manager)
        parent = run_manager.parent_run_id if run_manager else None
        path = tracer.path_of(parent) if tracer else None
        node = path[-1] if path else (_config_node() or "graph")
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


def node_span() -> Span | None:
    """The span the graph tracer opened for the node running now (None outside one, or where the node
    opens its own span, as the bundled agent's nodes do: that one is then the current span)."""
    try:
        from langgraph.config import get_config

        manager = get_config().get("callbacks")
    except Exception:  # not inside a graph run
        return None
    tracer = _tracer_of(manager)
    return tracer.open_span_of(getattr(manager, "parent_run_id", None)) if tracer is not None else None


def _tracer_of(run_manager: Any) -> GraphTracer | None:
    for handler in getattr(run_manager, "handlers", None) or []:
        if isinstance(handler, GraphTracer):
            return handler
    for handler in getattr(run_manager, "inheritable_handlers", None) or []:
        if isinstance(handler, GraphTracer):
            return handler
    return None


def _config_node() -> str | None:
    try:
        from langgraph.config import get_config

        return str(get_config().get("metadata", {}).get("langgraph_node") or "") or None
    except Exception:
        return None
