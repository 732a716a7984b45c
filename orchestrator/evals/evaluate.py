"""Task evaluation: labelled tasks through any graph; right or wrong, steps, time, tokens, cost, grounding.

A task file is JSON Lines, one task per line:

    {"input": "Convert 72 F to Celsius", "expect": ["22.2"], "expect_all": [], "forbid": ["card_arrival"]}

`expect` is any-of, `expect_all` all-of, `forbid` none-of (optional keys `id` and `category` label the
report). Text matches case-insensitively. A number matches as a number: `22` does not match `122`, and
`7,006,652` matches `7006652`; an expected number written with d decimals matches an answer number that
rounds to it at d decimals (`22.2` matches 22.22). An expected ISO date matches that date in any written form.

The ungrounded steps of each run are counted from its spans with the checks of
`orchestrator.workers.grounding`:
tool arguments and worker inputs that neither the request nor an earlier observation gives, and numbers in
the answer that nothing supports. The eval records content on its runs' spans to read them.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError, unreadable
from orchestrator.evals.fanout import check_workers, fan_out, project_orchestrator, project_root
from orchestrator.tracing import attrs as A
from orchestrator.tracing.store import TraceStore, decode_attributes
from orchestrator.workers.grounding import (
    Evidence,
    check_answer,
    check_tool_args,
    check_worker_input,
    decimals_of,
    find_dates,
    normalize,
    split_values,
)

if TYPE_CHECKING:
    from orchestrator.config import Settings
    from orchestrator.run.events import RunResult
    from orchestrator.run.orchestrator import Orchestrator
    from orchestrator.toolsets.catalog import Catalog

__all__ = [
    "EvalJob",
    "EvalReport",
    "Task",
    "TaskResult",
    "evaluate",
    "load_tasks",
    "matches",
    "run_task",
    "score",
    "steps_and_grounding",
]

_NUMBER_ITEM = re.compile(r"^[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?$|^[-+]?\.\d+%?$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Task:
    """One labelled task."""

    input: str
    expect: tuple[str, ...] = ()
    expect_all: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()
    id: str = ""
    category: str = ""


def load_tasks(path: str | Path) -> list[Task]:
    """Read a JSON Lines task file; an error names the line and the fix."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()  # -sig: an editor's BOM is no error
    except FileNotFoundError:
        raise ConfigError(f"task file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"task file {str(p)!r} cannot be read: {unreadable(exc)}") from None
    tasks: list[Task] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:  # a number too long to convert, or too deep a nesting
            raise ConfigError(f"{where}: not valid JSON ({unreadable(exc)})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: a task must be a JSON object, got {type(raw).__name__}")
        text = raw.get("input")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f'{where}: "input" must be a non-empty string')
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("expect", "expect_all", "forbid"):
            value = raw.get(key, [])
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                value = [value]
            if not isinstance(value, list) or not all(
                isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
            ):
                raise ConfigError(f'{where}: "{key}" must be a list of strings or numbers')
            lists[key] = tuple(str(v) for v in value)
        if not lists["expect"] and not lists["expect_all"]:
            raise ConfigError(f'{where}: a task needs "expect" (any of) or "expect_all" (all of)')
        tasks.append(
            Task(
                input=text,
                id=str(raw.get("id") or f"{p.stem}-{number}"),
                category=str(raw.get("category") or ""),
                **lists,
            )
        )
    if not tasks:
        raise ConfigError(f"task file {str(p)!r} holds no tasks")
    return tasks


def matches(answer: str, item: str) -> bool:
    """Does the answer contain `item` (a text, a number or an ISO date)?"""
    item = item.strip()
    if _NUMBER_ITEM.match(item):
        raw = item.rstrip("%").replace(",", "").replace("−", "-").lstrip("+")
        expected, places = float(raw), decimals_of(raw)
        tolerance = 0.5 * 10**-places + 1e-9 * max(1.0, abs(expected))
        return any(abs(v - expected) <= tolerance for v, _ in split_values(answer)[1])
    if _ISO_DATE.match(item) and any(d.isoformat() == item for d, _ in find_dates(answer)):
        return True
    return normalize(item) in normalize(answer)


@dataclass(frozen=True)
class Verdict:
    """Right or wrong, and why."""

    ok: bool
    missing: list[str]
    forbidden: list[str]


def score(answer: str | None, task: Task) -> Verdict:
    """Judge an answer against a task's expect / expect_all / forbid lists."""
    text = answer or ""
    missing = [i for i in task.expect_all if not matches(text, i)]
    if task.expect and not any(matches(text, i) for i in task.expect):
        missing.append("any of: " + " | ".join(task.expect))
    forbidden = [i for i in task.forbid if matches(text, i)]
    return Verdict(ok=bool(answer) and not missing and not forbidden, missing=missing, forbidden=forbidden)


