"""The CLI in real subprocesses: exit codes, clear errors, traces commands, kill + resume, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# The request must hold every value the scripted calls use (tool arguments are checked against it).
TASK = "How many days from 2026-03-02 to 2026-03-20? Count the words of 'one two three'"
# Model decisions only: the graph itself searches for each tool part's tools (find_tools) from the plan.
STEPS = [
    {"plan": [{"tool": "days between 2026-03-02 and 2026-03-20"}, {"tool": "count the words of the text"}]},
    {"action": "call_tool", "tool": "date_diff", "args": {"start": "2026-03-02", "end": "2026-03-20"}},
    {"action": "call_tool", "tool": "word_count", "args": {"text": "one two three"}},
    {"action": "final", "answer": "18 days, 3 words"},
]

PROJECT = """
[project]
name = "scripted-project"
version = "0"

[tool.orchestrator]
default_graph = "agent"
tool_packs = ["defs:TOOLS"]

[tool.orchestrator.graphs]
agent = "orchestrator.graph:build_agent_graph"

[tool.orchestrator.slots]
controller = {{ model = "python:defs:controller", role = "racehorse", prices = {{ input = 1e-6, output = 2e-6 }} }}

[tool.orchestrator.limits]
max_steps = 8
"""

DEFS = """
import json, os
from langchain_core.tools import tool
from orchestrator.testing import ScriptedChatModel

