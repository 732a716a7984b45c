"""What a run needs to know of a graph: compiled or not, its input keys, its entry nodes, its answer."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from langgraph.graph import START

from orchestrator.errors import ConfigError

__all__ = ["answer_of", "entry_nodes", "input_keys", "input_state", "is_compiled", "required_keys"]


def is_compiled(graph: Any) -> bool:
    from langgraph.pregel import Pregel

    return isinstance(graph, Pregel)


def input_keys(app: Any) -> set[str]:
    """The keys of a graph's input state (empty when it can't be told)."""
    builder = getattr(app, "builder", None)
    schemas = getattr(builder, "schemas", None)
    schema = getattr(builder, "input_schema", None)
    if schemas is not None and schema in schemas:
        return set(schemas[schema])
    try:
        schema = app.get_input_jsonschema()
    except Exception:
        return set()
    return set((schema or {}).get("properties") or {})


def required_keys(app: Any) -> set[str]:
    """The input keys a graph requires: those its own input schema (a TypedDict apart from the state's)
    marks required. A state schema's keys are not required in the input: LangGraph starts them empty."""
    builder = getattr(app, "builder", None)
    schema = getattr(builder, "input_schema", None)
    if schema is None or schema is getattr(builder, "state_schema", None):
        return set()
    return set(getattr(schema, "__required_keys__", ()))


def entry_nodes(app: Any) -> list[str]:
    """The nodes a compiled graph's START leads to."""
    edges = getattr(getattr(app, "builder", None), "edges", None) or ()
    return [end for start, end in edges if start == START]


def input_state(app: Any, value: str | Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """The input state: a mapping as given; a text in `input`, or as a human message for a messages graph."""
    keys = input_keys(app)
    if isinstance(value, Mapping):
        takes = ", ".join(repr(k) for k in sorted(keys))
        unknown = sorted(str(k) for k in value if k not in keys) if keys else []
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(keys), n=1, cutoff=0.6)
            raise ConfigError(
                f"graph {name!r} takes no input key {unknown[0]!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + (f" (nor {', '.join(repr(k) for k in unknown[1:])})" if unknown[1:] else "")
                + f"; its input keys: {takes}"
            )
        missing = sorted(required_keys(app) - set(value))
        if missing:
            raise ConfigError(
                f"graph {name!r} needs the input key {missing[0]!r}"
                + (f" (and {', '.join(repr(k) for k in missing[1:])})" if missing[1:] else "")
                + f"; its input keys: {takes}"
            )
        return dict(value)
    if "input" in keys or not keys:
        return {"input": value}
    if "messages" in keys:
        from langchain_core.messages import HumanMessage

        return {"messages": [HumanMessage(str(value))]}
    raise ConfigError(
        f"graph {name!r} takes neither an 'input' nor a 'messages' key (its input keys: "
        f"{', '.join(sorted(keys))}); pass its input state as JSON with --input-json FILE "
        "(or input={...} in Python)"
    )


def answer_of(state: Mapping[str, Any], output_key: str | None) -> str | None:
    """The run's answer: the output key (or `answer`), else the last AI message, else the state as JSON."""
    import json

    key = output_key or "answer"
    if key in state:
        value = state[key]
        return value if isinstance(value, str) or value is None else json.dumps(value, default=str)
    if state.get("status") == "budget_stop":
        return None  # stopped before an answer
    for message in reversed(state.get("messages") or []):
        content = getattr(message, "content", None)
        if getattr(message, "type", None) == "ai" and isinstance(content, str) and content:
            return content
    return json.dumps({k: v for k, v in state.items() if k != "ledger"}, default=str, ensure_ascii=False)
