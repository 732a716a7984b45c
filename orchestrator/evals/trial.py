"""`orch trial`: how a team tests a newly released model for a worker's slot, on labelled items.

Each item (`{"input": ..., "expected": ...}`) runs through the worker's ladder with the model under trial
in the worker's slot: its first answer, one repair, then escalation along the slot's chain. One pass gives
both figures: `accuracy` counts an item right only when the trial model's own answer was right (an item
that escalated counts wrong), `accuracy_escalated` counts the final answer. The same items then run on the
model bound to the slot now, for the verdict.

Scores: a classification is right when its label equals `expected`; an extraction scores the field-level
F1 of its record against `expected`; a free-text worker scores its validators' verdict (an output that
passes is right).

A free-text worker's outputs may also be judged (`judge=` a slot): the model bound to that slot reads the
source, the worker's instructions and the final output, and scores it 1-5 (`evals.judge`). A reply it can't
read, or a failed call, and the item counts as unjudged. Before any output is judged the judge is calibrated
on known-good and known-bad outputs (`evals.calibrate`, once per judge model): a judge whose separation of
the two (AUC) is below `MIN_AUC` is refused, and the AUC of one that passes is reported beside every judged
figure (`judge_auc`). The judge's cost and compute time are reported apart from the worker's.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from orchestrator.agent.workhorse import run_worker
from orchestrator.config import Settings, SlotConfig
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.evals.calibrate import Calibration, calibrated, refusal
from orchestrator.evals.judge import judge_output
from orchestrator.formats import format_ms, format_usd
from orchestrator.models.binding import bind_slot
from orchestrator.models.context import RunContext
from orchestrator.profiles import SlotBinding
from orchestrator.workers.definitions import Worker, classify_worker

__all__ = ["ItemResult", "TrialJob", "TrialReport", "load_items", "run_item", "run_trial", "score"]

Verdict = Literal["better", "similar", "worse"]


def load_items(path: str | Path) -> list[dict[str, Any]]:
    """Labelled items from a JSON Lines file: one `{"input": ..., "expected": ...}` per line."""
    items = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"can't read the trial data {str(path)!r}: {exc.strerror or exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}, line {n}: not JSON ({exc.msg}); each line is one item") from None
        if not isinstance(item, dict) or "input" not in item or "expected" not in item:
            raise ConfigError(f'{path}, line {n}: an item is {{"input": ..., "expected": ...}}')
        items.append(item)
    if not items:
        raise ConfigError(f"{path} has no items")
    return items


def labels_from(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """The labels a classification trial takes from its data (the distinct expected values, sorted)."""
    return sorted({str(i["expected"]) for i in items})


def score(worker: Worker, value: Any, expected: Any) -> float:
    """How right one output is, 0 to 1 (see the module docstring)."""
    if value is None:
        return 0.0
    if isinstance(value, dict) and set(value) == {"label"}:
        want = expected.get("label") if isinstance(expected, dict) else expected
        return 1.0 if str(value["label"]) == str(want) else 0.0
    if isinstance(value, dict):
        return _field_f1(value, expected if isinstance(expected, dict) else {})
    return 1.0  # a free-text output that passed its validators


def _field_f1(got: Mapping[str, Any], want: Mapping[str, Any]) -> float:
    """F1 over the fields that have a value, a field counting when it equals the expected one.

    Values are compared normalised (`_norm`): strings stripped and case-folded, whole floats as ints, and
    nested records and lists compared part by part. A field is absent when it is missing, None, blank, or
    a record or list with nothing in it (`{"hour": None, "minute": None}` is no answer, not a wrong one).
    """
    norm = {k: n for k, v in got.items() if not _empty(n := _norm(v))}
    gold = {k: n for k, v in want.items() if not _empty(n := _norm(v))}
    if not norm and not gold:
        return 1.0
    hits = sum(1 for k, v in norm.items() if k in gold and _same(gold[k], v))
    precision = hits / len(norm) if norm else 0.0
    recall = hits / len(gold) if gold else 0.0
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


def _norm(value: Any) -> Any:
    """A value as compared: strings stripped, case-folded and with single spaces, whole floats as ints,
    records without their empty fields, lists item by item."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, Mapping):
        return {str(k): n for k, v in value.items() if not _empty(n := _norm(v))}
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    return value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | dict | list) and len(value) == 0)


