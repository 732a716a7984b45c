"""The racehorse node: plan once, then take one step per turn until every part of the plan has its result.

Each execution makes at most one model call; steps that the plan fixes ride along without one:

```
no plan yet        -> the model writes the plan (examples retrieved for the request)
a worker part      -> delegate its text (a span of the request)            [fixed by the plan]
a new tool part    -> find_tools with the part's words                     [fixed by the plan; run here
                      when the model can still be asked in this execution, else in the find_tools node]
a searched part    -> the model calls one of the tools found for it, or skips the part
every part settled -> the model writes the final answer; nothing done -> say so  [fixed]
                      only worker parts, all done -> their outputs are the answer [fixed]
```

A model that makes parallel tool calls takes the tool parts in a row together: one `find_tools` step
searches for each, then one reply calls a tool for each part whose values are known; a part whose call
needs a result not yet observed waits for the next turn.

Before a step runs, its values are checked against the request and the observations (`grounding`); a
failed check gets one repair, and a step that is still ungrounded is not taken: a tool call becomes a
failed part, and an answer is replaced by one built from the observations.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from opentelemetry import trace

from orchestrator.agent.decisions import (
    Action,
    Decision,
    DecisionError,
    ToolForm,
    act_schema,
    act_tools,
    decision_of,
    decision_text,
    final_schema,
    final_tools,
    parse_decision,
    parse_decisions,
    parse_plan,
    plan_tools,
    search_schema,
)
from orchestrator.agent.plan import (
    NO_STEP_EXAMPLES,
    Example,
    Part,
    answer_of,
    blocked,
    current_part,
    given_results,
    plan_json,
    plan_schema,
    select_examples,
    stated_parts,
    unquoted,
    uses_of,
    worker_examples,
)
from orchestrator.cost.ledger import LedgerEntry
from orchestrator.errors import ModelError, ToolsUnsupportedError
from orchestrator.models.calls import call_model
from orchestrator.models.context import BudgetStop, RunContext
from orchestrator.toolsets.catalog import Catalog
from orchestrator.tracing import attrs as A
from orchestrator.tracing.spans import open_span
from orchestrator.workers.definitions import output_text
from orchestrator.workers.grounding import (
    Evidence,
    candidate_spans,
    check_answer,
    check_failures_stated,
    check_results_stated,
    check_tool_args,
    check_worker_input,
)
from orchestrator.workers.operations import answering, asked_operations, check_tool_fits

__all__ = [
    "BEYOND",
    "DERIVED",
    "SYSTEM_PROMPT",
    "AgentParts",
    "controller_step",
    "is_model_decision",
    "stopped_answer",
]

SYSTEM_PROMPT = """You lead an assistant that answers only with tools and workers, never from memory.

First reply with a plan, {{"plan": [...]}}: one part for each thing the request asks, in order.
- {{"tool": "<one computation in plain words, with its values copied from the request>"}} for {covers}.
- {{"worker": "<name>", "text": "<the text, copied from the request>"}} when the request gives a text and asks for what one of these workers does with it (such as summarize it, rewrite it in another tone, classify it, extract a record from it). Workers:
{workers}
A computation that needs an earlier result is its own later part, which names the parts it takes: "uses": [<their numbers>]. If no tool or worker can answer{beyond}, reply {{"plan": []}}.

For each tool part you are shown the tools found for it. Reply with one action:
{{"action": "call_tool", "tool": "<a found tool>", "args": {{...}}}} taking every value from the request or an earlier observation
{{"action": "skip", "reason": "..."}} if no found tool does this part"""

FINAL_PROMPT = """You write an assistant's final answer from the results its tools and workers gave. Reply with {"action": "final", "answer": "..."}: one short sentence per result, answering the user's request. State every result exactly as given (numbers, dates, labels, names; round long decimals to 2 places), and say plainly when a part could not be done. Add no other facts, numbers or advice."""

_REPAIR_LEAD = "Invalid reply:"  # starts the repair message; a reply that repeats it is not an answer
DERIVED = {"decided_by": "plan"}  # response_metadata of a step the plan fixed (no model call)
SAME_REPLY = {"decided_by": "same_reply"}  # a step that came in the same reply as the step after it
EXAMPLE = {"example": True}  # response_metadata of a worked example's turn (never in the state)
CANNOT = "I can't answer that: none of my tools or workers can do it."
_EXAMPLES = 3
COVERS = "a computation or a lookup that one of the tools does"
# What no tool of a default catalog does, shown as what an empty plan is for (with worked empty plans on
# these topics). A catalog whose tools do such things (services, APIs, actions) names its own, or "".
BEYOND = "live data, news, facts about the world, actions in the world"
# a search over the agent's state (the find_tools node's function): the update it makes
Search = Callable[[Mapping[str, Any], RunContext], Awaitable[dict[str, Any]]]


def merge_loaded(left: list[str], right: list[str] | dict[str, list[str]]) -> list[str]:
    """Reducer for loaded tool ids: append-only, never reordered (keeps the prompt prefix cache-stable),
    except when a load past the provider's limit evicts tools: `{"drop": [...], "add": [...]}`."""
    if isinstance(right, dict):
        dropped = set(right.get("drop", ()))
        kept = [t for t in left if t not in dropped]
        return kept + [r for r in right.get("add", ()) if r not in kept]
    return left + [r for r in right if r not in left]


