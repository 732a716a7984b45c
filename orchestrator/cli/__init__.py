"""`orch`: a thin CLI. Parsing and rendering only; library errors become exit codes in one place.

Exit codes: 0 ok (a budget stop included), 1 failed run, 2 configuration error (a bad option value
included), 3 a run waiting for an answer, 130 cancelled (Ctrl-C), 141 output pipe closed by its reader
(`orch traces list --json | head`: the code a Unix tool killed by SIGPIPE gives, without a traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from orchestrator.cli import console
from orchestrator.cli.args import (
    fraction_0_1,
    non_empty_str,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from orchestrator.cli.common import (
    EXIT_CANCELLED,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_WAITING,
    settings_of,
)
from orchestrator.cli.console import as_line, as_text, spinner, visible
from orchestrator.config import Settings, load_manifest
from orchestrator.cost.ledger import Budget, Ledger
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.formats import format_ms, format_usd
from orchestrator.tracing import attrs as A
from orchestrator.tracing.store import TraceStoreDamaged, decode_attributes

__all__ = ["main"]


# --- orch run ------------------------------------------------------------------------------------------
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


# --- orch eval --------------------------------------------------------------------------------------------
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
            report = run_blocking(lambda: evaluate(orch, graph, tasks, on_result=show))
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


def cmd_trial(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestrator.evals.trial import ItemResult, load_items, run_trial
    from orchestrator.run.orchestrator import Orchestrator
    from orchestrator.sync import run_blocking

    items = load_items(args.data)
    if args.limit is not None:
        items = items[: args.limit]
    settings = Settings.resolve(load_manifest(args.project), traces_path=args.traces)
    orch = Orchestrator.from_project(args.project, settings=settings, tracing=False)
    passes = 1 if args.no_compare else 2
    progress = Progress(
        TextColumn("[bold]trial[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console.err,
        transient=True,
        disable=args.json,
    )
    bar = progress.add_task("trial", total=len(items) * passes)

    def show(_item: ItemResult) -> None:
        progress.update(bar, advance=1)

    try:
        with progress:
            report = run_blocking(
                lambda: run_trial(
                    orch,
                    args.model,
                    args.worker,
                    items,
                    on_item=show,
                    compare=not args.no_compare,
                    base_url=args.base_url,
                    price_as=args.price_as,
                    judge=args.judge,
                )
            )
    finally:
        orch.close()
    if not report.baseline:
        progress.update(bar, total=len(items))
    data = report.to_dict()
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
        *(("judged_score", "judged_items", "judge_cost_usd", "judge_compute_s") if report.judge else ()),
    ):
        row = [as_text(key), as_text(_figure(key, data[key], data["items"]))]
        if report.baseline is not None:
            row.append(as_text(_figure(key, base.get(key), data["items"])))
        table.add_row(*row)
    console.out.print(table)
    console.out.print(
        as_line(("verdict: ", "bold"), str(data["verdict"] or "-"), f" ({data['verdict_why']})")
    )
    if report.judge:
        _print_judged(report)
    return EXIT_OK


def _print_judged(report: Any) -> None:
    """The judge, and its lowest-scored outputs with its reasons (item text and reasons are data: escaped)."""
    console.out.print(as_line(("judge:", "bold"), f" {report.judge} (its cost is not in the figures above)"))
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
                as_line(f"  {run.model}: score {item.judge_score} on {json.dumps(text)}: {reason}")
            )
        unjudged = [i for i in run.items if i.judge_score is None and i.valid]
        if unjudged:
            why = unjudged[0].judge_reason or "?"
            console.out.print(as_line(f"  {run.model}: {len(unjudged)} valid output(s) unjudged, e.g. {why}"))


def _figure(key: str, value: Any, items: int = 0) -> str:
    if value is None:
        return "?"
    if key == "judged_score":
        return f"{value:.2f} / 5"
    if key == "judged_items":
        return f"{value} / {items}"
    if key == "judge_cost_usd":
        return f"${value:.4f}"
    if key in ("accuracy", "accuracy_escalated", "validity_before_repair", "validity", "escalation_rate"):
        return f"{value:.1%}"
    if key == "cost_per_1k_usd":
        return f"${value:.4f}"
    return f"{value:.1f}"


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


# --- orch models -----------------------------------------------------------------------------------------
def _probe_engine(name: str, settings: Settings, *, force: bool) -> None:
    """Which llama.cpp settings the model loads with on this CPU: probed in a child process (once per machine,
    again with `force`), so a fast path that crashes here is found now, not at the first run."""
    import importlib.util

    from orchestrator.providers import llama_probe
    from orchestrator.providers.modelfiles import LOCAL_MODELS

    if importlib.util.find_spec("llama_cpp") is None:
        return  # the 'local' extra is not installed: nothing can load the model here yet
    forced = llama_probe.override()
    if forced is not None:
        console.out.print(
            as_text(f"local:{name}: extra buffer types {'on' if forced else 'off'} ({llama_probe.ENV})")
        )
        return
    path = LOCAL_MODELS[name].path(settings.models_dir)
    record = llama_probe.engine_settings(
        str(path), f"local:{name}", settings.models_dir / "probe.json", force=force
    )
    setting = "extra buffer types " + ("on" if record["extra_buffers"] else "off (the fast path crashed)")
    speed = ""
    if record.get("prompt_tps") and record.get("generation_tps"):
        speed = f": prompt {record['prompt_tps']:.0f} tok/s, generation {record['generation_tps']:.1f} tok/s"
    console.out.print(as_text(f"local:{name}: llama.cpp runs on this CPU with {setting}{speed}"))


def cmd_models(args: argparse.Namespace) -> int:
    from orchestrator.models.binding import resolve_profile
    from orchestrator.providers.modelfiles import LOCAL_MODELS, build_model_file, verify_model_file

    settings = settings_of(args)
    if args.action in ("build", "verify"):
        names = args.names or list(LOCAL_MODELS)
        for name in names:
            if name not in LOCAL_MODELS:
                resolve_profile(f"local:{name}")  # raises with "did you mean"
    if args.action == "verify":
        failures = 0
        for name in names:
            try:
                digest = verify_model_file(LOCAL_MODELS[name], settings.models_dir)
                console.out.print(f"[green]ok[/green]  local:{name}  sha256 {digest}")
                _probe_engine(name, settings, force=True)
            except ConfigError as exc:
                failures += 1
                console.err.print(as_line(("bad", "red"), f" local:{name}: {exc}"))
        return EXIT_CONFIG if failures else EXIT_OK
    if args.action == "build":
        from orchestrator.providers.modelfiles import is_verified

        for name in names:
            spec = LOCAL_MODELS[name]
            if is_verified(spec, settings.models_dir) and not args.force:
                console.out.print(
                    as_text(f"local:{name} already built and verified at {spec.path(settings.models_dir)}")
                )
            else:
                build_model_file(
                    spec, settings.models_dir, lambda m: console.err.print(as_text(m, style="dim"))
                )
            _probe_engine(name, settings, force=args.force)
        return EXIT_OK
    rows = _profile_rows(args, settings)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = Table(title="Model profiles (USD per million tokens)", title_justify="left")
    for col in (
        "name",
        "slot",
        "context",
        "in",
        "out",
        "cache r/w(5m)/w(1h)",
        "tiers",
        "can",
        "price source",
    ):
        table.add_column(col)
    for r in rows:
        p = r["prices"]
        table.add_row(
            as_line(r["name"], ("" if r.get("built", True) else " (not built)", "dim")),
            as_text(", ".join(f"{s} ({role})" for s, role in r["slots"]) or "-"),
            str(r["context_window"] or "?"),
            _mtok(p and p["input"]),
            _mtok(p and p["output"]),
            "/".join(_mtok(p and p[k]) for k in ("cache_read", "cache_write", "cache_write_1h")),
            ", ".join(f">{t['above_tokens'] // 1000}k" for t in (p["tiers"] if p else [])) or "-",
            ",".join(_CAN.get(k, k) for k, v in r["capabilities"].items() if v),
            as_text(r["price_source"]),
        )
    console.out.print(table)
    return EXIT_OK


_CAN = {
    "tool_calling": "tools",
    "json_schema": "schema",
    "grammar": "grammar",
    "prefill": "prefill",
    "streaming_usage": "stream-usage",
    "prompt_caching": "cache",
    "parallel_tool_calls": "parallel",
}


def _mtok(value: float | None) -> str:
    return "?" if value is None else f"{value * 1e6:g}"


def _profile_rows(args: argparse.Namespace, settings: Settings) -> list[dict[str, Any]]:
    import dataclasses
    import warnings

    from orchestrator.cost.pricing import price_table
    from orchestrator.models.binding import bind_slot, catalog_names, resolve_profile
    from orchestrator.profiles import ModelProfile
    from orchestrator.providers.modelfiles import LOCAL_MODELS, is_verified

    table = price_table(settings.prices_path)
    profiles: dict[str, ModelProfile] = {}
    slots: dict[str, list[tuple[str, str]]] = {}
    try:
        manifest = load_manifest(args.project)
    except ConfigError:
        manifest = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for slot, config in manifest.slots.items() if manifest else []:
            binding = bind_slot(slot, config, table)
            for i, p in enumerate(binding.chain):
                profiles.setdefault(p.name, p)
                slots.setdefault(p.name, []).append((slot, binding.role if i == 0 else "fallback"))
        for name in LOCAL_MODELS:
            profiles.setdefault(f"local:{name}", resolve_profile(f"local:{name}"))
        for name in catalog_names(table, args.provider) if (args.all or args.provider) else []:
            profiles.setdefault(name, resolve_profile(name, table=table))
    rows = []
    for name, p in profiles.items():
        if args.provider and p.provider != args.provider:
            continue
        row: dict[str, Any] = {
            "name": name,
            "provider": p.provider,
            "slots": slots.get(name, []),
            "context_window": p.context_window,
            "capabilities": dataclasses.asdict(p.capabilities),
            "prices": dataclasses.asdict(p.prices) if p.prices else None,
            "price_source": p.price_source,
            "base_url": p.base_url,
            "api_key_env": p.api_key_env,
            "rate_limits": dataclasses.asdict(p.rate_limits),
        }
        if row["prices"]:
            row["prices"].pop("source", None)
        if p.provider == "local" and p.model in LOCAL_MODELS:
            spec = LOCAL_MODELS[p.model]
            row.update(built=is_verified(spec, settings.models_dir), file=str(spec.path(settings.models_dir)))
        rows.append(row)
    return rows


# --- orch ask -----------------------------------------------------------------------------------------
def cmd_ask(args: argparse.Namespace) -> int:
    from orchestrator.models.ask import aask, ask_profile, failed_attempts
    from orchestrator.sync import run_blocking

    settings = Settings.resolve(None, prices_path=args.prices)
    schema = None
    if args.schema:
        try:
            with open(args.schema, encoding="utf-8") as fh:
                schema = json.load(fh)
        except OSError as exc:
            raise ConfigError(f"--schema {args.schema!r}: cannot read it: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"--schema {args.schema!r}: not valid JSON: {exc}") from None
        if not isinstance(schema, dict):
            raise ConfigError(f"--schema {args.schema!r}: a JSON Schema must be an object")
    profile = ask_profile(args.model, settings=settings, base_url=args.base_url, price_as=args.price_as)
    printed: list[str] = []

    def show(delta: str) -> None:
        printed.append(delta)
        sys.stdout.write(visible(delta))
        sys.stdout.flush()

    def restart(reason: str) -> None:
        if printed:
            sys.stdout.write("\n")
            printed.clear()
        console.err.print(as_line(("retrying:", "yellow"), f" {reason}"))

    try:
        result = run_blocking(
            lambda: aask(
                profile,
                args.prompt,
                settings=settings,
                system=args.system,
                schema=schema,
                stream=not args.no_stream,
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                on_text=None if args.json else show,
                on_restart=None if args.json else restart,
            )
        )
    except OrchestratorError as exc:
        if args.json and not isinstance(exc, ConfigError):
            print(
                json.dumps(
                    {"error": str(exc), "model": profile.name, "attempts": failed_attempts(exc)}, indent=2
                )
            )
            return EXIT_FAILED
        raise
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return EXIT_OK
    if not printed and result.text:  # structured output through a tool call arrives whole
        sys.stdout.write(visible(result.text))
    if result.tool_calls:
        sys.stdout.write(json.dumps(result.tool_calls))
    sys.stdout.write("\n")
    u = result.usage
    console.err.print(
        as_text(
            f"{result.model}: {u.input_tokens} in ({u.cache_read_tokens} cache read, "
            f"{u.cache_write_tokens} cache write) / {u.output_tokens} out"
            f"{' (estimated)' if u.estimated else ''}"
            f" · {format_usd(result.cost_usd)} · TTFT {format_ms(result.ttft_ms)}"
            f" · {format_ms(result.duration_ms)}"
            f" · {len(result.attempts) or 1} attempt(s)",
            style="dim",
        )
    )
    return EXIT_OK


# --- orch traces -----------------------------------------------------------------------------------------
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
    if not settings.traces_path.exists():
        raise ConfigError(
            f"no trace store at {settings.traces_path}; run a graph first or pass --traces PATH"
        )
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
        table = Table(title=as_text(f"Runs in {settings.traces_path}"), title_justify="left")
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
            raise ConfigError(f"no run {args.run!r} in {settings.traces_path}; see `orch traces list`")
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
        return _traces_reprice(args, store, settings)
    if args.action == "compare":
        return _traces_compare(args, store)
    if args.action == "report":
        return _traces_report(args, store)
    if args.action == "prune":
        return _traces_prune(args, store)
    return _traces_top(args, store, settings)


def _traces_check(args: argparse.Namespace, settings: Settings) -> int:
    """SQLite's own check of the store file (reads only); exit 2 when it is damaged."""
    from orchestrator.tracing.damage import check_store

    result = check_store(settings.traces_path, full=args.full)
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
            raise ConfigError(f"no run {args.run!r} in {settings.traces_path}; see `orch traces list`")
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


