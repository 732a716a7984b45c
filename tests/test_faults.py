"""The fault matrix's regression cells (`bench/faults.py` runs all of them and writes docs/reliability.md).

One cell per fault class, and the cells that found bugs: a tool run in process traced twice; an MCP server's
HTTP 429 taken for a stop (its tools given up for the process after two); a full disk under the checkpointer
or the trace store failing with an unexplained `OperationalError` (or a raw exception out of `arun`), the
ledger dropping the rows it could not write, and reading a full trace store raising. Real components, as in
the bench: loopback OpenAI-compatible servers, an MCP server over streamable HTTP behind a fault-injecting
proxy, `orch run` in a child process for the kill, a small tmpfs for the full disks (skipped where it can't
be mounted).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.faults import (
    MATCH,
    PIPELINE_INPUT,
    POLISHED,
    Bench,
    Fault,
    audit,
    fill,
    free,
    http_cell,
    judge_http,
    judge_kill,
    kill_cell,
    run_once,
    settings_for,
    small_disk,
    write_project,
)
from orchestrator import Limits, Orchestrator, Settings, SlotConfig
from orchestrator.providers.http import aclose_clients
from orchestrator.testing import ScriptedChatModel
from orchestrator.tracing.store import TraceStore, TraceStoreError
from support import PRICES, TOOLS


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    """The MCP toolbox over streamable HTTP (one server for the module); each cell gets its own proxy,
    model server and stores."""
    b = Bench(tmp_path_factory.mktemp("faults"))
    yield b
    b.close()


# --- one cell per fault class ------------------------------------------------------------------------------
async def test_an_mcp_429_is_a_refusal_and_the_server_stays_in_use(bench: Bench) -> None:
    """429 + Retry-After at the tool, on every call: each call is an error observation naming the status,
    the part fails, the run ends `ok`. It used to read as "MCP server stopped during the call; it was
    restarted", and the second 429 gave the server's tools up for the rest of the process."""
    with bench.cell() as (folder, models, proxy):
        proxy.fault = Fault("429", MATCH["tool"], times=None)
        hard = await run_once(folder, models, proxy, "agent")
        proxy.heal()
        again = await run_once(folder, models, proxy, "agent")  # a new run in the same process
    assert hard.status == "ok" and "could not be done" in (hard.answer or ""), hard.answer
    assert "card_arrival" in (hard.answer or "")  # the worker's result is kept
    refused = "refused the call to 'days_between' (HTTP 429 Too Many Requests, Retry-After 1)"
    assert len(hard.tool_errors) == 2 and all(refused in e for e in hard.tool_errors), hard.tool_errors
    assert hard.unavailable == [] and hard.records_complete and hard.repeated == 0
    assert again.status == "ok" and again.kept and again.tool_errors == []  # the server is still used


@pytest.mark.parametrize(
    ("fault", "said"), [("malformed", "could not be read: ValidationError"), ("cut", "its stream broke")]
)
async def test_an_mcp_reply_that_breaks_fails_its_call_at_once(bench: Bench, fault: str, said: str) -> None:
    """The MCP SDK logs a reply stream that is cut, or that carries a message it can't parse, and never
    answers the request: the call waited out `tool_timeout_s` and read as a timeout. Now the request's
    own reply stream is watched, and the call fails when it ends, saying why."""
    with bench.cell() as (folder, models, proxy):
        proxy.fault = Fault(fault, MATCH["tool"], times=None)
        hard = await run_once(folder, models, proxy, "agent")
    assert hard.status == "ok" and "card_arrival" in (hard.answer or "")  # the part fails, the run goes on
    assert hard.tool_errors and all(
        "no reply to request" in e and said in e and "timed out" not in e for e in hard.tool_errors
    ), hard.tool_errors


async def test_a_5xx_at_the_worker_fails_clearly_then_resumes_without_paying_twice(bench: Bench) -> None:
    runs = await http_cell(bench, "5xx", "worker")
    row = judge_http("5xx", "worker", runs)
    assert row.verdict == "pass", row.problems
    assert runs.hard is not None and runs.resumed is not None
    assert "node 'worker' of graph 'agent'" in (runs.hard.error or "")
    assert "failed after 3 attempts: HTTP 503" in (runs.hard.error or "")
    assert runs.resumed.tool_runs == 1  # the tool's result was checkpointed: not run again


