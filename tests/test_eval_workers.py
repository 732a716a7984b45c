"""`orch eval --workers N` and `orch trial --workers N`: items in worker processes, results as a serial run's.

The models are real to the worker processes: an API model on a loopback HTTP server (each worker process
connects to it), or a scripted model the project defines (loaded in each worker process). A worker is killed
with SIGKILL mid-item; Ctrl-C stops the whole fan-out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from loopback import Loopback, Reply, Request
from test_trial import ITEMS, labeller
from wire import openai_stream, openai_usage

from orchestrator.errors import ConfigError
from orchestrator.procs import alive
from orchestrator.providers.http import aclose_clients, reset_model_states


@pytest.fixture(autouse=True)
async def _clean() -> AsyncIterator[None]:
    """The HTTP clients an in-process trial opened are closed on the loop that made them: left open, their
    sockets were collected during a later test and failed it with a ResourceWarning."""
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()

# --- orch eval on an API controller on loopback -------------------------------------------------------------
# (id, category, start, end, expected): the model always counts right, so t4 and t6 expect a wrong number
TASKS = [
    ("t1", "march", "2026-03-02", "2026-03-20", "18"),
    ("t2", "march", "2026-03-01", "2026-03-31", "30"),
    ("t3", "april", "2026-04-01", "2026-04-11", "10"),
    ("t4", "april", "2026-04-01", "2026-04-30", "30"),
    ("t5", "may", "2026-05-01", "2026-05-03", "2"),
    ("t6", "may", "2026-05-10", "2026-05-20", "11"),
]
DATES = re.compile(r"(\d{4}-\d{2}-\d{2}) (?:to|and) (\d{4}-\d{2}-\d{2})")

EVAL_PROJECT = """
[tool.orchestrator]
default_graph = "agent"
tool_packs = ["defs:TOOLS"]

[tool.orchestrator.graphs]
agent = "orchestrator.graph:build_agent_graph"

[tool.orchestrator.slots.controller]
model = "openai-compat:ctl"
base_url = "{url}"
role = "racehorse"
prices = {{ input = 1e-6, output = 4e-6 }}
"""

DATE_DIFF = '''
from langchain_core.tools import tool

@tool
def date_diff(start: str, end: str) -> int:
    """Number of days between two ISO dates."""
    import datetime as dt
    return (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days
'''


class Controller:
    """The controller's side of every task, derived from each request (whichever worker process sends it):
    the plan, the date_diff call, the final answer. Tokens billed differ by task, so costs do too. With
    `hold`, t1's plan waits until every other task has its final answer: t1 finishes last."""

    def __init__(self, hold: bool = False) -> None:
        self.finals: list[str] = []
        self.release = threading.Event()
        self.hold = hold

    def __call__(self, request: Request) -> Reply:
        body = request.json()
        texts = [str(m["content"]) for m in body["messages"]]
        start, end = DATES.findall(texts[-1])[-1]
        task = next(t[0] for t in TASKS if (t[2], t[3]) == (start, end))
        days = int(task[1:]) * 7
        usage = openai_usage(100 + days, 10 + int(task[1:]))
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice["function"]["name"] == "plan":
            args = json.dumps({"plan": [{"tool": f"days between {start} and {end}"}]})
            gate = self.release if self.hold and task == "t1" else None
            return openai_stream([], usage, tool_calls=[("c1", "plan", [args])], gate=gate)
        if choice == "required":
            args = json.dumps({"start": start, "end": end})
            return openai_stream([], usage, tool_calls=[("c2", "date_diff", [args])])
        result = texts[-1].rsplit(":", 1)[-1].strip()
        self.finals.append(task)
        if len(self.finals) == len(TASKS) - 1:
            self.release.set()
        return openai_stream([json.dumps({"action": "final", "answer": f"{result} days"})], usage)


