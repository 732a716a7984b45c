"""Grounding: does a step use only what the request and the observations give?

One set of checks serves two callers: the controller runs them before a step executes (and asks the model
for one repair when one fails), and `orch eval` runs them afterwards over a run's spans to count the
ungrounded steps that got through. Each check returns a list of problems, empty when grounded.

- **Tool arguments**: every number and date a tool is given appears in the request or an earlier
  observation (a fraction may be a rounding of one: 0.33 of 0.333333333333). A unit-scale constant of
  the computation (the 100 of a percentage, the 7 of a week, the 24 of a day) is not an invented value,
  and neither is a value derived from a given one by such a constant (5 % -> 0.05, 3 weeks -> 21 days,
  25 % off -> 0.75). Free text must be a span of the evidence, or consist of its words.
- **Worker input**: a span of the request or of an observation.
- **Answer**: every number and date in it appears in the request or an observation (rounding allowed, and
  percent scaling), so a final answer states only what they support; and it says so when the last step of
  a composed plan could not be done (`check_failures_stated`).
- **Tool result**: a result that can't answer its part (`check_result`): a count of zero words, characters,
  letters, sentences or lines, where the part plainly counts those of a text and the tool was given a text
  that has some, counted something else (the occurrences of the target "word", say).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Evidence",
    "candidate_spans",
    "check_answer",
    "check_failures_stated",
    "check_result",
    "check_results_stated",
    "check_tool_args",
    "check_worker_input",
    "find_dates",
    "find_numbers",
    "normalize",
    "split_values",
]

# A number: optional minus (not after a word character: "2026-03-02" is three numbers, not two negatives),
# digits with optional thousands commas, optional decimals and exponent.
_NUMBER = re.compile(r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|(?<![\w])\.\d+")
_SCALE_AFTER = re.compile(r"\s*(thousand|million|billion|trillion|k\b|m\b|bn\b)", re.I)
_SCALES = {"thousand": 1e3, "k": 1e3, "million": 1e6, "m": 1e6, "billion": 1e9, "bn": 1e9, "trillion": 1e12}

_MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for name in names
}
MONTHS = _MONTHS  # shared with orchestrator.workers.spans
_MONTH = r"(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4})"
_DATE_PATTERNS = [
    re.compile(r"(?<!\d)(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})(?!\d)"),
    re.compile(r"(?<!\d)(?P<year>\d{4})/(?P<month>\d{1,2})/(?P<day>\d{1,2})(?!\d)"),
    re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b", re.I),
    re.compile(rf"\b{_DAY}(?:\s+of)?\s+{_MONTH},?\s+{_YEAR}\b", re.I),
]

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90,
}  # fmt: skip
_WORD_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_OTHER_WORDS = {"dozen": 12.0, "half": 0.5, "quarter": 0.25, "twice": 2.0, "double": 2.0, "triple": 3.0}

# Unit-scale constants of a computation: percent, week, months, hours, minutes, days, seconds, kilo.
CONSTANTS = frozenset({*range(0, 13), 24.0, 60.0, 100.0, 365.0, 1000.0, 3600.0})
_SCALE_CONSTANTS = (7.0, 12.0, 24.0, 52.0, 60.0, 100.0, 365.0, 1000.0, 3600.0)
# Function names an expression may use without them appearing in the request.
_EXPRESSION_WORDS = frozenset(
    [
        "sqrt",
        "log",
        "log10",
        "log2",
        "ln",
        "exp",
        "sin",
        "cos",
        "tan",
        "asin",
        "acos",
        "atan",
        "abs",
        "round",
        "pi",
        "min",
        "max",
        "pow",
        "floor",
        "ceil",
        "sum",
        "mod",
        "factorial",
        "hypot",
        "degrees",
        "radians",
        "true",
        "false",
        "none",
    ]
)
_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


def normalize(text: str) -> str:
    """Lower case, straight quotes, single spaces: the form in which spans are compared."""
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    return " ".join(text.lower().split())


def _strip_quotes(text: str) -> str:
    return text.strip().strip("'\"“”‘’").strip()


def _to_float(raw: str) -> float | None:
    try:
        return float(raw.replace(",", "").replace("−", "-"))
    except ValueError:
        return None


def decimals_of(raw: str) -> int:
    """Decimal places written in a number literal ('22.20' -> 2, '1,080' -> 0)."""
    raw = raw.lower().split("e")[0]
    return len(raw.split(".")[1]) if "." in raw else 0


def find_numbers(text: str) -> list[tuple[float, int]]:
    """Numbers written in digits, as (value, decimal places); '1.2 million' also yields 1,200,000."""
    found: list[tuple[float, int]] = []
    for m in _NUMBER.finditer(text):
        value = _to_float(m.group())
        if value is None:
            continue
        found.append((value, decimals_of(m.group())))
        scale = _SCALE_AFTER.match(text, m.end())
        if scale:
            found.append((value * _SCALES[scale.group(1).lower()], 0))
    return found


def _word_numbers(text: str) -> list[float]:
    """Numbers written in English words: 'seventy-two' -> 72, 'two hundred and five' -> 205."""
    values: list[float] = []
    total = current = 0
    last = ""  # the kind of the previous number word: unit, ten, scale
    for word in [*re.findall(r"[a-z]+|[^\sa-z-]", text.lower()), "."]:
        kind = (
            "unit" if word in _UNITS else "ten" if word in _TENS else "scale" if word in _WORD_SCALES else ""
        )
        if kind and last and (kind == last == "unit" or (kind == "ten" and last in ("unit", "ten"))):
            values.append(float(total + current))  # "two three", "five twenty": two numbers
            total = current = 0
            last = ""
        if kind == "unit":
            current += _UNITS[word]
        elif kind == "ten":
            current += _TENS[word]
        elif kind == "scale" and last:
            if word == "hundred":
                current = max(current, 1) * 100
            else:
                total += max(current, 1) * _WORD_SCALES[word]
                current = 0
        elif word == "and" and last:
            continue
        else:
            if last:
                values.append(float(total + current))
            total = current = 0
            last = ""
            if word in _OTHER_WORDS:
                values.append(_OTHER_WORDS[word])
            continue
        last = kind
    return values


def find_dates(text: str) -> list[tuple[dt.date, tuple[int, int]]]:
    """Calendar dates in ISO, slashed ISO and English long forms, with their character spans."""
    found: list[tuple[dt.date, tuple[int, int]]] = []
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            month_raw = m.group("month").lower().rstrip(".")
            month = _MONTHS.get(month_raw) or int(month_raw)
            try:
                found.append((dt.date(int(m.group("year")), month, int(m.group("day"))), m.span()))
            except ValueError:
                continue
    return found


def split_values(text: str) -> tuple[list[dt.date], list[tuple[float, int]], str]:
    """The dates in a text, the numbers outside them, and the text with its dates blanked out."""
    dates = find_dates(text)
    rest = _without_spans(text, [s for _, s in dates])
    return [d for d, _ in dates], find_numbers(rest), rest


def _without_spans(text: str, spans: Iterable[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


@dataclass
class Evidence:
    """What a step may draw on: the request and the observations so far (tool results, worker outputs)."""

    request: str
    observations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._numbers: set[float] | None = None
        self._dates: set[dt.date] | None = None
        self._text: str | None = None
        self._words: set[str] | None = None

    def add(self, observation: str) -> None:
        """Record one more observation."""
        self.observations.append(observation)
        self._numbers = self._dates = self._text = self._words = None

    @property
    def texts(self) -> list[str]:
        return [self.request, *self.observations]

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "\n".join(normalize(t) for t in self.texts)
        return self._text

    @property
    def numbers(self) -> set[float]:
        if self._numbers is None:
            values: set[float] = set()
            for t in self.texts:
                values.update(v for v, _ in find_numbers(t))
                values.update(_word_numbers(t))
            self._numbers = values
        return self._numbers

    @property
    def dates(self) -> set[dt.date]:
        if self._dates is None:
            self._dates = {d for t in self.texts for d, _ in find_dates(t)}
        return self._dates

    @property
    def words(self) -> set[str]:
        if self._words is None:
            self._words = {w.lower() for t in self.texts for w in _WORD.findall(t)}
        return self._words

    def has_span(self, text: str) -> bool:
        """Is `text` (quotes trimmed, case and spacing ignored) a span of the request or an observation?"""
        needle = normalize(_strip_quotes(text))
        return bool(needle) and needle in self.text

    def supports_number(self, value: float, decimals: int | None = None, *, scaled: bool = False) -> bool:
        """Does an evidence number equal `value`, or round to it at `decimals` places?

        With `scaled`, a value derived from an evidence number by a unit-scale constant counts too.
        Percent scaling (x100, /100) and the sign are always allowed.
        """
        factors: tuple[float, ...] = (1.0, 100.0, 0.01)
        if scaled:
            factors += tuple(c for c in _SCALE_CONSTANTS) + tuple(1 / c for c in _SCALE_CONSTANTS)
        for e in self.numbers:
            for f in factors:
                for candidate in (e * f, -e * f):
                    if _close(candidate, value, decimals):
                        return True
            # a percentage as a growth or discount factor: 25 % off -> 0.75, 8.25 % tax -> 1.0825
            if scaled and any(_close(1 + s * e / 100, value, decimals) for s in (1, -1)):
                return True
        return False


def _close(evidence: float, value: float, decimals: int | None) -> bool:
    if abs(evidence - value) <= 1e-9 * max(1.0, abs(value)):
        return True
    return decimals is not None and abs(round(evidence, decimals) - value) <= 1e-9 * max(1.0, abs(value))


def _schema_allows(schema: Mapping[str, Any], value: Any) -> bool:
    """A value the schema itself names (an enum member, a const, the default) is not invented."""
    if "enum" in schema and value in schema["enum"]:
        return True
    if "const" in schema and value == schema["const"]:
        return True
    if "default" in schema and value == schema["default"]:
        return True
    return any(_schema_allows(s, value) for s in schema.get("anyOf", []) if isinstance(s, Mapping))


def check_tool_args(args: Mapping[str, Any], parameters: Mapping[str, Any], evidence: Evidence) -> list[str]:
    """Problems with a tool call's arguments: values that neither the request nor an observation gives."""
    props = parameters.get("properties", {}) if isinstance(parameters, Mapping) else {}
    problems: list[str] = []
    for name, value in args.items():
        schema = props.get(name, {}) if isinstance(props, Mapping) else {}
        problems += _check_value(name, value, schema if isinstance(schema, Mapping) else {}, evidence)
    return problems


