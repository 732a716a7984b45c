"""The agent graph: a racehorse controller that finds tools, calls them, delegates to workhorses, answers.

```
START -> controller -> find_tools -> controller
                    -> call_tool  -> controller
                    -> worker (Send, one per delegation) -> controller
                    -> END (final answer, budget stop)
```

`build_agent_graph` returns an *uncompiled* `StateGraph`; the runner compiles it with its checkpointer.
"""

from __future__ import annotations

import asyncio
import functools
import json
import operator
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from orchestrator.calls import call_model
from orchestrator.context import BudgetStop, RunContext
from orchestrator.decisions import Decision, DecisionError, decision_schema, parse_decision
from orchestrator.errors import ModelError, ToolError
from orchestrator.ledger import LedgerEntry, LedgerLine, ledger_delta, merge_ledger
from orchestrator.tracing import attrs as A
from orchestrator.tracing.spans import open_span
from orchestrator.workers import reject, run_worker

__all__ = ["AgentState", "build_agent_graph"]

_OBSERVATION_CAP = 2000


def _append_new(left: list[str], right: list[str]) -> list[str]:
    """Reducer for loaded tool ids: append-only, never reordered (keeps the prompt prefix cache-stable)."""
    return left + [r for r in right if r not in left]


class AgentState(TypedDict, total=False):
    """The checkpointed state of a run."""

    input: str
    messages: Annotated[list[BaseMessage], operator.add]
    loaded: Annotated[list[str], _append_new]
    results: Annotated[list[dict[str, Any]], operator.add]
    ledger: Annotated[dict[str, LedgerLine], merge_ledger]
    answer: str | None
    status: str | None
    stop_reason: str | None


class WorkerTask(TypedDict):
    """The payload a delegation sends to the worker node."""

    worker: str
    input: str


CONTROLLER_PROMPT = """You control an assistant. Each turn, reply with ONE JSON action:
{{"action": "find_tools", "query": "..."}} search the tool catalog by what a tool computes; found tools become callable
{{"action": "call_tool", "tool": "...", "args": {{...}}}} run a found tool
{{"action": "delegate", "worker": "...", "input": "..."}} send text to a worker:
{workers}
{{"action": "final", "answer": "..."}} finish with the answer
Compute with tools (arithmetic, dates, units, text statistics); classify or extract text with a worker.
Do only the steps the task asks for, never repeat one, and finish as soon as you have every result."""


EXAMPLE = {"example": True}  # marks worked-example turns (response_metadata never reaches a provider)


@functools.cache
def example_turns(worker: str | None) -> tuple[BaseMessage, ...]:
    """One worked task as chat turns: small models follow turns better than rules."""
    turns: list[BaseMessage] = [
        HumanMessage(
            "How many km is 26.2 miles?" + (" Also process: 'where is my parcel?'" if worker else "")
        ),
        AIMessage(
            '{"action": "find_tools", "query": "convert miles to kilometers"}', response_metadata=EXAMPLE
        ),
        HumanMessage(
            "Observation (find_tools): found convert_length(value, from_unit, to_unit): "
            "Convert a length between units.\nconvert_speed(value, from_unit, to_unit): Convert a speed."
            "\nconvert_area(value, from_unit, to_unit): Convert an area."
        ),
        AIMessage(
            '{"action": "call_tool", "tool": "convert_length", '
            '"args": {"value": 26.2, "from_unit": "mi", "to_unit": "km"}}',
            example=True,
        ),
        HumanMessage("Observation (call_tool convert_length): 42.16"),
    ]
    if worker:
        turns += [
            AIMessage(
                f'{{"action": "delegate", "worker": "{worker}", "input": "where is my parcel?"}}',
                example=True,
            ),
            HumanMessage(f'Observation (delegate {worker}): {{"result": "..."}}'),
        ]
    turns.append(
        AIMessage('{"action": "final", "answer": "26.2 miles is 42.16 km."}', response_metadata=EXAMPLE)
    )
    return tuple(turns)


def _observation(kind: str, text: str) -> HumanMessage:
    if len(text) > _OBSERVATION_CAP:
        text = text[:_OBSERVATION_CAP] + f"... [truncated {len(text) - _OBSERVATION_CAP} characters]"
    return HumanMessage(f"Observation ({kind}): {text}")


NodeFn = Callable[[Any, RunContext], Awaitable[dict[str, Any]]]


