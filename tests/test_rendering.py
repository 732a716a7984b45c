"""Text from users, tools and models is rendered as text by every CLI command, whatever markup it holds."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from orchestrator import cli
from orchestrator.cli import console, run
from orchestrator.cli import eval as eval_command
from orchestrator.cost.ledger import Ledger
from orchestrator.evals.evaluate import EvalReport, TaskResult
from orchestrator.run.events import RunResult
from orchestrator.tracing.store import TraceStore

# Pieces that rich would read as markup, styles, links, emoji codes or escapes, plus plain words.
PIECES = st.sampled_from(
    [
        *("[/]", "[bold]", "[/bold]", "[red]", "[link=http://x]", "[on blue]", "\\", "\\[", "[", "]"),
        *(
            ":smile:",
            "[/red]",
            "[b i]",
            "[dim]",
            "alpha",
            "beta",
            " ",
            "$",
            "%s",
            "{0}",
            "[ok]",
            "é",
            "[x=1]",
        ),
    ]
)
HOSTILE = st.lists(PIECES, min_size=1, max_size=8).map("".join)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    screen = Console(file=buffer, width=400, highlight=False, emoji=False, soft_wrap=True)
    monkeypatch.setattr(console, "out", screen)  # every command writes through console.out and console.err
    monkeypatch.setattr(console, "err", screen)
    return buffer


def _fill(path: Path, text: str) -> str:
    store = TraceStore(path)
    run_id = "r" + str(abs(hash(text)))[:10]
    store.start_run(run_id, text, config_hash="h", version="v")
    store.end_run(run_id, status="ok", cost_usd=0.001, answer=text, error=text)
    now = time.time_ns()
    span = {
        "trace_id": "t",
        "run_id": run_id,
        "start_ns": now,
        "end_ns": now + 1_000_000,
        "duration_ms": 1.0,
        "input_tokens": 3,
        "output_tokens": 4,
        "cost_usd": 0.001,
    }
    store.write_spans(
        [
            {**span, "span_id": "root", "name": f"invoke_workflow {text}", "kind": "run", "status": "ok"},
            {
                **span,
                "span_id": "chat",
                "parent_id": "root",
                "name": text,
                "kind": "chat",
                "node": text,
                "model": text,
                "action": text,
                "status": "ok",
            },
            {
                **span,
                "span_id": "tool",
                "parent_id": "root",
                "name": f"execute_tool {text}",
                "kind": "tool",
                "node": "call_tool",
                "tool": text,
                "status": "error",
                "status_message": f"error: {text}",
            },
        ]
    )
    store.close()
    return run_id


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=HOSTILE)
def test_trace_commands_render_any_text(tmp_path: Path, captured: io.StringIO, text: str) -> None:
    db = tmp_path / f"t{abs(hash(text))}.db"
    run_id = _fill(db, text)
    for argv in (
        ["traces", "list", "--traces", str(db)],
        ["traces", "show", run_id, "--traces", str(db)],
        ["traces", "top", "--traces", str(db)],
        ["traces", "top", "--by", "model", "--traces", str(db)],
        ["traces", "top", "--by", "tool", "--run", run_id, "--traces", str(db)],
    ):
        captured.seek(0)
        captured.truncate()
        assert cli.main(argv) == 0, captured.getvalue()
        shown = captured.getvalue()
        if argv[1] == "show":
            assert f"{run_id}" in shown and "[ok]" in shown  # the status is not eaten as markup
            assert f"error: {text}" in shown  # the tool error, character for character
            assert f"-> {text}" in shown


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=HOSTILE)
def test_run_and_eval_results_render_any_text(captured: io.StringIO, text: str) -> None:
    captured.seek(0)
    captured.truncate()
    result = RunResult(
        run_id=text, status="failed", answer=text, ledger=Ledger.from_state(text, None), error=text
    )
    run._print_result(result)
    shown = captured.getvalue()
    assert f"Answer: {text}" in shown and f"run: {text}" in shown
    task = TaskResult(
        id=text,
        category=text,
        input=text,
        ok=False,
        status="ok",
        answer=text,
        missing=[text],
        forbidden=[],
        steps=[text],
        ungrounded=[text],
        seconds=1.0,
        input_tokens=1,
        output_tokens=1,
        cost_usd=None,
        run_id="r",
    )
    eval_command._print_eval(EvalReport(graph=text, tasks=[task]))
    assert json.dumps(EvalReport(graph=text, tasks=[task]).totals())  # and the JSON form holds too
