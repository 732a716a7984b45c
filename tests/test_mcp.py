"""MCP servers as a catalog source, and the limits every tool source gets.

Real servers: `tests/mcp_servers/toolbox.py` (the SDK's FastMCP) runs as a child process over stdio and as a
streamable HTTP server on loopback. The controller is a loopback OpenAI-compatible server whose replies are
derived from the request (the tools it binds and the part it asks about), so a tool that was not found and
loaded can't be called, and the runs go through find_tools -> a loaded MCP tool -> final.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import tool
from loopback import Loopback, Reply, Request
from wire import openai_stream, openai_usage

from orchestrator import Orchestrator, Settings
from orchestrator.config import McpServerConfig
from orchestrator.errors import ConfigError, ManifestError, ToolError
from orchestrator.providers.http import aclose_clients, reset_model_states
from orchestrator.toolsets.mcp import McpServer, close_all
from orchestrator.toolsets.process_pool import ToolRunner, cap_output
from orchestrator.toolsets.sources import guard, load_pack
from orchestrator.tracing.store import decode_attributes

SERVER = Path(__file__).resolve().parent / "mcp_servers" / "toolbox.py"
DAYS = "How many days are there from 2026-03-02 to 2026-03-20?"
DAYS_CALL = ("days_between", {"start": "2026-03-02", "end": "2026-03-20"})
CONTROLLER = (
    'controller = {{ model = "openai-compat:ctl", base_url = "{url}/v1", role = "racehorse", '
    "prices = {{ input = 1e-6, output = 4e-6 }}, capabilities = {{ parallel_tool_calls = false }} }}"
)


@pytest.fixture(autouse=True)
async def _clean() -> AsyncIterator[None]:
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()
    close_all()  # every MCP session of the test ends (stdio servers exit)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The toolbox over streamable HTTP on a loopback port: its URL and its call log."""
    port, log = _free_port(), tmp_path / "http.log"
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port)],
        env={"PATH": "/usr/bin:/bin", "TOOLBOX_LOG": str(log)},
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the HTTP server did not start"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp", log
    close_all()  # the sessions end while the server still answers
    proc.kill()
    proc.wait()


def _calls(log: Path) -> list[str]:
    return [line.split()[1] for line in log.read_text().splitlines()] if log.exists() else []


class Controller:
    """Plans one part per entry of `parts` (part text -> the tool and arguments that do it); calls that tool
    only when it was found and bound for the part, and calls it again when asked again; writes the final
    answer from the results it is given."""

    def __init__(self, parts: dict[str, tuple[str, dict[str, Any]]]) -> None:
        self.parts = parts
        self.bound: list[list[str]] = []  # the tools bound, per act request
        self.observations: list[str] = []  # every observation the model was shown, in order

    def reply(self, request: Request) -> Reply:
        body = request.json()
        tools = [t["function"]["name"] for t in body.get("tools", [])]
        choice = body.get("tool_choice")
        wanted = choice["function"]["name"] if isinstance(choice, dict) else str(choice)
        users = [str(m.get("content") or "") for m in body["messages"] if m["role"] == "user"]
        for text in users:
            for obs in re.findall(r"^Observation \(.*$", text, flags=re.M):
                if obs not in self.observations:
                    self.observations.append(obs)
        if wanted == "plan":
            call = ("plan", {"plan": [{"tool": text} for text in self.parts]})
        elif wanted == "final":
            results = re.findall(r"^- (.+?): (.+)$", users[-1], flags=re.M)
            call = ("final", {"answer": "; ".join(f"{what}: {value[:60]}" for what, value in results)})
        else:
            self.bound.append(tools)
            asked = next(u for u in reversed(users) if u.startswith("Part"))
            shape = (
                r"Part \d+ of \d+: (.+?)\.(?: Its values are in the request: .*)? "
                r"(?:Call the found tool|No tool has been found)"
            )
            text = re.match(shape, asked, flags=re.S).group(1)  # type: ignore[union-attr]
            name, args = self.parts[text]
            call = (name, args) if name in tools else ("skip", {"reason": "no bound tool does this part"})
        return openai_stream([], openai_usage(300, 20), tool_calls=[("c1", call[0], [json.dumps(call[1])])])


