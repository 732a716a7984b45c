"""HTTP/1.1 for streamed model calls, on an `asyncio.Protocol`: the body goes to a sink as it arrives.

Why not httpx here: reading a stream of 100 SSE chunks through httpx costs each chunk a task wake-up and
the layers of httpx, httpcore, h11 and anyio (a selector registration per read), which was most of a streamed
call's client CPU (bench/stream_cpu.py). Here each chunk is one `data_received`: the chunked encoding is
undone over the buffer and the bytes go straight to the caller's sink (the SSE parser), in the loop's
callback, with no task switch; the calling task wakes twice per request (the head, the end).

What it keeps from httpx, so the callers' errors read the same: the exceptions are httpx's (`ConnectError`,
`ConnectTimeout`, `ReadTimeout`, `RemoteProtocolError`, `ReadError`); the read timeout is the longest silence
allowed before the head and between two reads; https uses httpx's SSL context (certifi or the environment's
`SSL_CERT_FILE`). What it leaves to httpx: proxies (`usable` says no when a proxy variable is set).

The pool keeps idle connections per origin, most recently used first, at O(1) per request; a connection the
server closed while idle is dropped when taken, and a request whose reused connection closes before any byte
came back is sent once more on a new one. A request cancelled (or failed) mid-way closes its connection.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import zlib
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

import httpx

__all__ = ["Pool", "Response", "usable"]

Sink = Callable[[bytes], None]
_Head = tuple[int, list[tuple[str, str]]]  # a response's status and headers

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
_MAX_HEAD = 64 * 1024
_MAX_IDLE = 1024  # idle connections kept per origin (a slot's concurrency cap is at most 1,024)
_IDLE_S = 30.0  # an idle connection older than this is closed rather than reused
_IDLE, _HEAD, _BODY = 0, 1, 2
_SIZE, _DATA, _CRLF, _TRAILER = -1, 0, -2, -3  # where the chunked decoder is (_DATA: inside a chunk)
# unless the caller's headers say otherwise: httpx's user agent (servers see one client whichever path sent),
# and no compression (a gzip body would be inflated, but SSE chunks are too small to gain from it)
_DEFAULTS = (("accept-encoding", "identity"), ("user-agent", f"python-httpx/{httpx.__version__}"))


def usable(url: str) -> bool:
    """This path can send to `url`: http or https, and no proxy configured in the environment."""
    return url.startswith(("http://", "https://")) and not any(os.environ.get(v) for v in _PROXY_VARS)


class Response:
    """A response's head; its body goes to `pipe`'s sink or is read whole with `read`."""

    def __init__(self, conn: _Conn, status: int, headers: list[tuple[str, str]]) -> None:
        self._conn = conn
        self.status_code = status
        self.headers = httpx.Headers(headers)

    async def pipe(self, sink: Sink) -> None:
        """Send the body's bytes to `sink` as they arrive; return when the body has ended. An exception
        `sink` raises ends the request (its connection closed) and is raised here."""
        await self._conn.pipe(sink)

    async def read(self) -> bytes:
        parts: list[bytes] = []
        await self._conn.pipe(parts.append)
        return b"".join(parts)


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection: a request at a time, its head parsed, its body decoded into a sink."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.got = False  # a byte of the current response arrived
        self.idle_since = 0.0
        self.keep_alive = True
        self._state = _IDLE
        self._buf = b""
        self._head: asyncio.Future[_Head] | None = None
        self._done: asyncio.Future[None] | None = None
        self._sink: Sink | None = None
        self._early: list[bytes] = []  # body bytes that came before the sink was set
        self._chunked = False
        self._left = -1  # bytes of a Content-Length body still to come (-1: until the connection closes)
        self._at = _SIZE  # where the chunked decoder is; with _DATA, `_need` bytes of the chunk are to come
        self._need = 0
        self._inflate: Any = None
        self._read_timeout = 60.0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.origin: tuple[str, str, int] = ("", "", 0)

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # no isinstance check: uvloop's transports (a service under uvicorn) are not asyncio.Transport's
        # subclasses, though they have its methods
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._state == _HEAD:
            self._fail(httpx.RemoteProtocolError("Server disconnected without sending a response."))
        elif self._state == _BODY:
            if not self._chunked and self._left < 0:
                self._end()  # a body delimited by the connection's close
            else:
                kind = "incomplete chunked read" if self._chunked else "incomplete body"
                self._fail(
                    httpx.RemoteProtocolError(
                        f"peer closed connection without sending complete message body: {kind}"
                    )
                )

    def data_received(self, data: bytes) -> None:
        self._last = self.loop.time()
        self.got = True
        sink = self._sink
        if (  # the common read of a stream: one whole chunk of the body, for a sink already waiting
            sink is not None
            and self._state == _BODY
            and self._chunked
            and self._at == _SIZE
            and not self._buf
            and self._inflate is None
        ):
            eol = data.find(b"\r\n", 0, 18)
            if eol > 0 and data[-2:] == b"\r\n" and data[eol - 1] != 59:  # 59: ";", an extension
                try:
                    n = int(data[:eol], 16)
                except ValueError:
                    n = 0
                if n > 0 and len(data) == eol + n + 4:
                    try:
                        sink(data[eol + 2 : -2])
                    except Exception as exc:
                        self._fail(exc)
                    return
        try:
            if self._state == _HEAD:
                data = self._parse_head(data)
            if self._state == _BODY and data:
                if self._chunked:
                    self._chunks(data)
                else:
                    self._plain(data)
            elif self._state == _IDLE and data:
                raise httpx.RemoteProtocolError("received data between responses")
        except Exception as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost decides whether the body was complete

    # --- one request ---
    def request(self, message: bytes, read_timeout: float) -> asyncio.Future[_Head]:
        """Send a request; the future gets the response's status and headers."""
        assert self.transport is not None
        self._state, self._buf, self.got = _HEAD, b"", False
        self._head = self.loop.create_future()
        self._done = self.loop.create_future()
        self._sink, self._early, self._inflate = None, [], None
        self._read_timeout = read_timeout
        self._last = self.loop.time()
        self._timer = self.loop.call_at(self._last + read_timeout, self._check_timeout)
        self.transport.write(message)
        return self._head

    async def pipe(self, sink: Sink) -> None:
        done = self._done
        assert done is not None
        self._sink = sink
        if self._early:
            early, self._early = self._early, []
            try:
                for piece in early:
                    sink(piece)
            except BaseException:
                self._fail(httpx.ReadError("the response was abandoned"))  # the body may have ended already
                raise
        await done

    def close(self) -> None:
        self._state = _IDLE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        self.lost = True

    # --- the response ---
    def _parse_head(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise httpx.RemoteProtocolError("response head too long")
                self._buf = buf
                return b""
            lines = buf[:end].decode("latin-1").split("\r\n")
            buf = buf[end + 4 :]
            version, _, rest = lines[0].partition(" ")
            try:
                status = int(rest[:3])
            except ValueError:
                raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}") from None
            if not version.startswith("HTTP/1."):
                raise httpx.RemoteProtocolError(f"unsupported response {lines[0][:80]!r}")
            if 100 <= status < 200:
                continue  # an interim response: the real one follows
            break
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}")
            headers.append((name.strip().lower(), value.strip()))
        found = dict(headers)
        connection = found.get("connection", "").lower()
        self.keep_alive = "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
        self._chunked = "chunked" in found.get("transfer-encoding", "").lower()
        self._at, self._need, self._buf = _SIZE, 0, b""
        if self._chunked:
            self._left = -1
        elif status in (204, 304):
            self._left = 0
        else:
            length = found.get("content-length")
            try:
                self._left = int(length) if length is not None else -1
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad content-length {length!r}") from None
            if self._left < 0:
                self.keep_alive = False
        encoding = found.get("content-encoding", "identity").lower()
        if encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._inflate = zlib.decompressobj()
        elif encoding not in ("identity", ""):
            raise httpx.DecodingError(f"unsupported content-encoding {encoding!r}")
        self._state = _BODY
        assert self._head is not None
        if not self._head.done():
            self._head.set_result((status, headers))
        if self._left == 0:
            self._end()
        return buf

    def _plain(self, data: bytes) -> None:
        if self._left >= 0:
            if len(data) >= self._left:
                data, extra = data[: self._left], data[self._left :]
                if extra:
                    self.keep_alive = False
                self._left = 0
                self._deliver(data)
                self._end()
                return
            self._left -= len(data)
        self._deliver(data)

    def _chunks(self, data: bytes) -> None:
        """Undo the chunked encoding over the buffer (`data_received` takes a whole chunk)."""
        buf = self._buf + data if self._buf else data
        pos, size = 0, len(buf)
        while pos < size:
            at = self._at
            if at == _DATA:
                take = min(self._need, size - pos)
                self._deliver(buf if take == size else buf[pos : pos + take])
                pos += take
                self._need -= take
                if self._need:
                    break
                self._at = _CRLF
                continue
            if at == _CRLF:
                if size - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise httpx.RemoteProtocolError("malformed chunked encoding: no CRLF after a chunk")
                pos += 2
                self._at = _SIZE
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if size - pos > _MAX_HEAD:
                    raise httpx.RemoteProtocolError("malformed chunked encoding: line too long")
                break
            line = buf[pos:eol]
            pos = eol + 2
            if at == _TRAILER:
                if not line:  # the blank line after the trailers: the body is complete
                    if pos < size:
                        self.keep_alive = False
                    self._buf = b""
                    self._end()
                    return
                continue
            try:
                n = int(line.split(b";", 1)[0], 16)
            except ValueError:
                n = -1
            if n < 0:
                raise httpx.RemoteProtocolError(f"malformed chunk size {line[:40]!r}")
            if n:
                self._at, self._need = _DATA, n
            else:
                self._at = _TRAILER
        self._buf = buf[pos:] if pos < size else b""

    def _deliver(self, data: bytes) -> None:
        if self._inflate is not None:
            data = self._inflate.decompress(data)
            if not data:
                return
        if self._sink is not None:
            self._sink(data)
        else:
            self._early.append(data)

    def _end(self) -> None:
        if self._inflate is not None:
            tail = self._inflate.flush()
            self._inflate = None
            if tail:
                self._deliver(tail)
        self._state = _IDLE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.keep_alive = False
        self.close()
        for fut in (self._head, self._done):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                fut.exception()  # marked as seen: the caller awaits one of the two, perhaps neither

    def _check_timeout(self) -> None:
        self._timer = None
        if self._state == _IDLE:
            return
        due = self._last + self._read_timeout
        if self.loop.time() >= due:
            self._fail(httpx.ReadTimeout(f"no data for {self._read_timeout:g} s"))
        else:
            self._timer = self.loop.call_at(due, self._check_timeout)


