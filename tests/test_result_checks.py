"""A tool result that can't answer its part is a failed try, never the answer stated with status ok.

The bug: "How many words are in this sentence: '...'" was answered "count the words of the text: 0",
through `count_occurrences` with the target "word" (which the text does not hold).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from langchain_core.messages import BaseMessage

from orchestrator.workers.grounding import check_result
from support import TOOLS, MakeOrch, act
from tools.text import count_occurrences, text_statistics

SENTENCE = "The quick brown fox jumps over the lazy dog while the cat sleeps."  # 13 words
REQUEST = f"How many words are in this sentence: '{SENTENCE}'"
PLAN = json.dumps({"plan": [{"tool": "count the words of the text"}]})
WRONG = act(action="call_tool", tool="count_occurrences", args={"text": SENTENCE, "target": "word"})
RIGHT = act(action="call_tool", tool="text_statistics", args={"text": SENTENCE})
WITH_TEXT_TOOLS = [*TOOLS, count_occurrences, text_statistics]


async def test_a_zero_word_count_of_a_text_is_retried_with_another_tool(make_orch: MakeOrch) -> None:
    seen: list[str] = []

    def retry(messages: Sequence[BaseMessage]) -> str:
        seen.extend(str(m.content) for m in messages)
        return RIGHT

    orch = make_orch(
        [PLAN, WRONG, retry, act(action="final", answer="The sentence has 13 words.")],
        by_turn=True,
        tools=WITH_TEXT_TOOLS,
    )
    result = await orch.arun("agent", REQUEST)
    assert result.status == "ok", result.error
    assert result.answer == "The sentence has 13 words."
    assert any("error: the result 0 can't be the number of words of the text" in s for s in seen), seen


async def test_a_zero_word_count_twice_fails_the_part_instead_of_answering_zero(make_orch: MakeOrch) -> None:
    orch = make_orch([PLAN, WRONG, WRONG], by_turn=True, tools=WITH_TEXT_TOOLS)
    result = await orch.arun("agent", REQUEST)
    assert result.answer is not None
    assert result.answer.startswith("I can't answer that with my tools and workers"), result.answer
    assert ": 0" not in result.answer and "0 words" not in result.answer


@pytest.mark.parametrize(
    ("task", "args", "result"),
    [
        ("count the words of the text", {"text": SENTENCE, "target": "word"}, "0"),
        ("How many words are in this sentence", {"text": SENTENCE}, "0"),
        ("count the characters in 'abc'", {"text": "abc", "target": "character"}, "0.0"),
        ("number of letters in the text", {"text": "abc 123"}, "0"),
        ("how many lines are there in the text", {"text": "one\ntwo"}, "0"),
    ],
)
def test_a_count_that_cant_be_right_is_refused(task: str, args: dict[str, object], result: str) -> None:
    problems = check_result(task, args, result)
    assert len(problems) == 1 and "can't be the number of" in problems[0]


@pytest.mark.parametrize(
    ("task", "args", "result"),
    [
        ("count the words of the text", {"text": SENTENCE}, "13"),  # not zero
        ("count the words of the text", {"text": "  ... !? "}, "0"),  # the text has no word
        ("number of letters in the text", {"text": "12 34"}, "0"),  # no letter: zero is right
        ("count the words longer than 12 letters", {"text": SENTENCE}, "0"),  # narrowed: zero may be right
        ("count the words starting with z", {"text": SENTENCE}, "0"),
        ("count the word 'zebra' in the text", {"text": SENTENCE, "target": "zebra"}, "0"),  # a target
        ("how many times does 'cat' appear", {"text": "dog", "target": "cat"}, "0"),
        ("count the words of the text", {"text": SENTENCE}, '{"words": 0}'),  # not a bare count
        ("days between 2026-03-02 and 2026-03-02", {"start": "2026-03-02", "end": "2026-03-02"}, "0"),
    ],
)
def test_a_count_that_may_be_right_is_kept(task: str, args: dict[str, object], result: str) -> None:
    assert check_result(task, args, result) == []
