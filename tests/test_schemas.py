"""Every schema sent is valid for the protocol that receives it, and replies come back in the caller's shape.

The rules are checked here by a checker of their own (not the module's), on the request bodies that really
reached a loopback server, for the controller's real decision and plan schemas.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from loopback import Loopback
from wire import anthropic_stream, anthropic_usage, body_of, openai_stream, openai_usage

from orchestrator.agent.decisions import act_schema, final_schema
from orchestrator.agent.plan import plan_schema
from orchestrator.providers.anthropic import AnthropicChatModel
from orchestrator.providers.http import aclose_clients, reset_model_states
from orchestrator.providers.openai import OpenAIChatModel
from orchestrator.providers.schemas import WRAP_KEY, needs_object_root, prepare, restore, strict_schema
from orchestrator.toolsets.catalog import Catalog
from support import date_diff

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "read_timeout_s": 5.0}


@tool
def convert(value: float, unit: str = "km") -> str:
    """Convert a distance in miles to another unit."""
    return f"{value} {unit}"


CATALOG = Catalog.from_tools([date_diff, convert])
ACT = act_schema(["date_diff", "convert"], CATALOG)
FINAL = final_schema()
PLAN = plan_schema(["classify"], ["My card has not arrived."])
# A value the caller expects for each schema, and the same value as strict mode makes the model write it
# (optional properties present as null).
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "act": (
        ACT,
        {"action": "call_tool", "tool": "convert", "args": {"value": 3.5}},
        {"action": "call_tool", "tool": "convert", "args": {"value": 3.5, "unit": None}},
    ),
    "final": (FINAL, {"action": "final", "answer": "18 days"}, {"action": "final", "answer": "18 days"}),
    "plan": (
        PLAN,
        {
            "plan": [
                {"tool": "count the days"},
                {"tool": "add 2 to the result", "uses": [1]},
                {"worker": "classify", "text": "My card has not arrived."},
            ]
        },
        {
            "plan": [
                {"tool": "count the days", "uses": None},
                {"tool": "add 2 to the result", "uses": [1]},
                {"worker": "classify", "text": "My card has not arrived."},
            ]
        },
    ),
}

# OpenAI's documented strict-mode subset of JSON Schema.
STRICT_KEYWORDS = {
    "type",
    "description",
    "title",
    "enum",
    "anyOf",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "$ref",
    "$defs",
    "minItems",
    "maxItems",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
}


def object_root_problems(schema: Any) -> list[str]:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return ["the root is not an object"]
    return [f"the root has {k!r}" for k in ("anyOf", "oneOf", "allOf", "$ref") if k in schema]


def strict_problems(node: Any, path: str = "$") -> list[str]:
    """Where a schema breaks OpenAI's strict-mode rules."""
    if not isinstance(node, dict):
        return [f"{path}: not a schema"]
    out = [f"{path}: {k!r} is not allowed in strict mode" for k in node if k not in STRICT_KEYWORDS]
    kinds = node.get("type")
    if kinds == "object" or (isinstance(kinds, list) and "object" in kinds) or "properties" in node:
        props = node.get("properties")
        if not isinstance(props, dict):
            out.append(f"{path}: an object without properties")
            props = {}
        if node.get("additionalProperties") is not False:
            out.append(f"{path}: additionalProperties is not false")
        if sorted(node.get("required") or []) != sorted(props):
            out.append(f"{path}: required {node.get('required')} is not every property {sorted(props)}")
        for name, sub in props.items():
            out += strict_problems(sub, f"{path}.{name}")
    for i, sub in enumerate(node.get("anyOf") or []):
        out += strict_problems(sub, f"{path}.anyOf[{i}]")
    if "items" in node:
        out += strict_problems(node["items"], f"{path}[]")
    if not any(k in node for k in ("type", "anyOf", "$ref")):
        out.append(f"{path}: no type")
    return out


# --- the module on its own -------------------------------------------------------------------------------
def test_the_controllers_schemas_have_roots_that_need_wrapping() -> None:
    assert needs_object_root(ACT)  # an anyOf of call_tool / skip objects
    assert not needs_object_root(FINAL) and not needs_object_root(PLAN)