def project(tmp_path: Path, loopback: Loopback, servers: str, extra: str = "", limits: str = "") -> Path:
    """A project folder whose manifest binds the controller to the loopback model and names MCP servers."""
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(
        f"""
[tool.orchestrator]
default_graph = "agent"
{extra}
[tool.orchestrator.graphs]
agent = "orchestrator.graph:build_agent_graph"

[tool.orchestrator.slots]
{CONTROLLER.format(url=loopback.url)}

[tool.orchestrator.limits]
max_steps = 12
{limits}
{servers}
""",
        encoding="utf-8",
    )
    return root


def stdio(log: Path, name: str = "toolbox") -> str:
    return f"""
[tool.orchestrator.mcp_servers.{name}]
command = {json.dumps(sys.executable)}
args = [{json.dumps(str(SERVER))}, "stdio"]
env = {{ TOOLBOX_LOG = {json.dumps(str(log))} }}
"""


def orch_for(
    tmp_path: Path,
    loopback: Loopback,
    settings: Settings,
    controller: Controller,
    servers: str,
    extra: str = "",
    limits: str = "",
) -> Orchestrator:
    loopback.handle("/v1/chat/completions", controller.reply)
    return Orchestrator.from_project(project(tmp_path, loopback, servers, extra, limits), settings=settings)


async def test_tools_of_a_stdio_and_an_http_server_enter_the_catalog_and_the_agent_calls_them(
    tmp_path: Path, loopback: Loopback, settings: Settings, http_server: tuple[str, Path]
) -> None:
    url, http_log = http_server
    log = tmp_path / "stdio.log"
    servers = stdio(log) + f'\n[tool.orchestrator.mcp_servers.web]\nurl = "{url}"\nprefix = "web_"\n'
    controller = Controller(
        {
            "days between 2026-03-02 and 2026-03-20": DAYS_CALL,
            "count the words of 'red green blue'": ("web_count_words", {"text": "red green blue"}),
        }
    )
    orch = orch_for(tmp_path, loopback, settings, controller, servers)
    # the listed tools, with their schemas as the servers gave them
    entry = orch.catalog.get("days_between")
    assert entry.description == "Number of days between two ISO dates (end minus start)."
    assert entry.parameters["properties"]["start"]["type"] == "string"
    assert entry.parameters["required"] == ["start", "end"]
    assert orch.catalog.get("web_count_words").parameters["properties"]["text"]["type"] == "string"
    assert {"days_between", "web_days_between", "repeat_text", "web_repeat_text"} <= set(orch.catalog.names())
    result = await orch.arun("agent", f"{DAYS} And how many words are in 'red green blue'?")
    assert result.status == "ok", result.error
    assert "18" in (result.answer or "") and ": 3" in (result.answer or "")
    # each tool was found for its part (find_tools) before it could be called
    assert "days_between" in controller.bound[0] and "web_count_words" in controller.bound[1]
    assert "web_count_words" not in controller.bound[0]
    assert _calls(log) == ["days_between"] and _calls(http_log) == ["count_words"]
    assert orch.store is not None
    spans = orch.store.run_spans(result.run_id)
    names = {s["name"] for s in spans}
    assert {"execute_tool days_between", "execute_tool web_count_words"} <= names
    orch.close()


async def test_a_server_that_stops_is_restarted_once_then_its_tools_are_unavailable(
    tmp_path: Path, loopback: Loopback, settings: Settings
) -> None:
    log = tmp_path / "stdio.log"
    controller = Controller(
        {
            "stop the toolbox server for 'maintenance'": ("stop_server", {"reason": "maintenance"}),
            "days between 2026-03-02 and 2026-03-20": DAYS_CALL,
        }
    )
    orch = orch_for(tmp_path, loopback, settings, controller, stdio(log))
    result = await orch.arun("agent", f"Stop the toolbox server for 'maintenance'. {DAYS}")
    assert result.status == "ok", result.error  # the run ends cleanly
    obs = "\n".join(controller.observations)
    assert "MCP server 'toolbox' stopped during the call; it was restarted" in obs  # the first stop
    # the second stop; then the days part: the server's tools are no longer found, and the search says why
    answer = result.answer or ""
    assert "stopped again after its restart; its tools are unavailable" in answer
    # the days part: nothing found, and the observation says why (the model then skips it)
    assert (
        "Observation (find_tools): no tool matches 'days between 2026-03-02 and 2026-03-20' (not offered, "
        "unavailable: MCP server 'toolbox' stopped again after its restart; its tools are unavailable "
        "for the rest of this process)"
    ) in obs
    assert answer.endswith("no bound tool does this part).")
    assert "days_between" in orch.catalog.unavailable()
    assert "days_between" not in [h.name for h in orch.catalog.search("days between two dates")]
    calls = _calls(log)
    assert calls == ["stop_server", "stop_server"]
    pids = {line.split()[0] for line in log.read_text().splitlines()}
    assert len(pids) == 2  # a second process: the restart
    assert orch.store is not None
    failed = [
        s
        for s in orch.store.run_spans(result.run_id)
        if s["name"].startswith("execute_tool") and decode_attributes(s).get("error.type") == "tool_error"
    ]
    assert len(failed) == 2  # each failed call has its error span; the unavailable tool was never called
    orch.close()


