"""`orch traces reprice`, `compare` and `report`: stored runs read another way (at other prices,
beside another run, as an HTML page)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from orchestrator.cli import console
from orchestrator.cli.args import non_empty_str, positive_int
from orchestrator.cli.common import EXIT_OK, Subparsers
from orchestrator.cli.console import as_line, as_text
from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.formats import format_ms, format_usd


def add_parsers(tsub: Subparsers) -> None:
    """Add the reprice, compare and report actions to `orch traces`."""
    rp = tsub.add_parser("reprice", help="what-if pricing: the stored tokens at another model's rates")
    rp.add_argument("run", nargs="?", type=non_empty_str, help="run id (or a unique prefix)")
    rp.add_argument(
        "--last", type=positive_int, metavar="N", help="the N most recent runs instead of one run"
    )
    at = rp.add_mutually_exclusive_group(required=True)
    at.add_argument(
        "--model", type=non_empty_str, metavar="MODEL", help="price every model call at this model's rates"
    )
    at.add_argument(
        "--slot",
        action="append",
        metavar="SLOT=MODEL",
        help="price this slot's calls at MODEL's rates, the others as stored (repeatable)",
    )
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--traces", type=non_empty_str, help="trace store path or postgresql:// URL")
    cp = tsub.add_parser("compare", help="two runs node by node: cost, tokens, time, count, models")
    cp.add_argument("run_a", type=non_empty_str, help="run id (or a unique prefix)")
    cp.add_argument("run_b", type=non_empty_str, help="run id (or a unique prefix)")
    cp.add_argument("--json", action="store_true")
    cp.add_argument("--traces", type=non_empty_str, help="trace store path or postgresql:// URL")
    hp = tsub.add_parser("report", help="an HTML page: cost flame graph, span waterfall, hotspot tables")
    hp.add_argument("run", nargs="?", type=non_empty_str, help="run id (or a unique prefix)")
    hp.add_argument(
        "--last", type=positive_int, metavar="N", help="the N most recent runs together instead of one run"
    )
    hp.add_argument(
        "--html",
        required=True,
        type=non_empty_str,
        metavar="FILE",
        help="the page to write (one self-contained file)",
    )
    hp.add_argument("--json", action="store_true", help="print what was written as JSON")
    hp.add_argument("--traces", type=non_empty_str, help="trace store path or postgresql:// URL")


def cmd_report(args: argparse.Namespace, store: Any) -> int:
    from orchestrator.tracing.html import report_runs, write_report

    summary = write_report(store, args.html, report_runs(store, args.run, args.last))
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return EXIT_OK
    console.out.print(as_line("wrote ", (summary.path, "bold")))
    console.out.print(as_text(summary.line()))
    return EXIT_OK


def cmd_reprice(args: argparse.Namespace, store: Any, settings: Settings) -> int:
    from orchestrator.cost.pricing import price_table
    from orchestrator.evals.whatif import reprice, runs_in_scope

    slots: dict[str, str] = {}
    for given in args.slot or []:
        slot, sep, model = given.partition("=")
        if not sep or not slot or not model:
            raise ConfigError(f"--slot {given!r}: give SLOT=MODEL, e.g. --slot controller=openai:gpt-4o")
        if slots.get(slot, model) != model:
            raise ConfigError(f"--slot {slot}: given twice ({slots[slot]!r} and {model!r}); give it once")
        slots[slot] = model
    runs = runs_in_scope(store, args.run, args.last)
    result = reprice(store, runs, model=args.model, slots=slots, table=price_table(settings.prices_path))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return EXIT_OK
    scope = f"run {runs[0]}" if len(runs) == 1 else f"the last {len(runs)} runs"
    target = args.model or ", ".join(f"{s}={m}" for s, m in slots.items())
    console.out.print(as_line("Repricing ", scope, " at ", (target, "bold")))
    for name, p in result.prices.items():
        console.out.print(as_line(f"  {name}: ", _rates(p), (f"  ({p.source})", "dim")))
    for title, first, lines in (
        ("By slot", "slot", result.by_slot),
        ("By run", "run", result.by_run),
    ):
        table = Table(title=title, title_justify="left")
        for col in (first, "calls", "in tok", "cache read", "cache write", "out tok", "old", "new", "change"):
            table.add_column(col)
        if first == "slot":
            table.add_column("models")
        for line in (*lines, result.total):
            t = line.tokens
            models = ", ".join(f"{m} -> {p}" if p else f"{m} (as stored)" for m, p in line.models)
            table.add_row(
                as_text("total", style="bold") if line is result.total else as_text(line.key or "(no slot)"),
                str(line.calls),
                str(t.input_tokens),
                str(t.cache_read_tokens),
                _of_which(t.cache_write_tokens, t.cache_write_1h_tokens, "1h"),
                _of_which(t.output_tokens, t.reasoning_tokens, "reasoning"),
                format_usd(line.old_usd, line.old_unpriced),
                format_usd(line.new_usd, line.new_unpriced),
                _change(line.delta_usd),
                *([as_text(models)] if first == "slot" else []),
            )
        console.out.print(table)
    return EXIT_OK


def _of_which(count: int, part: int, label: str) -> str:
    return f"{count} ({label} {part})" if part else str(count)


def _rates(p: Any) -> str:
    """A model's rates in USD per million tokens (a missing cache rate is the input rate)."""

    def rate(value: float | None, fallback: str = "in") -> str:
        return f"= {fallback}" if value is None else f"${value * 1e6:g}"

    text = f"in {rate(p.input)}, cache read {rate(p.cache_read)}, cache write {rate(p.cache_write)}"
    if p.cache_write_1h is not None:
        text += f" (1h {rate(p.cache_write_1h)})"
    text += f", out {rate(p.output)} per Mtok"
    for tier in p.tiers:
        text += f"; prompts over {tier.above_tokens // 1000}k: in {rate(tier.input)}, out {rate(tier.output)}"
    return text


