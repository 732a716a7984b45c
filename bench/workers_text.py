"""The built-in summarize and style workers on 20 texts, on the local models, judged by the 1.5B.

    .venv/bin/python bench/workers_text.py [--limit N] [--no-docs]

Texts: `bench/data/texts.jsonl`, 20 customer emails, incident reports, product notes and meeting minutes
(80-200 words, written for this benchmark, each with numbers and names for the fact validators). Workers:
`summarize_worker(sentences=(2, 2))` and `style_worker(style="formal")`, unchanged otherwise. Each runs
through `orchestrator.evals.trial.run_items` (the ladder of `orch trial`: first answer, one repair, then the
escalation chain) in two runs: the 0.5B workhorse with escalation to the 1.5B racehorse (read up to its repair
for escalation off), and the 1.5B alone. The 1.5B judges every valid output (`orchestrator.evals.judge`, 1-5).

Writes every item (each attempt's raw reply included) to `bench/results/workers-text.json` and the tables to
the "Summarize and style workers on 20 texts" section of docs/benchmarks.md, between its markers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orchestrator.evals.trial as trial  # noqa: E402
from bench.markers import machine, splice  # noqa: E402
from orchestrator import Orchestrator, Settings, SlotConfig  # noqa: E402
from orchestrator.evals.judge import Judgement, judge_output  # noqa: E402
from orchestrator.models.binding import bind_slot  # noqa: E402
from orchestrator.workers.definitions import Worker, style_worker, summarize_worker  # noqa: E402

DATA = ROOT / "bench" / "data" / "texts.jsonl"
RESULTS = ROOT / "bench" / "results" / "workers-text.json"
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- workers-text:start -->", "<!-- workers-text:end -->"
SMALL, BIG = "local:qwen2.5-0.5b", "local:qwen2.5-1.5b"


class Recording:
    """A chat model passed through, keeping each reply's text: the rejected answers are read too."""

    streams_text = False

    def __init__(self, model: Any) -> None:
        self.model = model
        self.replies: list[str] = []
        self.compute_ms = 0.0

    async def ainvoke(self, *args: Any, **kwargs: Any) -> Any:
        msg = await self.model.ainvoke(*args, **kwargs)
        self.replies.append(str(msg.content))
        self.compute_ms += float((msg.response_metadata or {}).get("compute_ms") or 0.0)
        return msg


