"""The trace store on PostgreSQL: the same spans, ingested into a SQLite store and a PostgreSQL store, give
the same figures from both (`top`, run totals, `list`, `show`, `compare`, `reprice`, `prune`, through the
library and the real `orch traces ... --json`); its migrations; writers in two processes at once lose nothing
and roll up exactly; a password in the URL is never printed."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from opentelemetry.sdk.trace import TracerProvider

from orchestrator import Orchestrator, RunContext, SlotConfig
from orchestrator.config import PriceOverride, Settings, load_manifest
from orchestrator.errors import ConfigError
from orchestrator.evals.compare import compare
from orchestrator.evals.whatif import reprice
from orchestrator.testing import ScriptedChatModel
from orchestrator.tracing import attrs as A
from orchestrator.tracing import report, rollups
from orchestrator.tracing.migrations import MIGRATIONS
from orchestrator.tracing.pg import PG_MIGRATIONS, SCHEMA, migrate
from orchestrator.tracing.report import hotspots, span_tree
from orchestrator.tracing.setup import SCOPE, NodeFlushSpanProcessor, SQLiteSpanExporter
from orchestrator.tracing.store import TraceStore
from support import TEST_SECRETS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.traces import _run  # noqa: E402

DAY_S = 86_400
OLD_S = 10 * DAY_S  # the old runs: ended ten days ago


def _fill(stores: list[TraceStore], runs: int = 30, seed: int = 3) -> list[str]:
    """The same agent runs, through the OpenTelemetry SDK and each store's own exporter, into every store;
    each run recorded and ended with the same totals in each. Returns the run ids."""
    provider = TracerProvider()
    processors = [NodeFlushSpanProcessor(SQLiteSpanExporter(s)) for s in stores]
    for p in processors:
        provider.add_span_processor(p)
    tracer = provider.get_tracer(SCOPE)
    rng = random.Random(seed)
    ids = []
    for n in range(runs):
        run_id = f"bench-{n:08d}"
        for s in stores:
            s.start_run(run_id, "assistant", config_hash="h", version="v")
        _run(tracer, rng, n)
        ids.append(run_id)
    provider.force_flush()
    for run_id in ids:  # the run's totals, as the runner writes them at its end
        chats = [r for r in stores[0].run_spans(run_id) if r["kind"] == "chat"]
        totals = {
            "status": "done",
            "cost_usd": sum(r["cost_usd"] or 0 for r in chats),
            "unpriced_calls": 0,
            "input_tokens": sum(r["input_tokens"] or 0 for r in chats),
            "output_tokens": sum(r["output_tokens"] or 0 for r in chats),
            "compute_ms": sum(r["compute_ms"] or 0 for r in chats),
            "answer": f"answer {run_id}",
            "ended_at": 1_800_000_000.0 + len(chats),
            "duration_ms": 1000.0 + len(chats),
        }
        for s in stores:
            s.end_run(run_id, **totals)
    provider.shutdown()
    return ids


def _old_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of span rows, ten days older, of other runs (`old-...`); a few of no recorded run."""
    shift = OLD_S * 10**9
    out = []
    for i, r in enumerate(rows):
        run_id = None if i % 7 == 0 else f"old-{r['run_id']}"
        out.append(
            {
                **r,
                "span_id": "old" + r["span_id"],
                "parent_id": r["parent_id"] and "old" + r["parent_id"],
                "run_id": run_id,
                "start_ns": r["start_ns"] - shift,
                "end_ns": r["end_ns"] - shift,
            }
        )
    return out


def _add_old(stores: list[TraceStore], rows: list[dict[str, Any]]) -> None:
    old = _old_rows(rows)
    for run_id in sorted({r["run_id"] for r in old if r["run_id"]}):
        for s in stores:
            s.start_run(run_id, "assistant", config_hash="h", version="v")
            s.end_run(run_id, status="done", ended_at=time.time() - OLD_S, duration_ms=5.0)
    for s in stores:
        for i in range(0, len(old), 97):  # in uneven batches
            s.write_spans(old[i : i + 97])


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _same(a: Any, b: Any) -> None:
    assert _close(a, b), f"SQLite and PostgreSQL differ:\n{a!r}\n{b!r}"


def _without(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in keys} for r in rows]


