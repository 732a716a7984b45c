"""Anthropic Messages: system prompt, tools, prefill, streaming events, prompt caching.

Usage convention: Anthropic's `input_tokens` excludes cache reads and writes; OTel's includes them. So the
OTel input count is `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`, and each part is
priced at its own rate (1-hour cache writes apart from 5-minute ones).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage

from orchestrator.cost.pricing import Usage
from orchestrator.providers.base import RESPOND, HttpChatModel, normalize_tool_choice, schema_of
from orchestrator.providers.http import Completion, Draft, Protocol, StreamState
from orchestrator.providers.ladder import Rung
from orchestrator.providers.schemas import Prepared

__all__ = ["ANTHROPIC_VERSION", "AnthropicChatModel", "anthropic_usage"]

ANTHROPIC_VERSION = "2023-06-01"


def anthropic_usage(u: dict[str, Any] | None, prior: Usage | None = None) -> Usage | None:
    """Usage from an Anthropic `usage` object, in OTel's convention; later events update earlier counts."""
    if not u:
        return prior
    base = prior or Usage()
    fresh = int(u["input_tokens"]) if u.get("input_tokens") is not None else None
    write = (
        int(u["cache_creation_input_tokens"]) if u.get("cache_creation_input_tokens") is not None else None
    )
    read = int(u["cache_read_input_tokens"]) if u.get("cache_read_input_tokens") is not None else None
    split = u.get("cache_creation") or {}
    write = base.cache_write_tokens if write is None else write
    read = base.cache_read_tokens if read is None else read
    uncached = (
        (base.input_tokens - base.cache_read_tokens - base.cache_write_tokens) if fresh is None else fresh
    )
    one_hour = split.get("ephemeral_1h_input_tokens")
    return Usage(
        input_tokens=uncached + write + read,
        output_tokens=int(u["output_tokens"]) if u.get("output_tokens") is not None else base.output_tokens,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=int(one_hour) if one_hour is not None else base.cache_write_1h_tokens,
    )


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return [b if isinstance(b, dict) else {"type": "text", "text": str(b)} for b in content]
    return [{"type": "text", "text": str(content)}] if str(content) else []


def _mark(blocks: list[dict[str, Any]], marker: dict[str, Any] | None) -> None:
    if marker and blocks:
        blocks[-1] = {**blocks[-1], "cache_control": marker}


class _Stream(StreamState):
    def __init__(self) -> None:
        super().__init__()
        self._blocks: dict[int, dict[str, Any]] = {}

    def error(self, event: str | None, data: dict[str, Any]) -> str | None:
        if event == "error" or data.get("type") == "error":
            err = data.get("error") or {}
            return f"{err.get('type', 'error')}: {err.get('message', '')}"
        return None

    def feed(self, event: str | None, data: dict[str, Any]) -> str | None:
        d = self.draft
        kind = data.get("type") or event
        if kind == "message_start":
            msg = data.get("message") or {}
            d.model = msg.get("model")
            d.usage = anthropic_usage(msg.get("usage"))
        elif kind == "content_block_start":
            block = dict(data.get("content_block") or {})
            self._blocks[int(data.get("index", 0))] = block
            if block.get("type") == "tool_use":
                block["arguments"] = ""
                self._sync_calls()
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            block = self._blocks.setdefault(int(data.get("index", 0)), {"type": "text", "text": ""})
            if delta.get("type") == "text_delta":
                text = str(delta.get("text", ""))
                d.text += text
                return text
            if delta.get("type") == "input_json_delta":
                block["arguments"] = block.get("arguments", "") + str(delta.get("partial_json", ""))
                self._sync_calls()
                return ""
            return ""  # thinking and other deltas are tokens too
        elif kind == "message_delta":
            stop = (data.get("delta") or {}).get("stop_reason")
            if stop:
                d.finish_reason = str(stop)
            d.usage = anthropic_usage(data.get("usage"), d.usage)
        return None

    def _sync_calls(self) -> None:
        self.draft.tool_calls = [
            {"id": b.get("id"), "name": b.get("name", ""), "arguments": b.get("arguments", "")}
            for _, b in sorted(self._blocks.items())
            if b.get("type") == "tool_use"
        ]


class _Anthropic(Protocol):
    path = "/v1/messages"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def parse(self, data: dict[str, Any]) -> Draft:
        text = "".join(b.get("text", "") for b in data.get("content") or [] if b.get("type") == "text")
        calls = [
            {"id": b.get("id"), "name": b.get("name", ""), "arguments": json.dumps(b.get("input") or {})}
            for b in data.get("content") or []
            if b.get("type") == "tool_use"
        ]
        return Draft(
            text=text,
            tool_calls=calls,
            usage=anthropic_usage(data.get("usage")),
            finish_reason=data.get("stop_reason"),
            model=data.get("model"),
        )

    def stream_state(self) -> StreamState:
        return _Stream()


_PROTOCOL = _Anthropic()


