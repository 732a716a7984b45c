"""A trace store whose pages were overwritten: one clear line, never written into, `orch traces check`.

Real SQLite files, filled by real runs (or the store's own writer), then damaged by writing random bytes
over whole pages in the middle of the file; the CLI in real subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sqlite3
import textwrap
from pathlib import Path

import pytest
from test_cli import DEFS, PROJECT, STEPS, TASK, orch

from orchestrator import Orchestrator
from orchestrator.tracing import damage
from orchestrator.tracing.store import TraceStore, TraceStoreDamaged


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text(PROJECT.format())
    (root / "defs.py").write_text(textwrap.dedent(DEFS.format(steps=STEPS)))
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _overwrite(path: Path, pages: list[int]) -> None:
    """Random bytes over whole pages (1-based), then make sure SQLite itself sees the damage."""
    conn = sqlite3.connect(path)
    conn.execute("pragma wal_checkpoint(truncate)")  # everything in the main file, nothing in a -wal
    size = conn.execute("pragma page_size").fetchone()[0]
    conn.close()
    rng = random.Random(5)
    with open(path, "r+b") as fh:
        for page in pages:
            fh.seek((page - 1) * size)
            fh.write(rng.randbytes(size))
    conn = sqlite3.connect(path)
    try:
        verdict = conn.execute("pragma quick_check").fetchall()
    except sqlite3.DatabaseError:
        verdict = [("unreadable",)]
    finally:
        conn.close()
    assert verdict != [("ok",)], "the overwrite left the file sound: the test would prove nothing"


def _middle_pages(path: Path) -> list[int]:
    """The middle third of the file's pages (never page 1, whose header says what the file is)."""
    conn = sqlite3.connect(path)
    conn.execute("pragma wal_checkpoint(truncate)")
    count = conn.execute("pragma page_count").fetchone()[0]
    conn.close()
    return list(range(max(2, count // 3), max(3, 2 * count // 3)))


def _root_pages(path: Path, *names: str) -> list[int]:
    conn = sqlite3.connect(path)
    marks = ",".join("?" * len(names))
    found = [r for (r,) in conn.execute(f"select rootpage from sqlite_master where name in ({marks})", names)]
    conn.close()
    return found


def _filled(project: Path, runs: int = 3) -> Path:
    for _ in range(runs):
        done = orch(project, "run", "agent", TASK)
        assert done.returncode == 0, done.stderr
    return project / "traces.db"


def _one_line(stderr: str, path: Path) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert str(path) in lines[0] and "damaged" in lines[0], stderr
    assert "move it aside" in lines[0] and "orch traces check" in lines[0], stderr
    return lines[0]


def test_every_traces_command_on_a_damaged_store_is_one_line_and_writes_nothing(project: Path) -> None:
    store = _filled(project)
    _overwrite(store, _middle_pages(store))
    before = _sha(store)
    html = project / "report.html"
    for args in (
        ("traces", "list"),
        ("traces", "top"),
        ("traces", "top", "--by", "model"),
        ("traces", "report", "--last", "5", "--html", str(html)),
        ("traces", "prune", "--older-than", "1s"),
        ("traces", "show", "nosuchrun"),
    ):
        proc = orch(project, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        line = _one_line(proc.stderr, store)
        assert line.startswith("error: trace store"), line
    assert _sha(store) == before  # prune deleted nothing, nothing marked a run interrupted
    assert not html.exists()


def test_traces_check_says_ok_or_what_is_wrong(project: Path) -> None:
    store = _filled(project, runs=1)
    ok = orch(project, "traces", "check")
    assert ok.returncode == 0, ok.stderr
    assert f"{store}: ok (quick_check" in ok.stdout
    full = json.loads(orch(project, "traces", "check", "--full", "--json").stdout)
    assert full["ok"] is True and full["check"] == "integrity_check" and full["problems"] == []

    _overwrite(store, _middle_pages(store))
    before = _sha(store)
    bad = orch(project, "traces", "check")
    assert bad.returncode == 2, bad.stderr
    assert bad.stdout.strip(), "the problems SQLite found are listed"
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert str(store) in bad.stderr and "damaged" in bad.stderr and "move it aside" in bad.stderr
    found = json.loads(orch(project, "traces", "check", "--json").stdout)
    assert found["ok"] is False and found["problems"]
    assert _sha(store) == before  # a check only reads


def test_a_run_with_a_damaged_store_answers_warns_once_and_leaves_the_file_alone(project: Path) -> None:
    store = _filled(project)
    _overwrite(store, _middle_pages(store))
    before = _sha(store)
    proc = orch(project, "run", "agent", TASK, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["answer"] == "18 days, 3 words"  # the answer matters more than spans
    warned = [line for line in proc.stderr.splitlines() if "damaged" in line]
    assert len(warned) == 1 and str(store) in warned[0], proc.stderr
    assert "move it aside" in warned[0] and "without recording" in warned[0]
    assert "Traceback" not in proc.stderr
    assert _sha(store) == before

    # the fix the line gives: move it aside; the next run starts a new store and is recorded in it
    store.rename(project / "traces-damaged.db")
    again = orch(project, "run", "agent", TASK, "--json")
    assert again.returncode == 0 and "damaged" not in again.stderr, again.stderr
    (run,) = json.loads(orch(project, "traces", "list", "--json").stdout)
    assert run["run_id"] == json.loads(again.stdout)["run_id"] and run["status"] == "ok"
    assert not (project / "traces.db.damaged").exists()


def _spans(n: int, run_id: str) -> list[dict[str, object]]:
    return [
        {
            "span_id": f"{run_id}-{i:08d}",
            "trace_id": "t" * 32,
            "run_id": run_id,
            "name": "chat x",
            "kind": "chat",
            "start_ns": 1_000_000_000 * (i + 1),
            "end_ns": 1_000_000_000 * (i + 2),
            "duration_ms": 1000.0,
            "status": "ok",
            "input_tokens": 10,
            "output_tokens": 5,
            "cost_usd": 0.001,
            "attributes": json.dumps({"x": "y" * 300}),
        }
        for i in range(n)
    ]


def test_a_big_store_is_not_scanned_at_open_and_damage_met_later_stops_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "traces.db"
    store = TraceStore(path)
    store.start_run("r1", "g", config_hash="h", version="v")
    store.write_spans(_spans(400, "r1"))
    store.end_run("r1", status="ok")
    store.close()
    _overwrite(path, _root_pages(path, "runs"))
    before = _sha(path)

    monkeypatch.setattr(damage, "QUICK_CHECK_MAX_BYTES", 0)  # as for a store past the size checked at open
    store = TraceStore(path)  # opens: nothing read yet meets the damaged page
    with pytest.raises(TraceStoreDamaged, match="is damaged") as found:
        store.list_runs()
    assert str(path) in str(found.value) and "orch traces check" in str(found.value)
    with pytest.raises(TraceStoreDamaged):  # known now: no write reaches the file
        store.write_spans(_spans(3, "r2"))
    with pytest.raises(TraceStoreDamaged):
        store.start_run("r2", "g", config_hash="h", version="v")
    store.close()
    # remembered beside the file: the next store object (another process alike) refuses without a scan
    assert (tmp_path / "traces.db.damaged").exists()
    with pytest.raises(TraceStoreDamaged):
        TraceStore(path)
    assert _sha(path) == before


async def test_damage_found_in_the_middle_of_a_run_ends_its_recording_not_the_run(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = _filled(project, runs=2)
    _overwrite(path, _root_pages(path, "runs", "sqlite_autoindex_runs_1"))
    before = _sha(path)
    monkeypatch.setattr(damage, "QUICK_CHECK_MAX_BYTES", 0)  # not found at open: found by the run's writes
    monkeypatch.setenv("ORCH_TRACES", str(path))
    monkeypatch.setenv("ORCH_CHECKPOINTS", str(tmp_path / "ckpt.db"))
    monkeypatch.syspath_prepend(str(project))
    orch_ = Orchestrator.from_project(project)
    assert orch_.store is not None
    try:
        with caplog.at_level(logging.WARNING, logger="orchestrator"):
            result = await orch_.arun("agent", TASK)
            assert result.status == "ok" and result.answer == "18 days, 3 words"
            assert orch_.store.damage is not None
    finally:
        orch_.close()
    warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warned) == 1 and str(path) in warned[0] and result.run_id in warned[0], warned
    assert _sha(path) == before


def test_the_verdict_is_about_the_file_not_its_name(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    TraceStore(path).close()
    damage.remember(str(path), "overwritten")
    assert damage.known_damage(str(path)) == "overwritten"
    path.rename(tmp_path / "aside.db")  # moved aside: a new store of that name is another file
    fresh = TraceStore(path)
    fresh.start_run("r", "g", config_hash="h", version="v")
    fresh.close()
    assert not (tmp_path / "traces.db.damaged").exists()
    assert os.path.exists(path)