def eval_project(tmp_path: Path, url: str) -> tuple[Path, Path]:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text(EVAL_PROJECT.format(url=url))
    (root / "defs.py").write_text(DATE_DIFF + "\nTOOLS = [date_diff]\n")
    data = tmp_path / "tasks.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i, "category": c, "input": f"How many days from {a} to {b}?", "expect": [e]})
            + "\n"
            for i, c, a, b, e in TASKS
        )
    )
    return root, data


def orch_cli(
    project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "ORCH_TRACES": str(project / "traces.db"),
        "ORCH_CHECKPOINTS": str(project / "ckpt.db"),
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "orchestrator", "--project", str(project), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


TIMING = {"seconds", "median_s", "run_id"}  # a run's time and its (random) id differ between two runs


def same_eval(report: dict[str, Any]) -> dict[str, Any]:
    """An eval report without what no two runs share (times, run ids)."""

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in TIMING}

    return {
        "graph": report["graph"],
        "total": strip(report["total"]),
        "by_category": {c: strip(v) for c, v in report["by_category"].items()},
        "tasks": [strip(t) for t in report["tasks"]],
    }


def test_eval_with_three_workers_equals_the_serial_run_item_by_item(
    loopback: Loopback, tmp_path: Path
) -> None:
    controller = Controller()
    loopback.handle("/v1/chat/completions", controller)
    project, data = eval_project(tmp_path, loopback.url + "/v1")
    serial = orch_cli(project, "eval", "--data", str(data), "--json")
    assert serial.returncode == 0, serial.stderr
    one = json.loads(serial.stdout)
    assert [(t["id"], t["ok"]) for t in one["tasks"]] == [
        ("t1", True), ("t2", True), ("t3", True), ("t4", False), ("t5", True), ("t6", False),
    ]  # fmt: skip
    assert one["total"]["cost_usd"] > 0 and len({t["cost_usd"] for t in one["tasks"]}) == len(TASKS)

    held = Controller(hold=True)  # t1 waits for the five others: it finishes last
    loopback.handle("/v1/chat/completions", held)
    fanned = orch_cli(project, "eval", "--data", str(data), "--json", "--workers", "3")
    assert fanned.returncode == 0, fanned.stderr
    three = json.loads(fanned.stdout)
    assert held.finals[-1] == "t1"  # finished last, reported first
    assert same_eval(three) == same_eval(one)
    run_ids = [t["run_id"] for t in one["tasks"] + three["tasks"]]
    assert len(set(run_ids)) == 2 * len(TASKS)

    # every run of both evals is in the one trace store the worker processes shared
    from orchestrator.tracing.store import TraceStore

    store = TraceStore(project / "traces.db")
    runs = {r["run_id"]: r for r in store.list_runs(limit=100)}
    assert set(run_ids) <= set(runs) and all(runs[r]["status"] == "ok" for r in run_ids)
    store.close()

    # the progress lines come as tasks finish: t1's last
    held = Controller(hold=True)
    loopback.handle("/v1/chat/completions", held)
    human = orch_cli(project, "eval", "--data", str(data), "--workers", "3")
    assert human.returncode == 0, human.stderr
    lines = re.findall(r"(right|wrong) (t\d)", human.stderr)
    assert sorted(t for _, t in lines) == [t[0] for t in TASKS] and lines[-1] == ("right", "t1")
    assert "By category" in human.stdout


# --- orch eval on a scripted model the project defines: a worker killed mid-task, Ctrl-C --------------------
TASK = "How many days from 2026-03-02 to 2026-03-20?"
SCRIPTED_PROJECT = """
[tool.orchestrator]
default_graph = "agent"
tool_packs = ["defs:TOOLS"]

[tool.orchestrator.graphs]
agent = "orchestrator.graph:build_agent_graph"

[tool.orchestrator.slots.controller]
model = "python:defs:controller"
role = "racehorse"
prices = { input = 1e-6, output = 2e-6 }
"""

