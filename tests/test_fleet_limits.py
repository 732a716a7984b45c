"""One limit per model across a fleet (`providers/fleet_limits.py`), with real processes, a real PostgreSQL
and a real loopback API server that counts the requests it has in flight.

Each test starts client processes (`fleet_client.py`) that call one `openai-compat` model through the real
provider path with the fleet limits installed; the server's own count is the judge.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from loopback import Loopback, Reply, Request
from wire import openai_stream, openai_usage

from orchestrator.errors import ConfigError
from orchestrator.providers.fleet_limits import FleetLimits, use_fleet_limits
from orchestrator.providers.http import model_state, reset_model_states

HERE = Path(__file__).parent
CLIENT = HERE / "fleet_client.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}


def _tag(request: Request) -> str:
    return str(request.json()["messages"][-1]["content"])


def _answer(delay: float = 0.05, hang: str | None = None) -> Callable[[Request], Reply]:
    """Every request answered after `delay` (a request whose message starts with `hang`: after 60 s)."""

    def answer(request: Request) -> Reply:
        wait = 60.0 if hang is not None and _tag(request).startswith(hang) else delay
        return openai_stream(["ok ", _tag(request)], openai_usage(5, 2), delay=wait)

    return answer


@pytest.fixture
def server() -> Iterator[Loopback]:
    with Loopback() as lb:
        yield lb


def _start(pg_url: str, server: Loopback, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CLIENT), pg_url, server.url + "/v1", *args],
        env=ENV,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _result(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, object]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.02)


def test_three_processes_never_pass_the_models_cap_together(pg_url: str, server: Loopback) -> None:
    """3 processes x 20 calls at once, each process allowed 4: the server never has more than 4 in flight
    (without the fleet limits it has up to 12), and every call is served once."""
    server.handle("/v1/chat/completions", _answer(delay=0.05))
    procs = [_start(pg_url, server, "--cap", "4", "--calls", "20", "--tag", t) for t in "abc"]
    results = [_result(p) for p in procs]
    for r in results:
        assert r["errors"] == [] and len(r["replies"]) == 20  # type: ignore[arg-type]
    tags = sorted(_tag(q) for q in server.requests)
    assert tags == sorted(f"{t} {n}" for t in "abc" for n in range(20))  # each call served, once
    assert 2 <= server.max_in_flight <= 4, server.max_in_flight
    # waiting does not spin: each slot given back wakes each process for one request at most, and the backoff
    # polls at most once a second (measured: some 100 requests for the 60 slots)
    tries = sum(r["stats"]["tries"] for r in results)  # type: ignore[index]
    assert sum(r["stats"]["granted"] for r in results) == 60  # type: ignore[index]
    assert tries < 60 * 4, tries


def test_a_429_with_retry_after_holds_back_the_other_processes(pg_url: str, server: Loopback) -> None:
    """Process a gets a 429 with Retry-After: 1; processes b and c, started right after it, send nothing
    before that second has passed (the server's clock), then are served."""
    limited: list[float] = []

    def answer(request: Request) -> Reply:
        if not limited:
            limited.append(time.monotonic())
            return Reply(status=429, headers={"retry-after": "1"}, body={"error": {"message": "slow down"}})
        return _answer(delay=0.01)(request)

    server.handle("/v1/chat/completions", answer)
    others = [_start(pg_url, server, "--cap", "8", "--calls", "3", "--tag", t, "--go") for t in "bc"]
    for p in others:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    first = _start(pg_url, server, "--cap", "8", "--calls", "1", "--tag", "a")
    _wait_for(lambda: bool(limited), 60, "the 429")

    def blocked() -> bool:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            query = "select count(*) from orch_fleet_models where blocked_until > '-infinity'"
            row = conn.execute(query).fetchone()
        return bool(row and row[0])

    _wait_for(blocked, 60, "the block recorded in the database")  # without the fleet limits, never
    for p in others:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [_result(p) for p in [first, *others]]
    assert all(r["errors"] == [] for r in results), results
    later = [q.at - limited[0] for q in server.requests if not _tag(q).startswith("a")]
    assert len(later) == 6
    assert min(later) >= 0.95, sorted(later)  # the block ends 1 s after the 429 left the server, or later


def test_a_process_killed_holding_slots_gives_them_back_after_the_ttl(pg_url: str, server: Loopback) -> None:
    """Process k holds both slots of a cap of 2 (its requests hang) and is killed with SIGKILL. Process m then
    gets both slots: not before k's heartbeat is a TTL (2 s) old, and not never."""
    server.handle("/v1/chat/completions", _answer(delay=0.01, hang="k"))
    killed = _start(pg_url, server, "--cap", "2", "--calls", "2", "--tag", "k", "--ttl", "2")
    _wait_for(lambda: server.in_flight == 2, 60, "k's two requests")
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=10)
    assert killed.returncode == -signal.SIGKILL
    gone = time.monotonic()
    after = _result(_start(pg_url, server, "--cap", "2", "--calls", "4", "--tag", "m", "--ttl", "2"), 60)
    assert after["errors"] == [] and len(after["replies"]) == 4  # type: ignore[arg-type]
    first = min(q.at for q in server.requests if _tag(q).startswith("m"))
    # k's last beat came at most ttl/5 before its death: its slots are free 1.6 s after it, at the earliest
    assert first - gone >= 1.5, first - gone


