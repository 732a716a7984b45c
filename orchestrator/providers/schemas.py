"""Schemas as each wire protocol accepts them, and replies brought back to the shape the caller asked for.

Callers write one JSON schema per step, and its root may be an `anyOf` of objects (the controller's
decisions are). What the protocols accept:

| where the schema goes                                    | rules                                          |
|----------------------------------------------------------|------------------------------------------------|
| OpenAI `response_format` json_schema, a function's       | an object root                                 |
| `parameters`, an Anthropic tool's `input_schema`         |                                                |
| OpenAI strict mode (`"strict": true`)                    | also `additionalProperties: false` on every    |
|                                                          | object, every property `required` (optional   |
|                                                          | ones nullable), only strict mode's keywords    |

`prepare` makes the schema to send: a root that is not a plain object is wrapped as
`{"response": <schema>}`, and for strict mode the schema is made strict (or sent non-strict when it can't
be, e.g. a free-form map). `Prepared.reply(text)` gives the caller the JSON it asked for: unwrapped, and
without the `null`s that strict mode made the model write for properties the caller left optional.

Example:
    >>> p = prepare({"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}}]}, strict=True)
    >>> p.schema["properties"]["response"]["anyOf"][0]["properties"]["a"]
    {'type': ['string', 'null']}
    >>> p.reply('{"response": {"a": null}}')
    '{}'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["WRAP_KEY", "Prepared", "needs_object_root", "prepare", "restore", "strict_schema"]

WRAP_KEY = "response"

# The keywords OpenAI's strict mode accepts; others (minLength, maxLength, default, ...) are dropped from what
# is sent. The caller still validates the reply against its own, complete schema.
_STRICT_KEYS = frozenset(
    {
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
        "definitions",
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
)
_STRICT_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (type(None), "null"))


def needs_object_root(schema: dict[str, Any]) -> bool:
    """True when the schema is not a plain object (an `anyOf` root, a `$ref`, a scalar)."""
    if schema.get("type") != "object":
        return True
    return any(k in schema for k in ("anyOf", "oneOf", "allOf", "$ref", "not"))


@dataclass(frozen=True)
class Prepared:
    """What is sent for one caller schema, and how a reply comes back to the caller's shape."""

    original: dict[str, Any]
    schema: dict[str, Any]  # what goes on the wire
    wrapped: bool
    strict: bool

    def reply(self, text: str) -> str:
        """The caller's JSON text from the model's (as it is when nothing was reshaped, or it isn't JSON)."""
        if not self.wrapped and not self.strict:
            return text
        try:
            value = json.loads(text)
        except ValueError:
            return text  # left for the caller's validation and repair
        if self.wrapped and isinstance(value, dict) and set(value) == {WRAP_KEY}:
            value = value[WRAP_KEY]
        if self.strict:
            value = restore(value, self.original)
        return json.dumps(value, ensure_ascii=False)


def prepare(schema: dict[str, Any], *, strict: bool = False) -> Prepared:
    """The schema to send where an object root is required, strict when asked and possible."""
    wrapped = needs_object_root(schema)
    sent = {"type": "object", "properties": {WRAP_KEY: schema}, "required": [WRAP_KEY]} if wrapped else schema
    if strict:
        made = strict_schema(sent)
        if made is not None:
            return Prepared(schema, made, wrapped, True)
    if wrapped:
        sent = {**sent, "additionalProperties": False}
    return Prepared(schema, sent, wrapped, False)


class _NotStrict(Exception):
    """A construct strict mode can't express."""