def _traces_report(args: argparse.Namespace, store: Any) -> int:
    from orchestrator.tracing.html import report_runs, write_report

    summary = write_report(store, args.html, report_runs(store, args.run, args.last))
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return EXIT_OK
    console.out.print(as_line("wrote ", (summary.path, "bold")))
    console.out.print(as_text(summary.line()))
    return EXIT_OK


def _traces_reprice(args: argparse.Namespace, store: Any, settings: Settings) -> int:
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


def _traces_compare(args: argparse.Namespace, store: Any) -> int:
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


# --- orch init ---------------------------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from orchestrator.providers.modelfiles import LOCAL_MODELS, is_verified
    from orchestrator.scaffold import FILES, scaffold

    made = scaffold(args.directory or args.project, name=args.name)
    console.out.print(as_line("Wrote project ", (made.name, "bold"), f" in {made.root}:"))
    for rel in made.files:
        if FILES.get(rel):
            console.out.print(as_line(f"  {rel:<20} ", (FILES[rel], "dim")))
    steps = [] if made.root.resolve() == Path.cwd().resolve() else [f"cd {shlex.quote(str(made.root))}"]
    models_dir = Settings.resolve(load_manifest(made.root)).models_dir
    if not all(is_verified(spec, models_dir) for spec in LOCAL_MODELS.values()):
        steps.append("orch models build    # once: the local model files")
    steps += [
        'orch run "Summarize: the train was late, so I missed the first half of the meeting."',
        'orch run agent "How many days are there between 2026-03-02 and 2026-03-20?"',
    ]
    console.out.print(as_line(("Next:", "bold")))
    for step in steps:
        console.out.print(as_text(f"  {step}"))
    return EXIT_OK


