"""One process of a test fleet: calls one model through the real provider path under the fleet limits.

    python tests/fleet_client.py PG_URL BASE_URL --cap 4 --calls 20 [--ttl 30] [--tag a] [--go] [--hang]

Installs `use_fleet_limits(PG_URL)`, builds the `openai-compat` chat model at BASE_URL with `max_concurrency`
CAP, and makes CALLS calls at once, each a message naming TAG and its number. With --go, it prints "ready"
and waits for a line on stdin first. It prints one JSON line: the replies that came back, the errors, and
the limiter's `stats`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from langchain_core.messages import HumanMessage

from orchestrator.providers.fleet_limits import use_fleet_limits
from orchestrator.providers.http import aclose_clients
from orchestrator.providers.openai import OpenAIChatModel


async def main(args: argparse.Namespace) -> dict[str, object]:
    model = OpenAIChatModel(
        model="m",
        model_name="openai-compat:m",
        base_url=args.base_url,
        max_concurrency=args.cap,
        max_retries=args.retries,
        backoff_base_s=0.1,
        backoff_max_s=0.2,
        read_timeout_s=120.0,
    )
    limits = use_fleet_limits(args.pg_url, ttl_s=args.ttl)
    assert limits is not None
    if args.go:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)

    async def call(n: int) -> str:
        reply = await model.complete([HumanMessage(f"{args.tag} {n}")])
        return reply.draft.text

    results = await asyncio.gather(*(call(n) for n in range(args.calls)), return_exceptions=True)
    await aclose_clients()
    await limits.aclose_loop()
    use_fleet_limits(None)
    return {
        "tag": args.tag,
        "replies": [r for r in results if isinstance(r, str)],
        "errors": [repr(r) for r in results if isinstance(r, BaseException)],
        "stats": limits.stats,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("pg_url")
    parser.add_argument("base_url")
    parser.add_argument("--cap", type=int, default=4)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--ttl", type=float, default=30.0)
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--tag", default="a")
    parser.add_argument("--go", action="store_true")
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
