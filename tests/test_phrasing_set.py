"""The everyday-phrasing set (bench/data/phrasing/requests.jsonl) is well formed and split as its README says.

The split rule is written out again here, independently of bench/phrasing.py, so that a change to either
shows. No retrieval figures are asserted: those are bench/phrasing.py's to report."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.phrasing import assign_splits, read_set
from tools.catalog import PACKS, TOOLS

SET = Path(__file__).resolve().parent.parent / "bench" / "data" / "phrasing" / "requests.jsonl"


def _rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SET.read_text(encoding="utf-8").splitlines() if line.strip()]


def _number(rid: str) -> int:
    return int(hashlib.sha256(rid.encode("utf-8")).hexdigest()[:8], 16) % 100


def _documented_split(rows: list[dict[str, Any]]) -> dict[str, str]:
    """README: held out when int(sha256(id)[:8], 16) % 100 < 40; a tool whose requests would all be held
    out keeps its highest-numbered one (then highest id) in dev."""
    split = {r["id"]: "heldout" if _number(r["id"]) < 40 else "dev" for r in rows}
    by_tool: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_tool[r["tools"][0]].append(r["id"])
    for ids in by_tool.values():
        if all(split[i] == "heldout" for i in ids):
            split[max(ids, key=lambda i: (_number(i), i))] = "dev"
    return split


def test_the_set_is_large_and_every_line_complete() -> None:
    rows = _rows()
    assert len(rows) >= 300
    for r in rows:
        assert set(r) == {"id", "request", "tools", "category", "split"}, r
        assert isinstance(r["request"], str) and r["request"].strip(), r
    assert len(read_set(SET)) == len(rows)


def test_ids_are_unique() -> None:
    ids = Counter(r["id"] for r in _rows())
    assert [i for i, n in ids.items() if n > 1] == []


def test_every_request_names_tools_that_exist() -> None:
    names = {t.name for t in TOOLS}
    for r in _rows():
        assert r["tools"], f"{r['id']} names no tool"
        assert len(set(r["tools"])) == len(r["tools"]), f"{r['id']} names a tool twice"
        unknown = set(r["tools"]) - names
        assert not unknown, f"{r['id']} names {sorted(unknown)}, not in tools.catalog.TOOLS"


def test_category_is_the_first_tools_pack() -> None:
    pack = {t.name: p for p, tools in PACKS.items() for t in tools}
    assert [r["id"] for r in _rows() if r["category"] != pack.get(r["tools"][0])] == []


def test_every_tool_in_the_catalog_has_several_requests() -> None:
    about = Counter(r["tools"][0] for r in _rows())
    few = {t.name: about[t.name] for t in TOOLS if about[t.name] < 3}
    assert few == {}, f"tools with fewer than 3 requests about them: {few}; write more in users' words"


def test_the_split_is_the_documented_hash_split() -> None:
    rows = _rows()
    documented = _documented_split(rows)
    assert {r["id"]: r["split"] for r in rows} == documented
    # the bench's own implementation agrees
    assert assign_splits((r["id"], r["tools"][0]) for r in rows) == documented
    held = sum(s == "heldout" for s in documented.values()) / len(rows)
    assert 0.3 <= held <= 0.45, held
    dev_tools = {r["tools"][0] for r in rows if r["split"] == "dev"}
    assert {t.name for t in TOOLS} <= dev_tools


def test_no_request_is_in_both_splits() -> None:
    seen: dict[str, set[str]] = defaultdict(set)
    for r in _rows():
        seen[" ".join(r["request"].lower().split())].add(r["split"])
    assert [text for text, splits in seen.items() if len(splits) > 1] == []


def test_a_tool_drawn_wholly_held_out_keeps_its_highest_draw_in_dev() -> None:
    drawn = [i for i in (f"t-{n}" for n in range(100)) if _number(i) < 40][:3]
    split = assign_splits((i, "t") for i in drawn)
    assert split == {i: "dev" if i == max(drawn, key=lambda i: (_number(i), i)) else "heldout" for i in drawn}
    assert split == _documented_split([{"id": i, "tools": ["t"]} for i in drawn])


def _benchmark_requests() -> list[tuple[str, str]]:
    tasks = Path(__file__).resolve().parent.parent / "bench" / "tasks"
    out = [(r["id"], r["request"]) for r in _rows()]
    for name in ("dev.jsonl", "heldout.jsonl"):
        for line in (tasks / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out.append((row["id"], row["input"]))
    return out


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]{2,}", text.lower()))


def _marks(text: str) -> set[str]:
    """What makes a request recognisable: its numbers of three or more characters (not a year) and its
    quoted strings."""
    found = (n.replace(",", "") for n in re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?", text))
    numbers = {n for n in found if len(n) >= 3 and not re.fullmatch(r"(19|20)\d\d", n)}
    quoted = {q.lower() for q in re.findall(r"'([^']{4,})'", text)}
    return numbers | quoted


def test_no_tool_example_copies_a_benchmark_request() -> None:
    """A tool's `Example:` line is shown to the model beside the tool: if it were one of the measured
    requests (or near one), the figures would measure recall of the example, not finding a tool in a user's
    words. Every example is its own request: few shared words, none of a request's numbers or quotes."""
    near = []
    for t in TOOLS:
        found = re.search(r'Example: "(.*?)" ->', t.description, re.S)
        if found is None:
            continue
        example = " ".join(found.group(1).split())
        for rid, request in _benchmark_requests():
            shared = len(_words(example) & _words(request)) / max(1, len(_words(example) | _words(request)))
            if (
                shared >= 0.4
                or len(_marks(example) & _marks(request)) >= 2
                or (_marks(example) & _marks(request) and shared >= 0.25)
            ):
                near.append(f"{t.name}: {example!r} ~ {rid}: {request[:60]!r}")
    assert near == []