def test_a_clean_close_frees_the_slots_at_once(pg_url: str) -> None:
    """`close()` deletes the owner row: a slot it held is free for the next process without the TTL."""
    import asyncio

    reset_model_states()
    state = model_state("http://127.0.0.1:9/v1", "m", 1)

    async def take(limits: FleetLimits) -> None:
        await limits.acquire(state)
        await limits.aclose_loop()

    first = FleetLimits(pg_url, ttl_s=600)
    asyncio.run(take(first))
    first.close()
    second = FleetLimits(pg_url, ttl_s=600)
    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(take(second), 30))
    assert time.monotonic() - t0 < 5
    second.close()


def test_connections_the_server_ends_are_opened_again(pg_url: str) -> None:
    """The server ends every session of the limiter (a restart, a fail-over): the next slot is taken on a new
    connection, and the heartbeat goes on on a new one."""
    import asyncio

    reset_model_states()
    state = model_state("http://127.0.0.1:9/v1", "m", 2)
    limits = FleetLimits(pg_url, ttl_s=5)

    def beat() -> float:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute(
                "select extract(epoch from beat) from orch_fleet_owners where owner = %s", (limits.owner,)
            ).fetchone()
        assert row is not None
        return float(row[0])

    async def cycle() -> None:
        await limits.acquire(state)
        await limits.release(state)

    async def main() -> None:
        await cycle()
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname = current_database() and pid <> pg_backend_pid()"
            )
        before = beat()
        await asyncio.wait_for(cycle(), 30)
        deadline = time.monotonic() + 30
        while beat() <= before:  # a beat every ttl/5 = 1 s, on a new connection
            assert time.monotonic() < deadline, "no heartbeat after the connection was ended"
            await asyncio.sleep(0.1)
        await limits.aclose_loop()

    try:
        asyncio.run(main())
    finally:
        limits.close()


def test_a_call_stopped_at_its_deadline_gives_its_fleet_slot_back(pg_url: str, server: Loopback) -> None:
    """A call cut at its deadline (its request cancelled) gives its slot back: with a cap of 1, the next call
    goes at once, and the database shows no slot held."""
    import asyncio

    from langchain_core.messages import HumanMessage

    from orchestrator.providers.http import aclose_clients
    from orchestrator.providers.openai import OpenAIChatModel

    server.handle("/v1/chat/completions", _answer(delay=0.01, hang="slow"))
    reset_model_states()
    model = OpenAIChatModel(
        model="m", model_name="openai-compat:m", base_url=server.url + "/v1", max_concurrency=1, max_retries=0
    )
    limits = use_fleet_limits(pg_url, ttl_s=600)  # a slot lost would stay lost for the test's length
    assert limits is not None

    async def main() -> None:
        cut = await model.complete([HumanMessage("slow")], deadline=time.monotonic() + 0.5)
        assert cut.draft.finish_reason == "deadline"
        reply = await asyncio.wait_for(model.complete([HumanMessage("fast")]), 20)
        assert reply.draft.text == "ok fast"
        await aclose_clients()
        await limits.aclose_loop()

    try:
        asyncio.run(main())
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute("select count(*) from orch_fleet_slots where owner is not null").fetchone()
        assert row == (0,)
    finally:
        use_fleet_limits(None)
        reset_model_states()


def test_bad_settings_name_the_value_and_the_fix() -> None:
    with pytest.raises(ValueError, match=r"FleetLimits\(ttl_s=0\): give a number of seconds, 1 or more"):
        FleetLimits("postgresql://nobody@127.0.0.1:1/x", ttl_s=0)
    with pytest.raises(ConfigError, match=r"fleet limits 'postgresql://u:\*\*\*@127.0.0.1:1/x': cannot use"):
        use_fleet_limits("postgresql://u:secret@127.0.0.1:1/x")
