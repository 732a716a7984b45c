"""Tracing and pricing for any LangGraph graph, with nothing for its author to declare.

- `GraphTracer`, a LangChain callback handler attached to every run. LangGraph reports each node's
  execution, each chat-model call and each tool call to it, so it opens a node span for every node of any
  graph (subgraphs and prebuilt agents included), and a chat or tool span, with a ledger entry, for calls
  that nothing else instruments: a model the user built and calls inside a node, a `ToolNode`'s tools.

The orchestrator's own model calls (`orchestrator.models.calls.call_model`, which `SlotModel` in
`orchestrator.models.slot` takes) are tagged `TRACED` so that the handler does not count them a second time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import (
    BaseCallbackHandler,
    BaseCallbackManager,
)
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers.context import _tracing_v2_is_enabled
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from orchestrator.cost.billing import Charge, tool_entry, usage_of
from orchestrator.cost.ledger import BudgetMeter
from orchestrator.cost.pricing import PriceTable, Usage, cost_usd
from orchestrator.tracing import attrs as A
from orchestrator.tracing.attrs import RUNNER_TAG, TRACED

__all__ = ["GraphTracer", "config_node", "node_path_attribute", "node_span", "only_graph_tracer", "tracer_of"]

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
    # events it has nothing to do with: LangChain then skips the call altogether (not `ignore_agent`: the
    # tool events come under it)
    ignore_retry = True
    ignore_retriever = True
    ignore_custom_event = True

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
        self._prices: dict[tuple[str, str], Any] = {}  # (provider, model) -> its prices (None: unknown)
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
        innermost = node[-1] if node else None
        at: dict[str, Any] = {A.KIND: kind, A.RUN_ID: self.run_id}
        if innermost:
            at[A.NODE] = innermost
            if len(node) > 1:  # type: ignore[arg-type]
                at[A.NODE_PATH] = node_path_attribute(node)
        at.update(attributes)
        span = self.tracer.start_span(name, context=trace.set_span_in_context(parent), attributes=at)
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
        task = _task_key(meta) if node is not None and kwargs.get("name") == node else None
        if task is None or task in self._tasks:
            inherited = self.path_of(parent_run_id)
            if inherited is not None:
                self._nodes[run_id] = inherited
            return
        self._nodes[run_id] = _node_path(meta, str(node))
        self._tasks.add(task)
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
        known = (provider, model)
        if known not in self._prices:  # a price table lookup once per model and run
            self._prices[known] = self.prices.lookup(model) or self.prices.lookup(f"{provider}/{model}")
        prices = self._prices[known]
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
        self.meter.add(tool_entry(found.node or "graph", found.name, (time.perf_counter() - found.t0) * 1000))

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


def node_span() -> Span | None:
    """The span the graph tracer opened for the node running now (None outside one, or where the node
    opens its own span, as the bundled agent's nodes do: that one is then the current span)."""
    try:
        from langgraph.config import get_config

        manager = get_config().get("callbacks")
    except Exception:  # not inside a graph run
        return None
    tracer = tracer_of(manager)
    return tracer.open_span_of(getattr(manager, "parent_run_id", None)) if tracer is not None else None


def tracer_of(run_manager: Any) -> GraphTracer | None:
    for handler in getattr(run_manager, "handlers", None) or []:
        if isinstance(handler, GraphTracer):
            return handler
    for handler in getattr(run_manager, "inheritable_handlers", None) or []:
        if isinstance(handler, GraphTracer):
            return handler
    return None


def config_node() -> str | None:
    try:
        from langgraph.config import get_config

        return str(get_config().get("metadata", {}).get("langgraph_node") or "") or None
    except Exception:
        return None


def only_graph_tracer(config: RunnableConfig | None) -> Any:
    """The current node's callback manager (or None) when the graph tracer is the only one listening to a
    call made with `config`; False when anyone else would (the call's own callbacks or `run_name`, a handler
    of the caller's in the node's config, LangSmith tracing).

    A call the orchestrator already traces (tagged TRACED, which the graph tracer ignores) may then skip
    LangChain's run around it: the callback manager, the run id, the events to each handler."""
    if config and (config.get("callbacks") is not None or config.get("run_name")):
        return False
    if _tracing_v2_is_enabled():
        return False
    manager = (var_child_runnable_config.get() or {}).get("callbacks")
    if manager is None:
        return None
    if isinstance(manager, list) or not isinstance(manager, BaseCallbackManager):
        return False
    if all(isinstance(h, GraphTracer) for h in manager.handlers):
        return manager
    return False
