"""A fleet, with real parts: a throwaway PostgreSQL, three `orch worker` processes, runs submitted
from another process, and a scripted OpenAI-compatible server in its own process that counts the calls
it bills and the requests it holds at once.

One worker is killed with SIGKILL in the middle of a run, another is drained with SIGTERM, a run that
waits for a person is answered through the queue; then every run has ended once, the ledger holds
exactly the calls the server billed, and the server never held more requests for the model than its
fleet-wide cap.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
_CLI = (sys.executable, "-m", "orchestrator")
CAP = 2  # the model's max_concurrency: with 3 workers x 3 runs at once, only a fleet-wide limit keeps it
RUNS = 9

pytest.importorskip("dbos")


class Api:
    """bench/scripted_api.py in its own process."""

    def __init__(self, ttft: float = 0.1) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "scripted_api.py"),
                "--port",
                "0",
                "--ttft",
                str(ttft),
                "--tokens",
                "20",
                "--tps",
                "50",
                "--cap",
                "100",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line
        self.url = line.split()[-1]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as r:
            return dict(json.loads(r.read()))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api()
    yield server
    server.close()


def _project(root: Path, api: Api) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.orchestrator]
            default_graph = "three"

            [tool.orchestrator.graphs]
            three = "usergraphs.three_calls:build"
            approved = "usergraphs.three_calls:build_approved"

            [tool.orchestrator.slots]
            step = {{ model = "openai-compat:small", base_url = "{api.url}/v1", max_retries = 2, max_concurrency = {CAP}, prices = {{ input = 1e-6, output = 2e-6 }} }}
            """  # noqa: E501
        )
    )
    return root


def _env(project: Path, pg_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "ORCH_TRACES": str(project / "traces.db"),
        "ORCH_CHECKPOINTS": pg_url,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }


