"""What-if pricing: the stored token counts of runs, priced again at another model's rates.

Every model call (a `chat` span) keeps its token counts by kind: input (cached included, OTel's
convention), cache reads, cache writes (and the 1-hour part of them), output (reasoning included) and
reasoning. `reprice` prices them again with `pricing.cost_usd` at the rates of the model asked for, so each
kind is priced at its own rate and a tiered price applies as it does live; the calls not repriced keep their
stored cost. Old cost is the stored one: a call stored with cost null (its model had no price) is unknown,
never 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.cost.pricing import Prices, PriceTable, Usage, cost_usd, shipped_table
from orchestrator.errors import ConfigError, UnknownModelError, did_you_mean
from orchestrator.tracing.store import TraceStore

__all__ = ["Line", "Repricing", "model_prices", "reprice", "runs_in_scope", "stored_cost", "usage_of_span"]


@dataclass(frozen=True)
class Line:
    """Old and new cost of a group of model calls (a run, a slot, a stored model, or all of them).

    `old_usd` and `new_usd` sum the costs that are known (None when none is); `old_unpriced` and
    `new_unpriced` count the calls whose cost is unknown, so a sum is a lower bound when they are not 0.
    `models` pairs each stored model with the model it is priced as now (None: kept at its stored cost).
    """

    key: str | None
    calls: int
    repriced_calls: int
    tokens: Usage
    old_usd: float | None
    old_unpriced: int
    new_usd: float | None
    new_unpriced: int
    models: tuple[tuple[str, str | None], ...] = ()

    @property
    def delta_usd(self) -> float | None:
        """New minus old, when both are fully known."""
        if self.old_unpriced or self.new_unpriced or self.old_usd is None or self.new_usd is None:
            return None
        return self.new_usd - self.old_usd

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`orch traces reprice --json`)."""
        t = self.tokens
        return {
            "key": self.key,
            "calls": self.calls,
            "repriced_calls": self.repriced_calls,
            "models": [{"model": m, "priced_as": p} for m, p in self.models],
            "tokens": {
                "input": t.input_tokens,
                "cache_read": t.cache_read_tokens,
                "cache_write": t.cache_write_tokens,
                "cache_write_1h": t.cache_write_1h_tokens,
                "output": t.output_tokens,
                "reasoning": t.reasoning_tokens,
            },
            "old_usd": self.old_usd,
            "old_unpriced": self.old_unpriced,
            "new_usd": self.new_usd,
            "new_unpriced": self.new_unpriced,
            "delta_usd": self.delta_usd,
        }


@dataclass(frozen=True)
class Repricing:
    """What runs would have cost at other models' rates: totals, and the same by run, slot and stored model.

    Example:
        >>> from orchestrator.tracing.store import TraceStore
        >>> reprice(TraceStore(":memory:"), [], model="openai:gpt-4o-mini").total.calls
        0
    """

    run_ids: tuple[str, ...]
    model: str | None
    slots: Mapping[str, str]
    prices: Mapping[str, Prices]  # the rates of each model priced as
    total: Line
    by_run: tuple[Line, ...] = field(default=())
    by_slot: tuple[Line, ...] = field(default=())
    by_model: tuple[Line, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`orch traces reprice --json`)."""
        return {
            "run_ids": list(self.run_ids),
            "model": self.model,
            "slots": dict(self.slots),
            "prices": {name: asdict(p) for name, p in self.prices.items()},
            "total": self.total.to_dict(),
            "by_run": [line.to_dict() for line in self.by_run],
            "by_slot": [line.to_dict() for line in self.by_slot],
            "by_model": [line.to_dict() for line in self.by_model],
        }


def runs_in_scope(store: TraceStore, run: str | None = None, last: int | None = None) -> list[str]:
    """Full run ids for a run id (or unique prefix), or for the `last` N runs, most recent first."""
    if (run is None) == (last is None):
        raise ConfigError("give either a RUN id or --last N")
    if last is not None:
        if last < 1:
            raise ConfigError(f"--last {last}: give a number of runs, 1 or more")
        rows = store.list_runs(last)
        if not rows:
            raise ConfigError(f"no runs in {store.path}; run a graph first")
        return [r["run_id"] for r in rows]
    assert run is not None
    return [_run_id(store, run)]


def _run_id(store: TraceStore, run: str) -> str:
    found = store.get_run(run)
    if found is None:
        raise ConfigError(f"no run {run!r} in {store.path}; see `orch traces list`")
    return str(found["run_id"])


def model_prices(name: str, table: PriceTable) -> Prices:
    """The rates of `provider:model` as a run would be priced (`resolve_profile` over `table`).

    An unknown name, or a model the table has no price for, is an `UnknownModelError` naming it.
    """
    from orchestrator.models.binding import catalog_names, resolve_profile
    from orchestrator.profiles import UnknownModelWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownModelWarning)  # no price is an error here, said below
            profile = resolve_profile(name, table=table)
    except UnknownModelError as exc:
        hint = "" if ":" in name else did_you_mean(name, catalog_names(table))
        raise UnknownModelError(f"{exc}{hint}") from None
    if profile.prices is None:
        known = catalog_names(table, name.partition(":")[0])
        raise UnknownModelError(
            f"no price for model {name!r} in the price table ({table.source})"
            + (did_you_mean(name, known) if known else "")
            + "; add it to your prices file (the manifest's `prices`, or ORCH_PRICES) to price it"
        )
    return profile.prices


class _Sum:
    """A `Line` being summed."""

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.calls = self.repriced = self.old_unpriced = self.new_unpriced = 0
        self.tokens = Usage()
        self.old: float | None = None
        self.new: float | None = None
        self.models: dict[tuple[str, str | None], None] = {}

    def add(self, usage: Usage, old: float | None, new: float | None, pair: tuple[str, str | None]) -> None:
        self.calls += 1
        self.repriced += pair[1] is not None
        self.tokens += usage
        self.models[pair] = None
        if old is None:
            self.old_unpriced += 1
        else:
            self.old = (self.old or 0.0) + old
        if new is None:
            self.new_unpriced += 1
        else:
            self.new = (self.new or 0.0) + new

    def line(self) -> Line:
        return Line(
            self.key,
            self.calls,
            self.repriced,
            self.tokens,
            self.old,
            self.old_unpriced,
            self.new,
            self.new_unpriced,
            tuple(self.models),
        )


def usage_of_span(row: Mapping[str, Any]) -> Usage:
    """A stored model call's token counts (span columns) as a `Usage`."""
    return Usage(
        input_tokens=int(row["input_tokens"] or 0),
        output_tokens=int(row["output_tokens"] or 0),
        cache_read_tokens=int(row["cache_read_tokens"] or 0),
        cache_write_tokens=int(row["cache_write_tokens"] or 0),
        cache_write_1h_tokens=int(row["cache_write_1h_tokens"] or 0),
        reasoning_tokens=int(row["reasoning_tokens"] or 0),
    )


