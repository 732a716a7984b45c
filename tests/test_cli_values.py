"""Numbers and ids that can't be right are refused before anything runs: exit 2 naming the option and the
value (CLI), `ValueError` naming the field and the value (Python)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from loopback import Loopback
from test_ask import orch as ask
from test_cli import STEPS, TASK, orch
from test_cli_hardening import _project
from test_rendering import _fill

from orchestrator import cli
from orchestrator.config import Limits, SlotConfig
from orchestrator.cost.ledger import Budget, SharedBudget
from orchestrator.tracing.store import TraceStore

NAN, INF = math.nan, math.inf


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return _project(tmp_path / "proj", STEPS)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--budget-usd", "-1"),
        ("--budget-usd", "nan"),
        ("--budget-usd", "inf"),
        ("--budget-tokens", "-5"),
        ("--budget-tokens", "1.5"),
        ("--budget-seconds", "-1"),
        ("--budget-seconds", "nan"),
        ("--max-steps", "-3"),
        ("--max-steps", "0"),
        ("--run-id", ""),
    ],
)
def test_run_refuses_a_budget_or_a_limit_that_cant_be_right(project: Path, option: str, value: str) -> None:
    proc = orch(project, "run", "agent", TASK, "--json", option, value)
    assert proc.returncode == 2, proc.stdout
    assert f"argument {option}: got {value!r}; give " in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (project / "traces.db").exists()  # refused before a run started


def test_the_budgets_that_are_right_still_run(project: Path) -> None:
    proc = orch(project, "run", "agent", TASK, "--json", "--budget-usd", "0.5", "--budget-tokens", "100000")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "ok"
    stopped = orch(project, "run", "agent", TASK, "--json", "--max-steps", "1")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["status"] == "budget_stop"


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-tokens", "-5"), ("--max-tokens", "0"), ("--temperature", "nan"), ("--temperature", "-1")],
)
def test_ask_sends_nothing_for_a_bad_number(loopback: Loopback, option: str, value: str) -> None:
    proc = ask("openai:gpt-4o-mini", "hi", "--base-url", loopback.url + "/v1", option, value)
    assert proc.returncode == 2
    assert f"argument {option}: got {value!r}; give " in proc.stderr and "Traceback" not in proc.stderr
    assert loopback.requests == []


def test_eval_refuses_a_share_above_one_and_a_negative_limit(project: Path) -> None:
    data = project / "tasks.jsonl"
    data.write_text(json.dumps({"id": "days", "input": TASK, "expect": ["18"]}) + "\n")
    for option, value in (("--min-accuracy", "7"), ("--min-accuracy", "nan"), ("--limit", "-1")):
        proc = orch(project, "eval", "--data", str(data), option, value)
        assert proc.returncode == 2 and f"argument {option}: got {value!r}; give " in proc.stderr
        assert "right days" not in proc.stderr  # no task ran


# Every numeric or id option of every command, in process (argparse refuses them before a command starts;
# run in an empty folder, so that without the checks nothing is found to run either).
BAD = [
    (["run", "x", "--budget-usd", "-0.5"], "--budget-usd", "-0.5"),
    (["run", "x", "--resume", ""], "--resume", ""),
    (["run", "x", "--approve", " "], "--approve", " "),
    (["run", "", "x"], "graph", ""),
    (["run", "x", "--traces", ""], "--traces", ""),
    (["eval", "--data", "t.jsonl", "--limit", "0"], "--limit", "0"),
    (["eval", "--data", "t.jsonl", "--min-accuracy", "-0.1"], "--min-accuracy", "-0.1"),
    (["eval", "--data", "t.jsonl", "--min-accuracy", "inf"], "--min-accuracy", "inf"),
    (["eval", "--data", ""], "--data", ""),
    (["eval", "--data", "t.jsonl", "--workers", "0"], "--workers", "0"),
    (["eval", "--data", "t.jsonl", "--workers", "-3"], "--workers", "-3"),
    (["trial", "local:x", "--worker", "w", "--data", "d", "--limit", "-2"], "--limit", "-2"),
    (["trial", "local:x", "--worker", "", "--data", "d"], "--worker", ""),
    (["trial", "local:x", "--worker", "w", "--data", "d", "--workers", "0"], "--workers", "0"),
    (["trial", "local:x", "--worker", "w", "--data", "d", "--price-as", ""], "--price-as", ""),
    (["ask", "openai:gpt-4o-mini", "hi", "--max-tokens", "ten"], "--max-tokens", "ten"),
    (["ask", "openai:gpt-4o-mini", "hi", "--temperature", "inf"], "--temperature", "inf"),
    (["ask", "openai:gpt-4o-mini", "hi", "--base-url", ""], "--base-url", ""),
    (["traces", "list", "--limit", "-3"], "--limit", "-3"),
    (["traces", "list", "--limit", "0"], "--limit", "0"),
    (["traces", "show", ""], "run", ""),
    (["traces", "top", "--last", "0"], "--last", "0"),
    (["traces", "top", "--run", ""], "--run", ""),
    (["traces", "top", "--graph", ""], "--graph", ""),
    (["traces", "reprice", "--last", "-1", "--model", "m"], "--last", "-1"),
    (["traces", "reprice", "r", "--model", ""], "--model", ""),
    (["traces", "compare", "a", ""], "run_b", ""),
    (["traces", "report", "--last", "0", "--html", "r.html"], "--last", "0"),
    (["tools", "search", "q", "--no-packs", "--index", "i.db", "--k", "0"], "--k", "0"),
    (["tools", "eval", "--catalog", "c", "--queries", "q", "--k", "-1"], "--k", "-1"),
    (["models", "list", "--provider", ""], "--provider", ""),
    (["init", "--name", ""], "--name", ""),
    (["--project", "", "models"], "--project", ""),
]


@pytest.mark.parametrize(("argv", "option", "value"), BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_every_command_refuses_a_bad_number_or_id(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    option: str,
    value: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_TRACES", str(tmp_path / "traces.db"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: got {value!r}; give " in err, err
    assert len(err.strip().splitlines()[-1]) < 200  # argparse's one line under the usage


@pytest.mark.parametrize(
    "kwargs",
    [
        {"usd": -1},
        {"usd": NAN},
        {"usd": INF},
        {"tokens": -5},
        {"tokens": 2.5},
        {"tokens": True},
        {"seconds": -1},
        {"seconds": NAN},
        {"steps": 0},
        {"steps": -3},
        {"usd": "1"},
    ],
)
def test_budget_refuses_what_cant_be_right(kwargs: dict[str, object]) -> None:
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError, match=rf"Budget\({name}={value!r}\): give a (whole|finite) number"):
        Budget(**kwargs)  # type: ignore[arg-type]
    if name in ("usd", "tokens"):
        with pytest.raises(ValueError, match=rf"SharedBudget\({name}={value!r}\)"):
            SharedBudget(**kwargs)  # type: ignore[arg-type]


def test_budget_keeps_zero_and_none() -> None:
    assert Budget(usd=0, tokens=0, seconds=0, steps=1) == Budget(usd=0.0, tokens=0, seconds=0.0, steps=1)
    assert Budget().usd is None and SharedBudget(usd=0.0, tokens=0).usd == 0.0


@pytest.mark.parametrize("kwargs", [{"deadline_s": INF}, {"tool_timeout_s": INF}, {"deadline_s": NAN}])
def test_limits_refuse_an_infinite_or_nan_time(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Limits(**kwargs)  # type: ignore[arg-type]


def test_slot_temperature_refuses_nan_and_negatives() -> None:
    for value in (NAN, INF, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            SlotConfig(model="openai:gpt-4o-mini", temperature=value)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("deadline_s = inf", "deadline_s"),
        ("tool_timeout_s = nan", "tool_timeout_s"),
        ("max_steps = -5", "max_steps"),
    ],
)
def test_the_manifest_refuses_them_too(project: Path, line: str, field: str) -> None:
    manifest = project / "pyproject.toml"
    manifest.write_text(manifest.read_text().replace("max_steps = 8", line))
    proc = orch(project, "run", "agent", TASK)
    assert proc.returncode == 2 and f"limits.{field}" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["top", "--since", "nanm"], "--since 'nanm' must be more than zero and finite"),
        (["top", "--since", "infd"], "--since 'infd' must be more than zero and finite"),
        (["prune", "--older-than", "nanh"], "--older-than 'nanh' must be more than zero and finite"),
        (["prune", "--older-than", "0d"], "--older-than '0d' must be more than zero and finite"),
    ],
)
def test_a_duration_must_be_finite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    db = tmp_path / "traces.db"
    _fill(db, "x")
    assert cli.main(["traces", *argv, "--traces", str(db)]) == 2
    assert message in capsys.readouterr().err
    store = TraceStore(db)
    assert len(store.list_runs()) == 1  # nothing pruned
    store.close()
