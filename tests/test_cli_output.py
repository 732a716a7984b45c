"""What `orch` writes to a terminal or a pipe: control characters from users, tools and models are shown,
never obeyed; a reader that closes the pipe early ends the command quietly. Real `orch` subprocesses."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from loopback import Loopback
from test_cli import PROJECT, orch
from test_rendering import _fill
from wire import openai_json, openai_stream, openai_usage

from orchestrator import cli
from orchestrator.cli import trial
from orchestrator.cli.console import visible
from orchestrator.tracing.store import TraceStore

# What a hostile text holds: a terminal reset, cursor home, clear screen, a window title (OSC ... BEL),
# a C1 CSI, a carriage return that would overwrite the line, DEL.
RESET = "\x1bc\x1b[H\x1b[J"
TITLE = "\x1b]0;pwned\x07"
OTHERS = "\x9b2J\rX\x7f"
HOSTILE = RESET + TITLE + OTHERS
SHOWN = r"\x1bc\x1b[H\x1b[J" + r"\x1b]0;pwned\x07" + r"\x9b2J\rX\x7f"
# Raw control characters a terminal would act on: C0 but newline and tab, DEL, C1.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")

TASK = f"Shout 'hello' {TITLE}back"
STEPS = [
    {"plan": [{"tool": "shout the text back"}]},
    {"action": "call_tool", "tool": "shout", "args": {"text": "hello"}},
    {"action": "final", "answer": f"It said HELLO{HOSTILE}\n\tthat is all"},
]
DEFS = """
import json
from langchain_core.tools import tool
from orchestrator.testing import ScriptedChatModel

@tool
def shout(text: str) -> str:
    '''Shout a text back, in capitals.'''
    return text.upper() + {hostile!r}

TOOLS = [shout]

def controller():
    return ScriptedChatModel(replies=[json.dumps(s) for s in {steps!r}], by_turn=True)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text(PROJECT.format())
    (root / "defs.py").write_text(textwrap.dedent(DEFS.format(steps=STEPS, hostile=HOSTILE)))
    return root


def _clean(*texts: str) -> None:
    for text in texts:
        assert not RAW.search(text), repr(RAW.search(text))