async def test_a_hanging_tool_times_out_a_huge_output_is_cut_and_the_server_keeps_serving(
    tmp_path: Path, loopback: Loopback, settings: Settings
) -> None:
    log = tmp_path / "stdio.log"
    controller = Controller(
        {
            "spin the processor for 600 seconds": ("spin_cpu", {"seconds": 600}),
            "repeat 'ab' 300000 times": ("repeat_text", {"text": "ab", "times": 300000}),
            "days between 2026-03-02 and 2026-03-20": DAYS_CALL,
        }
    )
    orch = orch_for(tmp_path, loopback, settings, controller, stdio(log), limits="tool_timeout_s = 3")
    t0 = time.monotonic()
    result = await orch.arun("agent", "Spin the processor for 600 seconds. Repeat 'ab' 300000 times. " + DAYS)
    elapsed = time.monotonic() - t0
    assert result.status == "ok", result.error
    assert elapsed < 60  # two 3 s timeouts and a server replaced, not 600 s
    spins = [o for o in controller.observations if "call_tool spin_cpu" in o]
    assert spins and all("timed out after 3s" in o for o in spins)
    repeat = next(o for o in controller.observations if "call_tool repeat_text" in o)
    assert "truncated" in repeat and len(repeat) < 3000  # 600,000 characters, cut with a marker
    assert "18" in (result.answer or "")  # the CPU-bound tool did not freeze the server for good
    assert _calls(log).count("days_between") == 1
    orch.close()


async def test_a_destructive_tool_is_left_out_unless_allow_listed(
    tmp_path: Path, loopback: Loopback, settings: Settings
) -> None:
    log = tmp_path / "stdio.log"
    parts = {"delete record 'r-17'": ("delete_record", {"record_id": "r-17"})}
    controller = Controller(parts)
    orch = orch_for(tmp_path, loopback, settings, controller, stdio(log))
    assert "delete_record" not in orch.catalog  # never offered
    [blocked] = [b for b in orch.blocked_tools if b.name == "delete_record"]
    assert 'allow_side_effects = ["delete_record"]' in blocked.reason
    result = await orch.arun("agent", "Delete record 'r-17'.")
    assert result.status == "ok", result.error
    assert all("delete_record" not in bound for bound in controller.bound)
    assert "delete_record" not in _calls(log)
    orch.close()
    # the tool itself refuses to run when it is called some other way (a graph of one's own, a direct call)
    server = McpServer("toolbox", McpServerConfig(command=sys.executable, args=[str(SERVER), "stdio"]))
    tool_ = next(t for t in server.tools() if t.name == "delete_record")
    assert tool_.side_effects and not tool_.allowed
    with pytest.raises(ToolError, match=re.escape('allow_side_effects = ["delete_record"]')):
        await ToolRunner(isolate=False).run(tool_, {"record_id": "r-17"}, 10)
    server.close()
    # allow-listed: offered and called
    close_all()
    controller = Controller(parts)
    orch = orch_for(
        tmp_path, loopback, settings, controller, stdio(log), 'allow_side_effects = ["delete_record"]'
    )
    assert "delete_record" in orch.catalog
    result = await orch.arun("agent", "Delete record 'r-17'.")
    assert result.status == "ok", result.error
    assert "r-17" in (result.answer or "")
    assert _calls(log) == ["delete_record"]
    orch.close()


