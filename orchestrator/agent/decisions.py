"""The controller's decision protocol: JSON replies constrained by a schema built for the step at hand.

| step                  | the model may reply                                                          |
|-----------------------|------------------------------------------------------------------------------|
| plan (first)          | `{"plan": [{"tool": ...} or {"worker": ..., "text": <a span of the request>}]}` |
| a tool part           | `{"action": "call_tool", "tool": <a tool found for it>, "args": {...}}` or     |
|                       | `{"action": "skip", "reason": ...}`                                          |
| every part settled    | `{"action": "final", "answer": ...}`                                         |

A tool part that takes earlier results names them: `{"tool": ..., "uses": [<part numbers>]}`.

Steps the plan fixes (`find_tools` for a tool part, `delegate` for a worker part, a final answer when nothing
can be done) are taken without asking the model. With a grammar-capable model the schema constrains
decoding; in every case the reply is parsed and checked here, so a tool outside the offered set can never
be called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.agent.plan import MAX_PARTS, MAX_TEXTS, TASK_MAX, Part, linked, new_part, plan_json
from orchestrator.formats import json_object
from orchestrator.profiles import ToolLimits
from orchestrator.toolsets.catalog import Catalog

__all__ = [
    "ACT_EXTRAS",
    "MAX_BOUND_TOOLS",
    "Decision",
    "DecisionError",
    "ToolForm",
    "act_schema",
    "act_tools",
    "decision_of",
    "decision_text",
    "final_schema",
    "final_tools",
    "fit_schema",
    "parse_decision",
    "parse_decisions",
    "parse_plan",
    "plan_tools",
    "search_schema",
    "wire_name",
    "written_call",
]

Action = Literal["plan", "find_tools", "call_tool", "delegate", "skip", "final"]
ACTIONS: tuple[Action, ...] = ("plan", "find_tools", "call_tool", "delegate", "skip", "final")
TEXT_MAX = 400
REASON_MAX = 160
QUERY_MAX = 200  # characters of a search the model writes


@dataclass(frozen=True)
class Decision:
    """One parsed controller choice."""

    action: Action
    query: str = ""
    tool: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    worker: str = ""
    input: str = ""
    answer: str = ""
    reason: str = ""
    plan: tuple[Part, ...] = ()
    part: int | None = None  # the plan part (0-based) a step of a batch is for; None: the current part

    def to_json(self) -> str:
        """The canonical JSON form (what goes back into the transcript)."""
        if self.action == "plan":
            return plan_json(self.plan)
        body: dict[str, Any] = {"action": self.action}
        if self.part is not None:  # numbered from 1 in JSON, as parts are shown to the model
            body["part"] = self.part + 1
        if self.action == "find_tools":
            body["query"] = self.query
        elif self.action == "call_tool":
            body |= {"tool": self.tool, "args": self.args}
        elif self.action == "delegate":
            body |= {"worker": self.worker, "input": self.input}
        elif self.action == "skip":
            body["reason"] = self.reason
        else:
            body["answer"] = self.answer
        return json.dumps(body, ensure_ascii=False)


class DecisionError(ValueError):
    """A reply that is not a valid decision; the message is shown to the model for its one repair."""


def _clean_params(schema: Mapping[str, Any]) -> dict[str, Any]:
    props = {
        k: {kk: vv for kk, vv in v.items() if kk != "title"} for k, v in schema.get("properties", {}).items()
    }
    out: dict[str, Any] = {"type": "object", "properties": props}
    if schema.get("required"):
        out["required"] = list(schema["required"])
    return out


def act_schema(tools: Sequence[str], catalog: Catalog, search: bool = False) -> dict[str, Any]:
    """A call to one of `tools` (each with its own argument schema), or a skip with a reason; with `search`,
    or a search in other words (for a model that calls tools natively but is asked this way, its endpoint
    having refused or ignored tools)."""
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {
                "action": {"const": "call_tool"},
                "tool": {"const": name},
                "args": _clean_params(catalog.get(name).parameters),
            },
            "required": ["action", "tool", "args"],
        }
        for name in tools
    ]
    if search:
        options.append(search_schema()["anyOf"][0])
    options.append(
        {
            "type": "object",
            "properties": {
                "action": {"const": "skip"},
                "reason": {"type": "string", "minLength": 3, "maxLength": REASON_MAX},
            },
            "required": ["action", "reason"],
        }
    )
    return {"anyOf": options}


def search_schema() -> dict[str, Any]:
    """Other words for a search that found nothing, or a skip with a reason."""
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "action": {"const": "find_tools"},
                    "query": {"type": "string", "minLength": 3, "maxLength": 80},
                },
                "required": ["action", "query"],
            },
            {
                "type": "object",
                "properties": {
                    "action": {"const": "skip"},
                    "reason": {"type": "string", "minLength": 3, "maxLength": REASON_MAX},
                },
                "required": ["action", "reason"],
            },
        ]
    }


def final_schema() -> dict[str, Any]:
    """The final answer."""
    return {
        "type": "object",
        "properties": {
            "action": {"const": "final"},
            "answer": {"type": "string", "minLength": 1, "maxLength": TEXT_MAX},
        },
        "required": ["action", "answer"],
    }


def _loads(text: str) -> dict[str, Any]:
    try:
        return json_object(text)
    except ValueError as exc:
        raise DecisionError(str(exc)) from None


def _text(data: Mapping[str, Any], key: str, action: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DecisionError(f"action {action!r} needs a non-empty string {key!r}")
    return value.strip()


def parse_plan(text: str, workers: Sequence[str]) -> Decision:
    """Parse a plan reply; a worker part must name a known worker (its text is checked for grounding)."""
    data = _loads(text)
    items = data.get("plan")
    if not isinstance(items, list):
        raise DecisionError('a plan is {"plan": [...]}, a list of parts')
    if len(items) > MAX_PARTS:
        raise DecisionError(f"a plan has at most {MAX_PARTS} parts; got {len(items)}")
    parts: list[Part] = []
    made: list[list[int]] = []  # the parts each item became (a worker item with several texts: several)
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise DecisionError(f"part {n} must be an object")
        made.append([len(parts)])
        if "tool" in item:
            task = _text(item, "tool", "plan")[:TASK_MAX]
            parts.append(new_part(tool=task, uses=_uses(item.get("uses"), made[:-1])))
        elif "worker" in item:
            worker = _text(item, "worker", "plan")
            if worker not in workers:
                raise DecisionError(f"part {n}: unknown worker {worker!r}; workers: {', '.join(workers)}")
            texts = item.get("text")
            if isinstance(texts, list):  # several texts for one worker: a part each, fanned out together
                if not texts or len(texts) > MAX_TEXTS:
                    raise DecisionError(f"part {n}: give the worker 1 to {MAX_TEXTS} texts; got {len(texts)}")
                for k, text in enumerate(texts, 1):
                    if not isinstance(text, str) or not text.strip():
                        raise DecisionError(f"part {n}: text {k} must be a non-empty string")
                    parts.append(new_part(worker=worker, text=text.strip()))
                made[-1] = list(range(made[-1][0], len(parts)))
            else:
                parts.append(new_part(worker=worker, text=_text(item, "text", "plan")))
        else:
            raise DecisionError(f'part {n} must be {{"tool": ...}} or {{"worker": ..., "text": ...}}')
    return Decision("plan", plan=tuple(linked(parts)))


def _uses(value: Any, earlier: Sequence[Sequence[int]]) -> list[int]:
    """The parts a tool part's `uses` names (1-based numbers of earlier items; one number or a list).

    Lenient on purpose: a number that names no earlier item (the part itself, a later one) is dropped
    rather than repaired, since a plan is otherwise usable and its words may still say what it uses."""
    numbers = value if isinstance(value, list) else [value]
    out: set[int] = set()
    for number in numbers:
        if isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= len(earlier):
            out.update(earlier[number - 1])
    return sorted(out)


def parse_decision(text: str, tools: Sequence[str], *, allowed: Sequence[Action]) -> Decision:
    """Parse and check one step reply; DecisionError says exactly what is wrong."""
    return _decision(_loads(text), tools, allowed)


def parse_decisions(text: str, tools: Sequence[str], *, allowed: Sequence[Action]) -> list[Decision]:
    """Parse a reply that may hold several steps at once (`{"calls": [...]}`, from a model that made
    parallel tool calls) or one; each is checked as `parse_decision` checks it. A step for a numbered part
    (`"part": 2`, 1-based as the model is shown them) keeps the number, 0-based."""
    data = _loads(text)
    items = data.get("calls") if "action" not in data else [data]
    if not isinstance(items, list) or not items:
        raise DecisionError('expected one decision or {"calls": [...]}')
    out = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise DecisionError(f"call {n} must be an object")
        decision = _decision(item, tools, allowed)
        number = item.get("part")
        if isinstance(number, int) and not isinstance(number, bool) and number >= 1:
            decision = dataclasses.replace(decision, part=number - 1)
        out.append(decision)
    return out


def _decision(data: Mapping[str, Any], tools: Sequence[str], allowed: Sequence[Action]) -> Decision:
    action = data.get("action")
    if action not in allowed:
        raise DecisionError(f"'action' must be one of {', '.join(allowed)}; got {action!r}")
    if action == "call_tool":
        tool = _text(data, "tool", action)
        if tool not in tools:
            hint = ", ".join(tools) if tools else "none"
            raise DecisionError(f"tool {tool!r} is not one of the tools found for this part ({hint})")
        args = data.get("args", {})
        if not isinstance(args, dict):
            raise DecisionError(f"'args' must be a JSON object, got {type(args).__name__}")
        return Decision("call_tool", tool=tool, args=args)
    if action == "skip":
        return Decision("skip", reason=_text(data, "reason", action)[:REASON_MAX])
    if action == "find_tools":
        return Decision("find_tools", query=_text(data, "query", action)[:QUERY_MAX])
    if action == "final":
        return Decision("final", answer=_text(data, "answer", action))
    raise DecisionError(f"action {action!r} is not one the model chooses here")


def decision_of(text: str) -> dict[str, Any] | None:
    """The decision a transcript message holds, as a dict with its action (None if it holds none)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    if "plan" in data and "action" not in data:
        return {"action": "plan", **data}
    return data if "action" in data else None


