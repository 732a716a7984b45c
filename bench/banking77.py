"""Banking77 intent classification: the local workhorse, the local racehorse, and the workhorse routing its
unsure answers to the racehorse.

The built-in `classify` worker with all 77 Banking77 labels (from `categories.json`), constrained by a
grammar, so every answer is a valid label: validation never escalates here, confidence does. Confidence is
the workhorse's margin (`Worker.min_margin`): how far its least sure token led the best rival token the
grammar allowed, in log-probability.

- The threshold is tuned on a fixed sample of the *training* split (120 items): the smallest margin at
  which the routed pair reaches 97 % of the racehorse's accuracy there (a little above the 95 % goal, for
  the gap between splits).
- Everything is reported on a fixed sample of the *test* split (300 items, seed 77), never tuned on.
- Each model answers every item once, with its margin. The routed row applies the worker's own rule
  (`Worker.min_margin`: an invalid answer, or a valid one with a smaller margin, goes up) to those answers;
  the worker itself (`run_worker`, the racehorse at the top of its chain) runs the first CHECK_N test
  items as a check that it routes and answers the same way.
- Cost two ways: at price-table prices, as if the pair were gpt-4o-mini (workhorse) and gpt-4o
  (racehorse), with the local models' own token counts; and as local compute seconds.

Data: ../shared/data/intents/banking77 (PolyAI, CC-BY-4.0). Run: `.venv/bin/python bench/banking77.py`
(about 30 minutes on 2 cores; saves bench/results/banking77.json and writes its section into
docs/benchmarks.md), `--json` (no doc), `--render FILE` (the doc section from a saved result), `--limit N`
(a prefix of N items of each sample, for a quick check) and `--out FILE` (save the result elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import datetime
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from langchain_core.messages import HumanMessage, SystemMessage  # noqa: E402

from bench.markers import machine, splice  # noqa: E402
from orchestrator import Orchestrator, Settings, SlotConfig  # noqa: E402
from orchestrator.agent.workhorse import run_worker  # noqa: E402
from orchestrator.cost.ledger import LedgerEntry  # noqa: E402
from orchestrator.cost.pricing import Usage, cost_usd, shipped_table  # noqa: E402
from orchestrator.evals.trial import ItemResult  # noqa: E402
from orchestrator.models.calls import call_model  # noqa: E402
from orchestrator.models.context import RunContext  # noqa: E402
from orchestrator.workers.definitions import Worker, classify_worker  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "intents" / "banking77"
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- banking77:start -->", "<!-- banking77:end -->"
SECTION = "## Banking77: workhorse, racehorse, and routing by confidence"
TEST_N, TUNE_N, CHECK_N = 300, 120, 40
TARGET = 0.97  # of the racehorse's accuracy on the tuning sample
PAIR = ("gpt-4o-mini", "gpt-4o")  # the API pair the token counts are priced as


@dataclasses.dataclass
class Answer:
    label: str | None
    margin: float | None
    compute_ms: float
    input_tokens: int
    output_tokens: int
    ttft_ms: float | None


def rows(name: str) -> list[tuple[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def context(orch: Orchestrator, worker: Worker) -> RunContext:
    models = {s: orch.model_for(s) for s in orch.slots}
    return RunContext.standalone("bench", dict(orch.slots), models, {worker.name: worker})


def totals(entries: Sequence[LedgerEntry]) -> tuple[float, int, int]:
    return (
        sum(e["compute_ms"] or 0.0 for e in entries),
        sum(e["input_tokens"] for e in entries),
        sum(e["output_tokens"] for e in entries),
    )


async def ask(ctx: RunContext, worker: Worker, slot: str, text: str) -> Answer:
    """One model alone: the worker's prompt and grammar, with its margin."""
    messages = [SystemMessage(worker.instructions), HumanMessage(text)]
    msg, entries = await call_model(
        ctx,
        slot,
        "bench",
        messages,
        max_tokens=worker.max_tokens,
        schema=worker.schema(),
        options={"logprobs": True},
    )
    assert worker.output is not None
    try:
        label: str | None = worker.output.model_validate_json(str(msg.content)).label  # type: ignore[attr-defined]
    except ValueError:
        label = None
    compute, tokens_in, tokens_out = totals(entries)
    margin = msg.response_metadata.get("margin")
    return Answer(label, margin, compute, tokens_in, tokens_out, entries[0]["ttft_ms"] if entries else None)


