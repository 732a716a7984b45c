"""Lists pack: sorting, de-duplication, set algebra and batching of plain lists."""

from __future__ import annotations

from typing import Annotated

from langchain_core.tools import BaseTool, tool

from tools._common import pack, require_finite

MAX_ITEMS = 100_000


def _check_size(name: str, items: list[str] | list[float]) -> None:
    if len(items) > MAX_ITEMS:
        raise ValueError(f"{name} holds {len(items)} items; the limit is {MAX_ITEMS}")


@tool
def sort_numbers(
    numbers: Annotated[list[float], "Numbers to put in order, e.g. [3, -1, 2.5]"],
    descending: Annotated[bool, "Largest first instead of smallest first"] = False,
) -> list[float]:
    """Sort numbers into order, smallest to largest (ascending) or largest to smallest (descending). Returns
    the sorted list.

    Example: "rank the scores 71, 94, 58 and 88 from highest to lowest" -> sort_numbers(numbers=[71, 94, 58,
    88], descending=True)
    """
    _check_size("numbers", numbers)
    for n in numbers:
        require_finite("numbers", n)
    return sorted(numbers, reverse=descending)


@tool
def deduplicate_list(
    items: Annotated[list[str], "Strings that may contain repeats, e.g. ['a', 'B', 'a', 'b']"],
    case_sensitive: Annotated[bool, "Treat 'Apple' and 'apple' as different items"] = True,
    strip_whitespace: Annotated[bool, "Ignore leading and trailing spaces when comparing"] = True,
) -> list[str]:
    """Remove duplicates (repeated entries) from a list of words or items, keeping the first of each in the
    original order. Returns the unique items.

    Example: "drop the repeats from red, blue, red, green, blue" -> deduplicate_list(items=["red", "blue",
    "red", "green", "blue"])
    """
    _check_size("items", items)
    seen: set[str] = set()
    unique: list[str] = []
    for item in items:
        value = item.strip() if strip_whitespace else item
        key = value if case_sensitive else value.casefold()
        if key not in seen:
            seen.add(key)
            unique.append(value)
    return unique


@tool
def set_operations(
    first: Annotated[list[str], "First collection of items (set A)"],
    second: Annotated[list[str], "Second collection of items (set B)"],
) -> dict[str, list[str]]:
    """Compare two lists: the items in both (in common, the intersection), in either (the union), only in the
    first, only in the second, or in just one. Returns each as a sorted list.

    Example: "which names are on both lists, Ann, Bo, Cy and Bo, Cy, Di?" -> set_operations(first=["Ann",
    "Bo", "Cy"], second=["Bo", "Cy", "Di"])
    """
    _check_size("first", first)
    _check_size("second", second)
    a, b = set(first), set(second)
    return {
        "union": sorted(a | b),
        "intersection": sorted(a & b),
        "only_in_first": sorted(a - b),
        "only_in_second": sorted(b - a),
        "symmetric_difference": sorted(a ^ b),
    }


@tool
def chunk_list(
    items: Annotated[list[str], "Items to split into batches"],
    size: Annotated[int, "Maximum number of items per batch (1-10000)"],
) -> list[list[str]]:
    """Split a list into batches (groups, chunks or pages) of at most a given size, the last one holding the
    rest. Returns the list of batches.

    Example: "split a, b, c, d, e into groups of 2" -> chunk_list(items=["a", "b", "c", "d", "e"], size=2)
    """
    _check_size("items", items)
    if not 1 <= size <= 10_000:
        raise ValueError(f"size must be between 1 and 10000, got {size}")
    return [items[i : i + size] for i in range(0, len(items), size)]


TOOLS: list[BaseTool] = pack(sort_numbers, deduplicate_list, set_operations, chunk_list)
