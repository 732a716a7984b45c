"""The sync bridge: run a coroutine to completion from synchronous code.

Scripts and the CLI call the async library through it. HTTP clients are bound to the event loop that made
them, so the bridge closes the clients its loop opened before that loop ends: the HTTP client registers its
closer here (`on_loop_end`) when it is imported, so this module knows nothing above it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["on_loop_end", "run_blocking"]

_closers: list[Callable[[], Awaitable[None]]] = []


def on_loop_end(closer: Callable[[], Awaitable[None]]) -> None:
    """Have every bridged loop await `closer()` before it ends (once per closer, however often registered)."""
    if closer not in _closers:
        _closers.append(closer)


T = TypeVar("T")


def run_blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when this thread already runs an event loop."""

    async def main() -> T:
        try:
            return await factory()
        finally:
            for closer in list(_closers):
                await closer()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(main())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="orchestrator-sync-call")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: T = box["value"]
    return result
