"""A call's text as LangChain stream chunks, while the call itself runs as a task.

The HTTP clients and the slot models both stream this way: the call hands each piece of text (and each
restart, when text already sent is void) to a `Pieces`, and `chunks` yields them until the call ends,
then one last chunk with the reply's tool calls, usage and metadata.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from orchestrator.errors import ModelError

__all__ = ["Pieces", "last_chunk"]

_END = object()


class Pieces:
    """Where a running call puts its text (`text`) and restarts (`restart`), for `chunks` to yield."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.sent = False  # text was yielded

    def text(self, piece: str) -> None:
        self.queue.put_nowait(piece)

    def restart(self, reason: str = "") -> None:
        self.queue.put_nowait(("restart", reason))

    async def chunks(
        self, task: asyncio.Future[Any], run_manager: Any, broken: str
    ) -> AsyncIterator[ChatGenerationChunk]:
        """The text as chunks until `task` ends. A restart after text was yielded can't take it back: the
        call fails with `broken` (and the reason) instead of yielding text twice."""
        task.add_done_callback(lambda _t: self.queue.put_nowait(_END))
        try:
            while (item := await self.queue.get()) is not _END:
                if isinstance(item, tuple):
                    if self.sent:
                        reason = f" ({item[1]})" if item[1] else ""
                        raise ModelError(
                            f"{broken}{reason}; a streamed call cannot be retried, call it again"
                        )
                    continue
                self.sent = True
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=item))
                if run_manager is not None:
                    await run_manager.on_llm_new_token(item, chunk=chunk)
                yield chunk
        finally:
            if not task.done():
                task.cancel()


def last_chunk(final: BaseMessage, sent: bool) -> ChatGenerationChunk:
    """The reply's tool calls, usage and metadata (and its text, when none was streamed)."""
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content="" if sent else final.content,
            tool_call_chunks=[
                {"name": tc["name"], "args": json.dumps(tc["args"]), "id": tc["id"], "index": i}
                for i, tc in enumerate(getattr(final, "tool_calls", None) or [])
            ],
            usage_metadata=getattr(final, "usage_metadata", None),
            response_metadata=final.response_metadata,
        )
    )
