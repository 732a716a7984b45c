"""Tests for the lists pack."""

import pytest

from tools.lists import chunk_list, deduplicate_list, set_operations, sort_numbers


def test_sort_numbers() -> None:
    assert sort_numbers.invoke({"numbers": [3, -1, 2.5]}) == [-1.0, 2.5, 3.0]
    assert sort_numbers.invoke({"numbers": [3, -1, 2.5], "descending": True}) == [3.0, 2.5, -1.0]
    assert sort_numbers.invoke({"numbers": []}) == []


def test_deduplicate_list() -> None:
    assert deduplicate_list.invoke({"items": ["a", "B", "a", "b"]}) == ["a", "B", "b"]
    assert deduplicate_list.invoke({"items": ["a", " B", "a", "b"], "case_sensitive": False}) == ["a", "B"]
    assert deduplicate_list.invoke({"items": ["x ", "x"], "strip_whitespace": False}) == ["x ", "x"]


def test_set_operations() -> None:
    assert set_operations.invoke({"first": ["a", "b", "c"], "second": ["d", "c", "b"]}) == {
        "union": ["a", "b", "c", "d"],
        "intersection": ["b", "c"],
        "only_in_first": ["a"],
        "only_in_second": ["d"],
        "symmetric_difference": ["a", "d"],
    }


def test_chunk_list() -> None:
    assert chunk_list.invoke({"items": list("abcde"), "size": 2}) == [["a", "b"], ["c", "d"], ["e"]]
    assert chunk_list.invoke({"items": [], "size": 3}) == []
    with pytest.raises(ValueError, match="size must be between 1 and 10000"):
        chunk_list.invoke({"items": ["a"], "size": 0})
