"""Checks on a workhorse's free-text output: each returns why it rejects the output, or None.

A validator is `check(source, output) -> str | None`, where `source` is the text the worker was given. The
built-in summarize and style workers use these; a project's own workers may too, or bring their own.

    >>> within_words(3, 6)("", "one two")
    'it has 2 words; it must have 3 to 6'
    >>> adds_no_facts("Paid 20 EUR to Acme.", "Paid 25 EUR to Acme.")
    'it states what the source does not: the number 25'
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from orchestrator.workers.grounding import Evidence, check_answer, split_values

__all__ = [
    "Validator",
    "adds_no_facts",
    "condenses",
    "is_bullets",
    "keeps_facts",
    "names_in",
    "rewrites",
    "within_sentences",
    "within_words",
]

Validator = Callable[[str, str], str | None]

_SENTENCE_END = re.compile(r"[.!?]+(?:\s+|$)")
_CAPITALISED = re.compile(r"\b[A-Z][\w'’&-]*(?:\s+[A-Z][\w'’&-]*)*")
# Capitalised for grammar, not because they name something.
_COMMON = frozenset(
    {
        "I",
        "A",
        "An",
        "The",
        "This",
        "That",
        "These",
        "Those",
        "It",
        "Its",
        "We",
        "Our",
        "You",
        "Your",
        "He",
        "She",
        "They",
        "Their",
        "There",
        "Here",
        "If",
        "When",
        "While",
        "But",
        "And",
        "Or",
        "So",
        "Also",
        "Please",
        "Thanks",
        "Thank",
        "Dear",
        "Hi",
        "Hello",
        "Best",
        "Regards",
        "Sincerely",
        "Yes",
        "No",
        "Summary",
        "Note",
    }
)


def _words(text: str) -> int:
    return len(re.findall(r"\w+(?:[-'’]\w+)*", text))


def _sentences(text: str) -> int:
    return len([s for s in _SENTENCE_END.split(text.strip()) if s.strip()])


def within_words(low: int, high: int) -> Validator:
    """The output has between `low` and `high` words."""

    def check(_source: str, output: str) -> str | None:
        n = _words(output)
        return None if low <= n <= high else f"it has {n} words; it must have {low} to {high}"

    return check


def within_sentences(low: int, high: int) -> Validator:
    """The output has between `low` and `high` sentences (bullets count as one each)."""

    def check(_source: str, output: str) -> str | None:
        lines = [ln for ln in output.splitlines() if ln.strip()]
        bullets = [ln for ln in lines if ln.lstrip().startswith(("-", "*", "•"))]
        n = len(bullets) if bullets else _sentences(output)
        return None if low <= n <= high else f"it has {n} sentences; it must have {low} to {high}"

    return check


def is_bullets(_source: str, output: str) -> str | None:
    """Every non-empty line is a bullet ("- ", "* " or "• ")."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    loose = [ln for ln in lines if not ln.startswith(("- ", "* ", "• "))]
    return None if lines and not loose else "every line must be a bullet starting with '- '"


def names_in(text: str) -> set[str]:
    """Capitalised names in `text` (runs of capitalised words not starting a sentence, minus common words)."""
    names: set[str] = set()
    for match in _CAPITALISED.finditer(text):
        before = text[: match.start()].rstrip()
        starts_sentence = not before or before[-1] in ".!?:\n-*•\"'“("
        words = [re.sub(r"['’]s$", "", w) for w in match.group(0).split()]  # Acme's -> Acme
        if starts_sentence and len(words) == 1:  # one capitalised word opening a sentence: grammar
            words = []
        words = [w for w in words if w not in _COMMON]
        if words:
            names.add(" ".join(words))
    return {n for n in names if n not in _COMMON}


def _in(name: str, text: str) -> bool:
    lowered = text.lower()
    return all(part.lower() in lowered for part in name.split())


def adds_no_facts(source: str, output: str) -> str | None:
    """Every number, date and capitalised name in the output appears in the source."""
    evidence = Evidence(source)
    problems = [
        p.replace(" is in neither the request nor an observation", "") for p in check_answer(output, evidence)
    ]
    problems += [f"the name {n!r}" for n in sorted(names_in(output)) if not _in(n, source)]
    if not problems:
        return None
    return "it states what the source does not: " + "; ".join(problems[:5])


def rewrites(source: str, output: str) -> str | None:
    """The output is a rewrite, not a copy: at least a tenth of it differs from the source."""
    same = difflib.SequenceMatcher(None, " ".join(source.split()).lower(), " ".join(output.split()).lower())
    if same.ratio() > 0.9:
        return "it copies the text instead of rewriting it in the style asked for"
    return None


COPIED_RUN = 30  # words in a row taken from the source that make a summary a copy


def condenses(source: str, output: str) -> str | None:
    """A summary says the text in fewer words of its own: no run of `COPIED_RUN` words in a row copies the
    source (a small model's "summary" was its first sentences, cut off at the length limit)."""
    mine = _lower_words(output)
    theirs = _lower_words(source)
    runs = {tuple(theirs[i : i + COPIED_RUN]) for i in range(len(theirs) - COPIED_RUN + 1)}
    for i in range(len(mine) - COPIED_RUN + 1):
        if tuple(mine[i : i + COPIED_RUN]) in runs:
            return f"it copies {COPIED_RUN} words in a row of the text: summarize it in your own words"
    return None


def _lower_words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"\w+", text)]


def keeps_facts(source: str, output: str) -> str | None:
    """Every number, date and capitalised name of the source survives in the output."""
    out = Evidence(output)
    dates, numbers, _ = split_values(source)
    lost = [d.isoformat() for d in dates if d not in out.dates]
    lost += [f"{n:g}" for n, places in numbers if not out.supports_number(n, places)]
    lost += [n for n in sorted(names_in(source)) if not _in(n, output)]
    if not lost:
        return None
    return "it drops facts of the source: " + ", ".join(lost[:8])