async def test_an_mcp_tool_error_and_a_server_that_cannot_start() -> None:
    server = McpServer("toolbox", McpServerConfig(command=sys.executable, args=[str(SERVER), "stdio"]))
    tools = {t.name: t for t in server.tools()}
    with pytest.raises(Exception, match="refused: because"):
        await ToolRunner(isolate=False).run(tools["fail_loudly"], {"reason": "because"}, 10)
    assert await ToolRunner(isolate=False).run(tools["count_words"], {"text": "a b"}, 10) == "2"
    assert tools["count_words"].invoke({"text": "a b c"}) == "3"  # the sync path goes through the session too
    server.close()
    broken = McpServer(
        "nothing", McpServerConfig(command=sys.executable, args=["-c", "pass"], startup_timeout_s=5)
    )
    with pytest.raises(ConfigError, match="MCP server 'nothing'"):
        broken.tools()


def test_manifest_mcp_servers_are_checked() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="either command"):
        McpServerConfig()
    with pytest.raises(ValidationError, match="either command"):
        McpServerConfig(command="x", url="http://h/mcp")
    with pytest.raises(ValidationError, match="http:// or https://"):
        McpServerConfig(url="ftp://h/mcp")


# --- the same limits for every source ----------------------------------------------------------------------
@tool
def send_invoice(customer: str) -> str:
    """Email an invoice to a customer."""
    return f"sent to {customer}"


send_invoice.metadata = {"side_effects": True}


@tool
def huge(n: int) -> str:
    """A tool with a huge output."""
    return "x" * n


def test_a_side_effecting_pack_tool_is_kept_out_unless_allowed() -> None:
    kept, blocked = guard([send_invoice, huge], [])
    assert [t.name for t in kept] == ["huge"] and [b.name for b in blocked] == ["send_invoice"]
    assert 'allow_side_effects = ["send_invoice"]' in blocked[0].reason
    kept, blocked = guard([send_invoice, huge], ["send_invoice"])
    assert len(kept) == 2 and not blocked
    orch = Orchestrator(tools=[send_invoice, huge], tracing=False)
    assert "send_invoice" not in orch.catalog and "huge" in orch.catalog
    orch.close()


async def test_outputs_are_capped_with_a_marker_in_process_and_in_a_child() -> None:
    assert cap_output("short") == "short" and cap_output(7) == 7
    cut = cap_output(list(range(100_000)), 50)
    assert isinstance(cut, str) and cut.startswith("[0, 1, 2") and "output truncated" in cut
    for runner in (ToolRunner(isolate=False, max_output_chars=1000), ToolRunner(max_output_chars=1000)):
        text = await runner.run(huge, {"n": 5_000_000}, 30)
        assert len(text) < 1100
        assert text.endswith("[output truncated: 5,000,000 characters, the first 1,000 kept]")
        runner.close()


def test_a_third_party_pack_comes_in_through_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme_tools.py").write_text(
        "from langchain_core.tools import tool\n\n@tool\ndef acme_ping(host: str) -> str:\n"
        '    """Ping a host."""\n    return host\n\nTOOLS = [acme_ping]\n',
        encoding="utf-8",
    )
    info = tmp_path / "acme_tools-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-tools\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[orchestrator.tools]\nacme = acme_tools:TOOLS\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert [t.name for t in load_pack("acme")] == ["acme_ping"]
    with pytest.raises(ManifestError, match="did you mean 'acme'"):
        load_pack("acm")


def test_orch_tools_lists_a_projects_mcp_tools_without_the_blocked_ones(
    tmp_path: Path, loopback: Loopback
) -> None:
    """`orch tools list` sees what the agent sees: the MCP server's tools (started for the listing), minus
    a side-effecting one that is not allow-listed."""
    import os
    import subprocess

    log = tmp_path / "stdio.log"
    root = project(tmp_path, loopback, stdio(log))
    env = {**os.environ, "ORCH_TOOL_INDEX": str(tmp_path / "index.db")}
    cmd = [sys.executable, "-m", "orchestrator", "--project", str(root), "tools", "list", "--json"]
    listed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    out = json.loads(listed.stdout)
    names = {t["name"]: t for t in (out["tools"] if isinstance(out, dict) else out)}
    assert "days_between" in names and "delete_record" not in names
    assert names["days_between"]["source"] == "mcp:toolbox"