async def routed(ctx: RunContext, worker: Worker, text: str) -> tuple[str | None, bool, list[LedgerEntry]]:
    """The worker as a user runs it: the workhorse, up the chain when unsure."""
    result, entries, _ = await run_worker(ctx, worker, text, "bench")
    label = result.value["label"] if result is not None else None
    return label, bool(result is not None and result.escalated), entries


def usd(model: str, tokens_in: int, tokens_out: int) -> float:
    prices = shipped_table().lookup(model)
    assert prices is not None, model
    return cost_usd(Usage(input_tokens=tokens_in, output_tokens=tokens_out), prices) or 0.0


def unsure(answer: Answer, t: float) -> bool:
    """Would the worker send this answer up (`Worker.min_margin` = t)? Invalid, or valid with a smaller margin."""
    return answer.label is None or (answer.margin is not None and answer.margin < t)


def combine(small: Sequence[Answer], large: Sequence[Answer], expected: Sequence[str], t: float) -> float:
    """Accuracy of answering from the small model unless it is unsure at `t`."""
    right = 0
    for s, big, want in zip(small, large, expected, strict=True):
        right += (big.label if unsure(s, t) else s.label) == want
    return right / len(expected)


def tune(small: Sequence[Answer], large: Sequence[Answer], expected: Sequence[str]) -> float:
    """The smallest threshold at which the routed pair reaches TARGET of the large model's accuracy."""
    goal = TARGET * sum(b.label == w for b, w in zip(large, expected, strict=True)) / len(expected)
    for t in sorted({0.0, *(s.margin for s in small if s.margin is not None)}):
        if combine(small, large, expected, t) >= goal:
            return t
    return float("inf")


