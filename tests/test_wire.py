"""Streamed calls on `providers/wire.py` (HTTP/1.1 on an asyncio.Protocol): keep-alive, a connection the
server dropped, the chunked encoding cut anywhere, compressed and length-delimited bodies, https, and httpx
whenever a proxy is configured. Real servers on loopback (tests/loopback.py, or a few lines of asyncio for
what it can't do)."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import DONE, Loopback, Reply, sse

from orchestrator.providers import wire
from orchestrator.providers.http import aclose_clients, reset_model_states
from orchestrator.providers.openai import OpenAIChatModel

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(autouse=True)
async def _fresh() -> AsyncIterator[None]:
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[Loopback]:
    with Loopback() as lb:
        yield lb


def _model(base_url: str, **kw: Any) -> OpenAIChatModel:
    opts = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "read_timeout_s": 2.0, **kw}
    return OpenAIChatModel(model="m", base_url=base_url + "/v1", **opts)


def _chunk(text: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    delta = {"content": text} if text else {}
    out: dict[str, Any] = {"model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    if usage:
        out["choices"], out["usage"] = [], usage
    return out


def _events(texts: list[str]) -> list[str | bytes]:
    usage = {"prompt_tokens": 7, "completion_tokens": len(texts), "total_tokens": 7 + len(texts)}
    return [*(sse(_chunk(t)) for t in texts), sse(_chunk(usage=usage)), DONE]


def _body(texts: list[str]) -> bytes:
    return "".join(str(e) for e in _events(texts)).encode()


async def _serve(handler: Handler, ssl_ctx: ssl.SSLContext | None = None) -> tuple[asyncio.Server, str]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_ctx)
    port = srv.sockets[0].getsockname()[1]
    return srv, f"{'https' if ssl_ctx else 'http'}://127.0.0.1:{port}"


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    await reader.readexactly(length)
    return head


async def test_streamed_calls_go_through_wire_and_reuse_one_connection(server: Loopback) -> None:
    server.push(Reply(events=_events(["a", "b"])), Reply(events=_events(["c"])))
    model = _model(server.url)
    first = await model.ainvoke("hi")
    second = await model.ainvoke("hi")
    assert (first.content, second.content) == ("ab", "c")
    assert server.connections == 1 and len(server.requests) == 2
    assert server.requests[0].headers["accept-encoding"] == "identity"  # httpx would ask for gzip
    assert first.response_metadata["ttft_ms"] is not None
    assert first.usage_metadata is not None and first.usage_metadata["output_tokens"] == 2


async def test_with_a_proxy_configured_streams_go_through_httpx(
    server: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there: NO_PROXY must apply
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert not wire.usable(server.url)
    server.push(Reply(events=_events(["via httpx"])))
    assert (await _model(server.url).ainvoke("hi")).content == "via httpx"
    assert "gzip" in server.requests[0].headers["accept-encoding"]


async def test_an_idle_connection_the_server_dropped_is_replaced_without_a_failed_attempt() -> None:
    seen: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(len(seen))
        n = 0
        while await _read_request(reader) is not None:
            n += 1
            if len(seen) == 1 and n == 2:  # the second request on the first connection: dropped unanswered
                break
            body = _body([f"reply {len(seen)}.{n}"])
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
            await writer.drain()
        writer.transport.abort()

    srv, url = await _serve(handler)
    async with srv:
        model = _model(url)
        assert (await model.ainvoke("hi")).content == "reply 1.1"
        second = await model.ainvoke("hi")
        assert second.content == "reply 2.1"
        assert [a["error"] for a in second.response_metadata["attempts"]] == [None]
        assert len(seen) == 2
        await aclose_clients()


async def test_a_fresh_connection_that_closes_unanswered_is_a_failed_attempt() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.transport.abort()

    srv, url = await _serve(handler)
    async with srv:
        with pytest.raises(Exception, match="RemoteProtocolError: Server disconnected"):
            await _model(url, max_retries=1).ainvoke("hi")
        await aclose_clients()


async def test_a_cancelled_stream_closes_its_connection(server: Loopback) -> None:
    server.push(Reply(events=_events(["a", "b", "c"]), stall_after_events=1, stall=5.0))
    server.push(Reply(events=_events(["next"])))
    got = asyncio.Event()
    model = _model(server.url)
    task = asyncio.ensure_future(model.ainvoke("hi", on_text=lambda _t: got.set()))
    await asyncio.wait_for(got.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await model.ainvoke("hi")).content == "next"
    assert server.connections == 2  # the cancelled one was not put back in the pool


class _Sent(asyncio.Transport):
    """Where a connection fed by hand writes its request (nowhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True


def _response(head: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + head + b"\r\n" + body


def _chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    framed = b"".join(b"%x;ext=1\r\n%b\r\n" % (len(p), p) for p in parts)
    return framed + b"0\r\ntrailer: x\r\n\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        _response(b"transfer-encoding: chunked\r\n", _chunked(_body(["x", "yz"]), 7)),
        _response(b"content-length: %d\r\n" % len(_body(["x", "yz"])), _body(["x", "yz"])),
        _response(
            b"transfer-encoding: chunked\r\ncontent-encoding: gzip\r\n",
            _chunked(gzip.compress(_body(["x", "yz"])), 9),
        ),
        b"HTTP/1.1 100 Continue\r\n\r\n"
        + _response(b"transfer-encoding: chunked\r\n", _chunked(_body(["x", "yz"]), 300)),
    ],
    ids=["chunked", "content-length", "gzip", "interim-100"],
)
@pytest.mark.parametrize("step", [1, 5, 10_000])
async def test_a_response_read_in_pieces_of_any_size_gives_the_same_body(raw: bytes, step: int) -> None:
    loop = asyncio.get_running_loop()
    conn = wire._Conn(loop)
    sink: list[bytes] = []

    conn.connection_made(_Sent())
    head = conn.request(b"", read_timeout=5.0)
    for i in range(0, len(raw), step):
        conn.data_received(raw[i : i + step])
    status, _ = await head
    await conn.pipe(sink.append)
    assert status == 200 and conn.keep_alive
    assert b"".join(sink) == _body(["x", "yz"])