class AnthropicChatModel(HttpChatModel):
    """The Anthropic Messages API. `base_url` is the API root, without `/v1`.

    * A trailing `AIMessage` is a prefill: the model continues it; the reply holds only the continuation.
    * `prompt_cache="5m"` or `"1h"` marks the cache-stable prefix (the tools and the system prompt) for prompt
      caching; a message's `additional_kwargs["cache_control"]` marks that message.
    * Structured output (`response_format` with a schema) goes through a forced `respond` tool (its
      `input_schema` an object: another root is wrapped); the reply's text is the tool input as JSON, in
      the caller's shape. Where tools are refused, a `{` prefill asks for JSON instead.

    Example:
        >>> m = AnthropicChatModel(model="claude-haiku-4-5", base_url="https://api.anthropic.com")
        >>> from langchain_core.messages import HumanMessage, SystemMessage
        >>> m.build_body([SystemMessage("Be brief."), HumanMessage("hi")], stop=None, stream=False)["system"]
        [{'type': 'text', 'text': 'Be brief.'}]
    """

    prompt_cache: Literal["5m", "1h"] | None = None

    @property
    def _llm_type(self) -> str:
        return "orchestrator-anthropic"

    @property
    def protocol(self) -> Protocol:
        return _PROTOCOL

    def _marker(self) -> dict[str, Any] | None:
        if self.prompt_cache is None:
            return None
        return {"type": "ephemeral", "ttl": "1h"} if self.prompt_cache == "1h" else {"type": "ephemeral"}

    def build_body(
        self, messages: Sequence[BaseMessage], *, stop: list[str] | None, stream: bool, **kwargs: Any
    ) -> dict[str, Any]:
        system: list[dict[str, Any]] = []
        turns: list[dict[str, Any]] = []
        for m in messages:
            if isinstance(m, SystemMessage):
                system.extend(_blocks(m.content))
                continue
            role = "assistant" if isinstance(m, AIMessage) else "user"
            if isinstance(m, ToolMessage):
                blocks: list[dict[str, Any]] = [
                    {
                        "type": "tool_result",
                        "tool_use_id": m.tool_call_id,
                        "content": str(m.content),
                        **({"is_error": True} if m.status == "error" else {}),
                    }
                ]
            else:
                blocks = _blocks(m.content)
                if isinstance(m, AIMessage):
                    blocks += [
                        {"type": "tool_use", "id": tc["id"], "name": tc["name"], "input": tc["args"]}
                        for tc in m.tool_calls
                    ]
            _mark(blocks, m.additional_kwargs.get("cache_control"))
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"].extend(blocks)
            else:
                turns.append({"role": role, "content": blocks})
        fmt = kwargs.get("response_format") or {}
        schema = schema_of(fmt)
        rung: Rung | None = (kwargs.get("rung") or self.structured_rungs(**kwargs)[0]) if fmt else None
        if rung == "prompt" and (not turns or turns[-1]["role"] != "assistant"):
            turns.append({"role": "assistant", "content": [{"type": "text", "text": "{"}]})  # JSON by prefill
        if turns and turns[-1]["role"] == "assistant":
            last = turns[-1]["content"]
            if last and last[-1].get("type") == "text":
                last[-1] = {**last[-1], "text": last[-1]["text"].rstrip()}  # the API refuses trailing spaces
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": int(kwargs.get("max_tokens") or self.max_tokens),
            "messages": turns,
        }
        if system:
            _mark(system, self._marker())
            body["system"] = system
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            body["temperature"] = temperature
        if stop:
            body["stop_sequences"] = stop
        if stream:
            body["stream"] = True
        tools = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for t in kwargs.get("tools") or []
        ]
        choice = normalize_tool_choice(kwargs.get("tool_choice"))
        if schema is not None and rung == "tool":
            sent = self.prepared(schema).schema
            tools.append({"name": RESPOND, "description": "Give the answer.", "input_schema": sent})
            choice = RESPOND
        if tools:
            _mark(tools, self._marker())
            body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = (
                {"type": "any"}
                if choice == "required"
                else {"type": choice}
                if choice in ("auto", "none")
                else {"type": "tool", "name": choice}
            )
        if kwargs.get("parallel_tool_calls") is False and "tool_choice" in body:
            body["tool_choice"]["disable_parallel_tool_use"] = True
        body.update(kwargs.get("extra_body") or {})
        return body

    def structured_rungs(self, **kwargs: Any) -> tuple[Rung, ...]:
        """A forced tool when there is a schema, else (or when tools are refused) a `{` prefill."""
        if self.tool_calling and schema_of(kwargs.get("response_format")) is not None:
            return ("tool", "prompt")
        return ("prompt",)

    def finish(
        self, completion: Completion, rung: Rung, prepared: Prepared | None, messages: Sequence[BaseMessage]
    ) -> None:
        """The `respond` tool's input as the text; on the prompt rung, the `{` our prefill took."""
        super().finish(completion, rung, prepared, messages)
        if rung == "prompt" and not (messages and isinstance(messages[-1], AIMessage)):
            completion.draft.text = "{" + completion.draft.text
