"""Index-time expansion (doc2query): requests written per tool, stored in the index file by the tool's digest,
searched by BM25, dense and hybrid; the reply parsing; and search exactly as before without them."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from langchain_core.messages import BaseMessage
from test_retrieval import DOCS

from orchestrator.errors import ModelError
from orchestrator.toolsets.retrieval import ToolDoc, ToolIndex
from orchestrator.toolsets.retrieval.dense import available
from orchestrator.toolsets.retrieval.expand import MAX_CHARS, Reply, parse_requests, prompt
from orchestrator.toolsets.retrieval.store import MIGRATIONS, m001_tool_index, migrate

dense_only = pytest.mark.skipif(not available(), reason="the embed extra is not installed")

# Requests in words none of the tools' own texts use ("umbrella", "quid", "factorial" is not in them).
WRITTEN = {
    "getCurrentWeather": ["do I need an umbrella in Bergen today", "is it pouring in Oslo right now?"],
    "weather.forecast_daily": ["will the weekend in Nice be sunny", "next week's outlook for Madrid"],
    "math.factorial": ["what is 7 times 6 times 5 down to 1", "multiply every number up to 12"],
    "send_email": ["drop Anna a line about Friday's meeting", "mail the invoice to bob@example.com"],
    "flights.bookFlight": ["get me a seat to Lisbon on the 3rd of May", "fly from JFK to SFO tomorrow"],
    "convert_currency": ["how many quid is 40 bucks", "what are 250 yen in euros"],
}


class Writer:
    """A scripted writer: the requests of WRITTEN for the tool its prompt names; records the tools asked."""

    def __init__(self, replies: dict[str, list[str]] | None = None, fail_on: int | None = None) -> None:
        self.asked: list[str] = []
        self.replies = replies
        self.fail_on = fail_on

    async def __call__(self, messages: list[BaseMessage]) -> Reply:
        text = str(messages[1].content)
        name = text.split("\n", 1)[0].removeprefix("Tool name: ")
        self.asked.append(name)
        if self.fail_on is not None and len(self.asked) == self.fail_on:
            raise KeyboardInterrupt  # Ctrl-C while this tool's requests are being written
        if self.replies is not None and name in self.replies:
            queue = self.replies[name]
            return Reply(queue.pop(0) if len(queue) > 1 else queue[0], 100, 20)
        import json

        return Reply(json.dumps(WRITTEN[name]), 100, 20)


def names(hits: Sequence[object]) -> list[str]:
    return [h.name for h in hits]  # type: ignore[attr-defined]


async def test_expansions_persist_and_are_reused_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    index = ToolIndex(path)
    index.sync(DOCS)
    writer = Writer()
    report = await index.expand(writer, "test:writer")
    assert (report.tools, report.written, report.had, report.left) == (len(DOCS), len(DOCS), 0, 0)
    assert report.requests == 2 * len(DOCS) and (report.input_tokens, report.output_tokens) == (600, 120)
    assert writer.asked == [d.name for d in DOCS]
    index.close()

    reopened = ToolIndex(path)
    reopened.sync(DOCS)
    assert {n: list(e.requests) for n, e in reopened.expansions().items()} == WRITTEN
    assert names(reopened.search("umbrella", 1, "bm25")) == ["getCurrentWeather"]
    again = Writer()
    report = await reopened.expand(again, "test:writer")
    assert (report.written, report.had) == (0, len(DOCS)) and again.asked == []
    # another writer has written none yet: it writes them all
    other = Writer()
    assert (await reopened.expand(other, "test:other", limit=2)).left == len(DOCS) - 2
    assert len(other.asked) == 2


async def test_a_changed_description_is_written_again_alone_and_its_old_requests_never_used(
    tmp_path: Path,
) -> None:
    index = ToolIndex(tmp_path / "index.db")
    index.sync(DOCS)
    await index.expand(Writer(), "test:writer")
    assert names(index.search("quid", 1, "bm25")) == ["convert_currency"]
    changed = [
        replace(d, description="Exchange rates between currencies.") if d.name == "convert_currency" else d
        for d in DOCS
    ]
    index.sync(changed)
    assert "convert_currency" not in index.expansions()
    assert index.search("quid", 3, "bm25") == []  # written for the old description: not read
    writer = Writer({"convert_currency": ['["swap 50 dollars into pounds sterling"]']})
    report = await index.expand(writer, "test:writer")
    assert writer.asked == ["convert_currency"] and report.written == 1 and report.had == len(DOCS) - 1
    assert names(index.search("pounds sterling", 1, "bm25")) == ["convert_currency"]
    rows = sqlite3.connect(tmp_path / "index.db").execute(
        "select count(*) from expansions where name = 'convert_currency'"
    )
    assert rows.fetchone()[0] == 1  # the old content's requests are gone from the file


async def test_an_interrupted_expand_keeps_what_it_wrote_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    index = ToolIndex(path)
    index.sync(DOCS)
    with pytest.raises(KeyboardInterrupt):
        await index.expand(Writer(fail_on=3), "test:writer")
    assert sorted(index.expansions()) == sorted(d.name for d in DOCS[:2])  # searchable at once
    index.close()

    resumed = ToolIndex(path)
    resumed.sync(DOCS)
    writer = Writer()
    report = await resumed.expand(writer, "test:writer")
    assert writer.asked == [d.name for d in DOCS[2:]]
    assert (report.written, report.had, report.left) == (len(DOCS) - 2, 2, 0)
    assert len(resumed.expansions()) == len(DOCS)


async def test_bm25_finds_a_tool_by_words_only_its_requests_have() -> None:
    index = ToolIndex()
    index.sync(DOCS)
    assert index.search("do I need an umbrella", 3, "bm25") == []
    assert "convert_currency" not in names(index.search("how many quid is 40 bucks", 3, "bm25"))
    await index.expand(Writer(), "test:writer")
    assert names(index.search("do I need an umbrella", 3, "bm25")) == ["getCurrentWeather"]
    assert names(index.search("how many quid is 40 bucks", 1, "bm25")) == ["convert_currency"]
    # the tool's own words still lead
    assert names(index.search("factorial", 1, "bm25")) == ["math.factorial"]


@dense_only
async def test_dense_scores_a_tool_by_the_best_of_its_description_and_its_requests(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    index = ToolIndex(path)
    index.sync(DOCS, dense=True)
    query = "quick question: how many quid do I get for 40 bucks?"
    before = {h.name: h.relevance for h in index.search(query, len(DOCS), "dense")}
    await index.expand(Writer(), "test:writer")
    hits = index.search(query, len(DOCS), "dense")  # embeds the requests first
    after = {h.name: h.relevance for h in hits}
    assert hits[0].name == "convert_currency" and after["convert_currency"] > before["convert_currency"] + 0.2
    assert all(after[n] >= before[n] - 1e-4 for n in before)  # a best-of: never below the description
    assert names(index.search(query, 1, "hybrid")) == ["convert_currency"]
    index.close()
    # the requests' vectors persist: reopening embeds nothing
    reopened = ToolIndex(path)
    report = reopened.sync(DOCS, dense=True)
    assert (report.embedded, report.embedded_requests) == (0, 0)
    assert reopened.search(query, len(DOCS), "dense") == hits


# `ToolIndex.search` on DOCS before expansions existed (commit 308bcf5): (name, score, relevance), top 3.
QUERIES = [
    "factorial of 7",
    "will it rain in Rome tomorrow",
    "email the report to Bob",
    "how many euros is 20 dollars",
    "book a flight to Lisbon and check the weather there",
]
BEFORE = {
    "bm25": [
        [("math.factorial", 1.0, 1.0)],
        [("weather.forecast_daily", 1.0, 1.0)],
        [("send_email", 1.0, 1.0)],
        [],
        [
            ("flights.bookFlight", 1.0, 0.7504),
            ("getCurrentWeather", 0.5, 0.2496),
            ("weather.forecast_daily", 0.333333, 0.2327),
        ],
    ],
    "dense": [
        [
            ("math.factorial", 1.0, 0.7169),
            ("convert_currency", 0.5, 0.1266),
            ("weather.forecast_daily", 0.333333, 0.0997),
        ],
        [
            ("weather.forecast_daily", 1.0, 0.427),
            ("getCurrentWeather", 0.5, 0.3156),
            ("math.factorial", 0.333333, 0.0641),
        ],
        [
            ("send_email", 1.0, 0.2862),
            ("convert_currency", 0.5, 0.0935),
            ("getCurrentWeather", 0.333333, 0.0834),
        ],
        [
            ("convert_currency", 1.0, 0.4534),
            ("math.factorial", 0.5, 0.1926),
            ("flights.bookFlight", 0.333333, 0.0623),
        ],
        [
            ("getCurrentWeather", 1.0, 0.4313),
            ("weather.forecast_daily", 0.5, 0.3647),
            ("flights.bookFlight", 0.333333, 0.223),
        ],
    ],
    "hybrid": [
        [
            ("math.factorial", 1.0, 0.7169),
            ("convert_currency", 0.5, 0.1266),
            ("weather.forecast_daily", 0.333333, 0.0997),
        ],
        [
            ("weather.forecast_daily", 1.0, 0.427),
            ("getCurrentWeather", 0.5, 0.3156),
            ("math.factorial", 0.333333, 0.0641),
        ],
        [
            ("send_email", 1.0, 0.2862),
            ("convert_currency", 0.5, 0.0935),
            ("getCurrentWeather", 0.333333, 0.0834),
        ],
        [
            ("convert_currency", 1.0, 0.4534),
            ("math.factorial", 0.5, 0.1926),
            ("flights.bookFlight", 0.333333, 0.0623),
        ],
        [
            ("getCurrentWeather", 1.0, 0.4313),
            ("flights.bookFlight", 0.5, 0.223),
            ("weather.forecast_daily", 0.333333, 0.3647),
        ],
    ],
}


def ranked(index: ToolIndex, method: str) -> list[list[tuple[str, float, float]]]:
    return [[(h.name, h.score, h.relevance) for h in index.search(q, 3, method)] for q in QUERIES]


async def test_without_expansions_every_method_ranks_as_before(tmp_path: Path) -> None:
    methods = ["bm25", "dense", "hybrid"] if available() else ["bm25"]
    index = ToolIndex(tmp_path / "index.db")
    index.sync(DOCS, dense=available())
    for m in methods:
        got = ranked(index, m)
        if m == "bm25":
            assert got == BEFORE[m]
        else:  # cosines to 4 places: onnxruntime's sums may differ in the last place between CPUs
            assert [[(n, s) for n, s, _ in row] for row in got] == [
                [(n, s) for n, s, _ in r] for r in BEFORE[m]
            ]
            for row, want in zip(got, BEFORE[m], strict=True):
                assert [r for _, _, r in row] == pytest.approx([r for _, _, r in want], abs=2e-4)
    # requests written for content every tool has since changed are never read: the same rankings exactly
    await index.expand(Writer(), "test:writer")
    fresh = ToolIndex()
    edited = [replace(d, description=d.description + " ") for d in DOCS]
    index.sync(edited, dense=available())
    fresh.sync(edited, dense=available())
    for m in methods:
        assert ranked(index, m) == ranked(fresh, m)


async def test_a_reply_with_no_requests_is_asked_again_then_the_tool_is_skipped_and_listed() -> None:
    index = ToolIndex()
    index.sync(DOCS)
    fixed = Writer({"math.factorial": ["Sure! I can help with that:", '["seven factorial please"]']})
    await index.expand(fixed, "test:writer")
    assert fixed.asked.count("math.factorial") == 2
    assert index.expansions()["math.factorial"].requests == ("seven factorial please",)

    index = ToolIndex()
    index.sync(DOCS)
    broken = Writer({"send_email": ["[]"]})
    report = await index.expand(broken, "test:writer")
    assert broken.asked.count("send_email") == 2
    assert report.failed == ("send_email",) and (report.written, report.left) == (len(DOCS) - 1, 0)
    assert (report.input_tokens, report.output_tokens) == (100 * (len(DOCS) + 1), 20 * (len(DOCS) + 1))
    assert sorted(index.expansions()) == sorted(d.name for d in DOCS if d.name != "send_email")
    again = Writer({"send_email": ['["mail Bob the invoice"]']})
    report = await index.expand(again, "test:writer")  # the next call asks about it again
    assert again.asked == ["send_email"] and report.failed == () and report.written == 1


async def test_a_writer_that_fails_its_first_tools_is_stopped_with_an_error_naming_them() -> None:
    index = ToolIndex()
    index.sync(DOCS)
    mute = Writer({d.name: ["```json\n[]\n```"] for d in DOCS})
    with pytest.raises(ModelError) as caught:
        await index.expand(mute, "test:writer")
    assert len(mute.asked) == 2 * ToolIndex.FAIL_FIRST  # asked twice about each, then stopped
    message = str(caught.value)
    assert message.startswith(
        "the writer's replies held no requests for the first 3 tools ('getCurrentWeather', "
        "'weather.forecast_daily', 'math.factorial'; the last reply: '```json [] ```')"
    )
    assert index.expansions() == {}


async def test_a_writer_that_wrote_before_is_not_stopped_by_the_tools_it_failed() -> None:
    # the second call is left with only the tools the first one failed: that is no sign of a broken writer
    index = ToolIndex()
    index.sync(DOCS)
    hard = {d.name: ["```json\n[]\n```"] for d in DOCS[2:]}
    report = await index.expand(Writer(hard), "test:writer")
    assert report.written == 2 and report.failed == tuple(d.name for d in DOCS[2:])
    again = Writer(hard)
    report = await index.expand(again, "test:writer")
    assert (report.written, report.had, report.failed) == (0, 2, tuple(d.name for d in DOCS[2:]))
    assert again.asked == [d.name for d in DOCS[2:] for _ in range(2)]


def test_replies_are_read_as_json_or_one_request_per_line() -> None:
    doc = ToolDoc("get_weather", "Weather.")
    assert parse_requests('["rain in Oslo?", "sun in Rome"]', doc) == ["rain in Oslo?", "sun in Rome"]
    assert parse_requests('```json\n["a b", "c d"]\n```', doc) == ["a b", "c d"]
    assert parse_requests('{"requests": ["a b", 7, "c d"]}', doc) == ["a b", "c d"]
    assert parse_requests('["complete one", "cut sho', doc) == ["complete one"]  # ran out of tokens
    lines = "Here are 3 requests:\n1. Rain in Oslo?\n2) 'sun in Rome'\n- rain in oslo\n"
    lines += "* use get_weather for Paris"
    assert parse_requests(lines, doc) == ["Rain in Oslo?", "sun in Rome"]  # a repeat and the tool's name out
    assert parse_requests("  \n", doc) == [] and parse_requests("[1, 2]", doc) == []
    assert parse_requests(json_list(["x y"] * 3 + [f"r{i} z" for i in range(9)]), doc, 4) == [
        "x y",
        "r0 z",
        "r1 z",
        "r2 z",
    ]
    long = parse_requests(json_list(["word " * 100]), doc)[0]
    assert len(long) <= MAX_CHARS + 4 and long.endswith("...")
    assert parse_requests('["a\\u001b[2Jb c"]', doc) == ["a [2Jb c"]  # no control characters kept
    assert parse_requests('["search the web for cats"]', ToolDoc("search", "Web search.")) == [
        "search the web for cats"
    ]  # a name that is a plain word may be in a request


def json_list(items: list[str]) -> str:
    import json

    return json.dumps(items)


def test_the_prompt_shows_the_tool_and_asks_for_a_json_array() -> None:
    messages = prompt(DOCS[3], 4)
    text = str(messages[1].content)
    assert text.startswith("Tool name: send_email\nWhat it does: Send a message to a recipient.")
    assert "- recipient_address (string): Where it goes" in text and "- subject (string)" in text
    assert "Write 4 different requests" in text and text.endswith(
        "a JSON array of 4 strings and nothing else."
    )
    huge = ToolDoc(
        "big",
        "x " * 5000,
        {
            "type": "object",
            "properties": {f"p{i}": {"type": "string", "description": "y " * 80} for i in range(60)},
        },
    )
    assert len(str(prompt(huge)[1].content)) < 4000  # a huge schema can't overflow a small model's window


def test_an_index_file_from_before_expansions_opens_and_keeps_its_tools(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("create table _migrations (name text primary key, applied_at real)")
    m001_tool_index(old)
    old.execute("insert into _migrations values ('m001_tool_index', 0)")
    old.commit()
    old.close()
    index = ToolIndex(path)
    assert index.sync(DOCS).added == len(DOCS)
    db = sqlite3.connect(path)
    assert [r[0] for r in db.execute("select name from _migrations order by rowid")] == [
        m.__name__ for m in MIGRATIONS
    ]
    assert migrate(db) == []
