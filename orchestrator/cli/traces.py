"""`orch traces`: the trace store's runs (list, show, top, prune, check).

The actions that read stored runs another way (reprice, compare, report) are in `traces_reports`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from orchestrator.cli import console, traces_reports
from orchestrator.cli.args import non_empty_str, positive_int
from orchestrator.cli.common import EXIT_CONFIG, EXIT_OK, Subparsers, settings_of
from orchestrator.cli.console import as_line, as_text, visible
from orchestrator.config import Settings
from orchestrator.cost.ledger import Ledger
from orchestrator.errors import ConfigError
from orchestrator.formats import format_ms, format_usd
from orchestrator.locations import describe
from orchestrator.tracing import attrs as A
from orchestrator.tracing.store import decode_attributes


def register(subparsers: Subparsers) -> None:
    """Add the command's parser; its handler is `args.func`."""
    traces = subparsers.add_parser("traces", help="inspect the trace store")
    tsub = traces.add_subparsers(dest="action", required=True)
    for name, helptext in (
        ("list", "recent runs"),
        ("show", "one run as a span tree"),
        ("top", "hotspots: where the cost and the time go"),
        ("prune", "delete runs older than a duration, with their spans"),
        ("check", "SQLite's check of the store file: ok, or what is damaged (exit 2)"),
    ):
        p = tsub.add_parser(name, help=helptext)
        p.add_argument("--json", action="store_true")
        p.add_argument("--traces", type=non_empty_str, help="trace store path or postgresql:// URL")
        if name == "list":
            p.add_argument(
                "--limit", type=positive_int, default=20, help="the N most recent runs (default 20)"
            )
        if name == "show":
            p.add_argument("run", type=non_empty_str, help="run id (or a unique prefix)")
        if name == "top":
            p.add_argument("--by", choices=["node", "model", "slot", "tool"], default="node")
            p.add_argument("--run", type=non_empty_str, help="only this run")
            p.add_argument("--last", type=positive_int, metavar="N", help="only the N most recent runs")
            p.add_argument("--since", metavar="DURATION", help="only spans since then: 90m, 12h, 30d, 2w")
            p.add_argument("--graph", type=non_empty_str, help="only runs of this graph")
        if name == "prune":
            p.add_argument("--older-than", required=True, metavar="DURATION", help="e.g. 30d, 12h, 2w")
        if name == "check":
            p.add_argument("--full", action="store_true", help="integrity_check: slower, checks indexes too")
    traces_reports.add_parsers(tsub)
    traces.set_defaults(func=cmd_traces)


def _ledger_totals(settings: Settings) -> Callable[[str], Ledger | None]:
    """What a run paid, from the ledger beside the checkpoints: for a run found interrupted, whose process
    died before it could record its totals (LangGraph is loaded only then)."""

    def totals(run_id: str) -> Ledger | None:
        from orchestrator.run.checkpoints import Checkpoints

        return Checkpoints(settings.checkpoints_path).totals(run_id)

    return totals


def cmd_traces(args: argparse.Namespace) -> int:
    from orchestrator.tracing.store import TraceStore

    settings = settings_of(args)
    where = settings.traces_path
    if isinstance(where, str):  # a PostgreSQL URL: the store is made there at first use
        if args.action == "check":
            raise ConfigError(
                f"`orch traces check` checks a SQLite file; the trace store {describe(where)!r} is "
                "PostgreSQL, which checks its own pages (its amcheck extension, `pg_amcheck`)"
            )
    elif not where.exists():
        raise ConfigError(f"no trace store at {where}; run a graph first or pass --traces PATH")
    if args.action == "check":
        return _traces_check(args, settings)
    store = TraceStore(settings.traces_path, totals=_ledger_totals(settings))
    with store.guard():  # the reports read the file directly too: a damaged one is one line, exit 2
        return _traces_action(args, store, settings)