@dataclass(frozen=True, eq=False)  # hashed by identity: one graph's parts key its example bank
class AgentParts:
    """What the agent loop is given besides the run context: which slot plans and decides, what its tools
    cover (one phrase in the system prompt), and worked plan examples for them (retrieved per request)."""

    slot: str = "controller"
    covers: str = COVERS
    examples: tuple[Example, ...] = ()
    beyond: str = BEYOND
    # the find_tools node's search, run here for the searches the plan fixes (None: they go to the node)
    search: Search | None = None


def is_model_decision(message: BaseMessage) -> bool:
    """A controller message that a model call produced (the ones the step limit counts): one per reply,
    however many parallel calls it made."""
    return isinstance(message, AIMessage) and message.response_metadata.get("decided_by") not in (
        "plan",
        "same_reply",
    )


@functools.lru_cache(maxsize=32)
def system_prompt(workers: tuple[tuple[str, str], ...], covers: str, beyond: str = BEYOND) -> str:
    """The controller's system prompt for these workers (name, description) and tools (`covers`, `beyond`)."""
    listed = "\n".join(f"  {name}: {description}" for name, description in workers) or "  (none)"
    return SYSTEM_PROMPT.format(workers=listed, covers=covers, beyond=f" ({beyond})" if beyond else "")


@functools.lru_cache(maxsize=32)
def _bank(workers: tuple[tuple[str, str, tuple[str, ...]], ...], parts: AgentParts) -> tuple[Example, ...]:
    mix = next((e for e in parts.examples if len(e.plan) == 1 and "tool" in e.plan[0]), None)
    empty = NO_STEP_EXAMPLES if parts.beyond == BEYOND else ()  # they show the default's topics
    return (*parts.examples, *empty, *worker_examples(workers, mix))


@functools.lru_cache(maxsize=256)
def _chosen(
    request: str, workers: tuple[tuple[str, str, tuple[str, ...]], ...], parts: AgentParts
) -> tuple[Example, ...]:
    """The examples shown for a request: chosen once, not at each of the run's controller executions."""
    return tuple(select_examples(request, _bank(workers, parts), _EXAMPLES))


def _examples(request: str, ctx: RunContext, parts: AgentParts) -> list[BaseMessage]:
    workers = tuple((w.name, w.description, tuple(w.example_requests)) for w in ctx.workers.values())
    turns: list[BaseMessage] = []
    for example in _chosen(request, workers, parts):
        turns += [HumanMessage(example.request), AIMessage(example.reply(), response_metadata=dict(EXAMPLE))]
    return turns


_QUOTED_OR_VALUE = re.compile(
    r"'[^']*'|\"[^\"]*\"|\S*\d\S*|[-+*/=%^()]|\b(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|"
    r"june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|monday|tuesday|"
    r"wednesday|thursday|friday|saturday|sunday)\b",
    re.I,
)


def search_query(text: str) -> str:
    """What a tool search is given for a part or a request: its words without quoted passages (the text a
    tool works on, not what it does: "count the words in 'convert the date'"). Numbers, dates and
    symbols stay: on the everyday-phrasing set's dev split they found the right tool as often or more
    (hybrid top-3 0.902 against 0.889 without them)."""
    return unquoted(text)


def search_words(task: str) -> str:
    """A part's words without its values (quoted text, numbers, dates): how an answer names a part whose
    values nothing supports."""
    words = " ".join(_QUOTED_OR_VALUE.sub(" ", task).split())
    return words or task


def _values_from(plan: Sequence[Part], index: int, request: str) -> str:
    """Where a part takes the values it does not name from: the earlier results it uses, each given
    with its value ("The result of part 1 is 144.5."), else the request, quoted again next to the part.
    A small model otherwise took a few-shot example's text ('the cat sat on the warm mat') for the
    request's ("Reverse the words in: red green blue": the part "reverse the words of the text"), and
    a part that used an earlier result was skipped for want of its value ("add 42 to the result")."""
    given = given_results(plan, index)
    if given or _QUOTED_OR_VALUE.search(plan[index]["tool"]):
        return given
    return f" Its values are in the request: {json.dumps(request, ensure_ascii=False)}."


def _tool_problems(ctx: RunContext, task: str, d: Decision, evidence: Evidence) -> list[str]:
    """What is wrong with a call for a part: values nothing gives, or a tool that does another operation
    than the one the part asks for (an average to a tool that adds up)."""
    entry = ctx.catalog.get(d.tool)
    misfit = check_tool_fits(task, d.tool, entry.description)
    return check_tool_args(d.args, entry.parameters, evidence) + misfit


def _fitting(catalog: Catalog, task: str, tools: Sequence[str]) -> list[str]:
    """The found tools offered for a part: those that fit its operation, when any does (a grammar then
    never lets the model pick one that can't answer); all of them otherwise."""
    fit = [t for t in tools if not check_tool_fits(task, t, catalog.get(t).description)]
    return fit or list(tools)


def evidence_of(request: str, plan: Sequence[Part]) -> Evidence:
    """The request and every settled part's result: what a step may draw values from."""
    return Evidence(request, [p["result"] for p in plan if p["status"] == "done" and p["result"]])


