"""The task eval with the controller on llama-cpp-python's own OpenAI-compatible server.

Starts `python -m llama_cpp.server` on loopback with the local racehorse model (Qwen2.5-1.5B), binds the
`controller` slot to it as `openai-compat:` (as a user pointing a slot at their own server would), keeps the
workers on the in-process local model, and runs the development set through the `assistant` graph. The
report goes to bench/results/eval-server-<set>.json and a section of docs/benchmarks.md, beside the
in-process figure.

Run: `.venv/bin/python bench/server_eval.py [dev|heldout] [--limit N]`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.markers import splice as splice_doc  # noqa: E402
from orchestrator import Orchestrator, Settings, SlotConfig, load_manifest  # noqa: E402
from orchestrator.config import PriceOverride  # noqa: E402
from orchestrator.evals.evaluate import EvalReport, TaskResult, evaluate, load_tasks  # noqa: E402
from orchestrator.testing import serve_llama  # noqa: E402

SETS = {"dev": ROOT / "bench" / "tasks" / "dev.jsonl", "heldout": ROOT / "bench" / "tasks" / "heldout.jsonl"}
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- server-eval:start -->", "<!-- server-eval:end -->"
# In effect no run deadline, as in the in-process eval (all local: none). The server is the same local model
# on loopback, so the deadline a network model gets by default (120 s) would only measure how busy the machine
# is: on a shared 2-core machine it stopped runs mid-task. The slot's call timeout still bounds each call.
DEADLINE_S = 3600.0


def orchestrator(url: str, tmp: Path) -> Orchestrator:
    """The project with its `controller` slot on the server at `url`, stores in `tmp`."""
    settings = dataclasses.replace(
        Settings.resolve(None),
        traces_path=tmp / "traces.db",
        checkpoints_path=tmp / "checkpoints.db",
        capture_content=True,
    )
    controller = SlotConfig(
        model="openai-compat:qwen2.5-1.5b",
        base_url=url,
        role="racehorse",
        prices=PriceOverride(input=0.0, output=0.0),
        timeout_s=300,
    )
    limits = load_manifest(ROOT).limits.model_copy(update={"deadline_s": DEADLINE_S})
    return Orchestrator.from_project(ROOT, settings=settings, slots={"controller": controller}, limits=limits)


async def run(name: str, url: str, limit: int | None) -> EvalReport:
    with tempfile.TemporaryDirectory() as tmp:
        orch = orchestrator(url, Path(tmp))
        for slot in orch.slots:
            orch.model_for(slot)
        tasks = load_tasks(SETS[name])[:limit]

        def show(r: TaskResult) -> None:
            mark = "right" if r.ok else "WRONG"
            print(f"{mark:5} {r.id:10} {r.category:16} {r.seconds:5.1f}s  {str(r.answer)[:90]}", flush=True)

        report = await evaluate(orch, "assistant", tasks, on_result=show)
        orch.close()
        return report


def main() -> None:
    name = next((a for a in sys.argv[1:] if a in SETS), "dev")
    limit = int(sys.argv[sys.argv.index("--limit") + 1]) if "--limit" in sys.argv else None
    with serve_llama("qwen2.5-1.5b") as url:
        report = asyncio.run(run(name, url, limit))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"eval-server-{name}.json").write_text(
        json.dumps(report.to_dict(), indent=1, default=str) + "\n"
    )
    t = report.totals()
    print(json.dumps(t, indent=1))
    if limit is None:
        splice(name, t)


def splice(name: str, t: dict[str, object]) -> None:
    inproc = RESULTS / f"eval-{name}.json"
    beside = ""
    if inproc.exists():
        saved = json.loads(inproc.read_text())
        rep = EvalReport(graph=saved["graph"], tasks=[TaskResult(**x) for x in saved["tasks"]]).totals()
        beside = f"| in process (`local:qwen2.5-1.5b`) | {rep['right']}/{rep['tasks']} | {rep['accuracy']:.0%} | {rep['median_s']:.1f} s | {rep['ungrounded_steps']} |"
    lines = [
        START,
        "## Task eval with the controller on llama-cpp-python's server",
        "",
        f"`bench/server_eval.py {name}`, {dt.date.today().isoformat()}: the `assistant` graph with its `controller` slot bound",
        "to `python -m llama_cpp.server` on loopback (Qwen2.5-1.5B, `openai-compat:`), workers in process on the 0.5B",
        "model. The server ignores a required tool choice and refuses `json_schema` response formats: after its",
        "first call, decisions are asked the JSON-schema way and go down to a forced tool (docs/providers.md).",
        "The in-process figure is the last `bench/eval.py` run's.",
        "",
        "| controller | right | accuracy | median time | ungrounded |",
        "|---|---|---|---|---|",
        f"| llama-cpp-python server | {t['right']}/{t['tasks']} | {float(t['accuracy'] or 0):.0%} | {float(t['median_s']):.1f} s | {t['ungrounded_steps']} |",
        *([beside] if beside else []),
        "",
        END,
    ]
    splice_doc(ROOT / "docs" / "benchmarks.md", "\n".join(lines), START, END, "Benchmarks", before="## Notes")


if __name__ == "__main__":
    main()
