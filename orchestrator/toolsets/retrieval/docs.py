"""Tools as the index sees them, and the standard JSON Lines files: a catalog and labelled queries."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError, unreadable

__all__ = ["LabelledQuery", "ToolDoc", "read_catalog", "read_queries", "schema_tokens"]


# Type names other catalogs use (BFCL's Python, Java and JavaScript spellings), read as JSON Schema's; a type
# JSON Schema has no name for ("any", a class name) is dropped: any value. A grammar or a provider given an
# unknown type fails the whole request (421 of BFCL's 1,853 tools).
_TYPES = {
    "dict": "object", "hashmap": "object", "map": "object", "object": "object",
    "float": "number", "double": "number", "number": "number",
    "int": "integer", "integer": "integer", "long": "integer", "short": "integer", "byte": "integer",
    "str": "string", "string": "string", "char": "string", "character": "string",
    "bool": "boolean", "boolean": "boolean",
    "list": "array", "array": "array", "tuple": "array", "arraylist": "array", "set": "array",
    "null": "null",
}  # fmt: skip


def _normalise_schema(schema: Any) -> Any:
    """Type names read as JSON Schema's (`"dict"` -> `"object"`, `"float"` -> `"number"`, ...), at every
    depth; a type with no JSON Schema name is dropped."""
    if isinstance(schema, dict):
        out = {k: _normalise_schema(v) for k, v in schema.items()}
        kind = out.get("type")
        if isinstance(kind, str):
            known = _TYPES.get(kind.lower())
            if known is None:
                del out["type"]
            else:
                out["type"] = known
        return out
    if isinstance(schema, list):
        return [_normalise_schema(v) for v in schema]
    return schema


@dataclass(frozen=True)
class ToolDoc:
    """One tool: its name, description, JSON Schema parameters and where it came from."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def digest(self) -> str:
        """A content hash: the index re-reads a tool only when this changes."""
        body = json.dumps([self.name, self.description, self.parameters, self.source], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:32]

    def param_text(self) -> tuple[str, str]:
        """Parameter names, and their descriptions (and enum values), nested properties included."""
        names: list[str] = []
        descriptions: list[str] = []

        def walk(schema: Any) -> None:
            properties = schema.get("properties") if isinstance(schema, Mapping) else None
            if not isinstance(properties, Mapping):  # a list or a string there is no schema: nothing to read
                return
            for key, spec in properties.items():
                names.append(str(key))
                if isinstance(spec, Mapping):
                    descriptions.append(str(spec.get("description", "")))
                    enum = spec.get("enum")
                    if isinstance(enum, list):
                        descriptions.append(" ".join(str(v) for v in enum[:20]))
                    walk(spec)
                    walk(spec.get("items"))

        walk(self.parameters)
        return " ".join(names), " ".join(descriptions)

    def openai_tool(self) -> dict[str, Any]:
        """The tool as bound to a model (OpenAI function format)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def schema_tokens(doc: ToolDoc) -> int:
    """Prompt tokens a bound tool costs, estimated as one token per 4 characters of its JSON (tiktoken's
    cl100k averages 3.5-4.5 characters a token on schemas); the same estimate on both sides of every ratio."""
    return (len(json.dumps(doc.openai_tool(), separators=(",", ":"))) + 3) // 4


def _lines(path: Path) -> Iterable[tuple[int, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: an editor's BOM is no error
    except OSError as exc:
        raise ConfigError(f"{str(path)!r}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {unreadable(exc)}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from None
        except (ValueError, RecursionError) as exc:  # a number too long to convert, or too deep a nesting
            raise ConfigError(f"{path}:{lineno}: not valid JSON: {unreadable(exc)}") from None
        yield lineno, row


def read_catalog(path: str | Path, source: str = "") -> list[ToolDoc]:
    """A JSON Lines catalog: `{"name", "description", "parameters"}` per line (OpenAI / BFCL function format;
    `{"type": "function", "function": {...}}` also accepted). A name seen twice keeps its first definition."""
    p = Path(path)
    docs: dict[str, ToolDoc] = {}
    for lineno, row in _lines(p):
        if isinstance(row, dict) and isinstance(row.get("function"), dict):
            row = row["function"]
        if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not row["name"]:
            raise ConfigError(f"{p}:{lineno}: a tool needs a 'name' string (and 'description', 'parameters')")
        params = row.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise ConfigError(f"{p}:{lineno}: 'parameters' of {row['name']!r} must be a JSON Schema object")
        try:  # json.loads reads deeper nesting than these recursive walks can follow
            doc = ToolDoc(
                row["name"], str(row.get("description") or ""), _normalise_schema(params), source or p.stem
            )
        except RecursionError:
            raise ConfigError(f"{p}:{lineno}: tool {row['name']!r} is nested too deeply") from None
        docs.setdefault(row["name"], doc)
    return list(docs.values())


@dataclass(frozen=True)
class LabelledQuery:
    """A query and the tools that answer it (none: no tool fits)."""

    query: str
    gold: tuple[str, ...]
    id: str = ""
    category: str = ""


def read_queries(path: str | Path) -> list[LabelledQuery]:
    """Labelled retrieval queries, JSON Lines: `{"query": str, "gold_tools": [str, ...]}` (other keys kept
    as id and category when present, else ignored)."""
    p = Path(path)
    out = []
    for lineno, row in _lines(p):
        if not isinstance(row, dict) or not isinstance(row.get("query"), str):
            raise ConfigError(f"{p}:{lineno}: a labelled query needs 'query' (a string) and 'gold_tools'")
        gold = row.get("gold_tools", [])
        if not isinstance(gold, list) or not all(isinstance(g, str) for g in gold):
            raise ConfigError(f"{p}:{lineno}: 'gold_tools' must be a list of tool names")
        out.append(
            LabelledQuery(row["query"], tuple(gold), str(row.get("id", lineno)), str(row.get("category", "")))
        )
    return out