def _as_worker_part(part: Part, workers: Mapping[str, str], spans: Sequence[str]) -> Part:
    """A tool part that names a worker is that worker's part: a small model sometimes writes
    `{"tool": "classify_request"}` for `{"worker": "classify_request", "text": ...}`. It gets the first
    text the request offers a worker (a quoted passage, what follows a colon, or the whole request)."""
    named = [w for w in workers if part["tool"] and w in part["tool"]]
    if not named:
        return part
    if not spans:
        return {
            **part,
            "tool": "",
            "worker": named[0],
            "status": "failed",
            "note": "no text was given for it",
        }
    return {**part, "tool": "", "worker": named[0], "text": spans[0]}


def _without_ungrounded_options(
    decision: Decision, parameters: Mapping[str, Any], evidence: Evidence
) -> Decision:
    """An optional argument whose value nothing gives is dropped, so the tool's default applies: a small
    model likes to fill every optional field, and repairing that often ends in a skipped part."""
    required = set(parameters.get("required", []))
    args = {
        k: v
        for k, v in decision.args.items()
        if k in required or not check_tool_args({k: v}, parameters, evidence)
    }
    return decision if args == decision.args else dataclasses.replace(decision, args=args)


class _Step:
    """What one controller execution produced: messages for the transcript, plan patches, costs."""

    def __init__(self, loaded: Sequence[str] = ()) -> None:
        self.messages: list[BaseMessage] = []
        self.patches: list[dict[str, Any]] = []
        self.entries: list[LedgerEntry] = []
        self.model_called = False
        self.steps_left: int | None = None  # model decisions the budget still allows, where it sets some
        self.loaded_before = list(loaded)
        self.loaded = list(loaded)  # the tools bound, with what the searches made here loaded

    def loaded_update(self) -> list[str] | dict[str, list[str]] | None:
        """The change to the loaded tools, as `merge_loaded` takes it (None: none)."""
        if self.loaded == self.loaded_before:
            return None
        dropped = [t for t in self.loaded_before if t not in self.loaded]
        added = [t for t in self.loaded if t not in self.loaded_before]
        return {"drop": dropped, "add": added} if dropped else added

    def derived(self, decision: Decision) -> None:
        self.messages.append(AIMessage(decision.to_json(), response_metadata=dict(DERIVED)))

    def replied(self, decisions: Sequence[Decision]) -> None:
        """The steps of one model reply, in order: the last counts as the model's decision, the ones
        before it came in the same reply."""
        for n, decision in enumerate(decisions, 1):
            meta = {} if n == len(decisions) else dict(SAME_REPLY)
            self.messages.append(AIMessage(decision.to_json(), response_metadata=meta))

    def patch(self, plan: list[Part], index: int, **fields: Any) -> None:
        plan[index] = cast(Part, {**plan[index], **fields})
        self.patches.append({"index": index, **fields})


_D = TypeVar("_D")  # a decision, or the several decisions of one reply


def _readable(msg: AIMessage, form: ToolForm, parse: Callable[[str], Any]) -> bool:
    """Does a reply without a tool call still hold the decision (a call the model wrote, or the decision's
    JSON)? Then it is used as it is."""
    try:
        parse(decision_text(msg, form))
    except (DecisionError, ValueError):
        return False
    return True


TIGHT = 0.5  # a limit is shown to the controller once at most this share of it is left


def _with_budget(ctx: RunContext, prompt: list[BaseMessage], steps_left: int | None) -> list[BaseMessage]:
    """The prompt with what is left of the run's budget at the end of its last message (only there: the
    system prompt and the tools stay the same from call to call, so a cached prefix stays valid).

    Only the limits that bind are shown: those of which at most `TIGHT` is left. A note of a budget far
    from spent changed the local 1.5B's plans (4 of 8 everyday questions it answered right without a
    budget became "I can't answer that"), and tells any model nothing it can act on.
    """
    left = ctx.meter.left(tight=TIGHT)
    steps = ctx.meter.budget.steps
    if steps_left is not None and steps is not None and steps_left <= TIGHT * steps:
        left.append(f"{steps_left} model steps")
    if not left or not prompt or not isinstance(prompt[-1], HumanMessage):
        return prompt
    note = "Budget left: " + ", ".join(left) + "."
    return [*prompt[:-1], HumanMessage(f"{prompt[-1].content}\n\n({note})")]


def _record_problems(ctx: RunContext, problems: list[str]) -> None:
    """A failed grounding check on the span: how many problems always, what they are (values from the
    request) only with content capture."""
    span = trace.get_current_span()
    span.set_attribute(A.UNGROUNDED_COUNT, len(problems))
    if ctx.capture_content:
        span.set_attribute(A.UNGROUNDED, problems[:10])


