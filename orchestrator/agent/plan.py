"""The controller's plan: a short list of sub-tasks ("parts"), kept in the state, each done by a tool or a worker.

The racehorse writes the plan once, from the request (with a few worked examples retrieved for it); the
graph then runs the parts in order and stops once every part has its result:

- a **tool part** names one computation in plain words, its values copied from the request; its tools are
  found by searching the catalog with those words, and the controller picks the call;
- a **worker part** names a worker and the text it gets, which must be a span of the request (the schema
  offers only such spans).

A tool part may use earlier parts' results ("plus 42", "in total", "then convert"): it says so with
`"uses": [<part numbers>]`, or its words refer to "the result" of an earlier part. Its act step is given
those results, and the answer states the last result, not the ones it was made from (`stated_parts`).

An empty plan means no tool or worker can answer, and the run says so.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, cast

from orchestrator.toolsets.catalog import tokenize
from orchestrator.workers.operations import answering

__all__ = [
    "Example",
    "Part",
    "PartStatus",
    "answer_of",
    "blocked",
    "current_part",
    "given_results",
    "merge_plan",
    "plan_schema",
    "select_examples",
    "stated_parts",
    "uses_of",
]

PartStatus = Literal["pending", "searched", "done", "failed"]
MAX_PARTS = 4
MAX_TEXTS = 32  # texts one worker part may fan out over (a model that delegates several at once)
TASK_MAX = 120


class Part(TypedDict):
    """One sub-task of the plan, with its progress."""

    tool: str  # a tool part: the computation in plain words ("" for a worker part)
    worker: str  # a worker part: the worker's name ("" for a tool part)
    text: str  # a worker part: the text the worker gets
    status: PartStatus
    tools: list[str]  # a tool part: the tools its search found
    tries: int  # failed tool calls so far
    result: str  # the observation that settled it (a tool's result, a worker's output)
    note: str  # why the part failed
    uses: list[int]  # a tool part: the earlier parts (0-based) whose results it takes


def new_part(*, tool: str = "", worker: str = "", text: str = "", uses: Sequence[int] = ()) -> Part:
    """A pending part."""
    return Part(
        tool=tool,
        worker=worker,
        text=text,
        status="pending",
        tools=[],
        tries=0,
        result="",
        note="",
        uses=list(uses),
    )


def uses_of(plan: Sequence[Part], index: int) -> list[int]:
    """The earlier parts whose results part `index` takes: only a tool part takes any (a worker's text is
    the request's), and a plan checkpointed before `uses` has none."""
    if not plan[index]["tool"]:
        return []
    return [i for i in plan[index].get("uses") or [] if 0 <= i < index]


def stated_parts(plan: Sequence[Part]) -> list[int]:
    """The parts an answer states: all, except a done part whose result a later done part used (the later
    result answers the request; "17% of 850, plus 42" is 186.5, not 144.5 and 186.5). A result whose user
    failed is stated: it is the last result there is."""
    used = {i for n, p in enumerate(plan) if p["status"] == "done" for i in uses_of(plan, n)}
    return [n for n in range(len(plan)) if n not in used]


# Words by which a part refers to an earlier result: "add 42 to the result", "the two results", "the
# result of part 1". A plural (or "both") means every earlier part; a singular, the part just before.
_PART_NUMBERS = re.compile(r"\bparts?\s+\d(?:\s*(?:,|and|&)\s*\d)*", re.I)
_RESULT_WORDS = re.compile(
    r"\b(?:the|that|this|its|previous|prior|earlier|last|above|both|two|three|these|those)\s+"
    r"(?:(?:\w+)\s+)?(?P<noun>results?|answers?|outcomes?)\b",
    re.I,
)


def linked(parts: Sequence[Part]) -> list[Part]:
    """The parts, each tool part that names no `uses` but refers to an earlier result in its words given
    the parts it refers to (a small model writes "add 42 to the result" and no `uses`)."""
    out = [cast(Part, dict(p)) for p in parts]
    for n, part in enumerate(out):
        if n == 0 or not part["tool"] or part.get("uses"):
            continue
        numbers = [int(d) - 1 for m in _PART_NUMBERS.finditer(part["tool"]) for d in re.findall(r"\d", m[0])]
        if numbers:
            part["uses"] = sorted({i for i in numbers if 0 <= i < n})
            continue
        words = _RESULT_WORDS.search(part["tool"])
        if words is None:
            continue
        many = words.group("noun").lower().endswith("s") or words.group(0).lower().startswith("both")
        part["uses"] = list(range(n)) if many else [n - 1]
    return out


_SHOWN_RESULT = 300  # characters of an earlier result a later part's step is told


def answer_of(part: Part) -> str:
    """A done part's result as the answer and later parts are given it: of a tool's result, the values
    that answer the part (the mean of a summary, for "the average of ..."); a worker's output whole."""
    return answering(part["tool"], part["result"])[0] if part["tool"] else part["result"]


def given_results(plan: Sequence[Part], index: int) -> str:
    """The results of the earlier parts that part `index` uses, as its step is told them ("" if none):
    " The result of part 1 is 144.5." """
    out = ""
    for i in uses_of(plan, index):
        if plan[i]["status"] == "done":
            text = answer_of(plan[i])
            text = text if len(text) <= _SHOWN_RESULT else text[: _SHOWN_RESULT - 3] + "..."
            out += f" The result of part {i + 1} is {text}."
    return out


def blocked(plan: Sequence[Part], index: int) -> bool:
    """Does part `index` use the result of a part that failed? Then it can't be done either."""
    return any(plan[i]["status"] == "failed" for i in uses_of(plan, index))


def merge_plan(left: list[Part] | None, right: list[Any] | None) -> list[Part] | None:
    """Reducer: a list of parts replaces the plan; a list of `{"index": i, ...}` patches updates parts."""
    if right is None:
        return left
    if not right or "index" not in right[0]:
        return [dict(p) for p in right]  # type: ignore[misc]
    parts = [dict(p) for p in (left or [])]
    for patch in right:
        i = patch["index"]
        if 0 <= i < len(parts):
            parts[i].update({k: v for k, v in patch.items() if k != "index"})
    return parts  # type: ignore[return-value]


def current_part(plan: Sequence[Part] | None) -> int | None:
    """The index of the first part still open (pending or searched), or None when every part is settled."""
    for i, part in enumerate(plan or []):
        if part["status"] in ("pending", "searched"):
            return i
    return None


def plan_schema(workers: Sequence[str], spans: Sequence[str], many: bool = False) -> dict[str, Any]:
    """The JSON schema of a plan: tool parts, and worker parts only where the request has text to give.

    `many`: a worker part may give a list of texts (for a model that makes parallel calls): each becomes a
    part of its own, and they fan out together."""
    uses = {
        "type": "array",
        "items": {"enum": list(range(1, MAX_PARTS))},
        "maxItems": MAX_PARTS - 1,
        "description": "the numbers of the earlier parts whose results this part takes",
    }
    item_options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"type": "string", "minLength": 3, "maxLength": TASK_MAX}, "uses": uses},
            "required": ["tool"],
        }
    ]
    if workers and spans:
        text: dict[str, Any] = {"enum": list(spans)}
        if many:
            several = {
                "type": "array",
                "items": {"enum": list(spans)},
                "minItems": 1,
                "maxItems": MAX_TEXTS,
                "description": "several texts for the worker: each is done on its own, all at once",
            }
            text = {"anyOf": [text, several]}
        item_options.append(
            {
                "type": "object",
                "properties": {"worker": {"enum": list(workers)}, "text": text},
                "required": ["worker", "text"],
            }
        )
    items: dict[str, Any] = item_options[0] if len(item_options) == 1 else {"anyOf": item_options}
    return {
        "type": "object",
        "properties": {"plan": {"type": "array", "items": items, "maxItems": MAX_PARTS}},
        "required": ["plan"],
    }