SCRIPTED = '''
import json, os, signal, time
from pathlib import Path
from orchestrator.testing import ScriptedChatModel

TOOLS = [date_diff]
PIDS = Path(os.environ["PIDS"])  # each worker process leaves its pid here


def plan(messages):
    """The first decision, in the worker process: `hold` waits there (once) to be killed; `crash` kills
    its own process every time."""
    text = str(messages[-1].content)
    (PIDS / str(os.getpid())).touch()
    if "hold" in text and not (PIDS / "held").exists():
        (PIDS / "held").write_text(str(os.getpid()))
        time.sleep(120)  # killed before this ends
    elif "hold" in text:
        (PIDS / "retried").write_text(str(os.getpid()))
    if "crash" in text:
        os.kill(os.getpid(), signal.SIGKILL)
    return json.dumps({"plan": [{"tool": "days between 2026-03-02 and 2026-03-20"}]})


def controller():
    call = {"action": "call_tool", "tool": "date_diff", "args": {"start": "2026-03-02", "end": "2026-03-20"}}
    final = {"action": "final", "answer": "18 days"}
    return ScriptedChatModel(replies=[plan, json.dumps(call), json.dumps(final)], by_turn=True)
'''


def scripted_project(tmp_path: Path, tasks: list[tuple[str, str]]) -> tuple[Path, Path]:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text(SCRIPTED_PROJECT)
    (root / "defs.py").write_text(DATE_DIFF + textwrap.dedent(SCRIPTED))
    data = tmp_path / "tasks.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i, "input": f"{TASK} ({note})", "expect": ["18"]}) + "\n" for i, note in tasks
        )
    )
    return root, data


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def start_cli(project: Path, data: Path, pids: Path, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "ORCH_TRACES": str(project / "traces.db"),
        "ORCH_CHECKPOINTS": str(project / "ckpt.db"),
        "PIDS": str(pids),
    }
    cmd = [
        sys.executable,
        "-m",
        "orchestrator",
        "--project",
        str(project),
        "eval",
        "--data",
        str(data),
        *args,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_killed_mid_task_loses_no_task(tmp_path: Path) -> None:
    tasks = [("a", "plain"), ("b", "hold"), ("c", "plain"), ("d", "plain"), ("e", "plain")]
    project, data = scripted_project(tmp_path, tasks)
    quiet = tmp_path / "serial-pids"
    quiet.mkdir()
    (quiet / "held").write_text("")  # the serial run holds nothing
    serial = start_cli(project, data, quiet, "--json")
    out, err = serial.communicate(timeout=300)
    assert serial.returncode == 0, err

    pids = tmp_path / "pids"
    pids.mkdir()
    fanned = start_cli(project, data, pids, "--json", "--workers", "2")
    try:
        wait_for(lambda: (pids / "held").exists() and (pids / "held").read_text() != "", "the held task")
        victim = int((pids / "held").read_text())
        assert victim != fanned.pid and parent_of(victim) == fanned.pid  # a worker process of this eval
        os.kill(victim, signal.SIGKILL)
        fanned_out, fanned_err = fanned.communicate(timeout=300)
    finally:
        if fanned.poll() is None:
            fanned.kill()
            fanned.communicate()
    assert fanned.returncode == 0, fanned_err
    said = f"worker process {victim} was killed by SIGKILL while running item 2 of 5; it runs again"
    assert said in fanned_err
    assert same_eval(json.loads(fanned_out)) == same_eval(json.loads(out))
    assert all(t["ok"] for t in json.loads(fanned_out)["tasks"])
    assert int((pids / "retried").read_text()) != victim  # the held task ran again in another process
    workers = {int(p.name) for p in pids.iterdir() if p.name.isdigit()}
    assert victim in workers and not any(alive(pid, None) for pid in workers)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_task_that_kills_its_worker_twice_is_reported_failed_with_the_reason(tmp_path: Path) -> None:
    project, data = scripted_project(tmp_path, [("a", "plain"), ("b", "crash"), ("c", "plain")])
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = start_cli(project, data, pids, "--json", "--workers", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    report = json.loads(out)
    a, b, c = report["tasks"]
    assert (a["id"], a["ok"], c["id"], c["ok"]) == ("a", True, "c", True)
    assert (b["id"], b["ok"], b["status"], b["answer"], b["cost_usd"]) == ("b", False, "failed", None, None)
    assert re.fullmatch(
        r"worker process \d+ was killed by SIGKILL; then worker process \d+ was killed by SIGKILL, "
        r"while running it",
        b["error"],
    ), b["error"]
    assert report["total"]["failed_runs"] == 1 and report["total"]["cost_usd"] is None
    assert "while running item 2 of 3; it runs again in another" in err
    assert "while running item 2 of 3, which is reported failed" in err


def test_an_error_in_a_worker_is_the_error_of_a_serial_run(tmp_path: Path) -> None:
    """A configuration error raised in a worker process (an unknown graph, found at the first task) stops the
    fan-out and is the command's error, as serially: one line, exit 2."""
    project, data = scripted_project(tmp_path, [("a", "plain"), ("b", "plain"), ("c", "plain")])
    pids = tmp_path / "pids"
    pids.mkdir()
    for workers in ("1", "2"):
        proc = start_cli(project, data, pids, "nope", "--workers", workers)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err
        assert "error: unknown graph 'nope'" in err and "Traceback" not in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_every_worker_and_leaves_no_process(tmp_path: Path) -> None:
    project, data = scripted_project(tmp_path, [("a", "hold"), ("b", "hold"), ("c", "plain")])
    pids = tmp_path / "pids"
    pids.mkdir()
    # the first task to start holds its worker; the other worker runs the rest (its tool calls in a tool
    # process of its own), then waits
    proc = start_cli(project, data, pids, "--workers", "2")
    try:
        wait_for(lambda: (pids / "held").exists() and (pids / "held").read_text() != "", "a held task")
        wait_for(lambda: grandchildren(proc.pid), "a worker's tool process")
        started = descendants(proc.pid)
        children = started - grandchildren(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130 and "cancelled" in err, err
    assert "Traceback" not in err
    workers = {int(p.name) for p in pids.iterdir() if p.name.isdigit()}
    assert workers <= children and not [pid for pid in children if alive(pid, None)]  # killed and reaped
    # the workers were reaped before the command exited; a tool process ends by its parent-death signal,
    # which the kernel delivers as its worker ends: looked for until then
    wait_for(lambda: not [pid for pid in started if alive(pid, None)], "every process to end", timeout=60)


def grandchildren(pid: int) -> set[int]:
    """The processes under `pid` that are not its own children (a worker's tool processes)."""
    found = set()
    for kid in descendants(pid):
        with contextlib.suppress(OSError):
            if parent_of(kid) != pid:
                found.add(kid)
    return found


def descendants(pid: int) -> set[int]:
    """The processes under `pid`, at any depth (Linux: /proc/PID/task/TID/children)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except (OSError, ValueError):
                continue
            todo += kids - found
            found |= kids
    return found


# --- orch trial on API models on loopback -------------------------------------------------------------------
TRIAL_TIMING = {
    "compute_s_per_1k",
    "compute_alone_s_per_1k",
    "p50_ttft_ms",
    "tokens_per_s",
    "judge_compute_s",
}
ITEM_TIMING = {"compute_ms", "ttft_ms", "generation_ms", "judge_compute_ms", "own_compute_ms"}
MORE_ITEMS = [
    *ITEMS,
    ("The card I ordered last week has not come", "card_arrival"),
    ("Stolen card!", "lost_or_stolen_card"),
]


def trial_project(tmp_path: Path, url: str) -> tuple[Path, Path]:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.orchestrator]
            [tool.orchestrator.slots.classify]
            model = "openai-compat:current"
            base_url = "{url}"
            prices = {{ input = 1e-6, output = 4e-6 }}
            [tool.orchestrator.slots.controller]
            model = "openai-compat:big"
            base_url = "{url}"
            role = "racehorse"
            prices = {{ input = 1e-5, output = 4e-5 }}
            """
        )
    )
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"input": i, "expected": e}) + "\n" for i, e in MORE_ITEMS))
    return project, data


