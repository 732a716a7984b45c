"""The loopback test server itself, checked with plain httpx: replies, queues, keep-alive, timing, faults."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from loopback import DONE, Loopback, Reply, sse


def test_sse_builds_one_frame() -> None:
    assert sse({"a": 1, "b": [1, 2]}) == 'data: {"a":1,"b":[1,2]}\n\n'
    assert sse("hi", event="ping") == "event: ping\ndata: hi\n\n"
    assert DONE == "data: [DONE]\n\n"


def test_json_reply_and_the_recorded_request(loopback: Loopback) -> None:
    loopback.push(Reply(status=201, headers={"X-Request-Id": "r1"}, body={"ok": True}))
    r = httpx.post(
        loopback.url + "/v1/chat?stream=false", json={"q": "hi"}, headers={"Authorization": "Bearer k"}
    )
    assert (r.status_code, r.reason_phrase) == (201, "Created")
    assert r.json() == {"ok": True}
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"] == "r1"
    [req] = loopback.requests
    assert (req.method, req.path) == ("POST", "/v1/chat?stream=false")
    assert req.headers["authorization"] == "Bearer k"
    assert req.headers["content-type"] == "application/json"
    assert req.json() == {"q": "hi"}


def test_text_bytes_and_unusual_statuses(loopback: Loopback) -> None:
    loopback.push(Reply(status=429, body="slow down"), Reply(status=529, body=b"\x00\x01"))
    with httpx.Client(base_url=loopback.url) as client:
        r = client.get("/")
        assert (r.status_code, r.reason_phrase, r.text) == (429, "Too Many Requests", "slow down")
        assert r.headers["content-type"].startswith("text/plain")
        r = client.get("/")
        assert (r.status_code, r.content) == (529, b"\x00\x01")


def test_routes_come_before_the_fifo_then_the_default(loopback: Loopback) -> None:
    loopback.push(Reply(body="first"), Reply(body="second"))
    loopback.route("/v1/messages", Reply(body="routed"))
    with httpx.Client(base_url=loopback.url) as client:
        assert client.get("/v1/chat").text == "first"
        assert client.post("/v1/messages", json={}).text == "routed"
        assert client.post("/v1/messages", json={}).text == "second"  # the route's queue is empty
        r = client.get("/anything")
        assert (r.status_code, r.json()) == (404, {"error": "no scripted reply"})
    assert [q.path for q in loopback.requests] == ["/v1/chat", "/v1/messages", "/v1/messages", "/anything"]


def test_keep_alive_serves_two_requests_on_one_connection(loopback: Loopback) -> None:
    loopback.push(Reply(body={"n": 1}), Reply(body={"n": 2}))
    with httpx.Client(base_url=loopback.url) as client:
        assert client.get("/a").json() == {"n": 1}
        assert client.get("/b").json() == {"n": 2}
    assert len(loopback.requests) == 2
    assert loopback.connections == 1


def test_a_chunked_request_body_is_read(loopback: Loopback) -> None:
    loopback.push(Reply(body="ok"))
    with httpx.Client() as client:
        assert client.post(loopback.url, content=iter([b"ab", b"cd", b"e"])).text == "ok"
    [req] = loopback.requests
    assert req.headers["transfer-encoding"] == "chunked"
    assert req.body == b"abcde"


async def test_a_stream_arrives_event_by_event(loopback: Loopback) -> None:
    gap, first = 0.1, 0.05
    events: list[str | bytes] = [sse({"n": 1}), b"data: {not json\n\n", sse("x", event="ping"), DONE]
    loopback.push(Reply(events=events, gap=gap, first_event_delay=first))
    lines: list[tuple[float, str]] = []
    async with httpx.AsyncClient() as client, client.stream("POST", loopback.url, json={}) as r:
        t_headers = time.perf_counter()
        assert r.headers["content-type"] == "text/event-stream"
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["transfer-encoding"] == "chunked"
        async for line in r.aiter_lines():
            if line:
                lines.append((time.perf_counter(), line))
    assert [line for _, line in lines] == [
        'data: {"n":1}',
        "data: {not json",
        "event: ping",
        "data: x",
        "data: [DONE]",
    ]
    assert lines[0][0] - t_headers >= 0.8 * first
    assert lines[1][0] - lines[0][0] >= 0.8 * gap
    assert lines[-1][0] - lines[0][0] >= 0.8 * 3 * gap


@pytest.mark.parametrize("delay", [0.02, 0.15])
def test_delay_is_the_time_to_the_response_headers(loopback: Loopback, delay: float) -> None:
    loopback.push(Reply(body="warm-up"), Reply(delay=delay, events=[DONE]))
    with httpx.Client(base_url=loopback.url) as client:
        client.get("/")  # connect first, so only the scripted delay is timed
        t0 = time.perf_counter()
        with client.stream("GET", "/") as r:
            elapsed = time.perf_counter() - t0
            assert r.read() == DONE.encode()
    assert delay <= elapsed < delay + 0.05


def test_cut_after_breaks_the_stream_after_exactly_n_events(loopback: Loopback) -> None:
    loopback.push(Reply(events=[sse({"n": i}) for i in range(5)], cut_after=2))
    got: list[str] = []
    with (
        httpx.Client() as client,
        client.stream("GET", loopback.url) as r,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        for line in r.iter_lines():
            if line:
                got.append(line)
    assert got == ['data: {"n":0}', 'data: {"n":1}']


def test_a_stall_times_out_the_read(loopback: Loopback) -> None:
    loopback.push(Reply(stall=5.0))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(loopback.url, timeout=httpx.Timeout(5.0, read=0.1))
    assert len(loopback.requests) == 1  # recorded, just never answered


def test_stall_after_events_sends_those_then_nothing(loopback: Loopback) -> None:
    loopback.push(Reply(events=[sse({"n": i}) for i in range(3)], stall_after_events=1, stall=5.0))
    got: list[str] = []
    with (
        httpx.Client(timeout=httpx.Timeout(5.0, read=0.2)) as client,
        client.stream("GET", loopback.url) as r,
        pytest.raises(httpx.ReadTimeout),
    ):
        for line in r.iter_lines():
            if line:
                got.append(line)
    assert got == ['data: {"n":0}']


async def test_a_stalled_connection_does_not_hold_up_others(loopback: Loopback) -> None:
    loopback.route("/stall", Reply(stall=5.0))
    loopback.push(Reply(body="quick"))
    async with httpx.AsyncClient(base_url=loopback.url, timeout=5.0) as client:
        stalled = asyncio.create_task(client.get("/stall"))
        while not loopback.requests:
            await asyncio.sleep(0.005)
        t0 = time.perf_counter()
        assert (await client.get("/other")).text == "quick"
        assert time.perf_counter() - t0 < 0.5
        stalled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stalled


async def test_close_returns_promptly_with_a_connection_stalled_for_30s() -> None:
    server = Loopback().start()
    server.push(Reply(stall=30.0))
    async with httpx.AsyncClient(timeout=60.0) as client:
        pending = asyncio.create_task(client.get(server.url))
        while not server.requests:
            await asyncio.sleep(0.005)
        t0 = time.perf_counter()
        server.close()
        assert time.perf_counter() - t0 < 1.0
        with pytest.raises(httpx.TransportError):  # the server dropped the connection
            await pending
    server.close()  # a second close is harmless
