"""Fuzzing the file parsers: the manifest, a price file, a tool catalog, task and query files.

Every input, random bytes or a plausible document that is wrong in some way (wrong types, missing keys, huge
numbers, NaN, deep nesting, non-UTF-8, a BOM, nothing at all), either parses or is refused with the
project's error (`ConfigError`) whose message names the file; nothing else may escape (a traceback). A
parse counts only if what it returned can be used: the price file's entries are looked up, the catalog's
tools digested, the tasks scored. Each test runs 60 inputs (`ORCH_FUZZ_EXAMPLES=N` for more);
`bench/fuzz.py` runs the same targets with many more and counts the outcomes (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.config import Settings, load_manifest
from orchestrator.cost.pricing import PriceTable, Usage, cost_usd, price_table
from orchestrator.errors import ConfigError
from orchestrator.evals.evaluate import load_tasks, score
from orchestrator.toolsets.retrieval.docs import read_catalog, read_queries, schema_tokens

Outcome = Literal["accepted", "rejected", "unclear", "crash"]

# --- documents ----------------------------------------------------------------------------------------


class Raw(str):
    """A literal written into a document as it is: what a serializer would never write."""


HUGE_INT = "1" * 5000  # past Python's limit on int <-> str conversion (4,300 digits)
BIG_INT = "9" * 400  # parses as an int, but overflows a float
JSON_RAW = [Raw(HUGE_INT), Raw(BIG_INT), Raw("-" + BIG_INT), Raw("1e400"), Raw("NaN"), Raw("-Infinity")]
TOML_RAW = [Raw(HUGE_INT), Raw(BIG_INT), Raw("-" + BIG_INT), Raw("1e400"), Raw("nan"), Raw("-inf")]


def _leaves(raw: list[Raw]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=16),
        st.sampled_from(raw),
        # nested deeper than a recursive parser (or validator) can follow
        st.integers(100, 3000).map(lambda depth: Raw("[" * depth + "]" * depth)),
    )


def _anything(raw: list[Raw]) -> st.SearchStrategy[Any]:
    return st.recursive(
        _leaves(raw),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
        max_leaves=8,
    )


JSON_ANY = _anything(JSON_RAW)
TOML_ANY = _anything(TOML_RAW)
NUMBERS = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1e-3),
    st.sampled_from([0, -1, -1e-6]),
)


def to_json(value: Any) -> str:
    """JSON text, with `Raw` literals as they are and NaN / Infinity where a float is not finite."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


def _toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch.isprintable() and ch not in '"\\':
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def to_toml_value(value: Any) -> str:
    """A TOML inline value (`None`, which TOML lacks, becomes an empty table)."""
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        return "{}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            ("nan" if math.isnan(value) else "inf" if value > 0 else "-inf")
            if not math.isfinite(value)
            else repr(value)
        )
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_str(str(k))} = {to_toml_value(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(to_toml_value(v) for v in value) + "]"


def to_toml(section: Any, header: str = "tool.orchestrator") -> str:
    """A pyproject.toml whose `[tool.orchestrator]` table holds `section` (not a table: `tool = ...`)."""
    if not isinstance(section, Mapping):
        return f"[project]\nname = 'x'\n\n[tool]\norchestrator = {to_toml_value(section)}\n"
    lines = [f"[{header}]"] + [f"{_toml_str(str(k))} = {to_toml_value(v)}" for k, v in section.items()]
    return "\n".join(lines) + "\n"


@st.composite
def _framed(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> bytes:
    """A document as bytes: encoded one way or another, sometimes with a few bytes changed."""
    text = draw(texts)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]))
    data = bytearray(text.encode(encoding, errors="replace"))
    for _ in range(draw(st.integers(0, 3)) if draw(st.booleans()) else 0):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.integers(0, 255))
        if kind == "insert":
            data[at:at] = bytes([byte])
        elif at < len(data):
            data[at : at + 1] = b"" if kind == "delete" else bytes([byte])
    if draw(st.booleans()) and draw(st.booleans()):
        data += draw(st.sampled_from([b"\n", b"\r\n", b"\x00", b"\xff\xfe", b"}", b"\n\n\n"]))
    return bytes(data)