def without(keys: set[str], data: Any) -> Any:
    """`data` with those keys dropped at every depth."""
    if isinstance(data, dict):
        return {k: without(keys, v) for k, v in data.items() if k not in keys}
    if isinstance(data, list):
        return [without(keys, v) for v in data]
    return data


def steady(request: Request) -> Reply:
    """`labeller`, every reply's first token 150 ms after the request: the verdict's latency test ("faster":
    at most 80 % of the other's p50 TTFT) then compares like with like, whichever process makes the call."""
    return dataclasses.replace(labeller(request), first_event_delay=0.15)


def test_trial_with_two_workers_equals_the_serial_run(loopback: Loopback, tmp_path: Path) -> None:
    loopback.handle("/v1/chat/completions", steady)
    url = loopback.url + "/v1"
    project, data = trial_project(tmp_path, url)
    args = ["trial", "openai-compat:small", "--base-url", url, "--price-as", "gpt-4o-mini"]
    args += ["--worker", "classify", "--data", str(data), "--json"]
    serial = orch_cli(project, *args)
    assert serial.returncode == 0, serial.stderr
    fanned = orch_cli(project, *args, "--workers", "2")
    assert fanned.returncode == 0, fanned.stderr
    one, two = json.loads(serial.stdout), json.loads(fanned.stdout)
    assert one["items"] == len(MORE_ITEMS) and one["escalation_rate"] > 0 and one["cost_per_1k_usd"] > 0
    assert one["baseline"] is not None and one["sides"] is not None  # all three passes ran
    for report in (one, two):  # the TTFTs the verdict quotes are times: they differ
        report["verdict_why"] = re.sub(r"p50 TTFT [^(]*", "p50 TTFT ", report["verdict_why"])
    assert without(TRIAL_TIMING, two) == without(TRIAL_TIMING, one)