def _change(value: float | None) -> str:
    if value is None:
        return "?"
    return ("+" if value >= 0 else "-") + format_usd(abs(value))


def cmd_compare(args: argparse.Namespace, store: Any) -> int:
    from orchestrator.evals.compare import compare

    result = compare(store, args.run_a, args.run_b)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return EXIT_OK
    a, b = result.run_a, result.run_b
    console.out.print(
        as_line(
            ("A ", "bold"),
            f"{a['run_id']} ({a['graph']}, {a['status']})  ",
            ("B ", "bold"),
            f"{b['run_id']} ({b['graph']}, {b['status']})",
        )
    )
    table = Table(title="By node (B minus A)", title_justify="left")
    for col in ("node", "runs", "cost A", "cost B", "change", "in tok", "out tok", "wall A", "wall B"):
        table.add_column(col)
    table.add_column("models")
    for diff in (*result.nodes, result.total):
        sa, sb = diff.a, diff.b
        name = "total" if diff is result.total else (diff.node or "(no node)")
        if diff.only_in:
            name += f" (only in {diff.only_in.upper()})"
        delta = diff.delta()
        models_a = ", ".join(sa.models) if sa else "-"
        models_b = ", ".join(sb.models) if sb else "-"
        table.add_row(
            as_text(name, style="bold" if diff is result.total else ""),
            _pair(sa, sb, "count"),
            format_usd(sa.cost_usd, sa.unpriced_calls) if sa else "-",
            format_usd(sb.cost_usd, sb.unpriced_calls) if sb else "-",
            _change(delta["cost_usd"]) if delta else "-",
            _pair(sa, sb, "input_tokens"),
            _pair(sa, sb, "output_tokens"),
            format_ms(sa.wall_ms) if sa else "-",
            format_ms(sb.wall_ms) if sb else "-",
            as_text(models_a if models_a == models_b else f"{models_a} -> {models_b}"),
        )
    console.out.print(table)
    return EXIT_OK


def _pair(a: Any, b: Any, name: str) -> str:
    """A count in run A and in run B ("-" where the node did not run): one figure when they are equal."""
    x, y = (str(getattr(side, name)) if side is not None else "-" for side in (a, b))
    return x if x == y else f"{x} -> {y}"
