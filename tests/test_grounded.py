"""Grounded extraction: the schema built from each source (only its spans, numbers, dates and times), the
readers that turn a copied span into a date or a time, the reply read back into the record a free extraction
gives, and the worker ladder sending the per-source schema to a real loopback server."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from loopback import Loopback
from pydantic import BaseModel, ConfigDict
from test_shapes import parse_grammar  # noqa: F401  (a fixture: llama.cpp's own grammar parser)

from orchestrator import Orchestrator, RunContext, Settings, SlotConfig, extract_worker, worker_node
from orchestrator.agent.workhorse import _validate
from orchestrator.errors import ConfigError
from orchestrator.providers.llama_engine import schema_to_gbnf
from orchestrator.workers.spans import read_date, read_time
from support import PRICES

NOW = dt.datetime(2022, 3, 15, 9, 0)  # a Tuesday


class Money(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: float
    currency: Literal["GBP", "EUR", "USD"] | None = None


class Day(BaseModel):
    year: int
    month: int
    day: int


class Clock(BaseModel):
    hour: int
    minute: int


class Slots(BaseModel):
    model_config = ConfigDict(extra="forbid")
    money: Money | None = None
    day: Day | None = None
    at: Clock | None = None
    person: str | None = None


class Payment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: float | None
    currency: Literal["EUR", "USD", "GBP"] | None
    date: dt.date | None
    merchant: str | None


def _worker(**kw: Any) -> Any:
    return extract_worker("slots", Slots, "Find the details", grounded=True, now=NOW, day_first=True, **kw)


def _props(schema: dict[str, Any]) -> dict[str, Any]:
    return dict(schema["properties"])


def test_a_sources_schema_offers_only_its_own_numbers_spans_and_dates() -> None:
    source = "Send 96.41 pounds to Marta Kowalska at 5 50 in the afternoon this Friday"
    schema = _worker().schema(source)
    props = _props(schema)
    money = props["money"]["properties"]
    assert money["amount"] == {"enum": ["96.41", None]}  # not the 5 and 50 of the time
    assert money["currency"] == {"enum": ["GBP", None]}  # named by "pounds"; EUR and USD are not
    assert props["day"] == {"enum": ["this Friday", None]}
    assert props["at"] == {"enum": ["5 50 in the afternoon", None]}
    spans = schema["$defs"]["span"]["enum"]
    assert "Marta Kowalska" in spans and "Marta" in spans
    assert all(s in source for s in spans)
    assert props["person"] == {"anyOf": [{"$ref": "#/$defs/span"}, {"type": "null"}]}


def test_a_source_without_numbers_lets_the_amount_only_be_null() -> None:
    props = _props(_worker().schema("i think its the business one"))
    assert props["money"]["properties"]["amount"] == {"enum": [None]}
    assert props["money"]["properties"]["currency"] == {"enum": [None]}
    assert props["day"] == props["at"] == {"enum": [None]}


@pytest.mark.parametrize(
    ("span", "want"),
    [
        ("today", dt.date(2022, 3, 15)),
        ("tomorrow", dt.date(2022, 3, 16)),
        ("the day after tomorrow", dt.date(2022, 3, 17)),
        ("in 9 days", dt.date(2022, 3, 24)),
        ("20 days from now", dt.date(2022, 4, 4)),
        ("two weeks ago", dt.date(2022, 3, 1)),
        ("5 months ago", dt.date(2021, 10, 15)),
        ("Friday", dt.date(2022, 3, 18)),
        ("this Friday", dt.date(2022, 3, 18)),
        ("Tuesday", dt.date(2022, 3, 15)),  # today counts
        ("next Thursday", dt.date(2022, 3, 24)),  # the one in next week
        ("last Friday", dt.date(2022, 3, 11)),
        ("the 5th", dt.date(2022, 4, 5)),  # the next 5th
        ("15th of March", dt.date(2022, 3, 15)),
        ("the 5th of May 1962", dt.date(1962, 5, 5)),
        ("June 22nd", dt.date(2022, 6, 22)),
        ("Saturday, 26 Oct", dt.date(2022, 10, 26)),
        ("Apr the 28th", dt.date(2022, 4, 28)),
        ("2025-05-02", dt.date(2025, 5, 2)),
        ("11/04/23", dt.date(2023, 4, 11)),  # day first, as told
        # refused: no day to read, or none that exists
        ("March", None),
        ("2019", None),
        ("on Friday", None),
        ("31/02/2022", None),
        ("next week", None),
        ("soon", None),
    ],
)
def test_the_date_reader(span: str, want: dt.date | None) -> None:
    assert read_date(span, NOW, day_first=True) == want


def test_a_numeric_date_is_read_only_in_an_order_the_caller_gives_or_the_only_one_possible() -> None:
    assert read_date("9/3/2019", NOW) is None  # 9 March or 3 September: not guessed
    assert read_date("9/3/2019", NOW, day_first=False) == dt.date(2019, 9, 3)
    assert read_date("25/3/2019", NOW) == dt.date(2019, 3, 25)  # no 25th month


@pytest.mark.parametrize(
    ("span", "want"),
    [
        ("9:20", dt.time(9, 20)),
        ("9:20 p.m.", dt.time(21, 20)),
        ("5pm", dt.time(17)),
        ("12 00 a.m.", dt.time(0, 0)),
        ("5 50 in the afternoon", dt.time(17, 50)),
        ("11:05 night", dt.time(23, 5)),
        ("4:50 in the night", dt.time(4, 50)),
        ("6 o'clock", dt.time(6)),
        ("half past 5 a.m.", dt.time(5, 30)),
        ("quarter to 6 morning", dt.time(5, 45)),
        ("20 mins after 10 PM", dt.time(22, 20)),
        ("noon", dt.time(12)),
        ("in half an hour", dt.time(9, 30)),
        ("in 2 hours", dt.time(11)),
        # refused: a bare number, a decimal, no such time
        ("6", None),
        ("at 5", None),
        ("9.20", None),
        ("25:10", None),
        ("18:00 a.m.", None),
        ("9:75", None),
    ],
)
def test_the_time_reader(span: str, want: dt.time | None) -> None:
    assert read_time(span, NOW) == want


def test_a_reply_of_spans_becomes_the_record_a_free_extraction_gives() -> None:
    worker = _worker()
    source = "Send 1,250.50 pounds to Marta Kowalska at 5 50 in the afternoon in 9 days"
    reply = {
        "money": {"amount": "1,250.50", "currency": "GBP"},
        "day": "in 9 days",
        "at": "5 50 in the afternoon",
        "person": "Marta Kowalska",
    }
    assert _validate(worker, source, json.dumps(reply)) == {
        "money": {"amount": 1250.5, "currency": "GBP"},
        "day": {"year": 2022, "month": 3, "day": 24},
        "at": {"hour": 17, "minute": 50},
        "person": "Marta Kowalska",
    }
    none = {"money": {"amount": None, "currency": "GBP"}, "day": None, "at": None, "person": None}
    assert _validate(worker, source, json.dumps(none)) == {
        "money": None,
        "day": None,
        "at": None,
        "person": None,
    }
    # a model that ignores the schema: an invented amount or name is refused (the worker repairs, escalates)
    with pytest.raises(ValueError, match="1250 is not a number the text writes"):
        _validate(worker, source, json.dumps({**reply, "money": {"amount": 1250, "currency": None}}))
    with pytest.raises(ValueError, match="'Lidl' is not in the text"):
        _validate(worker, source, json.dumps({**reply, "person": "Lidl"}))
    with pytest.raises(ValueError, match="'next week' is not a date the text writes"):
        _validate(worker, source, json.dumps({**reply, "day": "next week"}))


def test_a_required_field_the_text_does_not_give_makes_the_record_invalid() -> None:
    """Null is always allowed in the reply; the output model still decides: a field it requires that came
    back null is a rejection (the worker repairs or escalates), not a record with a hole."""

    class Invoice(BaseModel):
        total: float
        payee: str | None

    worker = extract_worker("invoice", Invoice, "Find the invoice", grounded=True)
    assert worker.schema("pay Ana")["properties"]["total"] == {"enum": [None]}
    with pytest.raises(ValueError, match="total: Input should be a valid number"):
        _validate(worker, "pay Ana", json.dumps({"total": None, "payee": "Ana"}))
    assert _validate(worker, "pay Ana 7", json.dumps({"total": "7", "payee": "Ana"})) == {
        "total": 7.0,
        "payee": "Ana",
    }


def test_a_date_field_and_its_examples_are_copied_from_their_texts() -> None:
    worker = extract_worker(
        "pay",
        Payment,
        "Find the payment",
        grounded=True,
        now=NOW,
        shots=[("Spotify took $9.99 on 14 June 2025.", {"amount": 9.99, "currency": "USD",
                                                        "date": "2025-06-14", "merchant": "Spotify"})],
    )  # fmt: skip
    assert '-> {"amount": "9.99", "currency": "USD", "date": "14 June 2025", "merchant": "Spotify"}' in (
        worker.instructions
    )
    assert _validate(worker, "paid 12 EUR at Lidl yesterday", json.dumps(
        {"amount": "12", "currency": "EUR", "date": "yesterday", "merchant": "Lidl"}
    )) == {"amount": 12.0, "currency": "EUR", "date": "2022-03-14", "merchant": "Lidl"}  # fmt: skip
    with pytest.raises(ConfigError, match="merchant can't be copied from its text"):
        extract_worker(
            "pay", Payment, "Find it", grounded=True,
            shots=[("I paid 12 EUR.", {"amount": 12, "currency": "EUR", "date": None, "merchant": "Lidl"})],
        )  # fmt: skip


def test_a_field_type_that_cannot_be_grounded_is_a_config_error() -> None:
    class Odd(BaseModel):
        when: dt.datetime | None

    with pytest.raises(ConfigError, match=r"Odd\.when has type"):
        extract_worker("odd", Odd, "Odd", grounded=True)


def test_llama_cpp_parses_the_grammar_of_a_grounded_record(parse_grammar: Any) -> None:  # noqa: F811
    for source in (
        'He said "pay O\'Brien £5" \\ then left',
        "Send 96.41 pounds to Marta at 9:20 p.m. tomorrow",
        "no values at all",
    ):
        assert parse_grammar(schema_to_gbnf(_worker().schema(source))), source


class State(TypedDict, total=False):
    input: str
    answer: Any


@pytest.fixture
async def http_clients():  # type: ignore[no-untyped-def]
    from orchestrator.providers.http import aclose_clients

    yield
    await aclose_clients()


async def test_a_server_is_sent_each_sources_schema_and_its_spans_come_back_as_the_record(
    settings: Settings, loopback: Loopback, http_clients: None
) -> None:
    from wire import openai_stream, openai_usage

    sent: list[dict[str, Any]] = []

    def answer(request):  # type: ignore[no-untyped-def]
        body = request.json()
        sent.append(body)
        reply = {
            "money": {"amount": "40", "currency": "EUR"},
            "day": "2 days ago",
            "at": None,
            "person": "Ana",
        }
        return openai_stream([json.dumps(reply)], openai_usage(80, 30))

    loopback.handle("/v1/chat/completions", answer)
    worker = _worker()
    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    g.add_node("work", worker_node(worker, into="answer"))
    g.add_edge(START, "work")
    g.add_edge("work", END)
    orch = Orchestrator(
        settings=settings,
        slots={
            "extract": SlotConfig(
                model="openai-compat:small", base_url=loopback.url + "/v1", role="workhorse", prices=PRICES
            )
        },
        graphs={"g": g},
    )
    result = await orch.arun("g", "I sent Ana 40 euros 2 days ago")
    assert result.status == "ok", result.error
    assert json.loads(result.answer or "") == {
        "money": {"amount": 40.0, "currency": "EUR"},
        "day": {"year": 2022, "month": 3, "day": 13},
        "at": None,
        "person": "Ana",
    }
    schema = sent[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["money"]["properties"]["amount"] == {"enum": ["40", None]}
    assert schema["properties"]["day"] == {"enum": ["2 days ago", None]}
    assert "Ana" in schema["$defs"]["span"]["enum"]
    orch.close()


@pytest.fixture(scope="module")
def vocab_grammar() -> Any:
    """llama.cpp's grammar sampler on a local model's vocabulary (no weights): `allows(gbnf, text)` says
    whether the grammar lets the text be written token by token, checking each token before accepting it
    (as the engine does: accepting a refused token would abort)."""
    import ctypes

    from orchestrator.config import Settings
    from orchestrator.providers.modelfiles import LOCAL_MODELS

    llama_cpp = pytest.importorskip("llama_cpp")
    path = next((p for s in LOCAL_MODELS.values() if (p := s.path(Settings().models_dir)).exists()), None)
    if path is None:
        pytest.skip("no local model file is built here (make models)")
    llama = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llama._model.model)

    def allows(gbnf: str, text: str) -> bool:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        assert sampler, "llama.cpp could not parse the grammar"
        try:
            for token in llama.tokenize(text.encode("utf-8"), add_bos=False, special=False):
                one = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
                arr = llama_cpp.llama_token_data_array(one, 1, -1, False)
                llama_cpp.llama_sampler_apply(sampler, ctypes.byref(arr))
                if arr.data[0].logit == float("-inf"):
                    return False
                llama_cpp.llama_sampler_accept(sampler, token)
            return True
        finally:
            llama_cpp.llama_sampler_free(sampler)

    return allows


def test_a_long_enum_is_a_tree_of_shared_beginnings_accepting_exactly_its_values(vocab_grammar: Any) -> None:
    """A grounded record of a long text offers thousands of spans; written one alternative each, llama.cpp
    checked every token of the vocabulary against each (18 s once, at 2,000 words). As a tree the grammar
    is a fraction of the size, and it takes the same values and no others."""
    from orchestrator.providers.llama_engine import _trie

    assert _trie(["ab", "abc", "ad"], lambda s: f'"{s}"') == '"a" ("b" ("c")? | "d")'
    source = " ".join(f"Marta paid {n} euros to Kowalska & Sons’ shop on day {n}" for n in range(30))
    schema = {"type": "object", "properties": {"who": {"$ref": "#/$defs/span"}}, "required": ["who"],
              "$defs": {"span": {"enum": _worker().schema(source)["$defs"]["span"]["enum"]}}}  # fmt: skip
    gbnf = schema_to_gbnf(schema)
    spans = schema["$defs"]["span"]["enum"]
    assert len(spans) > 300
    (rule,) = [line for line in gbnf.splitlines() if line.startswith("span ::= ")]
    assert rule.startswith('span ::= "\\"" (')  # one opening quote, then a branch per next character
    for span in ("Marta", "Marta paid 7 euros", "Kowalska & Sons’ shop", "Sons’ shop on day"):
        assert span in spans
        assert vocab_grammar(gbnf, json.dumps({"who": span}, ensure_ascii=False)), span
    for other in ("Mart", "Marta paid 7 dollars", "Kowalska and Sons", "Marta paid 7 euros to Kowalska"):
        assert other not in spans
        assert not vocab_grammar(gbnf, json.dumps({"who": other}, ensure_ascii=False) + "\n"), other


def test_the_bundled_transaction_extractor_can_only_copy_from_its_message() -> None:
    """Its example "On 2025-05-02 I paid 12.40 EUR at Lidl" leaked into answers for other messages: now
    neither that merchant nor that date nor any amount can be decoded for a message that lacks them."""
    from workers.builtin import WORKERS

    (worker,) = [w for w in WORKERS if w.name == "extract_transaction"]
    schema = worker.schema("I was charged twice by my gym last week.")
    assert schema["properties"]["amount"] == schema["properties"]["date"] == {"enum": [None]}
    assert schema["properties"]["currency"] == {"enum": [None]}
    assert "Lidl" not in schema["$defs"]["span"]["enum"] and "my gym" in schema["$defs"]["span"]["enum"]
    assert _validate(worker, "Paid £5 to Tesco yesterday", json.dumps(
        {"amount": "5", "currency": "GBP", "date": None, "merchant": "Tesco"}
    )) == {"amount": 5.0, "currency": "GBP", "date": None, "merchant": "Tesco"}  # fmt: skip
