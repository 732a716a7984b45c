"""OpenAI-compatible chat completions: OpenAI, vLLM, Ollama, TGI, llama.cpp's server, Groq, Together, Mistral.

Usage convention: `prompt_tokens` already includes `prompt_tokens_details.cached_tokens`, which is OTel's
convention too, so it is taken as is; `completion_tokens` includes `reasoning_tokens`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage

from orchestrator.cost.pricing import Usage
from orchestrator.providers.base import RESPOND, HttpChatModel, normalize_tool_choice, schema_of
from orchestrator.providers.http import Draft, Protocol, StreamState
from orchestrator.providers.ladder import Rung
from orchestrator.providers.schemas import Prepared, prepare, strict_schema

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


def least_margin(margin: float | None, logprobs: Any) -> float | None:
    """The smallest lead of a chosen token's log-probability over its best alternative, over `margin` and
    the tokens of a `logprobs` block (`{"content": [{"token", "logprob", "top_logprobs": [...]}]}`)."""
    for item in (logprobs or {}).get("content") or () if isinstance(logprobs, dict) else ():
        if not isinstance(item, dict) or not isinstance(item.get("logprob"), (int, float)):
            continue
        rivals = [
            float(alt["logprob"])
            for alt in item.get("top_logprobs") or ()
            if isinstance(alt, dict)
            and alt.get("token") != item.get("token")
            and isinstance(alt.get("logprob"), (int, float))
        ]
        if rivals:
            lead = float(item["logprob"]) - max(rivals)
            margin = lead if margin is None else min(margin, lead)
    return margin


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
            logprobs = choice.get("logprobs")
            if logprobs:
                d.margin = least_margin(d.margin, logprobs)
            if choice.get("finish_reason"):
                d.finish_reason = str(choice["finish_reason"])
        return out

    def _tool_deltas(self, calls: list[dict[str, Any]]) -> None:
        for tc in calls:
            slot = self._calls.setdefault(int(tc.get("index", 0)), {"id": None, "name": "", "arguments": ""})
            if tc.get("id"):
                slot["id"] = tc["id"]
            fn = tc.get("function") or {}
            name = fn.get("name")
            if name and name != slot["name"]:  # some servers (llama-cpp-python) repeat it in every delta
                slot["name"] += name
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
            margin=least_margin(None, choice.get("logprobs")),
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
    """The server accepts `response_format: json_schema`; otherwise the next rung (a forced tool or
    `json_object`) is used."""
    strict: bool = False
    """Send schemas in strict mode (OpenAI's own API): every object closed, every property required."""

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
        if kwargs.get("seed") is not None:  # draws meant to differ (a worker's repair by sampling)
            body["seed"] = int(kwargs["seed"])
        if stop:
            body["stop"] = stop
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        tools = [_strict_tool(t) for t in kwargs.get("tools") or ()]
        choice = normalize_tool_choice(kwargs.get("tool_choice"))
        fmt = kwargs.get("response_format")
        if fmt:
            rung: Rung = kwargs.get("rung") or self.structured_rungs(**kwargs)[0]
            schema = schema_of(fmt)
            if schema is not None and rung in ("json_schema", "tool"):
                sent = self.prepared(schema)
                strict = {"strict": True} if sent.strict else {}
                if rung == "json_schema":
                    name = (fmt.get("json_schema") or {}).get("name") or "response"
                    spec = {"name": name, "schema": sent.schema, **strict}
                    body["response_format"] = {"type": "json_schema", "json_schema": spec}
                else:
                    tools.append(_function(RESPOND, "Give the answer.", sent.schema, **strict))
                    choice = RESPOND
            elif rung != "prompt":
                # `schema` beside json_object is llama-cpp-python's extension (it decodes by the schema);
                # other servers ignore it
                body["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
        if tools:
            body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = (
                choice
                if choice in ("auto", "none", "required")
                else {"type": "function", "function": {"name": choice}}
            )
        if kwargs.get("parallel_tool_calls") is not None:
            body["parallel_tool_calls"] = bool(kwargs["parallel_tool_calls"])
        if kwargs.get("logprobs"):  # the reply's margin (see `least_margin`): how sure the model was
            body["logprobs"] = True
            body["top_logprobs"] = 5
        body.update(kwargs.get("extra_body") or {})
        return body

    def structured_rungs(self, **kwargs: Any) -> tuple[Rung, ...]:
        """JSON schema (when the server has it), a forced tool (when it has tools and the call none),
        JSON mode, the prompt alone."""
        if schema_of(kwargs.get("response_format")) is None:
            return ("json_object", "prompt")
        best: tuple[Rung, ...] = ("json_schema",) if self.json_schema else ()
        if self.tool_calling and not kwargs.get("tools"):
            best += ("tool",)
        return (*best, "json_object", "prompt")

    def prepared(self, schema: dict[str, Any]) -> Prepared:
        return prepare(schema, strict=self.strict)


def _function(name: str, description: str, parameters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    fn = {"name": name, "description": description, "parameters": parameters, **extra}
    return {"type": "function", "function": fn}


def _strict_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A function the caller marked `strict` gets a schema strict mode accepts (or goes non-strict)."""
    fn = tool.get("function") or {}
    if not fn.get("strict"):
        return tool
    made = strict_schema(fn.get("parameters") or {"type": "object", "properties": {}})
    changed = {"parameters": made} if made is not None else {"strict": False}
    return {**tool, "function": {**fn, **changed}}
