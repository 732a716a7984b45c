"""`orch trial`: a model tried in a worker's slot on labelled items, beside the model there now."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from orchestrator.cli import console
from orchestrator.cli.args import fraction_0_1, non_empty_str, positive_int
from orchestrator.cli.common import EXIT_OK, Subparsers, add_workers
from orchestrator.cli.console import as_line, as_text
from orchestrator.config import Settings, load_manifest
from orchestrator.errors import ConfigError
from orchestrator.evals import DEFAULT_TARGET


def register(subparsers: Subparsers) -> None:
    """Add the command's parser; its handler is `args.func`."""
    tr = subparsers.add_parser(
        "trial", help="test a model for a worker's slot on labelled items: accuracy, validity, cost, verdict"
    )
    tr.add_argument(
        "model",
        nargs="?",
        type=non_empty_str,
        help="the model to try, provider:model (e.g. local:qwen2.5-0.5b); needed but with --calibrate-only",
    )
    tr.add_argument(
        "--worker",
        type=non_empty_str,
        help="the worker whose slot it would take (needed but with --calibrate-only)",
    )
    tr.add_argument(
        "--data",
        type=non_empty_str,
        metavar="FILE",
        help='JSON Lines: {"input": ..., "expected": ...} (needed but with --calibrate-only)',
    )
    tr.add_argument(
        "--base-url", type=non_empty_str, help="the endpoint of an openai-compat:/vllm:/ollama: model"
    )
    tr.add_argument(
        "--price-as", type=non_empty_str, metavar="MODEL", help="price it as this price-table model"
    )
    tr.add_argument("--limit", type=positive_int, help="only the first N items")
    tr.add_argument("--json", action="store_true", help="print one JSON object")
    add_workers(tr, "items of each pass")
    tr.add_argument(
        "--no-compare", action="store_true", help="skip the run of the model bound to the slot now"
    )
    tr.add_argument(
        "--no-racehorse",
        action="store_true",
        help="skip the run of the escalation slot's model alone (the side-by-side of workhorse, routed pair "
        "and racehorse)",
    )
    tr.add_argument(
        "--judge",
        nargs="?",
        const="controller",
        type=non_empty_str,
        metavar="SLOT",
        help="free-text workers: the model bound to SLOT (default: controller, the racehorse) scores each "
        "output 1-5 beside the validators; its cost is reported apart. It is calibrated first on known-good "
        "and known-bad outputs (once per judge model, kept in the user cache) and refused below AUC 0.9",
    )
    tr.add_argument(
        "--calibrate-only",
        action="store_true",
        help="only show the judge's calibration (its AUC per kind of bad output); no trial",
    )
    tr.add_argument(
        "--recalibrate", action="store_true", help="measure the judge's calibration again, not from the cache"
    )
    tr.add_argument(
        "--calibration",
        type=non_empty_str,
        metavar="FILE",
        help="the known-good outputs to calibrate the judge on, JSON Lines in the shipped set's format "
        '({"id", "worker", "source", "good"}; default: the shipped set of 40)',
    )
    tr.add_argument(
        "--tune",
        action="store_true",
        help="choose the worker's confidence threshold (min_margin) on these items and write it to the "
        "project's worker_settings file, where the worker reads it",
    )
    tr.add_argument(
        "--target",
        type=fraction_0_1,
        default=DEFAULT_TARGET,
        metavar="SHARE",
        help=f"with --tune: the share of the racehorse's accuracy to keep (default {DEFAULT_TARGET})",
    )
    tr.add_argument(
        "--traces", type=non_empty_str, help="trace store path (default: $ORCH_TRACES or the user data dir)"
    )
    tr.set_defaults(func=cmd_trial)


