"""Intents never seen before tuning: the built-in `classify` worker's default confidence threshold, measured
on Banking77 labels held out from the tuning.

The question a new user asks: "I bring my own labels; does the classify worker's default escalation hold?"
So the default `min_margin` (`orchestrator.workers.definitions.CLASSIFY_MIN_MARGIN`) is tuned on some
intents and judged on others:

- Banking77's 77 labels are split by a hash of the label's name, fixed before any run: a third held out
  (`held_out(label)`), two thirds for tuning.
- Groups of 12 labels are drawn (seeded) from each part; each group is one `orch trial`-sized task with
  ITEMS_PER_LABEL items a label, from the train split for tuning and the test split for the held-out groups.
  The worker is the built-in `classify` worker of `orch trial --worker classify` (labels from the data,
  no descriptions, no examples), as a new user runs it.
- The workhorse (local:qwen2.5-0.5b) answers every item alone with its margin; the racehorse
  (local:qwen2.5-1.5b) answers alone. `orchestrator.evals.tune` routes them by rule for every threshold.
  The threshold is tuned on the tuning groups (the fewest escalations that keep 97 % of the racehorse's
  accuracy), then applied unchanged to the held-out groups.
- A check: the worker itself (`run_worker`, min_margin as tuned, the racehorse above it) runs the first
  CHECK_N held-out items; its answers must be the rule's.

Data: ../shared/data/intents/banking77 (PolyAI, CC-BY-4.0). Run: `.venv/bin/python bench/intents.py`
(`--groups-tune N --groups-held N` to change the sample, `--per-label N`); writes
bench/results/intents.json and bench/results/intents.md (the lead splices the section into
docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import datetime
import hashlib
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.markers import machine  # noqa: E402
from orchestrator import Orchestrator, Settings, SlotConfig  # noqa: E402
from orchestrator.evals.trial import ItemResult, labels_from, run_items  # noqa: E402
from orchestrator.evals.tune import _point, thin, tune  # noqa: E402
from orchestrator.workers.definitions import classify_worker  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "intents" / "banking77"
OUT = ROOT / "bench" / "results"
GROUP = 12  # labels a task
CHECK_N = 24
WORKHORSE, RACEHORSE = "local:qwen2.5-0.5b", "local:qwen2.5-1.5b"


def held_out(label: str) -> bool:
    """A third of the labels, by a hash of the name: never seen by the tuning."""
    return int(hashlib.sha256(label.encode()).hexdigest(), 16) % 3 == 0


def rows(name: str) -> dict[str, list[str]]:
    by_label: dict[str, list[str]] = defaultdict(list)
    with (DATA / name).open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            by_label[r["category"]].append(r["text"])
    return by_label


def groups(labels: list[str], count: int, seed: int) -> list[list[str]]:
    """`count` groups of GROUP labels: a seeded shuffle, cut in turn (re-shuffled when it runs out)."""
    rng = random.Random(seed)
    out: list[list[str]] = []
    pool: list[str] = []
    while len(out) < count:
        if len(pool) < GROUP:
            pool = labels[:]
            rng.shuffle(pool)
        out.append(sorted(pool[:GROUP]))
        pool = pool[GROUP:]
    return out


def items_for(
    group: list[str], texts: dict[str, list[str]], per_label: int, seed: int
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    items = [{"input": t, "expected": label} for label in group for t in rng.sample(texts[label], per_label)]
    rng.shuffle(items)
    return items


async def run_group(
    orch: Orchestrator, items: list[dict[str, Any]]
) -> tuple[list[ItemResult], list[ItemResult]]:
    """The built-in classify worker on one group: the workhorse alone with margins, the racehorse alone."""
    worker = classify_worker("classify", labels_from(items), "Classify the text", min_margin=0.0)
    small = (orch.slots["classify"], orch.model_for("classify"))
    large = (orch.slots["controller"], orch.model_for("controller"))
    alone = await run_items(*small, worker, items, {"controller": large})  # margins measured: a slot above
    race = await run_items(*large, worker, items, {})
    return alone, race


async def main(args: argparse.Namespace) -> dict[str, Any]:
    labels = sorted(json.loads((DATA / "categories.json").read_text(encoding="utf-8")))
    tune_labels = [label for label in labels if not held_out(label)]
    held_labels = [label for label in labels if held_out(label)]
    train, test = rows("train.csv"), rows("test.csv")
    orch = Orchestrator(
        settings=Settings(),
        slots={
            "controller": SlotConfig(model=RACEHORSE, role="racehorse"),
            "classify": SlotConfig(model=WORKHORSE, role="workhorse"),
        },
        tools=[],
    )
    started = time.perf_counter()
    parts: dict[str, dict[str, list[ItemResult]]] = {}
    group_rows: list[dict[str, Any]] = []
    held_items: list[dict[str, Any]] = []
    for part, pool, count, texts, seed in (
        ("tune", tune_labels, args.groups_tune, train, 11),
        ("held_out", held_labels, args.groups_held, test, 29),
    ):
        parts[part] = {"workhorse": [], "racehorse": []}
        for g, group in enumerate(groups(pool, count, seed)):
            items = items_for(group, texts, args.per_label, seed * 100 + g)
            if part == "held_out":
                held_items += items
            alone, race = await run_group(orch, items)
            parts[part]["workhorse"] += alone
            parts[part]["racehorse"] += race
            group_rows.append(
                {
                    "part": part,
                    "labels": group,
                    "workhorse": sum(i.score for i in alone) / len(alone),
                    "racehorse": sum(i.score for i in race) / len(race),
                }
            )
            print(f"{part} group {g + 1}/{count}: {group_rows[-1]}", file=sys.stderr, flush=True)
    tuned = tune(parts["tune"]["workhorse"], parts["tune"]["racehorse"], args.target)
    t = tuned.chosen.min_margin
    held = parts["held_out"]
    at_t = _point(t, held["workhorse"], held["racehorse"])
    held_tuning = tune(held["workhorse"], held["racehorse"], args.target)  # the curve only: never chosen from
    # the worker itself, routed at t, on the first CHECK_N held-out items (with their group's labels)
    agree = checked = offset = 0
    size = GROUP * args.per_label
    for items in (held_items[k : k + size] for k in range(0, len(held_items), size)):
        take = items[: CHECK_N - checked]
        if not take:
            break
        worker = classify_worker("classify", labels_from(items), "Classify the text", min_margin=t)
        chain = {"controller": (orch.slots["controller"], orch.model_for("controller"))}
        routed = await run_items(orch.slots["classify"], orch.model_for("classify"), worker, take, chain)
        for k, r in enumerate(routed):
            w, big = held["workhorse"][offset + k], held["racehorse"][offset + k]
            kept = w.valid and (w.margin is None or w.margin >= t)
            agree += r.value == (w.value if kept else big.value)
        checked += len(take)
        offset += len(items)
    orch.close()

    def fig(items: list[ItemResult]) -> float:
        return sum(i.score for i in items) / len(items)

    def compute(items: list[ItemResult]) -> float:
        return sum(i.compute_ms for i in items) / len(items)  # ms an item = s per 1,000 items

    return {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "workhorse": WORKHORSE,
        "racehorse": RACEHORSE,
        "labels_tune": len(tune_labels),
        "labels_held_out": len(held_labels),
        "per_label": args.per_label,
        "target": args.target,
        "groups": group_rows,
        "tune": {
            "items": len(parts["tune"]["workhorse"]),
            "workhorse": fig(parts["tune"]["workhorse"]),
            "racehorse": fig(parts["tune"]["racehorse"]),
            "racehorse_compute_s_per_1k": compute(parts["tune"]["racehorse"]),
            **tuned.to_dict(),
        },
        "held_out": {
            "items": len(held["workhorse"]),
            "workhorse": fig(held["workhorse"]),
            "racehorse": fig(held["racehorse"]),
            "workhorse_compute_s_per_1k": compute(held["workhorse"]),
            "racehorse_compute_s_per_1k": compute(held["racehorse"]),
            "routed_at_tuned": dataclasses.asdict(at_t),
            "curve": [dataclasses.asdict(p) for p in thin(held_tuning.points, 12)],
        },
        "check": {"items": checked, "worker_agrees_with_rule": agree},
        "minutes": (time.perf_counter() - started) / 60,
    }


def render(r: dict[str, Any]) -> str:
    tune_, held = r["tune"], r["held_out"]
    at = held["routed_at_tuned"]
    lines = [
        "## Intents held out before tuning: the classify worker's default escalation",
        "",
        f"Measured {r['date']} on {r['machine']}; {r['minutes']:.0f} minutes. Workhorse {r['workhorse']}, "
        f"racehorse {r['racehorse']}; the built-in `classify` worker of `orch trial` (labels from the data, "
        f"no descriptions, no examples), {GROUP} labels a task, {r['per_label']} items a label. Banking77's "
        f"labels split by a hash of their names before any run: {r['labels_tune']} for tuning (train split), "
        f"{r['labels_held_out']} held out (test split). `bench/intents.py`.",
        "",
        "| | items | workhorse alone | racehorse alone | routed | escalated | compute vs racehorse |",
        "|---|---|---|---|---|---|---|",
        f"| tuning labels | {tune_['items']} | {tune_['workhorse']:.1%} | {tune_['racehorse']:.1%} | "
        f"{tune_['chosen']['accuracy']:.1%} | {tune_['chosen']['escalation_rate']:.0%} | "
        f"{tune_['chosen']['compute_s_per_1k'] / max(1e-9, tune_['racehorse_compute_s_per_1k']):.0%} |",
        f"| held-out labels | {held['items']} | {held['workhorse']:.1%} | {held['racehorse']:.1%} | "
        f"{at['accuracy']:.1%} | {at['escalation_rate']:.0%} | "
        f"{at['compute_s_per_1k'] / max(1e-9, held['racehorse_compute_s_per_1k']):.0%} |",
        "",
        f"Threshold tuned on the tuning labels: min_margin {tune_['min_margin']:.3g} (target {r['target']:.0%} "
        f"of the racehorse's accuracy; {'met' if tune_['met'] else 'not met: the most accurate threshold'}). "
        f"The worker itself, routed at it, answered {r['check']['worker_agrees_with_rule']} of "
        f"{r['check']['items']} held-out items as the rule did.",
        "",
        "Held-out threshold curve (for reading, never chosen from):",
        "",
        "| min_margin | accuracy | escalated | compute s / 1k |",
        "|---|---|---|---|",
        *(
            f"| {p['min_margin']:.3g} | {p['accuracy']:.1%} | {p['escalation_rate']:.0%} | {p['compute_s_per_1k']:.0f} |"
            for p in held["curve"]
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups-tune", type=int, default=3)
    ap.add_argument("--groups-held", type=int, default=2)
    ap.add_argument("--per-label", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument("--out", default=str(OUT / "intents.json"))
    ap.add_argument("--render", metavar="FILE", help="only print the section of a saved result")
    a = ap.parse_args()
    if a.render:
        print(render(json.loads(Path(a.render).read_text(encoding="utf-8"))))
        sys.exit(0)
    result = asyncio.run(main(a))
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = render(result)
    Path(a.out).with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
