"""Request bodies and header parsing of the two wire protocols (no server needed)."""

from __future__ import annotations

import warnings
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from orchestrator.errors import ConfigError, UnknownModelError
from orchestrator.models.binding import resolve_profile
from orchestrator.profiles import UnknownModelWarning
from orchestrator.providers.anthropic import AnthropicChatModel
from orchestrator.providers.http import Endpoint, ModelState, parse_reset, parse_retry_after, redact, window
from orchestrator.providers.openai import OpenAIChatModel

TOOL = {
    "type": "function",
    "function": {
        "name": "date_diff",
        "description": "Days between two dates.",
        "parameters": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
    },
}
CALL = {"id": "call_1", "name": "date_diff", "args": {"a": "2026-03-02"}, "type": "tool_call"}
CONVERSATION = [
    SystemMessage("You are terse."),
    HumanMessage("How many days?"),
    AIMessage("", tool_calls=[CALL]),
    ToolMessage("18", tool_call_id="call_1"),
]


def anthropic(**kw: Any) -> AnthropicChatModel:
    return AnthropicChatModel(model="claude-haiku-4-5", base_url="http://127.0.0.1:1", **kw)


def openai(**kw: Any) -> OpenAIChatModel:
    return OpenAIChatModel(model="gpt-4o-mini", base_url="http://127.0.0.1:1/v1", **kw)


def test_openai_body_carries_messages_tools_choice_and_stream_usage() -> None:
    body = openai().build_body(CONVERSATION, stop=None, stream=True, tools=[TOOL], tool_choice="date_diff")
    assert body["stream_options"] == {"include_usage": True}
    assert body["tools"] == [TOOL]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "date_diff"}}
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool"]
    assert body["messages"][2]["tool_calls"][0]["function"] == {
        "name": "date_diff",
        "arguments": '{"a": "2026-03-02"}',
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "18"}


def test_openai_response_format_json_schema_then_a_forced_tool_then_json_object() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    fmt = {"type": "json_object", "schema": schema}
    assert openai().build_body([], stop=None, stream=False, response_format=fmt)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }
    no_schema = openai(json_schema=False).build_body([], stop=None, stream=False, response_format=fmt)
    assert "response_format" not in no_schema
    assert no_schema["tool_choice"] == {"type": "function", "function": {"name": "respond"}}
    assert no_schema["tools"][0]["function"]["parameters"] == schema
    weak = openai(json_schema=False, tool_calling=False)
    body = weak.build_body([], stop=None, stream=False, response_format=fmt)
    assert body["response_format"] == {"type": "json_object", "schema": schema}  # llama-cpp-python reads it
    assert "tools" not in body
    plain = weak.build_body([], stop=None, stream=False, response_format=fmt, rung="prompt")
    assert "response_format" not in plain and "tools" not in plain