async def _decide(
    ctx: RunContext,
    slot: str,
    prompt: list[BaseMessage],
    schema: dict[str, Any],
    parse: Callable[[str], _D],
    check: Callable[[_D], list[str]],
    repair_hint: str,
    step: _Step,
    form: ToolForm | None = None,
) -> tuple[_D, list[str]]:
    """One model decision with one repair: returns it and the problems its check still finds.

    A model that calls tools natively gets the step as `form` (tools bound, a call required) and its call
    is read back as the JSON decision; any other model gets `schema` (a JSON schema, or a grammar for a
    local model). Either way the same parser, checks and repair apply.
    """
    span = trace.get_current_span()
    native = form is not None and ctx.slots[slot].profile.capabilities.tool_calling
    span.set_attribute(A.DECISION_STRATEGY, "tool_calls" if native else "json_schema")
    last_error = ""
    for attempt in range(2):
        asked = _with_budget(ctx, prompt, step.steps_left)
        msg = None
        if native and form is not None:
            try:
                msg, entries = await call_model(
                    ctx, slot, "controller", asked, max_tokens=ctx.limits.max_tokens, options=form.options()
                )
            except ToolsUnsupportedError as exc:  # the endpoint refuses tools: the JSON-schema rung instead
                step.entries.extend(getattr(exc, "ledger_entries", []))
                native = False
                span.set_attribute(A.DECISION_STRATEGY, "json_schema")
                span.set_attribute(A.DOWNGRADED, str(exc)[:300])
            else:
                ignored = [
                    d
                    for d in msg.response_metadata.get("downgraded") or []
                    if d.get("feature") == "tool_choice"
                ]
                if ignored and not msg.tool_calls and not _readable(msg, form, parse):
                    # the server ignored the required call (and will be asked the JSON-schema way from now on):
                    # this attempt is asked again that way, not spent on a repair
                    step.entries.extend(entries)
                    native, msg = False, None
                    span.set_attribute(A.DECISION_STRATEGY, "json_schema")
                    span.set_attribute(A.DOWNGRADED, str(ignored[0].get("reason", ""))[:300])
        if msg is None:
            msg, entries = await call_model(
                ctx, slot, "controller", asked, max_tokens=ctx.limits.max_tokens, schema=schema
            )
        step.entries.extend(entries)
        raw = str(msg.content)
        try:
            if native and form is not None:
                raw = decision_text(msg, form)
            decision = parse(raw)
        except DecisionError as exc:
            last_error = str(exc)
            problems: list[str] = []
        else:
            problems = check(decision)
            if attempt == 1 and _REPAIR_LEAD in raw:
                problems.append("the reply repeats the error message instead of answering")
            if not problems or attempt == 1:
                if attempt == 1:
                    span.set_attribute(A.REPAIRS, 1)
                if problems:
                    _record_problems(ctx, problems)
                return decision, problems
            _record_problems(ctx, problems)
            last_error = "; ".join(problems) + ". " + repair_hint
        if attempt == 0:
            prompt = [
                *prompt,
                AIMessage(raw),
                HumanMessage(f"{_REPAIR_LEAD} {last_error}. Reply again with one JSON."),
            ]
    raise ModelError(f"the controller's reply was not a valid decision after one repair: {last_error}")


async def controller_step(
    state: Mapping[str, Any], ctx: RunContext, parts: AgentParts = AgentParts()
) -> dict[str, Any]:
    """One controller execution (see the module docstring)."""
    request: str = state["input"]
    transcript: list[BaseMessage] = list(state.get("messages", []))
    made = sum(1 for m in transcript if is_model_decision(m))
    budget_steps = ctx.meter.budget.steps
    limit = min(ctx.limits.max_steps, budget_steps) if budget_steps is not None else ctx.limits.max_steps
    if made >= limit:
        raise BudgetStop(f"step limit of {limit} reached")
    workers = {w.name: w.description for w in ctx.workers.values()}
    head: list[BaseMessage] = [
        SystemMessage(system_prompt(tuple(workers.items()), parts.covers, parts.beyond)),
        *_examples(request, ctx, parts),
        HumanMessage(request),
    ]
    span = trace.get_current_span()
    step = _Step(state.get("loaded") or [])
    if budget_steps is not None:
        step.steps_left = budget_steps - made
    plan: list[Part] | None = [dict(p) for p in state["plan"]] if state.get("plan") is not None else None  # type: ignore[misc]
    update: dict[str, Any] = {}

    if plan is None:
        spans = candidate_spans(request)  # no quoted text, nothing after a colon: no worker can be asked
        request_evidence = Evidence(request)

        def check_plan(d: Decision) -> list[str]:
            return [
                f"part {n}: {p}"
                for n, part in enumerate(d.plan, 1)
                if part["worker"]
                for p in check_worker_input(part["text"], request_evidence)
            ]

        capabilities = ctx.slots[parts.slot].profile.capabilities
        schema = plan_schema(list(workers), spans, many=capabilities.tool_calling)
        decision, _ = await _decide(
            ctx,
            parts.slot,
            head,
            schema,
            lambda raw: parse_plan(raw, list(workers)),
            check_plan,
            "Copy every value and text exactly from the request.",
            step,
            plan_tools(schema),
        )
        step.model_called = True
        plan = [_as_worker_part(cast(Part, dict(p)), workers, spans) for p in decision.plan]
        for n, part in enumerate(plan):
            if part["worker"] and check_worker_input(part["text"], request_evidence):
                plan[n] = cast(Part, {**part, "status": "failed", "note": "its text is not in the request"})
        step.messages.append(AIMessage(plan_json(plan)))
        update["plan"] = plan
        # The parts' kinds always; their words and texts (the user's own) only with content capture.
        span.set_attribute(A.PLAN_PARTS, [f"worker:{p['worker']}" if p["worker"] else "tool" for p in plan])
        if ctx.capture_content:
            span.set_attribute(A.PLAN, plan_json(plan))

    await _advance(ctx, parts.slot, request, head + transcript, plan, step, parts.search)
    update["messages"] = step.messages
    if (loaded := step.loaded_update()) is not None:
        update["loaded"] = loaded
    if step.patches and "plan" not in update:  # a plan made now already holds its patches
        update["plan"] = step.patches
    last = step.messages[-1] if step.messages else None
    if isinstance(last, AIMessage):
        decided = last.response_metadata.get("decided_by", "model")
        span.set_attribute(A.DECIDED_BY, str(decided))
        body = json.loads(str(last.content))
        if body.get("action") == "final":
            update |= {"answer": body["answer"], "status": "ok"}
    return update


