"""A real HTTP/1.1 server on 127.0.0.1 for provider tests, able to misbehave at the socket level.

Built on `asyncio.start_server` in a background thread: it parses real requests (keep-alive, content length or
chunked bodies), records them, and answers with scripted `Reply`s: JSON, SSE streamed as HTTP chunks, a slow
first byte, stalls, and connections cut mid-stream (the socket really closes, no terminating chunk).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
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
    path: str  # including the query string
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float = 0.0  # time.monotonic() when it was read

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] | list[Any] | None = None
    events: list[str | bytes] | None = None  # set: an SSE stream, one HTTP chunk per event
    delay: float = 0.0  # before the status line
    gap: float = 0.0  # between events
    first_event_delay: float = 0.0  # after the headers, before the first event
    cut_after: int | None = None  # send this many events, then close without the terminating chunk
    stall: float | None = None  # send nothing for this long, then close
    stall_after_events: int | None = None  # send this many events, then stall
    gate: threading.Event | None = None  # set: wait (up to 120 s) until it is set, before the status line


class Loopback:
    """Serve scripted replies; `route()` queues are checked before the FIFO of `push()`."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[Request] = []
        self.connections = 0  # TCP connections accepted (keep-alive reuse shows as fewer than requests)
        self.in_flight = 0  # requests read and not yet answered in full
        self.max_in_flight = 0  # the most requests in flight at once
        self.default = Reply(status=404, body={"error": "no scripted reply"})
        self._fifo: deque[Reply] = deque()
        self._routes: dict[str, deque[Reply]] = {}
        self._handlers: dict[str, Callable[[Request], Reply]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> Loopback:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="loopback", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        assert self._server is not None
        # Stop accepting first, and only close the server once every accepted connection has its task: a
        # connection accepted just before `Server.close()` would otherwise leak its socket (CPython 3.11).
        for sock in self._server.sockets:
            asyncio.get_running_loop().remove_reader(sock.fileno())
        # Cancel each connection once its task has started (cancelling one before its first step would skip
        # the `finally` that closes its socket).
        me = asyncio.current_task()
        while pending := asyncio.all_tasks() - {me}:
            for task in self._tasks:
                task.cancel()
            await asyncio.wait(pending, timeout=0.005)
        self._server.close()
        await self._server.wait_closed()

    def close(self) -> None:
        loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), loop).result(5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()

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

    def handle(self, path_prefix: str, answer: Callable[[Request], Reply]) -> None:
        """Answer every request under `path_prefix` with `answer(request)`: a reply derived from what
        was sent (so a wrong request gets a wrong answer), before any scripted route."""
        with self._lock:
            self._handlers[path_prefix] = answer

    def _next(self, request: Request) -> Reply:
        path = request.path
        with self._lock:
            for prefix, answer in self._handlers.items():
                if path.startswith(prefix):
                    return answer(request)
            for prefix, queue in self._routes.items():
                if queue and path.startswith(prefix):
                    return queue.popleft()
            return self._fifo.popleft() if self._fifo else self.default

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while (request := await _read_request(reader)) is not None:
                request.at = time.monotonic()
                self.requests.append(request)
                self.in_flight += 1  # only the server's loop thread counts: no lock needed
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    keep_alive = await _answer(self._next(request), writer)
                finally:
                    self.in_flight -= 1
                if not keep_alive or request.headers.get("connection", "").lower() == "close":
                    writer.close()  # flushes what was written, then FIN: the client sees a cut body
                    await writer.wait_closed()
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away, or sent something that is not HTTP
        except asyncio.CancelledError:
            pass  # close(): drop the connection at once
        finally:
            writer.transport.abort()
            self._tasks.discard(task)


async def _answer(reply: Reply, writer: asyncio.StreamWriter) -> bool:
    """Send one reply; False when the connection must close afterwards."""
    if reply.stall is not None and reply.stall_after_events is None:
        await asyncio.sleep(reply.stall)
        return False
    if reply.gate is not None:
        await asyncio.to_thread(reply.gate.wait, 120)
    if reply.delay:
        await asyncio.sleep(reply.delay)
    head = {k.lower(): v for k, v in reply.headers.items()}
    keep_alive = head.get("connection", "").lower() != "close"
    if reply.events is None:
        body, ctype = _encode(reply.body)
        if ctype:
            head.setdefault("content-type", ctype)
        head["content-length"] = str(len(body))
        writer.write(_head(reply.status, head) + body)
        await writer.drain()
        return keep_alive
    head.setdefault("content-type", "text/event-stream")
    head.setdefault("cache-control", "no-cache")
    head["transfer-encoding"] = "chunked"
    head.pop("content-length", None)
    writer.write(_head(reply.status, head))
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
        writer.write(b"%x\r\n%b\r\n" % (len(data), data))
        await writer.drain()
    if reply.cut_after is not None or reply.stall_after_events is not None:
        if reply.stall_after_events is not None:  # fewer events than the stall point: stall at the end
            await asyncio.sleep(reply.stall or 0.0)
        return False
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return keep_alive


def _encode(body: bytes | str | dict[str, Any] | list[Any] | None) -> tuple[bytes, str | None]:
    if isinstance(body, dict | list):
        return json.dumps(body).encode(), "application/json"
    if isinstance(body, str):
        return body.encode(), "text/plain; charset=utf-8"
    if body is None:
        return b"", None
    return body, "application/octet-stream"


def _head(status: int, headers: dict[str, str]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:  # e.g. Anthropic's 529 "overloaded"
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection, or None when the client closed it between requests."""
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
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16):
            parts.append((await reader.readexactly(size + 2))[:-2])
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
            pass
        body = b"".join(parts)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body)


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    """A started loopback server, closed after the test."""
    with Loopback() as server:
        yield server
