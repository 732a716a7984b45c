"""Checkpoints anywhere: the `checkpoints` setting's forms, any LangGraph checkpointer, and a real PostgreSQL.

The PostgreSQL tests start a throwaway server on 127.0.0.1 (initdb + pg_ctl from the machine's PostgreSQL,
run as an unprivileged user when the tests run as root, since the server refuses to run as root); they skip
only where those binaries are missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver
from loopback import Loopback, Reply
from wire import anthropic_stream, anthropic_usage, error_body, openai_stream, openai_usage

from orchestrator import ConfigError, Orchestrator, Settings, SlotConfig, load_manifest
from orchestrator.config import PriceOverride
from orchestrator.cost.ledger import LedgerEntry
from orchestrator.errors import RunOwnedError
from orchestrator.providers.http import aclose_clients, reset_model_states
from orchestrator.run.checkpoints import Checkpoints

TWO_SLOTS = "usergraphs.two_slots:build"
OPENAI_PRICE = PriceOverride(input=1e-6, output=4e-6)
ANTHROPIC_PRICE = PriceOverride(input=3e-6, output=15e-6)
SUMMARIZE_COST = 120 * 1e-6 + 8 * 4e-6


@pytest.fixture(autouse=True)
async def _clean() -> AsyncIterator[None]:
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the setting's forms ---------------------------------------------------------------------------------
def test_checkpoints_take_a_path_a_sqlite_url_or_a_postgresql_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings(checkpoints_path="c.db").checkpoints_path == Path("c.db")  # a bare path is SQLite
    assert Settings(checkpoints_path="sqlite:///state/c.db").checkpoints_path == Path("state/c.db")
    assert Settings(checkpoints_path="sqlite:////var/c.db").checkpoints_path == Path("/var/c.db")
    url = "postgresql://orch:pw@db.internal:5433/orch"
    assert Settings(checkpoints_path=url).checkpoints_path == url
    monkeypatch.setenv("ORCH_CHECKPOINTS", "postgres://orch@db.internal/orch")
    assert Settings.resolve().checkpoints_path == "postgres://orch@db.internal/orch"
    monkeypatch.delenv("ORCH_CHECKPOINTS")
    (tmp_path / "pyproject.toml").write_text('[tool.orchestrator]\ncheckpoints = "sqlite:///state/c.db"\n')
    manifest = load_manifest(tmp_path)
    assert Settings.resolve(manifest).checkpoints_path == tmp_path.resolve() / "state" / "c.db"
    (tmp_path / "pyproject.toml").write_text(f'[tool.orchestrator]\ncheckpoints = "{url}"\n')
    assert Settings.resolve(load_manifest(tmp_path)).checkpoints_path == url


def test_an_unknown_scheme_names_the_value_and_the_accepted_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_CHECKPOINTS", "mysql://orch:hunter2@db.internal/orch")
    with pytest.raises(ConfigError) as caught:
        Settings.resolve()
    message = str(caught.value)
    assert "ORCH_CHECKPOINTS" in message and "'mysql://orch:***@db.internal/orch'" in message
    assert "sqlite:///PATH" in message and "postgresql://" in message
    assert "hunter2" not in message
    with pytest.raises(ConfigError, match=r"sqlite:///PATH \(relative\)"):
        Settings(checkpoints_path="sqlite://host/c.db")


def test_postgresql_without_the_extra_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres.aio", None)
    settings = Settings(traces_path=tmp_path / "t.db", checkpoints_path="postgresql://orch@127.0.0.1/orch")
    with pytest.raises(ConfigError, match=r"pip install '[\w.-]+\[postgres\]'"):
        Orchestrator(settings=settings)


def test_a_server_that_refuses_is_one_line_naming_the_host(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    url = f"postgresql://orch:hunter2@127.0.0.1:{port}/orch"
    with pytest.raises(ConfigError) as caught:
        Orchestrator(settings=Settings(traces_path=tmp_path / "t.db", checkpoints_path=url))
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "\n" not in message and "hunter2" not in message
    # and through the CLI: one line, exit code 2 (a configuration error), no traceback
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        f'[tool.orchestrator]\ndefault_graph = "mine"\n[tool.orchestrator.graphs]\nmine = "{TWO_SLOTS}"\n'
    )
    env = {
        **os.environ,
        "ORCH_TRACES": str(tmp_path / "t.db"),
        "ORCH_CHECKPOINTS": url,
        "PYTHONPATH": str(Path(__file__).parent),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--project", str(project), "run", "mine", "hello"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "Traceback" not in proc.stderr, proc.stderr


# --- any checkpointer ------------------------------------------------------------------------------------
def _slots(server: Loopback) -> dict[str, SlotConfig]:
    return {
        "summarize": SlotConfig(
            model="openai-compat:small", base_url=server.url + "/v1", prices=OPENAI_PRICE, max_retries=0
        ),
        "write": SlotConfig(
            model="anthropic:claude-haiku-4-5", base_url=server.url, prices=ANTHROPIC_PRICE, max_retries=0
        ),
    }


def _summary() -> Reply:
    return openai_stream(["A card has not arrived."], openai_usage(120, 8))


def _reply() -> Reply:
    return anthropic_stream(["Sorry, we'll send a new card."], anthropic_usage(60, 12))


def _local(tmp_path: Path, machine: str, checkpoints: str | Path | None = None) -> Settings:
    """One machine's settings: its own trace store and state folder (and the checkpoints given)."""
    folder = tmp_path / machine
    return Settings(
        traces_path=folder / "traces.db", checkpoints_path=checkpoints or folder / "checkpoints.db"
    )


