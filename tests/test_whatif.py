"""What-if pricing and run comparison, checked against the stored tokens priced by hand from prices.json.

The expected figures never go through `pricing`: tokens are read from the spans table with plain SQL and
multiplied by the rates read from the price file's JSON here, each token kind at its own rate.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchestrator import Settings, cli
from orchestrator.cli import console
from orchestrator.cost.pricing import price_table
from orchestrator.errors import ConfigError, UnknownModelError
from orchestrator.evals.compare import compare
from orchestrator.evals.whatif import reprice, runs_in_scope
from orchestrator.tracing import attrs as A
from orchestrator.tracing.setup import Tracing
from orchestrator.tracing.spans import open_span
from orchestrator.tracing.store import TraceStore
from support import ROOT, MakeOrch, act

SNAPSHOT: dict[str, dict[str, Any]] = json.loads(
    (ROOT / "orchestrator" / "data" / "prices.json").read_text(encoding="utf-8")
)
TASK = "How many days from 2026-03-02 to 2026-03-20? Also classify: 'my card has not arrived'"
DAYS = {"tool": "days between 2026-03-02 and 2026-03-20"}
CLASSIFY = {"worker": "classify_request", "text": "my card has not arrived"}
CALL = act(action="call_tool", tool="date_diff", args={"start": "2026-03-02", "end": "2026-03-20"})

# Model calls with every kind of token, as an API model reports them (OTel's convention: input includes the
# cache reads and writes, output includes reasoning). The second is above claude-haiku-5-5's 100k tier.
KINDS = [
    dict(slot="controller", model="anthropic:claude-haiku-4-5", inp=12_000, read=8_000, write=3_000,
         write_1h=1_000, out=900, reasoning=300, cost=0.004),
    dict(slot="controller", model="anthropic:claude-haiku-4-5", inp=180_000, read=120_000, write=40_000,
         write_1h=10_000, out=2_000, reasoning=1_500, cost=0.05),
    dict(slot="extract", model="python:mystery", inp=700, out=40, cost=None),  # unpriced: unknown, not 0
    dict(slot="extract", model="python:mystery", failed=True),  # failed before any usage: nothing billed
    dict(slot=None, model="gpt-4o-mini", inp=300, out=30, cost=0.0001),  # a graph's own chat model
]  # fmt: skip


def by_hand(key: str, t: dict[str, int]) -> float:
    """One call at the snapshot's rates for `key`: every token kind once, at its own rate, tier included."""
    e = SNAPSHOT[key]
    over = t["input_tokens"] > 100_000 and "input_cost_per_token_above_100k_tokens" in e

    def rate(name: str, fallback: float | None = None) -> float:
        value = e.get(f"{name}_above_100k_tokens", e.get(name)) if over else e.get(name)
        return float(value if value is not None else fallback)  # type: ignore[arg-type]

    inp = rate("input_cost_per_token")
    write = rate("cache_creation_input_token_cost", inp)
    uncached = t["input_tokens"] - t["cache_read_tokens"] - t["cache_write_tokens"]
    return (
        uncached * inp
        + t["cache_read_tokens"] * rate("cache_read_input_token_cost", inp)
        + (t["cache_write_tokens"] - t["cache_write_1h_tokens"]) * write
        + t["cache_write_1h_tokens"] * rate("cache_creation_input_token_cost_above_1hr", write)
        + t["output_tokens"] * rate("output_cost_per_token")  # reasoning is part of output: not again
    )