def _same(want: Any, got: Any) -> bool:
    """Equal after `_norm`, a bool never equal to a number (True == 1 in Python)."""
    if isinstance(want, bool) or isinstance(got, bool):
        return type(want) is type(got) and want == got
    if isinstance(want, dict) and isinstance(got, dict):
        return want.keys() == got.keys() and all(_same(want[k], got[k]) for k in want)
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(_same(w, g) for w, g in zip(want, got, strict=True))
    return bool(want == got)


@dataclass
class ItemResult:
    """One item: what came back, how right it was, and what it cost."""

    input: str
    expected: Any
    value: Any
    score_alone: float  # the trial model's own answer (0 when it escalated or stayed invalid)
    score: float  # the final answer, after escalation
    valid_first: bool
    valid: bool
    escalated: bool
    cost_usd: float | None
    compute_ms: float
    ttft_ms: float | None
    output_tokens: int
    generation_ms: float
    error: str | None = None
    judge_score: float | None = None  # 1-5, None when not judged
    judge_reason: str | None = None  # the judge's reason, or why the item went unjudged
    judge_cost_usd: float | None = 0.0  # None when the judge is unpriced
    judge_compute_ms: float = 0.0
    own_cost_usd: float | None = 0.0  # the trial model's calls alone (None when unpriced)
    own_compute_ms: float = 0.0
    margin: float | None = None  # the trial model's confidence in its answer, when the worker routes by it


