"""Features an endpoint refuses, and the rungs structured output steps down when it does.

Structured output is asked for in the best way the endpoint's capabilities allow, and steps down one rung
when the server says that way is unsupported:

    json_schema (a response format) -> tool (one forced tool, the value as its arguments)
                                    -> json_object (JSON mode) -> prompt (the caller parses and repairs)

A refusal is an HTTP 400, 422, 500 or 501 whose error names one of the features (`response_format`,
`json_schema`, `json_object`, `tools`, `tool_choice`, `parallel_tool_calls`) near words saying it is
unsupported or invalid input, e.g. llama-cpp-python's server answering a json_schema response format with
a 500 "Input should be 'text' or 'json_object'". Any other 500 is a server error, retried as before.

What was refused is remembered per (base URL, model) for the rest of the process (in the endpoint's
`ModelState`), so the next call starts on the rung that works. The caller's own tools being refused can't
be stepped around here: `ToolsUnsupportedError` tells the caller to choose another strategy.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["RUNGS", "Rung", "feature_of_rung", "rejected_feature"]

Rung = Literal["json_schema", "tool", "json_object", "prompt"]
RUNGS: tuple[Rung, ...] = ("json_schema", "tool", "json_object", "prompt")

_STATUSES = frozenset({400, 422, 500, 501})
# Most specific first: "parallel_tool_calls" before "tool_choice" before "tools".
_FEATURES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("parallel_tool_calls", re.compile(r"parallel[_ ]tool[_ ]calls", re.I)),
    ("tool_choice", re.compile(r"tool[_ ]choice", re.I)),
    ("tools", re.compile(r"\btools\b", re.I)),
    ("json_object", re.compile(r"json_object", re.I)),
    ("json_schema", re.compile(r"json_schema|response_format", re.I)),
)
_REFUSAL = re.compile(
    r"not supported|unsupported|does not support|doesn'?t support|not support|input should be|invalid"
    r"|not allowed|not permitted|extra inputs|unrecognized|unknown (?:parameter|field|argument|name)"
    r"|requires|must be|not implemented|not available|only supports?|cannot be used|can'?t be used"
    r"|validation error",
    re.I,
)
_NEAR = 160  # characters between the feature's name and the refusal


def rejected_feature(status: int | None, message: str) -> str | None:
    """The feature an error response refuses ("json_schema", "tools", ...), or None for other errors.

    `json_schema` stands for the response format as a whole (`response_format`, `json_schema`); the
    caller knows which response format it sent.

    Example:
        >>> rejected_feature(500, "{'loc': ('body', 'response_format', 'type'), 'msg': \\"Input should be "
        ...                  "'text' or 'json_object'\\"}")
        'json_schema'
        >>> rejected_feature(500, "CUDA error: out of memory") is None
        True
    """
    if status not in _STATUSES or not message:
        return None
    refusals = [m.start() for m in _REFUSAL.finditer(message)]
    if not refusals:
        return None
    for feature, pattern in _FEATURES:
        for found in pattern.finditer(message):
            if any(abs(found.start() - r) <= _NEAR for r in refusals):
                if feature == "json_object" and not _json_object_refused(message):
                    continue  # "Input should be 'text' or 'json_object'": json_object is the remedy
                return feature
    return None


def _json_object_refused(message: str) -> bool:
    """True when json_object itself is what the server refuses, not what it offers instead."""
    offers = re.search(r"(?:should be|must be|one of|expected)[^.]{0,80}json_object", message, re.I)
    return offers is None


def feature_of_rung(rung: Rung) -> str | None:
    """The feature a rung depends on (what a refusal of it is remembered as); the prompt rung needs none."""
    return {"json_schema": "json_schema", "tool": "tools", "json_object": "json_object"}.get(rung)