@pytest.mark.parametrize("name", sorted(CASES))
def test_strict_form_of_each_controller_schema_passes_the_strict_rules(name: str) -> None:
    schema, _, _ = CASES[name]
    sent = prepare(schema, strict=True)
    assert sent.strict
    assert object_root_problems(sent.schema) == []
    assert strict_problems(sent.schema) == []
    assert sent.wrapped == (name == "act")


def test_optional_properties_become_nullable_and_come_back_absent() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "minLength": 2},
            "b": {"enum": ["x", "y"]},
            "c": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "d": {"type": ["string", "null"]},
        },
        "required": ["a"],
    }
    made = strict_schema(schema)
    assert made is not None
    assert made["properties"]["a"] == {"type": "string"}  # minLength is not a strict-mode keyword
    assert made["properties"]["b"] == {"enum": ["x", "y", None], "type": ["string", "null"]}
    assert made["properties"]["c"]["anyOf"][-1] == {"type": "null"}
    assert made["properties"]["d"] == {"type": ["string", "null"]}  # nullable already: kept as it is
    assert made["required"] == ["a", "b", "c", "d"] and made["additionalProperties"] is False
    assert restore({"a": "hi", "b": None, "c": None, "d": None}, schema) == {"a": "hi", "d": None}


def test_const_becomes_a_typed_enum_and_oneof_an_anyof() -> None:
    made = strict_schema({"type": "object", "properties": {"k": {"oneOf": [{"const": 1}, {"const": "a"}]}}})
    assert made is not None
    assert made["properties"]["k"]["anyOf"][:2] == [
        {"enum": [1], "type": "integer"},
        {"enum": ["a"], "type": "string"},
    ]


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},  # free-form
        {
            "type": "object",
            "properties": {"m": {"type": "object", "additionalProperties": {"type": "string"}}},
        },
        {"type": "object", "properties": {"any": {}}},  # untyped
        {"type": "object", "properties": {"n": {"not": {"type": "null"}}}},
    ],
)
def test_a_schema_strict_mode_cannot_express_is_sent_non_strict(schema: dict[str, Any]) -> None:
    assert strict_schema(schema) is None
    sent = prepare(schema, strict=True)
    assert not sent.strict and sent.schema == schema


def test_reply_unwraps_and_picks_the_anyof_branch_by_its_constants() -> None:
    sent = prepare(ACT, strict=True)
    _, expected, as_written = CASES["act"]
    assert json.loads(sent.reply(json.dumps({WRAP_KEY: as_written}))) == expected
    skip = {"action": "skip", "reason": "no tool converts currencies"}
    assert json.loads(sent.reply(json.dumps({WRAP_KEY: skip}))) == skip
    assert sent.reply('{"response": {"action": "call_') == '{"response": {"action": "call_'  # not JSON: as is
    loose = prepare(ACT)  # not strict: only the wrapper goes
    assert not loose.strict and loose.schema["additionalProperties"] is False
    assert json.loads(loose.reply(json.dumps({WRAP_KEY: expected}))) == expected


# --- the bodies that reach a server --------------------------------------------------------------------
@pytest.fixture(autouse=True)
async def _fresh() -> AsyncIterator[None]:
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()


@pytest.fixture
def server() -> Iterator[Loopback]:
    with Loopback() as lb:
        yield lb


def _openai(server: Loopback, **kw: Any) -> OpenAIChatModel:
    return OpenAIChatModel(model="gpt-4o-mini", base_url=server.url + "/v1", **FAST, **kw)