def cmd_trial(args: argparse.Namespace) -> int:

    from orchestrator.evals.trial import ItemResult, load_items, run_trial
    from orchestrator.evals.tune import tune_trial
    from orchestrator.run.orchestrator import Orchestrator
    from orchestrator.run.project import settings_path
    from orchestrator.sync import run_blocking

    if args.calibrate_only:
        return _calibrate_only(args)
    needed = (("MODEL", args.model), ("--worker", args.worker), ("--data", args.data))
    missing = [name for name, value in needed if not value]
    if missing:
        raise ConfigError(
            f"orch trial needs {', '.join(missing)}: orch trial MODEL --worker NAME --data FILE "
            "(or, to see a judge's calibration alone: orch trial --judge SLOT --calibrate-only)"
        )
    items = load_items(args.data)
    if args.limit is not None:
        items = items[: args.limit]
    manifest = load_manifest(args.project)
    where = settings_path(manifest)
    if args.tune and where is None:  # said before the trial runs, not after it
        raise ConfigError(
            "--tune writes the threshold to the project's worker settings file, and the manifest names none: "
            'add worker_settings = "worker-settings.json" under [tool.orchestrator]'
        )
    settings = Settings.resolve(manifest, traces_path=args.traces)
    orch = Orchestrator.from_project(args.project, settings=settings, tracing=False)
    passes = 2 if args.tune else 1 + (not args.no_compare) + (not args.no_racehorse)
    progress = _progress(args.json)
    bar = progress.add_task("trial", total=len(items) * passes)
    judge_bar = progress.add_task("judge calibration", total=None, visible=False)

    def show(_item: ItemResult) -> None:
        progress.update(bar, advance=1)

    def calibrating(done: int, total: int) -> None:
        progress.update(judge_bar, completed=done, total=total, visible=done < total)

    try:
        with progress:
            options = dict(
                on_item=show,
                base_url=args.base_url,
                price_as=args.price_as,
                judge=args.judge,
                recalibrate=args.recalibrate,
                on_calibrate=calibrating,
                calibration_data=args.calibration,
                workers=args.workers,
            )
            report = run_blocking(
                lambda: (
                    tune_trial(orch, args.model, args.worker, items, args.target, **options)
                    if args.tune
                    else run_trial(
                        orch,
                        args.model,
                        args.worker,
                        items,
                        compare=not args.no_compare,
                        racehorse=not args.no_racehorse,
                        **options,
                    )
                )
            )
    finally:
        orch.close()

    data = report.to_dict()
    if report.tuning is not None and where is not None:
        _save_tuning(where, report, args)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return EXIT_OK
    table = Table(title=as_text(f"Trial of {args.model} on worker {report.worker} (slot {report.slot})"))
    table.add_column("figure")
    table.add_column(as_text(args.model))
    if report.baseline is not None:
        table.add_column(as_text(f"{report.baseline.model} (now)"))
    base = data["baseline"] or {}
    for key in (
        "accuracy",
        "accuracy_escalated",
        "validity_before_repair",
        "validity",
        "escalation_rate",
        "cost_per_1k_usd",
        "compute_s_per_1k",
        "p50_ttft_ms",
        "tokens_per_s",
        *(
            ("judged_score", "judge_auc", "judged_items", "judge_cost_usd", "judge_compute_s")
            if report.judge
            else ()
        ),
    ):
        row = [as_text(key), as_text(_figure(key, data[key], data["items"]))]
        if report.baseline is not None:
            row.append(as_text(_figure(key, base.get(key), data["items"])))
        table.add_row(*row)
    console.out.print(table)
    if report.tuning is not None:
        console.out.print(
            as_line(
                "(--tune: the model answered alone, each margin measured; the routed pair below is at the "
                "thresholds chosen)"
            )
        )
    console.out.print(
        as_line(("verdict: ", "bold"), str(data["verdict"] or "-"), f" ({data['verdict_why']})")
    )
    _print_sides(args.model, data)
    if report.judge:
        _print_judged(report)
    if report.tuning is not None:
        _print_tuning(report, where)
    return EXIT_OK