async def _fail_then_resume(
    loopback: Loopback, first: Orchestrator, second: Orchestrator, run_id: str
) -> None:
    """The reply node fails on the first orchestrator; the second resumes the run without summarizing again,
    and its ledger still holds what the first attempt paid."""
    loopback.route("/v1/chat/completions", _summary())
    loopback.route("/v1/messages", Reply(status=500, body=error_body("overloaded")))
    failed = await first.arun("mine", "My card never came.", run_id=run_id)
    assert failed.status == "failed" and "HTTP 500" in (failed.error or ""), failed.error
    assert [n.node for n in failed.ledger.by_node()] == ["summarize"]
    summaries = sum(r.path.startswith("/v1/chat") for r in loopback.requests)
    loopback.route("/v1/messages", _reply())
    resumed = await second.arun("mine", None, run_id=run_id, resume=True)
    assert resumed.status == "ok" and resumed.answer == "Sorry, we'll send a new card.", resumed.error
    assert sum(r.path.startswith("/v1/chat") for r in loopback.requests) == summaries  # not summarized again
    by_node = {n.node: n for n in resumed.ledger.by_node()}
    assert by_node["summarize"].cost_usd == pytest.approx(SUMMARIZE_COST)  # paid once, still on the books
    assert by_node["summarize"].calls == 1 and by_node["reply"].calls == 1


async def test_any_async_checkpointer_is_used_as_given(loopback: Loopback, tmp_path: Path) -> None:
    saver = InMemorySaver()
    settings = _local(tmp_path, "here")
    one = Orchestrator(
        settings=settings, slots=_slots(loopback), graphs={"mine": TWO_SLOTS}, checkpointer=saver
    )
    two = Orchestrator(
        settings=settings, slots=_slots(loopback), graphs={"mine": TWO_SLOTS}, checkpointer=saver
    )
    await _fail_then_resume(loopback, one, two, "mem-1")
    assert saver.get_tuple({"configurable": {"thread_id": "mem-1", "checkpoint_ns": ""}}) is not None
    # the saver's storage is not ours to reach: the ledger is where the setting points, a SQLite file
    assert isinstance(settings.checkpoints_path, Path)
    assert len(one.book.entries("mem-1")) == 2
    one.close()
    two.close()