@pytest.fixture
def both(tmp_path: Path, pg_url: str) -> Iterator[tuple[TraceStore, TraceStore, list[str]]]:
    lite, pg = TraceStore(tmp_path / "traces.db"), TraceStore(pg_url)
    ids = _fill([lite, pg])
    _add_old([lite, pg], lite.spans("run_id in (?, ?, ?)", ids[:3]))
    yield lite, pg, ids
    lite.close()  # a store closed twice is fine
    pg.close()


def test_the_same_spans_give_the_same_figures_from_sqlite_and_postgresql(
    both: tuple[TraceStore, TraceStore, list[str]],
) -> None:
    lite, pg, ids = both
    count = "select count(*), sum(duration_ms), sum(cost_usd) from spans"
    assert lite.rows(count)[0][0] > 250
    _same(lite.rows(count), pg.rows(count))
    for by in ("node", "model", "slot", "tool"):
        exact = [h.to_dict() for h in hotspots(lite, by)]  # type: ignore[arg-type]
        _same(exact, [h.to_dict() for h in hotspots(pg, by)])  # type: ignore[arg-type]
    spots = {h.key: h for h in hotspots(pg, "model")}
    assert spots["openai:gpt-4o"].ttft_p50_ms and spots["openai:gpt-4o"].tokens_per_s_p50
    orig = report.EXACT_SPANS
    try:
        report.EXACT_SPANS = 0  # as on a big store: read from the roll-ups written at ingest
        for by in ("node", "model", "slot", "tool"):
            rolled = [h.to_dict() for h in hotspots(pg, by)]  # type: ignore[arg-type]
            _same([h.to_dict() for h in hotspots(lite, by)], rolled)  # type: ignore[arg-type]
            assert rolled
        since = report.Scope(since=time.time() - 3600)
        _same(
            [h.to_dict() for h in hotspots(lite, "model", scope=since)],
            [h.to_dict() for h in hotspots(pg, "model", scope=since)],
        )
    finally:
        report.EXACT_SPANS = orig
    # the roll-up tables themselves, row for row
    for sql in (
        f"select day, graph, dim, key, {', '.join(rollups.SUMS)} from rollups order by day, graph, dim, key",
        "select * from rollup_hist order by day, graph, dim, key, measure, bucket",
    ):
        _same([list(r) for r in lite.rows(sql)], [list(r) for r in pg.rows(sql)])
    # run totals, the runs list, one run's tree, two runs compared, a run repriced
    _same(_without(lite.list_runs(100), "started_at"), _without(pg.list_runs(100), "started_at"))
    for store in (lite, pg):  # a run by a prefix of its id; LIKE's wildcards in it are plain characters
        assert store.get_run("old-bench-00000002") is not None and store.get_run("bench_0") is None
        with pytest.raises(ConfigError, match="fits several runs"):
            store.get_run("bench-0000002")
    _same(span_tree(lite, ids[5]), span_tree(pg, ids[5]))
    _same(compare(lite, ids[1], ids[2]).to_dict(), compare(pg, ids[1], ids[2]).to_dict())
    _same(
        reprice(lite, ids[:4], model="openai:gpt-4o-mini").to_dict(),
        reprice(pg, ids[:4], model="openai:gpt-4o-mini").to_dict(),
    )
    # prune: the old runs, their spans and the spans of no run go; the old day's roll-ups are summed again
    cut = time.time() - 5 * DAY_S
    pruned = lite.prune(cut)
    assert pruned[0] == 3 and pruned[1] > 0
    assert pg.prune(cut) == pruned
    _same(lite.rows(count), pg.rows(count))
    sql = f"select day, dim, key, {', '.join(rollups.SUMS)} from rollups order by day, dim, key"
    _same([list(r) for r in lite.rows(sql)], [list(r) for r in pg.rows(sql)])
    lite.close()
    pg.close()


def _orch(
    args: list[str], traces: str, *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "traces", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ORCH_TRACES": traces, **(env or {})},
        check=False,
    )