@dataclass
class TrialReport:
    """A model's figures on a worker's items (and the figures of the model bound to the slot now)."""

    model: str
    worker: str
    slot: str
    items: list[ItemResult] = field(default_factory=list)
    baseline: TrialReport | None = None
    no_baseline: str = "no model is bound to the slot to compare with"  # why `baseline` is None
    judge: str | None = None  # the judge's model, when outputs were judged
    calibration: Calibration | None = None  # the judge's, when outputs were judged
    racehorse: TrialReport | None = None  # the first escalation slot's model alone on the same items
    no_racehorse: str = "the worker has no escalation slot"  # why `racehorse` is None
    tuning: Any = None  # `orch trial --tune`: the threshold chosen and its curve (evals.tune.Tuning)

    def figures(self) -> dict[str, Any]:
        n = len(self.items) or 1
        costs = [i.cost_usd for i in self.items]
        ttfts = [i.ttft_ms for i in self.items if i.ttft_ms is not None]
        gen_s = sum(i.generation_ms for i in self.items) / 1000
        judged = [i.judge_score for i in self.items if i.judge_score is not None]
        judge_costs = [i.judge_cost_usd for i in self.items]
        return {
            "accuracy": sum(i.score_alone for i in self.items) / n,
            "accuracy_escalated": sum(i.score for i in self.items) / n,
            "validity_before_repair": sum(i.valid_first for i in self.items) / n,
            "validity": sum(i.valid for i in self.items) / n,
            "escalation_rate": sum(i.escalated for i in self.items) / n,
            "cost_per_1k_usd": None if None in costs else sum(c or 0.0 for c in costs) / n * 1000,
            "compute_s_per_1k": sum(i.compute_ms for i in self.items) / 1000 / n * 1000,
            "cost_alone_per_1k_usd": (
                None
                if any(i.own_cost_usd is None for i in self.items)
                else sum(i.own_cost_usd or 0.0 for i in self.items) / n * 1000
            ),
            "compute_alone_s_per_1k": sum(i.own_compute_ms for i in self.items) / 1000 / n * 1000,
            "p50_ttft_ms": statistics.median(ttfts) if ttfts else None,
            "tokens_per_s": sum(i.output_tokens for i in self.items) / gen_s if gen_s > 0 else None,
            "judge": self.judge,
            "judged_score": statistics.fmean(judged) if judged else None,
            # the judge's separation of known-good from known-bad outputs: how far to trust judged_score
            "judge_auc": self.calibration.auc if self.calibration is not None else None,
            "judged_items": len(judged),
            "judge_cost_usd": (
                None if self.judge is None or None in judge_costs else sum(c or 0.0 for c in judge_costs)
            ),
            "judge_compute_s": (
                None if self.judge is None else sum(i.judge_compute_ms for i in self.items) / 1000
            ),
        }

    def verdict(self) -> tuple[Verdict | None, str]:
        """Against the model bound to the slot now: `better` when accuracy is at least its minus 1 point and
        cost or p50 latency is at most 80 % of its (latency also at least `NOTICEABLE_MS` less); `worse`
        when accuracy is lower by more than 1 point."""
        if self.baseline is None:
            return None, self.no_baseline
        mine, theirs = self.figures(), self.baseline.figures()
        gap = (mine["accuracy"] - theirs["accuracy"]) * 100
        cheaper = _at_most(mine["cost_per_1k_usd"], theirs["cost_per_1k_usd"], 0.8)
        faster = _at_most(mine["p50_ttft_ms"], theirs["p50_ttft_ms"], 0.8) and (
            (theirs["p50_ttft_ms"] or 0.0) - (mine["p50_ttft_ms"] or 0.0) >= NOTICEABLE_MS
        )
        why = (
            f"accuracy {mine['accuracy']:.1%} vs {theirs['accuracy']:.1%} ({gap:+.1f} points); "
            f"cost per 1k {format_usd(mine['cost_per_1k_usd'])} vs {format_usd(theirs['cost_per_1k_usd'])}; "
            f"p50 TTFT {format_ms(mine['p50_ttft_ms'])} vs {format_ms(theirs['p50_ttft_ms'])} "
            f"({self.baseline.model})"
        )
        if gap < -1.0:
            return "worse", why
        if gap >= -1.0 and (cheaper or faster):
            return "better", why
        return "similar", why

    def sides(self) -> dict[str, dict[str, float | None]] | None:
        """The workhorse alone, the routed pair (the workhorse, its escalations up the chain) and the
        racehorse alone: accuracy, cost and local compute per 1,000 items. None without a racehorse run."""
        if self.racehorse is None:
            return None
        mine, race = self.figures(), self.racehorse.figures()
        if self.tuning is not None:  # the workhorse ran alone: the routed pair is the tuned threshold's
            at = self.tuning.chosen
            mine = {
                **mine,
                "accuracy_escalated": at.accuracy,
                "cost_per_1k_usd": at.cost_per_1k_usd,
                "compute_s_per_1k": at.compute_s_per_1k,
                "escalation_rate": at.escalation_rate,
            }
        return {
            "workhorse": {
                "accuracy": mine["accuracy"],
                "cost_per_1k_usd": mine["cost_alone_per_1k_usd"],
                "compute_s_per_1k": mine["compute_alone_s_per_1k"],
            },
            "routed": {
                "accuracy": mine["accuracy_escalated"],
                "cost_per_1k_usd": mine["cost_per_1k_usd"],
                "compute_s_per_1k": mine["compute_s_per_1k"],
                "escalation_rate": mine["escalation_rate"],
            },
            "racehorse": {
                "accuracy": race["accuracy"],
                "cost_per_1k_usd": race["cost_per_1k_usd"],
                "compute_s_per_1k": race["compute_s_per_1k"],
            },
        }

    def pair_verdict(self) -> tuple[str | None, str]:
        """Which to run: the workhorse alone when it is as right as the racehorse (within 1 point) for less;
        the routed pair when it keeps >= 95 % of the racehorse's accuracy at <= 80 % of its cost (its local
        compute when either is unpriced, or the racehorse costs nothing); else the racehorse."""
        sides = self.sides()
        if sides is None:
            return None, self.no_racehorse
        alone, pair, race = sides["workhorse"], sides["routed"], sides["racehorse"]
        # by cost when every side is priced and the racehorse costs something (local models cost $0:
        # their compute is what routing saves)
        priced = None not in (
            pair["cost_per_1k_usd"],
            race["cost_per_1k_usd"],
            alone["cost_per_1k_usd"],
        ) and bool(race["cost_per_1k_usd"])
        key, unit = ("cost_per_1k_usd", "cost") if priced else ("compute_s_per_1k", "compute")

        def share(side: dict[str, float | None]) -> float | None:
            mine, theirs = side[key], race[key]
            return None if mine is None or not theirs else mine / theirs

        def kept(side: dict[str, float | None]) -> float | None:
            mine, theirs = side["accuracy"], race["accuracy"]
            return None if mine is None or not theirs else mine / theirs

        def say(side: dict[str, float | None]) -> str:
            k, c = kept(side), share(side)
            return (
                f"{'?' if k is None else f'{k:.0%}'} of the racehorse's accuracy at "
                f"{'?' if c is None else f'{c:.0%}'} of its {unit}"
            )

        top = self.racehorse.model if self.racehorse is not None else "?"
        why = f"workhorse alone: {say(alone)}; routed pair: {say(pair)} (racehorse: {top})"
        alone_share, pair_share = share(alone), share(pair)
        if (
            (alone["accuracy"] or 0.0) >= (race["accuracy"] or 0.0) - 0.01
            and alone_share is not None
            and alone_share < 1
        ):
            return "workhorse", why
        if (kept(pair) or 0.0) >= 0.95 and pair_share is not None and pair_share <= 0.8:
            return "routed", why
        return "racehorse", why

    def to_dict(self) -> dict[str, Any]:
        verdict, why = self.verdict()
        pair, pair_why = self.pair_verdict()
        base = self.baseline
        return {
            "model": self.model,
            "worker": self.worker,
            "slot": self.slot,
            "items": len(self.items),
            **self.figures(),
            "verdict": verdict,
            "verdict_why": why,
            "baseline": {"model": base.model, **base.figures()} if base is not None else None,
            "racehorse": self.racehorse.model if self.racehorse is not None else None,
            "sides": self.sides(),
            "pair_verdict": pair,
            "pair_verdict_why": pair_why,
            "tuning": self.tuning.to_dict() if self.tuning is not None else None,
            "judge_calibration": self.calibration.summary() if self.calibration is not None else None,
        }


