"""`orch worker`, `orch submit`, `orch jobs`: a fleet of processes sharing one PostgreSQL (docs/deploy.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.table import Table

from orchestrator.cli import console
from orchestrator.cli.args import non_empty_str, non_negative_float, non_negative_int, positive_int
from orchestrator.cli.common import EXIT_FAILED, EXIT_OK, EXIT_WAITING, Subparsers
from orchestrator.cli.console import as_line, as_text
from orchestrator.config import Settings, load_manifest
from orchestrator.cost.ledger import Budget
from orchestrator.errors import ConfigError
from orchestrator.formats import format_usd
from orchestrator.procs import HOST

_CHECKPOINTS_HELP = "the fleet's postgresql:// URL (default: $ORCH_CHECKPOINTS or the manifest's checkpoints)"


def register(subparsers: Subparsers) -> None:
    """Add the commands' parsers; their handlers are `args.func`."""
    worker = subparsers.add_parser(
        "worker", help="take runs from the fleet's queue and run them, until SIGTERM drains it"
    )
    worker.add_argument(
        "--id",
        type=non_empty_str,
        help=f"this worker's id, kept across restarts so a restarted worker recovers its runs (default: "
        f"the host name, {HOST!r}); each live worker needs its own",
    )
    worker.add_argument("--concurrency", type=positive_int, default=4, help="runs at once (default: 4)")
    worker.add_argument(
        "--drain-timeout",
        type=non_negative_float,
        default=300.0,
        metavar="S",
        help="on SIGTERM, let running runs finish for this long, then hand them back (default: 300)",
    )
    worker.add_argument("--checkpoints", type=non_empty_str, help=_CHECKPOINTS_HELP)
    worker.add_argument("--traces", type=non_empty_str, help="trace store (default: $ORCH_TRACES)")
    worker.set_defaults(func=cmd_worker)

    submit = subparsers.add_parser("submit", help="put a run on the fleet's queue; prints its run id")
    submit.add_argument("graph", nargs="?", type=non_empty_str, help="graph name (default: default_graph)")
    submit.add_argument("input", nargs="?", help="the task text ('-' reads it from stdin)")
    submit.add_argument("--run-id", type=non_empty_str, help="choose the run's id")
    submit.add_argument("--resume", type=non_empty_str, metavar="RUN", help="resume a waiting or stopped run")
    submit.add_argument(
        "--approve",
        action="append",
        type=non_empty_str,
        metavar="TOOL",
        help="with --resume: approve (repeatable)",
    )
    submit.add_argument("--deny", action="store_true", help="with --resume: decline the calls it waits for")
    submit.add_argument(
        "--answer",
        metavar="JSON",
        help="with --resume: the answer to the graph's own question (JSON; other text is taken as a string)",
    )
    submit.add_argument("--wait", action="store_true", help="wait for the run to end and print its result")
    submit.add_argument(
        "--timeout", type=non_negative_float, metavar="S", help="with --wait: give up after S s"
    )
    submit.add_argument("--json", action="store_true", help="print JSON")
    submit.add_argument("--checkpoints", type=non_empty_str, help=_CHECKPOINTS_HELP)
    submit.add_argument("--budget-usd", type=non_negative_float, help="stop before spending more (USD)")
    submit.add_argument("--budget-tokens", type=non_negative_int, help="stop before using more tokens")
    submit.add_argument("--budget-seconds", type=non_negative_float, help="stop after this many seconds")
    submit.add_argument("--max-steps", type=positive_int, help="controller decisions at most")
    submit.set_defaults(func=cmd_submit)

    jobs = subparsers.add_parser("jobs", help="the fleet: its queue, one run's state, its workers")
    jobs.add_argument("run", nargs="?", type=non_empty_str, help="one run's id (default: the newest runs)")
    jobs.add_argument("--wait", action="store_true", help="wait for RUN to end")
    jobs.add_argument(
        "--timeout", type=non_negative_float, metavar="S", help="with --wait: give up after S s"
    )
    jobs.add_argument("--workers", action="store_true", help="list the workers and their heartbeats")
    jobs.add_argument(
        "--recover",
        type=non_empty_str,
        metavar="ID",
        help="hand a dead worker's runs back to the queue (a live worker takes them within a second)",
    )
    jobs.add_argument("--limit", type=positive_int, default=20, help="newest runs to list (default: 20)")
    jobs.add_argument("--json", action="store_true", help="print JSON")
    jobs.add_argument("--checkpoints", type=non_empty_str, help=_CHECKPOINTS_HELP)
    jobs.set_defaults(func=cmd_jobs)


