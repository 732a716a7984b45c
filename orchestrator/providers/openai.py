"""OpenAI-compatible chat completions: OpenAI, vLLM, Ollama, TGI, llama.cpp's server, Groq, Together, Mistral.

Usage convention: `prompt_tokens` already includes `prompt_tokens_details.cached_tokens`, which is OTel's
convention too, so it is taken as is; `completion_tokens` includes `reasoning_tokens`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage

from orchestrator.pricing import Usage
from orchestrator.providers.base import HttpChatModel, normalize_tool_choice
from orchestrator.providers.http import Draft, Protocol, StreamState

__all__ = ["OpenAIChatModel", "openai_messages", "openai_usage"]


def openai_usage(u: dict[str, Any] | None) -> Usage | None:
    """Usage from an OpenAI `usage` object (None when absent)."""
    if not u:
        return None
    prompt = u.get("prompt_tokens_details") or {}
    completion = u.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(u.get("prompt_tokens") or 0),
        output_tokens=int(u.get("completion_tokens") or 0),
        cache_read_tokens=int(prompt.get("cached_tokens") or 0),
        reasoning_tokens=int(completion.get("reasoning_tokens") or 0),
    )


def _content(m: BaseMessage) -> Any:
    return m.content if isinstance(m.content, list) else str(m.content)


def openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages in the chat-completions wire form."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": _content(m)})
        elif isinstance(m, ToolMessage):
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": str(m.content)})
        elif isinstance(m, AIMessage):
            msg: dict[str, Any] = {"role": "assistant", "content": _content(m) or None}
            if m.tool_calls:
                msg["tool_calls"] = [
                    {
                        "id": tc["id"],
                        "type": "function",
                        "function": {"name": tc["name"], "arguments": json.dumps(tc["args"])},
                    }
                    for tc in m.tool_calls
                ]
            out.append(msg)
        else:
            out.append({"role": "user", "content": _content(m)})
    return out


class _Stream(StreamState):
    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[int, dict[str, Any]] = {}

    def error(self, event: str | None, data: dict[str, Any]) -> str | None:
        err = data.get("error")
        if err is None:
            return None
        return str(err.get("message") if isinstance(err, dict) else err)

    def feed(self, event: str | None, data: dict[str, Any]) -> str | None:
        d = self.draft
        if d.model is None and data.get("model"):
            d.model = str(data["model"])
        usage = data.get("usage")
        if usage:
            d.usage = openai_usage(usage)
        out: str | None = None
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                d.text += text
                out = text if out is None else out + text
            elif delta.get("reasoning_content") or delta.get("reasoning"):
                out = out or ""
            calls = delta.get("tool_calls")
            if calls:
                self._tool_deltas(calls)
                out = out or ""
            if choice.get("finish_reason"):
                d.finish_reason = str(choice["finish_reason"])
        return out

    def _tool_deltas(self, calls: list[dict[str, Any]]) -> None:
        for tc in calls:
            slot = self._calls.setdefault(int(tc.get("index", 0)), {"id": None, "name": "", "arguments": ""})
            if tc.get("id"):
                slot["id"] = tc["id"]
            fn = tc.get("function") or {}
            if fn.get("name"):
                slot["name"] += fn["name"]
            if fn.get("arguments"):
                slot["arguments"] += fn["arguments"]
        self.draft.tool_calls = [self._calls[i] for i in sorted(self._calls)]


class _OpenAI(Protocol):
    path = "/chat/completions"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def parse(self, data: dict[str, Any]) -> Draft:
        choice = (data.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        calls = [
            {
                "id": tc.get("id"),
                "name": (tc.get("function") or {}).get("name", ""),
                "arguments": (tc.get("function") or {}).get("arguments") or "",
            }
            for tc in message.get("tool_calls") or []
        ]
        return Draft(
            text=message.get("content") or "",
            tool_calls=calls,
            usage=openai_usage(data.get("usage")),
            finish_reason=choice.get("finish_reason"),
            model=data.get("model"),
        )

    def stream_state(self) -> StreamState:
        return _Stream()


_PROTOCOL = _OpenAI()


class OpenAIChatModel(HttpChatModel):
    """A chat-completions endpoint. Any OpenAI-compatible server: set `base_url` (with `/v1`).

    Example:
        >>> m = OpenAIChatModel(model="gpt-4o-mini", base_url="http://127.0.0.1:8000/v1")
        >>> m.build_body([], stop=None, stream=True)["stream_options"]
        {'include_usage': True}
    """

    max_tokens_field: str = "max_tokens"
    """OpenAI's own API wants `max_completion_tokens` (reasoning models refuse `max_tokens`)."""
    json_schema: bool = True
    """The server accepts `response_format: json_schema`; otherwise `json_object` is sent."""

    @property
    def _llm_type(self) -> str:
        return "orchestrator-openai"

    @property
    def protocol(self) -> Protocol:
        return _PROTOCOL

    def build_body(
        self, messages: Sequence[BaseMessage], *, stop: list[str] | None, stream: bool, **kwargs: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(messages),
            self.max_tokens_field: int(kwargs.get("max_tokens") or self.max_tokens),
        }
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            body["temperature"] = temperature
        if stop:
            body["stop"] = stop
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if kwargs.get("tools"):
            body["tools"] = kwargs["tools"]
        choice = normalize_tool_choice(kwargs.get("tool_choice"))
        if choice is not None:
            body["tool_choice"] = (
                choice
                if choice in ("auto", "none", "required")
                else {"type": "function", "function": {"name": choice}}
            )
        if kwargs.get("parallel_tool_calls") is not None:
            body["parallel_tool_calls"] = bool(kwargs["parallel_tool_calls"])
        fmt = kwargs.get("response_format")
        if fmt:
            body["response_format"] = self._response_format(fmt)
        body.update(kwargs.get("extra_body") or {})
        return body

    def _response_format(self, fmt: dict[str, Any]) -> dict[str, Any]:
        if fmt.get("type") == "json_schema":
            return fmt
        schema = fmt.get("schema")
        if schema is not None and self.json_schema:
            return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
        return {"type": "json_object"}
