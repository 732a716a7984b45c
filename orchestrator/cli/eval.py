"""`orch eval`: labelled tasks through a graph; right or wrong, steps, time and cost per task."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from orchestrator.cli import console
from orchestrator.cli.args import fraction_0_1, non_empty_str, positive_int
from orchestrator.cli.common import EXIT_FAILED, EXIT_OK, Subparsers, add_workers
from orchestrator.cli.console import as_line, as_text
from orchestrator.config import Settings, load_manifest
from orchestrator.formats import format_usd


def register(subparsers: Subparsers) -> None:
    """Add the command's parser; its handler is `args.func`."""
    ev = subparsers.add_parser(
        "eval", help="run labelled tasks through a graph: right or wrong, steps, time, cost"
    )
    ev.add_argument(
        "graph", nargs="?", type=non_empty_str, help="graph name (default: the manifest's default_graph)"
    )
    ev.add_argument(
        "--data",
        required=True,
        type=non_empty_str,
        metavar="FILE",
        help="tasks, JSON Lines: input, expect, ...",
    )
    ev.add_argument("--limit", type=positive_int, help="only the first N tasks")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    add_workers(ev, "tasks")
    ev.add_argument(
        "--fleet",
        action="store_true",
        help="submit every task to the fleet's queue, for `orch worker` processes to run (docs/deploy.md); "
        "the workers must trace into the same store as this command",
    )
    ev.add_argument(
        "--min-accuracy", type=fraction_0_1, metavar="SHARE", help="exit 1 below this share (0-1)"
    )
    ev.add_argument(
        "--traces", type=non_empty_str, help="trace store path (default: $ORCH_TRACES or the user data dir)"
    )
    ev.add_argument(
        "--checkpoints",
        type=non_empty_str,
        help="SQLite path or postgresql:// URL (default: $ORCH_CHECKPOINTS)",
    )
    ev.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestrator.evals.evaluate import TaskResult, evaluate, load_tasks
    from orchestrator.run.orchestrator import Orchestrator
    from orchestrator.sync import run_blocking

    tasks = load_tasks(args.data)
    if args.limit is not None:
        tasks = tasks[: args.limit]
    settings = Settings.resolve(
        load_manifest(args.project),
        traces_path=args.traces,
        checkpoints_path=args.checkpoints,
    )
    orch = Orchestrator.from_project(
        args.project, settings=dataclasses.replace(settings, capture_content=True)
    )
    graph = args.graph or orch.manifest.default_graph or ""
    progress = Progress(
        TextColumn("[bold]eval[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[right]} right"),
        TimeElapsedColumn(),
        console=console.err,
        transient=True,
        disable=args.json,
    )
    bar = progress.add_task("eval", total=len(tasks), right=0)
    right = 0

    def show(result: TaskResult) -> None:
        nonlocal right
        right += result.ok
        progress.update(bar, advance=1, right=right)
        if not args.json:
            flag = f" ungrounded x{len(result.ungrounded)}" if result.ungrounded else ""
            progress.console.print(
                as_line(
                    ("right", "green") if result.ok else ("wrong", "red"),
                    f" {result.id} ",
                    (result.category, "dim"),
                    f" {result.seconds:.1f}s {len(result.steps)} steps",
                    (flag, "yellow"),
                )
            )

    try:
        with progress:
            report = run_blocking(
                lambda: evaluate(orch, graph, tasks, on_result=show, workers=args.workers, fleet=args.fleet)
            )
    finally:
        orch.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        _print_eval(report)
    accuracy = report.totals()["accuracy"] or 0.0
    if args.min_accuracy is not None and accuracy < args.min_accuracy:
        console.err.print(
            f"[red]accuracy {accuracy:.0%} is below --min-accuracy {args.min_accuracy:.0%}[/red]"
        )
        return EXIT_FAILED
    return EXIT_OK


def _print_eval(report: Any) -> None:
    table = Table(title=as_text(f"Eval of {report.graph}: per task"), title_justify="left")
    for col in ("task", "category", "result", "time", "steps", "tokens", "cost", "answer / why"):
        table.add_column(col, overflow="fold")
    for t in report.tasks:
        why = t.answer or t.error or "(no answer)"
        if not t.ok:
            why += "".join(f"\n  missing {m}" for m in t.missing) + "".join(
                f"\n  forbidden {f}" for f in t.forbidden
            )
        why += "".join(f"\n  ungrounded: {u}" for u in t.ungrounded)
        table.add_row(
            as_text(t.id),
            as_text(t.category),
            as_line(("right", "green")) if t.ok else as_line(("wrong", "red"), f" ({t.status})"),
            f"{t.seconds:.1f}s",
            as_text(" > ".join(t.steps)),
            str(t.input_tokens + t.output_tokens),
            format_usd(t.cost_usd),
            as_text(why),
        )
    console.out.print(table)
    totals = Table(title="By category", title_justify="left")
    for col in ("category", "right", "accuracy", "median time", "mean steps", "tokens", "cost", "ungrounded"):
        totals.add_column(col)
    rows = [*report.by_category().items(), ("total", report.totals())]
    for name, c in rows:
        totals.add_row(
            as_text(name),
            f"{c['right']}/{c['tasks']}",
            f"{c['accuracy']:.0%}",
            f"{c['median_s']:.1f}s",
            f"{c['mean_steps']:.1f}",
            str(c["input_tokens"] + c["output_tokens"]),
            format_usd(c["cost_usd"]),
            str(c["ungrounded_steps"]),
            style="bold" if name == "total" else None,
        )
    console.out.print(totals)