class Pool:
    """Keep-alive connections of one event loop, per origin."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._busy: set[_Conn] = set()
        self._ssl: ssl.SSLContext | None = None

    async def open(
        self,
        url: str,
        headers: dict[str, str],
        payload: bytes,
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> tuple[Response, _Conn]:
        """POST `payload` to `url`: the response once its head has come, and its connection to `release`."""
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if https else 80)
        key = (parts.scheme, host, port)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = host if parts.port is None else f"{host}:{port}"
        if ":" in host:
            authority = f"[{host}]" if parts.port is None else f"[{host}]:{port}"
        given = {k.lower() for k in headers}
        lines = [f"POST {path} HTTP/1.1", f"host: {authority}", f"content-length: {len(payload)}"]
        lines += [f"{k}: {v}" for k, v in _DEFAULTS if k not in given]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("content-length", "host")]
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        reuse = True
        while True:
            conn = self._take(key) if reuse else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, https, connect_timeout)
            self._busy.add(conn)
            try:
                status, got = await conn.request(message, read_timeout)
            except httpx.RemoteProtocolError:
                self.release(conn)
                if reused and not conn.got:
                    reuse = False  # the server had closed the idle connection: once more, on a new one
                    continue
                raise
            except BaseException:
                self.release(conn)
                raise
            return Response(conn, status, got), conn

    def release(self, conn: _Conn) -> None:
        """The request on `conn` is over: keep it for the next one, or close it if it did not end cleanly."""
        self._busy.discard(conn)
        if conn.lost or not conn.keep_alive or conn._state != _IDLE or conn.transport is None:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= _MAX_IDLE:
            conn.close()
            return
        idle.append(conn)

    def _take(self, key: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.lost and conn.loop.time() - conn.idle_since < _IDLE_S:
                return conn
            conn.close()
        return None

    async def _connect(self, key: tuple[str, str, int], https: bool, timeout: float) -> _Conn:
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if https:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            ctx = self._ssl
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(loop), key[1], key[2], ssl=ctx, server_hostname=key[1] if ctx else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {key[1]}:{key[2]} took over {timeout:g} s") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
        conn.origin = key
        return conn

    async def aclose(self) -> None:
        """Close every connection, idle or in use."""
        conns = [c for idle in self._idle.values() for c in idle] + list(self._busy)
        self._idle.clear()
        self._busy.clear()
        for conn in conns:
            conn.close()
        if conns:
            await asyncio.sleep(0)  # the transports close their sockets on the next pass of the loop
