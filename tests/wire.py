"""Scripted wire traffic: the SSE events and JSON bodies OpenAI and Anthropic servers send."""

from __future__ import annotations

import json
from typing import Any

from loopback import DONE, Reply, sse


def openai_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def openai_stream(
    texts: list[str],
    usage: dict[str, Any] | None = None,
    *,
    tool_calls: list[tuple[str, str, list[str]]] = (),  # type: ignore[assignment]
    model: str = "gpt-4o-mini-2024-07-18",
    logprobs: list[tuple[float, float]] | None = None,
    **reply: Any,
) -> Reply:
    """A streamed chat completion: a role chunk, text deltas (each with its logprobs when `logprobs` gives
    (chosen, runner-up) per text), tool-call deltas, finish, usage, [DONE]."""

    def chunk(delta: dict[str, Any], finish: str | None = None, scores: Any = None) -> str:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if scores is not None:
            chosen, rival = scores
            top = [{"token": delta["content"], "logprob": chosen}, {"token": "~", "logprob": rival}]
            choice["logprobs"] = {
                "content": [{"token": delta["content"], "logprob": chosen, "top_logprobs": top}]
            }
        return sse({"id": "c1", "model": model, "choices": [choice]})

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": t}, scores=logprobs[n] if logprobs else None) for n, t in enumerate(texts)]
    for i, (call_id, name, parts) in enumerate(tool_calls):
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
        )
        events += [chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}) for p in parts]
    events.append(chunk({}, "tool_calls" if tool_calls else "stop"))
    if usage is not None:
        events.append(sse({"id": "c1", "model": model, "choices": [], "usage": usage}))
    events.append(DONE)
    return Reply(events=list(events), **reply)


def openai_json(text: str, usage: dict[str, Any], **reply: Any) -> Reply:
    body = {
        "id": "c1",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage,
    }
    return Reply(body=body, **reply)


def anthropic_usage(
    fresh: int, output: int, read: int = 0, write_5m: int = 0, write_1h: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": fresh,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
        "output_tokens": output,
    }


def anthropic_stream(
    texts: list[str],
    usage: dict[str, Any],
    *,
    tool_use: tuple[str, str, list[str]] | list[tuple[str, str, list[str]]] | None = None,
    model: str = "claude-haiku-4-5-20251001",
    **reply: Any,
) -> Reply:
    """A streamed Messages response: message_start (with input usage), blocks, message_delta (output), stop."""
    start_usage = {**usage, "output_tokens": 1}
    events = [
        sse(
            {
                "type": "message_start",
                "message": {
                    "id": "m1",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "usage": start_usage,
                },
            },
            "message_start",
        ),
        sse({"type": "ping"}, "ping"),
    ]
    index = 0
    if texts:
        events.append(
            sse(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start",
            )
        )
        events += [
            sse(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
                "content_block_delta",
            )
            for t in texts
        ]
        events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        index = 1
    uses = [tool_use] if isinstance(tool_use, tuple) else list(tool_use or [])
    for call_id, name, parts in uses:  # several blocks: parallel tool use
        events.append(
            sse(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": call_id, "name": name, "input": {}},
                },
                "content_block_start",
            )
        )
        events += [
            sse(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": p},
                },
                "content_block_delta",
            )
            for p in parts
        ]
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        index += 1
    stop = "tool_use" if tool_use else "end_turn"
    events.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
            "message_delta",
        )
    )
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return Reply(events=events, **reply)


def error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error"}}


def body_of(request: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(request.body)
    return data
