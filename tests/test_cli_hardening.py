"""Regression tests for defects a new user met on day one: markup in text, bad paths, inputs, run ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_cli import DEFS, PROJECT, STEPS, TASK, orch

MARKUP_TASK = "Count the words in this sentence: 'alpha [/] beta [bold]gamma'"
MARKUP_STEPS = [
    {"plan": [{"tool": "count the words of the sentence"}]},
    {"action": "call_tool", "tool": "word_count", "args": {"text": "alpha [/] beta [bold]gamma"}},
    {"action": "final", "answer": "4 words in 'alpha [/] beta [bold]gamma'"},
]


def _project(root: Path, steps: list[dict[str, object]], manifest_extra: str = "") -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(PROJECT.format() + manifest_extra)
    (root / "defs.py").write_text(textwrap.dedent(DEFS.format(steps=steps)))
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return _project(tmp_path / "proj", STEPS)


def test_text_that_looks_like_markup_is_shown_as_it_is(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj", MARKUP_STEPS)
    proc = orch(project, "run", "agent", MARKUP_TASK)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Answer: 4 words in 'alpha [/] beta [bold]gamma'" in proc.stdout
    assert "alpha [/] beta [bold]gamma" in proc.stderr  # the progress lines too
    (run,) = json.loads(orch(project, "traces", "list", "--json").stdout)
    assert run["status"] == "ok"
    shown = orch(project, "traces", "show", run["run_id"])
    assert shown.returncode == 0 and "[ok]" in shown.stdout  # the status is not eaten as markup
    for args in (("traces", "list"), ("traces", "top"), ("traces", "top", "--by", "tool")):
        listed = orch(project, *args)
        assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr


@pytest.mark.parametrize("kind", ["directory", "not sqlite", "unwritable"])
def test_a_bad_trace_store_path_is_one_clear_line(project: Path, kind: str) -> None:
    if kind == "directory":
        bad = project / "adir"
        bad.mkdir()
    elif kind == "not sqlite":
        bad = project / "notes.db"
        bad.write_text("these are my notes, not a database\n" * 100)
    else:
        bad = Path("/proc/orch-no-such-dir/traces.db")  # can't be created, even by root
    for args in (("traces", "list"), ("run", "agent", TASK)):
        proc = orch(project, *args, env={"ORCH_TRACES": str(bad)})
        if kind == "unwritable" and args[0] == "traces":
            assert proc.returncode == 2 and "no trace store" in proc.stderr  # nothing there to read
            continue
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(bad) in lines[0] and "ORCH_TRACES" in lines[0], proc.stderr


@pytest.mark.parametrize("kind", ["directory", "not sqlite"])
def test_a_bad_checkpoint_path_is_one_clear_line(project: Path, kind: str) -> None:
    bad = project / ("adir" if kind == "directory" else "junk.db")
    if kind == "directory":
        bad.mkdir()
    else:
        bad.write_text("not a database\n" * 100)
    proc = orch(project, "run", "agent", TASK, env={"ORCH_CHECKPOINTS": str(bad)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "ORCH_CHECKPOINTS" in lines[0], proc.stderr


def test_manifest_paths_are_relative_to_the_project_not_the_current_folder(tmp_path: Path) -> None:
    project = _project(tmp_path / "proj", STEPS)
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        text.replace('default_graph = "agent"', 'default_graph = "agent"\ntraces = "mytraces.db"')
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORCH_TRACES"}
    env["ORCH_CHECKPOINTS"] = str(project / "ckpt.db")
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--project", str(project), "run", "agent", TASK],
        capture_output=True,
        text=True,
        env=env,
        cwd=elsewhere,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (project / "mytraces.db").exists()
    assert not (elsewhere / "mytraces.db").exists()


def test_input_from_stdin_from_a_file_and_with_the_default_graph(project: Path, tmp_path: Path) -> None:
    piped = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--project", str(project), "run", "agent", "-", "--json"],
        input=TASK,
        capture_output=True,
        text=True,
        env={**os.environ, "ORCH_TRACES": str(project / "t.db"), "ORCH_CHECKPOINTS": str(project / "c.db")},
        timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["answer"] == "18 days, 3 words"
    task_file = tmp_path / "task.txt"
    task_file.write_text(TASK + "\n" + "padding line\n" * 20_000)  # ~260 KB: more than argv should carry
    from_file = orch(project, "run", "agent", "--input-file", str(task_file), "--json")
    assert from_file.returncode == 0, from_file.stderr
    default = orch(project, "run", TASK, "--json")  # no graph named: the manifest's default_graph
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout)["answer"] == "18 days, 3 words"
    missing = orch(project, "run", "agent", "--input-file", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and "nope.txt" in missing.stderr and "Traceback" not in missing.stderr


def test_run_id_prefixes_and_unknown_runs_are_clear_errors(project: Path) -> None:
    for run_id in ("abc-1", "abc-2"):
        assert orch(project, "run", "agent", TASK, "--run-id", run_id).returncode == 0
    ambiguous = orch(project, "traces", "show", "abc")
    assert ambiguous.returncode == 2
    assert "fits several runs" in ambiguous.stderr and "abc-1" in ambiguous.stderr
    assert orch(project, "traces", "show", "abc-2").returncode == 0
    unknown = orch(project, "traces", "top", "--run", "nonexistent")
    assert unknown.returncode == 2 and "no run 'nonexistent'" in unknown.stderr


def test_resume_is_suggested_only_where_it_can_help(project: Path) -> None:
    defs = (project / "defs.py").read_text().replace("STEPS = [", "STEPS = ['{broken', '{broken again', ")
    (project / "defs.py").write_text(
        defs.replace(
            "json.dumps(s) for s in STEPS", "s if isinstance(s, str) else json.dumps(s) for s in STEPS"
        )
    )
    proc = orch(project, "run", "agent", "x")
    assert proc.returncode == 1 and "not valid JSON" in proc.stderr
    assert "Resume with" not in proc.stderr  # the same model would answer the same way again


def test_a_tool_pack_with_a_syntax_error_is_a_clear_error(project: Path) -> None:
    (project / "defs.py").write_text("def broken(:\n    pass\n")
    proc = orch(project, "run", "agent", TASK)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "defs.py, line 1: syntax error" in proc.stderr


def test_an_unknown_models_warning_is_one_plain_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "orchestrator", "ask", "openai:no-such-model-xyz", "hi"),
            *("--base-url", "http://127.0.0.1:9/v1", "--no-stream"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ORCH_TRACES": str(tmp_path / "t.db")},
    )
    warning = next(line for line in proc.stderr.splitlines() if "no-such-model-xyz" in line)
    assert warning.startswith("warning: ")
    assert "UserWarning" not in proc.stderr and "warnings.warn" not in proc.stderr


def test_input_json_passes_a_state_and_rejects_what_is_not_an_object(project: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"input": TASK}))
    ran = orch(project, "run", "agent", "--input-json", str(state), "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["answer"] == "18 days, 3 words"
    state.write_text("[1, 2, 3]")
    bad = orch(project, "run", "agent", "--input-json", str(state))
    assert bad.returncode == 2 and "must be a JSON object, got list" in bad.stderr
    state.write_text("{not json")
    broken = orch(project, "run", "agent", "--input-json", str(state))
    assert broken.returncode == 2 and "not valid JSON" in broken.stderr
