"""One budget across a fleet (`cost/pg_budget.py`): `PostgresBudget` on a real PostgreSQL, drawn from by real
processes. The budget property of `test_properties.py` (spend never passes the cap) holds across processes,
and a reservation of a process killed with SIGKILL counts as spent until `release_owner` lets it go.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_properties import PRICE, TOKEN_CAP, USD_CAP, Call, calls

from orchestrator.cost.ledger import Budget, BudgetMeter
from orchestrator.cost.pg_budget import PostgresBudget
from orchestrator.cost.pricing import Prices, Usage, cost_usd
from orchestrator.errors import ConfigError

HERE = Path(__file__).parent
CLIENT = HERE / "budget_client.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
ACROSS = settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CLIENT), *args],
        env=ENV,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    try:  # closes stdin: a serving process ends at its end
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


@pytest.fixture
def workers(pg_url: str) -> Iterator[list[subprocess.Popen[str]]]:
    """3 processes, each serving budget jobs from its stdin, for every example of a test."""
    procs = [_start(pg_url, "serve") for _ in range(3)]
    yield procs
    for p in procs:
        _stop(p)


def _job(name: str, usd: float | None, tokens: int | None, prices: Prices, script: list[Call]) -> str:
    rows = [
        [
            c.worst_in + c.max_tokens,
            c.worst_usd(prices),
            c.used_in,
            c.used_out,
            cost_usd(Usage(c.used_in, c.used_out), prices) if c.priced else None,
        ]
        for c in script
    ]
    return json.dumps({"name": name, "usd": usd, "tokens": tokens, "threads": 4, "calls": rows}) + "\n"


@ACROSS
@given(
    pool_usd=USD_CAP,
    pool_tokens=TOKEN_CAP,
    prices=PRICE,
    scripts=st.lists(st.lists(calls(), min_size=1, max_size=12), min_size=3, max_size=3),
)
def test_processes_racing_for_one_budget_never_overspend(
    workers: list[subprocess.Popen[str]],
    pg_url: str,
    pool_usd: float | None,
    pool_tokens: int | None,
    prices: Prices,
    scripts: list[list[Call]],
) -> None:
    """3 processes, each making its calls on 4 threads at once, draw from one PostgresBudget: what was
    charged never passes the cap, equals what the processes say they were charged, and nothing stays held."""
    name = f"b{uuid.uuid4().hex[:8]}"
    for proc, script in zip(workers, scripts, strict=True):
        assert proc.stdin is not None
        proc.stdin.write(_job(name, pool_usd, pool_tokens, prices, script))
        proc.stdin.flush()
    answers = []
    for proc in workers:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, _stop(proc)[-3000:]
        answers.append(json.loads(line))
    pool = PostgresBudget(pg_url, name, pool_usd, pool_tokens)
    try:
        spent_tokens, spent_usd = pool.spent_tokens, pool.spent_usd
        assert pool_tokens is None or spent_tokens <= pool_tokens
        assert pool_usd is None or spent_usd <= pool_usd + 1e-12 * max(1.0, pool_usd)
        assert spent_tokens == sum(a["tokens"] for a in answers)
        assert abs(spent_usd - sum(a["usd"] for a in answers)) <= 1e-9
        held_tokens, held_usd = pool.held()
        assert held_tokens == 0 and abs(held_usd) < 1e-12 and pool.owners() == {}
        if pool_tokens is None and pool_usd is None:  # no cap: every call was made
            assert sum(a["made"] for a in answers) == sum(len(s) for s in scripts)
    finally:
        pool.close()


def test_a_killed_processs_reservation_counts_until_release_owner(pg_url: str) -> None:
    holder = _start(pg_url, "hold", "daily", "1000", "600")
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line, _stop(holder)[-3000:]
        said = json.loads(line)
        assert said["refused"] is None
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=10)
        assert holder.returncode == -signal.SIGKILL
    finally:
        _stop(holder)
    pool = PostgresBudget(pg_url, "daily", tokens=1000)
    try:
        # the dead process's 600 tokens are still held: 500 more would pass the cap
        assert pool.reserve(500, None) == "daily token budget: 0 spent + 600 reserved + 500 worst case > 1000"
        assert pool.owners() == {said["owner"]: 1}
        assert pool.release_owner(said["owner"]) == 1
        assert pool.reserve(500, None) is None and pool.held() == (500, 0.0)
        pool.release(500, None)
        assert pool.held() == (0, 0.0) and pool.owners() == {}
    finally:
        pool.close()


def test_it_is_a_shared_budget_for_the_meter(pg_url: str) -> None:
    """`Budget(shared=PostgresBudget(...))`: the meter reserves, charges and releases through it, `left`
    reads what is left from the database, and `reset` starts a new period for every process."""
    one = PostgresBudget(pg_url, "daily", usd=1.0)
    other = PostgresBudget(pg_url, "daily", usd=1.0)  # another process, as far as the database knows
    try:
        meter = BudgetMeter(Budget(shared=one))
        with meter.hold(100, 0.25) as refused:
            assert refused is None
            assert other.held() == (100, 0.25)
            meter.add(
                {
                    "node": "n",
                    "kind": "model",
                    "name": "m",
                    "role": None,
                    "input_tokens": 60,
                    "output_tokens": 20,
                    "cost_usd": 0.2,
                    "wall_ms": 1.0,
                    "ttft_ms": None,
                    "compute_ms": None,
                }
            )
        assert (other.spent_tokens, other.spent_usd, other.held()) == (80, 0.2, (0, 0.0))
        assert meter.left() == ["$0.8000 of the shared budget"]
        assert other.reserve(1, 0.81) == (
            "daily cost budget: $0.200000 spent + $0.000000 reserved + $0.810000 worst case > $1"
        )
        other.reset()
        assert (one.spent_tokens, one.spent_usd) == (0, 0.0)
        assert other.reserve(1, 0.81) is None
        other.release(1, 0.81)
    finally:
        one.close()
        other.close()


def test_other_caps_for_the_same_name_are_refused_with_the_fix(pg_url: str) -> None:
    first = PostgresBudget(pg_url, "daily", usd=5.0)
    try:
        refused = r"'daily' in .* has usd=5.0, tokens=None in the database, not usd=6.0, tokens=None: give"
        with pytest.raises(ConfigError, match=refused):
            PostgresBudget(pg_url, "daily", usd=6.0)
        first.set_caps(usd=6.0, tokens=None)
        PostgresBudget(pg_url, "daily", usd=6.0).close()
    finally:
        first.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"usd": -1.0}, r"PostgresBudget\(usd=-1.0\): give a finite number, 0 or more, or None for no limit"),
        ({"tokens": 1.5}, r"PostgresBudget\(tokens=1.5\): give a whole number, 0 or more, or None"),
        ({"name": ""}, r"PostgresBudget\(name=''\): give a non-empty name"),
    ],
)
def test_bad_values_name_themselves_and_the_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PostgresBudget("postgresql://u:secret@127.0.0.1:1/x", **kwargs)  # type: ignore[arg-type]


def test_an_unreachable_database_is_named_without_its_password() -> None:
    with pytest.raises(
        ConfigError, match=r"budget 'daily': cannot use PostgreSQL at 'postgresql://u:\*\*\*@"
    ):
        PostgresBudget("postgresql://u:secret@127.0.0.1:1/x", "daily", usd=1.0)


def test_the_tables_are_in_the_database(pg_url: str) -> None:
    PostgresBudget(pg_url, "daily").close()
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("select name, usd, tokens from orch_budgets").fetchone()
    assert row == ("daily", None, None)


def test_a_dropped_connection_is_opened_again(pg_url: str) -> None:
    """The server ends the budget's session (a restart, a fail-over, an idle timeout): the next call opens
    a new one and goes through."""
    pool = PostgresBudget(pg_url, "daily", tokens=1000)
    try:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", (pool._conn.info.backend_pid,))
        assert pool.reserve(300, None) is None
        assert pool.held() == (300, 0.0)
        pool.release(300, None)
        assert pool.held() == (0, 0.0)
    finally:
        pool.close()