def test_anthropic_body_system_tools_tool_results_and_choice() -> None:
    body = anthropic().build_body(
        CONVERSATION, stop=["\n\n"], stream=True, tools=[TOOL], tool_choice="required"
    )
    assert body["system"] == [{"type": "text", "text": "You are terse."}]
    assert body["tools"] == [
        {
            "name": "date_diff",
            "description": "Days between two dates.",
            "input_schema": TOOL["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert body["stop_sequences"] == ["\n\n"]
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "date_diff", "input": {"a": "2026-03-02"}}
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18"}
    ]


def test_anthropic_prefill_is_the_last_assistant_turn_without_trailing_space() -> None:
    body = anthropic().build_body(
        [HumanMessage("Name a colour"), AIMessage("The colour is ")], stop=None, stream=False
    )
    assert body["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "The colour is"}],
    }


def test_anthropic_cache_markers_on_the_stable_prefix_and_on_marked_messages() -> None:
    marked = HumanMessage("big document", additional_kwargs={"cache_control": {"type": "ephemeral"}})
    body = anthropic(prompt_cache="1h").build_body(
        [SystemMessage("rules"), marked, HumanMessage("question")], stop=None, stream=False, tools=[TOOL]
    )
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    first_user = body["messages"][0]["content"]
    assert first_user[0]["cache_control"] == {"type": "ephemeral"} and "cache_control" not in first_user[1]
    plain = anthropic().build_body([SystemMessage("rules"), HumanMessage("q")], stop=None, stream=False)
    assert "cache_control" not in plain["system"][-1]


def test_anthropic_structured_output_is_a_forced_tool_with_an_object_schema() -> None:
    schema = {"anyOf": [{"type": "object"}, {"type": "object"}]}
    body = anthropic().build_body(
        [HumanMessage("decide")],
        stop=None,
        stream=False,
        response_format={"type": "json_object", "schema": schema},
    )
    assert body["tool_choice"] == {"type": "tool", "name": "respond"}
    assert body["tools"][-1]["input_schema"] == {
        "type": "object",
        "properties": {"response": schema},
        "required": ["response"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("", None), ("soon", None)],
)
def test_openai_reset_durations(value: str, seconds: float | None) -> None:
    got = parse_reset(value)
    assert got == (pytest.approx(seconds) if seconds is not None else None)


def test_anthropic_reset_is_an_rfc3339_time() -> None:
    from datetime import UTC, datetime, timedelta

    when = (datetime.now(UTC) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    got = parse_reset(when)
    assert got is not None and 28 < got <= 30


def test_retry_after_seconds_and_http_date() -> None:
    import email.utils
    import time

    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    got = parse_retry_after(email.utils.formatdate(time.time() + 10, usegmt=True))
    assert got is not None and 8 < got <= 10
    assert parse_retry_after("garbage") is None


def test_rate_limit_headers_cap_concurrency_and_block_an_exhausted_window() -> None:
    state = ModelState(max_concurrency=8)
    headers = httpx.Headers({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"})
    state.observe(200, headers)
    assert state.limit == 3
    assert (
        window({"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": "x"})[0]
        == 0
    )
    state.observe(200, httpx.Headers({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2s"}))
    import time

    assert state.blocked_until - time.monotonic() > 1.5
    state.observe(429, httpx.Headers({}))
    assert state.limit == 2  # halved from 4 (3, then +1 on a success)


def test_redact_removes_the_key_and_key_shaped_echoes() -> None:
    msg = "Incorrect API key provided: sk-abc123XYZ. Key sk-live-SECRET9 was rejected"
    out = redact(msg, "sk-live-SECRET9")
    assert "SECRET9" not in out and "sk-abc123XYZ" not in out


def test_a_required_key_that_is_unset_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="ORCH_TEST_KEY is not set"):
        Endpoint("https://api.example.com", "ORCH_TEST_KEY", key_required=True).api_key()
    assert Endpoint("http://127.0.0.1:1", "ORCH_TEST_KEY").api_key() is None


def test_provider_names_base_urls_and_key_variables() -> None:
    p = resolve_profile("anthropic:claude-haiku-4-5")
    assert (p.protocol, p.base_url, p.api_key_env, p.key_required) == (
        "anthropic",
        "https://api.anthropic.com",
        "ANTHROPIC_API_KEY",
        True,
    )
    assert p.capabilities.prompt_caching and p.capabilities.tool_calling
    local = resolve_profile("openai:gpt-4o-mini", base_url="http://127.0.0.1:8000/v1")
    assert local.base_url == "http://127.0.0.1:8000/v1" and not local.key_required
    groq = resolve_profile("groq:openai/gpt-oss-20b")
    assert groq.base_url == "https://api.groq.com/openai/v1" and groq.prices is not None
    assert groq.prices.source.endswith("#groq/openai/gpt-oss-20b")
    with pytest.raises(UnknownModelError, match="did you mean 'anthropic'"):
        resolve_profile("antropic:claude-haiku-4-5")
    with pytest.raises(UnknownModelError, match="needs a base URL"):
        resolve_profile("openai-compat:my-model")


def test_an_unknown_model_under_a_known_provider_runs_unpriced_with_a_warning() -> None:
    with pytest.warns(UnknownModelWarning, match="cost null"):
        p = resolve_profile("openai:gpt-9-preview")
    assert p.prices is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        priced = resolve_profile("openai:gpt-9-preview", price_as="gpt-4o-mini")
    assert priced.prices is not None and priced.prices.input == 1.5e-7


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: a\r\n\r\ndata: b\r\n\r\n"],
        [b"data: a\r", b"\n\r", b"\ndata: b\r\n", b"\r\n"],  # CR LF split between chunks
        [b"data: a\r\rdata: b\r\r"],  # lone CRs
        [b"data: a\n\nda", b"ta: b\n", b"\n"],  # a line split between chunks
        [b"data: a\n\ndata: b\n\n"],
    ],
)
def test_sse_events_end_at_crlf_lf_or_cr_however_the_chunks_split_them(chunks: list[bytes]) -> None:
    assert _events(chunks) == [(None, b"a"), (None, b"b")]


def test_sse_events_drop_a_last_event_without_its_blank_line() -> None:
    assert _events([b"data: a\n", b"\ndata: [DONE]"]) == [(None, b"a")]


@pytest.mark.parametrize("cut", range(1, 60))
def test_sse_events_are_the_same_wherever_the_body_is_cut(cut: int) -> None:
    body = b': comment\n\nevent: delta\ndata: {"a":\ndata: 1}\n\n\n\ndata: x\r\n\r\nevent: ping\n\ndata:y\n\n'
    body += b"event: one\ndata: z\n\n"
    want = [("delta", b'{"a":\n1}'), (None, b"x"), (None, b"y"), ("one", b"z")]
    assert _events([body]) == want
    assert _events([body[:cut], body[cut:]]) == want
    assert _events([body[i : i + 1] for i in range(len(body))]) == want


def _events(chunks: list[bytes]) -> list[tuple[str | None, bytes]]:
    from orchestrator.providers.sse import Events

    got: list[tuple[str | None, bytes]] = []
    events = Events(lambda event, data: got.append((event, data)))
    for chunk in chunks:
        events.feed(chunk)
    return got