def test_a_run_shows_control_characters_of_the_answer_the_tool_and_the_request(project: Path) -> None:
    proc = orch(project, "run", "agent", TASK)
    assert proc.returncode == 0, proc.stderr
    _clean(proc.stdout, proc.stderr)
    assert f"Answer: It said HELLO{SHOWN}\n" in proc.stdout and "that is all" in proc.stdout  # newline kept
    assert r"\t" not in proc.stdout  # and the tab (rich lays it out as spaces)
    assert f"HELLO{SHOWN}" in proc.stderr  # the tool's output on its progress line

    # JSON keeps the text exact (escaped by JSON itself)
    proc = orch(project, "run", "agent", TASK, "--json")
    assert json.loads(proc.stdout)["answer"] == f"It said HELLO{HOSTILE}\n\tthat is all"
    _clean(proc.stdout, proc.stderr)

    data = project / "tasks.jsonl"
    data.write_text(json.dumps({"id": f"t{TITLE}", "category": f"c{RESET}", "input": TASK, "expect": ["x"]}))
    proc = orch(project, "eval", "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    _clean(proc.stdout, proc.stderr)
    assert r"t\x1b]0;pwned\x07" in proc.stdout and r"c\x1bc\x1b[H\x1b[J" in proc.stdout


def test_trace_commands_show_control_characters(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    run_id = _fill(db, HOSTILE)
    for args in (
        ("list",),
        ("show", run_id),
        ("top",),
        ("top", "--by", "model"),
        ("top", "--by", "tool"),
    ):
        proc = orch(tmp_path, "traces", *args, "--traces", str(db))
        assert proc.returncode == 0, proc.stderr
        _clean(proc.stdout, proc.stderr)
        assert SHOWN[:20] in proc.stdout, (args, proc.stdout)
    shown = orch(tmp_path, "traces", "show", run_id, "--traces", str(db)).stdout
    assert f"error: {SHOWN}" in shown and f"-> {SHOWN}" in shown


def test_the_tool_list_shows_control_characters(tmp_path: Path) -> None:
    catalog = tmp_path / "c.jsonl"
    tool = {
        "name": "get_weather",
        "description": f"The weather {TITLE} now",
        "parameters": {"type": "object"},
    }
    catalog.write_text(json.dumps(tool) + "\n")
    index = str(tmp_path / "i.db")
    for args in (
        ("list", "--catalog", str(catalog), "--no-packs"),
        (
            "search",
            f"weather {RESET}",
            "--catalog",
            str(catalog),
            "--no-packs",
            "--method",
            "bm25",
            "--index",
            index,
        ),
    ):
        proc = orch(tmp_path, "tools", *args)
        assert proc.returncode == 0, proc.stderr
        _clean(proc.stdout, proc.stderr)
        assert r"The weather \x1b]0;pwned\x07 now" in proc.stdout


def test_errors_that_quote_a_value_show_control_characters(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    _fill(db, "x")
    slot = f"s{TITLE}"
    proc = orch(
        tmp_path, "traces", "reprice", "--last", "1", "--slot", f"{slot}=a:b", "--slot", f"{slot}=c:d"
    )
    assert proc.returncode == 2 and "given twice" in proc.stderr
    _clean(proc.stderr)


def _ask(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "ask", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_ask_shows_control_characters_of_the_stream_and_the_summary(loopback: Loopback) -> None:
    # the title sequence split across two deltas: each ESC alone is still shown
    loopback.push(openai_stream(["Hi \x1b", "]0;pwned\x07 the", f"re {RESET}"], openai_usage(5, 3)))
    model = f"vllm:qwen{TITLE}"  # any name for an OpenAI-compatible server: it is in the summary
    proc = _ask(model, f"hi {TITLE}", "--base-url", loopback.url + "/v1")
    assert proc.returncode == 0, proc.stderr
    _clean(proc.stdout, proc.stderr)
    assert proc.stdout == r"Hi \x1b]0;pwned\x07 there \x1bc\x1b[H\x1b[J" + "\n"
    assert r"vllm:qwen\x1b]0;pwned\x07" in proc.stderr and "5 in" in proc.stderr

    loopback.push(openai_json(f"plain {TITLE}", openai_usage(5, 1)))
    proc = _ask(model, "hi", "--base-url", loopback.url + "/v1", "--no-stream")
    assert proc.returncode == 0, proc.stderr
    _clean(proc.stdout, proc.stderr)
    assert proc.stdout == r"plain \x1b]0;pwned\x07" + "\n"


def test_library_logs_and_judge_lines_show_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    """The renderers no subprocess reaches cheaply: the log handler and the trial judge's lines."""
    cli._ErrHandler().emit(logging.LogRecord("orchestrator.x", logging.WARNING, "", 0, HOSTILE, None, None))
    item = type("I", (), {"judge_score": 1, "input": f"in {TITLE}", "judge_reason": HOSTILE, "valid": True})()
    report = type("R", (), {"judge": f"j{TITLE}", "model": f"m{RESET}", "items": [item], "baseline": None})()
    trial._print_judged(report)
    captured = capsys.readouterr()
    _clean(captured.out, captured.err)
    assert SHOWN in captured.err and SHOWN in captured.out and r"m\x1bc" in captured.out


def test_visible_keeps_text_and_newlines_and_tabs() -> None:
    assert visible("a\nb\tc é [bold]") == "a\nb\tc é [bold]"
    assert visible(HOSTILE) == SHOWN


# --- a reader that closes the pipe early ------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 runs, each with a node of its own: every command below prints far more than a pipe holds."""
    path = tmp_path_factory.mktemp("pipe") / "traces.db"
    store = TraceStore(path)
    now = time.time_ns()
    rows = []
    for i in range(3000):
        run_id = f"run-{i:05d}"
        store.start_run(run_id, "g", config_hash="h", version="v")
        store.end_run(run_id, status="ok", cost_usd=0.001, answer="a")
        span = {"trace_id": "t", "run_id": run_id, "span_id": f"s{i}", "kind": "chat", "status": "ok"}
        span.update(name=f"node-{i}", node=f"node-{i}", model="m", start_ns=now, end_ns=now + 10**6)
        rows.append({**span, "duration_ms": 1.0, "input_tokens": 3, "output_tokens": 4, "cost_usd": 0.001})
    store.write_spans(rows)
    store.close()
    return path


@pytest.mark.parametrize(
    "args",
    [
        ("top", "--json"),
        ("list", "--json", "--limit", "3000"),
        ("top",),
        ("list", "--limit", "3000"),
    ],
)
def test_a_closed_pipe_ends_the_command_quietly(big_store: Path, args: tuple[str, ...]) -> None:
    argv = [sys.executable, "-m", "orchestrator", "traces", *args, "--traces", str(big_store)]
    whole = subprocess.run(argv, capture_output=True, timeout=120)
    assert whole.returncode == 0 and len(whole.stdout) > 4 * 65536  # far more than a pipe holds
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        head = proc.stdout.read(100)  # `| head -c 100`: read a little, then go away
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    assert head == whole.stdout[:100]
    for noise in ("Traceback", "BrokenPipeError", "Exception ignored", "Broken pipe"):
        assert noise not in stderr, stderr
    # 141, as a Unix tool killed by SIGPIPE; a table whose last write the kernel cut short
    # may end before Python sees the closed pipe at all: then it ends 0, quietly too
    assert code == 141 if "--json" in args else code in (0, 141), (code, stderr)