@dataclass
class TaskResult:
    """One task's outcome."""

    id: str
    category: str
    input: str
    ok: bool
    status: str
    answer: str | None
    missing: list[str]
    forbidden: list[str]
    steps: list[str]
    ungrounded: list[str]
    seconds: float
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    run_id: str
    error: str | None = None


@dataclass
class EvalReport:
    """Per task and in total."""

    graph: str
    tasks: list[TaskResult] = field(default_factory=list)

    def totals(self, results: Sequence[TaskResult] | None = None) -> dict[str, Any]:
        """Right, share, median time, mean steps, tokens, cost and ungrounded steps over some results."""
        rows = list(self.tasks if results is None else results)
        costs = [r.cost_usd for r in rows]
        return {
            "tasks": len(rows),
            "right": sum(r.ok for r in rows),
            "accuracy": (sum(r.ok for r in rows) / len(rows)) if rows else None,
            "median_s": statistics.median(r.seconds for r in rows) if rows else None,
            "mean_steps": (sum(len(r.steps) for r in rows) / len(rows)) if rows else None,
            "input_tokens": sum(r.input_tokens for r in rows),
            "output_tokens": sum(r.output_tokens for r in rows),
            "cost_usd": None if any(c is None for c in costs) else sum(c for c in costs if c is not None),
            "ungrounded_steps": sum(len(r.ungrounded) for r in rows),
            "failed_runs": sum(r.status == "failed" for r in rows),
        }

    def by_category(self) -> dict[str, dict[str, Any]]:
        """Totals per task category, in first-seen order."""
        cats: dict[str, list[TaskResult]] = {}
        for r in self.tasks:
            cats.setdefault(r.category or "-", []).append(r)
        return {c: self.totals(rs) for c, rs in cats.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "total": self.totals(),
            "by_category": self.by_category(),
            "tasks": [asdict(t) for t in self.tasks],
        }


def steps_and_grounding(
    store: TraceStore, catalog: Catalog, run_id: str, request: str, answer: str | None
) -> tuple[list[str], list[str]]:
    """The steps a run took (its node spans) and its ungrounded steps, read back from the trace store."""
    rows = store.run_spans(run_id)
    steps: list[str] = []
    problems: list[str] = []
    evidence = Evidence(request)
    for row in rows:
        attributes = decode_attributes(row)
        if row["kind"] == "node":
            label = str(row["node"])
            if row["action"]:
                label += f":{row['action']}"
            elif attributes.get(A.AGENT_NAME) and attributes[A.AGENT_NAME] != label:
                label += f":{attributes[A.AGENT_NAME]}"
            steps.append(label)
        if row["kind"] == "tool":
            name = str(row["tool"])
            if steps and steps[-1] == "call_tool":
                steps[-1] = f"call_tool:{name}"
            raw_args = attributes.get(A.TOOL_ARGS)
            if raw_args is not None:
                try:
                    args = json.loads(raw_args)
                except json.JSONDecodeError:
                    args = {}
                parameters = catalog.get(name).parameters if name in catalog else {}
                if isinstance(args, Mapping):
                    problems += [f"{name}: {p}" for p in check_tool_args(args, parameters, evidence)]
            if row["status"] != "error" and attributes.get(A.TOOL_RESULT) is not None:
                evidence.add(str(attributes[A.TOOL_RESULT]))
        if row["kind"] == "node" and A.WORKER_INPUT in attributes:
            worker = attributes.get(A.AGENT_NAME, "worker")
            problems += [
                f"{worker}: {p}" for p in check_worker_input(str(attributes[A.WORKER_INPUT]), evidence)
            ]
            if A.WORKER_OUTPUT in attributes:
                evidence.add(str(attributes[A.WORKER_OUTPUT]))
    if answer:
        problems += [f"answer: {p}" for p in check_answer(answer, evidence)]
    return steps, problems


