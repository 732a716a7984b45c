"""The controller's decision protocol: JSON replies constrained by a schema built for the step at hand.

| step                  | the model may reply                                                          |
|-----------------------|------------------------------------------------------------------------------|
| plan (first)          | `{"plan": [{"tool": ...} or {"worker": ..., "text": <a span of the request>}]}` |
| a tool part           | `{"action": "call_tool", "tool": <a tool found for it>, "args": {...}}` or     |
|                       | `{"action": "skip", "reason": ...}`                                          |
| every part settled    | `{"action": "final", "answer": ...}`                                         |

Steps the plan fixes (`find_tools` for a tool part, `delegate` for a worker part, a final answer when nothing
can be done) are taken without asking the model. With a grammar-capable model the schema constrains
decoding; in every case the reply is parsed and checked here, so a tool outside the offered set can never
be called.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.catalog import Catalog
from orchestrator.plan import MAX_PARTS, TASK_MAX, Part, new_part, plan_json

__all__ = [
    "Decision",
    "DecisionError",
    "act_schema",
    "decision_of",
    "final_schema",
    "parse_decision",
    "parse_plan",
]

Action = Literal["plan", "find_tools", "call_tool", "delegate", "skip", "final"]
ACTIONS: tuple[Action, ...] = ("plan", "find_tools", "call_tool", "delegate", "skip", "final")
TEXT_MAX = 400
REASON_MAX = 160


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

    def to_json(self) -> str:
        """The canonical JSON form (what goes back into the transcript)."""
        if self.action == "plan":
            return plan_json(self.plan)
        body: dict[str, Any] = {"action": self.action}
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


def act_schema(tools: Sequence[str], catalog: Catalog) -> dict[str, Any]:
    """A call to one of `tools` (each with its own argument schema), or a skip with a reason."""
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
    raw = text.strip()
    if raw.startswith("```"):
        raw = raw.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DecisionError(f"not valid JSON ({exc.msg} at position {exc.pos}): {raw[:200]!r}") from None
    if not isinstance(data, dict):
        raise DecisionError(f"expected a JSON object, got {type(data).__name__}")
    return data


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
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise DecisionError(f"part {n} must be an object")
        if "tool" in item:
            task = _text(item, "tool", "plan")[:TASK_MAX]
            parts.append(new_part(tool=task))
        elif "worker" in item:
            worker = _text(item, "worker", "plan")
            if worker not in workers:
                raise DecisionError(f"part {n}: unknown worker {worker!r}; workers: {', '.join(workers)}")
            parts.append(new_part(worker=worker, text=_text(item, "text", "plan")))
        else:
            raise DecisionError(f'part {n} must be {{"tool": ...}} or {{"worker": ..., "text": ...}}')
    return Decision("plan", plan=tuple(parts))


def parse_decision(text: str, tools: Sequence[str], *, allowed: Sequence[Action]) -> Decision:
    """Parse and check one step reply; DecisionError says exactly what is wrong."""
    data = _loads(text)
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
