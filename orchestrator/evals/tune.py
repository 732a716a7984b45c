"""`orch trial --tune`: choose a worker's `min_margin` from labelled items, and show the curve it came from.

The workhorse answers every item once with its margin (how sure it was of its least sure token), a
threshold of 0 keeping every valid answer (an invalid one still goes up); the racehorse (the first slot of
the worker's escalation chain) answers every item alone. Routing is then applied by rule for every
threshold at once: an item whose workhorse answer is invalid, or valid with a margin under the threshold,
takes the racehorse's answer and pays for both calls. That is what `run_worker` does with that
`min_margin` (tests/test_tune.py checks that a trial at the tuned threshold routes as the rule said).

The threshold chosen is the smallest (the fewest escalations) at which the routed pair keeps `target` of the
racehorse's accuracy; when none does, the one with the best accuracy. The default target, 0.97, sits a
little above the 0.95 a team usually asks for: a threshold tuned on one sample keeps a little less on the
next one (bench/banking77.py measures that gap).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from orchestrator.evals import DEFAULT_TARGET
from orchestrator.evals.trial import ItemResult, TrialReport, run_trial

__all__ = ["DEFAULT_TARGET", "ROUTER_GAIN", "Point", "Tuning", "curve", "tune", "tune_trial"]

T = TypeVar("T")


@dataclass(frozen=True)
class Point:
    """The routed pair's figures at one threshold."""

    min_margin: float
    accuracy: float
    escalation_rate: float  # items that went to the racehorse, before or after the workhorse answered
    compute_s_per_1k: float
    cost_per_1k_usd: float | None
    min_p: float = 0.0  # routing before generation: items the router gives less than this skip the workhorse
    sent_up_rate: float = 0.0  # items sent up before the workhorse answered


@dataclass(frozen=True)
class Tuning:
    """The threshold chosen, why, and the curve it was chosen on."""

    chosen: Point
    target: float
    met: bool  # the chosen point keeps `target` of the racehorse's accuracy
    workhorse_accuracy: float
    racehorse_accuracy: float
    points: tuple[Point, ...]
    router_points: tuple[Point, ...] = ()  # with a router: the best point at each min_p (the router's curve)
    router: str = "not tried"  # "used", or why not ("not tried", "no cheaper than routing by margin ...")
    fitted: Any = field(default=None, repr=False)  # the router's (vectors, scores) when it is used

    @property
    def uses_router(self) -> bool:
        return self.router == "used"

    def summary(self) -> str:
        kept = self.chosen.accuracy / self.racehorse_accuracy if self.racehorse_accuracy else math.nan
        first = (
            f"the router sends up inputs under p {self.chosen.min_p:.2f} ({self.chosen.sent_up_rate:.0%}) "
            "before the workhorse answers; then "
            if self.uses_router
            else ""
        )
        head = (
            f"{first}min_margin {self.chosen.min_margin:.3g}: routed accuracy {self.chosen.accuracy:.1%} "
            f"({kept:.0%} of the racehorse's {self.racehorse_accuracy:.1%}; the workhorse alone "
            f"{self.workhorse_accuracy:.1%}), {self.chosen.escalation_rate:.0%} escalated"
        )
        if self.met:
            return f"{head}: the fewest escalations that keep {self.target:.0%} of the racehorse's accuracy"
        return f"{head}: no threshold keeps {self.target:.0%} of the racehorse's accuracy; the most accurate"

    def to_dict(self, curve_points: int = 12) -> dict[str, Any]:
        return {
            "min_margin": self.chosen.min_margin,
            "target": self.target,
            "met": self.met,
            "chosen": asdict(self.chosen),
            "workhorse_accuracy": self.workhorse_accuracy,
            "racehorse_accuracy": self.racehorse_accuracy,
            "curve": [asdict(p) for p in thin(self.points, curve_points)],
            "router": self.router,
            "router_curve": [asdict(p) for p in thin(self.router_points, curve_points)],
        }


def curve(workhorse: Sequence[ItemResult], racehorse: Sequence[ItemResult]) -> list[Point]:
    """The routed pair at each threshold that changes a decision: 0 (nothing valid escalates), each margin
    the workhorse reported (items at that margin or above stay), and a whole number above them all (every
    item that reported a margin escalates). `workhorse` ran alone with its margins measured, `racehorse`
    alone, item for item."""
    if len(workhorse) != len(racehorse):
        raise ValueError(f"{len(workhorse)} workhorse items against {len(racehorse)} racehorse items")
    margins = sorted({i.margin for i in workhorse if i.margin is not None and i.margin > 0})
    top = float(math.floor(margins[-1]) + 1) if margins else 1.0  # above every margin: all escalate
    return [_point(t, workhorse, racehorse) for t in [0.0, *margins, top]]


