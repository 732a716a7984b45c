"""`bench/run.py` rewrites only its own section of docs/benchmarks.md: one run of it used to keep only the
providers, local and eval sections and delete every other benchmark's (server eval, retrieval, tool
selection, workers text, ...). Run here on a copy of the real doc, with the measurements replaced."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

import bench.run as bench_run

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def _sections(text: str) -> dict[str, str]:
    return {m[1]: m[0] for m in re.finditer(r"<!-- ([\w-]+):start -->.*?<!-- \1:end -->", text, re.S)}


def test_bench_run_rewrites_its_section_and_keeps_every_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "benchmarks.md"
    before = DOC.read_text(encoding="utf-8")
    doc.write_text(before, encoding="utf-8")
    monkeypatch.setattr(bench_run, "ROOT", tmp_path)
    monkeypatch.setattr(bench_run, "DOC", doc, raising=False)
    monkeypatch.setattr(sys, "argv", ["bench/run.py", "--no-demo"])

    async def per_step() -> dict[str, Any]:
        wall = {"bare": 1.0, "untraced": 1.5, "traced": 2.0, "in_process": 1.9}
        return wall | {f"{k}_cpu": v / 2 for k, v in wall.items()}

    async def per_node() -> dict[str, Any]:
        wall = {"bare": 1.0, "untraced": 1.25, "traced": 1.5}
        return wall | {f"{k}_cpu": v / 2 for k, v in wall.items()}

    monkeypatch.setattr(bench_run, "overhead", per_step)
    monkeypatch.setattr(bench_run, "user_overhead", per_node)
    bench_run.main()
    capsys.readouterr()
    after = doc.read_text(encoding="utf-8")
    old, new = _sections(before), _sections(after)
    assert {"providers", "server-eval", "retrieval", "tool-selection", "workers-text", "traces"} <= set(old)
    assert set(new) == set(old)
    assert {k: v for k, v in new.items() if k != "run"} == {k: v for k, v in old.items() if k != "run"}
    assert after.split("<!-- run:start -->")[0] == before.split("<!-- run:start -->")[0]
    assert after.split("<!-- run:end -->")[1] == before.split("<!-- run:end -->")[1]
    ours = new["run"]
    assert "| bare LangGraph graph | 1.00 | 1.00 | 0.50 | 1.00 |  |" in ours
    assert "| orchestrator, tracing on (SQLite store) | 2.00 | 2.00 | 1.00 | 2.00 |" in ours
    assert "| tracing on / tracing off | | 1.33 | | 1.33 | <= 1.05: missed |" in ours
    # --no-demo keeps the demo table last measured
    demo = before[before.index("## The demo run after set-up") : before.index("<!-- run:end -->")]
    assert ours.endswith(demo + "<!-- run:end -->")


def test_one_machine_line_and_one_splice_for_every_bench() -> None:
    benches = sorted(p for p in (DOC.parent.parent / "bench").glob("*.py") if p.name != "markers.py")
    for path in benches:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^def _?machine\(", text, re.M), f"{path.name} has its own machine()"
        surgery = re.search(r"\.(index|split|find)\((START|start|SECTION)\b", text)
        assert surgery is None, f"{path.name} cuts the doc itself: use bench/markers.py's splice"