def _total(costs: Sequence[float | None]) -> float | None:
    """A sum of costs, None when any is unpriced."""
    return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)


NOTICEABLE_MS = 20.0  # a time-to-first-token gap smaller than this is noise, not a faster model


def _at_most(mine: float | None, theirs: float | None, share: float) -> bool:
    return mine is not None and theirs is not None and (mine <= theirs * share if theirs > 0 else mine <= 0)


def resolve_worker(
    workers: Mapping[str, Worker],
    name: str,
    items: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    base: Path | None = None,
) -> Worker:
    """The project's worker of that name; else a built-in (`classify` takes its labels from the data), with
    its entry in the project's worker settings applied (a project's workers have theirs already)."""
    if name in workers:
        return workers[name]
    from orchestrator.workers.settings import apply_settings

    if name == "classify":
        built = classify_worker("classify", labels_from(items), "Classify the text")
        return apply_settings([built], settings or {}, base)[0]
    if name in ("summarize", "style"):
        from orchestrator.workers.definitions import style_worker, summarize_worker

        built = summarize_worker() if name == "summarize" else style_worker()
        return apply_settings([built], settings or {}, base)[0]
    known = ", ".join(sorted([*workers, "classify", "summarize", "style"]))
    hint = " (`extract` needs a schema: define an extract worker in the project)" if name == "extract" else ""
    raise ConfigError(f"no worker {name!r}{hint}; workers: {known}")


async def run_items(
    binding: SlotBinding,
    model: Any,
    worker: Worker,
    items: Sequence[Mapping[str, Any]],
    chain: Mapping[str, tuple[SlotBinding, Any]],
    on_item: Callable[[ItemResult], None] | None = None,
    judge: tuple[SlotBinding, Any] | None = None,
) -> list[ItemResult]:
    """Run `worker` on every item with `model` in its slot, `chain` (slot -> binding, model) above it;
    with `judge` (binding, model), a free-text worker's valid outputs are judged too."""
    out = []
    for item in items:
        done = await run_item(binding, model, worker, item, chain, judge)
        out.append(done)
        if on_item is not None:
            on_item(done)
    return out


