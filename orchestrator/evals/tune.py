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

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.evals.trial import ItemResult

__all__ = ["DEFAULT_TARGET", "Point", "Tuning", "curve", "tune"]

DEFAULT_TARGET = 0.97


@dataclass(frozen=True)
class Point:
    """The routed pair's figures at one threshold."""

    min_margin: float
    accuracy: float
    escalation_rate: float
    compute_s_per_1k: float
    cost_per_1k_usd: float | None


@dataclass(frozen=True)
class Tuning:
    """The threshold chosen, why, and the curve it was chosen on."""

    chosen: Point
    target: float
    met: bool  # the chosen point keeps `target` of the racehorse's accuracy
    workhorse_accuracy: float
    racehorse_accuracy: float
    points: tuple[Point, ...]

    def summary(self) -> str:
        kept = self.chosen.accuracy / self.racehorse_accuracy if self.racehorse_accuracy else math.nan
        head = (
            f"min_margin {self.chosen.min_margin:.3g}: routed accuracy {self.chosen.accuracy:.1%} "
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


def _point(t: float, workhorse: Sequence[ItemResult], racehorse: Sequence[ItemResult]) -> Point:
    n = len(workhorse) or 1
    right = escalated = 0.0
    compute_ms = 0.0
    costs: list[float | None] = []
    for w, r in zip(workhorse, racehorse, strict=True):
        kept = w.valid and not w.escalated and (w.margin is None or w.margin >= t)
        right += w.score_alone if kept else r.score
        escalated += not kept
        compute_ms += w.own_compute_ms + (0.0 if kept else r.compute_ms)
        costs += [w.own_cost_usd] + ([] if kept else [r.cost_usd])
    cost = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs) / n * 1000
    return Point(t, right / n, escalated / n, compute_ms / n, cost)


def tune(
    workhorse: Sequence[ItemResult], racehorse: Sequence[ItemResult], target: float = DEFAULT_TARGET
) -> Tuning:
    """The threshold to route by (see the module docstring), and the curve."""
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
    return Tuning(chosen, target, met, alone, race, tuple(points))


def thin(points: Sequence[Point], most: int) -> list[Point]:
    """At most `most` points of a curve, evenly spread over it, its first and last kept."""
    if len(points) <= most:
        return list(points)
    step = (len(points) - 1) / (most - 1)
    return [points[round(k * step)] for k in range(most)]