def strict_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The schema in OpenAI's strict form, or None when it can't be made strict (sent non-strict then)."""
    if needs_object_root(schema):
        return None
    try:
        return _strict(schema)
    except _NotStrict:
        return None


def _strict(node: Any) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise _NotStrict
    node = dict(node)
    if "oneOf" in node:  # not in strict mode; the caller's own check still enforces "exactly one"
        node["anyOf"] = node.pop("oneOf")
    if "allOf" in node:
        parts = node.pop("allOf")
        if not isinstance(parts, list) or len(parts) != 1 or not isinstance(parts[0], dict):
            raise _NotStrict
        node = {**parts[0], **node}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "enum" in node and "type" not in node:
        kinds = sorted({_json_type(v) for v in node["enum"]})
        node["type"] = kinds[0] if len(kinds) == 1 else kinds
    if any(k in node for k in ("not", "if", "patternProperties", "dependentRequired", "prefixItems")):
        raise _NotStrict
    out = {k: v for k, v in node.items() if k in _STRICT_KEYS}
    if out.get("format") not in (None, *_STRICT_FORMATS):
        del out["format"]
    if "anyOf" in out:
        out["anyOf"] = [_strict(b) for b in out["anyOf"]]
    for key in ("$defs", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {name: _strict(d) for name, d in out[key].items()}
    types = out.get("type")
    is_object = types == "object" or (isinstance(types, list) and "object" in types)
    if is_object or "properties" in out:
        if "properties" not in out or out.get("additionalProperties") not in (None, False):
            raise _NotStrict  # a free-form object or a map: strict mode needs every key named
        required = set(node.get("required") or ())
        props = {}
        for name, sub in out["properties"].items():
            made = _strict(sub)
            props[name] = made if name in required else _nullable(made)
        out["properties"] = props
        out["required"] = list(props)
        out["additionalProperties"] = False
        out.setdefault("type", "object")
    if "items" in out:
        out["items"] = _strict(out["items"])
    if not any(k in out for k in ("type", "anyOf", "$ref")):
        raise _NotStrict  # an untyped value ({}): strict mode needs a type
    return out


def _json_type(value: Any) -> str:
    return next((name for kind, name in _JSON_TYPES if type(value) is kind), "string")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional property made required: it may now be null (null then means "absent")."""
    if _allows_null(schema, {}):
        return schema
    if "type" in schema and "$ref" not in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        out = {**schema, "type": [*kinds, "null"]}
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    return {"anyOf": [schema, {"type": "null"}]}


def _allows_null(schema: Any, root: dict[str, Any]) -> bool:
    if not isinstance(schema, dict):
        return True
    if "$ref" in schema:
        return _allows_null(_resolve(root, schema["$ref"]), root)
    kinds = schema.get("type")
    if kinds == "null" or (isinstance(kinds, list) and "null" in kinds):
        return True
    if "const" in schema:
        return schema["const"] is None
    if "enum" in schema:
        return None in schema["enum"]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return any(_allows_null(b, root) for b in schema[key])
    return kinds is None and not any(k in schema for k in ("properties", "items", "allOf"))


def _resolve(root: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def restore(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """Drop the nulls of properties `schema` leaves optional and non-nullable (strict mode's "absent")."""
    root = schema if root is None else root
    if "$ref" in schema:
        schema = _resolve(root, schema["$ref"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            branch = _branch(value, schema[key], root)
            return value if branch is None else restore(value, branch, root)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        schema = {**all_of[0], **{k: v for k, v in schema.items() if k != "allOf"}}
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        out = {}
        for name, item in value.items():
            sub = props.get(name)
            if item is None and sub is not None and name not in required and not _allows_null(sub, root):
                continue
            out[name] = restore(item, sub, root) if isinstance(sub, dict) else item
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [restore(v, schema["items"], root) for v in value]
    return value


def _branch(value: Any, branches: list[Any], root: dict[str, Any]) -> dict[str, Any] | None:
    """The branch of an anyOf that `value` is an instance of, judged by its constants and object keys."""
    fallback = None
    for raw in branches:
        branch = _resolve(root, raw["$ref"]) if isinstance(raw, dict) and "$ref" in raw else raw
        if not isinstance(branch, dict):
            continue
        props = branch.get("properties")
        if isinstance(value, dict) != isinstance(props, dict):
            continue
        if not isinstance(value, dict) or not isinstance(props, dict):
            return branch
        fallback = fallback or branch
        pinned = all(
            value.get(name) == sub["const"]
            if "const" in sub
            else value.get(name) in sub["enum"]
            if "enum" in sub and name in value
            else True
            for name, sub in props.items()
            if isinstance(sub, dict)
        )
        if pinned and set(branch.get("required") or ()) <= set(value):
            return branch
    return fallback