def traced_node(
    name: str, agent: bool = False
) -> Callable[[NodeFn], Callable[..., Awaitable[dict[str, Any]]]]:
    """Wrap a node: a span per execution (flushed to the store when it ends), budget stops become a status."""

    def wrap(fn: NodeFn) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def node(state: Any, runtime: Runtime[RunContext]) -> dict[str, Any]:
            ctx = runtime.context
            attributes: dict[str, Any] = {A.RUN_ID: ctx.run_id, A.NODE: name}
            span_name = name
            if agent:
                attributes |= {A.OPERATION: "invoke_agent", A.AGENT_NAME: name}
                span_name = f"invoke_agent {name}"
            with open_span(ctx.tracer, span_name, "node", attributes) as span:
                try:
                    update = await fn(state, ctx)
                except BudgetStop as stop:
                    span.set_attribute(A.STATUS, "budget_stop")
                    return {"status": "budget_stop", "stop_reason": stop.reason}
                decision = last_decision(update)
                if decision is not None:
                    span.set_attribute(A.ACTION, str(decision["action"]))
                return update

        node.__name__ = name
        return node

    return wrap


@traced_node("controller", agent=True)
async def controller(state: AgentState, ctx: RunContext) -> dict[str, Any]:
    """Ask the racehorse for the next action, under a schema of what is loaded now."""
    steps = sum(1 for m in state.get("messages", []) if isinstance(m, AIMessage))
    budget_steps = ctx.meter.budget.steps
    limit = min(ctx.limits.max_steps, budget_steps) if budget_steps is not None else ctx.limits.max_steps
    if steps >= limit:
        raise BudgetStop(f"step limit of {limit} reached")
    loaded = state.get("loaded", [])
    workers = list(ctx.workers)
    system = CONTROLLER_PROMPT.format(
        workers="\n".join(f"  {w.name}: {w.description}" for w in ctx.workers.values()) or "  (none)",
    )
    done = {str(m.content) for m in state.get("messages", []) if isinstance(m, AIMessage)}
    prompt: list[BaseMessage] = [
        SystemMessage(system),
        HumanMessage(state["input"]),
        *state.get("messages", []),
    ]
    schema = decision_schema(loaded, ctx.catalog, workers)
    entries: list[LedgerEntry] = []
    decision: Decision | None = None
    error = ""
    for attempt in range(2):
        msg, new_entries = await call_model(
            ctx, "controller", "controller", prompt, max_tokens=ctx.limits.max_tokens, schema=schema
        )
        entries.extend(new_entries)
        try:
            decision = parse_decision(str(msg.content), loaded, workers)
            if decision.to_json() in done:
                decision = None
                raise DecisionError(
                    "this exact action was already done and its observation is above; "
                    "choose a different action, or final if the task is solved"
                )
            break
        except DecisionError as exc:
            error = str(exc)
            if attempt == 0:
                prompt = [
                    *prompt,
                    AIMessage(str(msg.content)),
                    HumanMessage(f"Invalid reply: {error}. Reply with one valid JSON action."),
                ]
    if decision is None:
        raise ModelError(f"the controller's reply was not a valid decision after one repair: {error}")
    update: dict[str, Any] = {
        "messages": [AIMessage(decision.to_json())],
        "ledger": ledger_delta(entries),
    }
    if decision.action == "final":
        update |= {"answer": decision.answer, "status": "ok"}
    return update