def _json(args: list[str], traces: str) -> Any:
    proc = _orch([*args, "--json"], traces)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_orch_traces_gives_the_same_json_from_both_stores(
    both: tuple[TraceStore, TraceStore, list[str]], tmp_path: Path, pg_url: str
) -> None:
    lite, pg, ids = both
    lite.close()
    pg.close()
    sqlite = str(tmp_path / "traces.db")
    for args in (
        ["top", "--by", "model"],
        ["top", "--by", "node", "--last", "5"],
        ["show", ids[7]],
        ["compare", ids[1], ids[3]],
        ["reprice", ids[2], "--model", "anthropic:claude-haiku-4-5"],
    ):
        _same(_json(args, sqlite), _json(args, pg_url))
    pages = [
        _json(["report", ids[6], "--html", str(tmp_path / f"{n}.html")], where)
        for n, where in enumerate((sqlite, pg_url))
    ]
    _same(_without([pages[0]], "path"), _without([pages[1]], "path"))
    assert pages[1]["spans"] > 5 and (tmp_path / "1.html").stat().st_size > 10_000
    runs = _json(["list", "--limit", "50"], pg_url)
    _same(_without(_json(["list", "--limit", "50"], sqlite), "started_at"), _without(runs, "started_at"))
    assert len(runs) == 33 and {r["run_id"] for r in runs} >= set(ids)
    pruned = _json(["prune", "--older-than", "5d"], pg_url)
    assert pruned == _json(["prune", "--older-than", "5d"], sqlite) and pruned["runs_deleted"] == 3


def test_a_password_in_the_url_is_never_printed(pg_url: str, postgres_server: Any) -> None:
    secret = "hunter2"
    assert secret in TEST_SECRETS  # the suite scans every output for it
    url = pg_url.replace("postgres@", f"postgres:{secret}@")  # the test server trusts: any password works
    store = TraceStore(url)
    _fill([store], runs=2)
    store.close()
    shown = _orch(["list"], url)
    assert shown.returncode == 0, shown.stderr
    assert secret not in shown.stdout + shown.stderr and ":***@" in shown.stdout
    check = _orch(["check"], url)  # SQLite's check of a file: on PostgreSQL, one line saying so
    assert check.returncode == 2 and "pg_amcheck" in check.stderr and secret not in check.stderr
    # a server that is not there: one line, exit 2, no password
    down = url.replace(str(postgres_server.port), "1")
    failed = _orch(["top"], down)
    assert failed.returncode == 2
    assert "cannot use PostgreSQL at 127.0.0.1:1" in failed.stderr and "ORCH_TRACES" in failed.stderr
    assert secret not in failed.stdout + failed.stderr
    with pytest.raises(ConfigError) as err:
        TraceStore(down)
    assert secret not in str(err.value)


def test_without_the_postgres_extra_the_error_names_the_fix(pg_url: str) -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from orchestrator.tracing.store import TraceStore\n"
        f"TraceStore({pg_url!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0
    assert "pip install 'racehorse-orchestrator[postgres]'" in proc.stderr


def test_migrations_have_the_same_names_and_make_the_same_schema(tmp_path: Path, pg_url: str) -> None:
    assert [f.__name__ for f in PG_MIGRATIONS] == [f.__name__ for f in MIGRATIONS]
    lite, pg = TraceStore(tmp_path / "t.db"), TraceStore(pg_url)
    types = {"TEXT": "text", "REAL": "double precision", "INTEGER": "bigint", "FLOAT": "double precision"}
    for table in ("runs", "spans", "rollups", "rollup_hist", "_migrations"):
        want = [
            (name, types.get(kind, kind)) for _, name, kind, *_ in lite.rows(f"pragma table_info({table})")
        ]
        got = pg.rows(
            "select column_name, data_type from information_schema.columns where table_schema = ? "
            "and table_name = ? order by ordinal_position",
            [SCHEMA, table],
        )
        if table in ("rollups", "rollup_hist"):  # SQLite's `real` and `integer` are 8 bytes; so are these
            want = [(n, "double precision" if t == "REAL" else t) for n, t in want]
            got = [(n, "bigint" if t == "integer" else t) for n, t in got]
            want = [(n, "bigint" if t == "INTEGER" else t) for n, t in want]
        assert [tuple(r) for r in got] == want, table
    indexes = {
        n for (n,) in lite.rows("select name from sqlite_master where type = 'index' and name like 'idx_%'")
    }
    pg_indexes = {n for (n,) in pg.rows("select indexname from pg_indexes where schemaname = ?", [SCHEMA])}
    assert indexes and indexes <= pg_indexes
    assert pg.rows("select name from _migrations order by name") == [(f.__name__,) for f in MIGRATIONS]
    lite.close()
    pg.close()


