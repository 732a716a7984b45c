"""One owner per run: a resume (or a second start) of a run that is running is refused before anything is
spent; a crashed owner's lease is taken over, a zombie's too; and a killed run lists what its ledger holds.

Real processes throughout: `orch run` children against a loopback model server whose reply is held at a
gate while the test acts, and children that take a lease and die (reaped, or left as zombies).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from loopback import Loopback, Reply
from wire import anthropic_stream, anthropic_usage, error_body, openai_stream, openai_usage

from orchestrator import ConfigError, Orchestrator, Settings, SlotConfig
from orchestrator.config import PriceOverride
from orchestrator.errors import RunOwnedError
from orchestrator.procs import HOST
from orchestrator.providers.http import aclose_clients, reset_model_states
from orchestrator.run.lease import Leases, SqliteLeases

TESTS = Path(__file__).parent
GRAPH = "usergraphs.two_slots:build"
OPENAI_PRICE = PriceOverride(input=1e-6, output=4e-6)
ANTHROPIC_PRICE = PriceOverride(input=3e-6, output=15e-6)
SUMMARIZE_COST = 120 * 1e-6 + 8 * 4e-6
REPLY_COST = 60 * 3e-6 + 12 * 15e-6
INPUT = "My card never came."
ANSWER = "Sorry, we'll send a new card."


@pytest.fixture(autouse=True)
async def _clean() -> AsyncIterator[None]:
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Holds a scripted reply until the test sets it (always set at the end, so the server can close)."""
    event = threading.Event()
    yield event
    event.set()


def _summary(gate: threading.Event | None = None) -> Reply:
    return openai_stream(["A card has not arrived."], openai_usage(120, 8), gate=gate)


def _reply(gate: threading.Event | None = None) -> Reply:
    return anthropic_stream([ANSWER], anthropic_usage(60, 12), gate=gate)


def _project(root: Path, server: Loopback) -> Path:
    """A project whose graph `mine` summarizes (OpenAI-compatible) and then replies (Anthropic)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.orchestrator]
            default_graph = "mine"

            [tool.orchestrator.graphs]
            mine = "{GRAPH}"

            [tool.orchestrator.slots]
            summarize = {{ model = "openai-compat:small", base_url = "{server.url}/v1", max_retries = 0, prices = {{ input = 1e-6, output = 4e-6 }} }}
            write = {{ model = "anthropic:claude-haiku-4-5", base_url = "{server.url}", max_retries = 0, prices = {{ input = 3e-6, output = 15e-6 }} }}
            """  # noqa: E501
        )
    )
    return root


def _env(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ORCH_TRACES": str(project / "traces.db"),
        "ORCH_CHECKPOINTS": str(project / "ckpt.db"),
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }


_CLI = (sys.executable, "-m", "orchestrator")


def _orch(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_CLI, "--project", str(project), *args],
        capture_output=True,
        text=True,
        env=_env(project),
        timeout=180,
    )


