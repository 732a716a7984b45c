"""`orch ask` against each protocol's loopback server (a real subprocess, a real socket)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from loopback import Loopback, Reply
from wire import (
    anthropic_stream,
    anthropic_usage,
    body_of,
    error_body,
    openai_json,
    openai_stream,
    openai_usage,
)

KEY = "sk-ask-TOPSECRET987654"


def orch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": KEY, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "ask", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )


def test_ask_openai_json_has_exact_usage_and_cost(loopback: Loopback) -> None:
    loopback.push(openai_stream(["Hi", " there"], openai_usage(1000, 20, cached=800), first_event_delay=0.05))
    proc = orch("openai:gpt-4o-mini", "hi", "--base-url", loopback.url + "/v1", "--json")
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    assert out["text"] == "Hi there" and out["model"] == "openai:gpt-4o-mini"
    assert out["usage"]["input_tokens"] == 1000 and out["usage"]["cache_read_input_tokens"] == 800
    assert out["usage"]["cache_creation_input_tokens"] == 0 and out["usage"]["output_tokens"] == 20
    assert out["cost_usd"] == pytest.approx(200 * 1.5e-7 + 800 * 7.5e-8 + 20 * 6e-7)
    assert out["ttft_ms"] >= 50 and out["duration_ms"] >= out["ttft_ms"]
    assert [a["status"] for a in out["attempts"]] == [200]
    assert KEY not in proc.stdout + proc.stderr
    assert body_of(loopback.requests[0])["max_completion_tokens"] == 1024


def test_ask_anthropic_counts_cache_writes_at_their_rates(loopback: Loopback) -> None:
    usage = anthropic_usage(fresh=10, output=5, read=2000, write_5m=100, write_1h=300)
    loopback.push(anthropic_stream(["Bonjour"], usage))
    proc = orch("anthropic:claude-sonnet-4-5", "hi", "--base-url", loopback.url, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["usage"]["input_tokens"] == 2410
    assert out["usage"]["cache_creation_input_tokens"] == 400
    assert out["usage"]["cache_creation_1h_input_tokens"] == 300
    expected = 10 * 3e-6 + 2000 * 3e-7 + 100 * 3.75e-6 + 300 * 6e-6 + 5 * 15e-6
    assert out["cost_usd"] == pytest.approx(expected)
    assert loopback.requests[0].path == "/v1/messages"


def test_ask_streams_plain_text_and_prints_a_summary(loopback: Loopback) -> None:
    loopback.push(openai_stream(["one ", "two"], openai_usage(5, 2)))
    proc = orch("openai:gpt-4o-mini", "count", "--base-url", loopback.url + "/v1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "one two\n"
    assert "5 in" in proc.stderr and "2 out" in proc.stderr and "TTFT" in proc.stderr


def test_ask_no_stream_has_null_ttft(loopback: Loopback) -> None:
    loopback.push(openai_json("plain", openai_usage(5, 1)))
    proc = orch("openai:gpt-4o-mini", "hi", "--base-url", loopback.url + "/v1", "--no-stream", "--json")
    out = json.loads(proc.stdout)
    assert out["text"] == "plain" and out["ttft_ms"] is None
    assert "stream" not in body_of(loopback.requests[0])


def test_ask_schema_sends_json_schema(loopback: Loopback, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    (tmp_path / "s.json").write_text(json.dumps(schema))
    loopback.push(openai_stream(['{"n":', " 3}"], openai_usage(9, 4)))
    proc = orch(
        "vllm:qwen", "n?", "--base-url", loopback.url + "/v1", "--schema", str(tmp_path / "s.json"), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(json.loads(proc.stdout)["text"]) == {"n": 3}
    sent = body_of(loopback.requests[0])["response_format"]
    assert sent == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    assert json.loads(proc.stdout)["cost_usd"] is None  # not in the price table: null, not 0
    assert "cost null" in proc.stderr


def test_ask_a_failing_server_exits_1_with_the_attempts(loopback: Loopback) -> None:
    loopback.push(*[Reply(status=500, body=error_body("boom")) for _ in range(3)])
    proc = orch("openai:gpt-4o-mini", "hi", "--base-url", loopback.url + "/v1", "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert "HTTP 500: boom" in out["error"] and len(out["attempts"]) == 3


def test_ask_config_errors_exit_2_with_the_fix() -> None:
    proc = orch("opneai:gpt-4o-mini", "hi")
    assert proc.returncode == 2 and "did you mean 'openai'" in proc.stderr and "Traceback" not in proc.stderr
    proc = orch("openai:gpt-4o-mini", "hi", env={"OPENAI_API_KEY": ""})
    assert proc.returncode == 2 and "OPENAI_API_KEY is not set" in proc.stderr