def _traces_action(args: argparse.Namespace, store: Any, settings: Settings) -> int:
    from orchestrator.tracing.report import span_tree

    if args.action == "list":
        runs = store.list_runs(args.limit)
        if args.json:
            print(json.dumps(runs, indent=2))
            return EXIT_OK
        table = Table(title=as_text(f"Runs in {store.path}"), title_justify="left")
        for col in ("run", "graph", "status", "cost", "compute", "in tok", "out tok", "duration"):
            table.add_column(col)
        for r in runs:
            table.add_row(
                as_text(r["run_id"]),
                as_text(r["graph"] or ""),
                as_text(r["status"] or ""),
                format_usd(r["cost_usd"], r["unpriced_calls"] or 0),
                format_ms(r.get("compute_ms")) if r.get("compute_ms") else "-",
                str(r["input_tokens"] or 0),
                str(r["output_tokens"] or 0),
                format_ms(r["duration_ms"]),
            )
        console.out.print(table)
        return EXIT_OK
    if args.action == "show":
        row = store.get_run(args.run)
        if row is None:
            raise ConfigError(f"no run {args.run!r} in {store.path}; see `orch traces list`")
        roots = span_tree(store, row["run_id"])
        if args.json:
            print(json.dumps({"run": row, "spans": roots}, indent=2, default=str))
            return EXIT_OK
        tree = Tree(
            as_line(
                (row["run_id"], "bold"),
                f" {row['graph'] or ''} [{row['status']}] "
                f"{format_usd(row['cost_usd'], row['unpriced_calls'] or 0)} {format_ms(row['duration_ms'])}",
            )
        )
        for root in roots:
            _add(tree, root)
        console.out.print(tree)
        return EXIT_OK
    if args.action == "reprice":
        return traces_reports.cmd_reprice(args, store, settings)
    if args.action == "compare":
        return traces_reports.cmd_compare(args, store)
    if args.action == "report":
        return traces_reports.cmd_report(args, store)
    if args.action == "prune":
        return _traces_prune(args, store)
    return _traces_top(args, store, settings)


def _traces_check(args: argparse.Namespace, settings: Settings) -> int:
    """SQLite's own check of the store file (reads only); exit 2 when it is damaged."""
    from orchestrator.tracing.damage import check_store

    result = check_store(Path(settings.traces_path), full=args.full)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif result.ok:
        console.out.print(
            as_line(f"{result.path}: ", ("ok", "green"), f" ({result.check}, {result.elapsed_ms:.0f} ms)")
        )
    else:
        for problem in result.shown():
            console.out.print(as_text(problem))
    if result.ok:
        return EXIT_OK
    console.err.print(
        as_line(
            ("error:", "red"),
            f" trace store {result.path!r} is damaged ({result.check} found {len(result.problems)} "
            f"problem{'s' if len(result.problems) > 1 else ''}); move it aside (with any -wal and -shm "
            "file beside it) and the next run starts a new one",
        )
    )
    return EXIT_CONFIG


