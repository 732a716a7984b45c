"""The provider clients against real HTTP servers on loopback: streams, usage, tools and every fault."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from loopback import Loopback, Reply, sse
from wire import (
    anthropic_stream,
    anthropic_usage,
    body_of,
    error_body,
    openai_json,
    openai_stream,
    openai_usage,
)

from orchestrator.errors import ModelError
from orchestrator.providers.anthropic import AnthropicChatModel
from orchestrator.providers.fallback import FallbackChatModel
from orchestrator.providers.http import ProviderError, aclose_clients, model_state, reset_model_states
from orchestrator.providers.openai import OpenAIChatModel

KEY = "sk-test-SECRETKEY123456"
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "read_timeout_s": 2.0}


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TEST_OPENAI_KEY", KEY)
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", KEY)
    reset_model_states()
    yield
    reset_model_states()


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    await aclose_clients()  # the pooled connections of this test's event loop


@pytest.fixture
def server() -> Iterator[Loopback]:
    with Loopback() as lb:
        yield lb


def openai(server: Loopback, **kw: Any) -> OpenAIChatModel:
    opts: dict[str, Any] = {**FAST, **kw}
    return OpenAIChatModel(
        model="gpt-4o-mini",
        model_name="openai:gpt-4o-mini",
        base_url=server.url + "/v1",
        api_key_env="TEST_OPENAI_KEY",
        **opts,
    )


def anthropic(server: Loopback, **kw: Any) -> AnthropicChatModel:
    opts: dict[str, Any] = {**FAST, **kw}
    return AnthropicChatModel(
        model="claude-haiku-4-5",
        model_name="anthropic:claude-haiku-4-5",
        base_url=server.url,
        api_key_env="TEST_ANTHROPIC_KEY",
        **opts,
    )


# --- OpenAI-compatible -------------------------------------------------------------------------------
async def test_openai_stream_text_usage_with_cache_and_ttft(server: Loopback) -> None:
    server.push(
        openai_stream(["Hel", "lo"], openai_usage(120, 2, cached=100, reasoning=0), first_event_delay=0.1)
    )
    msg = await openai(server).ainvoke("hi")
    assert msg.content == "Hello"
    assert msg.usage_metadata is not None
    assert msg.usage_metadata["input_tokens"] == 120
    assert msg.usage_metadata["input_token_details"]["cache_read"] == 100
    meta = msg.response_metadata
    assert meta["ttft_ms"] >= 100 and meta["ttft_ms"] < meta["duration_ms"]
    assert meta["finish_reason"] == "stop" and meta["model"] == "gpt-4o-mini-2024-07-18"
    req = server.requests[0]
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert body_of(req)["stream_options"] == {"include_usage": True}


async def test_openai_parallel_tool_calls_stream_into_tool_calls(server: Loopback) -> None:
    server.push(
        openai_stream(
            [],
            openai_usage(50, 20),
            tool_calls=[
                ("call_a", "date_diff", ['{"start": "2026-', '03-02"}']),
                ("call_b", "word_count", ['{"text": "a b"}']),
            ],
        )
    )
    msg = await openai(server).bind_tools([_tool("date_diff"), _tool("word_count")]).ainvoke("go")
    assert isinstance(msg, AIMessage)
    assert [(c["id"], c["name"], c["args"]) for c in msg.tool_calls] == [
        ("call_a", "date_diff", {"start": "2026-03-02"}),
        ("call_b", "word_count", {"text": "a b"}),
    ]
    assert msg.response_metadata["finish_reason"] == "tool_calls"


async def test_a_plain_request_has_null_ttft_not_a_copy_of_the_total(server: Loopback) -> None:
    server.push(openai_json("ok", openai_usage(10, 1), delay=0.05))
    msg = await openai(server, use_streaming=False).ainvoke("hi")
    assert msg.content == "ok"
    assert msg.response_metadata["ttft_ms"] is None
    assert msg.response_metadata["duration_ms"] >= 50
    assert "stream" not in body_of(server.requests[0])


async def test_streamed_calls_reuse_one_connection(server: Loopback) -> None:
    server.push(*[openai_stream(["x"], openai_usage(5, 1)) for _ in range(3)])
    model = openai(server)
    for _ in range(3):
        await model.ainvoke("hi")
    assert server.connections == 1  # each stream is read to its end, so the connection goes back to the pool


def test_sync_invoke_and_stream_work_from_plain_code(server: Loopback) -> None:
    server.push(openai_stream(["a", "b"], openai_usage(5, 2)), openai_stream(["c", "d"], openai_usage(5, 2)))
    model = openai(server)
    assert model.invoke("hi").content == "ab"
    chunks = list(model.stream("hi"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.content == "cd"
    assert merged.usage_metadata is not None and merged.usage_metadata["output_tokens"] == 2


async def test_astream_yields_text_as_it_arrives_then_usage(server: Loopback) -> None:
    server.push(openai_stream(["one ", "two ", "three"], openai_usage(7, 3), gap=0.05))
    seen: list[tuple[float, str]] = []
    final: AIMessageChunk | None = None
    async for chunk in openai(server).astream("count"):
        seen.append((time.perf_counter(), str(chunk.content)))
        final = chunk if final is None else final + chunk
    texts = [t for _, t in seen if t]
    assert texts == ["one ", "two ", "three"]
    assert seen[2][0] - seen[0][0] >= 0.08  # delivered as they came, not all at the end
    assert (
        final is not None and final.usage_metadata is not None and final.usage_metadata["output_tokens"] == 3
    )


# --- Anthropic ---------------------------------------------------------------------------------------
async def test_anthropic_stream_usage_with_5m_and_1h_cache_writes(server: Loopback) -> None:
    usage = anthropic_usage(fresh=20, output=4, read=1000, write_5m=300, write_1h=200)
    server.push(anthropic_stream(["Bon", "jour"], usage, first_event_delay=0.05))
    msg = await anthropic(server).ainvoke([HumanMessage("hi")])
    assert msg.content == "Bonjour"
    um = msg.usage_metadata
    assert um is not None
    assert um["input_tokens"] == 20 + 1000 + 500  # OTel: input includes cache reads and writes
    assert um["output_tokens"] == 4
    details = um["input_token_details"]
    assert details["cache_read"] == 1000 and details["cache_creation"] == 500
    assert details.get("ephemeral_1h_input_tokens") == 200
    req = server.requests[0]
    assert req.path == "/v1/messages"
    assert req.headers["x-api-key"] == KEY and req.headers["anthropic-version"] == "2023-06-01"
    assert msg.response_metadata["ttft_ms"] >= 50


async def test_anthropic_tool_use_streams_its_input(server: Loopback) -> None:
    server.push(
        anthropic_stream(
            [], anthropic_usage(30, 12), tool_use=("toolu_1", "date_diff", ['{"start":', ' "2026-03-02"}'])
        )
    )
    msg = await anthropic(server).bind_tools([_tool("date_diff")], tool_choice="date_diff").ainvoke("go")
    assert isinstance(msg, AIMessage)
    assert msg.tool_calls[0]["name"] == "date_diff" and msg.tool_calls[0]["args"] == {"start": "2026-03-02"}
    body = body_of(server.requests[0])
    assert body["tool_choice"] == {"type": "tool", "name": "date_diff"}


async def test_anthropic_structured_output_comes_back_as_json_text(server: Loopback) -> None:
    schema = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]}
    server.push(
        anthropic_stream([], anthropic_usage(30, 8), tool_use=("toolu_1", "respond", ['{"label": "b"}']))
    )
    msg = await anthropic(server).ainvoke("pick", response_format={"type": "json_object", "schema": schema})
    assert msg.content == '{"label": "b"}' and msg.tool_calls == []


async def test_anthropic_prefill_reply_is_the_continuation(server: Loopback) -> None:
    server.push(anthropic_stream([" blue."], anthropic_usage(12, 2)))
    msg = await anthropic(server).ainvoke([HumanMessage("Name a colour"), AIMessage("The colour is")])
    assert msg.content == " blue."
    assert body_of(server.requests[0])["messages"][-1]["role"] == "assistant"


# --- faults ------------------------------------------------------------------------------------------
async def test_429_with_retry_after_is_waited_out_and_ttft_comes_from_the_good_attempt(
    server: Loopback,
) -> None:
    server.push(
        Reply(status=429, headers={"retry-after": "0.3"}, body=error_body("slow down")),
        openai_stream(["ok"], openai_usage(5, 1), first_event_delay=0.02),
    )
    msg = await openai(server).ainvoke("hi")
    meta = msg.response_metadata
    assert [a["status"] for a in meta["attempts"]] == [429, 200]
    assert meta["attempts"][0]["wait_ms"] == pytest.approx(300)
    assert model_state(server.url + "/v1", "gpt-4o-mini").limit < 16  # the 429 lowered the concurrency cap
    assert meta["retry_wait_ms"] == pytest.approx(300)
    assert 20 <= meta["ttft_ms"] < 250  # measured from the start of the attempt that succeeded


async def test_500_is_retried_then_fails_with_a_clear_model_error(server: Loopback) -> None:
    server.push(*[Reply(status=500, body=error_body("internal")) for _ in range(3)])
    with pytest.raises(ProviderError, match=r"failed after 3 attempts: HTTP 500: internal") as info:
        await openai(server, max_retries=2).ainvoke("hi")
    assert [a.status for a in info.value.attempts] == [500, 500, 500]
    assert len(server.requests) == 3


async def test_a_stalled_server_times_out_and_is_retried(server: Loopback) -> None:
    server.push(Reply(stall=5.0), openai_stream(["late"], openai_usage(5, 1)))
    msg = await openai(server, read_timeout_s=0.2).ainvoke("hi")
    assert msg.content == "late"
    assert "timed out" in msg.response_metadata["attempts"][0]["error"]


async def test_a_stream_cut_mid_way_is_retried_and_the_broken_attempt_billed_as_estimated(
    server: Loopback,
) -> None:
    server.push(
        openai_stream(["The answer ", "is forty", " two and more words"], openai_usage(40, 9), cut_after=3),
        openai_stream(["42"], openai_usage(40, 1)),
    )
    msg = await openai(server).ainvoke("hi")
    assert msg.content == "42"
    broken = msg.response_metadata["attempts"][0]
    assert "RemoteProtocolError" in broken["error"] and "after output began" in broken["error"]
    assert broken["usage"]["usage_estimated"] is True
    assert broken["usage"]["output_tokens"] >= 4  # "The answer is forty" ~ 19 chars
    assert broken["usage"]["input_tokens"] > 0


async def test_a_malformed_json_chunk_is_retried_then_reported(server: Loopback) -> None:
    bad = Reply(events=[sse({"choices": [{"index": 0, "delta": {"content": "x"}}]}), "data: {not json\n\n"])
    server.push(bad, openai_stream(["fine"], openai_usage(5, 1)))
    assert (await openai(server).ainvoke("hi")).content == "fine"
    server.push(bad, bad)
    with pytest.raises(ModelError, match="malformed JSON in stream chunk"):
        await openai(server, max_retries=1).ainvoke("hi")


async def test_401_fails_at_once_and_never_shows_the_key(server: Loopback) -> None:
    server.push(Reply(status=401, body=error_body(f"Incorrect API key provided: {KEY}")))
    with pytest.raises(ProviderError) as info:
        await openai(server).ainvoke("hi")
    text = str(info.value) + repr([a.as_dict() for a in info.value.attempts])
    assert KEY not in text and "SECRETKEY" not in text
    assert "check the API key" in text
    assert len(server.requests) == 1
    assert KEY not in repr(openai(server))


async def test_an_exhausted_rate_window_holds_the_next_request_until_reset(server: Loopback) -> None:
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "300ms"}
    server.push(
        openai_stream(["a"], openai_usage(5, 1), headers=headers), openai_stream(["b"], openai_usage(5, 1))
    )
    model = openai(server)
    await model.ainvoke("1")
    t0 = time.perf_counter()
    await model.ainvoke("2")
    assert time.perf_counter() - t0 >= 0.25


# --- fallback chains ---------------------------------------------------------------------------------
async def test_fallback_keeps_the_tools_and_tool_choice_when_anthropic_takes_over(server: Loopback) -> None:
    server.route("/v1/chat/completions", Reply(status=500, body=error_body("down")))
    server.route(
        "/v1/messages",
        anthropic_stream([], anthropic_usage(30, 10), tool_use=("toolu_1", "date_diff", ['{"start": "x"}'])),
    )
    chain = FallbackChatModel(
        members=[openai(server, max_retries=0), anthropic(server)],
        names=["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"],
    )
    msg = await chain.bind_tools([_tool("date_diff")], tool_choice="required").ainvoke("go")
    assert isinstance(msg, AIMessage)
    assert msg.tool_calls[0]["name"] == "date_diff"
    assert msg.response_metadata["served_by"] == "anthropic:claude-haiku-4-5"
    assert [a["model"] for a in msg.response_metadata["attempts"]] == [
        "openai:gpt-4o-mini",
        "anthropic:claude-haiku-4-5",
    ]
    first, second = body_of(server.requests[0]), body_of(server.requests[1])
    assert first["tools"][0]["function"]["name"] == "date_diff" and first["tool_choice"] == "required"
    assert second["tools"] == [
        {
            "name": "date_diff",
            "description": "Tool date_diff.",
            "input_schema": {
                "type": "object",
                "properties": {"start": {"type": "string"}},
                "required": ["start"],
            },
        }
    ]
    assert second["tool_choice"] == {"type": "any"}


def test_the_clients_and_the_fallback_chain_bind_tools_through_one_implementation() -> None:
    # A second copy drifts: a spelling of tool_choice taught to one would be refused by the other.
    assert FallbackChatModel.bind_tools is OpenAIChatModel.bind_tools is AnthropicChatModel.bind_tools


async def test_a_model_that_keeps_failing_cools_down_and_is_skipped(server: Loopback) -> None:
    server.route(
        "/v1/chat/completions", *[Reply(status=503, body=error_body("overloaded")) for _ in range(2)]
    )
    server.route("/v1/messages", *[anthropic_stream(["ok"], anthropic_usage(5, 1)) for _ in range(3)])
    chain = FallbackChatModel(
        members=[openai(server, max_retries=0), anthropic(server)],
        names=["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"],
        cooldown_after=2,
        cooldown_s=60,
    )
    for _ in range(3):
        assert (await chain.ainvoke("hi")).content == "ok"
    paths = [r.path for r in server.requests]
    assert paths.count("/v1/chat/completions") == 2  # the third call skipped the cooling model
    assert paths.count("/v1/messages") == 3


async def test_a_long_retry_after_fails_over_at_once(server: Loopback) -> None:
    server.route(
        "/v1/chat/completions", Reply(status=429, headers={"retry-after": "600"}, body=error_body("quota"))
    )
    server.route("/v1/messages", anthropic_stream(["ok"], anthropic_usage(5, 1)))
    chain = FallbackChatModel(
        members=[openai(server), anthropic(server)],
        names=["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"],
    )
    t0 = time.perf_counter()
    assert (await chain.ainvoke("hi")).content == "ok"
    assert time.perf_counter() - t0 < 2.0


async def test_when_every_member_fails_the_error_names_each(server: Loopback) -> None:
    server.route("/v1/chat/completions", Reply(status=500, body=error_body("a down")))
    server.route(
        "/v1/messages",
        Reply(status=529, body={"type": "error", "error": {"type": "overloaded_error", "message": "b down"}}),
    )
    chain = FallbackChatModel(
        members=[openai(server, max_retries=0), anthropic(server, max_retries=0)],
        names=["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"],
    )
    with pytest.raises(ProviderError, match=r"a down.*b down"):
        await chain.ainvoke("hi")


def _tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Tool {name}.",
            "parameters": {
                "type": "object",
                "properties": {"start": {"type": "string"}},
                "required": ["start"],
            },
        },
    }
