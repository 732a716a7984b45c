"""`orch tools expand`: a model writes a few requests per tool into the index `orch tools search` uses."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from orchestrator.cli import console
from orchestrator.cli.args import non_empty_str, positive_int
from orchestrator.cli.common import EXIT_FAILED, EXIT_OK
from orchestrator.cli.console import as_line
from orchestrator.config import Settings, load_manifest
from orchestrator.errors import ConfigError
from orchestrator.formats import format_usd

__all__ = ["add_parser", "cmd_expand"]


def add_parser(tsub: Any) -> None:
    """Add `expand` to `orch tools`' subparsers."""
    p = tsub.add_parser(
        "expand",
        help="have the racehorse write a few requests per tool into the index, so search finds users' words",
    )
    p.add_argument(
        "--catalog",
        action="append",
        type=non_empty_str,
        metavar="FILE",
        help="also a JSON Lines catalog file (repeatable; as given to search)",
    )
    p.add_argument("--no-packs", action="store_true", help="leave out the manifest's tool packs")
    p.add_argument(
        "--index",
        type=non_empty_str,
        metavar="FILE",
        help="index file (default: the one `orch tools search` uses with the same --catalog/--no-packs)",
    )
    p.add_argument(
        "--slot",
        type=non_empty_str,
        default="controller",
        help="the slot whose model writes (default: controller)",
    )
    p.add_argument("--limit", type=positive_int, metavar="N", help="write for at most N tools this time")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class _Progress:
    """One line on stderr per tool written: done/total, the rate and the time left."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.done = 0

    def __call__(self, done: int, total: int, tool: str) -> None:
        if done == 0:
            self.start = time.monotonic()
            console.err.print(as_line(("expand:", "dim"), f" {total} tools to write for"))
            return
        self.done = done
        spent = time.monotonic() - self.start
        rate = done / spent if spent > 0 else 0.0
        eta = (total - done) / rate if rate else 0.0
        console.err.print(
            as_line(
                ("expand:", "dim"),
                f" {done}/{total} {tool} · {rate * 60:.1f} tools/min · ETA {_duration(eta)}",
            )
        )


def cmd_expand(args: argparse.Namespace) -> int:
    from orchestrator.models.writer import slot_writer
    from orchestrator.sync import run_blocking
    from orchestrator.toolsets.retrieval.dense import available
    from orchestrator.toolsets.retrieval.index import ToolIndex
    from orchestrator.toolsets.retrieval.sources import gather, index_path

    files = "|".join(map(os.path.abspath, args.catalog or []))
    where = args.index or index_path(f"search:{os.path.abspath(args.project)}|{files}")
    if str(where) == ":memory:":
        raise ConfigError(
            "the index is in memory (':memory:'): the written requests would be lost when the command "
            "ends; give an index file with --index FILE or $ORCH_TOOL_INDEX"
        )
    manifest = load_manifest(args.project)
    # the catalog and the index first: a bad file is reported before a local model takes seconds to load
    docs = gather(None if args.no_packs else args.project, args.catalog or [])
    if not docs:
        raise ConfigError(
            "no tools to write for: the project has no tool packs"
            + (" (left out by --no-packs)" if args.no_packs else "")
            + " and no --catalog FILE was given"
        )
    index = ToolIndex(where)
    index.sync(docs)
    writer = slot_writer(manifest, args.slot, Settings.resolve(manifest))
    progress = _Progress()
    try:
        report = run_blocking(lambda: index.expand(writer, writer.name, progress, args.limit))
    except BaseException:
        if progress.done:
            console.err.print(
                as_line(
                    ("expand:", "dim"),
                    f" the tools written are kept in {index.store.path}; run the same command again "
                    "to go on",
                )
            )
        raise
    embedded = index.sync(docs, dense=True).embedded_requests if available() else 0
    out: dict[str, Any] = {
        "index": str(index.store.path),
        "slot": args.slot,
        "writer": writer.name,
        **report.__dict__,
        "failed": list(report.failed),
        "seconds": round(report.seconds, 2),
        "cost_usd": writer.cost_usd,
        "embedded_requests": embedded,
    }
    code = EXIT_FAILED if report.failed else EXIT_OK
    if args.json:
        print(json.dumps(out, indent=2))
        return code
    console.out.print(
        as_line(
            f"{report.written} tools written now, {report.had} already written, {report.left} left "
            f"({report.tools} tools) · {report.requests} requests · "
            f"{report.input_tokens} in / {report.output_tokens} out tokens · "
            f"{format_usd(writer.cost_usd)} · {_duration(report.seconds)}"
        )
    )
    if report.failed:
        console.out.print(
            as_line(
                (f"{len(report.failed)} tools' replies held no requests: ", "yellow"),
                ", ".join(report.failed),
                " (not searched by written requests; asked again on the next run)",
            )
        )
    console.out.print(as_line((f"{writer.name} (slot {args.slot}) into {index.store.path}", "dim")))
    return code
