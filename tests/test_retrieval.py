"""Tool retrieval: identifier splitting, BM25 fields, the persisted SQLite index and its incremental updates,
dense and hybrid search on the real MiniLM model file, the evaluation figures, and the Catalog on top."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ConfigError
from orchestrator.toolsets.catalog import Catalog
from orchestrator.toolsets.retrieval import ToolDoc, ToolIndex, evaluate, read_catalog, read_queries
from orchestrator.toolsets.retrieval.dense import MiniLM, available
from orchestrator.toolsets.retrieval.docs import LabelledQuery
from orchestrator.toolsets.retrieval.evaluate import auc
from orchestrator.toolsets.retrieval.text import clauses, terms

dense_only = pytest.mark.skipif(not available(), reason="the embed extra is not installed")

DOCS = [
    ToolDoc(
        "getCurrentWeather",
        "Current conditions for a city.",
        {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}},
    ),
    ToolDoc("weather.forecast_daily", "Forecast of rain and temperature for the coming days.", {}),
    ToolDoc(
        "math.factorial",
        "Factorial of a whole number.",
        {"type": "object", "properties": {"number": {"type": "integer", "description": "The number"}}},
    ),
    ToolDoc(
        "send_email",
        "Send a message to a recipient.",
        {
            "type": "object",
            "properties": {
                "recipient_address": {"type": "string", "description": "Where it goes"},
                "subject": {"type": "string", "description": "Subject line"},
            },
        },
    ),
    ToolDoc("flights.bookFlight", "Reserve a seat on a plane between two airports.", {}),
    ToolDoc("convert_currency", "Convert an amount of money from one currency to another.", {}),
]


def test_identifiers_are_split_into_words() -> None:
    assert terms("getCurrentWeather") == ["current", "weather"]
    assert terms("math.factorial HTTPRequest snake_case_name") == [
        "math",
        "factorial",
        "http",
        "request",
        "snake",
        "case",
        "name",
    ]
    assert terms("the bookings of flights") == ["book", "flight"]


def test_numbers_are_values_not_words_unless_joined_to_letters() -> None:
    assert terms("days from 2026-03-02 to 2026-03-20, 15% of 1,234.5") == ["days"]
    assert terms("sha256 of a base64 string in 3D, log2") == [
        "sha",
        "256",
        "base",
        "64",
        "string",
        "3",
        "log",
        "2",
    ]


def test_clauses_split_a_multi_part_request_only() -> None:
    assert clauses("Book a flight to Rome and then send an email to Ann.") == [
        "Book a flight to Rome",
        "send an email to Ann.",
    ]
    assert clauses("Area of a rectangle with length 3 and width 4") == [
        "Area of a rectangle with length 3 and width 4"
    ]


def test_catalog_file_reads_dict_as_object_and_keeps_the_first_of_a_name(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    rows = [
        {
            "name": "a.b",
            "description": "first",
            "parameters": {"type": "dict", "properties": {"x": {"type": "dict", "properties": {}}}},
        },
        {"type": "function", "function": {"name": "c", "description": "wrapped"}},
        {"name": "a.b", "description": "second", "parameters": {}},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = read_catalog(path)
    assert [(d.name, d.description) for d in docs] == [("a.b", "first"), ("c", "wrapped")]
    assert docs[0].parameters["type"] == "object"
    assert docs[0].parameters["properties"]["x"]["type"] == "object"
    path.write_text('{"name": "ok", "description": ""}\n{not json}\n')
    with pytest.raises(ConfigError, match=r"c.jsonl:2: not valid JSON"):
        read_catalog(path)


def test_queries_file_needs_a_query_and_a_list_of_gold(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "hi", "gold_tools": ["a"], "category": "x"}\n{"query": "no tool"}\n')
    assert read_queries(path) == [
        LabelledQuery("hi", ("a",), "1", "x"),
        LabelledQuery("no tool", (), "2", ""),
    ]
    path.write_text('{"query": "hi", "gold_tools": "a"}\n')
    with pytest.raises(ConfigError, match="must be a list"):
        read_queries(path)


def test_bm25_finds_camel_case_and_dotted_tools_and_parameter_names() -> None:
    index = ToolIndex()
    index.sync(DOCS)
    assert index.search("what is the current weather in Oslo", 1, "bm25")[0].name == "getCurrentWeather"
    assert index.search("factorial of 7", 1, "bm25")[0].name == "math.factorial"
    assert index.search("book a flight", 1, "bm25")[0].name == "flights.bookFlight"
    # only a parameter name says it: recipient address
    assert index.search("recipient address", 1, "bm25")[0].name == "send_email"
    assert [h.name for h in index.search("weather", 5, "bm25", exclude=["getCurrentWeather"])] == [
        "weather.forecast_daily"
    ]
    assert index.search("zebra xylophone", 3, "bm25") == []


def test_the_index_persists_and_updates_only_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    first = ToolIndex(path)
    report = first.sync(DOCS)
    assert (report.added, report.changed, report.removed) == (len(DOCS), 0, 0)
    first.close()

    again = ToolIndex(path)  # a new process would see the same: the terms come from the file
    assert len(again) == len(DOCS) and again.fingerprint == report.fingerprint
    assert again.sync(DOCS).unchanged == len(DOCS)
    assert again.search("factorial", 1, "bm25")[0].name == "math.factorial"

    edited = [
        replace(d, description="Multiply numbers from 1 to n.") if d.name == "math.factorial" else d
        for d in DOCS
        if d.name != "send_email"
    ]
    edited.append(ToolDoc("translate_text", "Translate text into another language.", {}))
    report = again.sync(edited)
    assert (report.added, report.changed, report.removed) == (1, 1, 1)
    assert again.fingerprint == report.fingerprint
    assert again.search("translate into French", 1, "bm25")[0].name == "translate_text"
    assert "send_email" not in [h.name for h in again.search("send an email", 3, "bm25")]

    db = sqlite3.connect(path)
    applied = [r[0] for r in db.execute("select name from _migrations")]
    assert applied == ["m001_tool_index", "m002_expansions"]
    assert db.execute("select count(*) from tools").fetchone()[0] == len(edited)
    order = [r[0] for r in db.execute("select name from tools order by position")]
    assert order == [d.name for d in edited]


def test_a_tool_defined_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="defined twice"):
        ToolIndex().sync([DOCS[0], DOCS[0]])


def test_unknown_method_says_which_exist() -> None:
    index = ToolIndex()
    index.sync(DOCS)
    with pytest.raises(ConfigError, match="did you mean 'hybrid'"):
        index.search("weather", 3, "hybrd")


@dense_only
def test_dense_search_matches_meaning_without_shared_words(tmp_path: Path) -> None:
    index = ToolIndex(tmp_path / "d.db")
    assert index.sync(DOCS, dense=True).embedded == len(DOCS)
    assert index.search("will it be sunny tomorrow in Rome", 1, "dense")[0].name in {
        "weather.forecast_daily",
        "getCurrentWeather",
    }
    assert index.search("how many euros is 20 dollars", 1, "dense")[0].name == "convert_currency"
    hits = index.search("how many euros is 20 dollars", 3, "hybrid")
    assert hits[0].name == "convert_currency" and 0 < hits[0].relevance <= 1
    # Vectors persist: reopening embeds nothing; a changed tool is embedded again, alone.
    reopened = ToolIndex(tmp_path / "d.db")
    assert reopened.has_vectors() and reopened.sync(DOCS, dense=True).embedded == 0
    changed = [replace(DOCS[0], description="Current air quality for a city."), *DOCS[1:]]
    assert reopened.sync(changed, dense=True).embedded == 1


@dense_only
def test_the_model_file_is_verified_by_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not the model")
    monkeypatch.setenv("ORCH_EMBED_MODEL", str(fake))
    with pytest.raises(ConfigError, match="not the pinned"):
        MiniLM()


def test_split_brings_in_the_best_tool_of_each_clause() -> None:
    index = ToolIndex()
    index.sync(DOCS)
    query = "What is the weather in Paris today and then convert 20 dollars into euros"
    names = [h.name for h in index.search(query, 2, "bm25", split=True)]
    assert set(names) == {"getCurrentWeather", "convert_currency"}


def test_auc_counts_ties_as_half() -> None:
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.1], [0.9]) == 0.0
    assert auc([0.5], [0.5]) == 0.5
    assert auc([0.9, 0.4], [0.5]) == 0.5


def test_evaluate_figures_on_known_rankings() -> None:
    index = ToolIndex()
    index.sync(DOCS)
    queries = [
        LabelledQuery("factorial of 5", ("math.factorial",)),
        LabelledQuery("weather in Oslo and factorial of 5", ("getCurrentWeather", "math.factorial")),
        LabelledQuery("book a flight and send an email", ("flights.bookFlight", "zzz_missing")),
        LabelledQuery("zebra xylophone", ()),
    ]
    r = evaluate(index, queries, k=5, method="bm25")
    assert (r.queries, r.labelled, r.tools, r.missing_gold) == (4, 3, len(DOCS), 1)
    assert r.recall_at_k == round((1 + 1 + 0.5) / 3, 4)
    assert r.all_gold_at_k == round(2 / 3, 4)
    assert 0 < r.mrr <= 1 and r.p50_ms > 0
    assert r.schema_tokens_all > r.schema_tokens_dynamic > 0
    assert r.irrelevance_auc == 1.0  # the nonsense query matches nothing: relevance 0


def test_catalog_keeps_its_search_and_can_use_the_index(tmp_path: Path) -> None:
    from tools.catalog import TOOLS

    plain = Catalog.from_tools(TOOLS)
    assert plain.index is None
    assert plain.search("calendar days between 2026-03-02 and 2026-03-20", 1)[0].name == "date_diff"
    indexed = Catalog.from_tools(TOOLS, index=tmp_path / "bundled.db", method="bm25")
    assert indexed.search("calendar days between 2026-03-02 and 2026-03-20", 1)[0].name == "date_diff"
    assert "date_diff" not in [h.name for h in indexed.search("days between dates", 5, exclude=["date_diff"])]
    assert (tmp_path / "bundled.db").exists()
    assert indexed.docs()[0].source == "tools.arithmetic"
    with pytest.raises(ConfigError, match="unknown search method"):
        Catalog.from_tools(TOOLS, method="bm26")


def test_catalog_from_a_jsonl_file(tmp_path: Path) -> None:
    path = tmp_path / "tools.jsonl"
    path.write_text(
        json.dumps(
            {
                "name": "get_rate",
                "description": "Exchange rate between two currencies.",
                "parameters": {"type": "dict", "properties": {}},
            }
        )
        + "\n"
    )
    catalog = Catalog.from_jsonl(path)
    assert catalog.names() == ["get_rate"] and catalog.get("get_rate").tool is None
    assert catalog.get("get_rate").parameters["type"] == "object"
    assert catalog.search("exchange rate", 1)[0].name == "get_rate"
    path.write_text(json.dumps({"name": "math.factorial", "description": "x"}) + "\n")
    assert Catalog.from_jsonl(path).names() == ["math.factorial"]  # bound under an alias (wire_name)
    path.write_text(json.dumps({"name": "two words", "description": "x"}) + "\n")
    with pytest.raises(ConfigError, match="no spaces or control characters"):
        Catalog.from_jsonl(path)


def test_the_agents_catalog_searches_the_way_the_manifest_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_core.tools import StructuredTool

    from orchestrator import Orchestrator, Settings
    from orchestrator.config import Manifest

    def make(i: int) -> StructuredTool:
        def fn(city: str) -> str:
            return city

        words = ("weather", "stock", "flight", "recipe", "invoice")[i % 5]
        return StructuredTool.from_function(
            fn, name=f"{words}Lookup{i}", description=f"Look up the {words} ({i})."
        )

    monkeypatch.setenv("ORCH_TOOL_INDEX", str(tmp_path / "agent-index.db"))
    settings = Settings(traces_path=tmp_path / "t.db", checkpoints_path=tmp_path / "c.db")
    few = Orchestrator(settings=settings, tools=[make(i) for i in range(20)], tracing=False)
    # "auto", with the embed extra (the test install has it): hybrid through the index, even when small
    assert few.catalog.index is not None and few.catalog.method == "hybrid"
    assert few.catalog.search("what's the weather like, lookup 3")[0].name.startswith("weather")
    monkeypatch.setattr("orchestrator.toolsets.retrieval.dense.available", lambda: False)
    plain = Orchestrator(settings=settings, tools=[make(i) for i in range(20)], tracing=False)
    assert plain.catalog.index is None  # without it, a small catalog is searched in memory
    many = [make(i) for i in range(210)]
    indexed = Orchestrator(
        settings=settings, tools=many, tracing=False, manifest=Manifest(tool_search="bm25")
    )
    assert indexed.catalog.index is not None and indexed.catalog.method == "bm25"
    assert (tmp_path / "agent-index.db").is_file()  # persisted, found again by the next process
    assert indexed.catalog.search("flightLookup7")[0].name == "flightLookup7"
    memory = Orchestrator(
        settings=settings, tools=many, tracing=False, manifest=Manifest(tool_search="memory")
    )
    assert memory.catalog.index is None


def test_other_catalogs_type_names_become_json_schema_and_a_grammar_takes_them(tmp_path: Path) -> None:
    import json as _json

    from orchestrator.agent.decisions import act_schema
    from orchestrator.providers.llama_engine import schema_to_gbnf

    params = {
        "type": "dict",
        "properties": {
            "ratio": {"type": "float"},
            "value": {"type": "any"},
            "name": {"type": "String"},
            "pair": {"type": "tuple", "items": {"type": "integer"}},
            "opts": {"type": "HashMap"},
            "flag": {"type": "boolean"},
            # no type left, a description: the grammar converter raised "Unrecognized schema" on it
            "node": {"type": "any", "description": "The old virtual node, with its listeners."},
            "description": {"type": "String", "description": "a parameter named like a note"},
        },
        "required": ["ratio", "name", "node", "description"],
    }
    path = tmp_path / "odd.jsonl"
    path.write_text(
        _json.dumps({"name": "odd_tool", "description": "Odd types.", "parameters": params}) + "\n"
    )
    catalog = Catalog.from_jsonl(path)
    props = catalog.get("odd_tool").parameters["properties"]
    types = [props[k].get("type") for k in props]
    assert types == ["number", None, "string", "array", "object", "boolean", None, "string"]
    grammar = schema_to_gbnf(act_schema(["odd_tool"], catalog))  # raised "Unrecognized schema" before
    assert '"\\"description\\""' in grammar  # a parameter's name is kept, only notes are dropped
    char = next(line for line in grammar.splitlines() if line.startswith("char ::="))
    assert "\\x00-\\x1F" in char  # a string holds no raw control character: the reply stays JSON


def test_the_in_memory_search_reads_capitals_and_contractions_as_words() -> None:
    """ "UPPERCASE", "JSON", "CSV" were read letter by letter (the catalog's own pattern tried a capital
    followed by lower-case letters first), and the "s" of "what's" then matched each of them."""
    from orchestrator.toolsets.catalog import tokenize

    assert tokenize("make it UPPERCASE in JSON, what's HTTPRequest") == [
        "make",
        "uppercase",
        "json",
        "http",
        "request",
    ]
    assert tokenize("x 7") == ["7"]


_OPEN_INDEX = """
import sys, time
from orchestrator.toolsets.retrieval.store import IndexStore
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
IndexStore(sys.argv[1]).close()
"""


def test_processes_opening_a_new_index_at_once_apply_each_migration_once(tmp_path: Path) -> None:
    """A fleet's workers start together and open the same new index file: none may fail on a table another
    one has just made (found as `table expansions already exists` in a worker's log)."""
    import subprocess
    import sys
    import time

    for round_ in range(6):
        path = tmp_path / f"index-{round_}.db"
        start = time.time() + 1.5  # all of them import first, then open at the same moment
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_INDEX, str(path), str(start)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errors
        with sqlite3.connect(path) as db:
            names = [r[0] for r in db.execute("select name from _migrations order by name")]
        assert names == ["m001_tool_index", "m002_expansions"]


async def test_the_agents_embedding_search_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hybrid search embeds the query (5-25 ms of CPU): the agent's find_tools runs the embedding in a
    thread, so a process's other runs go on meanwhile (a search whose vector is made, well under a
    millisecond, runs on the loop); the run finds and calls the tool as before."""
    import threading

    from langchain_core.tools import StructuredTool

    from orchestrator import Limits, Orchestrator, Settings, SlotConfig
    from orchestrator.config import PriceOverride
    from orchestrator.testing import ScriptedChatModel

    def weather(city: str) -> str:
        """Look up the weather forecast for a city."""
        return f"sunny in {city}"

    def stock(symbol: str) -> str:
        """Look up a company's stock price by its ticker symbol."""
        return f"{symbol}: 10"

    replies = [
        json.dumps({"plan": [{"tool": "weather forecast for a city"}]}),
        json.dumps({"action": "call_tool", "tool": "weather", "args": {"city": "Oslo"}}),
        json.dumps({"action": "final", "answer": "sunny in Oslo"}),
    ]
    monkeypatch.setenv("ORCH_TOOL_INDEX", str(tmp_path / "index.db"))
    orch = Orchestrator(
        settings=Settings(traces_path=tmp_path / "t.db", checkpoints_path=tmp_path / "c.db"),
        slots={
            "controller": SlotConfig(
                model="python:scripted", role="racehorse", prices=PriceOverride(input=1e-6, output=2e-6)
            )
        },
        models={"controller": ScriptedChatModel(replies=replies, by_turn=True)},
        tools=[StructuredTool.from_function(f) for f in (weather, stock)],
        graphs={"g": "orchestrator.graph:build_agent_graph"},
        limits=Limits(max_steps=6, isolate_tools=False),
        tracing=False,
    )
    assert orch.catalog.method == "hybrid" and orch.catalog.embeds_queries
    embedded_on: list[bool] = []
    model = MiniLM.shared()
    model.forget_queries()  # the words are embedded in this run, not found from another test's
    embed = model.embed

    def recorded(texts: Any, batch: int = 32) -> Any:
        embedded_on.append(threading.current_thread() is threading.main_thread())
        return embed(texts, batch)

    monkeypatch.setattr(model, "embed", recorded)
    result = await orch.arun("g", "What's the weather in Oslo?", run_id="r-off-loop")
    orch.close()
    assert (result.status, result.answer) == ("ok", "sunny in Oslo"), result.error
    assert embedded_on == [False]  # embedded once, not on the loop's thread


