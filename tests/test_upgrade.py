"""Upgrades: a checkpoint file and a trace store written by orchestrator 0.1.0 still read and resume.

tests/fixtures/v0_1_0 holds the files 0.1.0 (commit a61856e) wrote for four runs, made by its
make_fixtures.py: the user graph of upgrade_graph.py and the bundled agent graph, each once finished and
once failed at its second model step. expected.json is what that version reported about them. Every test
works on copies in tmp_path: the fixture itself is never opened for writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.v0_1_0 import upgrade_graph as G
from loopback import Loopback
from wire import anthropic_stream, anthropic_usage, openai_stream, openai_usage

from orchestrator import Limits, Orchestrator, Settings
from orchestrator.cost.ledger import LedgerBook
from orchestrator.providers.http import aclose_clients, reset_model_states
from orchestrator.tracing.report import span_tree
from orchestrator.tracing.store import TraceStore

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v0_1_0"
FILES = ("checkpoints.db", "traces.db")
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())
RUNS: dict[str, dict[str, Any]] = EXPECTED["runs"]
NODE_FIELDS = ("node", "model", "role", "calls", "input_tokens", "output_tokens", "unpriced_calls")


@pytest.fixture(autouse=True)
async def _clean() -> AsyncIterator[None]:
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()


@pytest.fixture(autouse=True, scope="module")
def _fixture_untouched() -> Iterator[None]:
    """The fixture folder is the same after the tests as before them (no file changed, none added)."""

    def snapshot() -> dict[str, str]:
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(FIXTURE.iterdir())
            if p.is_file()
        }

    before = snapshot()
    yield
    assert snapshot() == before


@pytest.fixture
def old(tmp_path: Path) -> Settings:
    """Settings on copies of the 0.1.0 files."""
    for name in FILES:
        for suffix in ("-wal", "-journal"):
            assert not (FIXTURE / (name + suffix)).exists(), f"the fixture's {name} is not one whole file"
        shutil.copyfile(FIXTURE / name, tmp_path / name)
    return Settings(
        traces_path=tmp_path / "traces.db",
        checkpoints_path=tmp_path / "checkpoints.db",
        models_dir=tmp_path / "models",
    )


def orch_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`orch traces ...` of the current code, in a subprocess, on the copied store."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("ORCH_TRACES", "ORCH_CHECKPOINTS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "traces", *args, "--traces", str(settings.traces_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=settings.traces_path.parent,
        timeout=120,
    )


def _walk(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for span in spans:
        out.append(span)
        out.extend(_walk(span["children"]))
    return out


def _nodes(ledger: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in ledger["nodes"]}


def _same_node(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert {f: got[f] for f in NODE_FIELDS} == {f: want[f] for f in NODE_FIELDS}
    assert got["cost_usd"] == pytest.approx(want["cost_usd"])


def _same_totals(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Cost, unpriced calls and tokens of a ledger or a stored run row."""
    assert got["cost_usd"] == pytest.approx(want["cost_usd"])
    for key in ("unpriced_calls", "input_tokens", "output_tokens"):
        assert got[key] == want[key], key


def test_the_fixture_is_what_0_1_0_wrote() -> None:
    assert EXPECTED["commit"].startswith("a61856e") and EXPECTED["orchestrator_version"] == "0.1.0"
    assert set(RUNS) == {G.USER_OK, G.USER_FAILED, G.AGENT_OK, G.AGENT_FAILED}
    assert {r["result"]["status"] for r in RUNS.values()} == {"ok", "failed"}
    assert "orch_ledger" in EXPECTED["checkpoint_tables"]
    for name in FILES:
        assert (FIXTURE / name).stat().st_size < 1_000_000