def _fmt(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_object", "schema": schema}


def _wire(value: dict[str, Any], wrapped: bool) -> str:
    return json.dumps({WRAP_KEY: value} if wrapped else value)


@pytest.mark.parametrize("name", sorted(CASES))
async def test_openai_strict_json_schema_bodies(server: Loopback, name: str) -> None:
    schema, expected, as_written = CASES[name]
    wrapped = needs_object_root(schema)
    server.push(openai_stream([_wire(as_written, wrapped)], openai_usage(40, 12)))
    msg = await _openai(server, strict=True).ainvoke([HumanMessage("decide")], response_format=_fmt(schema))
    fmt = body_of(server.requests[0])["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert object_root_problems(fmt["json_schema"]["schema"]) == []
    assert strict_problems(fmt["json_schema"]["schema"]) == []
    assert json.loads(str(msg.content)) == expected
    assert msg.response_metadata["structured_output"] == "json_schema"


@pytest.mark.parametrize("name", sorted(CASES))
async def test_openai_strict_forced_tool_bodies(server: Loopback, name: str) -> None:
    schema, expected, as_written = CASES[name]
    wrapped = needs_object_root(schema)
    server.push(
        openai_stream(
            [], openai_usage(40, 12), tool_calls=[("call_1", "respond", [_wire(as_written, wrapped)])]
        )
    )
    model = _openai(server, strict=True, json_schema=False)
    msg = await model.ainvoke([HumanMessage("decide")], response_format=_fmt(schema))
    body = body_of(server.requests[0])
    assert "response_format" not in body
    assert body["tool_choice"] == {"type": "function", "function": {"name": "respond"}}
    (fn,) = [t["function"] for t in body["tools"]]
    assert fn["strict"] is True
    assert object_root_problems(fn["parameters"]) == [] and strict_problems(fn["parameters"]) == []
    assert json.loads(str(msg.content)) == expected and msg.tool_calls == []
    assert msg.response_metadata["structured_output"] == "tool"


@pytest.mark.parametrize("name", sorted(CASES))
async def test_openai_compatible_non_strict_bodies_have_object_roots(server: Loopback, name: str) -> None:
    schema, expected, _ = CASES[name]
    wrapped = needs_object_root(schema)
    server.push(openai_stream([_wire(expected, wrapped)], openai_usage(40, 12)))
    msg = await _openai(server).ainvoke([HumanMessage("decide")], response_format=_fmt(schema))
    spec = body_of(server.requests[0])["response_format"]["json_schema"]
    assert "strict" not in spec
    assert object_root_problems(spec["schema"]) == []
    assert (spec["schema"]["properties"][WRAP_KEY] if wrapped else spec["schema"]) == schema  # intact
    assert json.loads(str(msg.content)) == expected


@pytest.mark.parametrize("name", sorted(CASES))
async def test_anthropic_tool_input_schemas_have_object_roots(server: Loopback, name: str) -> None:
    schema, expected, _ = CASES[name]
    wrapped = needs_object_root(schema)
    parts = [_wire(expected, wrapped)]
    server.push(anthropic_stream([], anthropic_usage(40, 12), tool_use=("toolu_1", "respond", parts)))
    model = AnthropicChatModel(model="claude-haiku-4-5", base_url=server.url, **FAST)
    msg = await model.ainvoke([HumanMessage("decide")], response_format=_fmt(schema))
    body = body_of(server.requests[0])
    assert body["tool_choice"] == {"type": "tool", "name": "respond"}
    (sent,) = [t["input_schema"] for t in body["tools"] if t["name"] == "respond"]
    assert object_root_problems(sent) == []
    assert json.loads(str(msg.content)) == expected and msg.tool_calls == []


async def test_caller_tools_marked_strict_are_sent_in_strict_form(server: Loopback) -> None:
    server.push(openai_stream([], openai_usage(30, 8), tool_calls=[("c1", "convert", ['{"value": 2}'])]))
    strict_tool = {
        "type": "function",
        "function": {
            "name": "convert",
            "description": "Convert.",
            "parameters": CATALOG.get("convert").parameters,
            "strict": True,
        },
    }
    loose_tool = {"type": "function", "function": {"name": "free", "parameters": {"type": "object"}}}
    await _openai(server).bind_tools([strict_tool, loose_tool]).ainvoke("go")
    convert_fn, free_fn = (t["function"] for t in body_of(server.requests[0])["tools"])
    assert convert_fn["strict"] is True and strict_problems(convert_fn["parameters"]) == []
    assert free_fn == loose_tool["function"]  # not marked strict: sent as given


async def test_a_streamed_structured_reply_arrives_whole_in_the_callers_shape(server: Loopback) -> None:
    _, expected, as_written = CASES["act"]
    server.push(openai_stream([_wire(as_written, True)], openai_usage(40, 12)))
    model = _openai(server, strict=True)
    chunks = [c async for c in model.astream([HumanMessage("decide")], response_format=_fmt(ACT))]
    assert json.loads("".join(str(c.content) for c in chunks)) == expected


def test_reply_keeps_the_text_when_nothing_was_reshaped() -> None:
    plain = prepare(FINAL)
    assert not plain.wrapped and not plain.strict
    assert plain.reply('{"action":"final","answer":"x"}') == '{"action":"final","answer":"x"}'