async def evaluate(
    orch: Orchestrator,
    graph: str,
    tasks: Sequence[Task],
    *,
    on_result: Callable[[TaskResult], None] | None = None,
    workers: int = 1,
    fleet: bool = False,
) -> EvalReport:
    """Run each task through `graph` and score it: one after another, or in `workers` worker processes.

    With `workers` above 1 the tasks run in that many worker processes (`orchestrator.evals.fanout`), each
    with its own Orchestrator built from `orch`'s project and settings (models given in code are not carried
    over: build `orch` with `Orchestrator.from_project`). The report is the serial one: tasks in input order;
    `on_result` sees each as it finishes. A task whose worker process died twice is a failed task.

    With `fleet`, each task is a run submitted to the fleet's queue (`Orchestrator.submit`; docs/deploy.md)
    and run by `orch worker` processes; the steps and grounding are read from the runs' spans, so the workers
    must trace into the same store as `orch` (one PostgreSQL trace store, or one file on one machine).

    Example:
        >>> tasks = load_tasks("bench/tasks/dev.jsonl")                        # doctest: +SKIP
        >>> report = await evaluate(orch, "assistant", tasks)                  # doctest: +SKIP
        >>> report.totals()["accuracy"]                                         # doctest: +SKIP
        0.92
    """
    check_workers(workers)
    if orch.store is None:
        raise ConfigError("evaluation reads each run's spans: create the Orchestrator with tracing on")
    if not orch.settings.capture_content:
        raise ConfigError(
            "evaluation checks the arguments and answers recorded on spans: create the Orchestrator with "
            "Settings(capture_content=True)"
        )
    report = EvalReport(graph=graph)
    if fleet:
        if workers > 1:
            raise ConfigError("give either workers (local processes) or fleet (the fleet's queue), not both")
        report.tasks = await _on_fleet(orch, graph, tasks, on_result)
        return report
    if workers > 1:
        job = EvalJob(str(project_root(orch)), orch.settings, graph)
        async with orch.checkpoints.open():  # its tables made here, not by several workers at once
            pass
        report.tasks = await fan_out(
            job,
            tasks,
            workers,
            failed=_failed_task,
            on_result=None if on_result is None else lambda _index, result: on_result(result),
        )
        return report
    for task in tasks:
        outcome = await run_task(orch, graph, task)
        report.tasks.append(outcome)
        if on_result is not None:
            on_result(outcome)
    return report


async def run_task(orch: Orchestrator, graph: str, task: Task) -> TaskResult:
    """One task through `graph` (a run of its own), scored, its steps and grounding read from its spans."""
    run_id = f"eval-{uuid.uuid4().hex[:12]}"
    t0 = time.perf_counter()
    result = await orch.arun(graph, task.input, run_id=run_id)
    return scored(orch, task, run_id, result, time.perf_counter() - t0)


async def _on_fleet(
    orch: Orchestrator, graph: str, tasks: Sequence[Task], on_result: Callable[[TaskResult], None] | None
) -> list[TaskResult]:
    """Every task submitted to the fleet's queue at once (its workers choose how many run together), each
    scored as it ends; the results in the tasks' order."""
    run_ids = [f"eval-{uuid.uuid4().hex[:12]}" for _ in tasks]
    started = []
    for task, run_id in zip(tasks, run_ids, strict=True):
        started.append(time.perf_counter())
        # the workers record the arguments and answers on spans, as this evaluation needs (run/jobs.py)
        await orch.submit(graph, task.input, run_id=run_id, capture_content=True)

    async def one(i: int) -> TaskResult:
        result = await orch.wait(run_ids[i])
        outcome = scored(orch, tasks[i], run_ids[i], result, time.perf_counter() - started[i])
        if on_result is not None:
            on_result(outcome)
        return outcome

    return list(await asyncio.gather(*(one(i) for i in range(len(tasks)))))


def scored(orch: Orchestrator, task: Task, run_id: str, result: RunResult, seconds: float) -> TaskResult:
    """A task's result from its run's: its answer scored, its steps and grounding read from its spans."""
    assert orch.store is not None  # evaluate() checked it
    verdict = score(result.answer if result.status != "failed" else None, task)
    steps, ungrounded = steps_and_grounding(orch.store, orch.catalog, run_id, task.input, result.answer)
    return TaskResult(
        id=task.id,
        category=task.category,
        input=task.input,
        ok=verdict.ok,
        status=result.status,
        answer=result.answer,
        missing=verdict.missing,
        forbidden=verdict.forbidden,
        steps=steps,
        ungrounded=ungrounded,
        seconds=seconds,
        input_tokens=result.ledger.input_tokens,
        output_tokens=result.ledger.output_tokens,
        cost_usd=result.ledger.cost_usd,
        run_id=run_id,
        error=result.error,
    )


@dataclass(frozen=True)
class EvalJob:
    """One task run in a worker process (`evals.fanout`): the project's Orchestrator, built once per process
    with these settings, runs it through `graph`. Picklable; so is its result."""

    project: str
    settings: Settings
    graph: str

    def __call__(self, task: Task) -> TaskResult:
        from orchestrator.sync import run_blocking

        orch = project_orchestrator(self.project, self.settings)
        return run_blocking(lambda: run_task(orch, self.graph, task))


def _failed_task(task: Task, reason: str) -> TaskResult:
    """A task whose worker process died twice: failed, with why (what its runs spent is in their traces)."""
    verdict = score(None, task)
    return TaskResult(
        id=task.id,
        category=task.category,
        input=task.input,
        ok=False,
        status="failed",
        answer=None,
        missing=verdict.missing,
        forbidden=verdict.forbidden,
        steps=[],
        ungrounded=[],
        seconds=0.0,
        input_tokens=0,
        output_tokens=0,
        cost_usd=None,
        run_id="",
        error=reason,
    )
