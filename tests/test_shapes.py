"""Output shapes for free-text workers: the schema built from each source, what it lets a model write, and
the worker ladder using it (a real loopback server that reads the schema it is sent)."""

from __future__ import annotations

import json
import re
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from loopback import Loopback

from orchestrator import (
    Orchestrator,
    RunContext,
    Settings,
    SlotConfig,
    style_worker,
    summarize_worker,
    worker_node,
)
from orchestrator.agent.workhorse import SAMPLE_TEMPERATURE
from orchestrator.errors import ConfigError
from orchestrator.providers.llama_engine import schema_to_gbnf
from orchestrator.workers.shapes import sentences_shape, source_numbers
from support import PRICES

SOURCE = (
    "Order 88213 was placed on 2 May for a Halden desk. It arrived on 9 May with a bent leg, and the "
    "arms have been out for delivery since 11 May. Marta Kowalska paid 1,249.50 EUR and wants 98 EUR back."
)


def _pattern(schema: dict[str, Any], *path: str) -> re.Pattern[str]:
    node: Any = schema["properties"]
    for key in path:
        node = node[key]
    text = node["pattern"]
    assert text.startswith("^") and text.endswith("$")
    return re.compile(text[1:-1])


def test_the_numbers_of_a_source_as_written_in_order() -> None:
    assert source_numbers(SOURCE) == ["88213", "2", "9", "11", "1,249.50", "98"]


def test_a_shaped_sentence_is_one_sentence_writing_only_the_source_numbers() -> None:
    sentence = _pattern(sentences_shape(2, 2).schema(SOURCE), "sentences", "items")
    assert sentence.fullmatch("The Halden desk of order 88213 arrived bent on 9 May")
    assert sentence.fullmatch("Marta Kowalska paid 1,249.50 EUR and asks for 98 EUR back")
    for added in (
        "Marta Kowalska paid 1,250 EUR in all",  # a number the source lacks
        "She wants 989 EUR back",  # 98 and 9 run together
        "She wants 99 EUR back",  # 9 and 9
        'She said "refund"',  # a quote: no escapes to get wrong
        "It came late. She wants 98 EUR back",  # two sentences in one item
        "Short",  # under 12 characters
        "x" * 261,  # over the cap
    ):
        assert not sentence.fullmatch(added), added


@pytest.fixture(scope="module")
def parse_grammar() -> Any:
    """llama.cpp's own grammar parser, on a local model's vocabulary (no weights loaded)."""
    from orchestrator.config import Settings
    from orchestrator.providers.modelfiles import LOCAL_MODELS

    llama_cpp = pytest.importorskip("llama_cpp")
    path = next((p for s in LOCAL_MODELS.values() if (p := s.path(Settings().models_dir)).exists()), None)
    if path is None:
        pytest.skip("no local model file is built here (make models)")
    llama = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llama._model.model)

    def parses(gbnf: str) -> bool:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True

    return parses


@pytest.mark.parametrize("make", [lambda: sentences_shape(1, 3), lambda: sentences_shape(2, 2)])
def test_llama_cpp_parses_the_shapes_grammar_for_every_bundled_text(make: Any, parse_grammar: Any) -> None:
    """Every source's numbers become literals of the grammar: a decimal point written `\\.` in them made a
    grammar llama.cpp refused, and the whole call failed."""
    from pathlib import Path

    data = Path(__file__).resolve().parent.parent / "bench" / "data"
    sources = [
        json.loads(line)["input"]
        for name in ("texts.jsonl", "texts-heldout.jsonl")
        for line in (data / name).read_text(encoding="utf-8").splitlines()
    ]
    sources.append("Odd marks: a^2 + (b|c) = [d]*{e}? $5.50 / 3-4 \\ 7.")
    for source in sources:
        gbnf = schema_to_gbnf(make().schema(source))
        assert parse_grammar(gbnf), source[:60]


def test_a_shaped_summary_needs_a_count_of_sentences() -> None:
    with pytest.raises(ConfigError, match="shaped=True needs sentences"):
        summarize_worker(words=(10, 40), sentences=None, shaped=True)


class State(TypedDict, total=False):
    input: str
    answer: str


def _orch(settings: Settings, loopback: Loopback, worker: Any) -> Orchestrator:
    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    g.add_node("work", worker_node(worker, into="answer"))
    g.add_edge(START, "work")
    g.add_edge("work", END)
    url = loopback.url + "/v1"
    return Orchestrator(
        settings=settings,
        slots={
            worker.slot: SlotConfig(
                model="openai-compat:small", base_url=url, role="workhorse", prices=PRICES
            ),
            "controller": SlotConfig(
                model="openai-compat:big", base_url=url, role="racehorse", prices=PRICES
            ),
        },
        graphs={"g": g},
    )