def test_the_old_runs_read_back_through_the_cli(old: Settings) -> None:
    listed = orch_cli(old, "list", "--json", "--limit", "100")
    assert listed.returncode == 0, listed.stderr
    rows = {r["run_id"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == set(RUNS)
    for run_id, run in RUNS.items():
        row, want = rows[run_id], run["stored_run"]
        for key in ("graph", "status", "error", "version", "config_hash", "started_at", "ended_at"):
            assert row[key] == want[key], (run_id, key)
        _same_totals(row, want)
        assert row["status"] == run["result"]["status"]  # the store and the run's result agreed
        _same_totals(row, run["result"]["ledger"])


def test_each_old_runs_spans_read_back(old: Settings) -> None:
    store = TraceStore(old.traces_path)
    for run_id, run in RUNS.items():
        spans = _walk(span_tree(store, run_id))
        kinds: dict[str, int] = {}
        for span in spans:
            kinds[span["kind"]] = kinds.get(span["kind"], 0) + 1
        assert len(spans) == run["spans"]["total"], run_id
        assert kinds == run["spans"]["by_kind"], run_id
        nodes = [s["node"] for s in store.run_spans(run_id) if s["kind"] == "node"]
        assert nodes == run["spans"]["nodes"], run_id
        chats = [s for s in store.run_spans(run_id) if s["kind"] == "chat"]  # they agree with the ledger
        ledger = run["result"]["ledger"]
        assert sum(s["cost_usd"] or 0.0 for s in chats) == pytest.approx(ledger["cost_usd"])
        assert sum(s["input_tokens"] or 0 for s in chats) == ledger["input_tokens"]
        assert sum(s["output_tokens"] or 0 for s in chats) == ledger["output_tokens"]
    store.close()


def test_traces_top_by_node_on_the_old_store(old: Settings) -> None:
    top = orch_cli(old, "top", "--by", "node", "--json")
    assert top.returncode == 0, top.stderr
    got = json.loads(top.stdout)
    want = EXPECTED["traces_top_by_node"]
    assert [h["key"] for h in got] == [h["key"] for h in want]
    for have, was in zip(got, want, strict=True):
        for key in ("calls", "input_tokens", "output_tokens", "unpriced_calls", "errors"):
            assert have[key] == was[key], (have["key"], key)
        assert have["cost_usd"] == pytest.approx(was["cost_usd"])
        assert have["share"] == pytest.approx(was["share"])
    table = orch_cli(old, "top", "--by", "node")
    assert table.returncode == 0, table.stderr
    for hotspot in want:
        assert hotspot["key"] in table.stdout


def _ledger_rows(settings: Settings, run_id: str) -> int:
    book = LedgerBook(settings.checkpoints_path)
    try:
        return len(book.entries(run_id))
    finally:
        book.close()


async def test_the_finished_runs_checkpoints_read_back_without_a_call(
    loopback: Loopback, old: Settings
) -> None:
    user = Orchestrator(settings=old, slots=G.user_slots(loopback.url), graphs={G.USER_GRAPH: G.build})
    agent = Orchestrator(
        settings=old,
        slots=G.agent_slots(loopback.url),
        tools=G.TOOLS,
        graphs={G.AGENT_GRAPH: G.AGENT_REF},
        limits=Limits(max_steps=6),
    )
    for orch, run_id in ((user, G.USER_OK), (agent, G.AGENT_OK)):
        want = RUNS[run_id]["result"]
        assert _ledger_rows(old, run_id) == RUNS[run_id]["ledger_rows"]
        result = await orch.arun(RUNS[run_id]["graph"], None, run_id=run_id, resume=True)
        assert result.status == "ok", result.error
        assert result.answer == want["answer"]
        got = result.ledger.to_dict()
        _same_totals(got, want["ledger"])
        assert list(_nodes(got)) == list(_nodes(want["ledger"]))
        for node, line in _nodes(got).items():
            _same_node(line, _nodes(want["ledger"])[node])
        assert _ledger_rows(old, run_id) == RUNS[run_id]["ledger_rows"]  # nothing paid again
    assert loopback.requests == []  # a finished run's nodes never run again
    user.close()
    agent.close()


async def test_the_failed_user_graph_run_resumes_after_its_finished_node(
    loopback: Loopback, old: Settings
) -> None:
    failed, finished = RUNS[G.USER_FAILED], RUNS[G.USER_OK]
    assert failed["result"]["status"] == "failed" and list(_nodes(failed["result"]["ledger"])) == [
        "summarize"
    ]
    loopback.route("/v1/messages", anthropic_stream([G.REPLY], anthropic_usage(*G.REPLY_USAGE)))
    # no reply is scripted for the summarize slot's server: running `summarize` again would fail the run
    orch = Orchestrator(settings=old, slots=G.user_slots(loopback.url), graphs={G.USER_GRAPH: G.build})
    result = await orch.arun(G.USER_GRAPH, None, run_id=G.USER_FAILED, resume=True)
    assert result.status == "ok", result.error
    assert result.answer == G.REPLY
    assert [r.path for r in loopback.requests] == ["/v1/messages"]  # only the failed node ran again

    got = result.ledger.to_dict()
    nodes = _nodes(got)
    assert list(nodes) == ["summarize", "reply"]
    _same_node(nodes["summarize"], _nodes(failed["result"]["ledger"])["summarize"])  # the old cost, once
    _same_node(nodes["reply"], _nodes(finished["result"]["ledger"])["reply"])
    _same_totals(got, finished["result"]["ledger"])  # as if it had never failed
    assert got["cost_usd"] == pytest.approx(
        failed["result"]["ledger"]["cost_usd"] + nodes["reply"]["cost_usd"]
    )
    assert _ledger_rows(old, G.USER_FAILED) == failed["ledger_rows"] + 1
    orch.close()

    store = TraceStore(old.traces_path)
    row = store.get_run(G.USER_FAILED)
    assert row is not None and row["status"] == "ok" and row["error"] is None
    assert row["started_at"] == failed["stored_run"]["started_at"]
    _same_totals(row, got)
    spans = store.run_spans(G.USER_FAILED)
    assert [s["node"] for s in spans if s["kind"] == "node"] == ["summarize", "reply", "reply"]
    chats = [s for s in spans if s["kind"] == "chat"]
    assert sum(s["cost_usd"] or 0.0 for s in chats) == pytest.approx(got["cost_usd"])  # old spans + new
    store.close()


async def test_the_failed_agent_run_resumes_without_asking_for_the_plan_again(
    loopback: Loopback, old: Settings
) -> None:
    failed, finished = RUNS[G.AGENT_FAILED], RUNS[G.AGENT_OK]
    assert failed["result"]["status"] == "failed"
    rest = [openai_stream([text], openai_usage(*usage)) for text, usage in G.AGENT_STEPS[1:]]
    loopback.route("/v1/chat/completions", *rest)
    orch = Orchestrator(
        settings=old,
        slots=G.agent_slots(loopback.url),
        tools=G.TOOLS,
        graphs={G.AGENT_GRAPH: G.AGENT_REF},
        limits=Limits(max_steps=6),
    )
    result = await orch.arun(G.AGENT_GRAPH, None, run_id=G.AGENT_FAILED, resume=True)
    assert result.status == "ok", result.error
    assert result.answer == finished["result"]["answer"]
    assert len(loopback.requests) == len(rest)  # the tool call and the answer; the plan is in the checkpoint

    got = result.ledger.to_dict()
    _same_totals(got, finished["result"]["ledger"])  # the plan's old cost counted once
    assert list(_nodes(got)) == list(_nodes(finished["result"]["ledger"]))
    for node, line in _nodes(got).items():
        _same_node(line, _nodes(finished["result"]["ledger"])[node])
    assert _ledger_rows(old, G.AGENT_FAILED) == finished["ledger_rows"]
    orch.close()

    store = TraceStore(old.traces_path)
    row = store.get_run(G.AGENT_FAILED)
    assert row is not None and row["status"] == "ok"
    _same_totals(row, got)
    chats = [s for s in store.run_spans(G.AGENT_FAILED) if s["kind"] == "chat"]
    assert sum(s["cost_usd"] or 0.0 for s in chats) == pytest.approx(got["cost_usd"])
    store.close()