async def test_a_trials_items_from_workers_equal_the_serial_ones_item_by_item(
    loopback: Loopback, tmp_path: Path
) -> None:
    from orchestrator import Orchestrator, Settings
    from orchestrator.evals.trial import TrialReport, run_trial

    loopback.handle("/v1/chat/completions", labeller)
    url = loopback.url + "/v1"
    project, _ = trial_project(tmp_path, url)
    items = [{"input": i, "expected": e} for i, e in MORE_ITEMS]
    settings = Settings(traces_path=tmp_path / "t.db", checkpoints_path=tmp_path / "c.db")
    orch = Orchestrator.from_project(project, settings=settings, tracing=False)
    finished: list[str] = []

    async def trial(workers: int) -> TrialReport:
        return await run_trial(
            orch,
            "openai-compat:small",
            "classify",
            items,
            base_url=url,
            price_as="gpt-4o-mini",
            workers=workers,
            on_item=lambda item: finished.append(item.input),
        )

    try:
        fanned = await trial(2)
        assert orch._models == {}  # the worker processes made the models; none was loaded here to sit idle
        serial = await trial(1)
    finally:
        orch.close()
    for side in ("items", "baseline", "racehorse"):
        mine = serial.items if side == "items" else getattr(serial, side).items
        theirs = fanned.items if side == "items" else getattr(fanned, side).items
        assert [without(ITEM_TIMING, asdict(i)) for i in theirs] == [
            without(ITEM_TIMING, asdict(i)) for i in mine
        ]
        assert [i.input for i in theirs] == [i for i, _ in MORE_ITEMS]
    assert sorted(finished) == sorted([i for i, _ in MORE_ITEMS] * 6)  # 3 passes, twice: each item seen


async def test_workers_need_a_project_and_a_count_of_one_or_more(tmp_path: Path) -> None:
    from orchestrator import Orchestrator, Settings
    from orchestrator.evals.evaluate import Task, evaluate

    settings = Settings(
        traces_path=tmp_path / "t.db", checkpoints_path=tmp_path / "c.db", capture_content=True
    )
    orch = Orchestrator(settings=settings)
    try:
        with pytest.raises(ConfigError, match=r"workers must be a whole number, 1 or more \(got 0\)"):
            await evaluate(orch, "agent", [Task("q", expect=("1",))], workers=0)
        with pytest.raises(ConfigError, match=r"Orchestrator.from_project\(folder\), or run with workers=1"):
            await evaluate(orch, "agent", [Task("q", expect=("1",))], workers=2)
    finally:
        orch.close()