def test_a_checkpointer_must_be_a_checkpointer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"must be a LangGraph checkpointer.*got dict"):
        Orchestrator(settings=_local(tmp_path, "here"), checkpointer={})  # type: ignore[arg-type]


def _rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


async def test_a_run_checkpoints_in_postgresql_and_resumes_on_another_machine(
    loopback: Loopback, pg_url: str, tmp_path: Path
) -> None:
    here = Orchestrator(
        settings=_local(tmp_path, "here", pg_url), slots=_slots(loopback), graphs={"mine": TWO_SLOTS}
    )
    loopback.route("/v1/chat/completions", _summary())
    loopback.route("/v1/messages", _reply())
    done = await here.arun("mine", "My card never came.", run_id="pg-ok")
    assert done.status == "ok" and done.answer == "Sorry, we'll send a new card.", done.error
    assert _rows(pg_url, "select count(*) from checkpoints where thread_id = %s", "pg-ok")[0][0] >= 3
    ledger = _rows(pg_url, "select entry from orch_ledger where run_id = %s order by seq", "pg-ok")
    assert [json.loads(r[0])["node"] for r in ledger] == ["summarize", "reply"]
    assert not list((tmp_path / "here").glob("checkpoints*"))  # no SQLite file on the side

    # another machine: its own trace store and folders, the same database
    there = Orchestrator(
        settings=_local(tmp_path, "there", pg_url), slots=_slots(loopback), graphs={"mine": TWO_SLOTS}
    )
    await _fail_then_resume(loopback, here, there, "pg-resume")
    kinds = [
        json.loads(r[0])["node"]
        for r in _rows(pg_url, "select entry from orch_ledger where run_id = %s", "pg-resume")
    ]
    assert kinds.count("summarize") == 1 and kinds.count("reply") == 1
    with pytest.raises(
        ConfigError, match=r"no checkpoint for run 'nope' in postgresql://postgres@127\.0\.0\.1"
    ):
        await there.arun("mine", None, run_id="nope", resume=True)
    here.close()
    there.close()


async def test_a_run_has_one_owner_among_the_machines_that_share_postgresql(
    loopback: Loopback, pg_url: str, tmp_path: Path
) -> None:
    """The run's lease is in the database beside its checkpoints: another machine's resume of a run in
    flight is refused before it spends anything; a lease whose heartbeat went stale is taken over."""
    here = Orchestrator(
        settings=_local(tmp_path, "here", pg_url), slots=_slots(loopback), graphs={"mine": TWO_SLOTS}
    )
    there = Orchestrator(
        settings=_local(tmp_path, "there", pg_url), slots=_slots(loopback), graphs={"mine": TWO_SLOTS}
    )
    gate = threading.Event()
    try:
        loopback.route("/v1/chat/completions", openai_stream(["A card."], openai_usage(120, 8), gate=gate))
        loopback.route("/v1/messages", _reply())
        running = asyncio.create_task(here.arun("mine", "My card never came.", run_id="pg-own"))
        while not loopback.requests:
            assert not running.done(), running.result()
            await asyncio.sleep(0.02)
        with pytest.raises(RunOwnedError, match=r"run 'pg-own' is already running \(host "):
            await there.arun("mine", None, run_id="pg-own", resume=True)
        assert len(loopback.requests) == 1
        gate.set()
        assert (await running).status == "ok"
        assert _rows(pg_url, "select count(*) from orch_leases")[0][0] == 0  # given back
    finally:
        gate.set()

    def held_by_worker_7(age_s: float) -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "insert into orch_leases values ('pg-other', 'worker-7', 4242, 1, %s, 'theirs') "
                "on conflict (run_id) do update set heartbeat = excluded.heartbeat",
                (time.time() - age_s,),
            )

    held_by_worker_7(5.0)
    with pytest.raises(RunOwnedError, match=r"\(host worker-7, pid 4242; its last heartbeat 5 s ago\)"):
        await there.arun("mine", "My card never came.", run_id="pg-other")
    held_by_worker_7(3600.0)  # that machine died an hour ago
    loopback.route("/v1/chat/completions", _summary())
    loopback.route("/v1/messages", _reply())
    taken = await there.arun("mine", "My card never came.", run_id="pg-other")
    assert taken.status == "ok", taken.error
    here.close()
    there.close()


