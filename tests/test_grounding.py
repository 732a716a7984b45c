"""Grounding checks: numbers, dates, words and spans that a step may use, and what it may not."""

from __future__ import annotations

import datetime as dt

import pytest

from orchestrator.workers.grounding import (
    Evidence,
    candidate_spans,
    check_answer,
    check_tool_args,
    check_worker_input,
    find_dates,
    find_numbers,
)

REQUEST = (
    "Convert seventy-two degrees Fahrenheit to Celsius. "
    "Also classify: 'My card hasn't arrived since March 2, 2026.'"
)
UNITS = {"properties": {"value": {"type": "number"}, "unit": {"enum": ["C", "F", "K"]}}}


def test_numbers_in_digits_with_separators_scales_and_signs() -> None:
    found = find_numbers("2026-03-02 is -5, 1,080 and 7,006,652; 1.2 million; .5 and 22.50")
    assert found == [
        (2026.0, 0),
        (3.0, 0),
        (2.0, 0),
        (-5.0, 0),
        (1080.0, 0),
        (7006652.0, 0),
        (1.2, 1),
        (1200000.0, 0),
        (0.5, 1),
        (22.5, 2),
    ]
    assert find_numbers("10-20") == [(10.0, 0), (20.0, 0)]  # a range, not a negative twenty


def test_dates_in_iso_and_english_forms() -> None:
    dates = [d for d, _ in find_dates("on 2026-03-02, March 5th, 2026, 7 of June 2025 and 2024/12/31")]
    assert dates == [dt.date(2026, 3, 2), dt.date(2024, 12, 31), dt.date(2026, 3, 5), dt.date(2025, 6, 7)]
    assert find_dates("2026-02-30 is no date") == []


def test_evidence_reads_number_words() -> None:
    evidence = Evidence("seventy-two, two hundred and five, a dozen, three thousand, twenty one")
    assert {72.0, 205.0, 12.0, 3000.0, 21.0} <= evidence.numbers
    assert 74.0 not in evidence.numbers


def test_tool_arguments_from_the_request_pass() -> None:
    evidence = Evidence(REQUEST)
    assert check_tool_args({"value": 72, "unit": "F"}, UNITS, evidence) == []


def test_an_invented_number_is_named() -> None:
    problems = check_tool_args({"value": 73}, UNITS, Evidence(REQUEST))
    assert problems == ["value=73: the number 73 is in neither the request nor an observation"]


def test_an_invented_date_is_named() -> None:
    problems = check_tool_args({"start_date": "2026-03-01"}, {}, Evidence(REQUEST))
    assert problems and "2026-03-01" in problems[0]
    assert check_tool_args({"start_date": "2026-03-02"}, {}, Evidence(REQUEST)) == []  # "March 2, 2026"


def test_observations_and_scale_constants_ground_values() -> None:
    evidence = Evidence("How many hours in 3 weeks at 5%?", ["18"])
    assert check_tool_args({"value": 18, "rate": 0.05, "days": 21, "pct": 100}, {}, evidence) == []


def test_an_expression_may_use_given_numbers_constants_and_functions() -> None:
    evidence = Evidence("What is 17% of 2,450 and the square root of 81?")
    assert check_tool_args({"expression": "17/100*2450 + sqrt(81)"}, {}, evidence) == []
    problems = check_tool_args({"expression": "(72-32)*5/9"}, {}, Evidence("72 F in C?"))
    assert problems == [
        "expression='(72-32)*5/9': the number 32 is in neither the request nor an observation"
    ]


def test_free_text_must_come_from_the_request() -> None:
    evidence = Evidence("Count the words in 'the quick brown fox'")
    assert check_tool_args({"text": "The quick brown fox"}, {}, evidence) == []
    problems = check_tool_args({"text": "lorem ipsum dolor"}, {}, evidence)
    assert problems and "'lorem'" in problems[0]


def test_nested_values_are_checked() -> None:
    evidence = Evidence("scores 31, 57 and 88")
    assert check_tool_args({"values": [31, 57, 88]}, {}, evidence) == []
    assert check_tool_args({"values": [31, 57, 89]}, {}, evidence)[0].startswith("values[2]=89")


def test_schema_enum_and_default_values_are_not_invented() -> None:
    schema = {"properties": {"places": {"type": "integer", "default": 2}, "mode": {"enum": ["half_up"]}}}
    assert check_tool_args({"places": 2, "mode": "half_up"}, schema, Evidence("round 3.14159")) == []


def test_worker_input_must_be_a_span() -> None:
    evidence = Evidence(REQUEST)
    assert check_worker_input("my card hasn’t arrived since March 2, 2026.", evidence) == []
    assert check_worker_input("a banking customer's message about a card", evidence)


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        ("72 F is 22.22 C.", True),  # rounded from the observation
        ("72 F is about 22 C.", True),
        ("72 F is 22.3 C.", False),  # rounds wrongly
        ("72 F is 23 C.", False),
        ("The message was sent on 2026-03-02.", True),  # the request's "March 2, 2026"
        ("The message was sent on 2026-03-03.", False),
        ("That is 22.2%.", True),  # percent scaling of 0.222
    ],
)
def test_answer_numbers_and_dates_must_be_supported(answer: str, ok: bool) -> None:
    evidence = Evidence(REQUEST, ["22.2222222222", '{"share": 0.222}'])
    assert (check_answer(answer, evidence) == []) is ok


def test_candidate_spans_are_quoted_passages_and_colon_tails() -> None:
    text = "Classify this message: 'My new card hasn't arrived.' and also \"where is my refund\""
    assert candidate_spans(text) == ["My new card hasn't arrived.", "where is my refund"]
    assert candidate_spans("Classify this message: my card is lost, help") == ["my card is lost, help"]
    assert candidate_spans("What is 2+2?") == []