async def _advance(
    ctx: RunContext,
    slot: str,
    request: str,
    prompt: list[BaseMessage],
    plan: list[Part],
    step: _Step,
    search: Search | None = None,
) -> None:
    """Take steps until one needs a node (or a second model call): the rest of one controller execution.

    A search the plan fixes runs here (with `search`) when the model can still be asked in this execution:
    the part is searched and decided in one step instead of a trip through the find_tools node and back.
    """
    while True:
        index = current_part(plan)
        if index is None:
            await _final(ctx, slot, request, prompt + step.messages, plan, step)
            return
        part = plan[index]
        if blocked(plan, index):  # a result it uses could not be done: nor can it
            note = "it needs the result of an earlier part, which could not be done"
            step.patch(plan, index, status="failed", note=note)
            continue
        if part["worker"]:  # this and the worker parts right after it: they fan out together
            for later in _delegations(plan, index):
                step.derived(Decision("delegate", worker=later["worker"], input=later["text"]))
            return
        capabilities = ctx.slots[slot].profile.capabilities
        run = _tool_run(plan, index) if capabilities.tool_calling and capabilities.parallel_tool_calls else []
        transcript = prompt + step.messages
        for i in run:  # a part that found nothing and may not search again fails before the model is asked
            exhausted = own_searches(transcript, i) >= MAX_OWN_SEARCHES
            if plan[i]["status"] == "searched" and not plan[i]["tools"] and exhausted:
                note = plan[i]["note"] or "no tool was found for it"
                step.derived(Decision("skip", reason=note, part=i))
                step.patch(plan, i, status="failed", note=note)
        run = [i for i in run if plan[i]["status"] in ("pending", "searched")]
        if plan[index]["status"] == "failed":
            continue
        if len(run) > 1:  # a model that makes parallel calls: these parts are searched, then asked, at once
            pending = [i for i in run if plan[i]["status"] == "pending"]
            for i in pending:
                step.derived(Decision("find_tools", query=search_query(plan[i]["tool"]), part=i))
            if pending and search is not None and not step.model_called:
                await _search_here(search, ctx, request, prompt, plan, step)
                continue
            if not pending and not step.model_called:
                await _act_together(ctx, slot, request, prompt, plan, step, step.loaded, run)
            return
        if part["status"] == "pending":
            step.derived(Decision("find_tools", query=search_query(part["tool"])))
            if search is not None and not step.model_called:
                await _search_here(search, ctx, request, prompt, plan, step)
                continue
            return
        searched = own_searches(prompt + step.messages, index)
        # the model's own search is offered where the engine's found nothing: a weak model behind a server
        # that claims native tool calls searched again (and then skipped) where it had the tool
        own = capabilities.tool_calling and searched < MAX_OWN_SEARCHES and not part["tools"]
        if not part["tools"] and not own:  # nothing found: the model rewrites the query once, or it fails
            if capabilities.tool_calling or searched >= 1:
                step.derived(Decision("skip", reason=part["note"] or "no tool was found for it"))
                step.patch(plan, index, status="failed", note=part["note"] or "no tool was found for it")
                continue
            if not step.model_called:
                await _search_again(ctx, slot, request, prompt, plan, index, step)
            return
        if step.model_called:
            return  # one model call per execution: the next one comes on the next turn
        offer = "Call the found tool that does it, or skip."
        if own:
            offer = "No tool has been found for it yet: search with find_tools in other words, or skip."
        instruction = HumanMessage(
            f"Part {index + 1} of {len(plan)}: {part['tool']}.{_values_from(plan, index, request)} {offer}"
        )
        step.messages.append(instruction)
        evidence = evidence_of(request, plan)

        searched_for = _queries(prompt + step.messages, index)

        def check(
            d: Decision,
            evidence: Evidence = evidence,
            task: str = part["tool"],
            done: set[str] = searched_for,
        ) -> list[str]:
            if d.action == "find_tools" and " ".join(d.query.lower().split()) in done:
                return [f"{d.query!r} was searched already: call a found tool, search other words, or skip"]
            return _tool_problems(ctx, task, d, evidence) if d.action == "call_tool" else []

        actions: tuple[Action, ...] = ("call_tool", "skip", "find_tools") if own else ("call_tool", "skip")

        def parse(
            raw: str,
            tools: list[str] = part["tools"],
            evidence: Evidence = evidence,
            actions: tuple[Action, ...] = actions,
        ) -> Decision:
            decision = parse_decision(raw, tools, allowed=actions)
            if decision.action != "call_tool":
                return decision
            return _without_ungrounded_options(decision, ctx.catalog.get(decision.tool).parameters, evidence)

        decision, problems = await _decide(
            ctx,
            slot,
            prompt + step.messages,
            act_schema(_fitting(ctx.catalog, part["tool"], part["tools"]), ctx.catalog, search=own),
            parse,
            check,
            "Take values only from the request or the observations, or skip.",
            step,
            act_tools(step.loaded, ctx.catalog, limits=ctx.tool_limits(slot), search=own),
        )
        step.model_called = True
        if decision.action == "find_tools":  # the model's own search: its finds are added to the part's
            step.messages.append(AIMessage(dataclasses.replace(decision, part=index).to_json()))
            return
        if decision.action == "call_tool" and not problems:
            step.messages.append(AIMessage(decision.to_json()))
            return
        if decision.action == "call_tool":
            note = _not_called(ctx, part["tool"], decision)
            step.derived(Decision("skip", reason=note))
        else:
            note = decision.reason
            step.messages.append(AIMessage(decision.to_json()))
        step.patch(plan, index, status="failed", note=note)


