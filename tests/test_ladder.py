"""A feature the server refuses moves that endpoint down one rung, at once and for the rest of the process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from loopback import Loopback, Reply
from wire import anthropic_stream, anthropic_usage, body_of, error_body, openai_stream, openai_usage

from orchestrator.errors import ToolsUnsupportedError
from orchestrator.providers.anthropic import AnthropicChatModel
from orchestrator.providers.fallback import FallbackChatModel
from orchestrator.providers.http import ProviderError, aclose_clients, model_state, reset_model_states
from orchestrator.providers.ladder import rejected_feature
from orchestrator.providers.openai import OpenAIChatModel

FAST = {"backoff_base_s": 0.2, "backoff_max_s": 0.2, "read_timeout_s": 5.0}
SCHEMA = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]}
FMT = {"type": "json_object", "schema": SCHEMA}
# What llama-cpp-python's server (0.3.x) answers to a json_schema response format, verbatim.
LLAMA_CPP_500 = {
    "error": {
        "message": "1 validation error:\n  {'type': 'literal_error', "
        "'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", "
        "'input': 'json_schema', 'ctx': {'expected': "
        "\"'text' or 'json_object'\"}}\n\n  File \"llama_cpp/server/app.py\", line 376, in "
        "create_chat_completion\n    POST /v1/chat/completions",
        "type": "internal_server_error",
        "param": None,
        "code": None,
    }
}
TOOL = {
    "type": "function",
    "function": {"name": "date_diff", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture(autouse=True)
async def _fresh() -> AsyncIterator[None]:
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()


@pytest.fixture
def server() -> Iterator[Loopback]:
    with Loopback() as lb:
        yield lb


def openai_compat(server: Loopback, **kw: Any) -> OpenAIChatModel:
    return OpenAIChatModel(
        model="qwen", model_name="openai-compat:qwen", base_url=server.url + "/v1", **FAST, **kw
    )


@pytest.mark.parametrize(
    ("status", "message", "feature"),
    [
        (500, LLAMA_CPP_500["error"]["message"], "json_schema"),
        (
            400,
            "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
            "json_schema",
        ),
        (400, "'response_format.type' must be 'json_schema' or 'text'", "json_schema"),
        (400, "registry.ollama.ai/library/gemma:2b does not support tools", "tools"),
        (
            400,
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
            "tool_choice",
        ),
        (500, "tools param requires --jinja flag", "tools"),
        (
            400,
            "Unsupported parameter: 'parallel_tool_calls' is not supported with this model.",
            "parallel_tool_calls",
        ),
        (422, "response_format json_object is not supported by this backend", "json_object"),
        (500, "Internal server error", None),
        (500, "CUDA error: out of memory while running the tools", None),  # no refusal near "tools"
        (503, "json_schema is not supported", None),  # overloaded: a server error, retried
        (429, "rate limited: response_format requests are invalid for a minute", None),
    ],
)
def test_which_errors_are_refusals(status: int, message: str, feature: str | None) -> None:
    assert rejected_feature(status, message) == feature


async def test_llama_cpp_servers_500_steps_down_to_a_forced_tool_at_once_and_for_good(
    server: Loopback, caplog: pytest.LogCaptureFixture
) -> None:
    server.push(
        Reply(status=500, body=LLAMA_CPP_500),
        openai_stream([], None, tool_calls=[("c1", "respond", ['{"label": "b"}'])]),
        openai_stream([], None, tool_calls=[("c2", "respond", ['{"label": "a"}'])]),
    )
    model = openai_compat(server)
    with caplog.at_level(logging.INFO, logger="orchestrator.providers"):
        first = await model.ainvoke([HumanMessage("pick")], response_format=FMT)
    assert first.content == '{"label": "b"}' and first.tool_calls == []
    meta = first.response_metadata
    (step,) = meta["downgraded"]
    assert step["feature"] == "json_schema" and step["to"] == "tool"
    assert "Input should be 'text' or 'json_object'" in step["reason"] and len(step["reason"]) <= 200
    assert meta["structured_output"] == "tool"
    assert [a["status"] for a in meta["attempts"]] == [500, 200]
    assert meta["retry_wait_ms"] == 0  # stepped down at once: no backoff as for a server error
    assert any(
        "json_schema refused" in r.getMessage() and "using tool" in r.getMessage() for r in caplog.records
    )
    sent = [body_of(r) for r in server.requests]
    assert sent[0]["response_format"]["type"] == "json_schema" and "tools" not in sent[0]
    assert "response_format" not in sent[1] and sent[1]["tool_choice"]["function"]["name"] == "respond"

    second = await model.ainvoke([HumanMessage("pick again")], response_format=FMT)  # the same process
    assert len(server.requests) == 3  # straight to the working rung
    assert "downgraded" not in second.response_metadata
    assert second.response_metadata["structured_output"] == "tool"
    assert second.content == '{"label": "a"}'
    assert model_state(model.base_url, model.model).unsupported.keys() == {"json_schema"}


async def test_without_tools_the_ladder_goes_json_object_then_the_prompt(server: Loopback) -> None:
    server.push(
        Reply(status=500, body=LLAMA_CPP_500),
        Reply(status=400, body=error_body("'response_format.type' must be 'json_schema' or 'text'")),
        openai_stream(['{"label": "a"}'], openai_usage(20, 5)),
    )
    msg = await openai_compat(server, tool_calling=False).ainvoke([HumanMessage("pick")], response_format=FMT)
    assert msg.content == '{"label": "a"}'
    assert [(d["feature"], d["to"]) for d in msg.response_metadata["downgraded"]] == [
        ("json_schema", "json_object"),
        ("json_object", "prompt"),
    ]
    sent = [body_of(r) for r in server.requests]
    assert sent[1]["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert "response_format" not in sent[2]


async def test_a_plain_500_is_still_retried_as_a_server_error(server: Loopback) -> None:
    server.push(Reply(status=500, body=error_body("boom")), openai_stream(['{"label": "a"}'], None))
    msg = await openai_compat(server).ainvoke([HumanMessage("pick")], response_format=FMT)
    assert "downgraded" not in msg.response_metadata
    assert msg.response_metadata["structured_output"] == "json_schema"
    assert [a["status"] for a in msg.response_metadata["attempts"]] == [500, 200]
    assert msg.response_metadata["retry_wait_ms"] > 0


async def test_refused_tools_raise_tools_unsupported_and_are_not_sent_again(server: Loopback) -> None:
    server.push(
        Reply(status=400, body=error_body("registry.ollama.ai/library/qwen:0.5b does not support tools"))
    )
    model = openai_compat(server).bind_tools([TOOL], tool_choice="required")
    with pytest.raises(ToolsUnsupportedError, match="does not support tools") as info:
        await model.ainvoke("go")
    assert info.value.feature == "tools" and [a.status for a in info.value.attempts] == [400]
    with pytest.raises(ToolsUnsupportedError, match="does not take tools"):
        await model.ainvoke("go again")
    assert len(server.requests) == 1  # remembered: no request the second time
    # structured output on the same endpoint no longer rides a forced tool
    server.push(Reply(status=500, body=LLAMA_CPP_500), openai_stream(['{"label": "b"}'], None))
    msg = await openai_compat(server).ainvoke([HumanMessage("pick")], response_format=FMT)
    assert msg.response_metadata["downgraded"][0]["to"] == "json_object"


async def test_refused_parallel_tool_calls_is_left_out_and_the_call_goes_on(server: Loopback) -> None:
    refusal = "Unsupported parameter: 'parallel_tool_calls' is not supported with this model."
    server.push(
        Reply(status=400, body=error_body(refusal)),
        openai_stream([], None, tool_calls=[("c1", "date_diff", ["{}"])]),
        openai_stream([], None, tool_calls=[("c2", "date_diff", ["{}"])]),
    )
    model = openai_compat(server).bind_tools([TOOL], parallel_tool_calls=False)
    msg = await model.ainvoke("go")
    assert msg.tool_calls[0]["name"] == "date_diff"  # type: ignore[attr-defined]
    assert msg.response_metadata["downgraded"] == [
        {"feature": "parallel_tool_calls", "to": "omitted", "reason": f"HTTP 400: {refusal}"}
    ]
    await model.ainvoke("again")
    assert ["parallel_tool_calls" in body_of(r) for r in server.requests] == [True, False, False]


async def test_anthropic_tools_refused_falls_back_to_a_prefill(server: Loopback) -> None:
    server.push(
        Reply(status=400, body=error_body("tools: this endpoint does not support tools")),
        anthropic_stream(['"label": "a"}'], anthropic_usage(20, 5)),
    )
    model = AnthropicChatModel(model="claude-haiku-4-5", base_url=server.url, **FAST)
    msg = await model.ainvoke([HumanMessage("pick")], response_format=FMT)
    assert msg.content == '{"label": "a"}'
    assert msg.response_metadata["downgraded"][0] | {"reason": ""} == {
        "feature": "tool",
        "to": "prompt",
        "reason": "",
    }
    last = body_of(server.requests[1])
    assert "tools" not in last and last["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "{"}],
    }


async def test_a_chain_whose_members_all_refuse_tools_says_so(server: Loopback) -> None:
    refusal = Reply(status=400, body=error_body("this model does not support tools"))
    server.push(refusal, refusal)
    one = openai_compat(server)
    two = OpenAIChatModel(
        model="other", model_name="openai-compat:other", base_url=server.url + "/v1", **FAST
    )
    chain = FallbackChatModel(members=[one, two], names=["openai-compat:qwen", "openai-compat:other"])
    with pytest.raises(ToolsUnsupportedError, match="no model in the fallback chain takes tools"):
        await chain.bind_tools([TOOL]).ainvoke("go")
    assert not model_state("chain", "openai-compat:qwen").failures  # not a failing model: no cooldown


async def test_a_refusal_with_nothing_to_step_down_fails_without_retries(server: Loopback) -> None:
    server.push(Reply(status=400, body=error_body("response_format is invalid: json_schema unsupported")))
    with pytest.raises(ProviderError, match="HTTP 400"):
        await openai_compat(server).ainvoke("no structured output asked", extra_body={"response_format": {}})
    assert len(server.requests) == 1


async def test_a_server_that_ignores_a_required_tool_choice_is_remembered(server: Loopback) -> None:
    """llama-cpp-python's server answers `tool_choice: "required"` with text. The reply is returned (the
    caller may read a call the model wrote), and the endpoint is remembered as ignoring the choice: the next
    call with tools raises ToolsUnsupportedError at once, so the caller asks another way."""
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    ]
    server.push(openai_stream(['{"name": "f", "arguments": {}}'], openai_usage(10, 5)))
    model = openai_compat(server)
    reply = await model.ainvoke([HumanMessage("x")], tools=tools, tool_choice="required")
    assert reply.content == '{"name": "f", "arguments": {}}' and not reply.tool_calls
    assert [d["feature"] for d in reply.response_metadata["downgraded"]] == ["tool_choice"]
    with pytest.raises(ToolsUnsupportedError, match="tool_choice is ignored"):
        await model.ainvoke([HumanMessage("x")], tools=tools, tool_choice="required")
    assert len(server.requests) == 1  # the second call never reached the server
    server.push(openai_stream(["plain"], openai_usage(10, 1)))
    assert (await model.ainvoke([HumanMessage("x")])).content == "plain"  # calls without tools go on