def test_trial_tune_with_two_workers_chooses_the_serial_runs_threshold(
    loopback: Loopback, tmp_path: Path
) -> None:
    from test_tune import TUNE_ITEMS, project, sure_server

    sure_server(loopback)
    url = loopback.url + "/v1"
    slots = (
        f'classify = {{ model = "openai-compat:small", base_url = "{url}", prices = {{ input = 1e-6, '
        "output = 1e-6 } }\n"
        f'controller = {{ model = "openai-compat:big", base_url = "{url}", role = "racehorse", '
        "prices = { input = 1e-5, output = 1e-5 } }\n"
    )
    root = project(tmp_path, 'worker_settings = "tuned.json"\n', slots)
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"input": i, "expected": e}) + "\n" for i, e in TUNE_ITEMS * 2))
    args = ["trial", "openai-compat:small", "--base-url", url, "--worker", "triage", "--data", str(data)]
    outs, saved = [], []
    for workers in ("1", "2"):
        (root / "tuned.json").unlink(missing_ok=True)  # each run tunes from the same start
        proc = orch_cli(root, *args, "--tune", "--json", "--workers", workers)
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads(proc.stdout))
        saved.append(json.loads((root / "tuned.json").read_text())["triage"])
    one, two = outs
    assert 0.3 < one["tuning"]["min_margin"] <= 4.99 and one["tuning"]["met"]
    assert without(TRIAL_TIMING, two) == without(TRIAL_TIMING, one)
    assert saved[1]["min_margin"] == saved[0]["min_margin"]


def test_a_judged_trial_with_two_workers_equals_the_serial_run(loopback: Loopback, tmp_path: Path) -> None:
    """`--judge`: the judge is calibrated once, in the command's process; each worker process judges its
    items' outputs with its own judge model. Scores, reasons and the judge's cost are the serial run's."""
    from test_trial_judge import _project, _trial, scripted

    loopback.handle("/v1/chat/completions", scripted)
    project = _project(tmp_path, loopback.url + "/v1")
    runs = []
    for workers in ("1", "2"):
        proc = _trial(tmp_path, project, "--judge", "--no-compare", "--json", "--workers", workers)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    one, two = runs
    assert one["judged_items"] == 4 and one["judge_auc"] == 1.0 and one["judge_cost_usd"] > 0
    assert two["judge_calibration"]["cached"]  # measured by the first run, read from the cache by the second
    calibration = {"cached", "wall_s", "created", "compute_s"}
    assert without(TRIAL_TIMING | calibration, two) == without(TRIAL_TIMING | calibration, one)


# --- fan_out itself, on a runner of this module (the worker processes import it) ---------------------------
class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickle rebuilds it with one argument: it can't
        super().__init__(f"{a} and {b}")


@dataclasses.dataclass(frozen=True)
class Square:
    """Squares a number in whichever process calls it; 3 raises a ValueError, 4 an exception that can't
    cross a pipe."""

    def __call__(self, n: int) -> tuple[int, int]:
        if n == 3:
            raise ValueError("three is refused")
        if n == 4:
            raise Unpicklable(4, 4)
        return n * n, os.getpid()


async def test_fan_out_keeps_the_items_order_and_raises_what_the_runner_raises() -> None:
    from orchestrator.errors import RunError
    from orchestrator.evals.fanout import fan_out

    seen: list[int] = []
    results = await fan_out(
        Square(), [5, 1, 2, 7], 2, failed=lambda n, why: (-1, 0), on_result=lambda i, r: seen.append(i)
    )
    assert [r[0] for r in results] == [25, 1, 4, 49] and sorted(seen) == [0, 1, 2, 3]
    assert os.getpid() not in {r[1] for r in results}  # run in worker processes
    with pytest.raises(ValueError, match="three is refused"):
        await fan_out(Square(), [1, 3, 2], 2, failed=lambda n, why: (-1, 0))
    with pytest.raises(RunError, match="in a worker process: Unpicklable: 4 and 4"):
        await fan_out(Square(), [4], 3, failed=lambda n, why: (-1, 0))
    assert await fan_out(Square(), [], 2, failed=lambda n, why: (-1, 0)) == []