@pytest.fixture
async def http_clients():  # type: ignore[no-untyped-def]
    from orchestrator.providers.http import aclose_clients

    yield
    await aclose_clients()


async def test_a_shaped_summary_is_decoded_under_its_schema_and_repaired_by_sampling(
    settings: Settings, loopback: Loopback, http_clients: None
) -> None:
    """The server reads the schema it is sent: the first answer (temperature 0) breaks it, as a model that
    ignores schemas would; the validators refuse it; the second draw, at a temperature and with a seed of its
    own, is the answer. Nobody up the chain is asked."""
    from wire import openai_stream, openai_usage

    seen: list[dict[str, Any]] = []
    good = ["The Halden desk of order 88213 arrived bent on 9 May", "Marta Kowalska wants 98 EUR back"]

    def answer(request):  # type: ignore[no-untyped-def]
        body = request.json()
        seen.append(body)
        if body["model"] != "small":
            return openai_stream([json.dumps({"sentences": ["wrong"]})], openai_usage(80, 10))
        sentences = good if body.get("temperature") else ["It cost 2,000 EUR", "It was late"]
        return openai_stream([json.dumps({"sentences": sentences})], openai_usage(80, 20))

    loopback.handle("/v1/chat/completions", answer)
    worker = summarize_worker(sentences=(2, 2), shaped=True, repair="sample")
    orch = _orch(settings, loopback, worker)
    result = await orch.arun("g", SOURCE)
    assert result.status == "ok", result.error
    assert (
        result.answer
        == "The Halden desk of order 88213 arrived bent on 9 May. Marta Kowalska wants 98 EUR back."
    )
    assert [b["model"] for b in seen] == ["small", "small"]
    schema = seen[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["sentences"]["minItems"] == 2
    assert "1,249[\\x2E]50" in schema["properties"]["sentences"]["items"]["pattern"]
    assert "temperature" not in seen[0] or not seen[0]["temperature"]
    assert seen[1]["temperature"] == SAMPLE_TEMPERATURE and seen[1]["seed"] == 1
    orch.close()


async def test_repair_none_goes_up_the_chain_at_once(
    settings: Settings, loopback: Loopback, http_clients: None
) -> None:
    from wire import openai_stream, openai_usage

    good = ["The Halden desk of order 88213 arrived bent on 9 May", "Marta Kowalska wants 98 EUR back"]
    models: list[str] = []

    def answer(request):  # type: ignore[no-untyped-def]
        body = request.json()
        models.append(body["model"])
        # the workhorse copies the text's first sentence and more: not a summary
        sentences = [SOURCE[:200], "It was late"] if body["model"] == "small" else good
        return openai_stream([json.dumps({"sentences": sentences})], openai_usage(80, 40))

    loopback.handle("/v1/chat/completions", answer)
    worker = summarize_worker(sentences=(2, 2), shaped=True, repair="none")
    orch = _orch(settings, loopback, worker)
    result = await orch.arun("g", SOURCE)
    assert (result.status, result.answer) == ("ok", ". ".join(good) + ".")
    assert models == ["small", "big"]
    orch.close()


def test_a_summary_that_copies_a_long_run_of_the_text_is_refused() -> None:
    from orchestrator.workers.validators import COPIED_RUN, condenses

    source = " ".join(f"w{i}" for i in range(40))
    copied = " ".join(f"w{i}" for i in range(5, 5 + COPIED_RUN))
    assert condenses(source, copied) is not None
    assert condenses(source, " ".join(f"w{i}" for i in range(5, 4 + COPIED_RUN))) is None  # one word short
    shared = "The Halden desk of order 88213 arrived bent on 9 May, and Marta Kowalska wants 98 EUR back."
    assert condenses(SOURCE, shared) is None  # phrases of the text, in words of its own
    assert "summarize it in your own words" in str(condenses(SOURCE, SOURCE))


def test_a_rewrites_token_budget_grows_with_its_text() -> None:
    short, long = "Short note.", "word " * 400
    assert style_worker().budget(short) == style_worker().max_tokens
    assert style_worker().budget(long) > 1.4 * len(long) / 4  # room for a formal rewrite 1.4x as long
    assert summarize_worker().budget(long) == summarize_worker().max_tokens  # a summary doesn't grow