async def run_item(
    binding: SlotBinding,
    model: Any,
    worker: Worker,
    item: Mapping[str, Any],
    chain: Mapping[str, tuple[SlotBinding, Any]],
    judge: tuple[SlotBinding, Any] | None = None,
) -> ItemResult:
    """One item through `worker`'s ladder (see `run_items`), scored, and judged when `judge` is given."""
    slots = {worker.slot: binding, **{s: b for s, (b, _) in chain.items()}}
    models = {worker.slot: model, **{s: m for s, (_, m) in chain.items()}}
    ctx = RunContext.standalone("trial", slots, models, {worker.name: worker})
    meter = ctx.meter
    text = item["input"] if isinstance(item["input"], str) else json.dumps(item["input"])
    error = None
    try:
        result, entries, reason = await run_worker(ctx, worker, text, "trial")
    except OrchestratorError as exc:
        result, entries, reason, error = None, list(meter.entries), None, str(exc)
    mine = [e for e in entries if e["name"] == binding.profile.name]
    costs = [e["cost_usd"] for e in entries]
    value = result.value if result is not None else None
    right = score(worker, value, item["expected"])
    first_valid = result is not None and not result.repaired and not result.escalated
    done = ItemResult(
        input=text,
        expected=item["expected"],
        value=value,
        score_alone=right if result is not None and not result.escalated else 0.0,
        score=right,
        valid_first=first_valid,
        valid=result is not None,
        # went up the chain, whether or not an answer up there was valid
        escalated=any(e.get("attempt") == "escalation" for e in entries),
        cost_usd=None if None in costs else sum(c or 0.0 for c in costs),
        compute_ms=sum(e["compute_ms"] or 0.0 for e in entries),
        ttft_ms=mine[0]["ttft_ms"] if mine and mine[0]["ttft_ms"] is not None else None,
        output_tokens=sum(e["output_tokens"] for e in mine),
        generation_ms=sum(e["wall_ms"] for e in mine),
        error=error or reason,
        own_cost_usd=_total([e["cost_usd"] for e in mine]),
        own_compute_ms=sum(e["compute_ms"] or 0.0 for e in mine),
        margin=result.margin if result is not None else None,
    )
    if judge is not None and worker.output is None:
        if isinstance(value, str):
            verdict = await judge_output(*judge, worker, text, value)
            done.judge_score, done.judge_reason = verdict.score, verdict.reason
            done.judge_cost_usd, done.judge_compute_ms = verdict.cost_usd, verdict.compute_ms
        else:
            done.judge_reason = "no valid output to judge"
    return done


Side = Literal["trial", "baseline", "racehorse"]


@dataclass
class _Plan:
    """What a trial's passes run: the worker, the model under trial, the chain above it, the judge."""

    worker: Worker  # as the trial model runs it (its margin measured, none unsure, under --tune)
    plain: Worker  # as configured: the baseline and the racehorse run it
    binding: SlotBinding
    model: Any
    current: SlotBinding | None  # bound to the worker's slot now
    chain: dict[str, tuple[SlotBinding, Any]]
    judging: tuple[SlotBinding, Any] | None


def _plan(
    orch: Any,
    model_name: str,
    worker_name: str,
    items: Sequence[Mapping[str, Any]],
    *,
    base_url: str | None,
    price_as: str | None,
    judge: str | None,
    tune: bool,
    models: bool = True,
) -> _Plan:
    """The trial's worker, models and chain, or a ConfigError naming what is wrong (before anything runs).
    Without `models`, no model of the trial or the chain is made (the items run in worker processes, which
    make their own: a local model loaded here too would sit idle); the judge's still is, to calibrate it."""
    from orchestrator.providers import create_chat_model
    from orchestrator.run.project import settings_path
    from orchestrator.workers.settings import read_settings

    where = settings_path(orch.manifest)
    worker = resolve_worker(
        orch.workers,
        worker_name,
        items,
        read_settings(where) if where else {},
        where.parent if where else None,
    )
    if tune and worker.output is None:
        raise ConfigError(
            "--tune chooses the confidence threshold (min_margin) of a structured worker; "
            f"{worker.name!r} writes free text, which escalates when its validators reject it"
        )
    judging = None
    if judge is not None:
        if worker.output is not None:
            raise ConfigError(
                f"--judge scores free-text workers; {worker.name!r} gives structured output, scored "
                "against each item's expected value"
            )
        judging = _judge_slot(orch, judge)
    config = SlotConfig(model=model_name, role="workhorse", base_url=base_url, price_as=price_as)
    binding = bind_slot(worker.slot, config, orch._prices)
    model = create_chat_model(binding, orch.settings) if models else None
    racehorses = tuple(s for s, b in orch.slots.items() if b.role == "racehorse")
    chain = {
        s: (orch.slots[s], orch.model_for(s) if models else None)
        for s in worker.escalation(racehorses)
        if s in orch.slots
    }
    if tune and not chain:
        raise ConfigError(
            f"--tune needs a slot above {worker.name!r} to route to: bind a racehorse slot, or set the "
            "worker's escalate_to"
        )
    # under --tune each answer's margin is measured, none unsure (an invalid one still goes up)
    measured = dataclasses.replace(worker, min_margin=0.0) if tune else worker
    current = orch.slots.get(worker.slot)
    return _Plan(measured, worker, binding, model, current, chain, judging)


