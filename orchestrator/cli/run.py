"""`orch run`: run a graph, show its progress and result, ask at the terminal about tool calls."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from typing import Any

from rich.table import Table

from orchestrator.cli import console
from orchestrator.cli.args import non_empty_str, non_negative_float, non_negative_int, positive_int
from orchestrator.cli.common import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, EXIT_WAITING, Subparsers
from orchestrator.cli.console import as_line, as_text, spinner, visible
from orchestrator.config import Settings, load_manifest
from orchestrator.cost.ledger import Budget
from orchestrator.errors import ConfigError
from orchestrator.formats import format_ms, format_usd
from orchestrator.tracing.store import TraceStoreDamaged


def register(subparsers: Subparsers) -> None:
    """Add the command's parser; its handler is `args.func`."""
    run = subparsers.add_parser("run", help="run a graph named in the manifest")
    run.add_argument(
        "graph",
        nargs="?",
        type=non_empty_str,
        help="graph name from [tool.orchestrator.graphs] (default: default_graph)",
    )
    run.add_argument("input", nargs="?", help="the task text ('-' reads it from stdin)")
    run.add_argument(
        "--input-file", type=non_empty_str, metavar="FILE", help="read the task text from a file"
    )
    run.add_argument(
        "--input-json",
        type=non_empty_str,
        metavar="FILE|JSON",
        help="the graph's input state as a JSON object: a file, '-' (stdin), or the object itself",
    )
    run.add_argument(
        "--resume", type=non_empty_str, metavar="RUN", help="continue an interrupted or waiting run"
    )
    run.add_argument(
        "--approve",
        action="append",
        type=non_empty_str,
        metavar="TOOL",
        help="approve this tool's calls (confirm_tools): in a new run, in advance; with --resume, the calls "
        "the run waits for (repeatable)",
    )
    run.add_argument("--deny", action="store_true", help="with --resume: decline the calls the run waits for")
    run.add_argument("--run-id", type=non_empty_str, help="choose the new run's id")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument(
        "--traces", type=non_empty_str, help="trace store path (default: $ORCH_TRACES or the user data dir)"
    )
    run.add_argument(
        "--checkpoints",
        type=non_empty_str,
        help="SQLite path or postgresql:// URL (default: $ORCH_CHECKPOINTS)",
    )
    run.add_argument("--budget-usd", type=non_negative_float, help="stop before spending more (USD)")
    run.add_argument("--budget-tokens", type=non_negative_int, help="stop before using more tokens")
    run.add_argument("--budget-seconds", type=non_negative_float, help="stop after this many seconds")
    run.add_argument("--max-steps", type=positive_int, help="controller decisions at most")
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator.run.orchestrator import Orchestrator

    manifest = load_manifest(args.project)
    graph, text = args.graph, args.input
    if text is None and graph is not None and graph not in manifest.graphs and manifest.default_graph:
        graph, text = manifest.default_graph, graph  # `orch run "question"` runs the default graph
    state: dict[str, Any] | None = None
    if args.input_json is not None:
        if text is not None or args.input_file is not None:
            raise ConfigError("give the input one way: an argument, --input-file or --input-json")
        state = _read_input_json(args.input_json)
    if args.input_file is not None:
        if text is not None:
            raise ConfigError("give the input either as an argument or with --input-file, not both")
        text = _read_input_file(args.input_file)
    elif text == "-":
        text = sys.stdin.read()
    if args.deny and not args.resume:
        raise ConfigError("--deny answers a waiting run: use it with --resume RUN")
    if args.deny and args.approve:
        raise ConfigError("give either --approve TOOL or --deny, not both")
    if args.resume and (text is not None or graph is not None or state is not None):
        raise ConfigError("give either --resume RUN or GRAPH INPUT, not both")
    if not args.resume and not text and state is None:
        raise ConfigError(
            "usage: orch run [GRAPH] INPUT (INPUT '-' reads stdin; or --input-file FILE; "
            "or orch run --resume RUN)"
        )
    orch = Orchestrator.from_project(
        args.project,
        settings=Settings.resolve(manifest, traces_path=args.traces, checkpoints_path=args.checkpoints),
    )
    if args.resume and orch.store is not None:
        try:
            row = orch.store.get_run(args.resume)
        except TraceStoreDamaged as exc:  # the run's checkpoints are elsewhere: it can still go on
            console.err.print(as_line(("warning:", "yellow"), f" {exc}; resuming without recording into it"))
            row = None
        if row is not None:
            graph = row["graph"]
            args.resume = row["run_id"]
    budget = Budget(
        usd=args.budget_usd, tokens=args.budget_tokens, seconds=args.budget_seconds, steps=args.max_steps
    )
    from orchestrator.sync import run_blocking

    given: str | dict[str, Any] | None = state if state is not None else text
    return run_blocking(lambda: _run(orch, graph or "", given, budget, args))


