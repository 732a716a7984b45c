"""`orch tools`: the tool catalog; list it, search it, measure its retrieval, expand its index
(`tools_expand`)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from orchestrator.cli import console, tools_expand
from orchestrator.cli.args import non_empty_str, positive_int
from orchestrator.cli.common import EXIT_OK, Subparsers
from orchestrator.cli.console import as_line, as_text


def register(subparsers: Subparsers) -> None:
    """Add the command's parser; its handler is `args.func`."""
    tools = subparsers.add_parser("tools", help="the tool catalog: list, search, evaluate retrieval, expand")
    tsub = tools.add_subparsers(dest="action", required=True)
    methods = ["bm25", "dense", "hybrid"]
    for name, helptext in (
        ("list", "the project's tools and catalog files' tools"),
        ("search", "the top tools for a request"),
        ("eval", "retrieval quality on labelled queries: recall@k, all-gold@k, MRR, latency, prompt tokens"),
    ):
        p = tsub.add_parser(name, help=helptext)
        p.add_argument("--json", action="store_true", help="print JSON")
        if name == "eval":
            p.add_argument(
                "--catalog",
                required=True,
                action="append",
                type=non_empty_str,
                metavar="FILE",
                help='JSON Lines: {"name", "description", "parameters"} per line',
            )
            p.add_argument(
                "--queries",
                required=True,
                type=non_empty_str,
                metavar="FILE",
                help='JSON Lines: {"query": ..., "gold_tools": [...]} per line',
            )
        else:
            p.add_argument(
                "--catalog",
                action="append",
                type=non_empty_str,
                metavar="FILE",
                help="also a JSON Lines catalog file (repeatable)",
            )
            p.add_argument("--no-packs", action="store_true", help="leave out the manifest's tool packs")
        if name == "list":
            p.add_argument(
                "--source",
                type=non_empty_str,
                metavar="S",
                help="only tools from this pack reference or file",
            )
            continue
        if name == "search":
            p.add_argument("query", type=non_empty_str)
        p.add_argument("--k", type=positive_int, default=5, help="how many tools (default 5)")
        p.add_argument(
            "--method", choices=methods, help="default: hybrid with the embed extra installed, else bm25"
        )
        p.add_argument("--split", action="store_true", help="also search each clause of a multi-part request")
        p.add_argument(
            "--index",
            type=non_empty_str,
            metavar="FILE",
            help="index file (default: $ORCH_TOOL_INDEX or the cache)",
        )
    tools_expand.add_parser(tsub)
    tools.set_defaults(func=cmd_tools)


def _tool_sources(args: argparse.Namespace) -> list[Any]:
    """The project's tool packs (unless --no-packs) and each --catalog file's tools."""
    from orchestrator.toolsets.retrieval.sources import gather

    return gather(None if args.no_packs else args.project, args.catalog or [])


def _tool_index(args: argparse.Namespace, docs: Sequence[Any], key: str) -> Any:
    from orchestrator.toolsets.retrieval.index import ToolIndex
    from orchestrator.toolsets.retrieval.sources import index_path

    index = ToolIndex(args.index or index_path(key))
    method = args.method or index.default_method()
    index.sync(docs, dense=method in ("dense", "hybrid"))
    return index, method


def cmd_tools(args: argparse.Namespace) -> int:
    if args.action == "expand":
        return tools_expand.cmd_expand(args)
    if args.action == "list":
        src = args.source
        docs = [
            d
            for d in _tool_sources(args)
            if src is None or d.source == src or os.path.abspath(d.source) == os.path.abspath(src)
        ]
        if args.json:
            rows = [
                {"name": d.name, "source": d.source, "description": d.description, "parameters": d.parameters}
                for d in docs
            ]
            print(json.dumps(rows, indent=2))
            return EXIT_OK
        table = Table("tool", "source", "description")
        for d in docs:
            table.add_row(as_text(d.name), as_text(d.source), as_text(d.description[:100]))
        console.out.print(table)
        console.out.print(as_line((f"{len(docs)} tools", "dim")))
        return EXIT_OK
    if args.action == "search":
        docs = _tool_sources(args)
        files = "|".join(map(os.path.abspath, args.catalog or []))
        key = f"search:{os.path.abspath(args.project)}|{files}"
        index, method = _tool_index(args, docs, key)
        hits = index.search(args.query, args.k, method, split=args.split or None)
        if args.json:
            print(
                json.dumps(
                    {
                        "query": args.query,
                        "method": method,
                        "index": index.store.path,
                        "hits": [h.__dict__ for h in hits],
                    },
                    indent=2,
                )
            )
            return EXIT_OK
        table = Table("#", "tool", "relevance", "source", "description")
        for rank, h in enumerate(hits, 1):
            table.add_row(
                str(rank),
                as_text(h.name),
                f"{h.relevance:.3f}",
                as_text(h.source),
                as_text(h.description[:90]),
            )
        console.out.print(table)
        console.out.print(as_line((f"{method} over {len(index)} tools", "dim")))
        return EXIT_OK
    # eval
    from orchestrator.toolsets.retrieval.docs import read_catalog, read_queries
    from orchestrator.toolsets.retrieval.evaluate import evaluate

    docs = read_catalog(args.catalog[0])
    queries = read_queries(args.queries)
    index, method = _tool_index(args, docs, "eval:" + os.path.abspath(args.catalog[0]))
    report = evaluate(index, queries, args.k, method, split=args.split or None)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return EXIT_OK
    table = Table("figure", "value")
    for name, value in report.as_dict().items():
        table.add_row(name, as_text(str(value)))
    console.out.print(table)
    return EXIT_OK