def _save_tuning(where: Any, report: Any, args: argparse.Namespace) -> None:
    """The tuned threshold into the worker settings file, with how it was chosen."""
    import datetime

    from orchestrator.workers.settings import write_setting

    tuning = report.tuning
    tuned = tuning.to_dict()
    router = None
    if tuning.uses_router:
        import numpy as np

        from orchestrator.workers.router import DEFAULT_K, Router

        vectors, scores = tuning.fitted
        file = f"routers/{report.worker}.npz"
        Router(vectors, np.asarray(scores, dtype=np.float32), tuning.chosen.min_p).save(where.parent / file)
        router = {"file": file, "min_p": round(tuning.chosen.min_p, 4), "k": DEFAULT_K}
    write_setting(
        where,
        report.worker,
        {
            "min_margin": round(tuned.pop("min_margin"), 4),
            "router": router,
            "tuned": {
                "by": "orch trial --tune",
                "date": datetime.date.today().isoformat(),
                "data": str(args.data),
                "items": len(report.items),
                "model": report.model,
                "racehorse": report.racehorse.model if report.racehorse is not None else None,
                **tuned,
            },
        },
    )


def _print_tuning(report: Any, where: Any) -> None:
    """The threshold curve (thinned), the threshold chosen and where it was written."""
    from orchestrator.evals.tune import thin

    tuning = report.tuning
    table = Table(title=as_text(f"Routing {report.model} by confidence: the threshold curve"))
    for column in ("min_margin", "accuracy", "escalated", "compute s / 1k", "cost / 1k"):
        table.add_column(column)
    for p in thin(tuning.points, 12):
        mark = " <" if p == tuning.chosen else ""
        table.add_row(
            f"{p.min_margin:.3g}{mark}",
            f"{p.accuracy:.1%}",
            f"{p.escalation_rate:.0%}",
            f"{p.compute_s_per_1k:.1f}",
            "?" if p.cost_per_1k_usd is None else f"${p.cost_per_1k_usd:.4f}",
        )
    console.out.print(table)
    if tuning.router_points:
        table = Table(
            title=as_text("Routing before generation: the router's curve (its best margin at each)")
        )
        for column in (
            "min_p",
            "sent up",
            "min_margin",
            "accuracy",
            "escalated",
            "compute s / 1k",
            "cost / 1k",
        ):
            table.add_column(column)
        for p in thin(tuning.router_points, 12):
            table.add_row(
                f"{p.min_p:.2f}{' <' if p == tuning.chosen else ''}",
                f"{p.sent_up_rate:.0%}",
                f"{p.min_margin:.3g}",
                f"{p.accuracy:.1%}",
                f"{p.escalation_rate:.0%}",
                f"{p.compute_s_per_1k:.1f}",
                "?" if p.cost_per_1k_usd is None else f"${p.cost_per_1k_usd:.4f}",
            )
        console.out.print(table)
    console.out.print(as_line(("tuned: ", "bold"), tuning.summary()))
    console.out.print(as_line(("router: ", "bold"), tuning.router))
    console.out.print(as_line(("written: ", "bold"), f"{report.worker}'s settings in {where}"))


def _print_sides(model: str, data: dict[str, Any]) -> None:
    """The workhorse alone, the routed pair and the racehorse alone, side by side, and which to run."""
    sides = data["sides"]
    if sides is None:
        console.out.print(as_line(("side by side: ", "bold"), f"- ({data['pair_verdict_why']})"))
        return
    table = Table(
        title=as_text(f"{model} alone, routed up its escalation chain, and {data['racehorse']} alone")
    )
    table.add_column("figure")
    for name in ("workhorse alone", "routed pair", "racehorse alone"):
        table.add_column(name)
    for key in ("accuracy", "cost_per_1k_usd", "compute_s_per_1k", "escalation_rate"):
        row = [key]
        for side in ("workhorse", "routed", "racehorse"):
            value = sides[side].get(key)
            row.append("-" if key not in sides[side] else _figure(key, value))
        table.add_row(*(as_text(cell) for cell in row))
    console.out.print(table)
    console.out.print(as_line(("run: ", "bold"), str(data["pair_verdict"]), f" ({data['pair_verdict_why']})"))