async def _search_here(
    search: Search, ctx: RunContext, request: str, prompt: list[BaseMessage], plan: list[Part], step: _Step
) -> None:
    """The find_tools node's work for the searches just derived, inside this execution: its observations
    join the transcript, its patches the plan, its loads the bound tools. Traced as the node nested in
    the controller (`node_path`), so its time is the search's and not the controller's own."""
    state = {"input": request, "plan": plan, "loaded": step.loaded, "messages": prompt + step.messages}
    attributes: dict[str, Any] = {A.RUN_ID: ctx.run_id, A.NODE: "find_tools", A.NODE_PATH: _NESTED_SEARCH}
    with open_span(ctx.tracer, "find_tools", "node", attributes):
        found = await search(state, ctx)
    step.messages.extend(found.get("messages", []))
    for patch in found.get("plan", []):
        step.patch(plan, patch["index"], **{k: v for k, v in patch.items() if k != "index"})
    if "loaded" in found:
        step.loaded = merge_loaded(step.loaded, found["loaded"])


_NESTED_SEARCH = json.dumps(["controller", "find_tools"])


def _not_called(ctx: RunContext, task: str, decision: Decision) -> str:
    """Why a call still wrong after its repair was not made (the part's note)."""
    if check_tool_fits(task, decision.tool, ctx.catalog.get(decision.tool).description):
        return f"not called: {decision.tool} does not give the {' or '.join(sorted(asked_operations(task)))}"
    return "not called: a value in its arguments is in neither the request nor an observation"


MAX_OWN_SEARCHES = 3  # searches in its own words a model may make for one part (each also counts as a step)


def _searches(transcript: Sequence[BaseMessage], index: int) -> list[tuple[str, bool]]:
    """The searches made for part `index` so far, in order: each query (lower case, spaces collapsed) and
    whether the model itself asked for it (the engine's own first search is not the model's)."""
    out = []
    for message in transcript:
        if not isinstance(message, AIMessage):
            continue
        decision = decision_of(str(message.content)) or {}
        if decision.get("action") != "find_tools" or decision.get("part") not in (None, index + 1):
            continue
        own = decision.get("part") == index + 1 and (
            is_model_decision(message) or message.response_metadata.get("decided_by") == "same_reply"
        )
        out.append((" ".join(str(decision.get("query", "")).lower().split()), own))
    return out


def _queries(transcript: Sequence[BaseMessage], index: int) -> set[str]:
    """The queries searched for part `index` so far: a search the same as one of them finds the same tools."""
    return {query for query, _ in _searches(transcript, index)}


def own_searches(transcript: Sequence[BaseMessage], index: int) -> int:
    """How many searches the model itself asked for part `index` (the engine's first search not counted)."""
    return sum(own for _, own in _searches(transcript, index))


async def _search_again(
    ctx: RunContext,
    slot: str,
    request: str,
    prompt: list[BaseMessage],
    plan: list[Part],
    index: int,
    step: _Step,
) -> None:
    """A part whose search found nothing, for a model that does not call tools: it writes the search once
    more in its own words (or skips), and the engine searches with them."""
    part = plan[index]
    instruction = HumanMessage(
        f"Part {index + 1} of {len(plan)}: {part['tool']}. {part['note'] or 'No tool was found for it'}. "
        'Reply {"action": "find_tools", "query": "..."} with other words for what the tool does '
        "(e.g. 'multiply two numbers', 'convert a temperature'), or skip."
    )
    step.messages.append(instruction)
    decision, _ = await _decide(
        ctx,
        slot,
        prompt + step.messages,
        search_schema(),
        lambda raw: parse_decision(raw, [], allowed=("find_tools", "skip")),
        lambda d: [],
        "Reply with other words for the search, or skip.",
        step,
    )
    step.model_called = True
    if decision.action == "find_tools":
        step.messages.append(AIMessage(dataclasses.replace(decision, part=index).to_json()))
        return
    step.messages.append(AIMessage(decision.to_json()))
    step.patch(plan, index, status="failed", note=decision.reason)


def _tool_run(plan: Sequence[Part], index: int) -> list[int]:
    """The open tool parts from `index` on, up to the first part of another kind, a settled one, or one
    that uses the result of a part not yet done (it waits for that result)."""
    out = []
    for i in range(index, len(plan)):
        if plan[i]["worker"] or plan[i]["status"] not in ("pending", "searched"):
            break
        if any(plan[u]["status"] != "done" for u in uses_of(plan, i)):
            break
        out.append(i)
    return out


