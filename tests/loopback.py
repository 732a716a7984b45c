"""A real HTTP/1.1 server on 127.0.0.1 for provider tests, able to misbehave at the socket level.

Built on `asyncio.start_server` in a background thread: it parses real requests (keep-alive, content length or
chunked bodies), records them, and answers with scripted `Reply`s: JSON, SSE streamed as HTTP chunks, a slow
first byte, stalls, and connections cut mid-stream (the socket really closes, no terminating chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import pytest

__all__ = ["DONE", "Loopback", "Reply", "Request", "loopback", "sse"]

DONE = "data: [DONE]\n\n"


def sse(data: dict[str, Any] | str, event: str | None = None) -> str:
    """One SSE frame (a dict becomes compact JSON)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] | list[Any] | None = None
    events: list[str | bytes] | None = None
    delay: float = 0.0
    gap: float = 0.0
    first_event_delay: float = 0.0
    cut_after: int | None = None
    stall: float | None = None
    stall_after_events: int | None = None


class _Closed(Exception):
    pass


class Loopback:
    """Serve scripted replies; `route()` queues are checked before the FIFO of `push()`."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[Request] = []
        self.connections = 0  # TCP connections accepted (keep-alive reuse shows as fewer than requests)
        self.default = Reply(status=404, body={"error": "no scripted reply"})
        self._fifo: deque[Reply] = deque()
        self._routes: dict[str, deque[Reply]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="loopback", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> Loopback:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> Loopback:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._fifo.extend(replies)

    def route(self, path_prefix: str, *replies: Reply) -> None:
        with self._lock:
            self._routes.setdefault(path_prefix, deque()).extend(replies)

    def _next(self, path: str) -> Reply:
        with self._lock:
            for prefix, queue in self._routes.items():
                if path.startswith(prefix) and queue:
                    return queue.popleft()
            return self._fifo.popleft() if self._fifo else self.default

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self.connections += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                if not await self._answer(self._next(request.path), writer):
                    break
        except (_Closed, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _answer(self, reply: Reply, writer: asyncio.StreamWriter) -> bool:
        """Send one reply; False when the connection must close."""
        if reply.stall is not None and reply.stall_after_events is None:
            await asyncio.sleep(reply.stall)
            return False
        if reply.delay:
            await asyncio.sleep(reply.delay)
        reason = _reason(reply.status)
        head = {k.lower(): v for k, v in reply.headers.items()}
        if reply.events is None:
            body, ctype = _encode(reply.body)
            head.setdefault("content-type", ctype)
            head["content-length"] = str(len(body))
            writer.write(_head(reply.status, reason, head) + body)
            await writer.drain()
            return True
        head.setdefault("content-type", "text/event-stream")
        head.setdefault("cache-control", "no-cache")
        head["transfer-encoding"] = "chunked"
        writer.write(_head(reply.status, reason, head))
        await writer.drain()
        if reply.first_event_delay:
            await asyncio.sleep(reply.first_event_delay)
        for i, event in enumerate(reply.events):
            if reply.cut_after is not None and i >= reply.cut_after:
                return False
            if reply.stall_after_events is not None and i >= reply.stall_after_events:
                await asyncio.sleep(reply.stall or 0.0)
                return False
            if i and reply.gap:
                await asyncio.sleep(reply.gap)
            data = event.encode() if isinstance(event, str) else event
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        if reply.cut_after is not None and reply.cut_after >= len(reply.events):
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # e.g. Anthropic's 529 "overloaded"
        return "Unknown"


def _encode(body: bytes | str | dict[str, Any] | list[Any] | None) -> tuple[bytes, str]:
    if isinstance(body, dict | list):
        return json.dumps(body).encode(), "application/json"
    if isinstance(body, str):
        return body.encode(), "text/plain"
    return body or b"", "application/octet-stream"


def _head(status: int, reason: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = raw.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body)


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    """A started loopback server, closed after the test."""
    server = Loopback().start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.close()
