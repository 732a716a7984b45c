"""Words for retrieval: identifiers split (camelCase, snake_case, dotted and dashed names), stop words
dropped, a light suffix stemmer; and multi-part requests split into clauses."""

from __future__ import annotations

import re

__all__ = ["clauses", "terms"]

# A run of capitals not followed by a lower-case letter (HTTP in HTTPRequest), a capitalised or lower-case
# word, or a number: camelCase and PascalCase split where a person would read a new word.
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
# A number standing alone ("2026-03-02", "15%", "1,234.5") is a value a request passes, not a word about a
# tool: matched against the numbers in tools' examples, it ranked tools by coincidences of dates. Without
# them (bench/phrasing.py, held-out top-3): index BM25 0.856 -> 0.868, hybrid 0.928 -> 0.934, in-memory BM25
# 0.832 -> 0.826; BFCL all-gold@5 0.821 either way. Digits joined to letters stay ("sha256", "log2", "3D").
_LONE_NUMBER_RE = re.compile(r"(?<![A-Za-z0-9])\d+(?![A-Za-z0-9])")
_STOP = frozenset(
    [
        "a",
        "about",
        "after",
        "all",
        "also",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "been",
        "being",
        "but",
        "by",
        "can",
        "could",
        "do",
        "does",
        "did",
        "each",
        "for",
        "from",
        "get",
        "given",
        "gets",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "just",
        "let",
        "like",
        "me",
        "my",
        "need",
        "needs",
        "of",
        "on",
        "one",
        "or",
        "our",
        "please",
        "should",
        "so",
        "some",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "this",
        "those",
        "to",
        "us",
        "use",
        "using",
        "want",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "will",
        "with",
        "would",
        "you",
        "your",
        "return",
        "returns",
        "tell",
        "find",
        "show",
        "give",
    ]
)
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "ed", "es", "s")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            if suffix in ("ies", "ied"):
                return word[: -len(suffix)] + "y"
            if suffix in ("ations", "ation"):
                return word[: -len(suffix)] + "ate"
            return word[: -len(suffix)]
    return word


def terms(text: str) -> list[str]:
    """The index terms of a text, in order, repeats kept.

    Example:
        >>> terms("getWeatherForecast for math.factorial and HTTPRequest_ids")
        ['weather', 'forecast', 'math', 'factorial', 'http', 'request', 'ids']
    """
    out = []
    for word in _WORD_RE.findall(_LONE_NUMBER_RE.sub(" ", text)):
        w = word.lower()
        if w in _STOP or (len(w) == 1 and not w.isdigit()):
            continue
        out.append(_stem(w))
    return out


# Where one request asks for several things: a sentence end, a semicolon, or "and"/"also"/"then" between
# clauses. A comma alone does not split (lists of values: "for 3, 4 and 5").
_CLAUSE_RE = re.compile(
    r"(?<=[.?!;])\s+|;\s*|\s*\b(?:and then|and also|then|also|as well as|additionally|afterwards)\b\s*"
    r"|,?\s+and\s+(?=(?:what|how|which|who|when|where|can|could|please|also|then|i|find|get|calculate|"
    r"compute|convert|list|show|tell|give|check|search|look|send|create|book|set|make|fetch|retrieve|"
    r"determine|estimate|predict|count|add|remove|delete|update|translate|play|order|schedule)\b)",
    re.IGNORECASE,
)


def clauses(text: str, min_terms: int = 2) -> list[str]:
    """The clauses of a multi-part request; a request with one clause gives itself alone.

    Example:
        >>> clauses("Convert 5 miles to km and then find the weather in Paris.")
        ['Convert 5 miles to km', 'find the weather in Paris.']
    """
    parts = [p.strip() for p in _CLAUSE_RE.split(text) if p and p.strip()]
    parts = [p for p in parts if len(terms(p)) >= min_terms]
    return parts if len(parts) > 1 else [text]