def _start(project: Path, run_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*_CLI, "--project", str(project), "run", "mine", INPUT, "--run-id", run_id, "--json"],
        env=_env(project),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait(what: str, done: Callable[[], bool], proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if done():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _ledger(project: Path, run_id: str) -> list[dict[str, object]]:
    try:
        with sqlite3.connect(project / "ckpt.db") as db:
            rows = db.execute("select entry from orch_ledger where run_id = ? order by seq", [run_id])
            return [json.loads(r[0]) for r in rows]
    except sqlite3.OperationalError:  # the table is not made yet
        return []


def _leases(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("select run_id, host, pid from orch_leases").fetchall()


# --- one owner per run ------------------------------------------------------------------------------------
def test_a_resume_of_a_live_run_is_refused_and_nothing_is_paid_twice(
    loopback: Loopback, gate: threading.Event, tmp_path: Path
) -> None:
    """The report: `orch run --resume dbl` while `orch run ... --run-id dbl` waited on its model was
    accepted (rc 0); both processes made the call (3 requests), and the runs row said less than the ledger.
    """
    project = _project(tmp_path / "proj", loopback)
    loopback.route("/v1/chat/completions", _summary(gate), _summary())  # the second: only for a double
    loopback.route("/v1/messages", _reply(), _reply())
    first = _start(project, "dbl")
    try:
        _wait("the summarize call", lambda: len(loopback.requests) == 1, first)  # held at the gate
        for args in (["run", "--resume", "dbl"], ["run", "mine", INPUT, "--run-id", "dbl"]):
            refused = _orch(project, *args)
            assert refused.returncode == 2, (refused.returncode, refused.stderr)
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
            assert f"run 'dbl' is already running (host {HOST}, pid {first.pid};" in lines[0]
            assert "orch run --resume dbl" in lines[0]
        assert len(loopback.requests) == 1  # refused before anything was spent
        gate.set()
        out, err = first.communicate(timeout=120)
    finally:
        gate.set()
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err
    assert json.loads(out)["answer"] == ANSWER
    assert [r.path for r in loopback.requests] == ["/v1/chat/completions", "/v1/messages"]
    paid = _ledger(project, "dbl")
    assert [e["node"] for e in paid] == ["summarize", "reply"]
    (row,) = json.loads(_orch(project, "traces", "list", "--json").stdout)
    assert row["status"] == "ok"
    assert row["cost_usd"] == pytest.approx(sum(e["cost_usd"] for e in paid))  # type: ignore[misc]
    assert row["cost_usd"] == pytest.approx(SUMMARIZE_COST + REPLY_COST)
    assert (row["input_tokens"], row["output_tokens"]) == (180, 20)
    assert _leases(project / "ckpt.db") == []  # given back at the end


def _slots(server: Loopback) -> dict[str, SlotConfig]:
    return {
        "summarize": SlotConfig(
            model="openai-compat:small", base_url=server.url + "/v1", prices=OPENAI_PRICE, max_retries=0
        ),
        "write": SlotConfig(
            model="anthropic:claude-haiku-4-5", base_url=server.url, prices=ANTHROPIC_PRICE, max_retries=0
        ),
    }


def _orchestrator(server: Loopback, tmp_path: Path) -> Orchestrator:
    settings = Settings(traces_path=tmp_path / "traces.db", checkpoints_path=tmp_path / "ckpt.db")
    return Orchestrator(settings=settings, slots=_slots(server), graphs={"mine": GRAPH})


async def test_arun_refuses_a_run_this_process_is_running_and_frees_it_at_every_end(
    loopback: Loopback, gate: threading.Event, tmp_path: Path
) -> None:
    """In a service: a second `arun` of a run id in flight, from the same or another `Orchestrator`."""
    import asyncio

    one, two = _orchestrator(loopback, tmp_path), _orchestrator(loopback, tmp_path)
    loopback.route("/v1/chat/completions", _summary(gate))
    loopback.route("/v1/messages", _reply())
    running = asyncio.create_task(one.arun("mine", INPUT, run_id="svc"))
    while not loopback.requests:
        assert not running.done(), running.result()
        await asyncio.sleep(0.02)
    for orch in (one, two):
        owned = rf"run 'svc' is already running \(host {HOST}, pid {os.getpid()};"
        with pytest.raises(RunOwnedError, match=owned):
            await orch.arun("mine", None, run_id="svc", resume=True)
        with pytest.raises(ConfigError, match="already running"):  # a ConfigError: exit 2 from the CLI
            await orch.arun("mine", INPUT, run_id="svc")
    gate.set()
    done = await running
    assert (done.status, done.answer) == ("ok", ANSWER)
    assert len(loopback.requests) == 2
    assert _leases(tmp_path / "ckpt.db") == []
    # a failed run gives its lease back too, and its resume (here, by the other orchestrator) goes on
    loopback.route("/v1/chat/completions", _summary())
    loopback.route("/v1/messages", Reply(status=500, body=error_body("overloaded")), _reply())
    failed = await one.arun("mine", INPUT, run_id="svc-2")
    assert failed.status == "failed" and _leases(tmp_path / "ckpt.db") == []
    resumed = await two.arun("mine", None, run_id="svc-2", resume=True)
    assert (resumed.status, resumed.answer) == ("ok", ANSWER)
    one.close()
    two.close()


_HOLD = """
import os, sys
from orchestrator.run.lease import Leases, SqliteLeases
Leases(SqliteLeases(sys.argv[1])).acquire(sys.argv[2])
print("held", flush=True)
{then}
"""


def _holder(db: Path, run_id: str, then: str) -> subprocess.Popen[str]:
    """A child process that takes the run's lease, says so, then does `then`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(then=then), str(db), run_id],
        text=True,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def test_a_lease_is_refused_while_its_process_lives_and_taken_over_once_it_dies(tmp_path: Path) -> None:
    db = tmp_path / "ckpt.db"
    leases = Leases(SqliteLeases(db))
    holder = _holder(db, "r1", "import time; time.sleep(600)")
    try:
        with pytest.raises(RunOwnedError, match=rf"\(host {HOST}, pid {holder.pid};"):
            leases.acquire("r1")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()  # reaped: gone
    lease = leases.acquire("r1")  # its owner died without giving it back: taken over
    assert _leases(db) == [("r1", HOST, os.getpid())]
    leases.release(lease)
    leases.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are read from /proc (Linux)")
def test_a_lease_held_by_a_zombie_is_taken_over(tmp_path: Path) -> None:
    """A killed owner that its parent has not reaped (a container whose PID 1 never reaps) has ended."""
    db = tmp_path / "ckpt.db"
    holder = _holder(db, "r1", "os._exit(0)")
    try:
        _wait("the holder to become a zombie", lambda: _state(holder.pid) == "Z")
        leases = Leases(SqliteLeases(db))
        lease = leases.acquire("r1")
        assert _state(holder.pid) == "Z"  # still unreaped: judged dead all the same
        leases.release(lease)
        leases.close()
    finally:
        holder.communicate()  # reaped now


def test_a_lease_of_another_host_holds_until_its_heartbeat_is_older_than_the_ttl(tmp_path: Path) -> None:
    db = tmp_path / "ckpt.db"
    leases = Leases(SqliteLeases(db), ttl_s=60.0)

    def held_elsewhere(age_s: float) -> None:
        with sqlite3.connect(db) as conn:
            conn.execute(
                "insert or replace into orch_leases values ('r1', 'worker-7', 4242, 1, ?, 'theirs')",
                [time.time() - age_s],
            )

    held_elsewhere(5.0)
    with pytest.raises(RunOwnedError, match=r"\(host worker-7, pid 4242; its last heartbeat 5 s ago\)"):
        leases.acquire("r1")
    held_elsewhere(61.0)
    lease = leases.acquire("r1")
    assert _leases(db) == [("r1", HOST, os.getpid())]
    leases.release(lease)
    leases.close()


def test_a_held_lease_keeps_its_heartbeat_fresh(tmp_path: Path) -> None:
    db = tmp_path / "ckpt.db"
    leases = Leases(SqliteLeases(db), beat_s=0.05)
    lease = leases.acquire("r1")

    def beat() -> float:
        with sqlite3.connect(db) as conn:
            return float(conn.execute("select heartbeat from orch_leases").fetchone()[0])

    first = beat()
    _wait("a heartbeat", lambda: beat() > first)
    leases.release(lease)
    leases.close()


# --- a killed run lists what its ledger holds ------------------------------------------------------------
def test_a_killed_run_lists_the_cost_and_tokens_its_ledger_holds(
    loopback: Loopback, gate: threading.Event, tmp_path: Path
) -> None:
    """`orch traces list` showed cost `?` and 0 tokens for a run killed mid-run, though its ledger held the
    summarize call it had paid for."""
    project = _project(tmp_path / "proj", loopback)
    loopback.route("/v1/chat/completions", _summary())
    loopback.route("/v1/messages", _reply(gate), _reply())  # the first is held: the kill comes in it
    proc = _start(project, "killed")
    try:
        _wait("the reply call", lambda: len(loopback.requests) == 2, proc)
        _wait("the summarize call's ledger entry", lambda: len(_ledger(project, "killed")) == 1, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        gate.set()
    (row,) = json.loads(_orch(project, "traces", "list", "--json").stdout)
    assert row["run_id"] == "killed" and row["status"] == "interrupted"
    assert row["cost_usd"] == pytest.approx(SUMMARIZE_COST)
    assert (row["input_tokens"], row["output_tokens"]) == (120, 8)
    table = _orch(project, "traces", "list").stdout
    assert f"${SUMMARIZE_COST:.6f}" in table and "?" not in table
    # the resume takes the dead process's lease over, and ends with the ledger's totals
    resumed = _orch(project, "run", "--resume", "killed", "--json")
    assert resumed.returncode == 0, resumed.stderr
    (row,) = json.loads(_orch(project, "traces", "list", "--json").stdout)
    assert row["status"] == "ok" and row["cost_usd"] == pytest.approx(SUMMARIZE_COST + REPLY_COST)
    assert row["cost_usd"] == pytest.approx(json.loads(resumed.stdout)["ledger"]["cost_usd"])
