"""`orch tools list | search | eval` in real subprocesses, on real index files and the BFCL data."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.toolsets.retrieval.dense import available

ROOT = Path(__file__).resolve().parent.parent
BFCL = ROOT.parent / "shared" / "data" / "tools" / "bfcl"

CATALOG = [
    {
        "name": "getCurrentWeather",
        "description": "Current weather conditions for a city.",
        "parameters": {"type": "dict", "properties": {"city": {"type": "string", "description": "City"}}},
    },
    {"name": "math.factorial", "description": "Factorial of a whole number.", "parameters": {}},
    {"name": "send_email", "description": "Send a message to a recipient.", "parameters": {}},
]
QUERIES = [
    {"query": "factorial of 6", "gold_tools": ["math.factorial"]},
    {"query": "is it raining in Oslo right now? current weather please", "gold_tools": ["getCurrentWeather"]},
    {"query": "email Bob the report", "gold_tools": ["send_email"]},
    {"query": "zebra xylophone", "gold_tools": []},
]


def orch(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "ORCH_SKIP_LOCAL": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_list_shows_the_project_packs_and_catalog_files(tmp_path: Path) -> None:
    catalog = write_jsonl(tmp_path / "extra.jsonl", CATALOG)
    done = orch("tools", "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 95 and {r["source"] for r in rows} == {"tools.catalog:TOOLS"}
    done = orch("tools", "list", "--json", "--catalog", str(catalog), "--source", str(catalog))
    assert done.returncode == 0, done.stderr
    assert [r["name"] for r in json.loads(done.stdout)] == [c["name"] for c in CATALOG]
    assert json.loads(done.stdout)[0]["parameters"]["type"] == "object"
    table = orch("tools", "list", "--catalog", str(catalog))
    assert table.returncode == 0 and "98 tools" in table.stdout and "getCurrentWeather" in table.stdout


def test_search_builds_the_index_once_and_reuses_it(tmp_path: Path) -> None:
    catalog = write_jsonl(tmp_path / "c.jsonl", CATALOG)
    index = tmp_path / "index.db"
    args = (
        "tools",
        "search",
        "what is 6 factorial",
        "--catalog",
        str(catalog),
        "--no-packs",
        "--index",
        str(index),
        "--method",
        "bm25",
        "--k",
        "2",
        "--json",
    )
    done = orch(*args)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["method"] == "bm25" and out["index"] == str(index)
    assert [h["name"] for h in out["hits"]][:1] == ["math.factorial"] and len(out["hits"]) <= 2
    db = sqlite3.connect(index)
    fingerprint = db.execute("select value from meta where key = 'fingerprint'").fetchone()[0]
    db.execute(
        "update tools set terms = '{\"marker\": 1.0}' where name = 'send_email'"
    )  # untouched if reused
    db.commit()
    db.close()
    assert orch(*args).returncode == 0
    db = sqlite3.connect(index)
    assert db.execute("select value from meta where key = 'fingerprint'").fetchone()[0] == fingerprint
    assert db.execute("select terms from tools where name = 'send_email'").fetchone()[0] == '{"marker": 1.0}'
    db.close()
    # The catalog changes: only that tool is re-read.
    write_jsonl(catalog, [*CATALOG[:2], {**CATALOG[2], "description": "Send an email to someone."}])
    done = orch(*args[:2], "email someone", *args[3:])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hits"][0]["name"] == "send_email"


def test_search_of_the_project_tools_in_a_table(tmp_path: Path) -> None:
    done = orch(
        "tools",
        "search",
        "calendar days between 2026-03-02 and 2026-03-20",
        "--method",
        "bm25",
        "--index",
        str(tmp_path / "i.db"),
    )
    assert done.returncode == 0, done.stderr
    assert "date_diff" in done.stdout.splitlines()[3] and "bm25 over 95 tools" in done.stdout


@pytest.mark.skipif(not available(), reason="the embed extra is not installed")
def test_eval_reports_every_figure_as_one_json_object(tmp_path: Path) -> None:
    catalog = write_jsonl(tmp_path / "c.jsonl", CATALOG)
    queries = write_jsonl(tmp_path / "q.jsonl", QUERIES)
    done = orch(
        "tools",
        "eval",
        "--catalog",
        str(catalog),
        "--queries",
        str(queries),
        "--k",
        "1",
        "--method",
        "hybrid",
        "--index",
        str(tmp_path / "i.db"),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in (
        "recall_at_k",
        "all_gold_at_k",
        "mrr",
        "p50_ms",
        "p95_ms",
        "schema_tokens_dynamic",
        "schema_tokens_all",
        "irrelevance_auc",
    ):
        assert key in report, key
    assert (report["method"], report["k"], report["labelled"], report["queries"]) == ("hybrid", 1, 3, 4)
    assert report["recall_at_k"] == 1.0 and report["mrr"] == 1.0
    assert report["schema_tokens_all"] > report["schema_tokens_dynamic"] > 0


def test_eval_on_bfcl_simple_python(tmp_path: Path) -> None:
    queries = [json.loads(line) for line in (BFCL / "queries.jsonl").read_text().splitlines()]
    subset = write_jsonl(tmp_path / "q.jsonl", [q for q in queries if q["category"] == "simple_python"][:100])
    done = orch(
        "tools",
        "eval",
        "--catalog",
        str(BFCL / "catalog.jsonl"),
        "--queries",
        str(subset),
        "--method",
        "bm25",
        "--index",
        str(tmp_path / "i.db"),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tools"] == 1853 and report["labelled"] == 100
    assert report["recall_at_k"] >= 0.85  # measured 0.93 on these 100
    assert report["schema_tokens_dynamic"] < 0.05 * report["schema_tokens_all"]


def test_errors_name_the_file_and_exit_2(tmp_path: Path) -> None:
    done = orch("tools", "eval", "--catalog", str(tmp_path / "missing.jsonl"), "--queries", "q.jsonl")
    assert done.returncode == 2 and "missing.jsonl" in done.stderr and "cannot read it" in done.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"description": "no name"}\n')
    done = orch(
        "tools", "search", "x", "--catalog", str(bad), "--no-packs", "--index", str(tmp_path / "i.db")
    )
    assert done.returncode == 2 and "bad.jsonl:1" in done.stderr
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"name": "date_diff", "description": "again"}])
    done = orch("tools", "list", "--catalog", str(dup))
    assert done.returncode == 2 and "'date_diff' comes from both" in done.stderr
    assert orch("tools", "search", "x", "--method", "bm26").returncode == 2


def test_an_empty_search_is_refused_with_the_fix() -> None:
    done = orch("tools", "search", "  ")
    assert done.returncode == 2
    assert "non-empty" in done.stderr and "Traceback" not in done.stderr
