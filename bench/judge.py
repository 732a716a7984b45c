"""The judge's calibration on local models: its separation (AUC) of known-good from known-bad outputs.

    .venv/bin/python bench/judge.py [--models local:qwen2.5-1.5b local:qwen2.5-0.5b] [--limit N]

For each judge model, `orchestrator.evals.calibrate.calibrate` (what `orch trial --judge` runs before it
trusts a judge) on two sets: the shipped calibration set (`orchestrator/data/judge-calibration.jsonl`, the
20 texts of bench/data/texts.jsonl, each with a hand-written good 2-sentence summary and formal rewrite),
on which the judge's prompt was chosen; and the held-out set (`bench/data/judge-heldout.jsonl`, 6 more texts
written the same way), never used to choose or change anything: only reported. From each good output code
makes four known-bad ones (`orchestrator.evals.variants`). AUC: the probability that a good output scores
above a bad one, ties counting half; `orch trial` refuses a judge below 0.9.

Writes every score to `bench/results/judge.json` (one entry per model, kept for models not run this time)
and the markdown section to `bench/results/judge.md` (docs/benchmarks.md takes it from there).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.markers import machine  # noqa: E402
from orchestrator import Orchestrator, Settings, SlotConfig  # noqa: E402
from orchestrator.evals.calibrate import MIN_AUC, calibrate, load_calibration  # noqa: E402
from orchestrator.evals.judge import JUDGE_QUESTIONS, judge_digest  # noqa: E402
from orchestrator.evals.variants import BAD_KINDS  # noqa: E402

SETS = {
    "calibration": ROOT / "orchestrator" / "data" / "judge-calibration.jsonl",
    "held-out": ROOT / "bench" / "data" / "judge-heldout.jsonl",
}
RESULTS = ROOT / "bench" / "results" / "judge.json"
MARKDOWN = ROOT / "bench" / "results" / "judge.md"
MODELS = ("local:qwen2.5-1.5b", "local:qwen2.5-0.5b")


async def run(model_name: str, limit: int | None) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="judge-bench-"))
    orch = Orchestrator(
        settings=Settings.resolve(traces_path=scratch / "t.db", checkpoints_path=scratch / "c.db"),
        slots={"controller": SlotConfig(model=model_name, role="racehorse")},
        tracing=False,
    )
    out: dict[str, Any] = {"model": model_name, "sets": {}}
    try:
        binding, model = orch.slots["controller"], orch.model_for("controller")
        for name, path in SETS.items():
            items, digest = load_calibration(path)
            items = items[:limit] if limit else items

            def step(done: int, total: int, name: str = name) -> None:
                if done % 20 == 0 or done == total:
                    print(f"  {model_name} {name}: {done}/{total}", file=sys.stderr, flush=True)

            cal = await calibrate(
                binding, model, items, data=str(path.relative_to(ROOT)), data_digest=digest, on_output=step
            )
            out["sets"][name] = cal.to_dict()
            print(f"{model_name} {name}: AUC {cal.auc:.3f} in {cal.wall_s / 60:.1f} min", file=sys.stderr)
    finally:
        orch.close()
    return out


def markdown(results: dict[str, Any], date: str, where: str) -> str:
    kinds = " | ".join(k.replace("_", " ") for k in BAD_KINDS)
    lines = [
        "## Judge calibration",
        "",
        f"Measured {date} on {where} (shared with other jobs), by `bench/judge.py`. Before `orch trial "
        "--judge` reports a judged figure it scores known-good and known-bad outputs with the judge and refuses "
        f"a judge whose AUC is below {MIN_AUC} (`orchestrator/evals/calibrate.py`). Good outputs: a "
        "2-sentence summary and a formal rewrite of each text, written by hand; bad ones made from them by "
        "code: a number changed, a clause with a number the source lacks, a copy of the source, the wrong "
        "length (a summary of 5 sentences, a rewrite cut to its first sentence). The judge answers "
        f"{len(JUDGE_QUESTIONS)} yes/no questions about each output (one call each, under a grammar; "
        "`orchestrator/evals/judge.py`): "
        + "; ".join(f'"{q}"' for _, q in JUDGE_QUESTIONS)
        + ". Each answer's margin (the log-probability lead of its answer over the other) is its log-odds of "
        f"yes; the score is 1 + 4 sigmoid(mean log-odds). Judge prompt `{judge_digest()}`.",
        "",
        "The calibration set (20 texts, 40 good and 160 bad outputs) is the one the judge's prompt was chosen "
        "on (its texts 1-8: `bench/judge_designs.py`, below); the held-out set (6 texts, 12 good and 48 "
        "bad outputs, written with it) was never used to choose or change anything: only reported. AUC: the "
        "probability that a good output scores above a bad one, ties counting half (0.5 is no separation).",
        "",
        f"| judge | set | AUC | {kinds} | summaries / rewrites | mean good | mean bad | good / bad | unjudged "
        "| minutes |",
        "|---|---|---|" + "---|" * len(BAD_KINDS) + "---|---|---|---|---|---|",
    ]
    for model, entry in results.items():
        for name, cal in entry["sets"].items():
            per = " | ".join(f"{cal['auc_by_kind'][k]:.3f}" for k in BAD_KINDS)
            split = " / ".join(f"{by_worker(cal['scores'], w):.3f}" for w in ("summarize", "style"))
            lines.append(
                f"| {model} | {name} | **{cal['auc']:.3f}** | {per} | {split} | {cal['mean_good']:.2f} | "
                f"{cal['mean_bad']:.2f} | {cal['goods']} / {cal['bads']} | {cal['unjudged']} | "
                f"{cal['wall_s'] / 60:.1f} |"
            )
    lines += designs()
    verdicts = []
    for model, entry in results.items():
        cal = entry["sets"].get("calibration")
        if cal is not None:
            word = "passes" if cal["auc"] >= MIN_AUC else "is refused"
            verdicts.append(f"{model} {word} (AUC {cal['auc']:.3f} on the calibration set)")
    unseen = []  # the calibration texts the design exploration never read
    for model, entry in results.items():
        cal = entry["sets"].get("calibration")
        if cal is not None:
            rows = [r for r in cal["scores"] if int(r["id"].rsplit("-", 1)[1]) > EXPLORED]
            unseen.append(f"{model} {by_kind(rows):.3f}")
    lines += ["", f"As a judge, {'; '.join(verdicts)}." if verdicts else ""]
    if unseen:
        lines[-1] += (
            f" AUC on the calibration texts the design exploration never read (texts {EXPLORED + 1}-20): "
            + "; ".join(unseen)
            + "."
        )
    return "\n".join(lines).rstrip() + "\n"


DESIGNS = {  # bench/judge_designs.py's runs: which questions, on which calibration texts
    "negative": "texts 1-3 (6 good, 24 bad outputs); targeted questions where no means good",
    "positive": "texts 4-8 (10 good, 40 bad outputs); targeted questions where yes means good",
}
DESIGN_NAMES = {
    "digit_argmax": "one 1-5 grade (the old judge's rubric), the digit it picks",
    "digit_expected": "one 1-5 grade, expected from its digit probabilities",
    "ok": "one overall question (yes = good), its log-odds",
    "targeted_sum": "the four targeted questions, log-odds summed",
    "targeted_p": "the four targeted questions, P(good answer) summed",
    "targeted_min": "the four targeted questions, the least sure",
}


def by_worker(scores: list[dict[str, Any]], worker: str) -> float:
    """The AUC over one worker's outputs (from the saved scores: the results of a run before
    `Calibration.auc_by_worker` have them too)."""
    from orchestrator.evals.calibrate import UNJUDGED_SCORE
    from orchestrator.toolsets.retrieval.evaluate import auc

    mine = [
        (r["kind"], UNJUDGED_SCORE if r["score"] is None else r["score"])
        for r in scores
        if r["worker"] == worker
    ]
    return auc([s for k, s in mine if k == "good"], [s for k, s in mine if k != "good"])


EXPLORED = 8  # bench/judge_designs.py read calibration texts 1-8


def by_kind(scores: list[dict[str, Any]]) -> float:
    """The AUC of good over bad among `scores`."""
    from orchestrator.evals.calibrate import UNJUDGED_SCORE
    from orchestrator.toolsets.retrieval.evaluate import auc

    mine = [(r["kind"], UNJUDGED_SCORE if r["score"] is None else r["score"]) for r in scores]
    return auc([s for k, s in mine if k == "good"], [s for k, s in mine if k != "good"])


def designs() -> list[str]:
    """The design exploration's AUCs (bench/judge_designs.py), from its saved rows."""
    from orchestrator.toolsets.retrieval.evaluate import auc

    lines = [
        "",
        "How the design was chosen (`bench/judge_designs.py`, local:qwen2.5-1.5b, on calibration texts only: "
        "the next-token log-probabilities after each prompt, no generation; the held-out set never read):",
        "",
        f"| run | design | AUC | {' | '.join(k.replace('_', ' ') for k in BAD_KINDS)} |",
        "|---|---|---|" + "---|" * len(BAD_KINDS),
    ]
    for name, what in DESIGNS.items():
        path = ROOT / "bench" / "results" / f"judge-designs-{name}.json"
        if not path.exists():
            continue
        rows = json.loads(path.read_text())
        for key, label in DESIGN_NAMES.items():
            goods = [r[key] for r in rows if r["kind"] == "good"]
            per = [auc(goods, [r[key] for r in rows if r["kind"] == k]) for k in BAD_KINDS]
            overall = auc(goods, [r[key] for r in rows if r["kind"] != "good"])
            cells = " | ".join(f"{a:.2f}" for a in per)
            lines.append(f"| {what} | {label} | {overall:.2f} | {cells} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS[:1]))
    parser.add_argument("--limit", type=int, help="only the first N items of each set (a trial run)")
    args = parser.parse_args()
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() and not args.limit else {}
    results: dict[str, Any] = previous.get("models", {})
    text = ""
    for model in args.models:
        results[model] = asyncio.run(run(model, args.limit))
        date = dt.date.today().isoformat()
        where = machine()
        text = markdown(results, date, where)
        if not args.limit:  # after each model: a later model's failure keeps the earlier ones' figures
            record = {"date": date, "machine": where, "judge_prompt": judge_digest(), "models": results}
            RESULTS.write_text(json.dumps(record, indent=1) + "\n")
            MARKDOWN.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
