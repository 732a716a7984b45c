"""What the HTTP chat models share: the LangChain `BaseChatModel` face over `http.send`.

One async implementation: `_agenerate` and `_astream` both go through `complete()`; the sync methods run it
on a private event loop. Every result carries, in `response_metadata`, the measurements of the call
(`ttft_ms`, `duration_ms`, `generation_ms`, `attempts`, `retry_wait_ms`, `served_by`) and, in
`usage_metadata`, the usage in LangChain's convention (input includes cached tokens).

Structured output (`response_format` with a schema) is asked for on the best rung of the ladder the
endpoint allows (`ladder.py`); a refusal steps down at once and is remembered for the process, and the
reply says so: `response_metadata["structured_output"]` names the rung that answered and
`["downgraded"]` lists each step down (`{"feature", "to", "reason"}`). Schemas are sent in the form each
protocol accepts and replies come back in the caller's shape (`schemas.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.utils import LC_ID_PREFIX
from pydantic import Field

from orchestrator.cost.billing import estimate_prompt
from orchestrator.errors import ModelError, ToolsUnsupportedError
from orchestrator.providers.http import (
    Attempt,
    Completion,
    Endpoint,
    ModelState,
    Protocol,
    UnsupportedFeatureError,
    model_state,
    send,
)
from orchestrator.providers.ladder import RUNGS, Rung, feature_of_rung
from orchestrator.providers.schemas import Prepared, prepare
from orchestrator.streaming import Pieces, last_chunk
from orchestrator.sync import run_blocking
from orchestrator.tracing.callbacks import only_graph_tracer

__all__ = ["RESPOND", "HttpChatModel", "ToolChoice", "normalize_tool_choice", "schema_of"]

T = TypeVar("T")
_log = logging.getLogger("orchestrator.providers")
RESPOND = "respond"  # the forced tool that carries structured output on the "tool" rung
_TOOL_FEATURES = ("tools", "tool_choice")

# A neutral tool choice both protocols translate: "auto", "none", "required", or a tool's name.
ToolChoice = str


def normalize_tool_choice(choice: Any) -> ToolChoice | None:
    """Accept OpenAI, Anthropic and LangChain spellings; return 'auto' | 'none' | 'required' | a tool name."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function":
            return str(choice["function"]["name"])
        if kind == "tool":
            return str(choice["name"])
        if kind == "any":
            return "required"
        if kind in ("auto", "none"):
            return str(kind)
    raise ModelError(f"unsupported tool_choice {choice!r}: use 'auto', 'none', 'required' or a tool name")


class NeutralToolsChatModel(BaseChatModel):
    """A chat model that binds tools in the neutral (OpenAI function) form: the HTTP clients and the fallback
    chain share this one `bind_tools`."""

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in the neutral (OpenAI function) form, which every client and fallback understands."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = normalize_tool_choice(tool_choice)
        return self.bind(tools=formatted, **kwargs)