@tool
def date_diff(start: str, end: str) -> int:
    '''Number of days between two ISO dates.'''
    import datetime as dt
    return (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days

@tool
def word_count(text: str) -> int:
    '''Count the words in a text.'''
    return len(text.split())

TOOLS = [date_diff, word_count]
STEPS = {steps!r}

def controller():
    return ScriptedChatModel(replies=[json.dumps(s) for s in STEPS], by_turn=True,
                             delay_s=float(os.environ.get("SCRIPT_DELAY", "0")),
                             log_path=os.environ.get("SCRIPT_LOG"))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text(PROJECT.format())
    (root / "defs.py").write_text(textwrap.dedent(DEFS.format(steps=STEPS)))
    return root


def orch(
    project: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "ORCH_TRACES": str(project / "traces.db"),
        "ORCH_CHECKPOINTS": str(project / "ckpt.db"),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "--project", str(project), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def test_run_then_traces_commands(project: Path) -> None:
    proc = orch(project, "run", "agent", TASK, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "ok" and result["answer"] == "18 days, 3 words"
    assert result["ledger"]["cost_usd"] > 0
    run_id = result["run_id"]
    assert "controller" in proc.stderr and "find_tools" in proc.stderr  # per-node progress

    listed = json.loads(orch(project, "traces", "list", "--json").stdout)
    assert listed[0]["run_id"] == run_id and listed[0]["status"] == "ok"
    assert listed[0]["cost_usd"] == pytest.approx(result["ledger"]["cost_usd"])

    shown = json.loads(orch(project, "traces", "show", run_id[:8], "--json").stdout)
    (root,) = shown["spans"]
    assert root["name"] == "invoke_workflow agent"
    assert [c["node"] for c in root["children"]][:3] == ["controller", "find_tools", "controller"]

    top = json.loads(orch(project, "traces", "top", "--by", "node", "--json").stdout)
    assert {"controller", "find_tools", "call_tool"} == {h["key"] for h in top}
    assert top[0]["key"] == "controller" and top[0]["share"] == pytest.approx(1.0)
    tools = json.loads(orch(project, "traces", "top", "--by", "tool", "--json").stdout)
    assert {h["key"] for h in tools} == {"date_diff", "word_count"}

    human = orch(project, "run", "agent", TASK)
    assert human.returncode == 0
    assert "Answer: 18 days, 3 words" in human.stdout and "Cost by node" in human.stdout


def test_unknown_graph_is_a_config_error_without_traceback(project: Path) -> None:
    proc = orch(project, "run", "agnet", "x")
    assert proc.returncode == 2
    assert "unknown graph 'agnet'; did you mean 'agent'?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_malformed_manifest(project: Path) -> None:
    text = (project / "pyproject.toml").read_text().replace("max_steps = 8", "max_stpes = 8")
    (project / "pyproject.toml").write_text(text)
    proc = orch(project, "run", "agent", "x")
    assert proc.returncode == 2
    assert "[tool.orchestrator].limits.max_stpes" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_model_suggests(project: Path) -> None:
    text = (project / "pyproject.toml").read_text().replace("python:defs:controller", "local:qwen2.5-1.5")
    (project / "pyproject.toml").write_text(text)
    proc = orch(project, "run", "agent", "x")
    assert proc.returncode == 2
    assert "did you mean 'qwen2.5-1.5b'" in proc.stderr and "Traceback" not in proc.stderr


def test_failed_run_exits_1_and_is_kept_in_the_store(project: Path) -> None:
    defs = (project / "defs.py").read_text().replace("STEPS = [", "STEPS = ['{broken', '{broken again', ")
    (project / "defs.py").write_text(
        defs.replace(
            "json.dumps(s) for s in STEPS", "s if isinstance(s, str) else json.dumps(s) for s in STEPS"
        )
    )
    proc = orch(project, "run", "agent", "x")
    assert proc.returncode == 1
    assert "not valid JSON" in proc.stderr
    (run,) = json.loads(orch(project, "traces", "list", "--json").stdout)
    assert run["status"] == "failed" and "not valid JSON" in run["error"]
    shown = json.loads(orch(project, "traces", "show", run["run_id"], "--json").stdout)
    assert shown["spans"][0]["status"] == "error"


def _checkpoints(project: Path, run_id: str) -> int:
    try:
        with sqlite3.connect(project / "ckpt.db") as db:
            return int(
                db.execute("select count(*) from checkpoints where thread_id = ?", [run_id]).fetchone()[0]
            )
    except sqlite3.Error:
        return 0


def _start(project: Path, log: Path, run_id: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "ORCH_TRACES": str(project / "traces.db"),
        "ORCH_CHECKPOINTS": str(project / "ckpt.db"),
        "SCRIPT_DELAY": "1.0",
        "SCRIPT_LOG": str(log),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "--project",
            str(project),
            "run",
            "agent",
            TASK,
            "--run-id",
            run_id,
        ],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # as from a terminal: a shell's background job (nohup, `&`) starts children with Ctrl-C ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_lines(log: Path, n: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the scripted run did not progress")


def test_sigkill_then_resume_does_not_pay_twice(project: Path) -> None:
    log = project / "calls.log"
    proc = _start(project, log, "killme")
    # Two decisions made (the plan, the date_diff call). Their nodes, the call itself and the fixed search
    # for the second part (no model call) checkpoint within milliseconds; then the third decision starts.
    _wait_for_lines(log, 2, proc)
    time.sleep(0.4)  # now inside the third (1 s) model call: the word_count call
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert _checkpoints(project, "killme") > 0
    assert len(log.read_text().splitlines()) == 2

    (run,) = json.loads(orch(project, "traces", "list", "--json").stdout)
    assert run["run_id"] == "killme" and run["status"] == "interrupted"  # its dead process is detected
    assert "orch run --resume killme" in run["error"]

    resumed = orch(project, "run", "--resume", "killme", "--json", env={"SCRIPT_LOG": str(log)})
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["status"] == "ok" and result["run_id"] == "killme"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == STEPS  # each decision made exactly once across both processes
    controller = next(n for n in result["ledger"]["nodes"] if n["node"] == "controller")
    assert controller["calls"] == len(STEPS)  # model calls only: plan, two tool calls, the answer
    roots = json.loads(orch(project, "traces", "show", "killme", "--json").stdout)["spans"]
    assert [r["name"].split(" (")[0] for r in roots] == ["interrupted attempt", "invoke_workflow agent"]
    chats = [s for s in _walk(roots) if s["kind"] == "chat"]
    assert len(chats) == len(STEPS)
    assert sum(c["cost_usd"] for c in chats) == pytest.approx(result["ledger"]["cost_usd"])


def _walk(spans: list[dict[str, object]]) -> list[dict[str, object]]:
    out = []
    for s in spans:
        out.append(s)
        out.extend(_walk(s["children"]))  # type: ignore[arg-type]
    return out


def test_ctrl_c_leaves_a_resumable_run(project: Path) -> None:
    log = project / "calls.log"
    proc = _start(project, log, "interrupt")
    _wait_for_lines(log, 1, proc)  # the plan is made
    time.sleep(0.4)  # now inside the second (1 s) model call: the date_diff call
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "orch run --resume interrupt" in stderr
    (run,) = json.loads(orch(project, "traces", "list", "--json").stdout)
    assert run["status"] == "cancelled"
    spans = json.loads(orch(project, "traces", "show", "interrupt", "--json").stdout)["spans"]
    cancelled = [s for s in spans if json.loads(s["attributes"]).get("orchestrator.cancelled")]
    assert cancelled and cancelled[0]["status_message"] == "cancelled"
    resumed = orch(project, "run", "--resume", "interrupt", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["answer"] == "18 days, 3 words"


def test_python_dash_m_and_models_list() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "models", "--json"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    names = [m["name"] for m in json.loads(proc.stdout)]
    assert names == ["local:qwen2.5-1.5b", "local:qwen2.5-0.5b"]


def test_models_verify_refuses_a_corrupt_file(tmp_path: Path) -> None:
    from orchestrator.providers.modelfiles import LOCAL_MODELS

    models = tmp_path / "models"
    models.mkdir()
    (models / LOCAL_MODELS["qwen2.5-0.5b"].filename).write_bytes(b"GGUF not really")
    env = {**os.environ, "ORCH_MODELS_DIR": str(models)}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "models", "verify", "qwen2.5-0.5b"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "expected 1d9614638d18024d" in proc.stderr and "orch models build qwen2.5-0.5b" in proc.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "orchestrator", "models", "verify", "qwen2.5-1.5b"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert missing.returncode == 2 and "is missing" in missing.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "orchestrator", "models", "verify", "qwen3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert unknown.returncode == 2 and "unknown model 'qwen3'" in unknown.stderr


def test_eval_reports_each_task_and_gates_on_accuracy(project: Path) -> None:
    data = project / "tasks.jsonl"
    data.write_text(
        json.dumps({"id": "days", "category": "dates", "input": TASK, "expect": ["18"], "forbid": ["19"]})
        + "\n"
        + json.dumps({"id": "words", "category": "text", "input": TASK, "expect_all": ["4 words"]})
        + "\n"
    )
    proc = orch(project, "eval", "--data", str(data), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [(t["id"], t["ok"]) for t in report["tasks"]] == [("days", True), ("words", False)]
    assert report["tasks"][1]["missing"] == ["4 words"]
    assert report["tasks"][0]["steps"][:2] == ["controller:find_tools", "find_tools"]
    assert report["total"]["right"] == 1 and report["by_category"]["dates"]["accuracy"] == 1.0
    assert report["total"]["ungrounded_steps"] == 0

    human = orch(project, "eval", "agent", "--data", str(data), "--limit", "1")
    assert human.returncode == 0, human.stderr
    assert "right days" in human.stderr and "By category" in human.stdout

    gated = orch(project, "eval", "--data", str(data), "--min-accuracy", "0.9")
    assert gated.returncode == 1 and "below --min-accuracy" in gated.stderr


def test_eval_bad_task_file_is_a_clear_error(project: Path) -> None:
    data = project / "tasks.jsonl"
    data.write_text('{"input": "x", "expect": ["1"]}\n{"input": ""}\n')
    proc = orch(project, "eval", "--data", str(data))
    assert proc.returncode == 2
    assert 'tasks.jsonl:2: "input" must be a non-empty string' in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_confirmed_call_waits_and_resumes_with_approve(project: Path) -> None:
    manifest = project / "pyproject.toml"
    manifest.write_text(
        manifest.read_text().replace(
            'tool_packs = ["defs:TOOLS"]', 'tool_packs = ["defs:TOOLS"]\nconfirm_tools = ["word_count"]'
        )
    )
    waiting = orch(project, "run", "agent", TASK, "--run-id", "w1")
    assert waiting.returncode == 3, waiting.stderr
    assert 'waits for approval of word_count({"text": "one two three"})' in waiting.stderr
    assert "orch run --resume w1 --approve word_count (or --deny)" in waiting.stderr
    done = orch(project, "run", "--resume", "w1", "--approve", "word_count", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"] == "18 days, 3 words"
    wrong = orch(project, "run", "agent", TASK, "--approve", "word_cont")
    assert (
        wrong.returncode == 2
        and "no tool 'word_cont' in the catalog; did you mean 'word_count'" in wrong.stderr
    )


def test_the_terminal_prompt_names_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.cli import run

    calls = [
        {"tool": "send_mail", "args": {"to": "[bold]x[/bold]"}},
        {"tool": "delete_row", "args": {"id": 3}},
    ]
    result = type(
        "R", (), {"waiting": [{"id": "i", "value": {"type": "approve_tool_calls", "calls": calls}}]}
    )()
    replies = iter(["y", "n"])
    monkeypatch.setattr("builtins.input", lambda: next(replies))
    assert run._ask_approval(result) == ["send_mail"]
    assert run._call_text(calls[0]) == 'send_mail({"to": "[bold]x[/bold]"})'  # rendered as plain text


def test_the_cli_imports_no_model_stack_until_a_command_runs() -> None:
    """`orch --help`, and every command before its handler runs, load none of LangChain, LangGraph, DBOS or an
    HTTP client: `orch traces top` on a big store answered in 5 ms and took 1.5 s, importing `orch trial`'s
    tuner (and through it the chat models) for a default shown in its help."""
    import subprocess
    import sys

    heavy = ("langchain_core", "langgraph", "dbos", "httpx", "psycopg", "orchestrator.evals.tune")
    code = f"import sys, orchestrator.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