async def test_a_sync_postgres_checkpointer_given_by_the_user_works_and_the_ledger_stays_local(
    loopback: Loopback, pg_url: str, tmp_path: Path
) -> None:
    with PostgresSaver.from_conn_string(pg_url) as saver:  # sync only: the run calls it from worker threads
        settings = _local(tmp_path, "here")
        kw: dict[str, Any] = {"slots": _slots(loopback), "graphs": {"mine": TWO_SLOTS}, "checkpointer": saver}
        one, two = Orchestrator(settings=settings, **kw), Orchestrator(settings=settings, **kw)
        await _fail_then_resume(loopback, one, two, "given-1")
        assert _rows(pg_url, "select count(*) from checkpoints where thread_id = %s", "given-1")[0][0] >= 3
        assert _rows(pg_url, "select to_regclass('orch_ledger')")[0][0] is None  # the saver's database only
        assert [e["node"] for e in two.book.entries("given-1")] == ["summarize", "reply"]
        one.close()
        two.close()


def _entry(node: str, cost: float) -> LedgerEntry:
    return LedgerEntry(
        node=node,
        kind="model",
        name="openai-compat:small",
        role="workhorse",
        input_tokens=10,
        output_tokens=2,
        cost_usd=cost,
        wall_ms=5.0,
        ttft_ms=1.0,
        compute_ms=None,
    )


def test_the_ledger_book_in_postgresql_is_shared_between_machines(pg_url: str) -> None:
    here, there = Checkpoints(pg_url).ledger(), Checkpoints(pg_url).ledger()
    for i in range(50):
        here.add("run-a", _entry(f"n{i}", i * 1e-6))
    there.add("run-b", _entry("other", 1.0))
    here.flush()
    there.flush()
    assert [e["node"] for e in there.entries("run-a")] == [f"n{i}" for i in range(50)]
    assert [e["node"] for e in here.entries("run-b")] == ["other"]
    here.close()
    there.close()
    here.close()  # closing twice is harmless


async def test_concurrent_runs_share_one_connection_pool_per_loop(pg_url: str) -> None:
    """A connection per run was the cost of a run in PostgreSQL (60 runs in flight held 60 connections,
    against a server's default `max_connections` of 100). The runs in flight on a loop share one pool."""
    from orchestrator.run import checkpoints

    application = f"pool-test-{os.getpid()}"
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}application_name={application}"
    store = Checkpoints(url)
    seen: list[int] = []
    gate = asyncio.Event()

    async def run(i: int) -> None:
        async with store.open() as saver:
            config: Any = {"configurable": {"thread_id": f"pool{i}", "checkpoint_ns": ""}}
            await gate.wait()  # all 60 in flight at once
            assert await saver.aget_tuple(config) is None

    def connections() -> int:
        query = "select count(*) from pg_stat_activity where application_name = %s"
        return int(_rows(pg_url, query, application)[0][0])

    runs = [asyncio.ensure_future(run(i)) for i in range(60)]
    await asyncio.sleep(0.5)
    seen.append(await asyncio.to_thread(connections))  # 60 runs in flight
    gate.set()
    await asyncio.gather(*runs)
    assert 1 <= seen[0] <= 8
    assert not checkpoints._pools.get(asyncio.get_running_loop())  # closed with the last run
    assert await asyncio.to_thread(connections) == 0
