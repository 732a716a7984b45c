"""Plans that compose: a part uses an earlier part's result, is given its value, and the answer states the
last result; a part's result must answer the part (an average is not a sum), checked in code.

The bugs, on the local default: "17% of 850, plus 42" answered "144.5" and "add 42 to the result: could not
be done"; the average of six numbers answered their sum; the median of six numbers answered their mean.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from langchain_core.tools import BaseTool, tool
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.agent.controller import fallback_answer
from orchestrator.agent.decisions import DecisionError, parse_plan
from orchestrator.agent.plan import Part, new_part, plan_json, plan_schema, stated_parts
from orchestrator.toolsets.catalog import Catalog
from orchestrator.workers.grounding import Evidence, check_tool_args
from orchestrator.workers.operations import answering, check_statistic, check_tool_fits
from support import MakeOrch, act
from tools.arithmetic import calculate
from tools.catalog import PLAN_EXAMPLES, TOOLS
from tools.stats import summary_statistics


@tool
def sum_numbers(numbers: list[float]) -> float:
    """Add up a list of numbers."""
    return sum(numbers)


@tool
def count_items(items: list[str]) -> int:
    """Count the items of a list."""
    return len(items)


def plan(*parts: dict[str, Any]) -> str:
    return json.dumps({"plan": list(parts)})


def call(name: str, **args: Any) -> str:
    return act(action="call_tool", tool=name, args=args)


def final(answer: str) -> str:
    return act(action="final", answer=answer)


def executed(spans: InMemorySpanExporter) -> list[str]:
    return [
        s.name.removeprefix("execute_tool ")
        for s in spans.get_finished_spans()
        if s.name.startswith("execute_tool")
    ]


class Recorder:
    """A scripted reply that records the last message it was asked with (the step's instruction)."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.asked: list[str] = []
        self.seen: list[str] = []  # every message of every prompt it was asked with

    def __call__(self, messages: Sequence[BaseMessage]) -> str:
        self.asked.append(str(messages[-1].content))
        self.seen.extend(str(m.content) for m in messages)
        return self.reply


PERCENT_PLUS = "What is 17% of 850, plus 42?"


@pytest.mark.parametrize(
    "second",
    [
        {"tool": "add 42 to the result", "uses": [1]},  # the plan says so
        {"tool": "add 42 to the result"},  # its words say so (a small model leaves `uses` out)
    ],
)
async def test_a_part_is_given_the_result_it_uses_and_the_answer_states_the_last(
    make_orch: MakeOrch, second: dict[str, Any]
) -> None:
    add = Recorder(call("calculate", expression="144.5 + 42"))
    answer = Recorder(final("17% of 850, plus 42, is 186.5."))
    orch = make_orch(
        [
            plan({"tool": "calculate 17/100*850"}, second),
            call("calculate", expression="17/100*850"),
            add,
            answer,
        ],
        tools=[calculate],
    )
    result = await orch.arun("agent", PERCENT_PLUS)
    assert result.status == "ok", result.error
    assert add.asked == [
        "Part 2 of 2: add 42 to the result. The result of part 1 is 144.5. "
        "Call the found tool that does it, or skip."
    ]
    # the answer is asked for the last result only, and stating it alone is a complete answer
    assert answer.asked == [f"Request: {PERCENT_PLUS}\nResults:\n- add 42 to the result: 186.5"]
    assert result.answer == "17% of 850, plus 42, is 186.5."


async def test_a_total_uses_every_part_it_names(make_orch: MakeOrch) -> None:
    add = Recorder(call("calculate", expression="7200 + 900"))
    steps = [
        plan(
            {"tool": "calculate 2*3600"},
            {"tool": "calculate 15*60"},
            {"tool": "add the two results"},  # plural: every earlier part
        ),
        call("calculate", expression="2*3600"),
        call("calculate", expression="15*60"),
        add,
        final("2 hours and 15 minutes are 8100 seconds."),
    ]
    result = await make_orch(steps, tools=[calculate]).arun(
        "agent", "How many seconds are 2 hours and 15 minutes?"
    )
    assert result.answer == "2 hours and 15 minutes are 8100 seconds.", result.answer
    assert add.asked == [
        "Part 3 of 3: add the two results. The result of part 1 is 7200. The result of part 2 is 900. "
        "Call the found tool that does it, or skip."
    ]


async def test_a_part_whose_used_result_failed_fails_without_a_model_call(make_orch: MakeOrch) -> None:
    steps = [
        plan({"tool": "wind speed in Oslo"}, {"tool": "add 42 to the result", "uses": [1]}),
        act(action="skip", reason="no tool gives the weather"),  # asked to search again in other words
    ]
    result = await make_orch(steps, tools=[calculate]).arun("agent", "The wind speed in Oslo plus 42?")
    assert result.answer == (
        "I can't answer that with my tools and workers (no tool gives the weather; it needs the result of an "
        "earlier part, which could not be done)."
    )
    assert result.ledger.by_node()[0].calls == 2  # the plan, the first part's skip: none for the second


async def test_an_answer_must_say_the_step_after_a_stated_result_could_not_be_done(
    make_orch: MakeOrch,
) -> None:
    passed_off = Recorder(final("The median of 3, 7, 10, 10, 15 and 27, plus 5, is 10."))
    steps = [
        plan({"tool": "median of 3, 7, 10, 10, 15 and 27"}, {"tool": "add 5 to the result", "uses": [1]}),
        call("summary_statistics", numbers=[3, 7, 10, 10, 15, 27]),
        act(action="skip", reason="no found tool adds numbers"),
        passed_off,
        final("The median is 10; adding 5 could not be done."),
    ]
    result = await make_orch(steps, tools=[summary_statistics]).arun("agent", MEDIAN_PLUS)
    assert passed_off.asked == [
        f"Request: {MEDIAN_PLUS}\nResults:\n- median of 3, 7, 10, 10, 15 and 27: 10.0\n"
        "- add 5 to the result: could not be done"
    ]
    assert result.answer == "The median is 10; adding 5 could not be done.", result.answer


MEDIAN_PLUS = "What is the median of 3, 7, 10, 10, 15 and 27, plus 5?"


def test_a_tool_part_that_became_a_worker_part_uses_nothing() -> None:
    # a small model names a worker as a tool part; the worker gets the request's text, no earlier result
    worker: Part = {**new_part(worker="classify_request", text="x y", uses=[0]), "status": "done"}
    first: Part = {**new_part(tool="calculate 2*3"), "status": "done", "result": "6"}
    assert stated_parts([first, worker]) == [0, 1]


def test_the_answer_states_a_used_result_when_its_user_failed() -> None:
    first: Part = {**new_part(tool="calculate 17/100*850"), "status": "done", "result": "144.5"}
    second: Part = {**new_part(tool="add 42 to the result", uses=[0]), "status": "done", "result": "186.5"}
    evidence = Evidence(PERCENT_PLUS, ["144.5", "186.5"])
    assert stated_parts([first, second]) == [1]
    assert fallback_answer([first, second], evidence) == "Results: add 42 to the result: 186.5."
    failed: Part = {**second, "status": "failed", "result": ""}
    assert stated_parts([first, failed]) == [0, 1]
    assert fallback_answer([first, failed], evidence) == (
        "Results: calculate: 144.5; add 42 to the result: could not be done."
    )


# --- the plan says which results a part uses ------------------------------------------------------------
def test_uses_are_parsed_as_earlier_parts_and_written_back_from_one() -> None:
    parsed = parse_plan(
        plan({"tool": "a b c"}, {"tool": "d e f", "uses": [1]}, {"tool": "g h i", "uses": 2}), []
    )
    assert [p["uses"] for p in parsed.plan] == [[], [0], [1]]
    assert json.loads(plan_json(parsed.plan))["plan"][1:] == [
        {"tool": "d e f", "uses": [1]},
        {"tool": "g h i", "uses": [2]},
    ]


@pytest.mark.parametrize("uses", [[2], [3], [0], ["1"], [True], None, "x"])
def test_a_use_that_names_no_earlier_part_is_dropped_not_refused(uses: Any) -> None:
    parsed = parse_plan(plan({"tool": "a b c"}, {"tool": "d e f", "uses": uses}), [])
    assert parsed.plan[1]["uses"] == []


def test_a_use_of_a_worker_item_with_several_texts_names_each_of_its_parts() -> None:
    reply = plan(
        {"worker": "extract", "text": ["one two", "three four"]}, {"tool": "add the amounts", "uses": [1]}
    )
    parsed = parse_plan(reply, ["extract"])
    assert [p["uses"] for p in parsed.plan] == [[], [], [0, 1]]
    with pytest.raises(DecisionError):
        parse_plan(plan({"tool": "a b c", "uses": [1]}, {"worker": "nobody", "text": "x y"}), ["extract"])


@pytest.mark.parametrize(
    ("words", "uses"),
    [
        ("add 42 to the result", [1]),
        ("divide the previous result by 3", [1]),
        ("add the two results", [0, 1]),
        ("add the results of parts 1 and 2", [0, 1]),
        ("multiply the result of part 1 by 3", [0]),
        ("convert 3 hours to seconds", []),  # no reference: its own values
        ("calculate 12**2", []),
    ],
)
def test_a_part_that_refers_to_an_earlier_result_uses_it(words: str, uses: list[int]) -> None:
    parsed = parse_plan(plan({"tool": "calculate 5*5"}, {"tool": "calculate 6*6"}, {"tool": words}), [])
    assert parsed.plan[2]["uses"] == uses


def test_the_plan_schema_offers_uses_for_tool_parts() -> None:
    schema = plan_schema(["classify"], ["my card has not arrived"])
    tool_part = schema["properties"]["plan"]["items"]["anyOf"][0]
    assert tool_part["required"] == ["tool"]
    assert tool_part["properties"]["uses"]["items"] == {"enum": [1, 2, 3]}


def test_every_worked_example_parses_and_uses_only_earlier_parts() -> None:
    for example in PLAN_EXAMPLES:
        parsed = parse_plan(example.reply(), [])
        written = [p.get("uses", []) for p in example.plan]
        assert [[i + 1 for i in p["uses"]] for p in parsed.plan] == written, example.request
    assert sum(1 for e in PLAN_EXAMPLES if any("uses" in p for p in e.plan)) >= 3


def test_a_result_a_model_writes_rounded_is_grounded() -> None:
    evidence = Evidence("What is 1 divided by 3, times 7?", ["0.333333333333"])
    assert check_tool_args({"x": 0.333333333333}, {}, evidence) == []
    assert check_tool_args({"x": 0.33}, {}, evidence) == []  # as a model copies it
    assert check_tool_args({"expression": "0.33 * 7"}, {}, evidence) == []
    assert check_tool_args({"x": 0.34}, {}, evidence) != []  # not a rounding of it
    assert check_tool_args({"x": 144.5}, {}, Evidence(PERCENT_PLUS, ["144.5"])) == []


# --- a part's result answers the part -------------------------------------------------------------------
AVERAGE = "What is the average of 4, 9, 15, 22 and 30?"
AVERAGE_PART = {"tool": "the average of the numbers 4, 9, 15, 22 and 30"}


async def test_a_tool_that_does_another_operation_is_refused_before_it_runs(
    make_orch: MakeOrch, spans: InMemorySpanExporter
) -> None:
    right = Recorder(call("summary_statistics", numbers=[4, 9, 15, 22, 30]))
    steps = [
        plan(AVERAGE_PART),
        call("sum_numbers", numbers=[4, 9, 15, 22, 30]),
        right,
        final("The average is 16."),
    ]
    result = await make_orch(steps, tools=[sum_numbers, summary_statistics]).arun("agent", AVERAGE)
    assert result.answer == "The average is 16.", result.answer
    assert "the part asks for the mean, but tool 'sum_numbers' does the sum" in right.asked[0]
    assert executed(spans) == ["summary_statistics"]  # the sum was never run


async def test_a_part_with_only_misfitting_tools_fails_and_says_why(
    make_orch: MakeOrch, spans: InMemorySpanExporter
) -> None:
    wrong = call("sum_numbers", numbers=[4, 9, 15, 22, 30])
    result = await make_orch([plan(AVERAGE_PART), wrong, wrong], tools=[sum_numbers]).arun("agent", AVERAGE)
    assert result.answer == (
        "I can't answer that with my tools and workers (not called: sum_numbers does not give the mean)."
    )
    assert executed(spans) == []


async def test_a_sum_for_an_average_is_a_failed_try_not_the_answer(make_orch: MakeOrch) -> None:
    retry = Recorder(call("calculate", expression="(4+9+15+22+30)/5"))
    steps = [
        plan(AVERAGE_PART),
        call("calculate", expression="4+9+15+22+30"),
        retry,
        final("The average is 16."),
    ]
    result = await make_orch(steps, tools=[calculate]).arun("agent", AVERAGE)
    assert result.answer == "The average is 16.", result.answer
    assert (
        "Observation (call_tool calculate): error: the result 80 is the sum of 4, 9, 15, 22, 30, not their "
        "mean (16): this tool computed the sum; call a tool that gives the mean, or skip the part"
    ) in retry.seen


MEDIAN = "What is the median of 3, 7, 10, 10, 15 and 27?"


async def test_the_answer_must_state_the_value_of_a_summary_that_answers_the_part(
    make_orch: MakeOrch,
) -> None:
    mean_instead = Recorder(final("The median is 12."))  # the summary's mean: in the evidence, not the answer
    steps = [
        plan({"tool": "median of 3, 7, 10, 10, 15 and 27"}),
        call("summary_statistics", numbers=[3, 7, 10, 10, 15, 27]),
        mean_instead,
        final("The median is 10."),
    ]
    result = await make_orch(steps, tools=[summary_statistics]).arun("agent", MEDIAN)
    assert mean_instead.asked == [f"Request: {MEDIAN}\nResults:\n- median of 3, 7, 10, 10, 15 and 27: 10.0"]
    assert result.answer == "The median is 10.", result.answer


def test_the_fitting_tools_are_the_ones_offered() -> None:
    from orchestrator.agent.controller import _fitting

    catalog = Catalog.from_tools([sum_numbers, summary_statistics, count_items, calculate])
    found = ["sum_numbers", "count_items", "summary_statistics", "calculate"]
    assert _fitting(catalog, AVERAGE_PART["tool"], found) == ["summary_statistics", "calculate"]
    assert _fitting(catalog, AVERAGE_PART["tool"], ["sum_numbers"]) == ["sum_numbers"]  # none fits: all


def _tool(name: str) -> BaseTool:
    return next(t for t in [*TOOLS, sum_numbers, count_items] if t.name == name)


@pytest.mark.parametrize(
    ("task", "tool"),
    [
        ("average of 4, 9, 15", "sum_numbers"),
        ("calculate the average of 4, 9, 15", "count_items"),
        ("the median of 3, 7, 10", "weighted_average"),
        ("what is the largest of 4, 9 and 15", "count_occurrences"),
        ("add 5 to the median", "round_number"),
        ("add 5 to the median", "summary_statistics"),  # its sum is not the median plus 5
        ("sort 3, 1 and 2", "round_number"),
        ("count the days between 2025-01-01 and 2025-02-01", "add_months"),
    ],
)
def test_a_tool_that_does_another_operation_does_not_fit(task: str, tool: str) -> None:
    (problem,) = check_tool_fits(task, tool, _tool(tool).description)
    assert problem.startswith("the part asks for the ")


@pytest.mark.parametrize(
    ("task", "tool"),
    [
        ("average of 4, 9, 15", "summary_statistics"),
        ("the average of 4, 9, 15", "calculate"),  # a general calculator: an average is a sum over a count
        ("the largest of 4, 9, 15", "sort_numbers"),
        ("round the result to 1 decimal place", "round_number"),
        ("sort the numbers 3, 1 and 2", "sort_numbers"),
        ("add 42 to the result", "percentage_of"),  # names no operation: it may do any
        ("median of 3, 7, 10", "percentile"),
        ("add 42 to the result", "calculate"),
        ("round the mean to 1 decimal place", "round_number"),  # the mean is its input, not its operation
        ("convert the total to euros", "calculate"),
        ("count the days between 2025-01-01 and 2025-02-01", "date_diff"),
        ("add 45 days to 2025-03-10", "add_days"),
        ("split a 84 dollar bill between 3 people with a 15 percent tip", "split_bill"),
        ("total with tip of a 93 dollar bill for 3 people", "split_bill"),  # it returns "the total with tip"
        ("total interest on a 10000 loan at 5 percent for 3 years", "loan_payment"),
        ("how many seconds are in 2 hours", "convert_time_duration"),
    ],
)
def test_a_tool_that_does_the_operation_or_names_none_fits(task: str, tool: str) -> None:
    assert check_tool_fits(task, tool, _tool(tool).description) == []


@pytest.mark.parametrize(
    ("task", "args", "result", "other"),
    [
        ("average of 4, 9, 15, 22 and 30", {"expression": "4+9+15+22+30"}, "80", "sum"),
        ("the median of 3, 7, 10, 10, 15 and 27", {"numbers": [3, 7, 10, 10, 15, 27]}, "12.0", "mean"),
        ("sum of the numbers", {"numbers": [1, 2, 4]}, "4", "maximum"),
    ],
)
def test_a_result_that_is_another_statistic_is_refused(
    task: str, args: dict[str, Any], result: str, other: str
) -> None:
    (problem,) = check_statistic(task, args, result)
    assert f"is the {other} of" in problem


def test_a_mean_outside_the_datas_range_is_refused() -> None:
    """Told its sum was no mean, a model computed another wrong expression: 73 for the average of 4, 8, 15,
    16, 23 and 42 (seen on the local default). No statistic matched 73, so nothing refused it."""
    task = "average of 4, 8, 15, 16, 23 and 42"
    (problem,) = check_statistic(task, {"expression": "(4+8+15+16+23+42)/6*4+1"}, "73")
    assert "can't be the mean" in problem and "4 to 42" in problem and "the mean is 18" in problem
    assert check_statistic(task, {"expression": "(4+8+15+16+23+42)/6"}, "18") == []
    assert check_statistic(task, {"expression": "16"}, "16") == []  # wrong but in range: not this check's


@pytest.mark.parametrize(
    ("task", "args", "result"),
    [
        ("average of 4, 9, 15, 22 and 30", {"expression": "(4+9+15+22+30)/5"}, "16"),
        ("average speed for 60 miles in 1 hour", {"expression": "60/1"}, "60"),  # no data set: no check
        ("round the mean to 1 decimal place", {"value": 12.34, "places": 1}, "12.3"),
        ("average of 4, 9, 15", {"numbers": [4, 9, 15]}, '{"mean": 9.33}'),  # not a single number
        ("add 42 to the result", {"expression": "144.5 + 42"}, "186.5"),
    ],
)
def test_a_result_that_may_answer_the_part_is_kept(task: str, args: dict[str, Any], result: str) -> None:
    assert check_statistic(task, args, result) == []


def test_a_result_with_named_values_narrows_to_those_the_part_asks_for() -> None:
    summary = json.dumps({"count": 6, "sum": 72, "mean": 12, "median": 10.0})
    assert answering("median of 3, 7, 10, 10, 15 and 27", summary) == ("10.0", True)
    assert answering("average of the numbers", summary) == ("12", True)
    bill = json.dumps({"tip": 12.6, "total": 96.6, "per_person": 32.2})
    assert answering("split a 84 dollar bill between 3 people after a 15% tip", bill) == ("32.2", True)
    assert answering("describe the numbers", summary) == (summary, False)  # no operation: whole
    assert answering("average of 4 and 6", "5") == ("5", False)
