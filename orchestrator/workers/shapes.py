"""Output shapes: the form a free-text worker's reply must take, built from the text it is given, so that a
small model decoding under it cannot break the rules its validators check afterwards.

A shape is a JSON schema made for one source text, and a function that turns the structured reply into the
worker's output (a plain text). Under a grammar (the local engine) or a server's schema, the reply can only
take that form; on a model that ignores the schema, the validators still check the text it becomes.

- `sentences_shape(n, m)`: a summary as a JSON array of `n` to `m` sentences, each of bounded length.

(A rewrite in a shape was measured and dropped: asked for `{"text": ...}`, the 0.5B and the 1.5B both
copied the source into the field, most replies word for word; bench/shapes.py, docs/benchmarks.md.)

A digit can only be written as part of a number the source contains: a number the source lacks
cannot be decoded (a fact added by arithmetic, such as a total, is refused by construction).

    >>> source_numbers("Order 88213 cost 649 EUR (1,250.50 with tax) on 2 May.")
    ['88213', '649', '1,250.50', '2']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Shape", "sentences_shape", "source_numbers"]

_SPECIAL = frozenset("\\.^$*+?()[]{}|/-")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
# one character of prose: no digit (numbers come whole from the source), no quote or backslash (no escapes
# to get wrong), no control character (JSON strings hold none)
_PLAIN = r'[^0-9"\\\x00-\x1f]'
# the same inside one sentence of a list: no end mark either, so one item can't hold two sentences
_IN_SENTENCE = r'[^0-9"\\\x00-\x1f.!?]'


@dataclass(frozen=True)
class Shape:
    """A worker output's form for one source: `schema(source)` is what the model decodes under;
    `output(source, reply)` makes the worker's output from the parsed reply, a text for a free-text worker,
    a record for a structured one (ValueError: the reply does not have the form); `describe` tells the model
    the form, in its instructions; `example(text, output)`, when given, writes an example's output in the
    reply's form (`orchestrator.workers.grounded`: a record's values as the spans of the text they copy)."""

    schema: Callable[[str], dict[str, Any]]
    output: Callable[[str, Mapping[str, Any]], Any]
    describe: str
    example: Callable[[str, Any], str] | None = None


def source_numbers(source: str) -> list[str]:
    """The numbers written in `source`, as written (thousands separators, decimals, clock times), first
    occurrence first."""
    seen: dict[str, None] = {}
    for match in _NUMBER.finditer(source):
        seen.setdefault(match.group(0).rstrip(".,:"), None)
    return list(seen)


def _literal(text: str) -> str:
    """`text` as a regex matching itself. A character a pattern treats as special becomes a one-character
    class written by its code (`.` as `[\\x2E]`): llama.cpp's grammar reads no backslash escape of
    punctuation (`\\.` fails the whole grammar), and every regex engine reads this form."""
    return "".join(f"[\\x{ord(c):02X}]" if c in _SPECIAL else c for c in text)


def _prose(numbers: Sequence[str], plain: str = _PLAIN) -> str:
    """A regex unit: one `plain` character, or one of `numbers` followed by one (so two numbers can't run
    together into a third, 9 then 8 into 98)."""
    if not numbers:
        return plain
    whole = "|".join(_literal(n) for n in sorted(set(numbers), key=len, reverse=True))
    return f"({plain}|({whole}){plain})"


def sentences_shape(fewest: int, most: int, max_chars: int = 260) -> Shape:
    """A summary as `{"sentences": [...]}`: `fewest` to `most` items, each from 12 to `max_chars`
    characters with no end mark inside (one sentence each), its numbers copied from the source. The output
    is the sentences joined, each ended with a full stop."""

    def schema(source: str) -> dict[str, Any]:
        unit = _prose(source_numbers(source), _IN_SENTENCE)
        sentence = {"type": "string", "pattern": f"^{unit}{{12,{max_chars}}}$"}
        return {
            "type": "object",
            "properties": {
                "sentences": {"type": "array", "items": sentence, "minItems": fewest, "maxItems": most}
            },
            "required": ["sentences"],
            "additionalProperties": False,
        }

    def text(_source: str, reply: Mapping[str, Any]) -> str:
        items = reply.get("sentences")
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise ValueError('the reply has no list of sentences under "sentences"')
        parts = [" ".join(s.split()).rstrip(" ,;:-") for s in items]
        return " ".join(p if p[-1] in ".!?" else p + "." for p in parts if p)

    count = f"{fewest}" if fewest == most else f"{fewest} to {most}"
    return Shape(
        schema,
        text,
        f'Reply with JSON: {{"sentences": [...]}}, {count} sentences, one sentence per string, each at most '
        f"{max_chars} characters, with no full stop inside.",
    )
