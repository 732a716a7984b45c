"""What a part asks for, by operation: an average is not a sum.

One small table of operations (mean, median, sum, count, maximum, minimum, a share each, adding,
subtracting, multiplying, rounding, sorting) and the words that name them serves three checks, each made
in code rather than by another model call:

- **the tool** (`check_tool_fits`): a part whose words start with an operation ("average of 4, 9 and 15",
  "find the median of ...") given to a tool whose name, first sentence and "Returns ..." name only other
  operations ("Add up a list of numbers"), and that is no general calculator, is refused before it runs;
- **the result** (`check_statistic`): a single number that is another statistic of the part's numbers than
  the one it asks for (their sum, for "the average of ...") can't answer the part;
- **the answer** (`answering`): of a result with named values (a summary's count, sum, mean, median, ...),
  the ones the part asks for are the ones an answer must state.

Only the operation a part *starts with* counts: in "round the mean to 1 decimal" or "convert the total to
euros" the mean and the total are what the part is given, not what it computes.
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.workers.grounding import find_numbers

__all__ = ["OPERATIONS", "answering", "asked_operations", "check_statistic", "check_tool_fits", "named"]

# operation: (words that name it, keys of a result that hold it). Left out on purpose, as they name a
# part's values or a conversion more often than its operation: "percent" ("at 4 percent", "a 15% tip"),
# "how many" and "number of" ("how many km is 5 miles"), "plus" and "min"/"max" (calculate's description
# lists min and max among its functions: it would no longer fit an average).
OPERATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mean": (
        ("average", "averages", "averaged", "mean", "avg", "arithmetic mean"),
        ("mean", "average", "avg"),
    ),
    "median": (("median", "middle value"), ("median",)),
    "sum": (("sum", "sums", "summed", "total", "totals", "add up", "adds up"), ("sum", "total")),
    # arithmetic on given values, not a statistic of a data set: no key of a summary answers "add 5 to
    # the median" (its "sum" is not the median plus 5)
    "addition": (("add", "adds", "added"), ()),
    "subtraction": (("subtract", "subtracts", "subtracted", "deduct"), ()),
    "multiplication": (("multiply", "multiplies", "multiplied"), ()),
    "count": (("count", "counts", "total"), ("count",)),
    "maximum": (("maximum", "largest", "highest", "biggest"), ("max", "maximum")),
    "minimum": (("minimum", "smallest", "lowest"), ("min", "minimum")),
    "share": (("per person", "per head", "apiece", "each pays", "split", "divide"), ("per_person", "each")),
    "rounding": (("round", "rounds", "rounded", "rounding"), ("rounded",)),
    "sorting": (("sort", "sorts", "sorted", "sorting"), ("sorted",)),
}
# Words by which a tool says it computes anything it is written (a calculator: "Arithmetic on numbers: add
# (plus, sum, total), subtract ..."): such a tool fits every operation (an average is a sum over a count).
_GENERAL = re.compile(r"\b(?:arithmetic|expressions?|formulas?|calculator)\b", re.I)
# What each statistic of a list of numbers is, to tell one from another in a result.
_STATISTICS: dict[str, Callable[[list[float]], float]] = {
    "mean": statistics.fmean,
    "median": statistics.median,
    "sum": math.fsum,
    "count": lambda xs: float(len(xs)),
    "maximum": max,
    "minimum": min,
}
_WITHIN = frozenset({"mean", "median", "maximum", "minimum"})  # statistics that lie within the data's range
# Words a part may start with before its operation: "calculate the average of ...", "what's the median".
_LEAD = re.compile(
    r"^(?:\s*(?:please|calculate|compute|find|get|give|determine|work\s+out|figure\s+out|return|"
    r"what\s+is|what's|whats|the|a|an)\b)*\s*",
    re.I,
)
_WORDS = {
    op: re.compile(r"\b(?:" + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in words) + r")\b", re.I)
    for op, (words, _) in OPERATIONS.items()
}
_WORDS["addition"] = re.compile(r"\b(?:add|adds|added)\b(?!\s+up\b)", re.I)  # "add up" a list is its sum


def named(text: str) -> set[str]:
    """Every operation a text names anywhere (a tool's name and description: "sum_numbers", "Add up ...")."""
    text = text.replace("_", " ")
    return {op for op, pattern in _WORDS.items() if pattern.search(text)}


def _asked(task: str) -> tuple[set[str], bool]:
    """The operations a part starts with, and whether "of" follows them ("the average of ...")."""
    lead = _LEAD.match(task)
    body = task[lead.end() if lead else 0 :]
    ops: set[str] = set()
    of = False
    for op, pattern in _WORDS.items():
        m = pattern.match(body)
        if m:
            ops.add(op)
            of = of or bool(re.match(r"\s*(?:of|for)\b|\s*:", body[m.end() :], re.I))
    return ops, of


def asked_operations(task: str) -> set[str]:
    """The operations a part starts with ("average of 4, 9, 15" -> mean; "add 42 to the result" -> sum);
    none when it starts with another verb ("round the mean", "convert the total")."""
    return _asked(task)[0]


def check_tool_fits(task: str, tool: str, description: str) -> list[str]:
    """A tool that does another operation than the one the part starts with: its name, the first sentence
    of its description and what it says it returns name operations, none of them the part's, and it is no
    general calculator (arithmetic, an expression, a formula). ("Split a bill between people" returns "the
    total with tip": it fits "add the tip to the bill".)"""
    asked = asked_operations(task)
    if not asked:
        return []
    first, does, general = _tool_does(tool, description)
    if not does or asked & does or general:
        return []
    want = " or ".join(sorted(asked))
    return [
        f"the part asks for the {want}, but tool {tool!r} does the {' and '.join(sorted(does))} "
        f"({first[:80]!r}); call a found tool that gives the {want}, or skip"
    ]


@functools.lru_cache(maxsize=4096)
def _tool_does(tool: str, description: str) -> tuple[str, frozenset[str], bool]:
    """What a tool says it does: its description's first sentence, the operations it names, whether it is
    a general calculator. Once per tool: the agent checks every found tool at every decision."""
    first = _first_sentence(" ".join(description.split()))
    does = frozenset(named(f"{tool} {first} {_gives(description)}"))
    return first, does, bool(_GENERAL.search(f"{tool.replace('_', ' ')} {first}"))


def _first_sentence(text: str) -> str:
    """A description's first sentence ("e.g." and "i.e." end none)."""
    for m in re.finditer(r"[.!?](?=\s)", text):
        if not text[: m.start()].endswith(("e.g", "i.e", "etc", "vs")):
            return text[: m.start()]
    return text.rstrip(".")


def _gives(description: str) -> str:
    """What a description says its tool returns: its sentences that start "Returns" or "Gives" (its
    example calls left out)."""
    body = " ".join(re.split(r"\n\s*Example:", description)[0].split())
    return " ".join(s for s in re.split(r"(?<=[.!?])\s+", body) if s.lower().startswith(("returns", "gives")))


def _data(task: str, args: Mapping[str, Any], of: bool) -> list[float]:
    """The numbers a statistic is taken of: the longest list of numbers among the arguments, else the
    part's own numbers when it takes the statistic "of" them ("the average of 4, 9 and 15"; in "average
    speed for 60 miles in 1 hour" the numbers are no data set)."""
    lists = [
        [float(x) for x in v]
        for v in args.values()
        if isinstance(v, list)
        and v
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
    ]
    if lists:
        return max(lists, key=len)
    return [value for value, _ in find_numbers(task)] if of else []


def check_statistic(task: str, args: Mapping[str, Any], result: str) -> list[str]:
    """A single-number result that is another statistic of the part's numbers than the one it asks for.

    The part must start with one statistic ("the average of 4, 9, 15, 22 and 30") and have at least two
    numbers to take it of; the result must equal another statistic of them and not the one asked, or, for
    a mean, median, maximum or minimum, lie outside the range of the numbers.
    """
    ops, of = _asked(task)
    asked = ops & _STATISTICS.keys()
    try:
        value = float(result.strip())
    except ValueError:
        return []
    data = _data(task, args, of)
    if len(asked) != 1 or len(data) < 2 or not math.isfinite(value):
        return []
    (op,) = asked
    want = _STATISTICS[op](data)
    if _same(value, want):
        return []
    shown = ", ".join(f"{x:g}" for x in data[:12]) + (", ..." if len(data) > 12 else "")
    other = next((o for o, f in _STATISTICS.items() if o != op and _same(value, f(data))), None)
    if other is not None:
        return [
            f"the result {result.strip()} is the {other} of {shown}, not their {op} ({want:g}): this tool "
            f"computed the {other}; call a tool that gives the {op}, or skip the part"
        ]
    low, high = min(data), max(data)
    if op in _WITHIN and not low - 1e-9 <= value <= high + 1e-9:
        # a mean or median lies between the smallest and the largest value, whatever was computed
        return [
            f"the result {result.strip()} can't be the {op} of {shown}: it lies outside {low:g} to {high:g}; "
            f"the {op} is {want:g}"
        ]
    return []


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def answering(task: str, result: str) -> tuple[str, bool]:
    """The values of a result that answer its part, and whether the result was narrowed to them.

    A result with named values (a JSON object) narrows to the keys of the operation the part starts with
    ("average of ..." -> its "mean"; "split the bill ..." -> its "per_person"): one value as it is, several
    as an object. Any other result is the answer whole.
    """
    try:
        value = json.loads(result)
    except (json.JSONDecodeError, TypeError):
        return result, False
    if not isinstance(value, dict):
        return result, False
    keys = [k for op in sorted(asked_operations(task)) for k in OPERATIONS[op][1] if k in value]
    keys = list(dict.fromkeys(keys))
    if not keys or len(keys) == len(value):
        return result, False
    if len(keys) == 1:
        return json.dumps(value[keys[0]], ensure_ascii=False), True
    return json.dumps({k: value[k] for k in keys}, ensure_ascii=False), True