def _point(
    t: float,
    workhorse: Sequence[ItemResult],
    racehorse: Sequence[ItemResult],
    estimates: Sequence[float] | None = None,
    min_p: float = 0.0,
) -> Point:
    n = len(workhorse) or 1
    right = escalated = sent = 0.0
    compute_ms = 0.0
    costs: list[float | None] = []
    for k, (w, r) in enumerate(zip(workhorse, racehorse, strict=True)):
        if estimates is not None and estimates[k] < min_p:  # sent up before the workhorse answers
            right += r.score
            escalated += 1
            sent += 1
            compute_ms += r.compute_ms
            costs.append(r.cost_usd)
            continue
        kept = w.valid and not w.escalated and (w.margin is None or w.margin >= t)
        right += w.score_alone if kept else r.score
        escalated += not kept
        compute_ms += w.own_compute_ms + (0.0 if kept else r.compute_ms)
        costs += [w.own_cost_usd] + ([] if kept else [r.cost_usd])
    cost = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs) / n * 1000
    return Point(t, right / n, escalated / n, compute_ms / n, cost, min_p, sent / n)


def tune(
    workhorse: Sequence[ItemResult],
    racehorse: Sequence[ItemResult],
    target: float = DEFAULT_TARGET,
    estimates: Sequence[float] | None = None,
) -> Tuning:
    """The threshold to route by (see the module docstring), and the curve. With `estimates` (a router's
    leave-one-out probabilities that the workhorse is right, item for item), routing before generation is
    tried too: every pair of (min_p, min_margin) on a grid; the router is used when its cheapest pair that
    keeps the target costs less than routing by margin alone (`ROUTER_GAIN`)."""
    if not 0 < target <= 1:
        raise ValueError(
            f"the target is a share of the racehorse's accuracy, above 0 and at most 1 (got {target})"
        )
    points = curve(workhorse, racehorse)
    race = sum(r.score for r in racehorse) / (len(racehorse) or 1)
    alone = points[0].accuracy if points else 0.0
    meeting = [p for p in points if p.accuracy >= target * race]
    if meeting:
        chosen, met = meeting[0], True
    else:
        best = max(p.accuracy for p in points)
        chosen, met = next(p for p in points if p.accuracy == best), False
    tuning = Tuning(chosen, target, met, alone, race, tuple(points))
    if estimates is None or not met:
        return tuning
    return _with_router(tuning, workhorse, racehorse, estimates)


ROUTER_GAIN = 0.95  # a router is used when it needs at most this share of routing by margin's spend
GRID = 24  # thresholds of each kind tried when a router is fitted (quantiles of the values seen)


def _spend(p: Point) -> float:
    """What routing saves: the cost when the items are priced and cost something, else local compute."""
    return p.cost_per_1k_usd if p.cost_per_1k_usd else p.compute_s_per_1k


def _with_router(
    tuning: Tuning,
    workhorse: Sequence[ItemResult],
    racehorse: Sequence[ItemResult],
    estimates: Sequence[float],
) -> Tuning:
    goal = tuning.target * tuning.racehorse_accuracy
    margins = _quantiles([p.min_margin for p in tuning.points], GRID)
    cuts = _quantiles([0.0, *sorted(set(estimates)), 1.01], GRID)
    best_at: list[Point] = []  # for each min_p, its cheapest point that keeps the target
    for min_p in cuts:
        keeping = [
            q for t in margins if (q := _point(t, workhorse, racehorse, estimates, min_p)).accuracy >= goal
        ]
        if keeping:
            best_at.append(min(keeping, key=_spend))
    if not best_at:
        return dataclasses.replace(tuning, router="no pair of thresholds keeps the target")
    cheapest = min(best_at, key=_spend)
    if cheapest.min_p > 0 and _spend(cheapest) <= ROUTER_GAIN * _spend(tuning.chosen):
        return dataclasses.replace(tuning, chosen=cheapest, router_points=tuple(best_at), router="used")
    why = (
        f"no cheaper than routing by margin alone ({_spend(cheapest):.4g} against {_spend(tuning.chosen):.4g}"
        " per 1,000 items at its best)"
    )
    return dataclasses.replace(tuning, router_points=tuple(best_at), router=why)


def _quantiles(values: Sequence[float], most: int) -> list[float]:
    """At most `most` of the distinct values, evenly spread over them in order, the first and last kept."""
    return thin(sorted(set(values)), most)


def thin(points: Sequence[T], most: int) -> list[T]:
    """At most `most` points of a curve, evenly spread over it, its first and last kept."""
    if len(points) <= most:
        return list(points)
    step = (len(points) - 1) / (most - 1)
    return [points[round(k * step)] for k in range(most)]


async def tune_trial(
    orch: Any, model_name: str, worker_name: str, items: Sequence[Any], target: float, **kw: Any
) -> TrialReport:
    """`orch trial --tune`: the trial's two passes (`run_trial(tune=...)`), then the thresholds chosen
    (`TrialReport.tuning`); a router is fitted and tried when the embed extra is installed."""
    import asyncio

    from orchestrator.toolsets.retrieval.dense import MiniLM, available
    from orchestrator.workers.router import loo_estimates

    report = await run_trial(orch, model_name, worker_name, items, tune=target, **kw)
    if report.racehorse is None:
        return report
    mine, race = report.items, report.racehorse.items
    if not available():
        tuning = tune(mine, race, target)
        report.tuning = dataclasses.replace(tuning, router="not tried: the embed extra is not installed")
        return report
    scores = [i.score_alone for i in mine]
    vectors = await asyncio.to_thread(MiniLM.shared().embed, [i.input for i in mine])
    tuning = tune(mine, race, target, loo_estimates(vectors, scores))
    report.tuning = dataclasses.replace(tuning, fitted=(vectors, scores)) if tuning.uses_router else tuning
    return report