RANDOM = st.one_of(
    st.binary(max_size=256),
    st.text(max_size=256).map(lambda t: t.encode("utf-8", errors="surrogatepass")),
    st.sampled_from([b"", b"\n", b" \t\r\n", b"\xef\xbb\xbf", b"\xff\xfe\x00\x00", b"\x80", b"\x00" * 8]),
)


def _either(right: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A right value three times in four, else a wrong one: enough documents get past the first check."""
    return st.integers(0, 3).flatmap(lambda i: wrong if i == 0 else right)


def _jsonl(lines: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """JSON Lines text: some rows, blank lines among them."""
    row = st.one_of(lines.map(to_json), st.just(""), st.just("   "))
    return st.lists(row, min_size=0, max_size=5).map("\n".join)


# The manifest: [tool.orchestrator] with the real keys (and a typo), each value right or wrong.
_T = TOML_ANY
_MODEL = st.sampled_from(["local:qwen2.5-0.5b", "python:scripted", "openai:gpt-4o-mini", "nope", "", ":"])
_REF = st.sampled_from(["graphs.assistant:build", "tools.catalog:TOOLS", "no_colon", "", ":x", "a:b:c"])
_PRICES = st.fixed_dictionaries(
    {}, optional={k: _either(NUMBERS, _T) for k in ("input", "output", "cache_read")}
)
_SLOT = st.fixed_dictionaries(
    {},
    optional={
        "model": _either(_MODEL, _T),
        "role": _either(st.sampled_from(["racehorse", "workhorse", "pony"]), _T),
        "prices": _either(_PRICES, _T),
        "price_as": _either(st.text(max_size=12), _T),
        "capabilities": _either(
            st.dictionaries(st.sampled_from(["tool_calling", "json_schema", "tool_call"]), st.booleans()), _T
        ),
        "max_retries": _either(NUMBERS, _T),
        "context_window": _either(NUMBERS, _T),
        "timeout_s": _either(NUMBERS, _T),
        "temperature": _either(NUMBERS, _T),
        "headers": _either(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2), _T),
        "tool_limits": _either(st.dictionaries(st.sampled_from(["max_tools", "max_name"]), NUMBERS), _T),
        "fallback": _either(st.lists(_MODEL, max_size=2), _T),
        "cache": _either(st.sampled_from(["5m", "1h", "1d"]), _T),
    },
)
_LIMITS = st.fixed_dictionaries(
    {},
    optional={
        k: _either(NUMBERS, _T)
        for k in ("max_steps", "deadline_s", "max_tokens", "tool_timeout_s", "top_k", "max_stpes")
    },
)
_MCP = st.fixed_dictionaries(
    {},
    optional={
        "command": _either(st.just("python"), _T),
        "url": _either(st.sampled_from(["http://127.0.0.1:1/mcp", "ftp://x", ""]), _T),
        "args": _either(st.lists(st.text(max_size=8), max_size=2), _T),
        "env": _either(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2), _T),
        "side_effects": _either(st.booleans(), _T),
        "startup_timeout_s": _either(NUMBERS, _T),
    },
)
_PATHS = st.sampled_from(
    ["t.db", "~/t.db", "~nosuchuser-orch/t.db", "sqlite:///c.db", "postgresql://u@h/d", "x://y", ""]
)
_SECTION = st.fixed_dictionaries(
    {},
    optional={
        "default_graph": _either(st.text(max_size=12), _T),
        "graphs": _either(st.dictionaries(st.text(max_size=8), _REF, max_size=2), _T),
        "tool_packs": _either(st.lists(_REF, max_size=2), _T),
        "workers": _either(st.lists(_REF, max_size=2), _T),
        "slots": _either(st.dictionaries(st.text(max_size=8), _SLOT, max_size=2), _T),
        "limits": _either(_LIMITS, _T),
        "mcp_servers": _either(st.dictionaries(st.text(max_size=8), _MCP, max_size=1), _T),
        "tool_search": _either(st.sampled_from(["auto", "bm25", "grep"]), _T),
        "confirm_tools": _either(st.lists(st.text(max_size=8), max_size=2), _T),
        "traces": _either(_PATHS, _T),
        "checkpoints": _either(_PATHS, _T),
        "models_dir": _either(_PATHS, _T),
        "prices": _either(_PATHS, _T),
        "capture_content": _either(st.booleans(), _T),
        "otlp_endpoint": _either(st.sampled_from(["http://127.0.0.1:4318", "grpc://x", "http://"]), _T),
        "grpahs": _T,
    },
)
_PYPROJECT = st.one_of(_SECTION.map(to_toml), TOML_ANY.map(to_toml))

# A LangGraph project: langgraph.json (graphs, env) and perhaps the .env file it names.
_ENV_NAMES = st.sampled_from([".env", "missing.env", "", "sub/../.env", "a\x00b", "x" * 5000])
_GRAPH_REFS = st.sampled_from(
    [
        "./g.py:graph",
        "mod:attr",
        {"path": "./g.py:graph"},
        "./a\x00b.py:g",
        f"./{'x' * 5000}.py:g",
        "no_colon",
    ],
)
_LANGGRAPH = st.fixed_dictionaries(
    {},
    optional={
        "graphs": _either(st.dictionaries(st.text(max_size=8), _either(_GRAPH_REFS, JSON_ANY)), JSON_ANY),
        "env": st.one_of(
            _ENV_NAMES,
            st.dictionaries(st.sampled_from(["", "A=B", "K\x00", "ORCH_FUZZ"]), JSON_ANY),
            JSON_ANY,
        ),
        "dependencies": JSON_ANY,
    },
).map(to_json)
_DOTENV = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["ORCH_FUZZ", "", "A B", "export ORCH_FUZZ", "=", "K\x00"]), st.text(max_size=8)
        ).map("=".join),
        st.text(max_size=16),
    ),
    max_size=4,
).map("\n".join)


@st.composite
def project_files(draw: st.DrawFn) -> dict[str, bytes]:
    """A project folder's files: a pyproject.toml, or a langgraph.json (with or without a .env)."""
    kind = draw(st.sampled_from(["pyproject", "pyproject", "random", "langgraph"]))
    if kind == "random":
        return {draw(st.sampled_from(["pyproject.toml", "langgraph.json"])): draw(RANDOM)}
    if kind == "pyproject":
        return {"pyproject.toml": draw(_framed(_PYPROJECT))}
    files = {"langgraph.json": draw(_framed(_LANGGRAPH))}
    if draw(st.booleans()):
        files[".env"] = draw(_framed(_DOTENV))
    if draw(st.booleans()):
        files["pyproject.toml"] = b"[project]\nname = 'x'\n"
    return files


# A price file in the LiteLLM layout: model key -> per-token prices, tiers, the context window.
PRICE_KEYS = [
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr",
    "input_cost_per_token_above_200k_tokens",
    "output_cost_per_token_above_200k_tokens",
    "cache_read_input_token_cost_above_128k_tokens",
    f"input_cost_per_token_above_{'9' * 5000}k_tokens",
    "max_input_tokens",
    "max_output_tokens",
    "litellm_provider",
]
_PRICE_KEYS = st.sampled_from(PRICE_KEYS)
_PRICE_ENTRY = st.one_of(
    st.dictionaries(_either(_PRICE_KEYS, st.text(max_size=8)), _either(NUMBERS, JSON_ANY), max_size=6),
    st.fixed_dictionaries(  # a priced entry: both base rates, the rest perhaps
        {"input_cost_per_token": NUMBERS | st.sampled_from(JSON_RAW), "output_cost_per_token": NUMBERS},
        optional={k: NUMBERS | st.sampled_from(JSON_RAW) for k in PRICE_KEYS[2:] if "cost" in k},
    ),
)
_PRICE_FILE = st.one_of(
    st.dictionaries(
        st.sampled_from(["gpt-4o-mini", "my-model", "sample_spec", ""]) | st.text(max_size=8),
        _either(_PRICE_ENTRY, JSON_ANY),
        max_size=3,
    ),
    JSON_ANY,
).map(to_json)

# A tool catalog: one tool a line, OpenAI / BFCL function format or wrapped in {"type": "function", ...}.
_SCHEMA = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "type": _either(st.sampled_from(["object", "dict", "string", "integer", "array"]), JSON_ANY),
            "description": _either(st.text(max_size=12), JSON_ANY),
            "enum": _either(st.lists(st.text(max_size=4), max_size=3), JSON_ANY),
        },
    ),
    lambda kids: st.fixed_dictionaries(
        {"type": st.just("object")},
        optional={
            "properties": _either(st.dictionaries(st.text(max_size=6), kids, max_size=3), JSON_ANY),
            "items": kids,
            "required": JSON_ANY,
        },
    ),
    max_leaves=6,
)
_TOOL = st.fixed_dictionaries(
    {},
    optional={
        "name": _either(st.text(max_size=12), JSON_ANY),
        "description": _either(st.text(max_size=24), JSON_ANY),
        "parameters": _either(_SCHEMA, JSON_ANY),
    },
)
_CATALOG_ROW = _either(
    st.one_of(_TOOL, st.fixed_dictionaries({"type": st.just("function"), "function": _TOOL})), JSON_ANY
)

