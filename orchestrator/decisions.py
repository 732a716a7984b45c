"""The controller's decision protocol: a JSON action constrained by a schema built from what is loaded.

`{"action": "find_tools", "query": ...}` | `{"action": "call_tool", "tool": <loaded tool>, "args": {...}}` |
`{"action": "delegate", "worker": <worker>, "input": ...}` | `{"action": "final", "answer": ...}`

With a grammar-capable model the schema constrains decoding; in every case the reply is parsed and checked
here, so a tool outside the loaded set can never be called.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.catalog import Catalog

__all__ = ["Decision", "DecisionError", "decision_schema", "parse_decision"]

Action = Literal["find_tools", "call_tool", "delegate", "final"]
ACTIONS: tuple[Action, ...] = ("find_tools", "call_tool", "delegate", "final")
# Bounded strings keep a weak model from running a field on until max_tokens.
QUERY_MAX = 80
# Plain words: keeps a small model from pasting identifiers or lists into the search query.
QUERY_PATTERN = "^[a-z0-9][a-z0-9 ]{2,79}$"  # grammar converters ignore maxLength next to a pattern
TEXT_MAX = 400


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

    def to_json(self) -> str:
        """The canonical JSON form (what goes back into the transcript)."""
        body: dict[str, Any] = {"action": self.action}
        if self.action == "find_tools":
            body["query"] = self.query
        elif self.action == "call_tool":
            body |= {"tool": self.tool, "args": self.args}
        elif self.action == "delegate":
            body |= {"worker": self.worker, "input": self.input}
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


def decision_schema(loaded: Sequence[str], catalog: Catalog, workers: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of a valid decision given the loaded tools and the known workers."""
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {
                "action": {"const": "find_tools"},
                "query": {"type": "string", "minLength": 3, "maxLength": QUERY_MAX, "pattern": QUERY_PATTERN},
            },
            "required": ["action", "query"],
        }
    ]
    for name in loaded:
        options.append(
            {
                "type": "object",
                "properties": {
                    "action": {"const": "call_tool"},
                    "tool": {"const": name},
                    "args": _clean_params(catalog.get(name).parameters),
                },
                "required": ["action", "tool", "args"],
            }
        )
    if workers:
        options.append(
            {
                "type": "object",
                "properties": {
                    "action": {"const": "delegate"},
                    "worker": {"enum": list(workers)},
                    "input": {"type": "string", "minLength": 1, "maxLength": TEXT_MAX},
                },
                "required": ["action", "worker", "input"],
            }
        )
    options.append(
        {
            "type": "object",
            "properties": {
                "action": {"const": "final"},
                "answer": {"type": "string", "minLength": 1, "maxLength": TEXT_MAX},
            },
            "required": ["action", "answer"],
        }
    )
    return {"anyOf": options}


def parse_decision(text: str, loaded: Sequence[str], workers: Sequence[str]) -> Decision:
    """Parse and check one reply; DecisionError says exactly what is wrong."""
    raw = text.strip()
    if raw.startswith("```"):
        raw = raw.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DecisionError(f"not valid JSON ({exc.msg} at position {exc.pos}): {raw[:200]!r}") from None
    if not isinstance(data, dict):
        raise DecisionError(f"expected a JSON object, got {type(data).__name__}")
    action = data.get("action")
    if action not in ACTIONS:
        raise DecisionError(f"'action' must be one of {', '.join(ACTIONS)}; got {action!r}")

    def text_field(key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise DecisionError(f"action {action!r} needs a non-empty string {key!r}")
        return value.strip()

    if action == "find_tools":
        return Decision("find_tools", query=text_field("query"))
    if action == "call_tool":
        tool = text_field("tool")
        if tool not in loaded:
            hint = ", ".join(loaded) if loaded else "none yet: use find_tools first"
            raise DecisionError(f"tool {tool!r} is not loaded (loaded: {hint})")
        args = data.get("args", {})
        if not isinstance(args, dict):
            raise DecisionError(f"'args' must be a JSON object, got {type(args).__name__}")
        return Decision("call_tool", tool=tool, args=args)
    if action == "delegate":
        worker = text_field("worker")
        if worker not in workers:
            raise DecisionError(f"unknown worker {worker!r}; workers: {', '.join(workers)}")
        return Decision("delegate", worker=worker, input=text_field("input"))
    return Decision("final", answer=text_field("answer"))
