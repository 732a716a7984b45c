"""Workhorse workers, defined: a task's instructions, the slot whose model runs it, its output type.

`orchestrator.agent.workhorse` runs them. Definitions stay apart from the code that runs them, so a project's
worker modules import nothing that calls models.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from orchestrator.errors import ConfigError
from orchestrator.workers.grounded import grounded_shape
from orchestrator.workers.router import Router
from orchestrator.workers.shapes import Shape, sentences_shape
from orchestrator.workers.validators import (
    Validator,
    adds_no_facts,
    condenses,
    is_bullets,
    keeps_facts,
    rewrites,
    within_sentences,
    within_words,
)

Repair = Literal["prompt", "sample", "none"]  # what follows a rejected first answer (see Worker)

__all__ = [
    "Worker",
    "WorkerResult",
    "classify_worker",
    "extract_worker",
    "output_text",
    "style_worker",
    "summarize_worker",
]


@dataclass(frozen=True)
class Worker:
    """A workhorse task: instructions, the slot whose model runs it, and what its output must be.

    `output` is a pydantic model (structured output, validated against it) or None (plain text). Either way
    `validators` may reject an output, each saying why (`orchestrator.workers.validators`). A rejected output
    gets one repair on the same slot, then goes up `escalate_to`: the slots to try in order. None means the
    run's racehorse slots; `()` means never escalate. An invalid result is never passed on.

    `min_margin` routes by the model's confidence, for outputs that are always valid (labels under a
    grammar): the margin is how far the model's least sure token led its best rival, in log-probability
    (nats). A valid answer with a smaller margin goes up the escalation chain as an invalid one would; a
    model that reports no margin is trusted. Tune it on labelled items (`orch trial`, bench/banking77.py).

    `shape` gives the reply a form built from each source (`orchestrator.workers.shapes`: a summary as a
    list of sentences; `orchestrator.workers.grounded`: a record whose values are spans of the source); the
    reply is decoded under it and turned back into the output (a text, or a record the output model then
    validates) before the validators see it.

    `repair` is what follows a rejected first answer on the worker's own slot: "prompt" asks once more with
    the reason; "sample" draws `samples` more answers at a temperature, the validators choosing the first
    that passes; "none" goes up the escalation chain at once.

    `router` predicts from the input alone whether the worker's model will be right; an input it gives
    less than its `min_p` goes up the escalation chain without a call on the worker's own slot. `orch trial
    --tune` fits one and the worker settings file names it (docs/workers.md).
    """

    name: str
    description: str
    slot: str
    output: type[BaseModel] | None
    instructions: str
    max_tokens: int = 128
    tokens_per_input_char: float = 0.0  # an output that grows with its text: the budget grows with it
    escalate_to: str | tuple[str, ...] | None = None
    example_requests: tuple[str, ...] = ()  # requests it serves, each quoting its text: taught to the planner
    validators: tuple[Validator, ...] = ()
    min_margin: float | None = None  # route by confidence: a valid answer less sure than this escalates
    shape: Shape | None = None  # a free-text output's form for each source
    repair: Repair = "prompt"
    samples: int = 3  # repair="sample": answers drawn after the first
    router: Router | None = None  # routing before generation (`orchestrator.workers.router`)

    def budget(self, source: str) -> int:
        """The output's token limit for `source`: `max_tokens`, or more for a long text when the output grows
        with it (a rewrite of 200 words is longer than one of 20; a fixed limit cut the long ones off)."""
        return max(self.max_tokens, round(self.tokens_per_input_char * len(source)))

    def schema(self, source: str = "") -> dict[str, Any] | None:
        """The JSON schema the model decodes under, for `source` (None for plain text)."""
        if self.shape is not None:
            return self.shape.schema(source)
        return self.output.model_json_schema() if self.output is not None else None

    def escalation(self, racehorses: Sequence[str] = ()) -> tuple[str, ...]:
        """The slots to escalate to, in order (`racehorses` stand in for None), never the worker's own."""
        chain = (
            tuple(racehorses)
            if self.escalate_to is None
            else (self.escalate_to,)
            if isinstance(self.escalate_to, str)
            else tuple(self.escalate_to)
        )
        return tuple(s for s in chain if s != self.slot)


@dataclass(frozen=True)
class WorkerResult:
    """A validated worker output."""

    worker: str
    value: Any  # a dict for structured output, the text for a free-text worker
    model: str
    repaired: bool
    escalated: bool
    margin: float | None = None  # the worker's own model's confidence, where it routes by it (see Worker)


def output_text(value: Any) -> str:
    """A worker's output as an answer states it: a text as it is; a record of one field by its value (a
    classification's label); a record of several by each field it found, `name: value`, then the fields
    the text did not give.

    Example:
        >>> output_text({"label": "card_arrival"})
        'card_arrival'
        >>> output_text({"amount": 12.4, "currency": "EUR", "date": None})
        'amount: 12.4, currency: EUR (not in the text: date)'
    """
    if not isinstance(value, Mapping):
        return _value_text(value)
    found = {k: v for k, v in value.items() if v is not None and v != "" and v != []}
    missing = [k for k in value if k not in found]
    if len(value) == 1 and found:
        return _value_text(next(iter(found.values())))
    stated = ", ".join(f"{k}: {_value_text(v)}" for k, v in found.items())
    if not missing:
        return stated
    absent = f"not in the text: {', '.join(missing)}"
    return f"{stated} ({absent})" if stated else absent


def _value_text(value: Any) -> str:
    """One value of a worker's output, as written in an answer (1250.0 as 1250, a list item by item)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(_value_text(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False)
    return str(value).strip()


def _shots_text(shots: Sequence[tuple[str, str]]) -> str:
    """Few-shot examples as lines of `text -> output`, appended to a worker's instructions."""
    if not shots:
        return ""
    return "\nExamples:\n" + "\n".join(
        f"{json.dumps(text, ensure_ascii=False)} -> {out}" for text, out in shots
    )


def classify_worker(
    name: str,
    labels: Sequence[str] | Mapping[str, str],
    description: str,
    *,
    slot: str = "classify",
    escalate_to: str | None = None,
    shots: Sequence[tuple[str, str]] = (),
    example_requests: Sequence[str] = (),
    min_margin: float | None = None,
) -> Worker:
    """A worker that picks exactly one label from a fixed set; `min_margin` routes an unsure answer up
    the escalation chain (see `Worker`).

    `labels` may map each label to a short description; `shots` are (text, label) examples. A small model
    classifies far better with both (Qwen2.5-0.5B on five banking labels and "other", 72 messages of
    Banking77: 65 % with bare labels, 75 % with descriptions and a dozen examples). `example_requests`
    teach the planner when to call this worker.

    Example:
        >>> w = classify_worker("triage", {"refund": "money back", "other": "else"}, "Triage a message")
        >>> w.output.model_validate({"label": "refund"}).label
        'refund'
    """
    names = list(labels)
    if not names:
        raise ConfigError(f"classify worker {name!r} needs at least one label")
    for _, label in shots:
        if label not in names:
            raise ConfigError(f"classify worker {name!r}: example label {label!r} is not one of its labels")
    label_type: Any = Literal[tuple(names)]
    output: type[BaseModel] = create_model(
        f"{name}_output", __config__=ConfigDict(extra="forbid"), label=(label_type, ...)
    )
    if isinstance(labels, Mapping):
        listed = "Labels:\n" + "\n".join(f"{label}: {meaning}" for label, meaning in labels.items())
    else:
        listed = f"Labels: {', '.join(names)}."
    instructions = (
        f"{description}. Classify the user's text into exactly one label.\n{listed}"
        + _shots_text([(text, json.dumps({"label": label})) for text, label in shots])
        + '\nReply with JSON: {"label": "<label>"}.'
    )
    return Worker(
        name,
        description,
        slot,
        output,
        instructions,
        max_tokens=24,
        escalate_to=escalate_to,
        example_requests=tuple(example_requests),
        min_margin=min_margin,
    )


def extract_worker(
    name: str,
    output: type[BaseModel],
    description: str,
    *,
    slot: str = "extract",
    escalate_to: str | None = None,
    shots: Sequence[tuple[str, Mapping[str, Any]]] = (),
    example_requests: Sequence[str] = (),
    validators: Sequence[Validator] = (),
    min_margin: float | None = None,
    grounded: bool = False,
    now: dt.datetime | dt.date | None = None,
    day_first: bool | None = None,
) -> Worker:
    """A worker that fills a typed record from text; `shots` are (text, record) examples.

    A schema-constrained record is always valid, so a wrong one escalates only by `validators` (e.g.
    `adds_no_facts`, on the record's JSON: no number or name the text lacks) or `min_margin` (see `Worker`).

    `grounded` has the model copy every value from the text instead (`orchestrator.workers.grounded`): a
    name only as a run of the text's words, a number only as one the text writes, a date or a time as the
    words that say it ("in 9 days", "3pm"), read by code against `now` (default: the moment of the call;
    `day_first` orders "9/3/2019"), every field free to be null. Its examples must copy their values from
    their texts too.

    Example:
        >>> from pydantic import BaseModel
        >>> class Payment(BaseModel):
        ...     amount: float | None
        ...     payee: str | None
        >>> w = extract_worker("pay", Payment, "Find the payment", grounded=True)
        >>> w.schema("Paid Ana 40")["properties"]["amount"]
        {'enum': ['40', None]}
    """
    for text, record in shots:
        try:
            output.model_validate(record)
        except ValidationError as exc:
            raise ConfigError(
                f"extract worker {name!r}: example for {text[:40]!r} is invalid: {exc}"
            ) from None
    shape = grounded_shape(output, now=now, day_first=day_first) if grounded else None
    fields = ", ".join(
        f"{k} ({(f.description or '').strip() or f.annotation})" for k, f in output.model_fields.items()
    )
    show = shape.example if shape and shape.example else lambda _, r: json.dumps(dict(r), ensure_ascii=False)
    shown = [(text, show(text, record)) for text, record in shots]
    instructions = (
        f"{description}. Extract these fields from the user's text: {fields}. "
        "Use null for a field the text does not give. "
        + (f"{shape.describe} " if shape else "")
        + "Reply with one JSON object only."
        + _shots_text(shown)
    )
    return Worker(
        name,
        description,
        slot,
        output,
        instructions,
        max_tokens=160,
        escalate_to=escalate_to,
        example_requests=tuple(example_requests),
        validators=tuple(validators),
        min_margin=min_margin,
        shape=shape,
    )


def summarize_worker(
    name: str = "summarize",
    description: str = "Summarize a text",
    *,
    words: tuple[int, int] | None = None,
    sentences: tuple[int, int] | None = (1, 3),
    bullets: bool = False,
    slot: str = "summarize",
    escalate_to: str | tuple[str, ...] | None = None,
    shots: Sequence[tuple[str, str]] = (),
    example_requests: Sequence[str] = (),
    max_tokens: int = 200,
    shaped: bool = False,
    repair: Repair = "prompt",
) -> Worker:
    """A worker that summarizes a text in plain text, within a length, adding nothing.

    Its output is checked: the length (`words` or `sentences`, as (fewest, most)), the format (`bullets`),
    and that it adds no facts: every number, date and capitalised name in it appears in the source.

    `shaped` (with `sentences`, not `bullets`) has the model reply with a JSON list of that many sentences,
    each of bounded length, writing no number the source lacks (`shapes.sentences_shape`); `repair` is as
    `Worker` says.

    Example:
        >>> w = summarize_worker(words=(5, 40))
        >>> w.validators[0]("", "Too short.")
        'it has 2 words; it must have 5 to 40'
    """
    checks: list[Validator] = []
    length = ""
    if words is not None:
        checks.append(within_words(*words))
        length = f"in {words[0]} to {words[1]} words"
    elif sentences is not None:
        checks.append(within_sentences(*sentences))
        unit = "bullets" if bullets else "sentences"
        length = (
            f"in {sentences[0]} to {sentences[1]} {unit}"
            if sentences[0] != sentences[1]
            else (f"in {sentences[0]} {unit[:-1] if sentences[0] == 1 else unit}")
        )
    if bullets:
        checks.append(is_bullets)
    checks += [adds_no_facts, condenses]
    shape = None
    if shaped:
        if sentences is None or bullets or words is not None:
            raise ConfigError(f"summarize worker {name!r}: shaped=True needs sentences=(fewest, most)")
        shape = sentences_shape(*sentences)
    form = "as bullets, each line starting with '- '" if bullets else "as plain prose"
    reply = shape.describe if shape is not None else "Reply with the summary only."
    instructions = (
        f"{description}. Write the summary {length}, {form}. Keep the key facts (numbers, dates, names) "
        f"exactly as written; add nothing the text does not say. {reply}"
        + _text_shots(shots, shape_key="sentences" if shape is not None else None)
    )
    return Worker(
        name,
        description,
        slot,
        None,
        instructions,
        max_tokens=max_tokens,
        escalate_to=escalate_to,
        example_requests=tuple(example_requests),
        validators=tuple(checks),
        shape=shape,
        repair=repair,
    )


def style_worker(
    name: str = "style",
    style: str = "plain, friendly English",
    description: str = "Rewrite a text in another style",
    *,
    slot: str = "style",
    escalate_to: str | tuple[str, ...] | None = None,
    shots: Sequence[tuple[str, str]] = (),
    example_requests: Sequence[str] = (),
    max_tokens: int = 300,
    repair: Repair = "prompt",
) -> Worker:
    """A worker that rewrites a text in a named style or tone (or a house style shown by `shots`, pairs of
    (text, rewrite)), keeping every fact: the source's numbers, dates and names must survive, and the
    output must be a rewrite, not a copy. `repair` is as `Worker` says."""
    instructions = (
        f"{description}. Rewrite the user's text in this style: {style}. Keep every fact exactly: all "
        "numbers, dates and names. Add no new facts. Reply with the rewritten text only." + _text_shots(shots)
    )
    return Worker(
        name,
        description,
        slot,
        None,
        instructions,
        max_tokens=max_tokens,
        tokens_per_input_char=0.45,  # English runs ~4 characters a token; a formal rewrite ~1.5x as long
        escalate_to=escalate_to,
        example_requests=tuple(example_requests),
        validators=(rewrites, keeps_facts, adds_no_facts),
        repair=repair,
    )


def _text_shots(shots: Sequence[tuple[str, str]], shape_key: str | None = None) -> str:
    """Examples of free-text output: each text, then what the worker writes for it (as the shape's JSON
    under `shape_key`: a list of sentences for "sentences")."""
    if not shots:
        return ""

    def shown(out: str) -> str:
        if shape_key == "sentences":
            return json.dumps({"sentences": _split_sentences(out)}, ensure_ascii=False)
        return out

    return "\nExamples:\n" + "\n".join(f"Text: {text}\nOutput: {shown(out)}" for text, out in shots)


def _split_sentences(text: str) -> list[str]:
    """A shot's sentences as a shaped reply holds them: one per item, with no end mark."""
    return [s.strip().rstrip(".!?") for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
