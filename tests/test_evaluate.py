"""`orch eval`: task files, matching rules, scoring, and whole evaluations on scripted models."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from orchestrator import Orchestrator
from orchestrator.errors import ConfigError
from orchestrator.evals.evaluate import Task, evaluate, load_tasks, matches, score
from support import MakeOrch, act


@pytest.mark.parametrize(
    ("answer", "item", "ok"),
    [
        ("It is 22 degrees.", "22", True),
        ("It is 122 degrees.", "22", False),  # numbers match as numbers
        ("It is 22.22 degrees.", "22.2", True),  # rounds to the expected precision
        ("It is 22.26 degrees.", "22.2", False),
        ("about 22.4", "22", True),
        ("There are 7006652 people.", "7,006,652", True),
        ("There are 7,006,652 people.", "7006652", True),
        ("A loss of -3.5%.", "-3.5", True),
        ("A loss of 3.5%.", "-3.5", False),
        ("12.5% more", "12.5%", True),
        ("It falls on 2026-02-28.", "2026-02-28", True),
        ("It falls on February 28, 2026.", "2026-02-28", True),
        ("It falls on 28 February 2026.", "2026-02-27", False),
        ("The label is card_arrival.", "CARD_ARRIVAL", True),
        ("The label is card arrival.", "card_arrival", False),
        ("I can’t answer that.", "can't", True),  # curly and straight quotes alike
        ("The total is 1,080.", "1080", True),
        ("Answer: 2026", "2026-01-01", False),
    ],
)
def test_matching_rules(answer: str, item: str, ok: bool) -> None:
    assert matches(answer, item) is ok


def test_score_needs_any_of_expect_all_of_expect_all_and_none_of_forbid() -> None:
    task = Task("q", expect=("18", "eighteen"), expect_all=("days",), forbid=("card_arrival",))
    assert score("There are 18 days.", task).ok
    verdict = score("There are 18 hours; card_arrival.", task)
    assert not verdict.ok
    assert verdict.missing == ["days"]
    assert verdict.forbidden == ["card_arrival"]
    assert not score(None, task).ok


def test_load_tasks_reads_ids_categories_and_single_values(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"id": "a", "category": "units", "input": "72 F in C?", "expect": ["22.2"]}\n\n'
        '{"input": "2+2?", "expect_all": 4, "forbid": ["5"]}\n'
    )
    first, second = load_tasks(path)
    assert (first.id, first.category, first.expect) == ("a", "units", ("22.2",))
    assert (second.id, second.expect_all, second.forbid) == ("t-3", ("4",), ("5",))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "t.jsonl:1: not valid JSON"),
        ("[1, 2]", "t.jsonl:1: a task must be a JSON object, got list"),
        ('{"expect": ["1"]}', 't.jsonl:1: "input" must be a non-empty string'),
        ('{"input": "q"}', 't.jsonl:1: a task needs "expect" (any of) or "expect_all" (all of)'),
        ('{"input": "q", "expect": [true]}', 't.jsonl:1: "expect" must be a list of strings or numbers'),
        ('{"input": "q", "forbid": {"a": 1}, "expect": ["x"]}', '"forbid" must be a list'),
    ],
)
def test_bad_task_files_get_a_clear_error(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        load_tasks(path)


def test_missing_and_empty_task_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_tasks(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="holds no tasks"):
        load_tasks(tmp_path / "empty.jsonl")


PLAN_DIFF = json.dumps({"plan": [{"tool": "days between 2026-03-02 and 2026-03-20"}]})
CALL = act(action="call_tool", tool="date_diff", args={"start": "2026-03-02", "end": "2026-03-20"})
INVENTED = act(action="call_tool", tool="date_diff", args={"start": "2026-01-01", "end": "2026-03-20"})


def _capturing(orch: Orchestrator) -> Orchestrator:
    orch.settings = dataclasses.replace(orch.settings, capture_content=True)
    return orch


async def test_evaluate_scores_each_task_with_steps_time_and_tokens(make_orch: MakeOrch) -> None:
    orch = _capturing(
        make_orch([PLAN_DIFF, CALL, act(action="final", answer="There are 18 days.")], by_turn=True)
    )
    tasks = [Task("Days from 2026-03-02 to 2026-03-20?", expect=("18",), forbid=("card_arrival",), id="d1")]
    seen: list[str] = []
    report = await evaluate(orch, "agent", tasks, on_result=lambda r: seen.append(r.id))
    (result,) = report.tasks
    assert seen == ["d1"]
    assert (result.ok, result.status, result.answer) == (True, "ok", "There are 18 days.")
    assert result.steps == [
        "controller:find_tools",
        "find_tools",
        "controller:call_tool",
        "call_tool:date_diff",
        "controller:final",
    ]
    assert result.ungrounded == []
    assert result.input_tokens > 0 and result.seconds > 0
    totals = report.totals()
    assert (totals["tasks"], totals["right"], totals["accuracy"]) == (1, 1, 1.0)
    assert report.by_category() == {"-": totals}


async def test_evaluate_counts_ungrounded_steps_from_the_spans(make_orch: MakeOrch) -> None:
    # The model invents a start date twice (the repair does not help): the call is refused, not run.
    orch = _capturing(
        make_orch(
            [PLAN_DIFF, INVENTED, INVENTED],
            by_turn=True,
        )
    )
    report = await evaluate(orch, "agent", [Task("Days from 2026-03-02 to 2026-03-20?", expect=("18",))])
    (result,) = report.tasks
    assert not result.ok
    assert result.ungrounded == []  # nothing ungrounded ran
    assert "call_tool:date_diff" not in result.steps
    assert result.answer == (
        "I can't answer that with my tools and workers (not called: a value in its arguments is in neither "
        "the request nor an observation)."
    )


async def test_evaluate_needs_content_capture(make_orch: MakeOrch) -> None:
    with pytest.raises(ConfigError, match="capture_content"):
        await evaluate(make_orch([]), "agent", [Task("q", expect=("1",))])


def test_ungrounded_steps_are_found_in_any_run_spans(tmp_path: Path) -> None:
    """The eval reads grounding from spans, whatever graph made them: a tool call with an invented date, a
    worker given text nobody wrote, and an answer with a number no observation gives."""
    from orchestrator.evals.evaluate import steps_and_grounding
    from orchestrator.toolsets.catalog import Catalog
    from orchestrator.tracing.store import TraceStore
    from support import TOOLS

    store = TraceStore(tmp_path / "t.db")
    rows = [
        ("node", "n1", {"orchestrator.node": "lookup"}),
        (
            "tool",
            "date_diff",
            {
                "gen_ai.tool.call.arguments": json.dumps({"start": "2026-01-01", "end": "2026-03-20"}),
                "gen_ai.tool.call.result": "78",
            },
        ),
        ("node", "worker", {"gen_ai.agent.name": "triage", "orchestrator.worker.input": "text nobody wrote"}),
        ("tool", "word_count", {"gen_ai.tool.call.arguments": json.dumps({"text": "one two three"})}),
    ]
    store.write_spans(
        [
            {
                "span_id": f"s{i}",
                "run_id": "r1",
                "name": name,
                "kind": kind,
                "node": attributes.get("orchestrator.node", name if kind == "node" else "call_tool"),
                "tool": name if kind == "tool" else None,
                "start_ns": i,
                "status": "ok",
                "attributes": json.dumps(attributes),
            }
            for i, (kind, name, attributes) in enumerate(rows)
        ]
    )
    request = "Days from 2026-03-02 to 2026-03-20? Count the words of 'one two three'."
    steps, problems = steps_and_grounding(
        store, Catalog.from_tools(TOOLS), "r1", request, "It is 78 or 80 days."
    )
    assert steps == ["lookup", "worker:triage"]
    assert problems == [
        "date_diff: start='2026-01-01': the date 2026-01-01 is in neither the request nor an observation",
        "triage: the worker input 'text nobody wrote' is not a span of the request or an observation",
        "answer: the number 80 is in neither the request nor an observation",
    ]
