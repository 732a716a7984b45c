"""One process drawing from a `PostgresBudget`, for the fleet budget tests.

    python tests/budget_client.py PG_URL serve    # one JSON job per stdin line, one JSON answer per job
    python tests/budget_client.py PG_URL hold NAME TOKENS_CAP TOKENS   # reserve once, say so, then sleep

A job is {"name", "usd", "tokens", "threads", "calls": [[worst_tokens, worst_usd, used_in, used_out,
used_usd], ...]}: the calls run on `threads` threads, each as `BudgetMeter.hold` runs it (reserve the worst
case, charge what was used, release), and the answer counts the calls made and what they were charged.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orchestrator.cost.ledger import Budget, BudgetMeter, LedgerEntry
from orchestrator.cost.pg_budget import PostgresBudget


def _call(pool: PostgresBudget, call: list[Any]) -> tuple[bool, int, float]:
    worst_tokens, worst_usd, used_in, used_out, used_usd = call
    meter = BudgetMeter(Budget(shared=pool))
    with meter.hold(worst_tokens, worst_usd) as refused:
        if refused is not None:
            return False, 0, 0.0
        time.sleep(0.001)  # the reservation is held while others reserve
        meter.add(
            LedgerEntry(
                node="n",
                kind="model",
                name="m",
                role=None,
                input_tokens=used_in,
                output_tokens=used_out,
                cost_usd=used_usd,
                wall_ms=0.0,
                ttft_ms=None,
                compute_ms=None,
            )
        )
    return True, used_in + used_out, used_usd or 0.0


def serve(url: str) -> None:
    pools: dict[str, PostgresBudget] = {}
    for line in sys.stdin:
        job = json.loads(line)
        pool = pools.get(job["name"])
        if pool is None:
            for old in pools.values():  # one connection each: a server allows some 100
                old.close()
            pools = {job["name"]: PostgresBudget(url, job["name"], job["usd"], job["tokens"])}
            pool = pools[job["name"]]
        with ThreadPoolExecutor(job["threads"]) as ex:
            done = list(ex.map(_call, [pool] * len(job["calls"]), job["calls"]))
        answer = {
            "made": sum(d[0] for d in done),
            "tokens": sum(d[1] for d in done),
            "usd": sum(d[2] for d in done),
        }
        print(json.dumps(answer), flush=True)


def hold(url: str, name: str, cap: int, tokens: int) -> None:
    pool = PostgresBudget(url, name, tokens=cap)
    print(json.dumps({"owner": pool.owner, "refused": pool.reserve(tokens, None)}), flush=True)
    time.sleep(600)


if __name__ == "__main__":
    if sys.argv[2] == "serve":
        serve(sys.argv[1])
    else:
        hold(sys.argv[1], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