async def main(limit: int | None = None) -> dict[str, Any]:
    labels = json.loads((DATA / "categories.json").read_text(encoding="utf-8"))
    # a limit takes a prefix of each fixed sample (the same items a full run starts with)
    test = random.Random(77).sample(rows("test.csv"), TEST_N)[:limit]
    train = random.Random(7).sample(rows("train.csv"), TUNE_N)[:limit]
    orch = Orchestrator(
        settings=Settings(),
        slots={
            "controller": SlotConfig(model="local:qwen2.5-1.5b", role="racehorse"),
            "classify": SlotConfig(model="local:qwen2.5-0.5b", role="workhorse"),
        },
        tools=[],
    )
    tuned = set(train)
    pool = [r for r in rows("train.csv") if r not in tuned]
    random.Random(3).shuffle(pool)
    shots = [
        next(r for r in pool if r[1] == label) for label in labels
    ]  # one per label, apart from the tuning items
    worker = classify_worker(
        "banking77", labels, "Classify a bank customer's message by what they want", shots=shots
    )
    started = time.perf_counter()
    runs: dict[str, dict[str, list[Answer]]] = {}
    for split, items in (("tune", train), ("test", test)):
        runs[split] = {}
        for slot in ("classify", "controller"):
            out = []
            for n, (text, _) in enumerate(items, 1):
                out.append(await ask(context(orch, worker), worker, slot, text))
                if n % 50 == 0:
                    print(f"{split} {slot}: {n}/{len(items)}", file=sys.stderr, flush=True)
            runs[split][slot] = out
    threshold = tune(runs["tune"]["classify"], runs["tune"]["controller"], [w for _, w in train])
    router = dataclasses.replace(worker, min_margin=threshold, escalate_to="controller")
    checked = []  # the worker itself on the first CHECK_N test items: its answers must be the rule's
    for text, _ in test[:CHECK_N]:
        label, up, entries = await routed(context(orch, router), router, text)
        checked.append((label, up, sum(e["compute_ms"] or 0.0 for e in entries)))
    orch.close()
    expected = [w for _, w in test]
    small, large = runs["test"]["classify"], runs["test"]["controller"]

    def figures(answers: Sequence[Answer], model: str) -> dict[str, Any]:
        return {
            "accuracy": sum(a.label == w for a, w in zip(answers, expected, strict=True)) / len(expected),
            "usd_per_1k": sum(usd(model, a.input_tokens, a.output_tokens) for a in answers)
            / len(answers)
            * 1000,
            "compute_s_per_1k": sum(a.compute_ms for a in answers) / len(answers),
            "p50_ttft_ms": statistics.median(a.ttft_ms for a in answers if a.ttft_ms is not None),
            "tokens_in_mean": statistics.fmean(a.input_tokens for a in answers),
        }

    work, race = figures(small, PAIR[0]), figures(large, PAIR[1])
    ups = [unsure(s, threshold) for s in small]
    pair_labels = [b.label if up else s.label for s, b, up in zip(small, large, ups, strict=True)]
    pair_usd = sum(
        usd(PAIR[0], s.input_tokens, s.output_tokens)
        + (usd(PAIR[1], b.input_tokens, b.output_tokens) if up else 0)
        for s, b, up in zip(small, large, ups, strict=True)
    )
    pair_compute = sum(
        s.compute_ms + (b.compute_ms if up else 0) for s, b, up in zip(small, large, ups, strict=True)
    )
    agree = sum((label, up) == (pair_labels[n], ups[n]) for n, (label, up, _) in enumerate(checked))
    pair = {
        "accuracy": sum(a == w for a, w in zip(pair_labels, expected, strict=True)) / len(expected),
        "escalation_rate": sum(ups) / len(expected),
        "usd_per_1k": pair_usd / len(expected) * 1000,
        "compute_s_per_1k": pair_compute / len(expected),
        "worker_checked": len(checked),
        "worker_agrees": agree,
        "worker_compute_s_per_1k": sum(c for _, _, c in checked) / len(checked) if checked else None,
        "rule_compute_s_per_1k_same_items": (
            sum(
                s.compute_ms + (b.compute_ms if up else 0)
                for s, b, up in list(zip(small, large, ups, strict=True))[: len(checked)]
            )
            / len(checked)
            if checked
            else None
        ),
    }
    router = route_before(train, runs["tune"], test, small, large)
    margins_right = [
        s.margin for s, w in zip(small, expected, strict=True) if s.label == w and s.margin is not None
    ]
    margins_wrong = [
        s.margin for s, w in zip(small, expected, strict=True) if s.label != w and s.margin is not None
    ]
    return {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "test_items": len(test),
        "tune_items": len(train),
        "threshold": threshold,
        "workhorse": work,
        "racehorse": race,
        "routed": pair,
        "ratios": {
            "accuracy_vs_racehorse": pair["accuracy"] / race["accuracy"] if race["accuracy"] else None,
            "usd_vs_racehorse": pair["usd_per_1k"] / race["usd_per_1k"],
            "compute_vs_racehorse": pair["compute_s_per_1k"] / race["compute_s_per_1k"],
            "workhorse_compute_vs_racehorse": work["compute_s_per_1k"] / race["compute_s_per_1k"],
        },
        "median_margin_right": statistics.median(margins_right) if margins_right else None,
        "median_margin_wrong": statistics.median(margins_wrong) if margins_wrong else None,
        "router": router,
        "minutes": (time.perf_counter() - started) / 60,
        "curve": [  # the trade-off on the test items at other thresholds (reported, never tuned on)
            {
                "threshold": t,
                "accuracy": combine(small, large, expected, t),
                "escalation_rate": sum(unsure(s, t) for s in small) / len(small),
            }
            for t in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
        ],
    }


def as_items(answers: Sequence[Answer], rows_: Sequence[tuple[str, str]], model: str) -> list[ItemResult]:
    """The answers as the trial code's items, so the product's tuning (`orchestrator.evals.tune`) reads them."""
    out = []
    for a, (text, want) in zip(answers, rows_, strict=True):
        right = 1.0 if a.label == want else 0.0
        price = usd(model, a.input_tokens, a.output_tokens)
        out.append(
            ItemResult(
                input=text,
                expected=want,
                value={"label": a.label},
                score_alone=right,
                score=right,
                valid_first=a.label is not None,
                valid=a.label is not None,
                escalated=False,
                cost_usd=price,
                compute_ms=a.compute_ms,
                ttft_ms=a.ttft_ms,
                output_tokens=a.output_tokens,
                generation_ms=0.0,
                own_cost_usd=price,
                own_compute_ms=a.compute_ms,
                margin=a.margin,
            )
        )
    return out


