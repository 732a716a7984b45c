"""What a run returns (`RunResult`) and what it reports as it goes (`RunEvent`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.cost.ledger import Ledger

__all__ = ["RunEvent", "RunResult", "Status_"]

Status_ = Literal["ok", "budget_stop", "failed", "cancelled", "waiting"]


@dataclass(frozen=True)
class RunResult:
    """What a run returns: the answer, how it ended, and what it cost."""

    run_id: str
    status: Status_
    answer: str | None
    ledger: Ledger
    stop_reason: str | None = None
    error: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    # `resume` can get past it: a failure (a provider call failed), or a stop (with more budget or time)
    resumable: bool = False
    # status "waiting": what the run waits for a person to answer (LangGraph interrupts: `id`, `value`); the
    # bundled agent's are tool calls to approve, `{"type": "approve_tool_calls", "calls": [{tool, args}]}`
    waiting: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "answer": self.answer,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "results": self.results,
            "resumable": self.resumable,
            "waiting": self.waiting,
            "ledger": self.ledger.to_dict(),
        }


@dataclass(frozen=True)
class RunEvent:
    """What a run reports as it goes.

    - `kind="start"`: the run began.
    - `kind="token"`: a model call inside `node` produced `text` (a piece, as it arrives); `source` is the
      slot, or the model's name for a model the user called directly. Models that stream send many
      pieces, others one piece with their whole reply.
    - `kind="restart"`: the text that node's call sent so far is void (a stream broke and the call starts
      over, or a fallback model took over); what follows replaces it.
    - `kind="node"`: a node finished, with its state update, how long it ran (`node_s`, where known), and
      the model calls, tokens and cost it spent.
    - `kind="end"`: the run ended, with its `result`.
    """

    run_id: str
    kind: Literal["start", "token", "restart", "node", "end"]
    node: str | None = None
    update: Mapping[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    result: RunResult | None = None
    node_s: float | None = None
    calls: int = 0
    tokens: int = 0
    cost_usd: float | None = 0.0
    text: str = ""
    source: str | None = None