def plan_json(parts: Sequence[Mapping[str, Any]]) -> str:
    """The plan as the model writes it (and as the transcript keeps it); part numbers count from 1."""
    body: list[dict[str, Any]] = []
    for p in parts:
        if not p.get("tool"):
            body.append({"worker": p["worker"], "text": p["text"]})
        elif p.get("uses"):
            body.append({"tool": p["tool"], "uses": [i + 1 for i in p["uses"]]})
        else:
            body.append({"tool": p["tool"]})
    return json.dumps({"plan": body}, ensure_ascii=False)


# --- worked examples ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    """A request and the plan that answers it: parts as the model writes them, `{"tool": ...}` (with
    `"uses": [<part numbers>]` when it takes earlier results) or `{"worker": ..., "text": ...}`."""

    request: str
    plan: tuple[Mapping[str, Any], ...]

    def reply(self) -> str:
        """The plan as the model writes it (part numbers in `uses` count from 1, as written)."""
        return json.dumps({"plan": [dict(p) for p in self.plan]}, ensure_ascii=False)


# Requests that no tool or worker can answer: their plan is empty. Every project's agent sees these, so a
# model always has an example of saying so. Examples for a project's tools come with its tools
# (`build_agent_graph(examples=...)`), and worker examples are made from its workers (`worker_examples`).
NO_STEP_EXAMPLES: tuple[Example, ...] = (
    Example("What's the weather in Rome tomorrow?", ()),
    Example("What is Apple's share price right now?", ()),
    Example("Who wrote the novel Dracula?", ()),
    Example("Please book me a table for two tonight.", ()),
)

_SAMPLE = "Hello, I have a question about my account."


def worker_examples(
    workers: Sequence[tuple[str, str, Sequence[str]]], mix: Example | None = None
) -> list[Example]:
    """Plan examples for the project's workers: (name, description, example requests) each.

    A worker's own example requests are used as given (the quoted text is what it gets); a worker without
    any gets one made from its description. Given `mix`, a one-part tool example, one more example asks
    for both: that tool part, then the first worker.
    """
    from orchestrator.workers.grounding import candidate_spans

    out: list[Example] = []
    for name, description, requests in workers:
        for request in requests or [f"{description.rstrip('.')}: '{_SAMPLE}'"]:
            spans = candidate_spans(request)
            out.append(Example(request, ({"worker": name, "text": spans[0] if spans else request},)))
    if out and mix is not None:
        first = out[0]
        request = first.request[0].lower() + first.request[1:]
        out.append(Example(f"{mix.request} Also, {request}", (*mix.plan, *first.plan)))
    return out


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|\u2018[^\u2019]*\u2019|\u201c[^\u201d]*\u201d")


def unquoted(text: str) -> str:
    """A request's or a part's words without its quoted passages: what it asks, not the text it is about."""
    return " ".join(_QUOTED.sub(" ", text).split()) or text


def select_examples(request: str, bank: Sequence[Example], k: int) -> list[Example]:
    """At most k examples whose requests share the most (idf-weighted) words with this request, best last.
    Quoted passages are left out on both sides: the text a request is about (a rent increase to summarize)
    must not pull in an example about its topic (a rent-increase percentage).

    One of them is always the closest example that needs no step at all (an empty plan), so the model
    always sees that saying "no tool can do this" is allowed. The best match goes last, nearest the
    request, where a small model weighs it most.
    """
    if k <= 0 or not bank:
        return []
    docs = [Counter(tokenize(unquoted(e.request))) for e in bank]
    df: Counter[str] = Counter()
    for d in docs:
        df.update(d.keys())
    n = len(docs)
    query = set(tokenize(unquoted(request)))
    scores = [(sum(math.log(1 + n / df[t]) for t in query if t in d), -i) for i, d in enumerate(docs)]
    ranked = sorted(range(n), key=lambda i: scores[i], reverse=True)
    chosen = [i for i in ranked[:k] if scores[i][0] > 0] or ranked[:1]  # no example that shares no word
    empty = [i for i in ranked if not bank[i].plan]
    if empty and not any(not bank[i].plan for i in chosen):
        chosen = [*chosen[: k - 1], empty[0]] if k > 1 else chosen
        chosen.sort(key=lambda i: scores[i], reverse=True)
    return [bank[i] for i in reversed(chosen)]
