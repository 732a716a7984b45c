"""A slot's model as the writer of a tool index's expansions (`ToolIndex.expand`): prompt messages in, the
reply's text out, each call through the one model call (`call_model`: budget, usage, cost), outside any run.
`orch tools expand` writes with the project's racehorse slot this way; so does bench/expand.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from orchestrator.config import Manifest, Settings
from orchestrator.cost.pricing import price_table
from orchestrator.errors import ConfigError, did_you_mean
from orchestrator.models.binding import bind_slot
from orchestrator.models.calls import call_model
from orchestrator.models.context import RunContext
from orchestrator.profiles import SlotBinding
from orchestrator.providers import create_chat_model
from orchestrator.toolsets.retrieval.expand import Reply

__all__ = ["SlotWriter", "slot_writer"]


class SlotWriter:
    """Calls one slot's model for each prompt and counts what the calls cost.

    Example:
        >>> writer = slot_writer(load_manifest("."), "controller", settings)  # doctest: +SKIP
        >>> await index.expand(writer, writer.name)  # doctest: +SKIP
    """

    def __init__(self, binding: SlotBinding, model: BaseChatModel, max_tokens: int = 320) -> None:
        self.binding = binding
        self.max_tokens = max_tokens
        self.calls = self.input_tokens = self.output_tokens = 0
        self.cost_usd: float | None = 0.0  # None once a call could not be priced
        self._ctx = RunContext.standalone("tools-expand", {binding.slot: binding}, {binding.slot: model})

    @property
    def name(self) -> str:
        """The writer's name in the index: the slot's model, `provider:model`."""
        return self.binding.profile.name

    async def __call__(self, messages: Sequence[BaseMessage]) -> Reply:
        msg, entries = await call_model(
            self._ctx, self.binding.slot, "expand", list(messages), max_tokens=self.max_tokens
        )
        tokens_in = sum(e["input_tokens"] for e in entries)
        tokens_out = sum(e["output_tokens"] for e in entries)
        self.calls += 1
        self.input_tokens += tokens_in
        self.output_tokens += tokens_out
        costs = [e["cost_usd"] for e in entries]
        if self.cost_usd is not None:
            self.cost_usd = None if None in costs else self.cost_usd + sum(c or 0.0 for c in costs)
        return Reply(str(msg.content), tokens_in, tokens_out)


def slot_writer(manifest: Manifest, slot: str, settings: Settings, max_tokens: int = 320) -> SlotWriter:
    """The writer for one of the manifest's slots, its model made (a local model loaded) now."""
    if not manifest.slots:
        raise ConfigError(
            f"no slot {slot!r} to write with: the project binds no models; add one under "
            "[tool.orchestrator.slots]"
        )
    if slot not in manifest.slots:
        raise ConfigError(
            f"no slot {slot!r} to write with{did_you_mean(slot, manifest.slots)}; name a slot of "
            "[tool.orchestrator.slots] with --slot"
        )
    binding = bind_slot(slot, manifest.slots[slot], price_table(settings.prices_path))
    model = create_chat_model(binding, settings)
    preload = getattr(model, "preload", None)
    if callable(preload):
        preload()  # an in-process model loads before the first tool, not inside its timing
    return SlotWriter(binding, model, max_tokens)