# --- orch eval --fleet: the tasks as runs on the fleet's queue ---------------------------------------------
def test_eval_on_the_fleets_queue_equals_the_serial_run_item_by_item(
    loopback: Loopback, tmp_path: Path, pg_url: str
) -> None:
    pytest.importorskip("dbos")
    loopback.handle("/v1/chat/completions", Controller())
    project, data = eval_project(tmp_path, loopback.url + "/v1")
    env = {"ORCH_CHECKPOINTS": pg_url}
    serial = orch_cli(project, "eval", "--data", str(data), "--json", env=env)
    assert serial.returncode == 0, serial.stderr
    full_env = {**os.environ, "ORCH_TRACES": str(project / "traces.db"), **env}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "--project", str(project), "worker", "--id", f"w{i}"],
            env=full_env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2)
    ]
    try:
        fleet = orch_cli(project, "eval", "--data", str(data), "--json", "--fleet", env=env)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        logs = [w.communicate(timeout=120)[1] for w in workers]
    assert fleet.returncode == 0, (fleet.stderr, logs)
    assert same_eval(json.loads(fleet.stdout)) == same_eval(json.loads(serial.stdout))
    # the workers ran them (both took some), recording the content the evaluation reads from the spans
    import psycopg

    with psycopg.connect(pg_url) as conn:
        ran = conn.execute(
            "select executor_id, count(*) from dbos.workflow_status where name = 'orch_run' group by 1"
        ).fetchall()
    assert sum(n for _, n in ran) == len(TASKS) and {w for w, _ in ran} <= {"w1", "w2"}, ran
    both = orch_cli(project, "eval", "--data", str(data), "--fleet", "--workers", "2", env=env)
    assert both.returncode == 2 and "not both" in both.stderr


def test_a_tool_call_waiting_for_approval_is_approved_through_the_fleets_queue(
    loopback: Loopback, tmp_path: Path, pg_url: str
) -> None:
    """The bundled agent with `confirm_tools`: its run waits for a person's yes; `orch submit --resume RUN
    --approve TOOL` puts the answer on the queue, and a worker resumes the run to its answer."""
    pytest.importorskip("dbos")
    loopback.handle("/v1/chat/completions", Controller())
    project, _ = eval_project(tmp_path, loopback.url + "/v1")
    manifest = project / "pyproject.toml"
    manifest.write_text(
        manifest.read_text().replace(
            'tool_packs = ["defs:TOOLS"]', 'tool_packs = ["defs:TOOLS"]\nconfirm_tools = ["date_diff"]'
        )
    )
    env = {"ORCH_CHECKPOINTS": pg_url}
    full_env = {**os.environ, "ORCH_TRACES": str(project / "traces.db"), **env}
    worker = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "--project", str(project), "worker", "--id", "w1"],
        env=full_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        asked = orch_cli(
            project,
            "submit",
            f"How many days from {TASKS[0][2]} to {TASKS[0][3]}?",
            "--run-id",
            "needs-yes",
            "--wait",
            "--json",
            env=env,
        )
        assert asked.returncode == 3, asked.stderr  # waiting
        waiting = json.loads(asked.stdout)
        assert waiting["status"] == "waiting"
        assert waiting["waiting"][0]["value"]["calls"][0]["tool"] == "date_diff"
        assert "orch submit --resume needs-yes --approve TOOL" in asked.stderr
        done = orch_cli(
            project, "submit", "--resume", "needs-yes", "--approve", "date_diff", "--wait", "--json", env=env
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        _, log = worker.communicate(timeout=120)
    assert done.returncode == 0, (done.stderr, log)
    result = json.loads(done.stdout)
    assert result["status"] == "ok" and result["answer"].startswith("18"), result