def _orch(args: argparse.Namespace) -> Any:
    from orchestrator.run.orchestrator import Orchestrator

    manifest = load_manifest(args.project)
    settings = Settings.resolve(
        manifest, traces_path=getattr(args, "traces", None), checkpoints_path=args.checkpoints
    )
    return Orchestrator.from_project(args.project, settings=settings)


def cmd_worker(args: argparse.Namespace) -> int:
    from orchestrator.fleet.worker import WorkerOptions, serve

    orch = _orch(args)
    options = WorkerOptions(
        executor_id=args.id or HOST, concurrency=args.concurrency, drain_timeout_s=args.drain_timeout
    )

    def ready() -> None:
        console.err.print(
            as_line(
                ("worker", "bold"),
                f" {options.executor_id}: taking runs from {orch.jobs.describe()} "
                f"({options.concurrency} at once); SIGTERM drains it",
            )
        )

    try:
        left = serve(orch, options, ready)
    finally:
        orch.close()
    if left:
        console.err.print(
            as_line(("drained:", "yellow"), f" {left} run(s) still running were handed back to the queue")
        )
    else:
        console.err.print(as_line(("drained:", "green"), " every run this worker took has ended"))
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.project)
    graph, text = args.graph, args.input
    if text is None and graph is not None and graph not in manifest.graphs and manifest.default_graph:
        graph, text = manifest.default_graph, graph
    if text == "-":
        text = sys.stdin.read()
    if args.resume and text is not None:
        raise ConfigError("give either --resume RUN or GRAPH INPUT, not both")
    if (args.approve or args.deny or args.answer is not None) and not args.resume:
        raise ConfigError("--approve, --deny and --answer answer a waiting run: use them with --resume RUN")
    if args.deny and args.approve:
        raise ConfigError("give either --approve TOOL or --deny, not both")
    if not args.resume and not text:
        raise ConfigError("usage: orch submit [GRAPH] INPUT (or orch submit --resume RUN)")
    orch = _orch(args)
    budget = Budget(
        usd=args.budget_usd, tokens=args.budget_tokens, seconds=args.budget_seconds, steps=args.max_steps
    )
    from orchestrator.sync import run_blocking

    async def go() -> int:
        try:
            graph_name = graph or manifest.default_graph or ""
            if args.resume:
                state = await orch.job(args.resume)
                if state is None:
                    raise ConfigError(
                        f"run {args.resume!r} was never submitted to the fleet; see `orch jobs`"
                    )
                history = await orch.jobs.history(args.resume)
                first = history[0]
                graph_name = graph or await _graph_of(orch, first.job_id) or graph_name
            approve: bool | list[str] | None = False if args.deny else (args.approve or None)
            run_id = await orch.submit(
                graph_name,
                text,
                budget=budget,
                run_id=args.resume or args.run_id,
                resume=bool(args.resume),
                approve=approve,
                answer=_answer(args.answer),
            )
            if not args.wait:
                print(json.dumps({"run_id": run_id}) if args.json else run_id)
                return EXIT_OK
            console.err.print(as_line(("queued", "bold"), f" run {run_id}; waiting for a worker ..."))
            try:
                result = await orch.wait(run_id, timeout=args.timeout)
            except TimeoutError as exc:
                console.err.print(
                    as_line(("not yet:", "yellow"), f" {exc}; see it later with `orch jobs {run_id}`")
                )
                return EXIT_FAILED
            return _print_result(result, args.json)
        finally:
            orch.close()

    return run_blocking(go)