# Task files (orch eval) and labelled queries (the retrieval bench).
_ITEM_TEXT = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["22.2", "2026-03-20", "2026-02-30", "1,000", "-.5%", "1e400", "9" * 400, HUGE_INT]),
)
_ITEMS = _either(st.lists(_either(_ITEM_TEXT, NUMBERS), max_size=3), _either(_ITEM_TEXT, JSON_ANY))
_TASK_ROW = _either(
    st.fixed_dictionaries(  # a task that may well be accepted, then scored
        {"input": st.text(min_size=1, max_size=24), "expect": _ITEMS},
        optional={"expect_all": _ITEMS, "forbid": _ITEMS, "id": JSON_ANY, "category": JSON_ANY},
    ),
    st.one_of(
        st.fixed_dictionaries(
            {},
            optional={"input": JSON_ANY, "expect": JSON_ANY, "expect_all": JSON_ANY, "forbid": JSON_ANY},
        ),
        JSON_ANY,
    ),
)
_QUERY_ROW = _either(
    st.fixed_dictionaries(
        {},
        optional={
            "query": _either(st.text(max_size=24), JSON_ANY),
            "gold_tools": _either(st.lists(st.text(max_size=8), max_size=3), JSON_ANY),
            "id": JSON_ANY,
            "category": JSON_ANY,
        },
    ),
    JSON_ANY,
)