def _print_judged(report: Any) -> None:
    """The judge, and its lowest-scored outputs with its reasons (item text and reasons are data: escaped)."""
    cal = getattr(report, "calibration", None)
    trust = (
        f", AUC {cal.auc:.2f} on its calibration ({cal.goods} known-good, {cal.bads} known-bad outputs)"
        if cal is not None
        else ""
    )
    console.out.print(
        as_line(("judge:", "bold"), f" {report.judge}{trust} (its cost is not in the figures above)")
    )
    runs = [report, *([report.baseline] if report.baseline is not None else [])]
    for run in runs:
        scored = sorted((i for i in run.items if i.judge_score is not None), key=lambda i: i.judge_score)
        for item in scored[:3]:
            if item.judge_score >= 4:
                break
            text = " ".join(item.input.split())
            text = text if len(text) <= 60 else text[:57] + "..."
            reason = item.judge_reason or ""
            console.out.print(
                as_line(f"  {run.model}: score {item.judge_score:.2f} on {json.dumps(text)}: {reason}")
            )
        unjudged = [i for i in run.items if i.judge_score is None and i.valid]
        if unjudged:
            why = unjudged[0].judge_reason or "?"
            console.out.print(as_line(f"  {run.model}: {len(unjudged)} valid output(s) unjudged, e.g. {why}"))


def _calibrate_only(args: argparse.Namespace) -> int:
    """`--calibrate-only`: the judge's calibration, overall and per kind of bad output; no trial."""

    from orchestrator.evals.calibrate import MIN_AUC, refusal
    from orchestrator.evals.trial import calibrate_judge
    from orchestrator.run.orchestrator import Orchestrator
    from orchestrator.sync import run_blocking

    slot = args.judge or "controller"
    settings = Settings.resolve(load_manifest(args.project), traces_path=args.traces)
    orch = Orchestrator.from_project(args.project, settings=settings, tracing=False)
    progress = _progress(args.json)
    bar = progress.add_task("judge calibration", total=None)
    try:
        with progress:
            cal = run_blocking(
                lambda: calibrate_judge(
                    orch,
                    slot,
                    recalibrate=args.recalibrate,
                    on_calibrate=lambda done, total: progress.update(bar, completed=done, total=total),
                    calibration_data=args.calibration,
                )
            )
    finally:
        orch.close()
    if args.json:
        print(json.dumps(cal.summary(), indent=2))
        return EXIT_OK
    table = Table(title=as_text(f"Judge calibration of {cal.judge} (slot {slot})"))
    for col in ("bad outputs", "AUC", "mean score bad", "mean score good"):
        table.add_column(col)
    for kind, value in cal.auc_by_kind.items():
        table.add_row(
            as_text(kind.replace("_", " ")),
            f"{value:.3f}",
            f"{cal.mean_by_kind[kind]:.2f}",
            f"{cal.mean_good:.2f}",
        )
    table.add_row("all", f"{cal.auc:.3f}", f"{cal.mean_bad:.2f}", f"{cal.mean_good:.2f}")
    for worker, value in cal.auc_by_worker.items():
        table.add_row(as_text(f"all, {worker} outputs"), f"{value:.3f}", "", "")
    console.out.print(table)
    how = "from the cache" if cal.cached else f"measured in {cal.wall_s / 60:.1f} min"
    console.out.print(
        as_line(
            f"{cal.goods} known-good and {cal.bads} known-bad outputs, {cal.unjudged} unjudged; {how} "
            f"({cal.created}); judge cost {_figure('judge_cost_usd', cal.cost_usd)}, "
            f"compute {cal.compute_s:.1f} s"
        )
    )
    if cal.usable:
        console.out.print(as_line(("usable: ", "bold"), f"AUC {cal.auc:.2f} >= {MIN_AUC:.2f}"))
    else:
        console.out.print(as_line(("refused: ", "bold"), refusal(cal, slot)))
    return EXIT_OK


def _figure(key: str, value: Any, items: int = 0) -> str:
    if value is None:
        return "?"
    if key == "judged_score":
        return f"{value:.2f} / 5"
    if key == "judge_auc":
        return f"{value:.3f}"
    if key == "judged_items":
        return f"{value} / {items}"
    if key == "judge_cost_usd":
        return f"${value:.4f}"
    if key in ("accuracy", "accuracy_escalated", "validity_before_repair", "validity", "escalation_rate"):
        return f"{value:.1%}"
    if key == "cost_per_1k_usd":
        return f"${value:.4f}"
    return f"{value:.1f}"


def _progress(quiet: bool) -> Any:
    """A progress display on stderr, one bar a task named by its description (none with --json)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console.err,
        transient=True,
        disable=quiet,
    )
