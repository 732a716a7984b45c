"""The agent graph: a racehorse controller plans, finds tools, calls them, delegates to workhorses, answers.

```
START -> controller -> find_tools -> controller
                    -> call_tool  -> controller
                    -> worker (Send, one per delegation) -> controller
                    -> controller (after a plan or a skipped part, when the next step needs the model)
                    -> END (final answer, budget stop)
```

A search the plan fixes (a tool part's first, with the part's words) runs inside the controller's execution
when the model can still be asked in it, so the part is searched and decided in one step (traced as the
find_tools node nested in the controller); only the first part's, which follows the plan's own model call,
and the model's own searches, go through the find_tools node.

The controller's logic is in `orchestrator.agent.controller`; the plan it keeps in the state is in
`orchestrator.agent.plan`. `build_agent_graph` returns an *uncompiled* `StateGraph`; the runner compiles it
with its checkpointer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import operator
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send, interrupt
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from orchestrator.agent.controller import (
    BEYOND,
    COVERS,
    AgentParts,
    controller_step,
    merge_loaded,
    search_query,
    stopped_answer,
)
from orchestrator.agent.decisions import ACT_EXTRAS, decision_of
from orchestrator.agent.plan import Example, Part, current_part, merge_plan
from orchestrator.agent.workhorse import reject, run_worker
from orchestrator.cost.billing import tool_entry
from orchestrator.cost.ledger import LedgerLine, merge_ledger
from orchestrator.errors import ToolError
from orchestrator.models.context import BudgetStop, RunContext
from orchestrator.toolsets.catalog import Catalog, ToolHit
from orchestrator.toolsets.process_pool import ToolFailed, ToolRunner
from orchestrator.tracing import attrs as A
from orchestrator.tracing.spans import open_span
from orchestrator.workers.definitions import Worker
from orchestrator.workers.grounding import check_result
from orchestrator.workers.operations import check_statistic

__all__ = ["APPROVAL", "RESUMED", "AgentState", "build_agent_graph"]

APPROVAL = "approve_tool_calls"  # the `type` of the interrupt asking a person to approve tool calls
# Written to `status` and `stop_reason` to resume a run a limit stopped: it lifts the stop, and the run goes
# on from its state (the controller picks up the plan where it was; finished parts are not done again).
RESUMED = "resumed"

_OBSERVATION_CAP = 2000
_IN_PROCESS = ToolRunner(isolate=False)
_ARG_NOTE = 40  # characters of an argument's description shown with a found tool


def in_use(state: Mapping[str, Any]) -> set[str]:
    """The loaded tools that must stay bound: every tool called in this run or named in a decision, and
    the tools found for a part still open."""
    used: set[str] = set()
    for message in state.get("messages") or []:
        if isinstance(message, AIMessage):
            decision = decision_of(str(message.content)) or {}
            if decision.get("action") == "call_tool":
                used.add(str(decision.get("tool")))
    for part in state.get("plan") or []:
        if part["status"] in ("pending", "searched"):
            used.update(part["tools"])
    return used


def _first(left: str | None, right: str | None) -> str | None:
    """Reducer: the first value written stays. Parallel workers that hit the budget in one step each write
    a stop; a plain key would take only one value a step (LangGraph's InvalidUpdateError, a crashed run).
    `RESUMED` clears it (a stopped run resumed)."""
    if right == RESUMED:
        return None
    return left if left is not None else right


class AgentState(TypedDict, total=False):
    """The checkpointed state of a run."""

    input: str
    messages: Annotated[list[BaseMessage], operator.add]
    plan: Annotated[list[Part] | None, merge_plan]
    loaded: Annotated[list[str], merge_loaded]  # the tools bound, in the order loaded
    results: Annotated[list[dict[str, Any]], operator.add]
    ledger: Annotated[dict[str, LedgerLine], merge_ledger]  # written before 0.2 only; read on resume
    answer: str | None
    status: Annotated[str | None, _first]
    stop_reason: Annotated[str | None, _first]


class AgentInput(TypedDict):
    """What a run of the agent takes: the request. The runner names this key when an input lacks it."""

    input: str


class WorkerTask(TypedDict):
    """The payload a delegation sends to the worker node."""

    worker: str
    input: str
    part: int | None


def _observation(kind: str, text: str) -> HumanMessage:
    if len(text) > _OBSERVATION_CAP:
        text = text[:_OBSERVATION_CAP] + f"... [truncated {len(text) - _OBSERVATION_CAP} characters]"
    return HumanMessage(f"Observation ({kind}): {text}")


NodeFn = Callable[[Any, RunContext], Awaitable[dict[str, Any]]]


def traced_node(
    name: str,
    agent: bool = False,
    adapt: Callable[[RunContext], RunContext] | None = None,
    on_stop: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
) -> Callable[[NodeFn], Callable[..., Awaitable[dict[str, Any]]]]:
    """Wrap a node: a span per execution (flushed to the store when it ends), budget stops become a status.

    `adapt` turns the run's context into the one the node sees (a graph given its own catalog or workers).
    `on_stop(state)`: what the node adds to a stop (the controller: an answer from the results so far);
    such a node, reached after another one stopped the run, ends it with that at once.
    """

    def wrap(fn: NodeFn) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def node(state: Any, runtime: Runtime[RunContext]) -> dict[str, Any]:
            ctx = runtime.context if adapt is None else adapt(runtime.context)
            attributes: dict[str, Any] = {A.RUN_ID: ctx.run_id, A.NODE: name}
            span_name = name
            if agent:
                attributes |= {A.OPERATION: "invoke_agent", A.AGENT_NAME: name}
                span_name = f"invoke_agent {name}"
            with open_span(ctx.tracer, span_name, "node", attributes) as span:
                if on_stop is not None and state.get("status") == "budget_stop":  # a worker stopped it
                    span.set_attribute(A.STATUS, "budget_stop")
                    return on_stop(state)
                try:
                    update = await fn(state, ctx)
                except BudgetStop as stop:
                    span.set_attribute(A.STATUS, "budget_stop")
                    ending = on_stop(state) if on_stop is not None else {}
                    return {"status": "budget_stop", "stop_reason": stop.reason, **ending}
                decision = last_decision(update)
                if decision is not None:
                    span.set_attribute(A.ACTION, str(decision["action"]))
                return update

        node.__name__ = name
        return node

    return wrap


def last_decision(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The decision in the last transcript message, if that message is the controller's."""
    messages = state.get("messages") or []
    if not messages or not isinstance(messages[-1], AIMessage):
        return None
    return decision_of(str(messages[-1].content))


def pending_steps(state: Mapping[str, Any]) -> list[tuple[dict[str, Any], int | None]]:
    """The steps the controller's last execution asked of a node, each with its plan part (or None): the
    trailing decisions with the last one's action. One, except for a batch (the searches for several parts,
    or the parallel tool calls of one reply)."""
    last = last_decision(state)
    if last is None:
        return []
    plan = state.get("plan") or []
    out: list[tuple[dict[str, Any], int | None]] = []
    for message in reversed(state.get("messages") or []):
        decision = decision_of(str(message.content)) if isinstance(message, AIMessage) else None
        if decision is None or decision["action"] != last["action"]:
            break
        number = decision.get("part")
        if isinstance(number, int) and 1 <= number <= len(plan):
            index: int | None = number - 1
        else:
            index = current_part(plan)
        out.append((decision, index))
    return out[::-1]


def route(state: AgentState) -> str | list[Send]:
    """After the controller: follow its decision, or stop."""
    pending = last_decision(state)
    if state.get("status") or not pending:
        return END
    action = pending["action"]
    if action == "delegate":
        plan = state.get("plan") or []
        part = current_part(plan)
        if part is None:  # no plan (a graph that delegates on its own): the decision's worker alone
            return [Send("worker", WorkerTask(worker=pending["worker"], input=pending["input"], part=None))]
        sends = []
        for index in range(part, len(plan)):  # consecutive worker parts fan out: one worker node each
            p = plan[index]
            if not p["worker"] or p["status"] != "pending":
                break
            sends.append(Send("worker", WorkerTask(worker=p["worker"], input=p["text"], part=index)))
        return sends
    if action in ("plan", "skip"):
        return "controller"
    return str(action)


def _first_sentence(text: str) -> str:
    """A description's first sentence ("e.g." and "i.e." do not end one)."""
    cut = 0
    while True:
        cut = text.find(". ", cut)
        if cut < 0:
            return text.rstrip(".")
        if not text[max(0, cut - 3) : cut].endswith(("e.g", "i.e", "etc", "vs")):
            return text[:cut]
        cut += 2


_EXAMPLE = re.compile(r"^\s*Example:\s*(\S.*)$", re.M)
_EXAMPLE_MAX = 160


def example_line(description: str) -> str:
    """A tool's one-line example from its description (`Example: "a request" -> tool(arg=value)`), shown
    with the tool when it is found, so the choice between close tools sees how each is called; "" if none."""
    found = _EXAMPLE.search(description)
    if found is None:
        return ""
    text = found.group(1).strip()
    return "Example: " + (text if len(text) <= _EXAMPLE_MAX else text[: _EXAMPLE_MAX - 3] + "...")


def _signature(name: str, parameters: Mapping[str, Any]) -> str:
    """`name(arg: its description, unit: C|F|K)`: each argument with a short description or its choices."""
    args = []
    for arg, spec in parameters.get("properties", {}).items():
        spec = spec if isinstance(spec, dict) else {}
        choices = spec.get("enum")
        if choices and len(choices) <= 8:
            args.append(f"{arg}: {'|'.join(map(str, choices))}")
            continue
        described = " ".join(str(spec.get("description", "")).split())
        if len(described) > _ARG_NOTE:
            described = described[: _ARG_NOTE - 3].rsplit(" ", 1)[0] + "..."
        args.append(f"{arg}: {described}" if described else arg)
    return f"{name}({'; '.join(args)})"


Retrieve = Callable[[Catalog, str, int], Sequence[ToolHit]]


def _search(catalog: Catalog, query: str, k: int) -> Sequence[ToolHit]:
    return catalog.search(query, k=k)


async def find_tools(
    state: AgentState, ctx: RunContext, retrieve: Retrieve = _search, slot: str = "controller"
) -> dict[str, Any]:
    """Search the catalog (with `retrieve`) for each pending search; load the top-k tools (append-only),
    offer them to the part. At most the tools `slot`'s model takes in one request stay loaded.

    A part's first search (the engine's, with the part's words) falls back to the request's words when
    it finds nothing. A search the model asked for adds its finds to the part's tools. A search that finds
    nothing is an observation: the controller searches again in other words or skips, never the search."""
    max_tools = ctx.tool_limits(slot).max_tools
    loaded = list(state.get("loaded") or [])
    added: list[str] = []
    dropped: list[str] = []
    keep = in_use(state)
    messages: list[BaseMessage] = []
    patches: list[dict[str, Any]] = []
    plan: Sequence[Part] = state.get("plan") or []
    steps = pending_steps(state) or [({}, current_part(plan))]
    if retrieve is _search and ctx.catalog.embeds_queries:
        # this search's words and those of every part not searched yet, embedded in one batch: the plan's
        # later searches then find their query's vector made (four queries: ~10 ms together, ~17 apart)
        words = [str(d.get("query", "")) for d, _ in steps]
        words += [search_query(p["tool"]) for p in plan if p["tool"] and p["status"] == "pending"]
        words = list(dict.fromkeys(w for w in words if w))
        if not ctx.catalog.primed(words):
            await asyncio.to_thread(ctx.catalog.prime, words)
    for decision, index in steps:
        query = str(decision.get("query", ""))
        part = plan[index] if index is not None and index < len(plan) else None
        down = ctx.catalog.unavailable()

        async def usable(words: str, down: Mapping[str, str] = down) -> list[ToolHit]:
            """Only the catalog's tools are ever bound, and only those that can be called."""
            if retrieve is _search and not ctx.catalog.primed([words]):
                # the query's embedding takes 5-25 ms of CPU: in a thread, other runs' steps go on meanwhile
                found = await asyncio.to_thread(retrieve, ctx.catalog, words, ctx.limits.top_k)
            else:
                found = retrieve(ctx.catalog, words, ctx.limits.top_k)
            # an embedding search always has a top k: what is not close (nor shares a word) is not found
            return [
                h
                for h in found
                if h.name in ctx.catalog and h.name not in down and ctx.catalog.counts(h, words)
            ]

        hits = await usable(query)
        first = part is not None and part["status"] == "pending"
        if not hits and first:  # the part's words found nothing: the request's words, once
            broader = search_query(str(state.get("input") or ""))
            if broader and broader != query:
                hits = await usable(broader)
        if part is not None and part["status"] == "searched":  # a search of the model's own: finds add up
            hits = [h for h in hits if h.name not in part["tools"]]
        room = max_tools - len(ACT_EXTRAS) - len(loaded)
        new = [h for h in hits if h.name not in loaded]
        keep |= {h.name for h in hits}
        # a provider takes at most max_tools tools a request: past that, the tools loaded longest
        # ago that are not in use make room (loaded order is the order they were found)
        spare = [t for t in loaded if t not in keep]
        evict = spare[: max(0, len(new) - room)] if len(new) > room else []
        if len(new) > room + len(evict):  # too few tools out of use to make room
            text = (
                f"the tools found for {query!r} can't be loaded: {len(loaded)} tools are loaded and in "
                f"use, and a request binds at most {max_tools}"
            )
            patch: dict[str, Any] = {"status": "failed", "note": text}
        elif not hits:  # an observation the controller acts on: search in other words, or skip
            text = f"no tool matches {query!r}"
            if part is not None and part["tools"]:
                text = f"no other tool matches {query!r}"
            if down:
                text += f" (not offered, unavailable: {'; '.join(sorted(set(down.values())))})"
            patch = {"status": "searched", "note": text}
        else:
            lines = [
                f"{_signature(h.name, ctx.catalog.get(h.name).parameters)}: {_first_sentence(h.description)}."
                + (f" {example}" if (example := example_line(h.description)) else "")
                for h in hits
            ]
            text = "found " + "\n".join(lines)
            if evict:
                text += f"\n(unloaded, to make room: {', '.join(evict)})"
                loaded = [t for t in loaded if t not in evict]
                dropped += evict
                added = [t for t in added if t not in evict]
            earlier = list(part["tools"]) if part is not None and not first else []
            patch = {"status": "searched", "tools": earlier + [h.name for h in hits], "note": ""}
            loaded += [h.name for h in new]
            added += [h.name for h in new]
        if down and hits:  # say why some tools are not offered (a reason per stopped server)
            text += f"\n(not offered, unavailable: {'; '.join(sorted(set(down.values())))})"
        kind = "find_tools" if "part" not in decision else f"find_tools, part {decision['part']}"
        messages.append(_observation(kind, text))
        if index is not None:
            patches.append({"index": index, **patch})
    update: dict[str, Any] = {
        "loaded": {"drop": dropped, "add": added} if dropped else added,
        "messages": messages,
    }
    if patches:
        update["plan"] = patches
    return update


async def call_tool(state: AgentState, ctx: RunContext) -> dict[str, Any]:
    """Run the pending tool calls (several at once after a reply of parallel calls), each with a timeout;
    an error goes back to the controller as an observation."""
    steps = pending_steps(state) or [({}, current_part(state.get("plan")))]
    verdicts = _approvals(steps, ctx)
    done = await asyncio.gather(
        *(
            _one_call(state, ctx, d, index, verdict)
            for (d, index), verdict in zip(steps, verdicts, strict=True)
        )
    )
    messages: list[BaseMessage] = [message for message, _ in done]
    patches = [patch for _, patch in done if patch is not None]
    update: dict[str, Any] = {"messages": messages}
    if patches:
        update["plan"] = patches
    return update


def _approvals(steps: Sequence[tuple[Mapping[str, Any], int | None]], ctx: RunContext) -> list[str | None]:
    """Each call's approval (`approved`, `declined`; None: it needs none). Calls of confirmed tools wait for a
    person: the run stops with a LangGraph interrupt listing them (`approval_request`), and this node runs
    again when the run is resumed with the answer (`Orchestrator.arun(..., resume=True, approve=...)`).
    Nothing has run before the interrupt, so running the node again repeats nothing."""
    asked = [k for k, (d, _) in enumerate(steps) if ctx.needs_approval(str(d.get("tool", "")))]
    verdicts: list[str | None] = [None] * len(steps)
    if not asked:
        return verdicts
    calls = [_call_request(steps[k][0]) for k in asked]
    answer = interrupt({"type": APPROVAL, "calls": calls})
    for n, k in enumerate(asked):
        verdicts[k] = "approved" if _yes(answer, calls[n]["tool"], n) else "declined"
    return verdicts


def _call_request(decision: Mapping[str, Any]) -> dict[str, Any]:
    request = {"tool": str(decision.get("tool", "")), "args": dict(decision.get("args") or {})}
    if isinstance(decision.get("part"), int):
        request["part"] = decision["part"]
    return request


def _yes(answer: Any, tool: str, n: int) -> bool:
    """One call's verdict in an answer: a bool for every call, a {tool: bool} map, or a list of bools."""
    if isinstance(answer, bool):
        return answer
    if isinstance(answer, Mapping):
        return answer.get(tool) is True
    if isinstance(answer, list | tuple):
        return n < len(answer) and answer[n] is True
    return False  # anything else approves nothing (the runner refuses such answers before resuming)


async def _one_call(
    state: AgentState,
    ctx: RunContext,
    pending: Mapping[str, Any],
    index: int | None,
    approval: str | None = None,
) -> tuple[BaseMessage, dict[str, Any] | None]:
    """One tool call: its observation, and the patch for its part."""
    name, args = str(pending.get("tool", "")), dict(pending.get("args") or {})
    attributes: dict[str, Any] = {
        A.OPERATION: "execute_tool",
        A.TOOL_NAME: name,
        A.RUN_ID: ctx.run_id,
        A.NODE: "call_tool",
    }
    if ctx.capture_content:
        attributes[A.TOOL_ARGS] = json.dumps(args)
    if approval is not None:
        attributes[A.TOOL_APPROVAL] = approval
    kind = f"call_tool {name}" if "part" not in pending else f"call_tool {name}, part {pending['part']}"
    if approval == "declined":  # never run: the part fails, and the model is told not to try again
        with open_span(ctx.tracer, f"execute_tool {name}", "tool", attributes):
            text = (
                f"error: the call of {name!r} was declined by the person approving tool calls; do not call "
                "it again: finish without it, or say what could not be done"
            )
        plan = state.get("plan") or []
        failed: dict[str, Any] | None = None
        if index is not None and index < len(plan):
            failed = {
                "index": index,
                "status": "failed",
                "tries": plan[index]["tries"] + 1,
                "note": f"the call of {name} was declined",
            }
        return _observation(kind, text), failed
    t0 = time.perf_counter()
    with open_span(ctx.tracer, f"execute_tool {name}", "tool", attributes) as span:
        try:
            if name not in state.get("loaded", []):
                raise ToolError(f"tool {name!r} is not loaded")
            tool = ctx.catalog.get(name).tool
            if tool is None:
                raise ToolError(f"tool {name!r} has no implementation in this catalog")
            runner = ctx.tool_runner or _IN_PROCESS
            span.set_attribute(A.TOOL_ISOLATED, runner.isolated(tool))
            result = await runner.run(tool, args, ctx.limits.tool_timeout_s)
            text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
            ok = True
            part_words = _part_words(state, index)
            checks = (check_result, check_statistic) if part_words else ()
            wrong = [problem for check in checks for problem in check(part_words, args, text)]
            if wrong:  # it ran, but its result can't answer the part: a failed try, not the answer
                text, ok = f"error: {wrong[0]}", False
        except TimeoutError:
            text, ok = f"error: tool {name!r} timed out after {ctx.limits.tool_timeout_s:g}s", False
        except ToolFailed as exc:  # raised in the tool's process
            text, ok = f"error: {exc.type_name}: {exc}", False
        except Exception as exc:  # a tool that raises: the model sees the error and may recover
            text, ok = f"error: {type(exc).__name__}: {exc}", False
        if not ok:
            span.set_status(Status(StatusCode.ERROR, text[:500]))
            span.set_attribute(A.ERROR_TYPE, "tool_error")
        elif ctx.capture_content:
            span.set_attribute(A.TOOL_RESULT, text[:_OBSERVATION_CAP])
    ctx.meter.add(tool_entry("call_tool", name, (time.perf_counter() - t0) * 1000))
    patch: dict[str, Any] | None = None
    plan = state.get("plan") or []
    if index is not None and index < len(plan):
        part = plan[index]
        if ok:
            patch = {"status": "done", "result": text[:_OBSERVATION_CAP]}
        elif part["tries"] + 1 >= 2:
            patch = {"status": "failed", "tries": part["tries"] + 1, "note": text[:200]}
        else:
            patch = {"tries": part["tries"] + 1}
        patch = {"index": index, **patch}
    return _observation(kind, text), patch


def _part_words(state: AgentState, index: int | None) -> str:
    """The words of the tool part a call settles ("" when the call settles no tool part)."""
    plan = state.get("plan") or []
    return plan[index]["tool"] if index is not None and index < len(plan) else ""


async def worker(task: WorkerTask, ctx: RunContext) -> dict[str, Any]:
    """Run a workhorse worker; only a validated result enters the state."""
    spec = ctx.workers[task["worker"]]
    span = trace.get_current_span()
    span.set_attribute(A.AGENT_NAME, spec.name)
    if ctx.capture_content:
        span.set_attribute(A.WORKER_INPUT, task["input"])
    result, _, reason = await run_worker(ctx, spec, task["input"], "worker")
    index = task.get("part")
    if result is None:
        error = reject(reason or "invalid output")
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)[:500]))
        span.set_attribute(A.ERROR_TYPE, type(error).__name__)
        obs = f"error: {error}"
        failed: dict[str, Any] = {"messages": [_observation(f"delegate {spec.name}", obs)]}
        if index is not None:
            failed["plan"] = [{"index": index, "status": "failed", "note": str(error)[:200]}]
        return failed
    record = {
        "worker": spec.name,
        "value": result.value,
        "model": result.model,
        "repaired": result.repaired,
        "escalated": result.escalated,
    }
    obs = result.value if isinstance(result.value, str) else json.dumps(result.value, ensure_ascii=False)
    if ctx.capture_content:
        span.set_attribute(A.WORKER_OUTPUT, obs)
    update: dict[str, Any] = {
        "messages": [_observation(f"delegate {spec.name}", obs)],
        "results": [record],
    }
    if index is not None:
        update["plan"] = [{"index": index, "status": "done", "result": obs}]
    return update