def _file(name: str, texts: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, bytes]]:
    return st.one_of(RANDOM, _framed(texts), _framed(texts)).map(lambda data: {name: data})


# --- what each parser does with a file ----------------------------------------------------------------


def _use_manifest(folder: Path) -> None:
    manifest = load_manifest(folder)
    Settings.resolve(manifest)  # its paths: relative to the project, ~ expanded, checkpoint URLs read


def _use_prices(folder: Path) -> None:
    path = folder / "prices.json"
    table = PriceTable.from_file(path)
    layered = price_table(path)
    for key in table.keys():  # noqa: SIM118 (a PriceTable, not a dict)
        for t in (table, layered):
            prices = t.lookup(key)
            t.context_window(key)
            if prices is not None:
                cost = cost_usd(Usage(250_000, 100, cache_read_tokens=1000), prices)
                # a price the budget can't compare (NaN) or that pays back (negative) breaks every cap
                assert cost is not None and math.isfinite(cost) and cost >= 0, (key, prices)


def _use_catalog(folder: Path) -> None:
    for doc in read_catalog(folder / "catalog.jsonl"):
        doc.digest()
        doc.param_text()
        schema_tokens(doc)


def _use_tasks(folder: Path) -> None:
    for task in load_tasks(folder / "tasks.jsonl"):
        score("It is 22.2 degrees on 2026-03-20; 1,000 people; card_arrival.", task)


def _use_queries(folder: Path) -> None:
    read_queries(folder / "queries.jsonl")


@dataclass(frozen=True)
class Target:
    """A parser under fuzzing: the files it reads, and what reading and using them means."""

    name: str
    files: st.SearchStrategy[dict[str, bytes]]
    use: Callable[[Path], None]
    names: Callable[[Path], tuple[str, ...]]  # what its error message must name (any one of)


def _the_file(name: str) -> Callable[[Path], tuple[str, ...]]:
    return lambda folder: (str(folder / name),)


