"""MCP servers as a catalog source, through the official MCP Python SDK (`mcp`).

Each `[tool.orchestrator.mcp_servers.NAME]` of the manifest is a server run as a child process over stdio
(`command`, `args`) or reached over streamable HTTP (`url`). Its tools are listed when the catalog is built
and enter it with their JSON schemas, as `McpTool`s (langchain-core tools); a call goes through the server's
session. One session per server serves the whole process (every run, every event loop): sessions live on a
private event loop in a daemon thread, as the SDK's transports must be opened and closed by one task.

A server that stops (its process exits, its connection drops) fails the call in flight with an error
observation, and is restarted once (stdio: a new process; HTTP: a new session). When it stops again, its tools
are unavailable for the rest of the process: each call returns an error observation saying so, at once.

A call the caller stops waiting for (the tool timeout) leaves a question: is the server stuck? It is pinged;
a server that does not answer within `PING_TIMEOUT_S` (a CPU-bound tool holding its loop) is replaced by a new
session, not counted as a stop, so one runaway call can't freeze its server's other tools.

Example:
    >>> from orchestrator.config import McpServerConfig
    >>> config = McpServerConfig(command="python", args=["files_server.py"])
    >>> [t.name for t in McpServer("files", config).tools()]  # doctest: +SKIP
    ['read_file', 'list_dir']
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
from langchain_core.tools import BaseTool
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.shared.message import SessionMessage
from mcp.types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    CallToolResult,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCResponse,
    Tool,
)
from pydantic import ConfigDict, Field, SkipValidation

from orchestrator.config import Manifest, McpServerConfig
from orchestrator.errors import ConfigError, ToolError
from orchestrator.toolsets.process_pool import OUTPUT_CAP, ToolFailed, cap_output
from orchestrator.toolsets.sources import blocked_message

__all__ = ["McpServer", "McpTool", "close_all", "manifest_tools"]

T = TypeVar("T")
MAX_RESTARTS = 1  # restarts after an unexpected stop; the next stop makes the server's tools unavailable
PING_TIMEOUT_S = 2.0
_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]")
_log = logging.getLogger("orchestrator.mcp")


# --- the private event loop the sessions live on ---------------------------------------------------------
class _Portal:
    """A daemon thread running an event loop; coroutines are handed to it from any thread or loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="orchestrator-mcp", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Block the calling thread (never the portal's) until `coro` is done."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the portal from another loop; cancelling this cancels it there."""
        return await asyncio.wrap_future(self.submit(coro))


_portal: _Portal | None = None
_portal_lock = threading.Lock()


def _the_portal() -> _Portal:
    global _portal
    with _portal_lock:
        if _portal is None:
            _portal = _Portal()
            atexit.register(close_all)
        return _portal


# --- one session -------------------------------------------------------------------------------------------
class _Connection:
    """One session with a server, held open by one task on the portal."""

    def __init__(self) -> None:
        self.session: ClientSession | None = None
        self.stop = asyncio.Event()  # set to leave the session: by us, or by the pump when the server goes
        self.gone = asyncio.Event()  # set once the task holding the session has ended
        self.closing = False  # we asked it to stop (not a server failure)
        self.task: asyncio.Task[None] | None = None
        self.check: asyncio.Task[None] | None = None  # a ping after a call that was given up
        self.failure: str | None = None  # set once the stop was handled: what callers are told
        self.refused: str | None = None  # the HTTP error status that ended the session (a 429, a 503)
        self.calls: set[asyncio.Future[str]] = set()  # calls in flight: told when a reply can't be read
        self.answered: set[Any] = set()  # ids of the replies the session was given (streamable HTTP)
        self.unread: str | None = None  # why the last message the SDK could not parse failed
        self.inject: Any = None  # the session's inbox: a reply that never came is answered with an error
        self.watched = False  # streamable HTTP: each request's reply stream is watched (`_Watched`)

    @property
    def lost(self) -> bool:
        return self.stop.is_set() and not self.closing


def _connection_error(exc: BaseException) -> bool:
    if isinstance(exc, McpError):
        return exc.error.code == CONNECTION_CLOSED
    return isinstance(
        exc, anyio.ClosedResourceError | anyio.BrokenResourceError | anyio.EndOfStream | httpx.TransportError
    )


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _http_refusal(exc: BaseException) -> str | None:
    """'HTTP 429 Too Many Requests, Retry-After 1' when an HTTP error status ended a streamable HTTP
    session (the SDK's transport raises it in its task group), else None."""
    found: list[httpx.HTTPStatusError] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, httpx.HTTPStatusError):
            found.append(e)
        elif isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)

    walk(exc)
    if not found:
        return None
    response = found[0].response
    wait = response.headers.get("retry-after")
    return f"HTTP {response.status_code} {response.reason_phrase}" + (f", Retry-After {wait}" if wait else "")