class CachedJudge:
    """`judge_output` once per distinct (worker, source, output): greedy decoding gives the same verdict,
    and the set-ups share many outputs (escalation on and off agree until an item escalates)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str, str], Judgement] = {}
        self.calls = 0
        self.compute_ms = 0.0

    async def __call__(self, binding: Any, model: Any, worker: Worker, source: str, output: str) -> Judgement:
        key = (worker.name, source, output)
        if key not in self.seen:
            got = await judge_output(binding, model, worker, source, output)
            self.calls += 1
            self.compute_ms += got.compute_ms
            self.seen[key] = got
        return self.seen[key]


def workers(escalate: bool) -> list[Worker]:
    chain: tuple[str, ...] = ("controller",) if escalate else ()
    return [
        summarize_worker(sentences=(2, 2), escalate_to=chain),
        style_worker(style="formal", escalate_to=chain),
    ]


def outcome(done: trial.ItemResult) -> dict[str, bool]:
    """How an item ended, as the tables read it. The trial's `escalated` is every item that went up the chain,
    valid or not: "rescued" (`escalated` here) is one made valid up there."""
    return {
        "valid_first": done.valid_first,
        "valid": done.valid,
        "escalated": done.escalated and done.valid,  # a valid final answer from an escalation slot
        "went_up": done.escalated,
    }


async def run(limit: int | None) -> dict[str, Any]:
    items = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()][:limit]
    scratch = Path(tempfile.mkdtemp(prefix="workers-text-"))
    orch = Orchestrator(
        settings=Settings.resolve(traces_path=scratch / "t.db", checkpoints_path=scratch / "c.db"),
        slots={
            "summarize": SlotConfig(model=SMALL, role="workhorse"),
            "style": SlotConfig(model=SMALL, role="workhorse"),
            "controller": SlotConfig(model=BIG, role="racehorse"),
        },
        tracing=False,
    )
    small, big = orch.model_for("summarize"), orch.model_for("controller")
    judge = CachedJudge()
    trial.judge_output = judge  # type: ignore[assignment]  # run_items judges through the cache
    # Escalation off is read from the escalating run, before its escalation step: decoding is greedy, so
    # the first answer and the repair are the same either way (checked: identical replies on text-01).
    setups = [("0.5B, escalation to 1.5B", SMALL, True), ("1.5B alone", BIG, False)]
    runs = []
    for label, model_name, escalate in setups:
        for worker in workers(escalate):
            binding = bind_slot(worker.slot, SlotConfig(model=model_name, role="workhorse"), orch._prices)
            recording = Recording(small if model_name == SMALL else big)
            above = Recording(big)  # the racehorse's replies when an item escalates
            chain = {"controller": (orch.slots["controller"], above)} if escalate else {}
            rows = []
            for item in items:
                recording.replies, recording.compute_ms, above.replies = [], 0.0, []
                t0 = time.perf_counter()
                [done] = await trial.run_items(
                    binding,
                    recording,
                    worker,
                    [item],
                    chain,
                    judge=(orch.slots["controller"], big),
                )
                rows.append(
                    {
                        "id": item["id"],
                        "kind": item["kind"],
                        "output": done.value,
                        "attempts": list(recording.replies),  # the model on trial's replies, in order
                        "escalation_replies": list(above.replies),
                        **outcome(done),
                        "own_compute_s": recording.compute_ms / 1000,
                        "error": done.error,
                        "compute_s": done.compute_ms / 1000,
                        "wall_s": time.perf_counter() - t0,
                        "judge_score": done.judge_score,
                        "judge_reason": done.judge_reason,
                    }
                )
                print(
                    f"{label} / {worker.name} / {item['id']}: valid {done.valid} esc {done.escalated} "
                    f"judge {done.judge_score}",
                    file=sys.stderr,
                    flush=True,
                )
            runs.append({"setup": label, "model": model_name, "worker": worker.name, "items": rows})
    orch.close()
    return {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "judge_calls": judge.calls,
        "judge_compute_s": judge.compute_ms / 1000,
        "runs": runs,
    }


async def judge_first_answers(report: dict[str, Any]) -> None:
    """Judge each run's first answer too, valid or not (`first_judge_score`): how the judge rates what the
    validators reject. Identical answers are judged once."""
    orch = Orchestrator(
        settings=Settings.resolve(traces_path=Path(tempfile.mkdtemp()) / "t.db"),
        slots={"controller": SlotConfig(model=BIG, role="racehorse")},
        tracing=False,
    )
    judge, big = CachedJudge(), orch.model_for("controller")
    sources = {json.loads(line)["id"]: json.loads(line)["input"] for line in DATA.read_text().splitlines()}
    for run in report["runs"]:
        worker = next(w for w in workers(False) if w.name == run["worker"])
        for row in run["items"]:
            if row["valid_first"] and row["judge_score"] is not None:  # the final answer: judged already
                row["first_judge_score"], row["first_judge_reason"] = row["judge_score"], row["judge_reason"]
            elif row["attempts"]:
                got = await judge(
                    orch.slots["controller"], big, worker, sources[row["id"]], row["attempts"][0]
                )
                row["first_judge_score"], row["first_judge_reason"] = got.score, got.reason
                print(
                    f"first answer / {run['setup']} / {worker.name} / {row['id']}: {got.score}",
                    file=sys.stderr,
                )
    report["first_judge_calls"], report["first_judge_compute_s"] = judge.calls, judge.compute_ms / 1000
    orch.close()


def figures(rows: list[dict[str, Any]], escalation: bool = True) -> dict[str, Any]:
    """A set-up's figures; `escalation=False` reads an escalating run as if it stopped after the repair."""
    n = len(rows)
    kept = rows if escalation else [r for r in rows if not r["escalated"]]
    scores = [r["judge_score"] for r in kept if r["judge_score"] is not None and r["valid"]]
    return {
        "valid_first": sum(r["valid_first"] for r in rows) / n,
        "valid": sum(r["valid"] for r in kept) / n,
        "went_up": sum(r["went_up"] for r in rows) / n if escalation else 0.0,
        "rescued": sum(r["escalated"] for r in rows) / n if escalation else 0.0,
        "judged": len(scores),
        "judge_mean": statistics.fmean(scores) if scores else None,
        "compute_s": statistics.fmean(r["compute_s" if escalation else "own_compute_s"] for r in rows),
        "first_judged": statistics.fmean(firsts) if (firsts := _firsts(rows)) else None,
    }


