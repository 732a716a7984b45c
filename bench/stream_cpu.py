"""Client CPU per streamed model call: N concurrent calls of 100 SSE chunks through the OpenAI-compatible client.

The server is bench/load.py's (`serve`): a loopback HTTP/1.1 server in a process of its own, streaming every
reply one token per chunk (0.2 s to the first token, then 50 tokens/s, 100 tokens, the finish and usage chunks,
`[DONE]`), so each chunk reaches the client in a read of its own, as from a real API.

Each mode makes N calls at once and reports the client process's CPU time (`time.process_time`) per call:

* `httpx-raw`: a bare `httpx.AsyncClient` reading each stream with `aiter_raw` (no SSE, no JSON). Its own
  client keeps every connection alive, so httpcore's pool walks all of them per request (the clients' pool
  keeps 64): it can cost more than `provider-httpx`.
* `httpx-bytes`: the same with `aiter_bytes` (httpx's decoders).
* `provider`: `OpenAIChatModel.ainvoke`, as a slot calls it when no one listens to its text.
* `provider-text`: the same with an `on_text` callback per piece of text (a slot with a text sink).
* `provider-astream`: `OpenAIChatModel.astream` (LangChain chunks and per-token callbacks).
* `provider-httpx`: `provider` with the fast stream path turned off (every call through httpx).

Modes run interleaved, round after round, in one process (the machine is shared: compare within a run).
`--profile MODE` runs one round of that mode under cProfile and prints the top entries.

Run: `.venv/bin/python bench/stream_cpu.py [--calls 200] [--rounds 3] [--modes a,b] [--profile MODE]`;
`--docs` writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import multiprocessing
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from langchain_core.messages import HumanMessage  # noqa: E402

from bench.load import CALL_S, TOKENS, serve  # noqa: E402
from bench.markers import machine, splice  # noqa: E402
from orchestrator.providers import http as provider_http  # noqa: E402
from orchestrator.providers.http import aclose_clients  # noqa: E402
from orchestrator.providers.openai import OpenAIChatModel  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
SECTION_START, SECTION_END = "<!-- stream-cpu:start -->", "<!-- stream-cpu:end -->"
MODES = {
    "httpx-raw": "a bare `httpx.AsyncClient` (its own, keep-alive for every connection) reading each stream "
    "with `aiter_raw`, nothing parsed",
    "httpx-bytes": "the same with `aiter_bytes` (httpx's decoders)",
    "provider": "`OpenAIChatModel.ainvoke`, as a slot calls it when no one listens to its text",
    "provider-text": "the same with an `on_text` callback per piece of text (a slot with a text sink)",
    "provider-astream": "`OpenAIChatModel.astream` (LangChain's chunk objects and callbacks per token)",
    "provider-httpx": "`provider` with every call through httpx (`http.FAST_STREAMS = False`)",
}


def _model(base_url: str) -> OpenAIChatModel:
    return OpenAIChatModel(
        model="bench", model_name="openai-compat:bench", base_url=base_url, max_concurrency=1024
    )


def _body() -> bytes:
    return b'{"model":"bench","messages":[{"role":"user","content":"hi"}],"stream":true}'


async def _httpx(client: httpx.AsyncClient, url: str, raw: bool) -> int:
    got = 0
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    async with client.stream("POST", url, content=_body(), headers=headers) as resp:
        chunks = resp.aiter_raw() if raw else resp.aiter_bytes()
        async for chunk in chunks:
            got += len(chunk)
    return got


def _call(mode: str, base_url: str, client: httpx.AsyncClient) -> Callable[[], Awaitable[Any]]:
    model = _model(base_url)
    messages = [HumanMessage("hi")]
    url = base_url + "/chat/completions"
    if mode in ("httpx-raw", "httpx-bytes"):
        return lambda: _httpx(client, url, mode == "httpx-raw")
    if mode in ("provider", "provider-httpx"):
        return lambda: model.ainvoke(messages)
    if mode == "provider-text":
        pieces: list[str] = []
        return lambda: model.ainvoke(messages, on_text=pieces.append, on_restart=lambda _r: None)

    async def astream() -> int:
        return len([c async for c in model.astream(messages)])

    return astream


def _fast(on: bool) -> None:
    """Turn the fast stream path on or off (a no-op where the module has none)."""
    if hasattr(provider_http, "FAST_STREAMS"):
        provider_http.FAST_STREAMS = on


async def _round(mode: str, base_url: str, calls: int, client: httpx.AsyncClient) -> dict[str, float]:
    _fast(mode != "provider-httpx")
    call = _call(mode, base_url, client)
    await call()  # warm: connections, imports, caches
    gc.collect()  # each mode starts from a clean heap: not paying for the garbage of the mode before
    cpu0, wall0 = time.process_time(), time.perf_counter()
    results = await asyncio.gather(*(call() for _ in range(calls)), return_exceptions=True)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    _fast(True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise RuntimeError(f"{mode}: {len(errors)} of {calls} calls failed: {errors[0]!r}")
    return {"cpu_ms_per_call": cpu * 1000 / calls, "wall_s": wall}


async def measure(base_url: str, modes: list[str], calls: int, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {m: [] for m in modes}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=calls + 8)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
        try:
            for r in range(rounds):
                for mode in modes:
                    got = await _round(mode, base_url, calls, client)
                    out[mode].append(got["cpu_ms_per_call"])
                    print(
                        f"round {r + 1} {mode:18} {got['cpu_ms_per_call']:7.2f} ms CPU per call "
                        f"(wall {got['wall_s']:.2f} s, scripted {CALL_S:.1f} s)",
                        flush=True,
                    )
        finally:
            await aclose_clients()
    return out


async def profile(base_url: str, mode: str, calls: int, top: int, sort: str) -> str:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=calls + 8)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
        try:
            _fast(mode != "provider-httpx")
            call = _call(mode, base_url, client)
            await asyncio.gather(*(call() for _ in range(calls)))  # warm: the pool holds `calls` connections
            prof = cProfile.Profile()
            prof.enable()
            await asyncio.gather(*(call() for _ in range(calls)))
            prof.disable()
        finally:
            _fast(True)
            await aclose_clients()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats(sort).print_stats(top)
    return text.getvalue()


def _server() -> tuple[multiprocessing.Process, str]:
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=serve, args=(send,), daemon=True)
    proc.start()
    if not receive.poll(30):
        proc.kill()
        raise RuntimeError("the server did not start")
    return proc, f"http://127.0.0.1:{receive.recv()}/v1"


def render(results: dict[str, list[float]], calls: int, rounds: int) -> str:
    floor = statistics.median(results["httpx-raw"]) if "httpx-raw" in results else None
    rows = []
    for mode, values in results.items():
        med = statistics.median(values)
        per_chunk = med * 1000 / (TOKENS + 3)
        ratio = f"{med / floor:.2f}" if floor else ""
        rows.append(
            f"| {mode} | {med:.2f} | {min(values):.2f} | {max(values):.2f} | {per_chunk:.1f} | {ratio} |"
        )
    return "\n".join(
        [
            SECTION_START,
            "## Client CPU per streamed call",
            "",
            f"`bench/stream_cpu.py --calls {calls} --rounds {rounds} --docs`, "
            f"{time.strftime('%Y-%m-%d %H:%M')}, {machine()}. The machine was shared with other work.",
            "",
            f"{calls} concurrent calls of {TOKENS} tokens, one SSE chunk per token (plus the finish, usage and "
            "`[DONE]` chunks), from bench/load.py's loopback server in its own process; client process CPU "
            f"per call, median (min, max) of {rounds} interleaved rounds.",
            "",
            *(f"- `{mode}`: {MODES[mode]}" for mode in results),
            "",
            "| mode | CPU ms per call | min | max | us per chunk, all in | / httpx-raw |",
            "|---|---|---|---|---|---|",
            *rows,
            SECTION_END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="concurrent calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--profile", choices=list(MODES), help="one round of this mode under cProfile")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime", help="the profile's order (tottime, cumtime, ...)")
    parser.add_argument("--docs", action="store_true", help="write the section of docs/benchmarks.md")
    parser.add_argument(
        "--uvloop", action="store_true", help="run the client on uvloop's event loop (when installed)"
    )
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    run: Callable[[Any], Any] = asyncio.run
    if args.uvloop:
        import uvloop

        run = uvloop.run
    proc, base_url = _server()
    try:
        if args.profile:
            print(run(profile(base_url, args.profile, args.calls, args.top, args.sort)))
            return
        results = run(measure(base_url, modes, args.calls, args.rounds))
    finally:
        proc.kill()
        proc.join()
    print()
    for mode, values in results.items():
        print(f"{mode:18} median {statistics.median(values):7.2f} ms CPU per call  {values}")
    if args.docs:
        splice(DOC, render(results, args.calls, args.rounds), SECTION_START, SECTION_END, "Benchmarks")
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