def _traces_top(args: argparse.Namespace, store: Any, settings: Settings) -> int:
    from orchestrator.tracing.report import Scope, hotspots, measure_of

    if args.run and args.last:
        raise ConfigError("give either --run RUN or --last N, not both")
    run_ids: tuple[str, ...] | None = None
    if args.run:
        found = store.get_run(args.run)
        if found is None:
            raise ConfigError(f"no run {args.run!r} in {store.path}; see `orch traces list`")
        run_ids = (found["run_id"],)
    elif args.last is not None:
        run_ids = tuple(r["run_id"] for r in store.list_runs(args.last))
    since = time.time() - _duration(args.since, "--since") if args.since else None
    scope = Scope(run_ids=run_ids, graph=args.graph, since=since)
    t0 = time.perf_counter()
    spots = hotspots(store, args.by, scope=scope)
    top_ms = (time.perf_counter() - t0) * 1000
    if args.json:
        print(json.dumps([h.to_dict() for h in spots], indent=2))
        return EXIT_OK
    measure = measure_of(spots)
    shown = {"cost": "cost", "compute": "compute time", "cost+compute": "cost and compute time"}.get(measure)
    title = f"Hotspots by {args.by} ({scope.describe()})" + (f"; shares of {shown}" if shown else "")
    table = Table(title=as_text(title), title_justify="left")
    columns = [args.by, "calls", "in tok", "out tok", "cache hit", "cost (excl.)"]
    nested = args.by == "node" and any(
        h.cost_incl is not None and abs(h.cost_incl - (h.cost_usd or 0)) > 1e-12 for h in spots
    )
    if nested:
        columns.append("cost (incl.)")
    if "cost" in measure:
        columns.append("share (cost)")
    if "compute" in measure:
        columns += ["compute", "share (compute)"]
    columns += ["p50", "p95"]
    if args.by == "model":
        columns += ["TTFT p50", "tok/s p50"]
    columns.append("errors")
    repairs = any(h.repairs or h.escalations for h in spots)
    if repairs:
        columns.append("repairs/esc.")
    for col in columns:
        if col == args.by:  # the names in full: the rest of the table gives way
            widest = max((len(h.key) for h in spots), default=len(col))
            table.add_column(col, overflow="fold", min_width=min(max(widest, len(col)), 60))
        else:
            table.add_column(col, justify="right")
    for h in spots:
        cells: list[str | Text] = [
            as_text(h.key),
            str(h.calls),
            str(h.input_tokens),
            str(h.output_tokens),
            f"{h.cache_hit:.0%}" if h.cache_hit else "-",
            format_usd(h.cost_usd, h.unpriced_calls),
        ]
        if nested:
            cells.append(format_usd(h.cost_incl))
        if "cost" in measure:
            cells.append(f"{h.share:.0%}" if h.share is not None else "-")
        if "compute" in measure:
            cells += [
                format_ms(h.compute_ms),
                f"{h.compute_share:.0%}" if h.compute_share is not None else "-",
            ]
        cells += [format_ms(h.p50_ms), format_ms(h.p95_ms)]
        if args.by == "model":
            tps = f"{h.tokens_per_s_p50:.0f}" if h.tokens_per_s_p50 else "-"
            cells += [format_ms(h.ttft_p50_ms), tps]
        cells.append(str(h.errors))
        if repairs:
            cells.append(f"{h.repairs}/{h.escalations}")
        table.add_row(*cells)
    console.out.print(table)
    if measure == "none":
        console.err.print(as_line(("no cost and no compute time recorded in this scope", "dim")))
    console.err.print(as_line((f"{len(spots)} rows in {top_ms:.0f} ms", "dim")))
    return EXIT_OK


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def _duration(text: str, flag: str) -> float:
    """Seconds in a duration like 90m, 12h, 30d or 2w."""
    value = text.strip().lower()
    number, unit = value[:-1], value[-1:]
    try:
        seconds = float(number) * _UNITS[unit]
    except (KeyError, ValueError):
        raise ConfigError(
            f"{flag} {text!r} is not a duration; use a number and a unit: 90m, 12h, 30d or 2w"
        ) from None
    if not 0 < seconds < math.inf:  # nan too (it passed `<= 0` and became a window of nothing)
        raise ConfigError(f"{flag} {text!r} must be more than zero and finite, e.g. 30d")
    return seconds


def _traces_prune(args: argparse.Namespace, store: Any) -> int:
    seconds = _duration(args.older_than, "--older-than")
    runs, spans = store.prune(time.time() - seconds)
    if args.json:
        print(json.dumps({"runs_deleted": runs, "spans_deleted": spans}))
    else:
        console.out.print(as_line(f"deleted {runs} runs and {spans} spans older than {args.older_than}"))
    return EXIT_OK


def _add(parent: Tree, span: dict[str, Any]) -> None:
    label = as_line((span["name"] or "", "bold"))
    bits = [format_ms(span["duration_ms"])]
    if span["kind"] == "chat":
        bits += [
            f"{span['input_tokens'] or 0}+{span['output_tokens'] or 0} tok",
            format_usd(span["cost_usd"]),
            f"TTFT {format_ms(span['ttft_ms'])}",
        ]
    if span["action"]:
        bits.append(f"-> {span['action']}")
    attrs = decode_attributes(span)
    if attrs.get(A.DECISION_STRATEGY):
        bits.append(f"via {attrs[A.DECISION_STRATEGY]}")
    plan = attrs.get(A.PLAN) or (", ".join(attrs[A.PLAN_PARTS]) if attrs.get(A.PLAN_PARTS) else None)
    if plan:
        bits.append(f"plan: {plan}")  # the parts (their texts only with content capture)
    label.append(visible("  " + "  ".join(bits)))
    if span["status"] == "error":
        label.append(visible("  " + (span["status_message"] or "error")), style="red")
    branch = parent.add(label)
    for child in span["children"]:
        _add(branch, child)