# --- orch tools --------------------------------------------------------------------------------------------
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


def _add_tools_parser(sub: Any) -> None:
    tools = sub.add_parser("tools", help="the tool catalog: list, search, evaluate retrieval")
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
            p.add_argument("query")
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
    tools.set_defaults(func=cmd_tools)


# --- entry point -------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orch", description="Run racehorse-led agent graphs; inspect their cost."
    )
    parser.add_argument(
        "--project",
        type=non_empty_str,
        default=".",
        help="project folder holding pyproject.toml (default: .)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a graph named in the manifest")
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

    ev = sub.add_parser("eval", help="run labelled tasks through a graph: right or wrong, steps, time, cost")
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

    models = sub.add_parser(
        "models", help="list model profiles and prices; build or verify local model files"
    )
    models.add_argument("action", nargs="?", choices=["list", "build", "verify"], default="list")
    models.add_argument("names", nargs="*", help="local model names for build / verify (default: all)")
    models.add_argument("--force", action="store_true", help="rebuild even if verified")
    models.add_argument("--all", action="store_true", help="also every chat model of the price table")
    models.add_argument(
        "--provider", type=non_empty_str, help="only this provider's models (implies the price table's)"
    )
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    tr = sub.add_parser(
        "trial", help="test a model for a worker's slot on labelled items: accuracy, validity, cost, verdict"
    )
    tr.add_argument(
        "model", type=non_empty_str, help="the model to try, provider:model (e.g. local:qwen2.5-0.5b)"
    )
    tr.add_argument("--worker", required=True, type=non_empty_str, help="the worker whose slot it would take")
    tr.add_argument(
        "--data",
        required=True,
        type=non_empty_str,
        metavar="FILE",
        help='JSON Lines: {"input": ..., "expected": ...}',
    )
    tr.add_argument(
        "--base-url", type=non_empty_str, help="the endpoint of an openai-compat:/vllm:/ollama: model"
    )
    tr.add_argument(
        "--price-as", type=non_empty_str, metavar="MODEL", help="price it as this price-table model"
    )
    tr.add_argument("--limit", type=positive_int, help="only the first N items")
    tr.add_argument("--json", action="store_true", help="print one JSON object")
    tr.add_argument(
        "--no-compare", action="store_true", help="skip the run of the model bound to the slot now"
    )
    tr.add_argument(
        "--judge",
        nargs="?",
        const="controller",
        type=non_empty_str,
        metavar="SLOT",
        help="free-text workers: the model bound to SLOT (default: controller, the racehorse) scores each "
        "output 1-5 beside the validators; its cost is reported apart",
    )
    tr.add_argument(
        "--traces", type=non_empty_str, help="trace store path (default: $ORCH_TRACES or the user data dir)"
    )
    tr.set_defaults(func=cmd_trial)

    ask = sub.add_parser("ask", help="one measured call to a model: text as it arrives, then usage and cost")
    ask.add_argument(
        "model",
        type=non_empty_str,
        help="provider:model, e.g. openai:gpt-4o-mini, anthropic:claude-haiku-4-5",
    )
    ask.add_argument("prompt")
    ask.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ask.add_argument(
        "--base-url",
        type=non_empty_str,
        help="API root (OpenAI-compatible: with /v1; Anthropic: without /v1)",
    )
    ask.add_argument(
        "--schema",
        type=non_empty_str,
        metavar="FILE",
        help="a JSON Schema file: ask for JSON output of that shape",
    )
    ask.add_argument("--no-stream", action="store_true", help="one plain request (TTFT is then null)")
    ask.add_argument("--system", help="a system prompt")
    ask.add_argument(
        "--max-tokens", type=positive_int, default=1024, help="output tokens at most (default 1024)"
    )
    ask.add_argument("--temperature", type=non_negative_float, help="sampling temperature, 0 or more")
    ask.add_argument("--price-as", type=non_empty_str, help="price the model as this price-table key")
    ask.add_argument(
        "--prices", type=non_empty_str, help="your own price file (LiteLLM layout); default $ORCH_PRICES"
    )
    ask.set_defaults(func=cmd_ask)

    traces = sub.add_parser("traces", help="inspect the trace store")
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
        p.add_argument("--traces", type=non_empty_str, help="trace store path")
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
    rp.add_argument("--traces", type=non_empty_str, help="trace store path")
    cp = tsub.add_parser("compare", help="two runs node by node: cost, tokens, time, count, models")
    cp.add_argument("run_a", type=non_empty_str, help="run id (or a unique prefix)")
    cp.add_argument("run_b", type=non_empty_str, help="run id (or a unique prefix)")
    cp.add_argument("--json", action="store_true")
    cp.add_argument("--traces", type=non_empty_str, help="trace store path")
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
    hp.add_argument("--traces", type=non_empty_str, help="trace store path")
    traces.set_defaults(func=cmd_traces)

    init = sub.add_parser("init", help="start a project folder: manifest, a graph, a worker and a tool pack")
    init.add_argument(
        "directory", nargs="?", type=non_empty_str, help="the folder, created if missing (default: --project)"
    )
    init.add_argument(
        "--name", type=non_empty_str, help="the project's name in pyproject.toml (default: from the folder's)"
    )
    init.set_defaults(func=cmd_init)
    _add_tools_parser(sub)
    return parser