def test_an_older_postgresql_store_is_migrated_and_its_spans_filled_in(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"set search_path to {SCHEMA}")
        assert migrate(conn, upto=2) == ["m001_runs_spans", "m002_run_owner"]
        conn.execute("insert into runs (run_id, graph, status) values ('r1', 'g', 'done')")
        attrs = {A.SLOT: "controller", A.COMPUTE_MS: 12.5, A.WORKER_REPAIRS: 2}
        conn.execute(
            "insert into spans (span_id, run_id, kind, node, model, start_ns, duration_ms, cost_usd, "
            "attributes) values ('s1', 'r1', 'chat', 'plan', 'openai:gpt-4o', 1, 5.0, 0.25, %s)",
            (json.dumps(attrs),),
        )
    store = TraceStore(pg_url)  # opening it applies the rest, once
    assert store.rows("select name from _migrations order by name") == [(f.__name__,) for f in MIGRATIONS]
    ((slot, compute, repairs),) = store.rows("select slot, compute_ms, repairs from spans")
    assert (slot, compute, repairs) == ("controller", 12.5, 2)
    assert store.rows("select spans, cost_usd from rollups where dim = 'model'") == [(1.0, 0.25)]
    store.close()


WRITER = """
import json, random, sys, time
from orchestrator.tracing.store import TraceStore
url, rows_file, seed, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
rows = json.load(open(rows_file))
random.Random(seed).shuffle(rows)
store = TraceStore(url)
while time.time() < start:
    time.sleep(0.001)
i = 0
rng = random.Random(seed)
while i < len(rows):
    n = rng.randint(1, 60)
    store.write_spans(rows[i : i + n])
    i += n
store.close()
"""


def test_two_processes_writing_at_once_lose_nothing_and_roll_up_exactly(tmp_path: Path, pg_url: str) -> None:
    lite = TraceStore(tmp_path / "source.db")
    ids = _fill([lite], runs=60, seed=11)
    rows = lite.spans()
    graphs = lite.graphs_of_runs(ids)
    pg = TraceStore(pg_url)  # created before the writers start, as an earlier process would
    for run_id in ids:
        pg.start_run(run_id, "assistant", config_hash="h", version="v")
    half = len(rows) // 2
    # each writer has its own spans and the same shared half, written in another order and other batches
    mine = [
        rows[:half] + rows[half : half + (len(rows) - half) // 2],
        rows[:half] + rows[half + (len(rows) - half) // 2 :],
    ]
    files = []
    for i, part in enumerate(mine):
        f = tmp_path / f"rows{i}.json"
        f.write_text(json.dumps(part))
        files.append(f)
    start = time.time() + 1.5
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, pg_url, str(f), str(i), str(start)])
        for i, f in enumerate(files)
    ]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    assert pg.rows("select count(*) from spans") == [(len(rows),)]
    assert sorted(r["span_id"] for r in pg.spans()) == sorted(r["span_id"] for r in rows)
    sums, hist = rollups.summarize(rows, graphs)  # every span counted once
    got = {
        tuple(r[:4]): list(r[4:])
        for r in pg.rows(f"select day, graph, dim, key, {', '.join(rollups.SUMS)} from rollups")
    }
    assert got.keys() == sums.keys()
    for k, v in sums.items():
        assert got[k] == pytest.approx(v, rel=1e-9), k
    got_hist = {tuple(r[:6]): r[6] for r in pg.rows("select * from rollup_hist")}
    assert got_hist == hist
    pg.close()
    lite.close()


def test_a_span_written_again_is_stored_and_rolled_up_once(tmp_path: Path, pg_url: str) -> None:
    source = TraceStore(tmp_path / "source.db")
    _fill([source], runs=4, seed=5)
    rows = source.spans()
    source.close()
    lite, pg = TraceStore(tmp_path / "t.db"), TraceStore(pg_url)
    for store in (lite, pg):
        store.write_spans(rows[:10])
        store.write_spans(rows[5:15] + rows[5:7])  # half again, and two twice in one batch
        store.write_spans(rows)
    count = "select count(*), sum(spans), sum(cost_usd) from rollups where dim = 'model'"
    assert pg.rows("select count(*) from spans") == [(len(rows),)]
    _same(lite.rows(count), pg.rows(count))
    sums, _ = rollups.summarize(rows, {})
    assert pg.rows("select sum(spans) from rollups where dim = 'model'")[0][0] == sum(
        v[0] for k, v in sums.items() if k[2] == "model"
    )
    lite.close()
    pg.close()