def _firsts(rows: list[dict[str, Any]]) -> list[int]:
    return [r["first_judge_score"] for r in rows if r.get("first_judge_score") is not None]


def markdown(report: dict[str, Any]) -> str:
    n = len(report["runs"][0]["items"])
    lines = [
        START,
        "## Summarize and style workers on 20 texts",
        "",
        f"`bench/workers_text.py`, {report['date']}, {report['machine']}. {n} texts of",
        "`bench/data/texts.jsonl` (customer emails, incident reports, product notes, meeting minutes, 107-122",
        "words, written for this benchmark). Workers: `summarize_worker(sentences=(2, 2))` and",
        '`style_worker(style="formal")`, run through the `orch trial` ladder (first answer, one repair, then',
        "escalation). Valid = passes the worker's validators (summarize: exactly 2 sentences, adds no number,",
        "date or capitalised name; style: not a copy, keeps every number, date and name, adds none). Judged =",
        "mean score 1-5 by the 1.5B (`orchestrator.evals.judge`) over the valid final outputs. Compute = local model",
        "seconds per item (escalations included, the judge not).",
        "",
        "Escalation off is the escalating run read up to its repair (greedy decoding: the first answer and",
        "the repair are the same either way). Escalated = items sent up to the 1.5B; rescued = those it",
        "made valid. Judged, first answers = the same judge on the model's first answer, valid or not",
        "(`--judge-first`): what it thinks of what the validators reject.",
        "",
        "| worker | set-up | valid, first answer | valid, final | escalated (rescued) | judged, final (items) | judged, first answers | compute s / item |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for run in report["runs"]:
        if run["model"] == SMALL:
            rows.append((run, "0.5B, escalation off", figures(run["items"], escalation=False)))
        rows.append((run, run["setup"], figures(run["items"])))
    for run, label, f in sorted(rows, key=lambda r: r[0]["worker"] != "summarize"):
        judged = "-" if f["judge_mean"] is None else f"{f['judge_mean']:.2f} ({f['judged']})"
        first = "-" if f["first_judged"] is None else f"{f['first_judged']:.2f}"
        lines.append(
            f"| {run['worker']} | {label} | {f['valid_first']:.0%} | {f['valid']:.0%} | "
            f"{f['went_up']:.0%} ({f['rescued']:.0%}) | {judged} | {first} | {f['compute_s']:.1f} |"
        )
    lines += [
        "",
        f"The judge made {report['judge_calls']} calls (one per distinct output), "
        f"{report['judge_compute_s']:.0f} s of compute in all, apart from the figures above.",
        *(
            [
                f"Judging the first answers took {report['first_judge_calls']} more calls, "
                f"{report['first_judge_compute_s']:.0f} s of compute."
            ]
            if "first_judge_calls" in report
            else []
        ),
        "Every item, with each attempt's raw reply and the judge's reason: `bench/results/workers-text.json`.",
        END,
    ]
    return "\n".join(lines)


def write_docs(section: str) -> None:
    splice(DOCS, section, START, END, "Benchmarks", before="## Notes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N texts")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--from-results", action="store_true", help="only rewrite the docs from the last run")
    parser.add_argument(
        "--judge-first", action="store_true", help="judge the last run's first answers too, valid or not"
    )
    args = parser.parse_args()
    if args.judge_first:
        report = json.loads(RESULTS.read_text())
        asyncio.run(judge_first_answers(report))
        RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    elif args.from_results:
        report = json.loads(RESULTS.read_text())
    else:
        report = asyncio.run(run(args.limit))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    section = markdown(report)
    print(section)
    if not args.no_docs:
        write_docs(section)


if __name__ == "__main__":
    main()