def stored_cost(row: Mapping[str, Any]) -> float | None:
    """A stored model call's cost: None when its model had no price (unknown, never 0), and 0 for a call
    that failed before any usage was reported (nothing was billed; the run's ledger has no entry for it)."""
    if row["cost_usd"] is None and row["input_tokens"] is None and row["output_tokens"] is None:
        return 0.0
    return None if row["cost_usd"] is None else float(row["cost_usd"])


def reprice(
    store: TraceStore,
    run_ids: Iterable[str],
    model: str | None = None,
    slots: Mapping[str, str] | None = None,
    table: PriceTable | None = None,
) -> Repricing:
    """Price the model calls of `run_ids` again: all of them at `model`'s rates, or each slot named in
    `slots` at its model's rates (the other calls keep their stored cost).

    Run ids may be unique prefixes. Rates come from `table` (default: the shipped snapshot; the CLI layers
    the project's price file over it, as runs do). Raises `ConfigError` for an unknown run, an unknown or
    unpriced model, or a slot no call of these runs used.

    Example:
        >>> r = reprice(store, ["dc2c"], model="openai:gpt-4o-mini")  # doctest: +SKIP
        >>> r.total.old_usd, r.total.new_usd  # doctest: +SKIP
        (0.0, 0.000225375)
    """
    slots = dict(slots or {})
    if (model is None) == (not slots):
        raise ConfigError("give one of: model= (price every call at it) or slots= (price those slots' calls)")
    table = table or shipped_table()
    ids = list(dict.fromkeys(_run_id(store, r) for r in run_ids))
    rows = _chat_spans(store, ids)
    if slots:
        used = sorted({str(r["slot"]) for r in rows if r["slot"] is not None})
        for slot in slots:
            if slot not in used:
                raise ConfigError(
                    f"no model call in {_scope(ids)} used slot {slot!r}" + _slots_hint(slot, used)
                )
    targets = [model] if model is not None else list(dict.fromkeys(slots.values()))
    prices = {name: model_prices(name, table) for name in targets}

    total = _Sum(None)
    groups: dict[str, dict[str | None, _Sum]] = {"run": {}, "slot": {}, "model": {}}
    for row in rows:
        usage = usage_of_span(row)
        old = stored_cost(row)
        target = model if model is not None else slots.get(row["slot"]) if row["slot"] is not None else None
        new = old if target is None else cost_usd(usage, prices[target])
        pair = (str(row["model"] or "?"), target)
        total.add(usage, old, new, pair)
        for group, key in (("run", row["run_id"]), ("slot", row["slot"]), ("model", row["model"])):
            found = groups[group].get(key)
            if found is None:
                found = groups[group][key] = _Sum(key)
            found.add(usage, old, new, pair)

    def lines(group: str) -> tuple[Line, ...]:  # the most expensive, at the new prices, first
        found = [s.line() for s in groups[group].values()]
        return tuple(sorted(found, key=lambda line: (-(line.new_usd or 0.0), str(line.key))))

    by_run = {line.key: line for line in lines("run")}
    return Repricing(
        run_ids=tuple(ids),
        model=model,
        slots=slots,
        prices=prices,
        total=total.line(),
        by_run=tuple(by_run.get(r) or _Sum(r).line() for r in ids),  # a run without model calls too
        by_slot=lines("slot"),
        by_model=lines("model"),
    )


def _chat_spans(store: TraceStore, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    if not run_ids:
        return []
    marks = ", ".join("?" * len(run_ids))
    return store.spans(f"kind = 'chat' and run_id in ({marks}) order by run_id, start_ns", run_ids)


def _scope(ids: Sequence[str]) -> str:
    return f"run {ids[0]}" if len(ids) == 1 else f"these {len(ids)} runs"


def _slots_hint(slot: str, used: Sequence[str]) -> str:
    if not used:
        return "; its model calls name no slot (a graph's own chat models have none): use --model"
    close = did_you_mean(slot, used)
    shown = ", ".join(repr(s) for s in used)
    return (close if close.startswith("; did you mean") else "") + f"; the slots used: {shown}"