async def test_a_stall_at_a_user_graph_node_is_retried_and_billed(bench: Bench) -> None:
    runs = await http_cell(bench, "stall", "user-node", every=False)
    assert judge_http("stall", "user-node", runs).verdict == "pass"
    assert runs.once.ledger_calls == 3  # draft, the stalled attempt (its first token was billed), the retry


async def test_a_stream_cut_at_the_controller_fails_clearly_then_resumes(bench: Bench) -> None:
    runs = await http_cell(bench, "cut", "controller")
    assert judge_http("cut", "controller", runs).verdict == "pass"
    assert runs.hard is not None and "stream dropped after output began" in (runs.hard.error or "")


async def test_a_malformed_chunk_at_a_user_graph_node_fails_clearly_then_resumes(bench: Bench) -> None:
    runs = await http_cell(bench, "malformed", "user-node")
    assert judge_http("malformed", "user-node", runs).verdict == "pass"
    assert runs.hard is not None and "node 'polish' of graph 'pipeline'" in (runs.hard.error or "")
    assert "malformed JSON in stream chunk" in (runs.hard.error or "")
    assert runs.once.ledger_calls == 3  # draft, the broken attempt (billed: tokens went out), the retry


def test_a_run_killed_at_the_worker_resumes_without_paying_twice(bench: Bench) -> None:
    killed = kill_cell(bench, "worker", cli_resume=False)  # the kill in a child process, the resume here
    row = judge_kill("worker", killed)
    assert row.verdict == "pass", row.problems
    assert killed.row_status == "interrupted"


async def test_a_full_checkpoint_disk_fails_clearly_and_the_resume_pays_nothing_twice(bench: Bench) -> None:
    """The disk fills while `polish` calls its model. It was `unexpected OperationalError`, not resumable;
    then a clear failure, but the ledger row and `polish`'s result could not be written, so the resume
    paid for `polish` again. Now the reserve beside the file takes the step in flight: the run fails
    saying so, and the resume in the same process (a service) pays for nothing twice."""
    with bench.cell() as (folder, models, proxy), small_disk(folder / "disk") as disk:
        if disk is None:
            pytest.skip("a tmpfs can't be mounted here (it needs root)")
        settings = settings_for(folder, checkpoints=disk / "ckpt.db")
        models.fault = Fault("pass", MATCH["user-node"], hook=lambda: fill(disk))
        orch = Orchestrator.from_project(write_project(folder / "proj", models, proxy.url), settings=settings)
        reserve = disk / "ckpt.db.reserve"
        try:
            first = await orch.arun("pipeline", PIPELINE_INPUT, run_id="full")
            assert first.status == "failed" and first.resumable, first.error
            error = first.error or ""
            assert "the checkpoint store" in error and "out of disk space" in error and "resume" in error
            assert not reserve.exists()  # spent on the step in flight
            with pytest.raises(TraceStoreError, match=r"its disk is full .*; free space on it"):
                await orch.arun("pipeline", PIPELINE_INPUT, run_id="too-soon")  # still no room
            assert orch.book.entries("too-soon") == []  # refused before anything was spent
            free(disk)
            again = await orch.arun("pipeline", None, run_id="full", resume=True)
            assert reserve.exists()  # made again once there was room
        finally:
            await aclose_clients()
            orch.close()
        a = audit(again, "pipeline", models, proxy, settings)
    assert a.status == "ok" and a.answer == POLISHED
    assert a.ledger_calls == a.billable == 2 and a.repeated == 0  # draft, polish: each paid once