# --- the same decisions as native tool calls --------------------------------------------------------------
# A model that calls tools natively gets each step as tools to call instead of a JSON schema to follow: the
# plan as a `plan` tool, a tool part as the tools loaded so far (append-only: the prompt prefix stays
# cache-stable) plus `skip`, the answer as `final`. Its call is read back as the same JSON decision, so
# parsing, grounding checks and repairs are the same on every rung.
MAX_BOUND_TOOLS = ToolLimits().max_tools  # the default; each slot's profile has its own (`ToolLimits`)
META_TOOLS = ("plan", "skip", "final", "find_tools")
ACT_EXTRAS = ("find_tools", "skip")  # bound beside the loaded tools at a tool part: the room they take
FIND_TOOLS_HELP = (
    "Search the tool catalog again, in other words: what the tool should do, e.g. 'multiply two numbers' "
    "or 'convert a temperature'. The tools it finds are added to the ones you can call."
)


_WIRE_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")  # what OpenAI and Anthropic take in a tool name


def wire_name(name: str, max_len: int = 64) -> str:
    """The name a tool is bound under: its own when providers take it (letters, digits, `_`, `-`; at most
    `max_len`), else a stable alias (those characters of the name, cut to fit, and a hash of the whole
    name: `math.factorial` -> `math_factorial_1b5a2c3d`). The same name always gets the same alias, so the
    prompt prefix stays cache-stable."""
    if len(name) <= max_len and _WIRE_CHARS.match(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', name)[: max_len - 9]}_{digest}"


_SCHEMA_NOTES = ("examples", "example", "default", "title", "$comment", "deprecated")


def fit_schema(schema: dict[str, Any], max_chars: int | None) -> dict[str, Any]:
    """A tool's argument schema cut to `max_chars` of JSON, in steps that keep the most meaning: drop
    examples, defaults and titles; shorten descriptions to their first 80 characters; drop nested
    descriptions; keep only the required properties. Each step is taken only if the schema is still too
    big. The call's arguments are still checked against the tool's whole schema when it runs."""
    if max_chars is None or _size(schema) <= max_chars:
        return schema
    steps = (
        lambda s: _strip(s, lambda k, depth: k in _SCHEMA_NOTES),
        lambda s: _shorten(s, 80),
        lambda s: _strip(s, lambda k, depth: k == "description" and depth > 1),
        lambda s: _strip(s, lambda k, depth: k == "description"),
        _required_only,
    )
    out = schema
    for step in steps:
        out = step(out)
        if _size(out) <= max_chars:
            break
    return out


def _cut(description: str, max_chars: int | None) -> str:
    """A tool's description within half its schema budget (some servers describe a tool in pages)."""
    if max_chars is None or len(description) <= max_chars // 2:
        return description
    return description[: max_chars // 2 - 3].rstrip() + "..."


def _size(schema: Mapping[str, Any]) -> int:
    return len(json.dumps(schema, ensure_ascii=False, separators=(",", ":")))


def _strip(value: Any, drop: Callable[[str, int], bool], depth: int = 0) -> Any:
    """`value` without the keys `drop` names (except under `properties`, where keys are argument names)."""
    if isinstance(value, list):
        return [_strip(v, drop, depth) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "properties" and isinstance(item, dict):
            out[key] = {name: _strip(sub, drop, depth + 1) for name, sub in item.items()}
        elif not drop(key, depth):
            out[key] = _strip(item, drop, depth + 1)
    return out


def _shorten(value: Any, limit: int) -> Any:
    if isinstance(value, list):
        return [_shorten(v, limit) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "description" and isinstance(item, str) and len(item) > limit:
            out[key] = item[: limit - 3].rstrip() + "..."
        elif key == "properties" and isinstance(item, dict):
            out[key] = {name: _shorten(sub, limit) for name, sub in item.items()}
        else:
            out[key] = _shorten(item, limit)
    return out


def _required_only(schema: dict[str, Any]) -> dict[str, Any]:
    required = [r for r in schema.get("required", []) if isinstance(r, str)]
    props = schema.get("properties") or {}
    kept = {
        name: {k: v for k, v in props[name].items() if k in ("type", "enum")}
        for name in required
        if name in props
    }
    out: dict[str, Any] = {"type": "object", "properties": kept}
    if required:
        out["required"] = required
    return out


@dataclass(frozen=True)
class ToolForm:
    """A decision asked for as a tool call: the tools bound (OpenAI's function format) and the choice
    (`"required"`, or the one tool to call). `names` maps a bound alias back to its tool's name."""

    tools: tuple[dict[str, Any], ...]
    choice: str
    parallel: bool = False  # several calls in one reply are asked for (and read back)
    names: Mapping[str, str] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        """The call options that bind these tools."""
        options: dict[str, Any] = {"tools": list(self.tools), "tool_choice": self.choice}
        if self.parallel:
            options["parallel_tool_calls"] = True
        return options


def _function(name: str, description: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def plan_tools(schema: Mapping[str, Any]) -> ToolForm:
    """The plan step: one `plan` tool whose arguments are the plan (`schema`, from `plan_schema`)."""
    description = (
        "Write the plan: one part for each thing the request asks, in order (an empty list if none)."
    )
    return ToolForm((_function("plan", description, schema),), "plan")


def act_tools(
    loaded: Sequence[str],
    catalog: Catalog,
    parallel: bool = False,
    limits: ToolLimits | None = None,
    search: bool = False,
) -> ToolForm:
    """A tool part: every tool loaded so far, in the order loaded, then `find_tools` (with `search`: the
    model searches the catalog in its own words) and `skip`; one call is required. The loaded tools come
    first and only grow at their end, so the bound set stays a stable prefix from call to call.

    `parallel`: several parts are asked at once, so several calls may come back; `skip` and `find_tools`
    name their part. `limits`: the model's (find_tools keeps the loaded tools within `max_tools`; the
    newest are kept here too, as they are the ones the part was offered).
    """
    limits = limits or ToolLimits()
    room = limits.max_tools - (2 if search else 1)
    kept = list(loaded)[-room:] if len(loaded) > room else list(loaded)
    names = {wire_name(name, limits.max_name): name for name in kept}
    tools = [
        _function(
            alias,
            _cut(catalog.get(name).description, limits.max_schema_chars),
            fit_schema(_clean_params(catalog.get(name).parameters), limits.max_schema_chars),
        )
        for alias, name in names.items()
    ]
    skip: dict[str, Any] = {
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "why no loaded tool does this part"}},
        "required": ["reason"],
    }
    if parallel:
        skip["properties"]["part"] = {"type": "integer", "description": "the number of the part skipped"}
        skip["required"] = ["part", "reason"]
    if search:
        find: dict[str, Any] = {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "what the tool should do, in words"}},
            "required": ["query"],
        }
        if parallel:
            find["properties"]["part"] = {"type": "integer", "description": "the number of the part"}
            find["required"] = ["part", "query"]
        tools.append(_function("find_tools", FIND_TOOLS_HELP, find))
    tools.append(_function("skip", "Skip this part: none of the tools does it.", skip))
    aliases = {alias: name for alias, name in names.items() if alias != name}
    return ToolForm(tuple(tools), "required", parallel, aliases)


def final_tools() -> ToolForm:
    """The answer: one `final` tool."""
    answer = {
        "type": "object",
        "properties": {"answer": {"type": "string", "description": "the final answer to the user"}},
        "required": ["answer"],
    }
    return ToolForm((_function("final", "Give the final answer.", answer),), "final")


_CALL_TAGS = re.compile(r"^\s*<tool_call>\s*|\s*</tool_call>\s*$")


def written_call(text: str, form: ToolForm) -> dict[str, Any] | None:
    """A tool call written as text, as servers that ignore a required tool choice let models write it:
    `{"name": ..., "arguments": {...}}` (also `"tool"`/`"args"`, or `{"function": {...}}`), inside
    `<tool_call>` tags (Qwen's template) or stray braces; or the bare arguments of the one bound tool whose
    parameters they fit."""
    body = _CALL_TAGS.sub("", text).strip()
    start = body.find('{"')
    if start < 0 or body[:start].strip("{ \n") != "":
        return None
    try:
        data, _ = json.JSONDecoder().raw_decode(body[start:])  # the first object; stray braces after it
    except ValueError:
        return None
    if not isinstance(data, dict) or "action" in data or "plan" in data:
        return None
    if isinstance(data.get("function"), dict):
        data = data["function"]
    name = data.get("name", data.get("tool", data.get("function")))
    args = data.get("arguments", data.get("parameters", data.get("args")))
    if isinstance(name, str) and args is not None:
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return None
        return {"name": name, "args": args} if isinstance(args, dict) else None
    fits = [
        t["function"]["name"]
        for t in form.tools
        if set(data) <= set(t["function"]["parameters"].get("properties", {}))
        and set(t["function"]["parameters"].get("required", [])) <= set(data)
    ]
    return {"name": fits[0], "args": data} if len(fits) == 1 and data else None


def decision_text(reply: Any, form: ToolForm) -> str:
    """A tool-calling reply as the JSON decision it stands for (what the parsers and the transcript take).

    The first tool call decides (a weak model makes one action a step), unless the form asked for parallel
    calls: then several calls come back as `{"calls": [...]}`. A reply with no call is read as a JSON
    decision; where the answer was asked for, plain text is the answer.
    """
    calls = list(getattr(reply, "tool_calls", None) or [])
    text = ""
    if not calls:
        text = str(getattr(reply, "content", "") or "").strip()
        written = written_call(text, form)
        if written is not None:  # a server that ignores the required choice lets the model write the call
            calls = [written]
    if not calls:
        if form.choice == "final" and text and not text.startswith("{"):
            return json.dumps({"action": "final", "answer": text}, ensure_ascii=False)
        if not text.startswith("{"):  # neither a call nor a decision in JSON
            names = ", ".join(t["function"]["name"] for t in form.tools)
            raise DecisionError(f"a tool call was required; call one of: {names}")
        return text
    named = [{**call, "name": form.names.get(str(call.get("name")), call.get("name"))} for call in calls]
    decisions = [_call_decision(call) for call in (named if form.parallel else named[:1])]
    if len(decisions) > 1:
        return json.dumps({"calls": decisions}, ensure_ascii=False)
    if "plan" in decisions[0]:
        return json.dumps(decisions[0]["plan"], ensure_ascii=False)
    return json.dumps(decisions[0], ensure_ascii=False)


def _call_decision(call: Mapping[str, Any]) -> dict[str, Any]:
    """One tool call as the decision it stands for (a `plan` call as `{"plan": <its arguments>}`)."""
    name, args = str(call.get("name") or ""), call.get("args") or {}
    if not isinstance(args, dict):
        raise DecisionError(f"the arguments of tool {name!r} must be a JSON object")
    if name == "plan":
        return {"plan": args}
    if name == "skip":
        out: dict[str, Any] = {"action": "skip", "reason": args.get("reason", "")}
        if "part" in args:
            out["part"] = args["part"]
        return out
    if name == "final":
        return {"action": "final", "answer": args.get("answer", "")}
    if name == "find_tools":
        found: dict[str, Any] = {"action": "find_tools", "query": args.get("query", "")}
        if "part" in args:
            found["part"] = args["part"]
        return found
    return {"action": "call_tool", "tool": name, "args": args}