async def test_a_body_cut_inside_a_chunk_is_a_protocol_error() -> None:
    loop = asyncio.get_running_loop()
    conn = wire._Conn(loop)

    conn.connection_made(_Sent())
    head = conn.request(b"", read_timeout=5.0)
    conn.data_received(_response(b"transfer-encoding: chunked\r\n", b"20\r\ndata: {"))
    await head
    conn.connection_lost(None)
    with pytest.raises(Exception, match="incomplete chunked read"):
        await conn.pipe(lambda _b: None)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_streams_through_wire_with_the_environment_s_certificates(
    tls: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted as httpx trusts it
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (head := await _read_request(reader)) is not None:
            heads.append(head)
            body = _chunked(_body(["secure"]), 16)
            writer.write(_response(b"transfer-encoding: chunked\r\n", body))
            await writer.drain()
        writer.close()

    srv, url = await _serve(handler, server_ctx)
    async with srv:
        msg = await _model(url).ainvoke("hi")
        assert msg.content == "secure"
        assert b"accept-encoding: identity" in heads[0]
        await aclose_clients()
        monkeypatch.delenv("SSL_CERT_FILE")
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):  # not trusted without it
            await _model(url, max_retries=0).ainvoke("hi")
        await aclose_clients()


async def test_a_chunk_only_the_standard_json_module_reads_is_not_malformed(server: Loopback) -> None:
    delta = '"choices":[{"index":0,"delta":{"content":"ok"}}]'
    huge = '{"created":123456789012345678901234567890,"x":NaN,' + delta + "}"
    server.push(Reply(events=[sse(huge), *_events([])]))
    msg = await _model(server.url).ainvoke("hi")
    assert msg.content == "ok"
    assert [a["error"] for a in msg.response_metadata["attempts"]] == [None]