class HttpChatModel(NeutralToolsChatModel):
    """Base of the OpenAI-compatible and Anthropic clients (not used directly)."""

    model: str
    """The model id sent to the API (e.g. `gpt-4o-mini`)."""
    model_name: str = ""
    """The `provider:model` name, recorded as `served_by` (defaults to `model`)."""
    base_url: str
    api_key_env: str | None = None
    key_required: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    use_streaming: bool = True
    streams_text: ClassVar[bool] = True  # takes on_text/on_restart callbacks (see `calls.call_model`)
    takes_deadline: ClassVar[bool] = True  # stops itself at a `deadline` (see `calls.call_model`)
    """Stream requests (the only way to measure TTFT); False sends plain requests (TTFT is then null)."""
    max_tokens: int = 1024
    temperature: float | None = None
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_retries: int = 2
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    max_retry_after_s: float = 60.0
    max_concurrency: int = 16
    tool_calling: bool = True
    """The endpoint takes tools and can force one (so structured output may ride a forced tool)."""

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(
            base_url=self.base_url,
            api_key_env=self.api_key_env,
            key_required=self.key_required,
            headers=tuple(self.headers.items()),
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            max_retries=self.max_retries,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
            max_retry_after_s=self.max_retry_after_s,
            max_concurrency=self.max_concurrency,
        )

    @property
    def label(self) -> str:
        return self.model_name or self.model

    # --- what each protocol provides ---
    @property
    @abstractmethod
    def protocol(self) -> Protocol: ...

    @abstractmethod
    def build_body(
        self, messages: Sequence[BaseMessage], *, stop: list[str] | None, stream: bool, **kwargs: Any
    ) -> dict[str, Any]:
        """The request body for these messages and options.

        `rung` (one of `ladder.RUNGS`) says how a `response_format` with a schema is asked for; without it,
        the best rung the model's capabilities allow.
        """

    def structured_rungs(self, **kwargs: Any) -> tuple[Rung, ...]:
        """The ladder this model offers for structured output, best first (`kwargs`: the call's options)."""
        return ("prompt",)

    def prepared(self, schema: dict[str, Any]) -> Prepared:
        """The schema in the form this protocol sends it (an object root), and the way back."""
        return prepare(schema)

    def finish(
        self, completion: Completion, rung: Rung, prepared: Prepared | None, messages: Sequence[BaseMessage]
    ) -> None:
        """Bring a structured reply back to the caller's shape: the text is the JSON the caller asked for."""
        d = completion.draft
        if prepared is None:
            return
        if rung == "tool":
            for call in d.tool_calls:
                if call["name"] == RESPOND:
                    d.text = prepared.reply(call["arguments"] or "{}")
            d.tool_calls = [c for c in d.tool_calls if c["name"] != RESPOND]
        elif rung == "json_schema":
            d.text = prepared.reply(d.text)

    # --- LangChain surface ---
    async def complete(
        self,
        messages: Sequence[BaseMessage],
        *,
        stop: list[str] | None = None,
        stream: bool | None = None,
        on_text: Callable[[str], None] | None = None,
        on_restart: Callable[[str], None] | None = None,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> Completion:
        """One call, measured. The lowest level the CLI and the LangChain methods share.

        A feature the endpoint refuses steps down a rung at once (not retried as a server error), for this
        call and, remembered per (base URL, model), for every later call of the process.

        At `deadline` (`time.monotonic()`) the request under way is cancelled and the reply is what had
        arrived, with `finish_reason` "deadline" and its estimated usage (see `http.send`).
        """
        streaming = self.use_streaming if stream is None else stream
        state = model_state(self.base_url, self.model, self.max_concurrency)
        downgraded: list[dict[str, Any]] = []
        earlier: list[Attempt] = []
        for _ in range(len(RUNGS) + 3):  # each pass remembers one more refusal, so this ends
            call, rung = self._adapt(kwargs, state, earlier)
            body = self.build_body(messages, stop=stop, stream=streaming, **call)
            prepared = self._prepared_for(call)
            reshaped = rung == "tool" or (
                rung == "json_schema" and prepared is not None and (prepared.wrapped or prepared.strict)
            )
            try:
                completion = await send(
                    self.protocol,
                    self.endpoint,
                    self.model,
                    body,
                    stream=streaming,
                    estimate_input=estimate_prompt(messages, body.get("tools") or ()).likely,
                    on_text=None if reshaped else on_text,  # the caller gets the reshaped text whole
                    on_restart=on_restart,
                    label=self.label,
                    deadline=deadline,
                )
            except UnsupportedFeatureError as exc:
                earlier.extend(exc.attempts)
                downgraded.append(self._step_down(exc, call, rung, state, earlier))
                continue
            completion.attempts = earlier + completion.attempts
            if completion.draft.finish_reason == "deadline":  # a part of a reply: nothing to learn from it
                return completion
            if (
                call.get("tools")
                and call.get("tool_choice") == "required"
                and not completion.draft.tool_calls
            ):
                # the server ignored the required choice (llama-cpp-python's does): the model wrote text.
                # Remembered as refused, so a caller that needs tool calls changes strategy next time.
                reason = "a reply that required a tool call came back without one: tool_choice is ignored"
                state.unsupported["tool_choice"] = reason
                _log.info("%s at %s: %s", self.label, self.base_url, reason)
                downgraded.append({"feature": "tool_choice", "to": None, "reason": reason})
            if rung is not None:
                self.finish(completion, rung, prepared, messages)
                completion.extra["structured_output"] = rung
            if downgraded:
                completion.extra["downgraded"] = downgraded
            return completion
        raise ModelError(f"{self.label}: every way of asking was refused: {downgraded}")

    def _prepared_for(self, call: dict[str, Any]) -> Prepared | None:
        schema = schema_of(call.get("response_format"))
        return None if schema is None else self.prepared(schema)

    def _adapt(
        self, kwargs: dict[str, Any], state: ModelState, earlier: list[Attempt]
    ) -> tuple[dict[str, Any], Rung | None]:
        """This try's options: refused extras left out, structured output on the best rung not refused."""
        call = dict(kwargs)
        if "parallel_tool_calls" in state.unsupported:
            call.pop("parallel_tool_calls", None)
        refused = next((f for f in _TOOL_FEATURES if f in state.unsupported), None)
        if call.get("tools") and refused is not None:
            raise ToolsUnsupportedError(
                f"{self.label} at {self.base_url} does not take {refused}: {state.unsupported[refused]}",
                feature=refused,
                attempts=earlier,
            )
        rung = None
        if call.get("response_format"):
            rung = next(r for r in self.structured_rungs(**call) if not self._refused(r, state))
            call["rung"] = rung
        return call, rung

    @staticmethod
    def _refused(rung: Rung, state: ModelState) -> bool:
        if rung == "tool":
            return any(f in state.unsupported for f in _TOOL_FEATURES)
        feature = feature_of_rung(rung)
        return feature is not None and feature in state.unsupported

    def _step_down(
        self,
        exc: UnsupportedFeatureError,
        call: dict[str, Any],
        rung: Rung | None,
        state: ModelState,
        earlier: list[Attempt],
    ) -> dict[str, Any]:
        """Remember what the endpoint refused; the record of the step down (or raise when there is none)."""
        feature = exc.feature
        reason = ((exc.attempts[-1].error if exc.attempts else None) or str(exc))[:200]
        where = f"{self.label} at {self.base_url}"
        if feature == "parallel_tool_calls" and "parallel_tool_calls" in call:
            left, to = feature, "omitted"
        elif feature in _TOOL_FEATURES and call.get("tools"):
            state.unsupported[feature] = reason
            _log.info("%s: %s refused (%s); tools are not sent to it again", where, feature, reason)
            raise ToolsUnsupportedError(
                f"{where} does not take {feature}: {reason}", feature=feature, attempts=earlier
            ) from None
        elif rung == "tool" and feature in _TOOL_FEATURES:
            left, to = rung, ""
        elif rung in ("json_schema", "json_object") and feature in ("json_schema", "json_object"):
            left, to = rung, ""
            feature = str(feature_of_rung(rung))  # the response format this rung sent was the one refused
        else:
            raise exc
        state.unsupported[feature] = reason
        if not to:
            to = next(r for r in self.structured_rungs(**call) if not self._refused(r, state))
        then = "leaving it out" if to == "omitted" else f"using {to}"
        _log.info("%s: %s refused (%s); %s from now on", where, left, reason, then)
        return {"feature": left, "to": to, "reason": reason}

    def to_message(self, c: Completion) -> AIMessage:
        """A Completion as an AIMessage with usage and measurements attached."""
        tool_calls: list[dict[str, Any]] = []
        invalid: list[dict[str, Any]] = []
        for call in c.draft.tool_calls:
            raw = call.get("arguments") or "{}"
            try:
                args = json.loads(raw)
            except ValueError:
                args = None
            if isinstance(args, dict):
                tool_calls.append(
                    {"id": call.get("id"), "name": call["name"], "args": args, "type": "tool_call"}
                )
            else:
                invalid.append(
                    {
                        "id": call.get("id"),
                        "name": call.get("name"),
                        "args": raw,
                        "error": "arguments are not a JSON object",
                        "type": "invalid_tool_call",
                    }
                )
        u = c.usage
        details: dict[str, int] = {"cache_read": u.cache_read_tokens, "cache_creation": u.cache_write_tokens}
        if u.cache_write_1h_tokens:
            details["ephemeral_1h_input_tokens"] = u.cache_write_1h_tokens
            details["ephemeral_5m_input_tokens"] = u.cache_write_tokens - u.cache_write_1h_tokens
        usage_metadata: Any = {
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "input_token_details": details,
            "output_token_details": {"reasoning": u.reasoning_tokens},
        }
        return AIMessage(
            content=c.draft.text,
            tool_calls=tool_calls,
            invalid_tool_calls=invalid,
            usage_metadata=usage_metadata,
            response_metadata=self._metadata(c),
        )

    def _metadata(self, c: Completion) -> dict[str, Any]:
        return {
            "model_name": self.label,
            "served_by": self.label,
            "model": c.draft.model or self.model,
            "finish_reason": c.draft.finish_reason,
            "ttft_ms": c.ttft_ms,
            "duration_ms": c.duration_ms,
            "generation_ms": c.generation_ms,
            "retry_wait_ms": c.retry_wait_ms,
            "attempts": [a.as_dict() for a in c.attempts],
            "usage": c.usage.to_dict(),
            "usage_estimated": c.usage.estimated,
            "rate_limits": dict(c.rate_limits),
            **({"margin": c.draft.margin} if c.draft.margin is not None else {}),
            **c.extra,
        }

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """The call, without LangChain's run around it when no one but the graph tracer listens.

        The orchestrator's own callers (`call_model`, a fallback chain) trace, budget and price each call
        themselves and tag it TRACED, which the graph tracer ignores; LangChain's run around it (a callback
        manager, a run id, the events to each handler, the invocation parameters) cost a tenth of a streamed
        call's client CPU. A caller's callbacks or `run_name`, LangSmith tracing, a cache or a rate limiter
        take LangChain's path as before."""
        if (
            self.rate_limiter is not None
            or not (self.cache is False or (self.cache is None and get_llm_cache() is None))
            or only_graph_tracer(config) is False
        ):
            return await super().ainvoke(input, config, stop=stop, **kwargs)
        messages = self._convert_input(input).to_messages()
        message = self.to_message(await self.complete(messages, stop=stop, **kwargs))
        message.id = f"{LC_ID_PREFIX}-{uuid.uuid4()}"  # as LangChain names a run's message
        return message

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        completion = await self.complete(messages, stop=stop, **kwargs)
        return ChatResult(generations=[ChatGeneration(message=self.to_message(completion))])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return run_blocking(lambda: self._agenerate(messages, stop, **kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        pieces = Pieces()
        task = asyncio.create_task(
            self.complete(
                messages, stop=stop, stream=True, on_text=pieces.text, on_restart=pieces.restart, **kwargs
            )
        )
        async for chunk in pieces.chunks(
            task, run_manager, f"{self.label}: the stream broke after text was delivered"
        ):
            yield chunk
        yield last_chunk(
            self.to_message(task.result()), pieces.sent
        )  # reshaped structured output comes whole

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        async def collect() -> list[ChatGenerationChunk]:
            return [c async for c in self._astream(messages, stop, **kwargs)]

        yield from run_blocking(collect)


def schema_of(fmt: Any) -> dict[str, Any] | None:
    """The schema of a `response_format` (ours: `{"type": ..., "schema": ...}`, or OpenAI's json_schema)."""
    if not isinstance(fmt, dict):
        return None
    schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, dict) else None