TARGETS = {
    t.name: t
    for t in (
        # the manifest's messages name the file read (pyproject.toml, langgraph.json, the .env it names),
        # or, for a value read after the file (a path setting), the key under [tool.orchestrator]
        Target(
            "manifest", project_files(), _use_manifest, lambda folder: (str(folder), "[tool.orchestrator]")
        ),
        Target("prices", _file("prices.json", _PRICE_FILE), _use_prices, _the_file("prices.json")),
        Target(
            "catalog", _file("catalog.jsonl", _jsonl(_CATALOG_ROW)), _use_catalog, _the_file("catalog.jsonl")
        ),
        Target("tasks", _file("tasks.jsonl", _jsonl(_TASK_ROW)), _use_tasks, _the_file("tasks.jsonl")),
        Target(
            "queries", _file("queries.jsonl", _jsonl(_QUERY_ROW)), _use_queries, _the_file("queries.jsonl")
        ),
    )
}


@contextlib.contextmanager
def _environ_kept() -> Iterator[None]:
    """Undo what a parser sets in the environment (a LangGraph project's env file)."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(before):
            del os.environ[key]
        os.environ.update(before)


def attempt(target: Target, files: Mapping[str, bytes], base: Path) -> tuple[Outcome, str]:
    """Write `files` into a fresh folder under `base`, read them with the target's parser and classify.

    "rejected": a `ConfigError` whose message names the file; "unclear": a `ConfigError` that does not;
    "crash": any other exception (its traceback is the detail).
    """
    folder = Path(tempfile.mkdtemp(dir=base))
    try:
        for name, data in files.items():
            (folder / name).write_bytes(data)
        try:
            with _environ_kept():
                target.use(folder)
        except ConfigError as exc:
            message = str(exc)
            if not any(n in message for n in target.names(folder)) or len(message) < 40:
                return "unclear", message
            return "rejected", message
        except Exception:
            return "crash", traceback.format_exc()
        return "accepted", ""
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- the properties -----------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=int(os.environ.get("ORCH_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _check(name: str, files: Mapping[str, bytes], base: Path) -> None:
    outcome, detail = attempt(TARGETS[name], files, base)
    assert outcome in ("accepted", "rejected"), f"{name}: {outcome}:\n{detail}"


# Regressions: inputs that crashed a parser (the comment names what it raised before its fix) or that
# were accepted though wrong.
DEEP = "[" * 3000 + "]" * 3000
LONG = "1" * 5000


def _lg(extra: str) -> bytes:
    return ('{"graphs": {"g": "./g.py:graph"}' + extra + "}").encode()


@FUZZ
@given(files=TARGETS["manifest"].files)
@example(
    files={"pyproject.toml": '[tool.orchestrator]\ndefault_graph = "caf\xe9"\n'.encode("latin-1")}
)  # UnicodeDecodeError
@example(
    files={"pyproject.toml": f"[tool.orchestrator]\nlimits = {{max_steps = {LONG}}}\n".encode()}
)  # ValueError
@example(files={"pyproject.toml": f"[tool.orchestrator]\ntool_packs = {DEEP}\n".encode()})  # RecursionError
@example(files={"pyproject.toml": b"tool = 1\n"})  # AttributeError: 'int' object has no attribute 'get'
@example(
    files={"pyproject.toml": b'\xef\xbb\xbf[tool.orchestrator]\ndefault_graph = "a"\n'}
)  # BOM: "Invalid statement"
@example(files={"pyproject.toml": b'[tool.orchestrator]\ntraces = "~nosuchuser-orch/t.db"\n'})  # RuntimeError
@example(files={"langgraph.json": _lg(f', "n": {LONG}')})  # ValueError
@example(files={"langgraph.json": f'{{"graphs": {DEEP}}}'.encode()})  # RecursionError
@example(
    files={"langgraph.json": b'{"graphs": {"g": "./a\\u0000b.py:graph"}}'}
)  # ValueError: embedded null byte
@example(
    files={"langgraph.json": _lg(', "env": {"A=B": "1"}')}
)  # ValueError: illegal environment variable name
@example(files={"langgraph.json": _lg(', "env": {"": "1"}')})  # OSError: [Errno 22] Invalid argument
@example(files={"langgraph.json": _lg(f', "env": "{"x" * 5000}"')})  # OSError: File name too long
@example(files={"langgraph.json": _lg(', "env": ".env"'), ".env": b"=x\n"})  # OSError: [Errno 22]
@example(files={"langgraph.json": _lg(', "env": ".env"'), ".env": b"K=caf\xe9\n"})  # UnicodeDecodeError
def test_manifest(files: dict[str, bytes], base: Path) -> None:
    _check("manifest", files, base)


def _price(rates: str) -> bytes:
    return ('{"m": {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6, ' + rates + "}}").encode()


@FUZZ
@given(files=TARGETS["prices"].files)
@example(files={"prices.json": f'{{"m": {DEEP}}}'.encode()})  # RecursionError
@example(files={"prices.json": _price('"input_cost_per_token": NaN')})  # accepted: NaN cost, budgets off
@example(files={"prices.json": _price('"input_cost_per_token": -1e-6')})  # accepted: spend goes down
@example(files={"prices.json": _price(f'"cache_read_input_token_cost": {"9" * 400}')})  # OverflowError
@example(files={"prices.json": _price('"max_input_tokens": Infinity')})  # OverflowError
@example(
    files={"prices.json": _price(f'"input_cost_per_token_above_{"9" * 5000}k_tokens": 1e-6')}
)  # ValueError
@example(files={"prices.json": b"\xef\xbb\xbf" + _price('"max_input_tokens": 1000')})  # BOM: not valid JSON
def test_price_file(files: dict[str, bytes], base: Path) -> None:
    _check("prices", files, base)


@FUZZ
@given(files=TARGETS["catalog"].files)
@example(files={"catalog.jsonl": b'{"name": "caf\xe9"}\n'})  # UnicodeDecodeError
@example(files={"catalog.jsonl": f'{{"name": "t", "n": {LONG}}}\n'.encode()})  # ValueError
@example(
    files={"catalog.jsonl": f'{{"name": "t", "parameters": {{"x": {DEEP}}}}}\n'.encode()}
)  # RecursionError
@example(  # RecursionError in _normalise_schema: json.loads reads deeper than the schema walk follows
    files={
        "catalog.jsonl": ('{"name": "t", "parameters": ' + '{"p": ' * 600 + "{}" + "}" * 600 + "}\n").encode()
    }
)
@example(files={"catalog.jsonl": b'{"name": "t", "parameters": {"properties": [{}]}}\n'})  # AttributeError
def test_catalog(files: dict[str, bytes], base: Path) -> None:
    _check("catalog", files, base)


@FUZZ
@given(files=TARGETS["tasks"].files)
@example(files={"tasks.jsonl": f'{{"input": "x", "expect": [{LONG}]}}\n'.encode()})  # ValueError
@example(files={"tasks.jsonl": f'{{"input": "x", "expect": {DEEP}}}\n'.encode()})  # RecursionError
def test_task_file(files: dict[str, bytes], base: Path) -> None:
    _check("tasks", files, base)


@FUZZ
@given(files=TARGETS["queries"].files)
@example(files={"queries.jsonl": b'{"query": "caf\xe9"}\n'})  # UnicodeDecodeError
@example(files={"queries.jsonl": f'{{"query": "q", "id": {LONG}}}\n'.encode()})  # ValueError
@example(files={"queries.jsonl": f'{{"query": "q", "id": {DEEP}}}\n'.encode()})  # RecursionError
def test_query_file(files: dict[str, bytes], base: Path) -> None:
    _check("queries", files, base)


def test_a_crash_is_told_from_a_clear_error(base: Path) -> None:
    """The harness itself: a parser that raises something else is a crash, a vague message unclear."""

    def boom(folder: Path) -> None:
        raise KeyError("x")

    def vague(folder: Path) -> None:
        raise ConfigError("something is wrong somewhere in there")

    crash = Target("boom", st.just({}), boom, _the_file("f"))
    unclear = Target("vague", st.just({}), vague, _the_file("f"))
    assert attempt(crash, {"f": b""}, base)[0] == "crash"
    assert attempt(unclear, {"f": b""}, base)[0] == "unclear"
    assert (
        attempt(TARGETS["tasks"], {"tasks.jsonl": b'{"input": "x", "expect": ["1"]}\n'}, base)[0]
        == "accepted"
    )