async def test_the_caller_s_headers_replace_the_defaults_and_a_gzip_reply_is_inflated() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (head := await _read_request(reader)) is not None:
            heads.append(head.lower())
            body = _chunked(gzip.compress(_body(["zipped"])), 11)
            writer.write(_response(b"transfer-encoding: chunked\r\ncontent-encoding: gzip\r\n", body))
            await writer.drain()
        writer.close()

    srv, url = await _serve(handler)
    async with srv:
        model = _model(url, headers={"Accept-Encoding": "gzip", "User-Agent": "mine/1"})
        assert (await model.ainvoke("hi")).content == "zipped"
        await aclose_clients()
    assert heads[0].count(b"accept-encoding:") == 1 and b"accept-encoding: gzip" in heads[0]
    assert heads[0].count(b"user-agent:") == 1 and b"user-agent: mine/1" in heads[0]


async def test_after_every_idle_connection_was_dropped_the_retry_takes_a_new_one() -> None:
    opened: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(len(opened) + 1)
        me, n = len(opened), 0
        while await _read_request(reader) is not None:
            n += 1
            if me <= 2 and n == 2:  # the first two connections: dropped at their second request
                break
            body = _body([f"from {me}"])
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
            await writer.drain()
        writer.transport.abort()

    srv, url = await _serve(handler)
    async with srv:
        model = _model(url)
        first = await asyncio.gather(model.ainvoke("a"), model.ainvoke("b"))  # two connections, both idle
        assert sorted(str(m.content) for m in first) == ["from 1", "from 2"]
        msg = await model.ainvoke("c")
        assert msg.content == "from 3"
        assert [a["error"] for a in msg.response_metadata["attempts"]] == [None]
        await aclose_clients()


def test_streamed_calls_work_on_uvloop(server: Loopback) -> None:
    # a service under uvicorn runs on uvloop when it is installed; its transports are not asyncio.Transport's
    # subclasses, so nothing on this path may assume they are
    uvloop = pytest.importorskip("uvloop")
    server.push(Reply(events=_events(["on ", "uvloop"])), Reply(events=_events(["again"])))

    async def two_calls() -> tuple[str, str]:
        try:
            model = _model(server.url)
            first = await model.ainvoke("hi")
            second = await model.ainvoke("hi")
            return str(first.content), str(second.content)
        finally:
            await aclose_clients()

    assert uvloop.run(two_calls()) == ("on uvloop", "again")
    assert server.connections == 1 and len(server.requests) == 2


async def test_a_call_no_one_listens_to_skips_langchain_s_run_and_a_listened_one_keeps_it(
    server: Loopback,
) -> None:
    # the orchestrator traces its own calls; LangChain's run around one only serves other listeners
    from langchain_core.callbacks import AsyncCallbackHandler
    from langchain_core.language_models import BaseChatModel

    class Seen(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.events: list[str] = []

        async def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            self.events.append("start")

        async def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            self.events.append(str(response.generations[0][0].message.content))

    runs: list[str] = []
    agenerate = BaseChatModel.agenerate

    async def counted(self: BaseChatModel, *args: Any, **kwargs: Any) -> Any:
        runs.append(type(self).__name__)
        return await agenerate(self, *args, **kwargs)

    server.push(Reply(events=_events(["quiet"])), Reply(events=_events(["heard"])))
    model = _model(server.url)
    seen = Seen()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BaseChatModel, "agenerate", counted)
        quiet = await model.ainvoke("hi")
        assert runs == []  # no LangChain run: the call went straight to the client
        heard = await model.ainvoke("hi", config={"callbacks": [seen]})
    assert runs == ["OpenAIChatModel"]
    assert seen.events == ["start", "heard"]
    for reply, text in ((quiet, "quiet"), (heard, "heard")):  # the same message either way
        assert reply.content == text and reply.id and reply.id.startswith("lc_run-")
        assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 1
        assert reply.response_metadata["served_by"] == "m"
