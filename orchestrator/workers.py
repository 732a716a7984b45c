"""Workhorse workers, defined: a task's instructions, the slot whose model runs it, its output type.

`orchestrator.workhorse` runs them. Definitions stay apart from the code that runs them, so a project's
worker modules import nothing that calls models.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from orchestrator.errors import ConfigError

__all__ = ["Worker", "WorkerResult", "classify_worker", "extract_worker"]


@dataclass(frozen=True)
class Worker:
    """A workhorse task: instructions, the slot whose model runs it, and the type its output must have."""

    name: str
    description: str
    slot: str
    output: type[BaseModel]
    instructions: str
    max_tokens: int = 128
    escalate_to: str | None = None  # a racehorse slot to try once after a failed repair
    example_requests: tuple[str, ...] = ()  # requests it serves, each quoting its text: taught to the planner

    def schema(self) -> dict[str, Any]:
        """The output's JSON schema, as given to constrained decoding."""
        return self.output.model_json_schema()


@dataclass(frozen=True)
class WorkerResult:
    """A validated worker output."""

    worker: str
    value: dict[str, Any]
    model: str
    repaired: bool
    escalated: bool


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
) -> Worker:
    """A worker that picks exactly one label from a fixed set.

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
) -> Worker:
    """A worker that fills a typed record from text; `shots` are (text, record) examples."""
    for text, record in shots:
        try:
            output.model_validate(record)
        except ValidationError as exc:
            raise ConfigError(
                f"extract worker {name!r}: example for {text[:40]!r} is invalid: {exc}"
            ) from None
    fields = ", ".join(
        f"{k} ({(f.description or '').strip() or f.annotation})" for k, f in output.model_fields.items()
    )
    instructions = (
        f"{description}. Extract these fields from the user's text: {fields}. "
        "Use null for a field the text does not give. Reply with one JSON object only."
        + _shots_text([(text, json.dumps(dict(record), ensure_ascii=False)) for text, record in shots])
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
    )