def build_agent_graph(
    *,
    catalog: Catalog | Sequence[BaseTool] | None = None,
    workers: Mapping[str, Worker] | Iterable[Worker] | None = None,
    controller: str = "controller",
    retrieve: Retrieve | None = None,
    covers: str = COVERS,
    examples: Sequence[Example] = (),
    beyond: str = BEYOND,
) -> StateGraph[AgentState, RunContext, AgentInput, AgentState]:
    """The racehorse-led agent graph, uncompiled, from its parts.

    - `catalog`: the tools it may find and call (a `Catalog` or tools); default: the manifest's tool packs.
    - `workers`: the workhorse workers it may delegate to; default: the manifest's workers.
    - `controller`: the slot whose model plans, picks tools and answers.
    - `retrieve(catalog, query, k)`: the tool search; default: the catalog's BM25 search.
    - `covers`: what the tools cover, in a phrase the system prompt ends "... for <covers>." with.
    - `examples`: worked plans for requests its tools answer (`PlanExample`s); the few closest to each
      request are shown to the model.
    - `beyond`: what none of its tools does, in a phrase: the requests the model answers with an empty
      plan. The default (live data, news, facts, actions in the world) comes with worked empty plans on
      those topics; a catalog of services or APIs that do such things passes its own phrase, or "" (then
      the built-in empty plans are not shown: give your own in `examples`).

    Example:
        >>> builder = build_agent_graph()
        >>> sorted(builder.nodes)
        ['call_tool', 'controller', 'find_tools', 'worker']
    """
    tools = None
    if catalog is not None:
        tools = catalog if isinstance(catalog, Catalog) else Catalog.from_tools(list(catalog))
    crew = None
    if workers is not None:
        crew = dict(workers) if isinstance(workers, Mapping) else {w.name: w for w in workers}
    adapt = None
    if tools is not None or crew is not None:

        def adapt(ctx: RunContext) -> RunContext:
            return dataclasses.replace(
                ctx,
                catalog=tools if tools is not None else ctx.catalog,
                workers=crew if crew is not None else ctx.workers,
            )

    search = functools.partial(find_tools, retrieve=retrieve or _search, slot=controller)
    parts = AgentParts(slot=controller, covers=covers, examples=tuple(examples), beyond=beyond, search=search)
    plan_step = functools.partial(controller_step, parts=parts)
    g: StateGraph[AgentState, RunContext, AgentInput, AgentState] = StateGraph(
        AgentState, context_schema=RunContext, input_schema=AgentInput
    )
    own = {"orch_traced": True}  # these nodes open their own spans (see `traced_node`)
    # the slot the controller's nodes use: the runner checks it is bound before a run starts
    planner = {**own, "orch_slots": (controller,)}
    controller_node = traced_node("controller", True, adapt, on_stop=stopped_answer)(plan_step)
    g.add_node("controller", controller_node, metadata=planner)
    g.add_node("find_tools", traced_node("find_tools", False, adapt)(search), metadata=planner)
    g.add_node("call_tool", traced_node("call_tool", False, adapt)(call_tool), metadata=own)
    g.add_node("worker", traced_node("worker", True, adapt)(worker), metadata=own)
    g.add_edge(START, "controller")
    g.add_conditional_edges("controller", route, ["controller", "find_tools", "call_tool", "worker", END])
    g.add_edge("find_tools", "controller")
    g.add_edge("call_tool", "controller")
    g.add_edge("worker", "controller")
    return g