def last_decision(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The decision in the last transcript message, if that message is the controller's (derived, not stored)."""
    messages = state.get("messages") or []
    if not messages or not isinstance(messages[-1], AIMessage):
        return None
    decision: dict[str, Any] = json.loads(str(messages[-1].content))
    return decision


def route(state: AgentState) -> str | list[Send]:
    """After the controller: follow its decision, or stop."""
    pending = last_decision(state)
    if state.get("status") or not pending:
        return END
    action = pending["action"]
    if action == "delegate":
        return [Send("worker", WorkerTask(worker=pending["worker"], input=pending["input"]))]
    return str(action)


@traced_node("find_tools")
async def find_tools(state: AgentState, ctx: RunContext) -> dict[str, Any]:
    """Search the catalog and load the top-k tools (append-only)."""
    query = (last_decision(state) or {}).get("query", "")
    loaded = state.get("loaded", [])
    hits = ctx.catalog.search(query, k=ctx.limits.top_k, exclude=loaded)
    if not hits:
        text = f"no tool matches {query!r}; try other words"
    else:
        lines = []
        for h in hits:
            props = ctx.catalog.get(h.name).parameters.get("properties", {})
            first_sentence = h.description.split(". ")[0].rstrip(".")
            lines.append(f"{h.name}({', '.join(props)}): {first_sentence}.")
        text = "found " + "\n".join(lines)
    return {"loaded": [h.name for h in hits], "messages": [_observation("find_tools", text)]}


@traced_node("call_tool")
async def call_tool(state: AgentState, ctx: RunContext) -> dict[str, Any]:
    """Run one loaded tool with a timeout; an error goes back to the controller as an observation."""
    pending = last_decision(state) or {}
    name, args = str(pending.get("tool", "")), dict(pending.get("args") or {})
    attributes: dict[str, Any] = {
        A.OPERATION: "execute_tool",
        A.TOOL_NAME: name,
        A.RUN_ID: ctx.run_id,
        A.NODE: "call_tool",
    }
    if ctx.capture_content:
        attributes[A.TOOL_ARGS] = json.dumps(args)
    import time

    t0 = time.perf_counter()
    with open_span(ctx.tracer, f"execute_tool {name}", "tool", attributes) as span:
        try:
            if name not in state.get("loaded", []):
                raise ToolError(f"tool {name!r} is not loaded")
            tool = ctx.catalog.get(name).tool
            if tool is None:
                raise ToolError(f"tool {name!r} has no implementation in this catalog")
            async with asyncio.timeout(ctx.limits.tool_timeout_s):
                result = await tool.ainvoke(args)
            text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
            ok = True
        except TimeoutError:
            text, ok = f"error: tool {name!r} timed out after {ctx.limits.tool_timeout_s:g}s", False
        except Exception as exc:  # a tool that raises: the model sees the error and may recover
            text, ok = f"error: {type(exc).__name__}: {exc}", False
        if not ok:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, text[:500]))
            span.set_attribute(A.ERROR_TYPE, "tool_error")
        elif ctx.capture_content:
            span.set_attribute(A.TOOL_RESULT, text[:_OBSERVATION_CAP])
    entry = LedgerEntry(
        node="call_tool",
        kind="tool",
        name=name,
        role=None,
        input_tokens=0,
        output_tokens=0,
        cost_usd=0.0,
        wall_ms=(time.perf_counter() - t0) * 1000,
        ttft_ms=None,
        compute_ms=None,
    )
    return {
        "messages": [_observation(f"call_tool {name}", text)],
        "ledger": ledger_delta([entry]),
    }


@traced_node("worker", agent=True)
async def worker(task: WorkerTask, ctx: RunContext) -> dict[str, Any]:
    """Run a workhorse worker; only a validated result enters the state."""
    spec = ctx.workers[task["worker"]]
    from opentelemetry import trace

    span = trace.get_current_span()
    span.set_attribute(A.AGENT_NAME, spec.name)
    result, entries, reason = await run_worker(ctx, spec, task["input"], "worker")
    if result is None:
        from opentelemetry.trace import Status, StatusCode

        error = reject(reason or "invalid output")
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)[:500]))
        span.set_attribute(A.ERROR_TYPE, type(error).__name__)
        obs = f"error: {error}"
        return {
            "messages": [_observation(f"delegate {spec.name}", obs)],
            "ledger": ledger_delta(entries),
        }
    record = {
        "worker": spec.name,
        "value": result.value,
        "model": result.model,
        "repaired": result.repaired,
        "escalated": result.escalated,
    }
    obs = json.dumps(result.value, ensure_ascii=False)
    return {
        "messages": [_observation(f"delegate {spec.name}", obs)],
        "results": [record],
        "ledger": ledger_delta(entries),
    }


def build_agent_graph() -> StateGraph[AgentState, RunContext, AgentState, AgentState]:
    """The racehorse-led agent graph, uncompiled.

    Example:
        >>> builder = build_agent_graph()
        >>> sorted(builder.nodes)
        ['call_tool', 'controller', 'find_tools', 'worker']
    """
    g: StateGraph[AgentState, RunContext, AgentState, AgentState] = StateGraph(
        AgentState, context_schema=RunContext
    )
    g.add_node("controller", controller)
    g.add_node("find_tools", find_tools)
    g.add_node("call_tool", call_tool)
    g.add_node("worker", worker)
    g.add_edge(START, "controller")
    g.add_conditional_edges("controller", route, ["find_tools", "call_tool", "worker", END])
    g.add_edge("find_tools", "controller")
    g.add_edge("call_tool", "controller")
    g.add_edge("worker", "controller")
    return g