def test_the_traces_setting_takes_a_postgresql_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://orch:hunter2@db.internal:5432/orch"
    assert Settings(traces_path=url).traces_path == url
    assert Settings.resolve(traces_path=url).traces_path == url
    assert Settings(traces_path="sqlite:///t.db").traces_path == Path("t.db")
    monkeypatch.setenv("ORCH_TRACES", url)
    assert Settings.resolve().traces_path == url
    monkeypatch.delenv("ORCH_TRACES")
    plain = "postgresql://orch@db.internal:5432/orch"  # no password in a file (the suite scans for it)
    (tmp_path / "pyproject.toml").write_text(f'[tool.orchestrator]\ntraces = "{plain}"\n')
    assert Settings.resolve(load_manifest(tmp_path)).traces_path == plain
    with pytest.raises(ConfigError) as err:
        Settings.resolve(traces_path="mysql://orch:hunter2@db/orch")
    assert "traces take" in str(err.value) and "hunter2" not in str(err.value)


class _S(TypedDict, total=False):
    input: str
    answer: str


async def _draft(state: _S, runtime: Runtime[RunContext]) -> dict[str, str]:
    reply = await runtime.context.model("write").ainvoke([HumanMessage(state["input"])])
    return {"answer": str(reply.content)}


async def test_a_run_records_itself_in_a_postgresql_store(tmp_path: Path, pg_url: str) -> None:
    graph: StateGraph[_S, RunContext, _S, _S] = StateGraph(_S, context_schema=RunContext)
    graph.add_node("draft", _draft)
    graph.add_edge(START, "draft")
    orch = Orchestrator(
        settings=Settings(traces_path=pg_url, checkpoints_path=tmp_path / "ckpt.db"),
        slots={"write": SlotConfig(model="python:scripted", prices=PriceOverride(input=1e-6, output=4e-6))},
        models={"write": ScriptedChatModel(replies=["a draft"])},
        graphs={"one": graph},
    )
    result = await orch.arun("one", "write it")
    orch.close()
    assert result.status == "ok", result.error
    store = TraceStore(pg_url)
    run = store.get_run(result.run_id)
    assert run is not None and run["status"] == "ok" and run["graph"] == "one"
    assert run["cost_usd"] == pytest.approx(result.ledger.cost_usd) and run["cost_usd"] > 0
    assert {s["kind"] for s in store.run_spans(result.run_id)} >= {"run", "node", "chat"}
    (draft,) = [h for h in hotspots(store, "node") if h.key == "draft"]
    assert draft.cost_usd == pytest.approx(result.ledger.cost_usd)
    store.close()


OPEN = """
import sys, time
from orchestrator.tracing.store import TraceStore
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
TraceStore(sys.argv[1]).close()
"""


def test_processes_opening_a_new_postgresql_store_together_migrate_it_once(pg_url: str) -> None:
    start = time.time() + 1.5
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN, pg_url, str(start)], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0], [p.stderr.read() for p in procs if p.stderr]
    for p in procs:
        if p.stderr:
            p.stderr.close()
    store = TraceStore(pg_url)
    assert store.rows("select name from _migrations order by name") == [(f.__name__,) for f in MIGRATIONS]
    store.close()


def test_a_user_who_may_not_create_the_tables_gets_one_line(pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    reader = f"reader_{database}"  # roles are the server's: one per test database
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"create role {reader} login")
        conn.execute(f"revoke create on database {database} from public")
    url = pg_url.replace("postgres@", f"{reader}:hunter2@")
    with pytest.raises(ConfigError) as err:
        TraceStore(url)
    text = str(err.value)
    assert "cannot make its tables (schema orch_traces)" in text and "permission denied" in text
    assert "hunter2" not in text and f"{reader}:***@" in text