def _wait(what: str, done: Callable[[], bool], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        try:
            return conn.execute(sql, params).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


_SUBMIT = """
import asyncio, os, sys
from orchestrator import Budget, Orchestrator, PostgresBudget

async def main():
    orch = Orchestrator.from_project(sys.argv[1])
    fleet = Budget(shared=PostgresBudget(os.environ["ORCH_CHECKPOINTS"], name="fleet", usd=1.0))
    for i in range(int(sys.argv[2])):
        await orch.submit("three", f"task {i}", run_id=f"run-{i}", budget=fleet)
    await orch.submit("approved", "needs a yes", run_id="asks", budget=fleet)
    orch.close()

asyncio.run(main())
"""


def test_a_fleet_runs_every_run_once_through_a_kill_a_drain_and_an_approval(
    tmp_path: Path, pg_url: str, api: Api
) -> None:
    project = _project(tmp_path / "project", api)
    env = {**_env(project, pg_url), "ORCH_TRACES": pg_url}  # one trace store for the fleet, too
    logs = {w: open(tmp_path / f"{w}.log", "w") for w in ("w1", "w2", "w3")}  # noqa: SIM115
    workers = {
        w: subprocess.Popen(
            [*_CLI, "--project", str(project), "worker", "--id", w, "--concurrency", "3"],
            env=env,
            stdout=logs[w],
            stderr=subprocess.STDOUT,
        )
        for w in logs
    }
    try:
        _wait(
            "three workers",
            lambda: len(_rows(pg_url, "select 1 from orch_workers where state = 'running'")) == 3,
        )
        submitted = subprocess.run(
            [sys.executable, "-c", _SUBMIT, str(project), str(RUNS)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submitted.returncode == 0, submitted.stderr

        # kill -9 a worker that is in the middle of a run: one of its runs has paid a call and not ended
        def busy() -> str | None:
            rows = _rows(
                pg_url,
                "select w.executor_id from dbos.workflow_status w "
                "join orch_ledger l on l.run_id = w.workflow_uuid where w.status = 'PENDING' "
                "group by w.executor_id, w.workflow_uuid having count(*) = 1",
            )
            return rows[0][0] if rows else None

        _wait("a run in the middle", lambda: busy() is not None)
        victim = busy()
        assert victim is not None
        workers[victim].send_signal(signal.SIGKILL)
        # its runs at the kill (a superset: read just after it): each may pay its node in flight twice
        in_flight = {
            r[0]
            for r in _rows(
                pg_url,
                "select workflow_uuid from dbos.workflow_status "
                "where status = 'PENDING' and executor_id = %s",
                victim,
            )
        }
        workers[victim].wait(timeout=30)

        # drain another: it takes nothing new and finishes what it runs
        drained = next(w for w in workers if w != victim)
        workers[drained].send_signal(signal.SIGTERM)
        assert workers[drained].wait(timeout=120) == 0
        survivor = next(w for w in workers if w not in (victim, drained))

        def ended() -> bool:
            rows = _rows(pg_url, "select status from dbos.workflow_status where name = 'orch_run'")
            return len(rows) == RUNS + 1 and all(r[0] in ("SUCCESS", "ERROR") for r in rows)

        _wait("every run to end", ended)
        answered = subprocess.run(
            [
                *_CLI,
                "--project",
                str(project),
                "submit",
                "--resume",
                "asks",
                "--answer",
                "true",
                "--wait",
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert answered.returncode == 0, answered.stderr
        assert json.loads(answered.stdout)["answer"] == "3 steps for needs a yes"
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for f in logs.values():
            f.close()
    log = {w: (tmp_path / f"{w}.log").read_text() for w in logs}

    # every run ended once, ok, with its answer; the waiting run waited once, then ended ok on its second job
    jobs = _rows(
        pg_url, "select workflow_uuid, status, executor_id from dbos.workflow_status where name = 'orch_run'"
    )
    assert sorted(j[0] for j in jobs) == sorted([*(f"run-{i}" for i in range(RUNS)), "asks", "asks/2"]), jobs
    assert all(j[1] == "SUCCESS" for j in jobs), (jobs, log)
    outputs = subprocess.run(
        [*_CLI, "--project", str(project), "jobs", "--json", "--limit", "50"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    states = {s["job_id"]: s for s in json.loads(outputs.stdout)}
    for i in range(RUNS):
        assert states[f"run-{i}"]["status"] == "ok"
        assert states[f"run-{i}"]["result"]["answer"] == f"3 steps for task {i}"
    assert states["asks"]["status"] == "waiting" and states["asks/2"]["status"] == "ok"
    # the killed worker's runs were taken by another
    assert any(j[2] != victim for j in jobs)
    assert "died" in log[survivor] + log[drained], log

    # the ledger holds what the server billed: each run's three calls once, but for the calls in flight on
    # the killed worker. Such a call is made again when its run resumes; the first one is in the ledger if
    # the worker wrote its row before the kill (and the node's checkpoint did not follow), and billed if the
    # server had finished it
    ledger = _rows(pg_url, "select run_id, entry from orch_ledger")
    stats = api.stats()
    per_run = {r: sum(1 for x in ledger if x[0] == r) for r in {x[0] for x in ledger}}
    assert set(per_run) == {*(f"run-{i}" for i in range(RUNS)), "asks"}, per_run
    twice = {r: n - 3 for r, n in per_run.items() if n != 3}
    assert all(r in in_flight and n == 1 for r, n in twice.items()), (twice, in_flight)
    assert 0 <= stats["billed"] - len(ledger) <= len(in_flight) - len(twice), (len(ledger), stats, in_flight)
    # the fleet budget counted every call in the ledger (the resumed run's too: a resume keeps the run's
    # budget), and holds nothing now: the killed worker's reservations were released at the recovery. (A
    # call the killed worker had charged may have died with its ledger row still queued for the writer.)
    spent = _rows(pg_url, "select spent_usd from orch_budgets where name = 'fleet'")[0][0]
    costs = [json.loads(x[1])["cost_usd"] for x in ledger]
    assert sum(costs) - 1e-9 <= spent <= sum(costs) + len(in_flight) * max(costs) + 1e-9, (spent, sum(costs))
    assert _rows(pg_url, "select count(*) from orch_budget_holds")[0][0] == 0
    # one trace store: every worker's runs in it, each ended once
    listed = subprocess.run(
        [*_CLI, "--project", str(project), "traces", "list", "--json", "--limit", "50"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    runs = {r["run_id"]: r for r in json.loads(listed.stdout)}
    assert set(runs) == {*(f"run-{i}" for i in range(RUNS)), "asks"}, listed.stderr
    assert all(r["status"] == "ok" for r in runs.values()), runs
    # one cap for the model across the fleet, as the server counted the requests it held at once
    assert stats["max_in_flight"] <= CAP, stats


# --- the submitting side's errors -----------------------------------------------------------------------
async def test_submitting_needs_the_checkpoints_in_postgresql(tmp_path: Path, api: Api) -> None:
    from orchestrator import ConfigError, Orchestrator, Settings

    project = _project(tmp_path / "p", api)
    orch = Orchestrator.from_project(
        project, settings=Settings(traces_path=tmp_path / "t.db", checkpoints_path=tmp_path / "c.db")
    )
    try:
        with pytest.raises(ConfigError, match=r"set ORCH_CHECKPOINTS .* to a postgresql:// URL"):
            await orch.submit("three", "hi")
    finally:
        orch.close()


async def test_a_run_is_submitted_once_and_resumed_only_once_it_ended(
    tmp_path: Path, pg_url: str, api: Api
) -> None:
    from orchestrator import ConfigError, Orchestrator, Settings

    project = _project(tmp_path / "p", api)
    orch = Orchestrator.from_project(
        project, settings=Settings(traces_path=tmp_path / "t.db", checkpoints_path=pg_url)
    )
    try:
        with pytest.raises(ConfigError, match=r"unknown graph|no graph"):
            await orch.submit("nope", "hi")
        assert await orch.submit("three", "hi", run_id="once") == "once"
        with pytest.raises(ConfigError, match=r"already submitted; resume it"):
            await orch.submit("three", "hi", run_id="once")
        with pytest.raises(ConfigError, match=r"is queued .* wait for it to end"):
            await orch.submit("three", None, run_id="once", resume=True, answer=True)
        with pytest.raises(ConfigError, match=r"never submitted"):
            await orch.submit("three", None, run_id="other", resume=True)
        state = await orch.job("once")
        assert state is not None and state.status == "queued" and state.job_id == "once"
        with pytest.raises(TimeoutError, match=r"still queued after 0.5 s"):
            await orch.wait("once", timeout=0.5)
    finally:
        orch.close()


def test_two_live_workers_cannot_share_an_id_and_bad_options_exit_2(
    tmp_path: Path, pg_url: str, api: Api
) -> None:
    project = _project(tmp_path / "p", api)
    env = _env(project, pg_url)
    first = subprocess.Popen(
        [*_CLI, "--project", str(project), "worker", "--id", "same"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait(
            "the first worker",
            lambda: bool(_rows(pg_url, "select 1 from orch_workers where state = 'running'")),
        )
        second = subprocess.run(
            [*_CLI, "--project", str(project), "worker", "--id", "same"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        assert f"worker id 'same' is in use by process {first.pid}" in second.stderr
        assert "give each worker its own --id" in second.stderr
        recover = subprocess.run(
            [*_CLI, "--project", str(project), "jobs", "--recover", "same"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert recover.returncode == 2 and "still runs" in recover.stderr, recover.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0 and "every run this worker took has ended" in err
    for args, message in (
        (["submit", "--approve", "x"], "use them with --resume RUN"),
        (["submit", "three", "hi", "--resume", "r"], "not both"),
        (["worker", "--concurrency", "0"], "--concurrency"),
    ):
        bad = subprocess.run(
            [*_CLI, "--project", str(project), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)


def test_a_drained_worker_hands_back_what_it_could_not_finish(tmp_path: Path, pg_url: str) -> None:
    """SIGTERM with no time to finish: the run in flight is handed back, and the next worker resumes it."""
    slow = Api(ttft=3.0)  # each call takes 3 s and more
    try:
        project = _project(tmp_path / "p", slow)
        env = _env(project, pg_url)
        cli = [*_CLI, "--project", str(project)]
        first = subprocess.Popen(
            [*cli, "worker", "--id", "first", "--drain-timeout", "0"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait("the worker", lambda: bool(_rows(pg_url, "select 1 from orch_workers where state = 'running'")))
        submitted = subprocess.run(
            [*cli, "submit", "handed"], env=env, capture_output=True, text=True, timeout=120
        )
        assert submitted.returncode == 0, submitted.stderr
        run_id = submitted.stdout.strip()
        _wait("its first call", lambda: slow.stats()["in_flight"] == 1)
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0 and "1 run(s) still running were handed back" in err, err
        assert _rows(pg_url, "select state from orch_workers where executor_id = 'first'") == [
            ("handed back",)
        ]
        second = subprocess.Popen(
            [*cli, "worker", "--id", "second"], env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            waited = subprocess.run(
                [*cli, "jobs", run_id, "--wait", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
        finally:
            second.send_signal(signal.SIGTERM)
            _, err2 = second.communicate(timeout=120)
        state = json.loads(waited.stdout)[0]
        assert state["status"] == "ok" and state["executor"] == "second", (state, err2)
        assert state["result"]["answer"] == "3 steps for handed"
        assert "worker first handed back its runs; 1 of its runs went back on the queue" in err2
        assert len(_rows(pg_url, "select 1 from orch_ledger where run_id = %s", run_id)) == 3
    finally:
        slow.close()


def test_a_fleet_database_that_cannot_be_reached_is_one_line_without_the_password(
    tmp_path: Path, api: Api
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    project = _project(tmp_path / "p", api)
    env = _env(project, f"postgresql://orch:hunter2@127.0.0.1:{port}/orch")
    for args in (["jobs"], ["jobs", "--workers"], ["submit", "hi"], ["worker", "--id", "w"]):
        out = subprocess.run(
            [*_CLI, "--project", str(project), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 2, (args, out.stderr)
        assert "hunter2" not in out.stderr + out.stdout
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and f"cannot use PostgreSQL at 127.0.0.1:{port}" in lines[0], (
            args,
            out.stderr,
        )
