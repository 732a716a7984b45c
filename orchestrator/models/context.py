"""The per-run context that LangGraph hands every node (not checkpointed: rebuilt on resume)."""

from __future__ import annotations

import asyncio
import difflib
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

from langchain_core.language_models import BaseChatModel
from opentelemetry.trace import NoOpTracer, Tracer

from orchestrator.config import Limits
from orchestrator.cost.ledger import Budget, BudgetMeter, BudgetStop
from orchestrator.errors import ConfigError
from orchestrator.models.slot import SlotModel
from orchestrator.profiles import SlotBinding, ToolLimits
from orchestrator.toolsets.catalog import Catalog
from orchestrator.toolsets.process_pool import ToolRunner
from orchestrator.workers.definitions import Worker

__all__ = ["BudgetStop", "RunContext", "TextSink"]


class TextSink(Protocol):
    """Where model text goes as it arrives: `(node, source, text)`; `restart=True` (with text "") when
    the text so far is void (a stream broke and its call starts over, or a fallback model takes over).
    `source` is the slot, or the model name for a model the user called directly. Called on the run's
    event loop."""

    def __call__(self, node: str, source: str, text: str, restart: bool = False) -> None: ...


@dataclass
class RunContext:
    """What a node needs besides the state: bound models, catalog, workers, limits, tracer, budget meter."""

    run_id: str
    slots: dict[str, SlotBinding]
    models: dict[str, BaseChatModel]
    catalog: Catalog
    workers: dict[str, Worker]
    limits: Limits
    tracer: Tracer
    meter: BudgetMeter
    capture_content: bool = False
    tool_runner: ToolRunner | None = None
    deadline: float = field(default=0.0)
    text_sink: TextSink | None = None  # model text as it arrives, for `Orchestrator.astream`'s token events
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)  # the run's event loop
    confirm: frozenset[str] = frozenset()  # tools whose calls wait for a person's yes ("*": every tool)
    approved: frozenset[str] = frozenset()  # tools approved in advance for this run (`approve=`)
    _slot_models: dict[str, BaseChatModel] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.deadline:  # no deadline set: never (math.inf)
            self.deadline = time.monotonic() + (self.limits.deadline_s or math.inf)

    @classmethod
    def standalone(
        cls,
        run_id: str,
        slots: dict[str, SlotBinding],
        models: dict[str, BaseChatModel],
        workers: dict[str, Worker] | None = None,
    ) -> RunContext:
        """A context for model calls outside a graph run (a trial, a judge, a benchmark): no tools, no
        tracing, an unlimited budget, the default limits."""
        return cls(
            run_id=run_id,
            slots=slots,
            models=models,
            catalog=Catalog([]),
            workers=workers or {},
            limits=Limits(),
            tracer=NoOpTracer(),
            meter=BudgetMeter(Budget()),
        )

    def stop_time(self) -> tuple[float, str]:
        """When the run's wall time is up (`time.monotonic()`: the deadline, or the time budget if it ends
        first), and the stop reason then. A model call under way at that moment is cut short."""
        at, reason = self.deadline, f"deadline of {self.limits.deadline_s or math.inf:g}s reached"
        budget_end = self.meter.time_ends_at()
        if budget_end is not None and budget_end <= at:
            at, reason = budget_end, f"time budget of {self.meter.budget.seconds:g}s used up"
        return at, reason

    def needs_approval(self, tool: str) -> bool:
        """Whether a call of `tool` waits for a person's yes (confirmed tools not approved in advance)."""
        asked = tool in self.confirm or "*" in self.confirm
        return asked and tool not in self.approved and "*" not in self.approved

    def tool_limits(self, slot: str) -> ToolLimits:
        """The limits on tools bound to a request of `slot` (its model's and fallbacks'; else the default)."""
        binding = self.slots.get(slot)
        return binding.tool_limits if binding is not None else ToolLimits()

    def model(self, slot: str) -> BaseChatModel:
        """The slot's model as a langchain-core chat model whose every call is budgeted, traced and priced.

        Example (inside a node):
            >>> reply = await runtime.context.model("summarize").ainvoke([...])  # doctest: +SKIP
        """
        if slot not in self.slots:
            close = difflib.get_close_matches(slot, list(self.slots), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            defined = ", ".join(repr(s) for s in sorted(self.slots)) or "none"
            raise ConfigError(
                f"no slot {slot!r}{hint} The slots defined under [tool.orchestrator.slots] are: {defined}"
            )
        made = self._slot_models.get(slot)
        if made is None:  # one per slot and run: LangChain caches per-model work (its serialized form)
            made = self._slot_models[slot] = SlotModel(slot=slot, context=self)
        return made
