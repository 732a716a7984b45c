"""Provider transport benchmark: our client against raw httpx on the same loopback server.

Writes the "Provider transport" section of docs/benchmarks.md (between its markers; the rest is kept).
Run with `make bench` or `.venv/bin/python bench/providers.py`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from langchain_core.messages import HumanMessage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from loopback import Loopback, Reply  # noqa: E402
from markers import splice as splice_doc  # noqa: E402
from wire import openai_stream, openai_usage  # noqa: E402

from orchestrator.providers.http import aclose_clients  # noqa: E402
from orchestrator.providers.openai import OpenAIChatModel  # noqa: E402

START, END = "<!-- providers:start -->", "<!-- providers:end -->"
CHUNKS = 60  # text deltas per streamed reply (a ~60-token answer)
CALLS = 40  # calls per variant per round
ROUNDS = 7
TTFT_DELAYS = (0.02, 0.1, 0.3)
TTFT_REPEATS = 10


def reply(first_event_delay: float = 0.0) -> Reply:
    return openai_stream(
        [f"tok{i} " for i in range(CHUNKS)], openai_usage(100, CHUNKS), first_event_delay=first_event_delay
    )


async def raw_call(client: httpx.AsyncClient, url: str, body: bytes) -> None:
    """The floor: the same POST with httpx, reading every line of the stream, parsing nothing."""
    async with client.stream("POST", url, content=body, headers={"content-type": "application/json"}) as resp:
        async for _line in resp.aiter_lines():
            pass


async def transport() -> dict[str, float]:
    """Median ms per call: raw httpx, our transport (`complete`), and the LangChain layer (`ainvoke`)."""
    with Loopback() as server:
        server.default = reply()
        model = OpenAIChatModel(model="bench", base_url=server.url + "/v1", max_retries=0)
        messages = [HumanMessage("Count to sixty.")]
        body = json.dumps(model.build_body(messages, stop=None, stream=True)).encode()
        url = server.url + "/v1/chat/completions"
        async with httpx.AsyncClient() as client:

            async def raw() -> None:
                await raw_call(client, url, body)

            async def ours() -> None:
                await model.complete(messages)

            async def chat() -> None:
                await model.ainvoke(messages)

            variants = {"raw": raw, "ours": ours, "chat": chat}
            for fn in variants.values():  # warm up connections and code paths
                for _ in range(5):
                    await fn()
            samples: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(ROUNDS):
                for name, fn in variants.items():  # interleaved: noise hits every variant alike
                    t0 = time.perf_counter()
                    for _ in range(CALLS):
                        await fn()
                    samples[name].append((time.perf_counter() - t0) * 1000 / CALLS)
        await aclose_clients()
    return {k: statistics.median(v) for k, v in samples.items()}


async def ttft_error() -> list[tuple[float, float, float, float]]:
    """(scripted delay ms, median TTFT ms, median error ms, max error ms) per delay.

    The error is TTFT minus the delay the server waits between sending its headers and the first token,
    so it includes the request's own round trip on loopback (the part a real TTFT also contains).
    """
    rows = []
    with Loopback() as server:
        model = OpenAIChatModel(model="bench", base_url=server.url + "/v1", max_retries=0)
        server.push(reply())
        await model.complete([HumanMessage("warm")])
        for delay in TTFT_DELAYS:
            errors, ttfts = [], []
            for _ in range(TTFT_REPEATS):
                server.push(reply(first_event_delay=delay))
                c = await model.complete([HumanMessage("hi")])
                assert c.ttft_ms is not None
                ttfts.append(c.ttft_ms)
                errors.append(c.ttft_ms - delay * 1000)
            rows.append((delay * 1000, statistics.median(ttfts), statistics.median(errors), max(errors)))
        await aclose_clients()
    return rows


def section(per_call: dict[str, float], ttft: list[tuple[float, float, float, float]]) -> list[str]:
    ratio = per_call["ours"] / per_call["raw"]
    chat_extra = per_call["chat"] - per_call["ours"]
    worst = max(abs(r[3]) for r in ttft)
    lines = [
        START,
        "## Provider transport",
        "",
        f"Last run: {dt.date.today().isoformat()}, `bench/providers.py`. The loopback server of the test suite",
        f"streams an OpenAI-style reply of {CHUNKS} text chunks plus usage; each variant makes {CALLS} calls",
        f"per round, {ROUNDS} interleaved rounds, median per call. Raw httpx is the floor: the same POST, every",
        "line of the stream read, nothing parsed.",
        "",
        "| variant | ms per call | ratio to raw httpx | goal |",
        "|---|---|---|---|",
        f"| raw httpx request | {per_call['raw']:.3f} | 1.00 | |",
        f"| our transport and stream parser (`complete`) | {per_call['ours']:.3f} | {ratio:.2f} |"
        f" <= 1.10: {'met' if ratio <= 1.1 else 'missed'} |",
        f"| the `BaseChatModel` layer (`ainvoke`) | {per_call['chat']:.3f} | {per_call['chat'] / per_call['raw']:.2f} |"
        f" reported apart: +{chat_extra:.3f} ms over `complete` |",
        "",
        "TTFT measurement against the server's scripted delay between its headers and the first token"
        f" ({TTFT_REPEATS} calls each):",
        "",
        "| scripted delay | median TTFT | median error | max error | goal |",
        "|---|---|---|---|---|",
    ]
    for delay, med, err, mx in ttft:
        lines.append(
            f"| {delay:.0f} ms | {med:.2f} ms | {err:+.2f} ms | {mx:+.2f} ms |"
            f" within 5 ms: {'met' if abs(mx) <= 5 else 'missed'} |"
        )
    lines += ["", f"Worst TTFT error: {worst:.2f} ms.", END]
    return lines


def splice(lines: list[str]) -> None:
    """Put the section (markers included) into docs/benchmarks.md, replacing an older one; new: before the Notes."""
    splice_doc(ROOT / "docs" / "benchmarks.md", "\n".join(lines), START, END, "Benchmarks", before="## Notes")


def main() -> None:
    per_call: dict[str, Any] = asyncio.run(transport())
    ttft = asyncio.run(ttft_error())
    lines = section(per_call, ttft)
    splice(lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