def route_before(
    train: Sequence[tuple[str, str]],
    tune_runs: dict[str, list[Answer]],
    test: Sequence[tuple[str, str]],
    small: Sequence[Answer],
    large: Sequence[Answer],
) -> dict[str, Any]:
    """Routing before generation, as `orch trial --tune` fits it: a k-nearest-neighbour router on the
    tuning items' MiniLM embeddings (leave-one-out), (min_p, min_margin) chosen there together, then
    applied unchanged to the test items (each estimated from the tuning items)."""
    from orchestrator.evals.tune import _point, thin, tune
    from orchestrator.toolsets.retrieval.dense import MiniLM
    from orchestrator.workers.router import DEFAULT_K, Router, loo_estimates

    w_tune = as_items(tune_runs["classify"], train, PAIR[0])
    r_tune = as_items(tune_runs["controller"], train, PAIR[1])
    vectors = MiniLM.shared().embed([t for t, _ in train])
    scores = [i.score_alone for i in w_tune]
    tuning = tune(w_tune, r_tune, TARGET, loo_estimates(vectors, scores))
    w_test, r_test = as_items(small, test, PAIR[0]), as_items(large, test, PAIR[1])
    router = Router(vectors, np.asarray(scores, dtype=np.float32), tuning.chosen.min_p, DEFAULT_K)
    estimates = [router.p_right(v) for v in MiniLM.shared().embed([t for t, _ in test])]
    at = _point(tuning.chosen.min_margin, w_test, r_test, estimates, tuning.chosen.min_p)
    curve = [
        dataclasses.asdict(_point(q.min_margin, w_test, r_test, estimates, q.min_p))
        for q in thin(tuning.router_points, 8)
    ]
    return {
        "used": tuning.uses_router,
        "why": tuning.router,
        "min_p": tuning.chosen.min_p,
        "min_margin": tuning.chosen.min_margin,
        "tune_point": dataclasses.asdict(tuning.chosen),
        "test_point": dataclasses.asdict(at),
        "test_curve": curve,  # the router's curve (its tuning pairs) applied to the test items
    }


