"""Configuration mistakes fail as configuration errors, before a run starts and before any model call:
exit 2 with one line naming the key or value and the fix (CLI), a `ConfigError` (Python API)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import textwrap
from pathlib import Path

import pytest
from test_cli import DEFS, PROJECT, STEPS, TASK, orch

from orchestrator import Orchestrator
from orchestrator.errors import ConfigError

CONTROLLER = (
    'controller = { model = "python:defs:controller", role = "racehorse", '
    "prices = { input = 1e-6, output = 2e-6 } }"
)


def _project(root: Path, manifest: str = PROJECT.format()) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(manifest)
    (root / "defs.py").write_text(textwrap.dedent(DEFS.format(steps=STEPS)))
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return _project(tmp_path / "proj")


def _edit(project: Path, old: str, new: str) -> None:
    text = (project / "pyproject.toml").read_text()
    assert old in text
    (project / "pyproject.toml").write_text(text.replace(old, new))


def _config_error(project: Path, *args: str) -> str:
    """Run `orch`; it must exit 2 with one line, before any model call and before a run is recorded."""
    log = project / "calls.log"
    proc = orch(project, *args, env={"SCRIPT_LOG": str(log)})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Resume with" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not log.exists(), "a model was called"
    store = project / "traces.db"
    if store.exists():
        with sqlite3.connect(store) as conn:
            assert conn.execute("select count(*) from runs").fetchone() == (0,)
    return lines[0]


def _api_error(project: Path, input: object, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ORCH_TRACES", str(project / "api-traces.db"))
    monkeypatch.setenv("ORCH_CHECKPOINTS", str(project / "api-ckpt.db"))
    monkeypatch.syspath_prepend(str(project))

    async def attempt() -> None:
        o = Orchestrator.from_project(project)
        try:
            await o.arun("agent", input)  # type: ignore[arg-type]
        finally:
            o.close()

    with pytest.raises(ConfigError) as caught:
        asyncio.run(attempt())
    return str(caught.value)


def test_the_agent_graph_without_a_controller_slot(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _edit(project, "\ncontroller = {", "\nplanner = {")
    line = _config_error(project, "run", "agent", TASK)
    assert "slot 'controller'" in line and "not bound" in line and "[tool.orchestrator.slots]" in line
    message = _api_error(project, TASK, monkeypatch)
    assert "slot 'controller'" in message and "[tool.orchestrator.slots]" in message


def test_input_keys_the_graph_does_not_take(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = project / "state.json"
    state.write_text(json.dumps({"foo": 1}))
    for given in ('{"foo":1}', str(state)):  # the JSON itself, or a file holding it
        line = _config_error(project, "run", "agent", "--input-json", given)
        assert "no input key 'foo'" in line and "its input keys: 'input'" in line, line
    typo = _config_error(project, "run", "agent", "--input-json", '{"imput": "x"}')
    assert "did you mean 'input'" in typo
    empty = _config_error(project, "run", "agent", "--input-json", "{}")
    assert "needs the input key 'input'" in empty
    assert "no input key 'foo'" in _api_error(project, {"foo": 1}, monkeypatch)
    ran = orch(project, "run", "agent", "--input-json", json.dumps({"input": TASK}), "--json")
    assert ran.returncode == 0 and json.loads(ran.stdout)["answer"] == "18 days, 3 words", ran.stderr


@pytest.mark.parametrize("value", [12345, 1.5, ["a list"], None])
def test_an_input_neither_text_nor_mapping(
    project: Path, monkeypatch: pytest.MonkeyPatch, value: object
) -> None:
    message = _api_error(project, value, monkeypatch)
    if value is None:
        assert "needs an input text" in message
    else:
        assert type(value).__name__ in message and "neither a text nor a mapping" in message


@pytest.mark.parametrize(
    "url", ["not a url", "localhost:8080/v1", "ftp://host/v1", "http://", "http://host:port/v1"]
)
def test_a_slot_base_url_that_is_no_http_url(project: Path, url: str) -> None:
    slot = (
        f'cloud = {{ model = "openai-compat:some-model", base_url = "{url}", '
        "prices = { input = 1e-6, output = 2e-6 } }"
    )
    _edit(project, CONTROLLER, CONTROLLER + "\n" + slot)
    line = _config_error(project, "run", "agent", TASK)
    assert "slots.cloud.base_url" in line and "http:// or https:// URL with a host" in line, line
    assert repr(url) in line


def test_a_fallback_and_an_mcp_url_are_checked_alike(project: Path) -> None:
    _edit(
        project,
        'role = "racehorse",',
        'role = "racehorse", fallback = [{ model = "openai-compat:m", base_url = "127.0.0.1:8080" }],',
    )
    line = _config_error(project, "run", "agent", TASK)
    assert "slots.controller.fallback" in line and "base_url" in line, line
    project2 = _project(project.parent / "p2")
    _edit(
        project2,
        "[tool.orchestrator.graphs]",
        '[tool.orchestrator.mcp_servers]\nbox = { url = "http://" }\n\n[tool.orchestrator.graphs]',
    )
    line = _config_error(project2, "run", "agent", TASK)
    assert "mcp_servers.box" in line and "URL with a host" in line, line


def test_a_key_pasted_into_api_key_env_is_refused_and_not_repeated(project: Path) -> None:
    key = "sk-proj-Zx81" + "q" * 30
    _edit(project, 'role = "racehorse",', f'role = "racehorse", api_key_env = "{key}",')
    line = _config_error(project, "run", "agent", TASK)
    assert "slots.controller.api_key_env" in line and "OPENAI_API_KEY" in line, line
    assert key not in line and "Zx81" not in line


def test_a_header_value_with_a_line_break(project: Path) -> None:
    _edit(project, 'role = "racehorse",', 'role = "racehorse", headers = { "X-Team" = "a\\nInjected: 1" },')
    line = _config_error(project, "run", "agent", TASK)
    assert "slots.controller.headers" in line and "line break" in line, line


def test_graph_names_the_manifest_uses_must_be_graphs(project: Path) -> None:
    _edit(project, 'default_graph = "agent"', 'default_graph = "agnet"')
    line = _config_error(project, "run", TASK)
    assert "default_graph" in line and "'agnet'" in line and "did you mean 'agent'" in line, line
    _edit(project, 'default_graph = "agnet"', 'default_graph = "agent"\noutputs = { helper = "answer" }')
    line = _config_error(project, "run", "agent", TASK)
    assert "outputs.helper" in line and "'helper'" in line, line
