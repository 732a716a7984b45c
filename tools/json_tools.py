"""JSON pack: validate, query, reformat, flatten and compare JSON documents given as text."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from langchain_core.tools import BaseTool, tool

from tools._common import pack

MAX_JSON_CHARS = 500_000
MAX_DIFFS = 500

JsonValue = Any  # JSON values are recursive; Any is the honest static type for parsed JSON


def load_json(name: str, text: str) -> JsonValue:
    """Parse JSON text or raise a ValueError that names the argument and the error position."""
    if len(text) > MAX_JSON_CHARS:
        raise ValueError(f"{name} is {len(text)} characters; the limit is {MAX_JSON_CHARS}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ValueError(f"{name} is nested too deeply") from None


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    pos = 0
    cleaned = path.strip()
    while pos < len(cleaned):
        if cleaned[pos] == ".":
            pos += 1
            continue
        m = _PATH_PART.match(cleaned, pos)
        if not m:
            hint = "use e.g. 'orders[0].items.1.sku'"
            raise ValueError(f"path {path!r} is malformed near position {pos}; {hint}")
        key, index = m.groups()
        parts.append(int(index) if index is not None else (int(key) if key.lstrip("-").isdigit() else key))
        pos = m.end()
    return parts


@tool
def json_get_path(
    json_text: Annotated[str, "A JSON document as text"],
    path: Annotated[str, "Dotted path with optional list indexes, e.g. 'user.address.city' or 'items[0].id'"],
) -> JsonValue:
    """Read one value out of a JSON document by its path of keys and list positions, like
    'order.items[0].price'. Returns that value.

    Example: "the city of the customer in this record" -> json_get_path(json_text='{"customer": {"city":
    "Lyon"}}', path="customer.city")
    """
    current = load_json("json_text", json_text)
    walked: list[str] = []
    for part in _split_path(path):
        if isinstance(current, list) and isinstance(part, int):
            if not -len(current) <= part < len(current):
                where = ".".join(walked) or "the root"
                raise ValueError(f"index {part} is out of range at {where} (list has {len(current)} items)")
            current = current[part]
        elif isinstance(current, dict) and str(part) in current:
            current = current[str(part)]
        else:
            where = ".".join(walked) or "the root"
            if isinstance(current, dict):
                raise ValueError(f"key {part!r} not found at {where}; available keys: {sorted(current)[:20]}")
            raise ValueError(f"cannot step into {type(current).__name__} at {where} with {part!r}")
        walked.append(str(part))
    return current


@tool
def json_validate(
    json_text: Annotated[str, "Text that should be JSON"],
) -> dict[str, bool | str | int | None]:
    """Check whether a text is valid JSON that parses. Returns valid true or false, the top-level type and,
    for invalid JSON, the error with its line and column.

    Example: "will this parse: [1, 2,]" -> json_validate(json_text="[1, 2,]")
    """
    if len(json_text) > MAX_JSON_CHARS:
        raise ValueError(f"json_text is {len(json_text)} characters; the limit is {MAX_JSON_CHARS}")
    try:
        value = json.loads(json_text)
    except json.JSONDecodeError as exc:
        return {"valid": False, "error": exc.msg, "line": exc.lineno, "column": exc.colno, "type": None}
    except RecursionError:
        return {"valid": False, "error": "nested too deeply", "line": None, "column": None, "type": None}
    kind = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
    return {"valid": True, "error": None, "line": None, "column": None, "type": kind}


@tool
def json_keys(
    json_text: Annotated[str, "A JSON object (or a list of objects) as text"],
    recursive: Annotated[bool, "Also list nested keys as dotted paths"] = False,
) -> list[str]:
    """List the keys (field or property names) of a JSON object, or every nested key as a dotted path; for a
    list of objects, all of their keys. Returns the key names.

    Example: "which fields does this JSON object have?" -> json_keys(json_text='{"id": 7, "name": "Ann"}')
    """
    value = load_json("json_text", json_text)
    rows = value if isinstance(value, list) else [value]
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError("json_text must be a JSON object or a non-empty array of objects")
    keys: dict[str, None] = {}
    for row in rows:
        for k in _flatten(row, "").keys() if recursive else row.keys():
            keys.setdefault(k, None)
    return list(keys)


@tool
def format_json(
    json_text: Annotated[str, "A JSON document as text"],
    indent: Annotated[int, "Spaces per indentation level (1-8), or 0 to minify onto one line"] = 2,
    sort_keys: Annotated[bool, "Sort object keys alphabetically"] = False,
) -> str:
    """Pretty-print JSON with indentation, or minify it onto one compact line, optionally sorting the keys.
    Returns the reformatted JSON text.

    Example: "lay out this config with 2-space indents" -> format_json(json_text='{"x": {"y": true}}',
    indent=2)
    """
    if not 0 <= indent <= 8:
        raise ValueError(f"indent must be between 0 and 8, got {indent}")
    value = load_json("json_text", json_text)
    if indent == 0:
        return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=False)
    return json.dumps(value, indent=indent, sort_keys=sort_keys, ensure_ascii=False)


def _flatten(value: JsonValue, prefix: str) -> dict[str, JsonValue]:
    out: dict[str, JsonValue] = {}
    if isinstance(value, dict) and value:
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


@tool
def json_flatten(json_text: Annotated[str, "A nested JSON object as text"]) -> dict[str, JsonValue]:
    """Flatten nested JSON into one level of dotted paths to values, e.g. {'a': {'b': [1]}} becomes {'a.b[0]':
    1}. Returns the flat mapping.

    Example: "flatten this nested JSON" -> json_flatten(json_text='{"user": {"name": "Ann", "tags": ["x"]}}')
    """
    value = load_json("json_text", json_text)
    if not isinstance(value, dict):
        raise ValueError(f"json_text must be a JSON object, got a {type(value).__name__}")
    return _flatten(value, "")


def _same(a: JsonValue, b: JsonValue) -> bool:
    """JSON equality: 1 and 1.0 are equal, but true and 1 are not."""
    return isinstance(a, bool) == isinstance(b, bool) and bool(a == b)


@tool
def json_diff(
    before: Annotated[str, "The original JSON document"],
    after: Annotated[str, "The changed JSON document"],
) -> list[dict[str, JsonValue]]:
    """Compare two JSON documents: what was added, removed or changed between them. Returns each difference
    with its dotted path and the old and new values.

    Example: "what changed between these two JSON configs?" -> json_diff(before='{"port": 80}',
    after='{"port": 8080}')
    """
    old, new = _flatten(load_json("before", before), ""), _flatten(load_json("after", after), "")
    changes: list[dict[str, JsonValue]] = []
    for path in sorted(old.keys() | new.keys()):
        if path not in new:
            changes.append({"path": path, "change": "removed", "old": old[path]})
        elif path not in old:
            changes.append({"path": path, "change": "added", "new": new[path]})
        elif not _same(old[path], new[path]):
            changes.append({"path": path, "change": "changed", "old": old[path], "new": new[path]})
        if len(changes) >= MAX_DIFFS:
            break
    return changes


TOOLS: list[BaseTool] = pack(json_get_path, json_validate, json_keys, format_json, json_flatten, json_diff)