def _side(plan: _Plan, orch: Any, side: Side) -> tuple[SlotBinding, Any, Worker, dict[str, Any]]:
    """The binding, model, worker and chain of one pass: the trial model, the slot's model now, or the
    first escalation slot's model alone."""
    if side == "trial":
        return plan.binding, plan.model, plan.worker, plan.chain
    if side == "baseline":
        assert plan.current is not None
        return plan.current, orch.model_for(plan.plain.slot), plan.plain, plan.chain
    top_binding, top_model = plan.chain[next(iter(plan.chain))]
    return top_binding, top_model, plan.plain, {}


@dataclass(frozen=True)
class TrialJob:
    """One item of one pass of a trial, run in a worker process (`evals.fanout`): the project's
    Orchestrator and the trial's plan are built once per process. Picklable; so is its result."""

    project: str
    settings: Settings
    model: str
    worker: str
    labels: tuple[str, ...]  # what a built-in classify worker takes from the data
    base_url: str | None
    price_as: str | None
    judge: str | None
    tune: bool
    side: Side = "trial"

    def __call__(self, item: Mapping[str, Any]) -> ItemResult:
        from orchestrator.evals.fanout import project_orchestrator
        from orchestrator.sync import run_blocking

        orch = project_orchestrator(self.project, self.settings, tracing=False)
        key = dataclasses.replace(self, side="trial")  # one plan for the three passes
        if key not in _plans:
            _plans[key] = _plan(
                orch,
                self.model,
                self.worker,
                [{"expected": label} for label in self.labels],
                base_url=self.base_url,
                price_as=self.price_as,
                judge=self.judge,
                tune=self.tune,
            )
        plan = _plans[key]
        binding, model, worker, chain = _side(plan, orch, self.side)
        return run_blocking(lambda: run_item(binding, model, worker, item, chain, plan.judging))


_plans: dict[TrialJob, _Plan] = {}  # in a worker process: each trial's plan, built on its first item


def _failed_item(judged: bool) -> Callable[[Mapping[str, Any], str], ItemResult]:
    """The result of an item whose worker process died twice: invalid, scored 0, its spend unknown."""

    def failed(item: Mapping[str, Any], reason: str) -> ItemResult:
        text = item["input"] if isinstance(item["input"], str) else json.dumps(item["input"])
        return ItemResult(
            input=text,
            expected=item["expected"],
            value=None,
            score_alone=0.0,
            score=0.0,
            valid_first=False,
            valid=False,
            escalated=False,
            cost_usd=None,
            compute_ms=0.0,
            ttft_ms=None,
            output_tokens=0,
            generation_ms=0.0,
            error=reason,
            judge_reason="not judged: the item failed" if judged else None,
            judge_cost_usd=None if judged else 0.0,
            own_cost_usd=None,
        )

    return failed