def render(r: dict[str, Any]) -> str:
    w, race, p, q = r["workhorse"], r["racehorse"], r["routed"], r["ratios"]
    lines = [
        SECTION,
        "",
        f"Measured {r['date']} on {r['machine']} by `bench/banking77.py`: {r['test_items']} test items "
        f"(seeded sample of the test split), 77 labels under a grammar; threshold tuned on {r['tune_items']} "
        f"training items: margin < {r['threshold']:.3f} escalates. Prices as {PAIR[0]} (workhorse) and "
        f"{PAIR[1]} (racehorse), with the local models' token counts.",
        "",
        "| configuration | accuracy | escalated | USD per 1k items | compute s per 1k items | p50 TTFT |",
        "|---|---|---|---|---|---|",
        f"| workhorse alone (Qwen2.5-0.5B) | {w['accuracy']:.1%} | - | ${w['usd_per_1k']:.3f} | "
        f"{w['compute_s_per_1k']:.0f} | {w['p50_ttft_ms']:.0f} ms |",
        f"| racehorse alone (Qwen2.5-1.5B) | {race['accuracy']:.1%} | - | ${race['usd_per_1k']:.3f} | "
        f"{race['compute_s_per_1k']:.0f} | {race['p50_ttft_ms']:.0f} ms |",
        f"| workhorse, unsure answers to the racehorse | {p['accuracy']:.1%} | {p['escalation_rate']:.1%} | "
        f"${p['usd_per_1k']:.3f} | {p['compute_s_per_1k']:.0f} | - |",
        "",
        f"- Routed accuracy is {q['accuracy_vs_racehorse']:.1%} of the racehorse's (goal >= 95 %), at "
        f"{q['usd_vs_racehorse']:.1%} of its price-table cost (goal <= 30 %) and {q['compute_vs_racehorse']:.1%} "
        f"of its local compute (goal <= 50 %). The workhorse alone takes {q['workhorse_compute_vs_racehorse']:.1%} "
        "of the racehorse's compute.",
        f"- The routed row applies the worker's rule (`min_margin`: invalid, or valid with a smaller margin, goes "
        f"up) to both models' answers on all {r['test_items']} items; the worker itself (`run_worker`, the "
        f"racehorse at the top of its chain) ran the first {p['worker_checked']} and agreed on "
        f"{p['worker_agrees']} (label and route); its compute there was {p['worker_compute_s_per_1k']:.0f} s per 1k "
        f"items against the rule's {p['rule_compute_s_per_1k_same_items']:.0f}.",
        f"- The workhorse's median margin: {_num(r['median_margin_right'])} on its right answers, "
        f"{_num(r['median_margin_wrong'])} on its wrong ones.",
    ]
    share = w["usd_per_1k"] / race["usd_per_1k"]
    if q["usd_vs_racehorse"] > 0.30:
        lines.append(
            f"- Why the cost goal is missed: the pair pays the workhorse on every item ({share:.1%} of the "
            f"racehorse's cost) plus the racehorse on each escalated one, so the 30 % goal allows at most "
            f"{0.30 - share:.0%} of items to escalate. The workhorse alone reaches "
            f"{w['accuracy'] / race['accuracy']:.0%} of the racehorse's accuracy, and its margin separates its "
            f"right answers from its wrong ones only loosely, so keeping 95 % of the racehorse's accuracy took "
            f"escalating {p['escalation_rate']:.0%}. A workhorse closer to the racehorse on the task (or a "
            "sharper confidence signal) is what would meet it; the threshold alone can't."
        )
    if q["compute_vs_racehorse"] > 0.50:
        rt = r.get("router") or {}
        keeping = [p for p in rt.get("test_curve", []) if p["accuracy"] >= 0.95 * race["accuracy"]]
        best = min(keeping, key=lambda p: p["compute_s_per_1k"]) if keeping else None
        lines.append(
            f"- Why the compute goal is missed: routing by the workhorse's own confidence happens after it has "
            f"answered, so its compute ({q['workhorse_compute_vs_racehorse']:.0%} of the racehorse's here) is "
            "spent on every item, and every escalation adds a whole racehorse call."
            + (
                f" Routing before generation (below) skips the workhorse on the items it sends up; of its "
                f"points that keep 95 % of the racehorse's accuracy on the test items, the least compute is "
                f"{best['compute_s_per_1k'] / race['compute_s_per_1k']:.0%} of the racehorse's (sending "
                f"{best['sent_up_rate']:.0%} up): the workhorse is wrong too often here for any split of the "
                "items to reach 50 %."
                if best is not None
                else ""
            )
        )
    rt = r.get("router")
    if rt:
        tp = rt["test_point"]
        lines.append(
            f"- Routing before generation (a MiniLM nearest-neighbour router fitted on the tuning items, as "
            f"`orch trial --tune` fits it): {'used' if rt['used'] else 'not used: ' + rt['why']}. Its pair "
            f"(min_p {rt['min_p']:.2f}, min_margin {rt['min_margin']:.3g}) on the test items: accuracy "
            f"{tp['accuracy']:.1%} ({tp['accuracy'] / race['accuracy']:.1%} of the racehorse's), "
            f"{tp['sent_up_rate']:.0%} sent up before the workhorse, {tp['escalation_rate']:.0%} to the "
            f"racehorse in all, ${tp['cost_per_1k_usd']:.3f} per 1k items "
            f"({tp['cost_per_1k_usd'] / race['usd_per_1k']:.1%} of the racehorse's), "
            f"{tp['compute_s_per_1k']:.0f} compute s per 1k ({tp['compute_s_per_1k'] / race['compute_s_per_1k']:.1%})."
        )
        for point in rt.get("test_curve", []):
            lines.append(
                f"  - router min_p {point['min_p']:.2f}, min_margin {point['min_margin']:.3g}: accuracy "
                f"{point['accuracy']:.1%}, sent up {point['sent_up_rate']:.0%}, compute "
                f"{point['compute_s_per_1k'] / race['compute_s_per_1k']:.0%} of the racehorse's"
            )
    if r.get("note"):
        lines.append(f"- {r['note']}")
    for point in r.get("curve", []):
        lines.append(
            f"  - threshold {point['threshold']:g}: accuracy {point['accuracy']:.1%}, "
            f"escalated {point['escalation_rate']:.0%}"
        )
    lines.append("")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def write(section: str) -> None:
    """Put the section between its markers in docs/benchmarks.md (others keep their own sections)."""
    splice(
        DOC, f"{START}\n{section.rstrip()}\n{END}", START, END, "Benchmarks", before="<!-- nlupp:start -->"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--limit", type=int, help=f"only the first N items of each sample (full: {TEST_N} / {TUNE_N})"
    )
    parser.add_argument("--json", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--render", metavar="FILE", help="only write the doc section from a saved result")
    parser.add_argument(
        "--out", default=str(ROOT / "bench" / "results" / "banking77.json"), help="result file"
    )
    args = parser.parse_args()
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}; leave it out for the full samples")
    if args.render:
        result = json.loads(Path(args.render).read_text(encoding="utf-8"))
    else:
        result = asyncio.run(main(args.limit))
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(result, indent=2))
    if not args.json:
        write(render(result))