def test_two_tool_sets_in_one_folder_keep_their_own_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orchestrators with different tools, started from one folder (a test suite beside a service), each
    search their own index: one syncing its tools does not take the other's away."""
    from langchain_core.tools import StructuredTool

    from orchestrator.config import Manifest
    from orchestrator.run.project import build_catalog

    def tool(name: str, description: str) -> StructuredTool:
        def fn(text: str) -> str:
            return text

        return StructuredTool.from_function(fn, name=name, description=description)

    monkeypatch.delenv("ORCH_TOOL_INDEX", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    words = [tool("word_count", "Count the words of a text."), tool("reverse_text", "Reverse a text.")]
    money = [
        tool("convert_currency", "Convert an amount between currencies."),
        tool("tip", "Work out a tip."),
    ]
    first = build_catalog(words, Manifest(tool_search="bm25"))
    second = build_catalog(money, Manifest(tool_search="bm25"))
    assert first.index is not None and second.index is not None
    assert first.index.store.path != second.index.store.path
    again = build_catalog(list(reversed(words)), Manifest(tool_search="bm25"))  # the same set, reused
    assert again.index is not None and again.index.store.path == first.index.store.path
    # the first catalog's process re-reads its index (as a new process would): still its own tools
    reread = build_catalog(words, Manifest(tool_search="bm25"))
    assert [h.name for h in reread.search("how many words are in this text", k=1)] == ["word_count"]
    assert [h.name for h in second.search("convert 20 euros to dollars", k=1)] == ["convert_currency"]


@dense_only
def test_query_vectors_are_cached_and_embedded_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """A search's query vector is the model's (as `embed` makes it), kept for the next search of the same
    words; the texts not seen yet are embedded in one batch; the cache keeps the last `QUERY_CACHE`."""
    import numpy as np

    from orchestrator.toolsets.retrieval import dense

    model = MiniLM()
    batches: list[list[str]] = []
    real = model.embed

    def counted(texts: Any, batch: int = 32) -> Any:
        batches.append(list(texts))
        return real(texts, batch)

    monkeypatch.setattr(model, "embed", counted)
    texts = ["weather in Oslo", "add 2 and 2", "weather in Oslo", "15% of 80"]
    got = model.queries(texts)
    assert batches == [["weather in Oslo", "add 2 and 2", "15% of 80"]]  # once each, one batch
    assert np.allclose(got, real(texts), atol=1e-5) and np.array_equal(got[0], got[2])
    assert np.allclose(model.queries(["15% of 80", "a new one"]), real(["15% of 80", "a new one"]), atol=1e-5)
    assert batches[1:] == [["a new one"]]  # the cached text is not embedded again
    got[0][:] = 0  # what a caller does with its copy does not reach the cache
    assert np.allclose(model.queries(["weather in Oslo"])[0], real(["weather in Oslo"])[0], atol=1e-5)
    monkeypatch.setattr(dense, "QUERY_CACHE", 2)
    model.queries(["x one", "x two", "x three"])
    assert len(model._queries) == 2 and "x one" not in model._queries
    model.forget_queries()
    assert not model._queries


@dense_only
def test_primed_queries_make_the_searches_embed_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = ToolIndex(tmp_path / "p.db", embedder=MiniLM())
    index.sync(DOCS, dense=True)
    embedded: list[list[str]] = []
    real = index.embedder.embed
    monkeypatch.setattr(
        index.embedder, "embed", lambda texts, batch=32: embedded.append(list(texts)) or real(texts)
    )
    queries = ["will it rain in Rome", "how many euros is 20 dollars"]
    assert not index.primed(queries, "hybrid") and index.primed(queries, "bm25")
    index.prime(queries, "hybrid")
    assert embedded == [queries]
    assert index.primed(queries, "hybrid") and not index.primed([*queries, "a third"], "hybrid")
    unloaded = ToolIndex(tmp_path / "p.db")
    assert not unloaded.primed(queries, "hybrid") and unloaded._embedder is None  # never loads the model
    cold = ToolIndex(tmp_path / "p.db", embedder=MiniLM())
    for q in queries:  # the same hits as searches that embed their own query
        assert index.search(q, 3, "hybrid") == cold.search(q, 3, "hybrid")
    assert embedded == [queries]
    index.prime(["will it rain in Rome"], "bm25")  # a BM25 search embeds nothing
    assert embedded == [queries]
