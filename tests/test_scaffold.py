"""`orch init`: a new project folder that `orch run` runs at once, never overwriting a file.

The runs here bind the scaffold's slots to a loopback server (its own manifest, edited as a user would);
`tests/test_local_models.py` runs the same scaffold on the real local models.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from loopback import Loopback
from wire import openai_stream, openai_usage

from orchestrator import ConfigError, __version__
from orchestrator._version import DIST_NAME
from orchestrator.scaffold import FILES, scaffold

PRICE = (1e-6, 2e-6)
SUMMARY = "The train was late, so the speaker missed half the meeting."
TEXT = "Summarize: the train was late, so I missed the first half of the meeting."
DAYS = "How many days are there between 2026-03-02 and 2026-03-20?"
TONE = "What is the tone of this message: 'The delivery was late again and nobody answers the phone.'"


def orch(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`orch ARGS` run in `cwd`, as a user runs it there (no --project)."""
    env = {**os.environ, "ORCH_TRACES": str(cwd / "traces.db"), "ORCH_CHECKPOINTS": str(cwd / "ckpt.db")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def on_loopback(project: Path, server: Loopback) -> None:
    """Point every slot of the scaffold's manifest at the loopback server, priced."""
    manifest = project / "pyproject.toml"
    text, count = re.subn(
        r'model = "local:qwen2\.5-[0-9.]+b"',
        f'model = "openai-compat:fake", base_url = "{server.url}/v1", '
        f"prices = {{ input = {PRICE[0]}, output = {PRICE[1]} }}",
        manifest.read_text(),
    )
    assert count == 3  # controller, summarize, classify
    manifest.write_text(text)


def cost(usage: tuple[int, int]) -> float:
    return usage[0] * PRICE[0] + usage[1] * PRICE[1]


def run_json(project: Path, *args: str) -> dict[str, Any]:
    proc = orch(project, "run", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["status"] == "ok", result
    return result


def test_init_then_run_in_the_folder_answers(tmp_path: Path, loopback: Loopback) -> None:
    made = orch(tmp_path, "init", "my-agents")
    assert made.returncode == 0, made.stderr
    project = tmp_path / "my-agents"
    for rel in FILES:
        assert (project / rel).is_file(), rel
        assert rel in made.stdout or not FILES[rel]
    assert "cd my-agents" in made.stdout and 'orch run "Summarize:' in made.stdout
    manifest = tomllib.loads((project / "pyproject.toml").read_text())
    assert manifest["project"]["name"] == "my-agents"
    assert manifest["project"]["dependencies"] == [f"{DIST_NAME}[local]>={__version__}"]
    slots = manifest["tool"]["orchestrator"]["slots"]
    assert slots["controller"] == {"model": "local:qwen2.5-1.5b", "role": "racehorse"}
    assert slots["summarize"] == {"model": "local:qwen2.5-0.5b", "role": "workhorse"}
    on_loopback(project, loopback)

    # the default graph: the project's own, one workhorse node
    loopback.push(openai_stream([SUMMARY], openai_usage(60, 14)))
    result = run_json(project, TEXT)
    assert result["answer"] == SUMMARY
    (node,) = result["ledger"]["nodes"]
    assert (node["node"], node["role"], node["calls"]) == ("summarize", "workhorse", 1)
    assert result["ledger"]["cost_usd"] == pytest.approx(cost((60, 14)))
    sent = loopback.requests[-1].json()["messages"]
    assert sent[-1] == {"role": "user", "content": TEXT}

    # the bundled agent over the scaffold's tool pack: plan, the tool call, the answer
    call = {"start_date": "2026-03-02", "end_date": "2026-03-20"}
    loopback.push(
        openai_stream(['{"plan": [{"tool": "difference in days between 2026-03-02 and 2026-03-20"}]}']),
        openai_stream([json.dumps({"action": "call_tool", "tool": "days_between", "args": call})]),
        openai_stream(['{"action": "final", "answer": "There are 18 days."}']),
    )
    result = run_json(project, "agent", DAYS)
    assert result["answer"] == "There are 18 days."
    assert {n["node"] for n in result["ledger"]["nodes"]} >= {"controller", "call_tool"}
    tools = orch(project, "traces", "top", "--by", "tool", "--run", result["run_id"], "--json")
    assert [(t["key"], t["calls"], t["errors"]) for t in json.loads(tools.stdout)] == [("days_between", 1, 0)]

    # and its worker: the plan hands the quoted text to classify_tone on the `classify` slot
    quoted = "The delivery was late again and nobody answers the phone."
    loopback.push(
        openai_stream([json.dumps({"plan": [{"worker": "classify_tone", "text": quoted}]})]),
        openai_stream(['{"label": "negative"}']),
    )
    result = run_json(project, "agent", TONE)
    assert result["answer"] == "negative"  # the worker's label is the answer: no model call rewrites it
    assert result["results"][0]["worker"] == "classify_tone"
    assert result["results"][0]["value"] == {"label": "negative"}


def test_the_scaffold_is_lint_clean(tmp_path: Path) -> None:
    scaffold(tmp_path / "proj")
    ruff = Path(sys.executable).parent / "ruff"
    rules = ["--select", "E,F,W,I,B,UP,SIM,RUF", "--line-length", "110"]
    proc = subprocess.run(
        [str(ruff), "check", "--isolated", *rules, "."],
        cwd=tmp_path / "proj",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_init_never_overwrites_a_file(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "workers").mkdir(parents=True)
    (project / "workers" / "tone.py").write_text("# mine\n")
    proc = orch(tmp_path, "init", "proj")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "workers/tone.py" in proc.stderr and "never overwrites" in proc.stderr
    assert (project / "workers" / "tone.py").read_text() == "# mine\n"
    assert not (project / "pyproject.toml").exists()  # nothing was written

    (project / "workers" / "tone.py").unlink()
    assert orch(tmp_path, "init", "proj").returncode == 0
    again = orch(project, "init")  # the current folder, now a project
    assert again.returncode == 2 and "pyproject.toml" in again.stderr
    assert "(and 7 more of the files it writes)" in again.stderr


@pytest.mark.parametrize(
    "folder",
    ['say "hi" \\ there', "tab\tand 'quote'", "üñí-cödé", "x" + chr(0x7F) + "y", "--"],
)
def test_folder_names_are_escaped_in_the_toml(tmp_path: Path, folder: str) -> None:
    made = scaffold(tmp_path / folder)
    manifest = tomllib.loads((made.root / "pyproject.toml").read_text(encoding="utf-8"))
    assert manifest["project"]["name"] == made.name
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", made.name)
    assert folder in manifest["project"]["description"]
    assert manifest["tool"]["orchestrator"]["default_graph"] == "summary"


def test_a_given_name_must_be_a_valid_package_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a valid package name"):
        scaffold(tmp_path / "a", name='evil"]\n[tool.x')
    assert not (tmp_path / "a" / "pyproject.toml").exists()
    made = scaffold(tmp_path / "b", name="Team.Agents_2")
    assert tomllib.loads((made.root / "pyproject.toml").read_text())["project"]["name"] == "Team.Agents_2"
    proc = orch(tmp_path, "init", "c", "--name", "bad name!")
    assert proc.returncode == 2 and "'bad name!' is not a valid package name" in proc.stderr
    assert "'bad-name'" in proc.stderr  # the suggestion
