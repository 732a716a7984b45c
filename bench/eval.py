"""The task eval on the local default: the development set and its held-out part, into docs/benchmarks.md.

`bench/tasks/dev.jsonl` is the set mechanisms were measured on; `bench/tasks/heldout.jsonl` was written
apart and is never tuned on: it is only run here. Both run through the project's `assistant` graph on the
models the manifest binds (the local default), one task after another in one process, after the models
are loaded. Reports go to bench/results/eval-<set>.json and a section of docs/benchmarks.md.

Run: `.venv/bin/python bench/eval.py [dev|heldout ...]` (default: both); `--rewrite DATE` renders the
docs section again from the saved reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.markers import splice as splice_doc  # noqa: E402
from orchestrator import Orchestrator, Settings  # noqa: E402
from orchestrator.evals.evaluate import EvalReport, TaskResult, evaluate, load_tasks  # noqa: E402

SETS = {"dev": ROOT / "bench" / "tasks" / "dev.jsonl", "heldout": ROOT / "bench" / "tasks" / "heldout.jsonl"}
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- eval:start -->", "<!-- eval:end -->"


async def run(names: list[str]) -> dict[str, EvalReport]:
    reports: dict[str, EvalReport] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = dataclasses.replace(
            Settings.resolve(None),
            traces_path=Path(tmp) / "traces.db",
            checkpoints_path=Path(tmp) / "checkpoints.db",
            capture_content=True,
        )
        orch = Orchestrator.from_project(ROOT, settings=settings)
        for slot in orch.slots:
            orch.model_for(slot)  # load (and build) the models before the clock starts
        for name in names:
            tasks = load_tasks(SETS[name])
            t0 = time.perf_counter()

            def show(r: TaskResult) -> None:
                mark = "right" if r.ok else "WRONG"
                print(
                    f"{mark:5} {r.id:10} {r.category:16} {r.seconds:5.1f}s  {str(r.answer)[:90]}", flush=True
                )

            reports[name] = await evaluate(orch, "assistant", tasks, on_result=show)
            print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
        orch.close()
    return reports


def section(reports: dict[str, EvalReport], when: str) -> list[str]:
    lines = [
        "## Task eval on the local default",
        "",
        f"`bench/eval.py`, {when}: the `assistant` graph with `local:qwen2.5-1.5b` as controller and",
        "`local:qwen2.5-0.5b` as workers, one task after another in one process after the models loaded.",
        "A task is right when its answer meets `expect` / `expect_all` / `forbid` (see `orch eval --help`);",
        "ungrounded steps are counted from each run's spans. The held-out set was written apart and never",
        "tuned on.",
        "",
        "| set | tasks | right | accuracy | goal >= 90 % | median time | goal <= 12 s | mean steps | ungrounded | goal 0 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, report in reports.items():
        t = report.totals()
        acc = t["accuracy"] or 0.0
        lines.append(
            f"| {name} | {t['tasks']} | {t['right']} | {acc:.0%} | {'met' if acc >= 0.9 else 'missed'} | "
            f"{t['median_s']:.1f} s | {'met' if t['median_s'] <= 12 else 'missed'} | {t['mean_steps']:.1f} | "
            f"{t['ungrounded_steps']} | {'met' if t['ungrounded_steps'] == 0 else 'missed'} |"
        )
    lines += ["", "Per category (right / tasks, median time):", ""]
    cats: dict[str, dict[str, Any]] = {}
    for name, report in reports.items():
        for cat, c in report.by_category().items():
            cats.setdefault(cat, {})[name] = c
    names = list(reports)
    lines += ["| category | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cat, per in cats.items():
        cells = [
            f"{per[n]['right']}/{per[n]['tasks']}, {per[n]['median_s']:.1f} s" if n in per else "-"
            for n in names
        ]
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    # Only the development set's misses are listed: the held-out answers stay unread, so no one tunes on them.
    wrong = [(n, t) for n, r in reports.items() for t in r.tasks if not t.ok and n != "heldout"]
    if wrong:
        lines += ["", "Wrong answers on the development set:", ""]
        for n, t in wrong:
            answer = " ".join(str(t.answer).split())[:120].replace("|", "/")
            lines.append(f"- {n} {t.id} ({t.category}): {answer}")
    return [*lines, ""]


def splice(lines: list[str]) -> None:
    """Write the section between its markers in docs/benchmarks.md (new: before the Notes)."""
    block = "\n".join([START, *lines, END])
    splice_doc(ROOT / "docs" / "benchmarks.md", block, START, END, "Benchmarks", before="## Notes")


def load_report(path: Path) -> EvalReport:
    """A report saved by an earlier run (bench/results/eval-<set>.json)."""
    data = json.loads(path.read_text())
    return EvalReport(graph=data["graph"], tasks=[TaskResult(**t) for t in data["tasks"]])


def main() -> None:
    names = [a for a in sys.argv[1:] if a in SETS] or list(SETS)
    if "--rewrite" in sys.argv:  # render the docs section again from the saved reports, without running
        saved = {n: load_report(RESULTS / f"eval-{n}.json") for n in names}
        splice(section(saved, sys.argv[sys.argv.index("--rewrite") + 1]))
        return
    reports = asyncio.run(run(names))
    RESULTS.mkdir(exist_ok=True)
    for name, report in reports.items():
        (RESULTS / f"eval-{name}.json").write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n")
    lines = section(reports, dt.date.today().isoformat())
    print("\n".join(lines))
    if set(names) == set(SETS):
        splice(lines)


if __name__ == "__main__":
    main()