def _answer(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _graph_of(orch: Any, job_id: str) -> str | None:
    """The graph a run was submitted with (the input of its first job)."""
    given = await orch.jobs.job_input(job_id)
    return str(given["graph"]) if given and given.get("graph") else None


def _print_result(result: Any, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        console.out.print(as_line(("answer: ", "bold"), result.answer or "(none)"))
        console.err.print(
            as_line(
                (f"{result.status}", "green" if result.status == "ok" else "yellow"),
                f"  run {result.run_id}  cost {format_usd(result.ledger.cost_usd)}  "
                f"{result.ledger.tokens} tokens",
            )
        )
    if result.status == "failed":
        console.err.print(as_line(("run failed:", "red"), f" {result.error}"))
        return EXIT_FAILED
    if result.status == "waiting":
        from orchestrator.cli.run import _tool_requests

        how = "--approve TOOL (or --deny)" if _tool_requests(result) is not None else "--answer JSON"
        console.err.print(
            as_line(("waiting:", "yellow"), f" go on with: orch submit --resume {result.run_id} {how}")
        )
        return EXIT_WAITING
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    settings = Settings.resolve(_manifest_or_none(args), checkpoints_path=args.checkpoints)
    from orchestrator.run.jobs import Jobs
    from orchestrator.sync import run_blocking

    jobs = Jobs(settings.checkpoints_path)
    if args.recover:
        from orchestrator.fleet.worker import hand_back

        if not hand_back(str(settings.checkpoints_path), args.recover):
            raise ConfigError(f"no worker {args.recover!r} in the fleet; see `orch jobs --workers`")
        console.err.print(as_line(f"worker {args.recover}: its runs go back on the queue"))
        return EXIT_OK
    if args.workers:
        from orchestrator.fleet.worker import workers

        rows = workers(str(settings.checkpoints_path))
        now = time.time()
        if args.json:
            print(
                json.dumps([{**r.__dict__, "silent_s": round(now - r.heartbeat, 1)} for r in rows], indent=2)
            )
            return EXIT_OK
        table = Table("worker", "host", "pid", "state", "silent")
        for r in rows:
            table.add_row(
                as_text(r.executor_id), as_text(r.host), str(r.pid), r.state, f"{now - r.heartbeat:.0f} s"
            )
        console.out.print(table)
        return EXIT_OK

    async def go() -> int:
        try:
            if args.run:
                try:
                    state = await (jobs.wait(args.run, args.timeout) if args.wait else jobs.state(args.run))
                except TimeoutError as exc:
                    console.err.print(as_line(("not yet:", "yellow"), f" {exc}"))
                    return EXIT_FAILED
                if state is None:
                    raise ConfigError(
                        f"run {args.run!r} was never submitted to the fleet in {jobs.describe()}"
                    )
                states = [state]
            else:
                states = await jobs.recent(args.limit)
                depth = await jobs.depth()
                if not args.json:
                    oldest = depth["oldest_queued_s"]
                    console.err.print(
                        as_line(
                            f"queue: {depth['queued']} queued"
                            + (f" (the oldest for {oldest:.0f} s)" if oldest is not None else "")
                            + f", {depth['running']} running"
                        )
                    )
            if args.json:
                print(json.dumps([s.__dict__ for s in states], indent=2, default=str))
                return EXIT_OK
            table = Table("run", "job", "status", "worker", "queued", "answer")
            for s in states:
                queued = time.strftime("%H:%M:%S", time.localtime(s.queued_at)) if s.queued_at else ""
                answer = (s.result or {}).get("answer") or s.error or ""
                table.add_row(
                    as_text(s.run_id),
                    as_text(s.job_id),
                    s.status,
                    as_text(s.executor or ""),
                    queued,
                    as_text(str(answer)[:60]),
                )
            console.out.print(table)
            return EXIT_OK
        finally:
            jobs.close()

    return run_blocking(go)


def _manifest_or_none(args: argparse.Namespace) -> Any:
    try:
        return load_manifest(args.project)
    except ConfigError:
        return None