def _check_value(name: str, value: Any, schema: Mapping[str, Any], evidence: Evidence) -> list[str]:
    if value is None or isinstance(value, bool) or _schema_allows(schema, value):
        return []
    if isinstance(value, int | float):
        # a fraction as a model copies a result, rounded ("0.33" for 0.333333333333), as in a text argument
        decimals = None if float(value).is_integer() else decimals_of(repr(float(value)))
        if float(value) in CONSTANTS or evidence.supports_number(float(value), decimals, scaled=True):
            return []
        return [f"{name}={value!r}: the number {value:g} is in neither the request nor an observation"]
    if isinstance(value, Mapping):
        sub = schema.get("properties", {})
        return [
            p
            for k, v in value.items()
            for p in _check_value(
                f"{name}.{k}", v, sub.get(k, {}) if isinstance(sub, Mapping) else {}, evidence
            )
        ]
    if isinstance(value, list | tuple):
        items = schema.get("items", {})
        item_schema = items if isinstance(items, Mapping) else {}
        return [
            p for i, v in enumerate(value) for p in _check_value(f"{name}[{i}]", v, item_schema, evidence)
        ]
    if isinstance(value, str):
        return _check_text(name, value, evidence)
    return []


def _check_text(name: str, value: str, evidence: Evidence) -> list[str]:
    if not value.strip() or evidence.has_span(value):
        return []
    problems: list[str] = []
    dates, numbers, rest = split_values(value)
    for d in dates:
        if d not in evidence.dates:
            problems.append(
                f"{name}={value!r}: the date {d.isoformat()} is in neither the request nor an observation"
            )
    for number, decimals in numbers:
        if number not in CONSTANTS and not evidence.supports_number(number, decimals, scaled=True):
            problems.append(
                f"{name}={value!r}: the number {number:g} is in neither the request nor an observation"
            )
    unknown = [
        w
        for w in _WORD.findall(rest)
        if w.lower() not in evidence.words and w.lower() not in _EXPRESSION_WORDS
    ]
    if unknown:
        problems.append(
            f"{name}={value!r}: the words {', '.join(repr(w) for w in unknown[:5])} come from neither the "
            "request nor an observation"
        )
    return problems