async def _act_together(
    ctx: RunContext,
    slot: str,
    request: str,
    prompt: list[BaseMessage],
    plan: list[Part],
    step: _Step,
    loaded: Sequence[str],
    run: list[int],
) -> None:
    """Several searched parts asked in one reply, for a model that makes parallel tool calls.

    Each call goes to the part it was found for (else the first part still free). A part whose call takes
    a value nothing gives yet waits for the next turn: it needs a result that the other calls will bring.
    Only when no call in the reply can be made does a part fail, the first one, as a lone part would.
    """
    listed = "\n".join(
        f"Part {i + 1}: {plan[i]['tool']}"
        + ("" if plan[i]["tools"] else " (no tool found for it yet)")
        + (f".{given_results(plan, i)}" if uses_of(plan, i) else "")
        for i in run
    )
    instruction = HumanMessage(
        f"Parts {', '.join(str(i + 1) for i in run)} of {len(plan)}:\n{listed}\n"
        "Call the found tool for each part whose values are known now, all in this reply. A part that needs "
        "another part's result waits for its observation. Skip a part (give its number) if no found tool "
        "does it"
        + (
            "; search with find_tools (give its number) for a part with no tool found yet."
            if any(not plan[i]["tools"] for i in run)
            else "."
        )
    )
    step.messages.append(instruction)
    evidence = evidence_of(request, plan)
    tools = list(dict.fromkeys(t for i in run for t in plan[i]["tools"]))

    def problems_of(d: Decision, target: int | None = None) -> list[str]:
        if d.action != "call_tool":
            return []
        if target is None:  # the part it is for: the one it names, else the first whose tools it is among
            target = d.part if d.part in run else next((i for i in run if d.tool in plan[i]["tools"]), run[0])
        return _tool_problems(ctx, plan[target]["tool"], d, evidence)

    allowed: tuple[Action, ...] = ("call_tool", "skip")
    if any(not plan[i]["tools"] for i in run):
        allowed = ("call_tool", "skip", "find_tools")

    def parse(raw: str) -> list[Decision]:
        decisions = parse_decisions(raw, tools, allowed=allowed)
        return [
            _without_ungrounded_options(d, ctx.catalog.get(d.tool).parameters, evidence)
            if d.action == "call_tool"
            else d
            for d in decisions
        ]

    def check(decisions: list[Decision]) -> list[str]:
        found = [problems_of(d) for d in decisions]
        return [] if any(not p for p in found) else [p for ps in found for p in ps]

    decisions, _ = await _decide(  # each call's own problems are weighed below
        ctx,
        slot,
        prompt + step.messages,
        act_schema(plan[run[0]]["tools"], ctx.catalog),  # a downgraded endpoint is asked one part
        parse,
        check,
        "Take values only from the request or the observations; a part that needs another's result waits.",
        step,
        act_tools(
            loaded,
            ctx.catalog,
            parallel=True,
            limits=ctx.tool_limits(slot),
            search=any(not plan[i]["tools"] for i in run),
        ),
    )
    step.model_called = True
    free = list(run)
    skips: list[Decision] = []
    calls: list[Decision] = []
    searches: list[Decision] = []
    held: list[int] = []
    for d in decisions:
        if not free:
            break  # more calls than parts: the extra ones are not made
        if d.action == "skip":
            target = d.part if d.part in free else free[0]
        elif d.action == "find_tools":
            target = d.part if d.part in free else next((i for i in free if not plan[i]["tools"]), free[0])
        else:
            target = next((i for i in free if d.tool in plan[i]["tools"]), free[0])
        free.remove(target)
        d = dataclasses.replace(d, part=target)
        if d.action == "skip":
            skips.append(d)
        elif d.action == "find_tools":
            searches.append(d)
        elif problems_of(d, target):
            held.append(target)
        else:
            calls.append(d)
    if held:
        trace.get_current_span().set_attribute(A.HELD_PARTS, len(held))
    # the calls (or else the searches) last: their node takes the trailing steps of one kind together; a
    # search asked beside calls is asked again on the next turn
    step.replied([*skips, *(calls or searches)])
    for d in skips:
        step.patch(plan, cast(int, d.part), status="failed", note=d.reason)
    if not skips and not calls and not searches:  # nothing in the reply can be done: the first part fails
        note = "not called: a value in its arguments is in neither the request nor an observation"
        step.derived(Decision("skip", reason=note, part=held[0]))
        step.patch(plan, held[0], status="failed", note=note)


def _delegations(plan: Sequence[Part], index: int) -> list[Part]:
    """The pending worker parts from `index` on, up to the first part of another kind: their texts come from
    the request, never from an earlier result, so they can run at once."""
    out = []
    for part in plan[index:]:
        if not part["worker"] or part["status"] != "pending":
            break
        out.append(part)
    return out


def _results(plan: Sequence[Part]) -> list[tuple[str, str, bool]]:
    """(what, result, every value) for each done part the answer states (`stated_parts`: not a result a
    later part was made from), as the final answer must state them: a worker's output whole; of a tool's
    result, the values that answer its part when it has named ones (`answering`), else any value."""
    out = []
    for p in (plan[i] for i in stated_parts(plan)):
        if p["status"] != "done":
            continue
        if p["worker"]:
            out.append((p["worker"], p["result"], True))
        else:
            out.append((p["tool"], *answering(p["tool"], p["result"])))
    return out