async def test_a_full_trace_disk_fails_clearly_then_resumes(bench: Bench) -> None:
    """The trace store's disk fills while `polish` calls its model: `arun` raised a bare sqlite3
    `OperationalError` when it recorded the run's end, and reading the store raised too. Now the run
    fails saying so, resumable; the resume records its end, totals from the complete ledger."""
    with bench.cell() as (folder, models, proxy), small_disk(folder / "disk") as disk:
        if disk is None:
            pytest.skip("a tmpfs can't be mounted here (it needs root)")
        settings = settings_for(folder, traces=disk / "traces.db")
        models.fault = Fault("pass", MATCH["user-node"], hook=lambda: fill(disk))
        root = write_project(folder / "proj", models, proxy.url)
        orch = Orchestrator.from_project(root, settings=settings)
        try:
            first = await orch.arun("pipeline", PIPELINE_INPUT, run_id="full")
        finally:
            await aclose_clients()
            orch.close()
        assert first.status == "failed" and first.resumable, first.error
        assert "trace store" in (first.error or "") and "its disk is full" in (first.error or "")
        store = TraceStore(settings.traces_path)
        try:
            assert store.list_runs()[0]["run_id"] == "full"  # reading a full store works
        finally:
            store.close()
        free(disk)
        orch = Orchestrator.from_project(root, settings=settings)
        try:
            again = await orch.arun("pipeline", None, run_id="full", resume=True)
        finally:
            await aclose_clients()
            orch.close()
        a = audit(again, "pipeline", models, proxy, settings)
        store = TraceStore(settings.traces_path)
        try:
            row = store.get_run("full")
        finally:
            store.close()
    assert a.status == "ok" and a.answer == POLISHED and a.run_row == "ok"
    assert a.ledger_calls == a.billable == 2 and a.repeated == 0  # nothing paid twice
    assert a.costs_agree  # every span stored: those of the call in flight went into the reserve
    assert row is not None and row["cost_usd"] == pytest.approx(a.ledger_usd)  # the totals: from the ledger


# --- the other bugs the matrix found ------------------------------------------------------------------------
async def test_a_tool_run_in_process_is_traced_once(tmp_path: Path) -> None:
    """The agent's call_tool node traces each call (a span, a ledger entry); a tool run in process (an MCP
    tool, or any tool with isolate_tools off) was traced a second time by the graph tracer."""
    steps = [
        {"plan": [{"tool": "days between 2026-03-02 and 2026-03-20"}]},
        {"action": "call_tool", "tool": "date_diff", "args": {"start": "2026-03-02", "end": "2026-03-20"}},
        {"action": "final", "answer": "18 days"},
    ]
    orch = Orchestrator(
        settings=Settings(
            traces_path=tmp_path / "t.db", checkpoints_path=tmp_path / "c.db", models_dir=tmp_path / "m"
        ),
        slots={"controller": SlotConfig(model="python:scripted", role="racehorse", prices=PRICES)},
        models={"controller": ScriptedChatModel(replies=[json.dumps(s) for s in steps], by_turn=True)},
        tools=TOOLS,
        graphs={"agent": "orchestrator.graph:build_agent_graph"},
        limits=Limits(isolate_tools=False),
    )
    result = await orch.arun("agent", "How many days from 2026-03-02 to 2026-03-20?")
    assert result.status == "ok" and result.answer == "18 days"
    tools = [e for e in orch.book.entries(result.run_id) if e["kind"] == "tool"]
    assert [(e["node"], e["name"]) for e in tools] == [("call_tool", "date_diff")]
    orch.tracing.flush()
    assert orch.store is not None
    spans = [s for s in orch.store.run_spans(result.run_id) if s["kind"] == "tool"]
    assert [(s["name"], s["node"]) for s in spans] == [("execute_tool date_diff", "call_tool")]
    orch.close()


def test_the_cli_shows_an_mcp_sdk_error_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed MCP reply: the SDK logs it with its traceback; with no handler, Python's last-resort
    handler printed the whole traceback in the middle of `orch run`."""
    from orchestrator import cli

    loggers = [logging.getLogger("orchestrator"), logging.getLogger("mcp")]
    before = [(list(lg.handlers), lg.level) for lg in loggers]
    cli._show_library_logs()
    try:
        raise ValueError("Invalid JSON: EOF while parsing an object")
    except ValueError:
        logging.getLogger("mcp.client.streamable_http").exception("Error parsing SSE message")
    finally:
        for lg, (handlers, level) in zip(loggers, before, strict=True):
            lg.handlers[:] = handlers
            lg.setLevel(level)
    printed = capsys.readouterr().err
    assert "[mcp.client.streamable_http] Error parsing SSE message" in printed
    assert "Traceback" not in printed