def check_worker_input(text: str, evidence: Evidence) -> list[str]:
    """A worker's input must be text the user gave (or an observation), not text the controller wrote."""
    if evidence.has_span(text):
        return []
    return [f"the worker input {text[:80]!r} is not a span of the request or an observation"]


def check_answer(answer: str, evidence: Evidence) -> list[str]:
    """Numbers and dates in an answer that neither the request nor an observation supports."""
    problems: list[str] = []
    dates, numbers, _ = split_values(answer)
    for d in dates:
        if d not in evidence.dates:
            problems.append(f"the date {d.isoformat()} is in neither the request nor an observation")
    seen: set[float] = set()
    for number, decimals in numbers:
        if number in seen:
            continue
        seen.add(number)
        if not evidence.supports_number(number, decimals):
            problems.append(f"the number {number:g} is in neither the request nor an observation")
    return problems


# --- completeness: the answer states each result ------------------------------------------------------
def _leaves(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list | tuple):
        return [leaf for v in value for leaf in _leaves(v)]
    return [] if value is None else [value]


def _states(answer: str, value: Any) -> bool:
    """Does the answer state this value (a number up to its rounding, a date in any form, a text)?"""
    text = normalize(answer)
    if isinstance(value, bool):
        words = ("yes", "true", "is a", "it is") if value else ("no", "not", "false", "isn't")
        return any(w in text for w in words)
    if isinstance(value, str):
        as_number = _to_float(value.strip()) if _NUMBER.fullmatch(value.strip()) else None
        if as_number is not None:
            value = as_number
        else:
            dates = find_dates(value)
            if dates and dates[0][1] == (0, len(value.strip())):
                return any(d == dates[0][0] for d, _ in find_dates(answer))
            needle = normalize(value)
            return needle in text or needle.replace("_", " ") in text.replace("_", " ")
    if isinstance(value, int | float):
        return any(_close(float(value), a, d) for a, d in split_values(answer)[1])
    return False


