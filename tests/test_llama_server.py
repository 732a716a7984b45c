"""llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`) as a slot's endpoint.

The server runs the local 0.5B model on loopback, as a user who binds `openai-compat:` to it would run it.
It refuses a `json_schema` response format with HTTP 500 ("Input should be 'text' or 'json_object'"): the
first structured call steps down to a forced tool at once (no retries), and later calls start there.

Needs the `server` extra (`pip install -e '.[server]'`, which `make test` installs) and the model file
(`orch models build qwen2.5-0.5b`); skipped, saying which, without them. ORCH_SKIP_LOCAL=1 skips it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from orchestrator import Settings, SlotConfig
from orchestrator.agent.decisions import act_schema, parse_decision
from orchestrator.config import PriceOverride
from orchestrator.models.binding import bind_slot
from orchestrator.providers import create_chat_model
from orchestrator.providers.http import aclose_clients, reset_model_states
from orchestrator.providers.modelfiles import LOCAL_MODELS
from orchestrator.toolsets.catalog import Catalog
from support import date_diff, word_count

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("ORCH_SKIP_LOCAL") == "1", reason="ORCH_SKIP_LOCAL=1"),
]
ROOT = Path(__file__).resolve().parent.parent
SERVER_MODULES = (
    "llama_cpp",
    "fastapi",
    "uvicorn",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)
START_TIMEOUT_S = 120.0
CATALOG = Catalog.from_tools([date_diff, word_count])
SCHEMA = act_schema(["date_diff", "word_count"], CATALOG)  # an anyOf root, as the controller sends
ASK = [
    SystemMessage(
        "Decide the next step. Reply with one JSON action: call a tool with arguments from the request."
    ),
    HumanMessage("How many days are there from 2026-03-02 to 2026-03-20?"),
]


@dataclass
class Server:
    url: str  # the API root, with /v1
    log: Path

    def requests(self, status: int) -> int:
        """Chat completions the server answered with `status`, from its access log."""
        line = f'"POST /v1/chat/completions HTTP/1.1" {status}'
        return self.log.read_text(errors="replace").count(line)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"llama-cpp-python's server is not installed ({', '.join(missing)}): pip install -e '.[server]'"
        )
    spec = LOCAL_MODELS["qwen2.5-0.5b"]
    model = spec.path(Settings.resolve().models_dir)
    if not model.is_file():
        pytest.skip(f"the model file {model} is absent: build it with `orch models build {spec.name}`")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "orchestrator.providers.llama_server",  # llama_cpp.server, with the CPU probe's settings
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        str(os.cpu_count() or 2),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/models", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"llama_cpp.server did not answer in {START_TIMEOUT_S:.0f}s:\n{log.read_text()[-2000:]}"
                )
            time.sleep(0.25)
        yield Server(url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(autouse=True)
async def _fresh() -> AsyncIterator[None]:
    reset_model_states()  # what this process learnt of the endpoint: each test starts knowing nothing
    yield
    await aclose_clients()
    reset_model_states()


async def test_a_structured_call_steps_down_once_then_goes_straight_to_the_working_rung(
    llama_server: Server,
) -> None:
    slot = SlotConfig(
        model="openai-compat:qwen2.5-coder-0.5b",
        base_url=llama_server.url,
        role="racehorse",
        prices=PriceOverride(input=0, output=0),
    )
    model = create_chat_model(bind_slot("controller", slot), Settings())
    fmt = {"type": "json_object", "schema": SCHEMA}
    before = (llama_server.requests(500), llama_server.requests(200))

    t0 = time.perf_counter()
    first = await model.ainvoke(ASK, response_format=fmt, max_tokens=64, temperature=0.0)
    first_s = time.perf_counter() - t0
    meta = first.response_metadata
    (step,) = meta["downgraded"]
    assert (step["feature"], step["to"]) == ("json_schema", "tool")
    assert "Input should be 'text' or 'json_object'" in step["reason"]
    assert [a["status"] for a in meta["attempts"]] == [500, 200] and meta["retry_wait_ms"] == 0
    decision = parse_decision(str(first.content), ["date_diff", "word_count"], allowed=("call_tool", "skip"))
    assert decision.action == "call_tool" and decision.tool == "date_diff"
    assert decision.args == {"start": "2026-03-02", "end": "2026-03-20"}

    t0 = time.perf_counter()
    second = await model.ainvoke(ASK, response_format=fmt, max_tokens=64, temperature=0.0)
    second_s = time.perf_counter() - t0
    assert "downgraded" not in second.response_metadata
    assert second.response_metadata["structured_output"] == "tool"
    assert [a["status"] for a in second.response_metadata["attempts"]] == [200]
    assert json.loads(str(second.content)) == json.loads(str(first.content))  # temperature 0, same request
    # what the server saw: one refusal, then only requests it answers
    assert (llama_server.requests(500), llama_server.requests(200)) == (before[0] + 1, before[1] + 2)
    print(f"\nfirst call {first_s:.2f}s (with the refused request), second {second_s:.2f}s")


def test_orch_ask_against_the_server(llama_server: Server, tmp_path: Path) -> None:
    schema = tmp_path / "decision.json"
    schema.write_text(json.dumps(SCHEMA))
    env = {**os.environ, "ORCH_TRACES": str(tmp_path / "t.db"), "ORCH_CHECKPOINTS": str(tmp_path / "c.db")}
    base = [sys.executable, "-m", "orchestrator", "ask", "openai-compat:qwen2.5-coder-0.5b"]
    base += ["--base-url", llama_server.url, "--max-tokens", "64", "--temperature", "0", "--json"]
    prompt = "How many words are in 'red green blue'? Reply with one JSON action."
    proc = subprocess.run(
        [*base, "--schema", str(schema), prompt], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["structured_output"] == "tool"
    assert [d["feature"] for d in out["downgraded"]] == ["json_schema"]  # a new process learns it again
    decision = parse_decision(out["text"], ["date_diff", "word_count"], allowed=("call_tool", "skip"))
    assert decision.action == "call_tool" and decision.tool == "word_count"

    plain = subprocess.run(
        [*base[:-1], "Say hello in one word."], capture_output=True, text=True, env=env, timeout=120
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip()  # the streamed text


def test_the_agent_answers_with_its_controller_on_the_server(tmp_path: Path) -> None:
    """The bundled graph end to end with the controller slot bound to llama-cpp-python's server (the 1.5B
    racehorse), as `orch run` on a project whose manifest points the slot there."""
    from orchestrator.testing import serve_llama

    spec = LOCAL_MODELS["qwen2.5-1.5b"]
    if not spec.path(Settings.resolve().models_dir).is_file():
        pytest.skip(f"the model file is absent: build it with `orch models build {spec.name}`")
    if any(importlib.util.find_spec(m) is None for m in SERVER_MODULES):
        pytest.skip("llama-cpp-python's server is not installed: pip install -e '.[server]'")
    project = tmp_path / "proj"
    project.mkdir()
    with serve_llama("qwen2.5-1.5b") as url:
        (project / "pyproject.toml").write_text(
            "[tool.orchestrator]\n"
            'default_graph = "assistant"\n'
            'tool_packs = ["tools.catalog:TOOLS"]\n'
            "[tool.orchestrator.graphs]\n"
            'assistant = "graphs.assistant:build"\n'
            "[tool.orchestrator.slots.controller]\n"
            'model = "openai-compat:qwen2.5-1.5b"\n'
            f'base_url = "{url}"\n'
            'role = "racehorse"\n'
            "prices = { input = 0, output = 0 }\n"
            "timeout_s = 300\n"
            "[tool.orchestrator.limits]\n"
            "deadline_s = 600\n"  # a busy machine; the run takes about 45 s alone
        )
        env = {
            **os.environ,
            "ORCH_TRACES": str(tmp_path / "t.db"),
            "ORCH_CHECKPOINTS": str(tmp_path / "c.db"),
            "PYTHONPATH": str(ROOT),
        }
        question = "How many days are there between 2026-03-02 and 2026-03-20?"
        cmd = [sys.executable, "-m", "orchestrator", "--project", str(project), "run", question, "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "ok" and "18" in result["answer"], result
    calls = [n for n in result["ledger"]["nodes"] if n["node"] == "controller"]
    assert calls and calls[0]["model"] == "openai-compat:qwen2.5-1.5b"