async def _run(
    orch: Any, graph: str, text: str | dict[str, Any] | None, budget: Budget, args: argparse.Namespace
) -> int:
    approve: bool | list[str] | None = False if args.deny else (args.approve or None)
    run_id = args.resume or args.run_id
    resume = bool(args.resume)
    try:
        while True:
            result = await _run_once(orch, graph, text, budget, run_id, resume, approve)
            if result is None:
                return EXIT_CANCELLED
            if result.status != "waiting" or args.json or not _can_ask():
                break
            approve = _ask_approval(result)  # a person at the terminal answers, and the run goes on
            if approve is None:  # not tool calls: the graph's own question, answered with --resume in code
                break
            run_id, resume, text = result.run_id, True, None
    finally:
        orch.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _print_result(result)
    if result.status == "failed":
        hint = f" Resume with: orch run --resume {result.run_id}" if result.resumable else ""
        console.err.print(as_line(("run failed:", "red"), f" {result.error}.{hint}"))
        return EXIT_FAILED
    if result.status == "waiting":
        console.err.print(as_line(("waiting:", "yellow"), " ", _waiting_hint(result)))
        return EXIT_WAITING
    if result.status == "budget_stop" and result.resumable and not args.json:
        hint = f" Resume with more budget or time: orch run --resume {result.run_id}"
        console.err.print(as_line(("stopped:", "yellow"), f" {result.stop_reason}.{hint}"))
    return EXIT_OK


def _can_ask() -> bool:
    return sys.stdin.isatty() and console.err.is_terminal


def _tool_requests(result: Any) -> list[dict[str, Any]] | None:
    """The tool calls a waiting run asks to approve; None when it waits for something else."""
    calls: list[dict[str, Any]] = []
    for pending in result.waiting:
        value = pending.get("value")
        if not isinstance(value, dict) or value.get("type") != "approve_tool_calls":
            return None
        calls.extend(value.get("calls") or [])
    return calls


def _call_text(call: dict[str, Any]) -> str:
    args = json.dumps(call.get("args") or {}, ensure_ascii=False, default=str)
    return f"{call.get('tool')}({args if len(args) <= 300 else args[:300] + '...'})"


def _ask_approval(result: Any) -> list[str] | None:
    """Ask at the terminal about each call; the names of the tools approved."""
    calls = _tool_requests(result)
    if calls is None:
        return None
    approved: list[str] = []
    for call in calls:
        console.err.print(as_line(("approve?", "yellow"), " ", _call_text(call), " [y/N] "), end="")
        try:
            reply = input().strip().lower()
        except EOFError:
            reply = ""
        if reply in ("y", "yes"):
            approved.append(str(call.get("tool")))
    return approved


def _waiting_hint(result: Any) -> str:
    calls = _tool_requests(result)
    if calls is None:
        return (
            f"run {result.run_id} waits for an answer to its graph's question; answer it from Python: "
            f"Orchestrator.arun(..., run_id={result.run_id!r}, resume=True, answer=...)"
        )
    tools = sorted({str(c.get("tool")) for c in calls})
    asks = "; ".join(_call_text(c) for c in calls)
    flags = " ".join(f"--approve {t}" for t in tools)
    return (
        f"run {result.run_id} waits for approval of {asks}. Continue with: "
        f"orch run --resume {result.run_id} {flags} (or --deny)"
    )


async def _run_once(
    orch: Any,
    graph: str,
    text: str | dict[str, Any] | None,
    budget: Budget,
    run_id: str | None,
    resume: bool,
    approve: bool | list[str] | None,
) -> Any:
    """One attempt, with progress lines; its result, or None when it was cancelled."""
    result = None
    try:
        with spinner("starting ...") as status:
            events = orch.astream(
                graph,
                text,
                budget=budget,
                run_id=run_id,
                resume=resume,
                tokens=console.err.is_terminal,
                approve=approve,
            )
            async with contextlib.aclosing(events):  # a crash here still ends the run before the store closes
                async for event in events:
                    run_id = event.run_id
                    if event.kind == "start":
                        status.update(as_line(f"run {run_id}: running ..."))
                    elif event.kind == "token":  # only asked for on a terminal: the spinner names the writer
                        status.update(as_line(f"run {run_id}: {event.node} ({event.source}) writing ..."))
                    elif event.kind == "node":
                        console.err.print(
                            as_line(
                                (f"{event.elapsed_s:6.1f}s", "dim"),
                                " ",
                                (f"{event.node or '':<11}", "bold"),
                                " ",
                                _describe(event),
                            )
                        )
                        status.update(as_line(f"run {run_id}: {_next_label(event)} ..."))
                    elif event.result is not None:
                        result = event.result
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.err.print(
            as_line("\n", ("cancelled.", "yellow"), f" Resume with: orch run --resume {run_id}")
        )
        return None
    assert result is not None
    return result