def check_results_stated(answer: str, results: Sequence[tuple[str, str, bool]]) -> list[str]:
    """Results an answer leaves out: (what, result text, every value) per settled part.

    A worker's output must be stated whole (each value: a label, an amount, a name); a tool's result is
    stated when any of its values is (a tool may return more than the question asked for).
    """
    import json

    problems: list[str] = []
    for what, result, every in results:
        try:
            value: Any = json.loads(result)
        except (json.JSONDecodeError, TypeError):
            value = result.strip()
        leaves = [v for v in _leaves(value) if not (isinstance(v, str) and (not v.strip() or len(v) > 200))]
        if not leaves:
            continue
        stated = [v for v in leaves if _states(answer, v)]
        if every and len(stated) < len(leaves):
            missing = ", ".join(str(v) for v in leaves if v not in stated)
            problems.append(f"the answer does not state {missing} from {what}")
        elif not every and not stated:
            problems.append(f"the answer does not state the result of {what} ({result[:80]})")
    return problems


_FAILURE_WORDS = re.compile(
    r"\b(?:could\s+not|couldn't|can\s*not|can't|unable|failed|"
    r"not\s+(?:be\s+)?(?:done|possible|available|computed|calculated|found))\b",
    re.I,
)


def check_failures_stated(answer: str, failed: Sequence[str]) -> list[str]:
    """Parts an answer must say could not be done and does not: the last step of a composed plan that
    failed after the results it uses were done ("add 5 to the median"). Its earlier result is then stated,
    and an answer that doesn't say the step failed passes that result off as the answer."""
    if not failed or _FAILURE_WORDS.search(answer):
        return []
    return [f"the answer does not say that {what!r} could not be done" for what in failed]