def chat_rows(path: Path, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The stored model calls, read with plain SQL (not through the store's code)."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    marks = ",".join("?" * len(run_ids))
    rows = conn.execute(
        "select run_id, slot, model, cost_usd, coalesce(input_tokens, 0) input_tokens, "
        "coalesce(output_tokens, 0) output_tokens, coalesce(cache_read_tokens, 0) cache_read_tokens, "
        "coalesce(cache_write_tokens, 0) cache_write_tokens, "
        "coalesce(cache_write_1h_tokens, 0) cache_write_1h_tokens, input_tokens is null no_usage "
        f"from spans where kind = 'chat' and run_id in ({marks})",
        list(run_ids),
    ).fetchall()
    conn.close()
    return [dict(r) for r in rows]


def record_calls(store: TraceStore, run_id: str) -> None:
    """The KINDS calls as one run, through the real exporter (OTel spans -> SQLite)."""
    store.start_run(run_id, "kinds", config_hash="test", version="0")
    tracing = Tracing(store)
    try:
        with (
            open_span(tracing.tracer, "invoke_workflow kinds", "run", {A.RUN_ID: run_id}),
            open_span(
                tracing.tracer, "invoke_agent controller", "node", {A.RUN_ID: run_id, A.NODE: "controller"}
            ),
        ):
            for c in KINDS:
                at: dict[str, Any] = {A.RUN_ID: run_id, A.NODE: "controller", A.REQUEST_MODEL: c["model"]}
                if c["slot"]:
                    at[A.SLOT] = c["slot"]
                if not c.get("failed"):
                    at |= {A.INPUT_TOKENS: c["inp"], A.OUTPUT_TOKENS: c["out"]}
                    at |= {A.CACHE_READ: c.get("read", 0), A.CACHE_WRITE: c.get("write", 0)}
                    if c.get("write_1h"):
                        at[A.CACHE_WRITE_1H] = c["write_1h"]
                    if c.get("reasoning"):
                        at[A.REASONING] = c["reasoning"]
                    if c["cost"] is not None:
                        at[A.COST] = c["cost"]
                with open_span(tracing.tracer, f"chat {c['model']}", "chat", at):
                    pass
    finally:
        tracing.close()
    store.end_run(run_id, status="ok", cost_usd=0.0541, unpriced_calls=1)


@pytest.fixture
def runs(make_orch: MakeOrch, settings: Settings) -> Iterator[tuple[TraceStore, list[str]]]:
    """Two real runs of the agent on scripted models (one with a worker part) and the KINDS run."""
    import asyncio

    first = make_orch(
        [json.dumps({"plan": [DAYS, CLASSIFY]}), CALL, act(action="final", answer="18 days; card_arrival")],
        ['{"label": "card_arrival"}'],
        by_turn=True,
    )
    second = make_orch(
        [json.dumps({"plan": [DAYS]}), CALL, act(action="final", answer="18 days")], by_turn=True
    )
    a = asyncio.run(first.arun("agent", TASK))
    b = asyncio.run(second.arun("agent", TASK))
    assert (a.status, b.status) == ("ok", "ok")
    store = TraceStore(settings.traces_path)
    record_calls(store, "kinds-run")
    yield store, [a.run_id, b.run_id, "kinds-run"]
    store.close()


def test_reprice_is_the_stored_tokens_times_the_price_table(
    runs: tuple[TraceStore, list[str]], settings: Settings
) -> None:
    store, ids = runs
    rows = chat_rows(settings.traces_path, ids)
    assert {r["model"] for r in rows} >= {"python:scripted", "anthropic:claude-haiku-4-5"}
    for target, key in (
        ("openai:gpt-4o-mini", "gpt-4o-mini"),
        ("anthropic:claude-haiku-5-5", "claude-haiku-5-5"),
    ):
        result = reprice(store, ids, model=target, table=price_table())
        assert result.total.calls == len(rows) == 12 and result.total.repriced_calls == 12
        assert result.total.new_usd == pytest.approx(sum(by_hand(key, r) for r in rows), rel=1e-12)
        for line in result.by_run:
            mine = [r for r in rows if r["run_id"] == line.key]
            assert line.new_usd == pytest.approx(sum(by_hand(key, r) for r in mine), rel=1e-12)
        for line in result.by_slot:
            mine = [r for r in rows if r["slot"] == line.key]
            assert line.new_usd == pytest.approx(sum(by_hand(key, r) for r in mine), rel=1e-12)
        assert {line.key for line in result.by_slot} == {"controller", "classify", None, "extract"}
    # the tiered call, by hand from the figures of the snapshot (above 100k prompt tokens): 20k uncached,
    # 120k cache reads, 30k 5-minute and 10k 1-hour cache writes, 2k output (1.5k of it reasoning)
    big = next(r for r in rows if r["input_tokens"] == 180_000)
    assert by_hand("claude-haiku-5-5", big) == pytest.approx(
        20_000 * 5e-7 + 120_000 * 5e-8 + 30_000 * 6.25e-7 + 10_000 * 1e-6 + 2_000 * 2.5e-6
    )
    kinds = reprice(store, ["kinds"], model="anthropic:claude-haiku-5-5")  # a prefix
    assert (
        kinds.by_run[0].tokens.reasoning_tokens == 1_800
        and kinds.total.tokens.cache_write_1h_tokens == 11_000
    )


def test_old_cost_is_the_stored_one_and_unknown_stays_unknown(
    runs: tuple[TraceStore, list[str]], settings: Settings
) -> None:
    store, ids = runs
    result = reprice(store, ids, model="local:qwen2.5-0.5b")  # a local model: priced 0
    ledger = {r["run_id"]: r["cost_usd"] for r in store.list_runs()}
    for line in result.by_run[:2]:  # the real runs: the sum of their calls is what their ledger says
        assert line.old_usd == pytest.approx(ledger[line.key]) and line.old_unpriced == 0
        assert line.new_usd == 0.0 and line.delta_usd == pytest.approx(-ledger[line.key])
    kinds = result.by_run[2]
    assert kinds.old_usd == pytest.approx(0.004 + 0.05 + 0.0001)
    assert kinds.old_unpriced == 1 and kinds.delta_usd is None  # the python:mystery call: null, not 0
    assert kinds.new_usd == 0.0 and kinds.new_unpriced == 0
    assert result.to_dict()["by_run"][2]["old_unpriced"] == 1


def test_reprice_slots_and_keep_the_others_as_stored(
    runs: tuple[TraceStore, list[str]], settings: Settings
) -> None:
    store, ids = runs
    rows = chat_rows(settings.traces_path, ids)
    result = reprice(store, ids, slots={"controller": "openai:gpt-4o", "classify": "openai:gpt-4o-mini"})
    by_slot = {line.key: line for line in result.by_slot}
    controller = [r for r in rows if r["slot"] == "controller"]
    assert by_slot["controller"].new_usd == pytest.approx(sum(by_hand("gpt-4o", r) for r in controller))
    classify = [r for r in rows if r["slot"] == "classify"]
    assert by_slot["classify"].new_usd == pytest.approx(sum(by_hand("gpt-4o-mini", r) for r in classify))
    extract = by_slot["extract"]  # not asked for: kept as stored, the unpriced call still unknown
    assert (extract.repriced_calls, extract.new_usd, extract.new_unpriced) == (0, 0.0, 1)
    assert extract.models == (("python:mystery", None),)
    assert result.total.new_unpriced == 1 and result.total.delta_usd is None
    assert set(result.prices) == {"openai:gpt-4o", "openai:gpt-4o-mini"}


def test_reprice_errors_name_the_fix(runs: tuple[TraceStore, list[str]]) -> None:
    store, ids = runs
    with pytest.raises(UnknownModelError, match="did you mean 'openai:gpt-4o-mini'"):
        reprice(store, ids, model="openai:gpt-4o-mni")
    with pytest.raises(UnknownModelError, match=r"not of the form 'provider:model'.*'openai:gpt-4o-mini'"):
        reprice(store, ids, model="gpt-4o-mini")
    with pytest.raises(UnknownModelError, match="no price for model 'python:mystery'"):
        reprice(store, ids, model="python:mystery")
    with pytest.raises(
        ConfigError, match=r"used slot 'controler'; did you mean 'controller'\?; the slots used:"
    ):
        reprice(store, ids, slots={"controler": "openai:gpt-4o"})
    with pytest.raises(ConfigError, match="the slots used: 'classify', 'controller', 'extract'"):
        reprice(store, ids, slots={"planner": "openai:gpt-4o"})
    with pytest.raises(ConfigError, match="no run 'nope'"):
        reprice(store, ["nope"], model="openai:gpt-4o")
    with pytest.raises(ConfigError, match="give one of"):
        reprice(store, ids, model="openai:gpt-4o", slots={"controller": "openai:gpt-4o"})
    assert runs_in_scope(store, last=2) == [ids[2], ids[1]]
    with pytest.raises(ConfigError, match="no runs in"):
        runs_in_scope(TraceStore(":memory:"), last=3)


def test_compare_per_node_totals_with_counts(runs: tuple[TraceStore, list[str]], settings: Settings) -> None:
    store, (a, b, _) = runs
    result = compare(store, a[:10], b)
    conn = sqlite3.connect(settings.traces_path)
    nodes = {n.node: n for n in result.nodes}
    assert set(nodes) == {"controller", "find_tools", "call_tool", "worker"}
    assert nodes["worker"].only_in == "a" and nodes["worker"].b is None and nodes["worker"].delta() is None
    for run, side in ((a, "a"), (b, "b")):
        for node, diff in nodes.items():
            got = getattr(diff, side)
            if got is None:
                continue
            count, wall = conn.execute(
                "select count(*), sum(duration_ms) from spans "
                "where run_id = ? and kind = 'node' and node = ?",
                [run, node],
            ).fetchone()
            cost, inp, calls = conn.execute(
                "select coalesce(sum(cost_usd), 0), coalesce(sum(input_tokens), 0), count(*) from spans "
                "where run_id = ? and kind = 'chat' and node = ?",
                [run, node],
            ).fetchone()
            assert (got.count, got.calls, got.input_tokens) == (count, calls, inp)
            assert got.wall_ms == pytest.approx(wall) and got.cost_usd == pytest.approx(cost)
    controller = nodes["controller"]
    assert controller.a is not None and controller.b is not None and controller.a.count > 1
    assert controller.a.models == ("python:scripted",)
    delta = controller.delta()
    assert delta is not None and delta["cost_usd"] == pytest.approx(
        controller.b.cost_usd - controller.a.cost_usd
    )
    ledger = {r["run_id"]: r["cost_usd"] for r in store.list_runs()}
    assert result.total.a is not None and result.total.a.cost_usd == pytest.approx(ledger[a])
    assert result.total.b is not None and result.total.b.cost_usd == pytest.approx(ledger[b])
    assert json.loads(json.dumps(result.to_dict()))["nodes"][0]["node"] == "controller"
    with pytest.raises(ConfigError, match="no run 'zzz'"):
        compare(store, a, "zzz")
    conn.close()


def test_cli_reprice_and_compare_in_subprocesses(
    runs: tuple[TraceStore, list[str]], settings: Settings, tmp_path: Path
) -> None:
    _, (a, b, kinds) = runs
    rows = chat_rows(settings.traces_path, [a, b, kinds])
    prices = tmp_path / "prices.json"  # the project's own price file, over the shipped snapshot
    mini = {"input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6, "litellm_provider": "openai"}
    prices.write_text(json.dumps({"gpt-4o-mini": {**mini, "mode": "chat"}}))
    commands = {
        "json": ["reprice", "--last", "3", "--model", "openai:gpt-4o-mini", "--json"],
        "compare": ["compare", a, b, "--json"],
        "typo": ["reprice", a, "--model", "openai:gpt-4o-mni"],
    }
    env = {**os.environ, "ORCH_TRACES": str(settings.traces_path), "ORCH_PRICES": str(prices)}
    procs = {  # at once: each is a fresh interpreter
        name: subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "--project", str(tmp_path), "traces", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name, args in commands.items()
    }
    done = {name: (p.wait(timeout=60), *p.communicate()) for name, p in procs.items()}

    code, stdout, stderr = done["json"]
    assert code == 0, stderr
    got = json.loads(stdout)
    assert got["run_ids"] == [kinds, b, a] and got["prices"]["openai:gpt-4o-mini"]["input"] == 1e-6
    mine = sum(r["input_tokens"] * 1e-6 + r["output_tokens"] * 4e-6 for r in rows)  # no cache rates: input
    assert got["total"]["new_usd"] == pytest.approx(mine, rel=1e-12)
    assert got["total"]["old_unpriced"] == 1 and got["total"]["delta_usd"] is None
    assert set(got["total"]) >= {"calls", "tokens", "old_usd", "new_usd", "models", "repriced_calls"}

    code, stdout, stderr = done["compare"]
    assert code == 0, stderr
    got = json.loads(stdout)
    assert got["run_a"]["run_id"] == a and [n["node"] for n in got["nodes"]][-1] == "worker"
    assert got["nodes"][-1]["only_in"] == "a" and got["total"]["delta"]["count"] < 0

    code, stdout, stderr = done["typo"]
    assert code == 2 and "Traceback" not in stderr
    assert "no price for model 'openai:gpt-4o-mni'" in stderr
    assert "did you mean 'openai:gpt-4o-mini'" in stderr


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    screen = Console(file=buffer, width=400, highlight=False, emoji=False, soft_wrap=True)
    monkeypatch.setattr(console, "out", screen)  # every command writes through console.out and console.err
    monkeypatch.setattr(console, "err", screen)
    return buffer


def test_cli_tables_and_errors(
    runs: tuple[TraceStore, list[str]],
    settings: Settings,
    tmp_path: Path,
    captured: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, (a, b, _) = runs
    monkeypatch.setenv("ORCH_TRACES", str(settings.traces_path))
    monkeypatch.delenv("ORCH_PRICES", raising=False)
    empty = tmp_path / "empty.db"
    TraceStore(empty).close()

    def orch(*argv: str) -> tuple[int, str]:
        captured.seek(0)
        captured.truncate()
        code = cli.main(["--project", str(tmp_path), "traces", *argv])
        return code, captured.getvalue()

    code, shown = orch("compare", a[:8], b[:8])
    assert code == 0, shown
    assert "worker (only in A)" in shown and "total" in shown and "python:scripted" in shown
    code, shown = orch("reprice", a[:8], "--slot", "controller=anthropic:claude-haiku-5-5")
    assert code == 0, shown
    assert "Repricing run " + a in shown and "By slot" in shown and "By run" in shown
    assert "python:scripted -> anthropic:claude-haiku-5-5" in shown
    assert "python:scripted (as stored)" in shown  # the classify slot's call
    assert "anthropic:claude-haiku-5-5: in $0.1, cache read $0.01" in shown
    assert "over 100k: in $0.5" in shown
    code, shown = orch("reprice", "--last", "3", "--model", "local:qwen2.5-0.5b")
    assert code == 0, shown
    assert "(+? x1)" in shown  # the unpriced call: unknown in old, not 0
    assert "1800)" in shown and "(1h 11000)" in shown  # reasoning and 1-hour cache writes
    for argv, message in (
        (("reprice", a, "--slot", "planner=openai:gpt-4o"), f"no model call in run {a} used slot 'planner'"),
        (("reprice", a, "--slot", "controller"), "--slot 'controller': give SLOT=MODEL"),
        (("reprice", "nope", "--model", "openai:gpt-4o"), "no run 'nope' in"),
        (("reprice", a, "--last", "2", "--model", "openai:gpt-4o"), "give either a RUN id or --last N"),
        (("reprice", "--last", "2", "--model", "openai:gpt-4o", "--traces", str(empty)), "no runs in"),
        (("compare", a, "zzz"), "no run 'zzz' in"),
    ):
        code, shown = orch(*argv)
        assert code == 2 and message in shown, (argv, shown)
    with pytest.raises(SystemExit) as exited:  # argparse: one of --model / --slot
        cli.build_parser().parse_args(["traces", "reprice", a, "--model", "x:y", "--slot", "a=x:y"])
    assert exited.value.code == 2