class _ErrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        style = "red" if record.levelno >= logging.ERROR else "dim"
        console.err.print(
            as_text(f"[{record.name.removeprefix('orchestrator.')}] {record.getMessage()}", style=style)
        )


def _show_library_logs() -> None:
    """The library logs (model-file builds, ledger problems); the CLI shows those records on stderr."""
    logger = logging.getLogger("orchestrator")
    if not any(isinstance(h, _ErrHandler) for h in logger.handlers):
        logger.addHandler(_ErrHandler())
        logger.setLevel(logging.INFO)
    # The MCP SDK logs a malformed server message with its traceback; with no handler, Python's last-resort
    # handler prints all of it in the middle of a run. One line instead (the call then fails as a timeout).
    sdk = logging.getLogger("mcp")
    if not any(isinstance(h, _ErrHandler) for h in sdk.handlers):
        sdk.addHandler(_ErrHandler())
        sdk.setLevel(logging.WARNING)


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any, **__: Any
) -> None:
    """Warnings as one plain line (no source path, no code line)."""
    console.err.print(as_line(("warning:", "yellow"), f" {message}"))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:
        return _pipe_closed()


def _pipe_closed() -> int:
    """The reader of our output went away (`| head`): stop quietly, as Unix tools do.

    Python flushes stdout once more at exit; pointed at /dev/null, that flush can't fail again
    ("Exception ignored ... BrokenPipeError"). Nothing is left to print, on either console.
    """
    console.out.quiet = console.err.quiet = True
    with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor has nothing to flush
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_PIPE


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors (a bad option value: exit 2) and --help (0)
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    warnings.showwarning = _show_warning
    _show_library_logs()
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is then caught like any other write's
        return code
    except ConfigError as exc:
        console.err.print(as_line(("error:", "red"), f" {exc}"))
        return EXIT_CONFIG
    except OrchestratorError as exc:
        console.err.print(as_line(("run error:", "red"), f" {exc}"))
        return EXIT_FAILED
    except KeyboardInterrupt:
        console.err.print("[yellow]cancelled[/yellow]")
        return EXIT_CANCELLED


if __name__ == "__main__":
    sys.exit(main())
