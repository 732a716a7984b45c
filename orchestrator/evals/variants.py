"""Known-bad outputs made by code from known-good ones, for calibrating a judge (`evals.calibrate`).

Each maker is deterministic (no model, no randomness) and makes one kind of flaw a judge must see:

- `fact_changed`: one number of the good output changed to one the source does not hold (98 EUR -> 137 EUR).
- `number_added`: a clause with a number the source lacks, put inside a sentence (the count of sentences
  stays the same).
- `copy`: the source itself, where a summary or a rewrite was asked for.
- `wrong_length`: a summary far longer than asked (the good summary, then three sentences of the source); a
  rewrite cut to its first sentence, dropping the facts of the rest.

Each variant is checked against the workers' own validators (`workers.validators`) where they apply: a
maker that could not make its flaw (no number to change, say) raises ValueError, and the calibration data
is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from orchestrator.workers.validators import adds_no_facts

__all__ = ["BAD_KINDS", "bad_variants", "sentences_of"]

BAD_KINDS = ("fact_changed", "number_added", "copy", "wrong_length")

# A number as the validators read one: digits with optional thousands commas and decimals, not inside a
# word ("INC-2291", "SV-30418") nor part of a clock time ("07:45").
_NUMBER = re.compile(r"(?<![\w.,:-])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w:]|[.,]\d)")
# A sentence ends at . ! or ? followed by space and a capital, a digit or a quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“])")
# Clauses stating what no calibration text says, each with numbers; the first whose numbers its source
# lacks is used (the templates rotate over the items, so the judge does not see one clause everywhere).
_CLAUSES = (
    ", at an extra cost of 1,350 EUR",
    ", for the 4th time since 2019",
    ", which affects 260 other accounts",
    ", 37 days later than first planned",
)


def sentences_of(text: str) -> list[str]:
    """The sentences of `text`, each with its end mark."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def fact_changed(source: str, good: str, _index: int = 0) -> str:
    """`good` with its last plain number raised by about 40 % (the same format: thousands commas,
    decimals), to a value the source does not hold."""
    for match in reversed(list(_NUMBER.finditer(good))):
        raw = match.group(0)
        value = float(raw.replace(",", ""))
        places = len(raw.partition(".")[2])
        step = max(10.0**-places, round(value * 0.4, places))
        for k in range(1, 50):
            new = _format(value + step * k, places, "," in raw or value + step * k >= 10_000)
            changed = good[: match.start()] + new + good[match.end() :]
            if adds_no_facts(source, changed) is not None:
                return changed
    raise ValueError(f"no number to change in {good[:60]!r}")


def _format(value: float, places: int, commas: bool) -> str:
    return f"{value:,.{places}f}" if commas else f"{value:.{places}f}"


def number_added(source: str, good: str, index: int = 0) -> str:
    """`good` with a clause holding a number the source lacks, put before the end mark of its first
    sentence of 8 words or more (the output keeps its count of sentences)."""
    parts = sentences_of(good)
    at = next((i for i, s in enumerate(parts) if len(s.split()) >= 8), 0)
    sentence = parts[at]
    body, mark = (sentence[:-1], sentence[-1]) if sentence[-1] in ".!?" else (sentence, "")
    for k in range(len(_CLAUSES)):
        clause = _CLAUSES[(index + k) % len(_CLAUSES)]
        added = " ".join([*parts[:at], body + clause + mark, *parts[at + 1 :]])
        if adds_no_facts(source, added) is not None:
            return added
    raise ValueError(f"every added clause's numbers are in the source {source[:60]!r}")


def copy(source: str, _good: str, _index: int = 0) -> str:
    """The source itself."""
    return source


def wrong_length(source: str, good: str, worker: str) -> str:
    """A summary far longer than asked (`good`, then the source's second to fourth sentences); a rewrite
    cut to its first sentence."""
    if worker == "summarize":
        return " ".join([good, *sentences_of(source)[1:4]])
    return sentences_of(good)[0]


def bad_variants(worker: str, source: str, good: str, index: int = 0) -> dict[str, str]:
    """The known-bad variants of `good`, the output of `worker` ("summarize" or "style") for `source`, by
    kind (`BAD_KINDS`). `index` rotates the added clauses over the items."""
    makers: dict[str, Callable[[str, str, int], str]] = {
        "fact_changed": fact_changed,
        "number_added": number_added,
        "copy": copy,
    }
    out = {kind: make(source, good, index) for kind, make in makers.items()}
    out["wrong_length"] = wrong_length(source, good, worker)
    return {kind: out[kind] for kind in BAD_KINDS}
