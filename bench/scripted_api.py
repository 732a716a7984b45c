"""A scripted OpenAI-compatible chat server for the fleet's tests and benchmark, run as its own process.

Every reply streams the same script: `--ttft` seconds to the first token, then `--tokens` tokens at `--tps`
tokens a second, with usage in the last chunk. It counts what a provider would bill and enforces a concurrency
cap of its own: a request over `--cap` gets 429 with `Retry-After` (and is not billed). `GET /stats` says what
happened: calls billed, 429s, the most requests it held at once, and the time to first byte and duration it
really kept (so a benchmark can show the server kept to its script). Standard library only (asyncio streams).

    python bench/scripted_api.py --port 0 --ttft 0.2 --tokens 100 --tps 50 --cap 64
    (prints `listening on http://127.0.0.1:PORT` once ready)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from typing import Any


class Script:
    def __init__(self, ttft: float, tokens: int, tps: float, cap: int, retry_after: float) -> None:
        self.ttft, self.tokens, self.tps, self.cap, self.retry_after = ttft, tokens, tps, cap, retry_after
        self.in_flight = 0
        self.max_in_flight = 0
        self.billed = 0
        self.refused = 0
        self.requests = 0
        self.by_tag: dict[str, int] = {}  # billed calls per X-Orch-Tag header (absent: "")
        self.ttfb: list[float] = []
        self.durations: list[float] = []
        self.started = time.monotonic()

    def stats(self) -> dict[str, Any]:
        def q(xs: list[float], p: float) -> float | None:
            if not xs:
                return None
            s = sorted(xs)
            return round(s[min(len(s) - 1, int(p * len(s)))], 4)

        return {
            "requests": self.requests,
            "billed": self.billed,
            "refused_429": self.refused,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "cap": self.cap,
            "by_tag": self.by_tag,
            "ttfb_s": {"median": q(self.ttfb, 0.5), "p95": q(self.ttfb, 0.95)},
            "duration_s": {
                "median": q(self.durations, 0.5),
                "p95": q(self.durations, 0.95),
                "mean": round(statistics.fmean(self.durations), 4) if self.durations else None,
            },
            "script": {"ttft_s": self.ttft, "tokens": self.tokens, "tps": self.tps},
        }


async def _read(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
    return method, path, headers, body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _serve(script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            req = await _read(reader)
            if req is None:
                return
            method, path, headers, body = req
            if method == "GET" and path.startswith("/stats"):
                payload = json.dumps(script.stats()).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(payload), payload)
                )
                await writer.drain()
                continue
            script.requests += 1
            if script.in_flight >= script.cap:
                script.refused += 1
                payload = b'{"error":{"message":"rate limited","type":"rate_limit_error"}}'
                writer.write(
                    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: %s\r\n"
                    b"content-length: %d\r\n\r\n%s"
                    % (str(script.retry_after).encode(), len(payload), payload)
                )
                await writer.drain()
                continue
            script.in_flight += 1
            script.max_in_flight = max(script.max_in_flight, script.in_flight)
            t0 = time.monotonic()
            try:
                model = json.loads(body or b"{}").get("model", "m")
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                )
                await asyncio.sleep(script.ttft)
                gap = 1.0 / script.tps if script.tps > 0 else 0.0
                first = True
                next_at = time.monotonic()
                for i in range(script.tokens):
                    delta = {"content": "w " if i else "word "}
                    frame = {
                        "id": "c",
                        "object": "chat.completion.chunk",
                        "model": model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                    }
                    writer.write(_chunk(b"data: " + json.dumps(frame).encode() + b"\n\n"))
                    await writer.drain()
                    if first:
                        script.ttfb.append(time.monotonic() - t0)
                        first = False
                    next_at += gap
                    wait = next_at - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                usage = {
                    "prompt_tokens": 20,
                    "completion_tokens": script.tokens,
                    "total_tokens": 20 + script.tokens,
                }
                last = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "usage": usage,
                }
                writer.write(_chunk(b"data: " + json.dumps(last).encode() + b"\n\n"))
                writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                await writer.drain()
                script.billed += 1
                tag = headers.get("x-orch-tag", "")
                script.by_tag[tag] = script.by_tag.get(tag, 0) + 1
                script.durations.append(time.monotonic() - t0)
            finally:
                script.in_flight -= 1
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ttft", type=float, default=0.2)
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--tps", type=float, default=50.0)
    p.add_argument("--cap", type=int, default=64)
    p.add_argument("--retry-after", type=float, default=1.0)
    a = p.parse_args(argv)
    script = Script(a.ttft, a.tokens, a.tps, a.cap, a.retry_after)
    server = await asyncio.start_server(lambda r, w: _serve(script, r, w), "127.0.0.1", a.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1:]))