async def run_trial(
    orch: Any,
    model_name: str,
    worker_name: str,
    items: Sequence[Mapping[str, Any]],
    *,
    on_item: Callable[[ItemResult], None] | None = None,
    compare: bool = True,
    base_url: str | None = None,
    price_as: str | None = None,
    judge: str | None = None,
    racehorse: bool = True,
    tune: float | None = None,
    recalibrate: bool = False,
    on_calibrate: Callable[[int, int], None] | None = None,
    calibration_data: str | Path | None = None,
    workers: int = 1,
) -> TrialReport:
    """Try `model_name` in the slot of worker `worker_name` of the orchestrator `orch`'s project.

    `judge` names a slot whose model scores a free-text worker's outputs (1-5), beside its validators. The
    judge is calibrated first (`calibrate_judge`; `recalibrate` measures it again, `on_calibrate(done,
    total)` follows the measuring, `calibration_data` replaces the shipped known-good outputs): one whose
    AUC is below `MIN_AUC` is refused with a ConfigError.
    `racehorse` also runs the first escalation slot's model alone on the items, for the side-by-side of
    the workhorse alone, the routed pair and the racehorse alone (`TrialReport.sides`).

    `tune` (a target share of the racehorse's accuracy) runs the passes `orch trial --tune` needs: the
    trial model with its margins measured and none unsure, and the racehorse alone
    (`orchestrator.evals.tune.tune_trial` then chooses the thresholds).

    `workers` above 1 runs each pass's items in that many worker processes (`orchestrator.evals.fanout`),
    each building its own Orchestrator from `orch`'s project (build `orch` with
    `Orchestrator.from_project`) and its own models; the items come back in their order, `on_item` sees
    each as it finishes, and the report equals a serial run's.
    """
    from orchestrator.evals.fanout import check_workers, fan_out, project_root

    check_workers(workers)
    if tune is not None:
        compare, racehorse = False, True
    plan = _plan(
        orch,
        model_name,
        worker_name,
        items,
        base_url=base_url,
        price_as=price_as,
        judge=judge,
        tune=tune is not None,
        models=workers == 1,
    )
    worker, binding, current, chain = plan.plain, plan.binding, plan.current, plan.chain
    job = None
    if workers > 1:
        job = TrialJob(
            str(project_root(orch)),
            orch.settings,
            model_name,
            worker_name,
            tuple(labels_from(items)),
            base_url,
            price_as,
            judge,
            tune is not None,
        )

    async def run_pass(side: Side) -> list[ItemResult]:
        if job is None:
            binding_, model_, worker_, chain_ = _side(plan, orch, side)
            return await run_items(binding_, model_, worker_, items, chain_, on_item, plan.judging)
        return await fan_out(
            dataclasses.replace(job, side=side),
            items,
            workers,
            failed=_failed_item(plan.judging is not None),
            on_result=None if on_item is None else lambda _index, result: on_item(result),
        )

    judge_model = plan.judging[0].profile.name if plan.judging is not None else None
    report = TrialReport(model_name, worker.name, worker.slot, judge=judge_model)
    if judge is not None and plan.judging is not None:  # before any output is judged
        report.calibration = await calibrated(
            *plan.judging, refresh=recalibrate, data=calibration_data, on_output=on_calibrate
        )
        if not report.calibration.usable:
            raise ConfigError(refusal(report.calibration, judge))
    report.items = await run_pass("trial")
    if current is not None and current.profile.name == binding.profile.name:
        report.no_baseline = f"{model_name} is bound to slot {worker.slot!r} now: nothing to compare with"
    elif not compare:
        report.no_baseline = "not compared (--no-compare)"
    if compare and current is not None and current.profile.name != binding.profile.name:
        base = TrialReport(current.profile.name, worker.name, worker.slot, judge=judge_model)
        base.calibration = report.calibration
        base.items = await run_pass("baseline")
        report.baseline = base
    if not racehorse:
        report.no_racehorse = "not run (--no-racehorse)"
    elif chain:
        top_binding = chain[next(iter(chain))][0]
        alone = TrialReport(top_binding.profile.name, worker.name, worker.slot, judge=judge_model)
        alone.calibration = report.calibration
        alone.items = await run_pass("racehorse")
        report.racehorse = alone
    return report


def _judge_slot(orch: Any, slot: str) -> tuple[SlotBinding, Any]:
    if slot not in orch.slots:
        bound = ", ".join(sorted(orch.slots)) or "none"
        raise ConfigError(f"no slot {slot!r} to judge with; the slots are: {bound}")
    return orch.slots[slot], orch.model_for(slot)


async def calibrate_judge(
    orch: Any,
    slot: str,
    *,
    recalibrate: bool = False,
    on_calibrate: Callable[[int, int], None] | None = None,
    calibration_data: str | Path | None = None,
) -> Calibration:
    """The calibration of the judge bound to `slot` (`orch trial --judge SLOT --calibrate-only`): from the
    cache, or measured now. Not refused here: the caller shows it."""
    return await calibrated(
        *_judge_slot(orch, slot), refresh=recalibrate, data=calibration_data, on_output=on_calibrate
    )