# --- results that can't answer their part --------------------------------------------------------------
# A part that plainly counts a text's own units: a counting word, then the unit, and nothing that narrows
# which units count ("words longer than 5 letters", "lines that start with #": zero may be right there).
_COUNTING = re.compile(r"\b(?:count|counts|counting|number|how\s+many|total|tally)\b", re.I)
_UNIT_WORDS = {
    "words": r"[^\W_]",  # a text with a letter or digit has a word
    "characters": r"[\s\S]",
    "chars": r"[\s\S]",
    "letters": r"[^\W\d_]",
    "sentences": r"\S",
    "lines": r"\S",
    "paragraphs": r"\S",
}
_UNIT = re.compile(r"\b(" + "|".join(_UNIT_WORDS) + r")\b", re.I)
# Words that say no more than "of this text" ("how many words are in the following sentence")
_PLAIN = frozenset(
    (
        "a", "an", "the", "of", "in", "on", "this", "that", "these", "its", "it", "there", "are", "is", "do",
        "does", "total", "number", "count", "counts", "counting", "how", "many", "text", "sentence",
        "message", "string", "passage", "phrase", "paragraph", "line", "quote", "quoted", "given",
        "following", "above", "below", "request", "user", "provided", "input", "tally", "all",
    )
)  # fmt: skip


def _plain_unit_count(task: str) -> str | None:
    """The unit a part counts of a whole text ("count the words of the text" -> "words"), else None."""
    body = task
    for pattern in _QUOTED:  # the text itself, quoted in the part's words
        body = pattern.sub(" ", body)
    body = body.split(":", 1)[0]  # ... or given after a colon
    units = {u.lower() for u in _UNIT.findall(body)}
    if len(units) != 1 or not _COUNTING.search(body):
        return None
    (unit,) = units
    rest = [w for w in re.findall(r"[^\W_]+", body.lower()) if w not in _PLAIN and w != unit]
    return None if rest else unit


def check_result(task: str, args: Mapping[str, Any], result: str) -> list[str]:
    """A tool's result that can't answer its part, though the tool ran without an error.

    So far one rule, narrow enough never to refuse a right answer: where the part plainly counts a text's
    words (characters, letters, sentences, lines, paragraphs), a count of zero is impossible if the text
    the tool was given (its longest text argument) has one of them. The tool counted something else.
    """
    if _to_float(result.strip()) != 0 or not _NUMBER.fullmatch(result.strip()):
        return []
    unit = _plain_unit_count(task)
    texts = [v for v in args.values() if isinstance(v, str)]
    if unit is None or not texts:
        return []
    text = max(texts, key=len)
    if not re.search(_UNIT_WORDS[unit], text):
        return []
    shown = text if len(text) <= 60 else text[:57] + "..."
    return [
        f"the result {result.strip()} can't be the number of {unit} of the text {shown!r}, which has some: "
        f"this tool counted something else; call a tool that counts the text's {unit}, or skip the part"
    ]


# --- text for a worker ---------------------------------------------------------------------------------
_QUOTED = [
    re.compile(r"(?:^|(?<=[\s:(\[]))'(.+?)'(?=[\s.,;:!?)\]]|$)", re.S),
    re.compile(r"(?:^|(?<=[\s:(\[]))\"(.+?)\"(?=[\s.,;:!?)\]]|$)", re.S),
    re.compile(r"“(.+?)”", re.S),
    re.compile(r"‘(.+?)’(?=[\s.,;:!?)\]]|$)", re.S),
]
_MIN_SPAN_WORDS = 2


def candidate_spans(request: str, limit: int = 6) -> list[str]:
    """Text in the request that a worker could be given: quoted passages, and what follows a colon."""
    spans: list[str] = []

    def add(text: str) -> None:
        text = _strip_quotes(text)
        if len(text.split()) >= _MIN_SPAN_WORDS and text not in spans:
            spans.append(text)

    for pattern in _QUOTED:
        for m in pattern.finditer(request):
            add(m.group(1))
    for m in re.finditer(r":\s+(.+)$", request, re.S):
        tail = m.group(1).strip()
        if not any(normalize(s) in normalize(tail) and len(s) < len(tail) for s in spans):
            add(tail)
    return spans[:limit]