def _read_input_json(path: str) -> dict[str, Any]:
    """The input state from a file, stdin ('-'), or the JSON object itself (`--input-json '{...}'`)."""
    try:
        if path == "-":
            raw = sys.stdin.read()
        elif path.lstrip().startswith("{") and not os.path.exists(path):
            raw = path
        else:
            with open(path, encoding="utf-8") as fh:
                raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"--input-json {path!r}: cannot read it: {exc.strerror}") from None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"--input-json {path!r}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(
            f"--input-json {path!r}: the input state must be a JSON object, got {type(value).__name__}"
        )
    return value


def _read_input_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"--input-file {path!r}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--input-file {path!r}: not UTF-8 text") from None


def _describe(event: Any) -> str:
    """A node's progress line: the agent's decisions or observations, else what the node spent."""
    own = _describe_agent(event)
    spent = []
    if event.node_s is not None:
        spent.append(format_ms(event.node_s * 1000))
    if event.calls:
        spent.append(f"{event.calls} model call{'s' if event.calls != 1 else ''}, {event.tokens} tok")
        spent.append(format_usd(event.cost_usd))
    if own:
        return own
    return " · ".join(spent) or "done"


def _describe_agent(event: Any) -> str:
    from orchestrator.agent.decisions import decision_of

    update = event.update
    if event.node == "controller":
        if update.get("status") == "budget_stop":
            return f"stopped: {update.get('stop_reason')}"
        steps = []
        for message in update.get("messages") or []:
            decision = decision_of(str(message.content)) if message.type == "ai" else None
            if decision:
                body = {k: v for k, v in decision.items() if k != "action"}
                steps.append(f"-> {decision['action']} {json.dumps(body, ensure_ascii=False)[:110]}")
        return " ".join(steps)
    messages = update.get("messages") or []
    if messages and isinstance(messages, list) and hasattr(messages[-1], "content"):
        return str(messages[-1].content).replace("\n", " ")[:120]
    if update.get("status") == "budget_stop":
        return f"stopped: {update.get('stop_reason')}"
    return ""


def _next_label(event: Any) -> str:
    from orchestrator.agent.graph import last_decision

    pending = last_decision(event.update) or {}
    action = pending.get("action")
    if event.node == "controller" and action in {"find_tools", "call_tool"}:
        return str(action)
    if event.node == "controller" and action == "delegate":
        return f"worker {pending.get('worker')}"
    return "running"


def _print_result(result: Any) -> None:
    colour = {"ok": "green", "budget_stop": "yellow", "waiting": "yellow"}.get(result.status, "red")
    answer = result.answer if result.answer is not None else "(none)"
    console.out.print(as_line("\n", ("Answer:", "bold"), f" {answer}"))
    line = as_line((f"status: {result.status}", colour), f"  run: {result.run_id}")
    if result.stop_reason:
        line.append(visible(f"  ({result.stop_reason})"))
    console.out.print(line)
    table = Table(title="Cost by node", title_justify="left")
    for col in ("node", "model", "role", "calls", "in tok", "out tok", "cost", "wall", "TTFT"):
        table.add_column(col, justify="right" if col not in {"node", "model", "role"} else "left")
    for n in result.ledger.by_node():
        table.add_row(
            as_text(n.node),
            as_text(n.model or "-"),
            as_text(n.role or "-"),
            str(n.calls),
            str(n.input_tokens),
            str(n.output_tokens),
            format_usd(n.cost_usd, n.unpriced_calls),
            format_ms(n.wall_ms),
            format_ms(n.ttft_ms),
        )
    led = result.ledger
    table.add_row(
        "total",
        "",
        "",
        "",
        str(led.input_tokens),
        str(led.output_tokens),
        format_usd(led.cost_usd, led.unpriced_calls),
        "",
        "",
        style="bold",
    )
    console.out.print(table)