def _unfinished(plan: Sequence[Part]) -> list[str]:
    """The failed parts whose used results were done: the answer states those results and must say that
    the step after them could not be done."""
    return [
        p["tool"]
        for n, p in enumerate(plan)
        if p["status"] == "failed" and any(plan[u]["status"] == "done" for u in uses_of(plan, n))
    ]


async def _final(
    ctx: RunContext, slot: str, request: str, prompt: list[BaseMessage], plan: list[Part], step: _Step
) -> None:
    """The final answer: written by the model from the results alone, checked, and never invented.

    A request that was only worker parts, all done, is answered with the workers' outputs themselves, no
    model call: a summary or a rewrite is the answer asked for, a label or a record is stated whole, and
    a paraphrase could only lose or change some of it.

    Otherwise the model writes it in a prompt of its own (the request and the results, no transcript and
    no worked examples), so nothing but the results can leak into it. The answer must state every result and
    nothing the request and the results do not support; it gets one repair, then is built from the
    results instead.
    """
    done = [p for p in plan if p["status"] == "done"]
    evidence = evidence_of(request, plan)
    if not done:
        # Only notes that state nothing unsupported (a skip reason is the model's own words).
        notes = "; ".join(p["note"] for p in plan if p["note"] and not check_answer(p["note"], evidence))
        answer = (
            CANNOT
            if not plan
            else "I can't answer that with my tools and workers" + (f" ({notes})." if notes else ".")
        )
        step.derived(Decision("final", answer=answer))
        return
    outputs = _worker_outputs(plan)
    if outputs is not None:
        step.derived(Decision("final", answer=outputs))
        return
    if step.model_called:
        return
    lines = []
    for p in (plan[i] for i in stated_parts(plan)):
        what = p["tool"] or f"{p['worker']} of the text"
        ok = p["status"] == "done"
        lines.append(f"- {what}: {_result_text(p)}" if ok else f"- {what}: could not be done")
    final_prompt: list[BaseMessage] = [
        SystemMessage(FINAL_PROMPT),
        HumanMessage(f"Request: {request}\nResults:\n" + "\n".join(lines)),
    ]
    results = _results(plan)
    decision, problems = await _decide(
        ctx,
        slot,
        final_prompt,
        final_schema(),
        lambda raw: parse_decision(raw, [], allowed=("final",)),
        lambda d: (
            check_answer(d.answer, evidence)
            + check_results_stated(d.answer, results)
            + check_failures_stated(d.answer, _unfinished(plan))
        ),
        "State each result exactly as given, and nothing else.",
        step,
        final_tools(),
    )
    step.model_called = True
    if not problems:
        step.messages.append(AIMessage(decision.to_json()))
        return
    trace.get_current_span().set_attribute(A.ANSWER_FALLBACK, True)
    step.derived(Decision("final", answer=fallback_answer(plan, evidence)))


def _result_text(part: Part) -> str:
    """A settled part's result as an answer states it: of a tool's, the values that answer its part
    (`answer_of`: the mean of a summary, for "the average of ..."); a worker's structured output (kept as
    JSON) by its label, or by the fields it found."""
    if not part["worker"]:
        return answer_of(part)
    try:
        value = json.loads(part["result"])
    except json.JSONDecodeError:
        return part["result"]  # a free-text worker's output
    return output_text(value) if isinstance(value, dict) else part["result"]


def _worker_outputs(plan: Sequence[Part]) -> str | None:
    """The answer of a plan of worker parts only, every one done: each output as it is (one per line,
    named by its worker, when there are several); None for any other plan."""
    if not plan or any(not p["worker"] or p["status"] != "done" for p in plan):
        return None
    if len(plan) == 1:
        return _result_text(plan[0])
    return "\n".join(f"{p['worker']}: {_result_text(p)}" for p in plan)


def fallback_answer(plan: Sequence[Part], evidence: Evidence | None = None, stopped: bool = False) -> str:
    """An answer built from the results alone, for when the model's answer states what they do not, or
    when a limit stopped the run (`stopped`: the parts still open say so).

    Each part is named by its words; words that carry a value nothing supports (a plan may write
    "7**2" for "7 squared") are named without their values.
    """
    lines = []
    for p in (plan[i] for i in stated_parts(plan)):
        what = p["tool"] or f"{p['worker']} of the message"
        if evidence is not None and check_answer(what, evidence):
            what = search_words(what)
        if p["status"] == "done":
            lines.append(f"{what}: {_result_text(p)}")
        elif stopped and p["status"] in ("pending", "searched"):
            lines.append(f"{what}: not done (the run stopped first)")
        else:
            lines.append(f"{what}: could not be done")
    return "Results: " + "; ".join(lines) + "."


def stopped_answer(state: Mapping[str, Any]) -> dict[str, Any]:
    """What a run stopped by a limit ends with: an answer built from the results so far (none when no
    part is done)."""
    plan: list[Part] = list(state.get("plan") or [])
    if not any(p["status"] == "done" for p in plan):
        return {}
    return {"answer": fallback_answer(plan, evidence_of(str(state.get("input") or ""), plan), stopped=True)}