class McpServer:
    """One MCP server: its session (opened on first use, restarted once after a stop) and its tools."""

    def __init__(self, name: str, config: McpServerConfig, root: Path | None = None) -> None:
        self.name = name
        self.config = config
        self.root = root
        self.restarts = 0
        self.unavailable: str | None = None  # why the server's tools can't be called any more
        self._conn: _Connection | None = None
        self._lock: asyncio.Lock | None = None  # created on the portal loop
        self._opening: asyncio.Future[_Connection] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- listing ------------------------------------------------------------------------------------------
    def tools(self, allow: Sequence[str] = (), max_output_chars: int = OUTPUT_CAP) -> list[McpTool]:
        """The server's tools as langchain-core tools (connects if needed); `allow`: the side-effecting
        tools the agent may call (the rest refuse to run)."""
        try:
            listed = _the_portal().run(self._list(), self.config.startup_timeout_s + 5)
        except Exception as exc:
            raise ConfigError(
                f"MCP server {self.name!r} ({self.where()}) could not be listed: {_describe(exc)}; check "
                f"[tool.orchestrator.mcp_servers.{self.name}]"
            ) from None
        out = []
        for tool in listed:
            name = self.config.prefix + tool.name
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
                name = _NAME_BAD.sub("_", name)[:64]
            annotations = tool.annotations
            side = self.config.side_effects or bool(annotations and annotations.destructiveHint is True)
            out.append(
                McpTool(
                    name=name,
                    description=tool.description or tool.title or tool.name,
                    args_schema=dict(tool.inputSchema or {"type": "object", "properties": {}}),
                    server=self,
                    remote_name=tool.name,
                    side_effects=side,
                    allowed=not side or name in allow,
                    max_output_chars=max_output_chars,
                )
            )
        return out

    def where(self) -> str:
        if self.config.url:
            return self.config.url
        return " ".join([self.config.command or "", *self.config.args])

    async def _list(self) -> list[Tool]:
        conn = await self._connection()
        assert conn.session is not None
        tools: list[Tool] = []
        cursor: str | None = None
        while True:
            page = await conn.session.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.nextCursor
            if not cursor:
                return tools

    # -- the session --------------------------------------------------------------------------------------
    async def _connection(self) -> _Connection:
        if self._lock is None:
            self._lock = asyncio.Lock()
        conn = self._conn
        if conn is not None and conn.check is not None:  # a given-up call: is the server still answering?
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.check)
        async with self._lock:
            if self.unavailable:
                raise ToolError(self.unavailable)
            if self._conn is not None and self._conn.lost and self._conn.refused is None:
                await self._after_stop(self._conn)  # it went while idle: that is a stop too
                if self.unavailable:
                    raise ToolError(self.unavailable)
            if self._conn is None or self._conn.stop.is_set():
                # shielded: a caller that gives up (its timeout) doesn't stop a slow start for the next one
                if self._opening is None:
                    self._opening = asyncio.ensure_future(self._open())
                opening = self._opening
                try:
                    self._conn = await asyncio.shield(opening)
                finally:
                    if opening.done():
                        self._opening = None
            return self._conn

    async def _open(self) -> _Connection:
        conn = _Connection()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.task = asyncio.create_task(self._hold(conn, ready), name=f"mcp {self.name}")
        try:
            async with asyncio.timeout(self.config.startup_timeout_s):
                await asyncio.shield(ready)
        except BaseException:
            await self._close(conn)
            raise
        return conn

    def _transport(self, conn: _Connection) -> contextlib.AbstractAsyncContextManager[Any]:
        cfg = self.config
        if cfg.url is not None:
            headers = dict(cfg.headers)
            for header, variable in cfg.headers_env.items():
                value = os.environ.get(variable)
                if value is None:
                    raise ConfigError(
                        f"MCP server {self.name!r}: header {header!r} is read from ${variable}, "
                        "which is not set"
                    )
                headers[header] = value
            return _http(cfg.url, headers, conn)
        root = self.root or Path.cwd()
        command = cfg.command or ""
        if ("/" in command or command.startswith(".")) and not Path(command).is_absolute():
            command = str(root / command)
        cwd = Path(cfg.cwd).expanduser() if cfg.cwd else root
        params = StdioServerParameters(
            command=command, args=list(cfg.args), env=dict(cfg.env) or None, cwd=str(root / cwd)
        )
        return stdio_client(params)

    async def _hold(self, conn: _Connection, ready: asyncio.Future[None]) -> None:
        """Open the transport and the session, and keep them open until `conn.stop` is set."""
        try:
            async with AsyncExitStack() as stack:
                streams = await stack.enter_async_context(self._transport(conn))
                read, write = streams[0], streams[1]
                stack.push_async_callback(read.aclose)  # the SDK's HTTP transport leaves its ends open
                stack.push_async_callback(write.aclose)
                # The session reads through a pump, so that the end of the server's stream (its process
                # exited) is seen even when no call is waiting.
                send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
                stack.push_async_callback(receive.aclose)
                stack.push_async_callback(send.aclose)
                conn.inject = send
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_pump, read, send, conn)
                    async with ClientSession(receive, write) as session:
                        await session.initialize()
                        conn.session = session
                        ready.set_result(None)
                        await conn.stop.wait()
                    tg.cancel_scope.cancel()
        except Exception as exc:  # a transport failure (HTTP errors arrive as exception groups)
            if not ready.done():
                ready.set_exception(ConnectionError(_describe(exc)))
            else:
                conn.refused = _http_refusal(exc)
                _log.info("MCP server %r: session ended: %s", self.name, _describe(exc))
        finally:
            conn.stop.set()
            conn.gone.set()
            if not ready.done():
                ready.set_exception(ConnectionError("the session ended before it was initialised"))
                ready.exception()  # retrieved: nobody may be waiting any more

    async def _close(self, conn: _Connection) -> None:
        conn.closing = not conn.stop.is_set() or conn.closing
        conn.stop.set()
        if conn.task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(conn.task), 10)
            if not conn.task.done():
                conn.task.cancel()

    async def _after_stop(self, conn: _Connection) -> str:
        """The server stopped under `conn`: restart it once, or make its tools unavailable. Returns what
        the call that saw it is told. Called with the lock held."""
        if conn.failure is not None:
            return conn.failure
        await self._close(conn)
        if self.restarts >= MAX_RESTARTS:
            self.unavailable = (
                f"MCP server {self.name!r} stopped again after its restart; its tools are unavailable for "
                "the rest of this process"
            )
            conn.failure = self.unavailable
            self._conn = None
            return conn.failure
        self.restarts += 1
        try:
            self._conn = await self._open()
        except Exception as exc:
            self._conn = None
            self.unavailable = (
                f"MCP server {self.name!r} stopped and could not be restarted ({_describe(exc)}); its tools "
                "are unavailable for the rest of this process"
            )
            conn.failure = self.unavailable
            return conn.failure
        conn.failure = f"MCP server {self.name!r} stopped during the call; it was restarted"
        return conn.failure

    # -- calls --------------------------------------------------------------------------------------------
    async def call(self, tool: str, args: Mapping[str, Any]) -> CallToolResult:
        """Call a tool through the session (on the portal loop)."""
        conn = await self._connection()
        assert conn.session is not None
        calling = asyncio.ensure_future(conn.session.call_tool(tool, dict(args)))
        stopped = asyncio.ensure_future(conn.stop.wait())
        garbled: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        conn.calls.add(garbled)
        try:
            waiting: set[asyncio.Future[Any]] = {calling, stopped, garbled}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the caller gave up (its timeout): is the server stuck?
            calling.cancel()
            if conn.check is None and not conn.stop.is_set():
                conn.check = asyncio.create_task(self._ping(conn))
            raise
        finally:
            stopped.cancel()
            conn.calls.discard(garbled)
        if garbled.done() and not calling.done():  # its reply will never be read: don't wait it out
            calling.cancel()
            raise ToolError(
                f"MCP server {self.name!r} sent a reply that could not be read ({garbled.result()}); "
                f"the call to {tool!r} was not retried"
            )
        if calling.done() and not calling.cancelled():
            exc = calling.exception()
            if exc is None:
                return calling.result()
            if not _connection_error(exc) and not conn.lost:
                raise ToolError(f"MCP server {self.name!r}: {_describe(exc)}")
        else:
            calling.cancel()
        if conn.closing:  # replaced after a call that was given up, while this one was waiting
            raise ToolError(
                f"MCP server {self.name!r} did not answer and its session was replaced; the call to {tool!r} "
                "was dropped"
            )
        with contextlib.suppress(TimeoutError):  # the task holding the session notes why it ended
            await asyncio.wait_for(asyncio.shield(conn.gone.wait()), PING_TIMEOUT_S)
        assert self._lock is not None
        if conn.refused is not None:  # the server answered with an HTTP error (429, 503): not a stop
            async with self._lock:
                if self._conn is conn:
                    self._conn = None  # the next call opens a new session
            raise ToolError(
                f"MCP server {self.name!r} refused the call to {tool!r} ({conn.refused}); it was not retried"
            )
        async with self._lock:
            message = await self._after_stop(conn)
        raise ToolError(f"{message} (the call to {tool!r} was not retried)")

    async def _ping(self, conn: _Connection) -> None:
        """After a given-up call: a server that does not answer a ping is replaced (not counted as a stop)."""
        assert conn.session is not None
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await conn.session.send_ping()
            conn.check = None
            return
        except Exception as exc:
            _log.warning(
                "MCP server %r did not answer a ping after a call timed out (%s): replacing it",
                self.name,
                _describe(exc),
            )
        assert self._lock is not None
        async with self._lock:
            if self._conn is conn:
                self._conn = None
        # the stuck process is stopped in the background (a stdio server gets seconds to exit): the next call
        # starts a new one at once
        task = asyncio.create_task(self._close(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Stop the session (a stdio server's process ends)."""
        if _portal is None:
            return
        with contextlib.suppress(Exception):
            _portal.run(self._aclose(), 20)

    async def _aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._close(conn)


async def _pump(read: Any, send: Any, conn: _Connection) -> None:
    """Forward the server's messages to the session; when its stream ends, the session is left."""
    try:
        async with send:
            async for message in read:
                if isinstance(message, Exception):  # a message the SDK could not parse: it has no id
                    conn.unread = " ".join(_describe(message).split())[:200]
                    if not conn.watched:  # stdio: each call in flight is told, not left to time out
                        for call in conn.calls:
                            if not call.done():
                                call.set_result(conn.unread)
                elif isinstance(message.message.root, JSONRPCResponse | JSONRPCError):
                    conn.answered.add(message.message.root.id)
                await send.send(message)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
        pass
    finally:
        conn.stop.set()


@contextlib.asynccontextmanager
async def _http(url: str, headers: dict[str, str], conn: _Connection) -> Any:
    # the SDK's defaults: 30 s to connect or write, 300 s of silence on a response stream
    transport = _Watched(httpx.AsyncHTTPTransport(), conn)
    conn.watched = True
    async with (
        httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(30.0, read=300.0), transport=transport
        ) as client,
        streamable_http_client(url, http_client=client) as streams,
    ):
        yield streams


UNANSWERED_GRACE_S = 0.5  # after a request's reply stream ends: time for its reply to reach the session


class _Watched(httpx.AsyncBaseTransport):
    """The HTTP transport of a streamable HTTP session, watching each request's reply stream.

    The SDK leaves a request waiting for ever when its reply stream is cut, or carries a message it can't
    parse: it logs and goes on, and the call waits out the tool timeout. Each POSTed request's id is
    known here; when its stream ends (cut, or closed) and no reply with that id reached the session,
    the session is given a JSON-RPC error for it, so that call, and only it, fails at once, saying why. A
    stream that carried SSE event ids may be resumed by the SDK, and is left to it.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, conn: _Connection) -> None:
        self.inner = inner
        self.conn = conn
        self._checks: set[asyncio.Task[None]] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        rid = _request_id(request)
        response = await self.inner.handle_async_request(request)
        if (
            rid is None
            or response.status_code >= 300
            or not isinstance(response.stream, httpx.AsyncByteStream)
        ):
            return response  # an HTTP error status: the SDK fails the session, and the call sees why
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Reply(response.stream, lambda why, resumable: self._ended(rid, why, resumable)),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for task in list(self._checks):
            task.cancel()
        await self.inner.aclose()

    def _ended(self, rid: Any, why: str | None, resumable: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._check(rid, why, resumable and why is None))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check(self, rid: Any, why: str | None, resumable: bool) -> None:
        await asyncio.sleep(UNANSWERED_GRACE_S)
        conn = self.conn
        if rid in conn.answered or resumable:  # answered, or the SDK may still resume the stream
            conn.answered.discard(rid)
            return
        if conn.inject is None or conn.stop.is_set():
            return  # the session is going: its calls are told so
        reason = why or (f"a message in it could not be read: {conn.unread}" if conn.unread else "it ended")
        conn.unread = None
        error = JSONRPCError(
            jsonrpc="2.0",
            id=rid,
            error=ErrorData(
                code=INTERNAL_ERROR, message=f"no reply to request {rid}: its stream broke ({reason})"
            ),
        )
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await conn.inject.send(SessionMessage(JSONRPCMessage(error)))


class _Reply(httpx.AsyncByteStream):
    """A reply's bytes, passed through; `ended(why, resumable)` is called once when the stream ends."""

    def __init__(self, inner: httpx.AsyncByteStream, ended: Any) -> None:
        self.inner = inner
        self.ended = ended
        self.told = False
        self.event_ids = False  # an SSE event with an id went by: the SDK may resume the stream

    async def __aiter__(self) -> Any:
        try:
            async for chunk in self.inner:
                if not self.event_ids and (chunk.startswith(b"id:") or b"\nid:" in chunk):
                    self.event_ids = True
                yield chunk
        except Exception as exc:
            self._tell(" ".join(_describe(exc).split())[:200])
            raise
        self._tell(None)

    async def aclose(self) -> None:
        self._tell(None)
        await self.inner.aclose()

    def _tell(self, why: str | None) -> None:
        if not self.told:
            self.told = True
            self.ended(why, self.event_ids)


def _request_id(request: httpx.Request) -> Any:
    """The JSON-RPC id of a POSTed request (None for a notification, a reply, or anything else)."""
    if request.method != "POST":
        return None
    try:
        body = json.loads(request.content)
    except (ValueError, httpx.RequestNotRead):
        return None
    if isinstance(body, dict) and "method" in body and "id" in body:
        return body["id"]
    return None


# --- the tools ---------------------------------------------------------------------------------------------
class McpTool(BaseTool):
    """A tool of an MCP server: its name, description and JSON schema as listed; calls go to the server."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    server: SkipValidation[McpServer] = Field(exclude=True)
    remote_name: str
    side_effects: bool = False
    allowed: bool = True  # False: side-effecting and not allow-listed; a call returns an error instead
    max_output_chars: int = OUTPUT_CAP

    @property
    def unavailable(self) -> str | None:
        """Why the tool can't be called any more (its server stopped after its restart), else None; the
        catalog's search leaves such tools out."""
        return self.server.unavailable

    async def _arun(self, *args: Any, run_manager: Any = None, **kwargs: Any) -> Any:
        if not self.allowed:
            raise ToolError(blocked_message(self.name))
        result = await _the_portal().call(self.server.call(self.remote_name, kwargs))
        return cap_output(_result_text(self.remote_name, result), self.max_output_chars)

    def _run(self, *args: Any, run_manager: Any = None, **kwargs: Any) -> Any:
        if not self.allowed:
            raise ToolError(blocked_message(self.name))
        result = _the_portal().run(self.server.call(self.remote_name, kwargs))
        return cap_output(_result_text(self.remote_name, result), self.max_output_chars)


def _result_text(tool: str, result: CallToolResult) -> str:
    """A tool result as the model reads it: its text blocks, else its structured content as JSON."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(str(getattr(block, "text", "")))
        elif kind == "resource" and hasattr(getattr(block, "resource", None), "text"):
            parts.append(str(block.resource.text))  # type: ignore[union-attr]
        else:
            parts.append(f"[{kind or 'content'} block: {getattr(block, 'mimeType', '') or 'not shown'}]")
    text = "\n".join(parts)
    if not parts and result.structuredContent is not None:
        text = json.dumps(result.structuredContent, ensure_ascii=False, default=str)
    if result.isError:
        raise ToolFailed("McpToolError", text or f"the MCP tool {tool!r} failed")
    return text


# --- from the manifest -------------------------------------------------------------------------------------
_servers: dict[str, McpServer] = {}
_servers_lock = threading.Lock()


def _key(name: str, config: McpServerConfig, root: Path | None) -> str:
    return json.dumps([name, config.model_dump(mode="json"), str(root)], sort_keys=True)


def manifest_tools(manifest: Manifest) -> list[McpTool]:
    """The tools of every MCP server the manifest names (one session per server and process, shared by
    every orchestrator built from the same configuration)."""
    tools: list[McpTool] = []
    for name, config in manifest.mcp_servers.items():
        key = _key(name, config, manifest.root)
        with _servers_lock:
            server = _servers.get(key)
            if server is None:
                server = _servers[key] = McpServer(name, config, manifest.root)
        tools.extend(server.tools(manifest.allow_side_effects))
    return tools


def close_all() -> None:
    """Stop every MCP session this process opened (also run at exit)."""
    with _servers_lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.close()
