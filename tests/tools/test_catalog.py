"""Catalog-wide checks: size, naming, schemas, distinctness and test coverage of every tool."""

import ast
import itertools
import json
import re
from pathlib import Path

import pytest
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from tools.catalog import PACKS, TOOLS

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
WORD_RE = re.compile(r"[a-z0-9]+")
MAX_JACCARD = 0.6


def _words(text: str) -> set[str]:
    return set(WORD_RE.findall(text.lower()))


def test_catalog_has_at_least_55_tools() -> None:
    assert len(TOOLS) >= 55
    assert all(isinstance(t, BaseTool) for t in TOOLS)


def test_catalog_is_the_union_of_packs_in_stable_order() -> None:
    assert [t.name for t in TOOLS] == [t.name for pack in PACKS.values() for t in pack]
    from tools.catalog import TOOLS as again

    assert again is TOOLS


def test_tool_names_are_unique_and_well_formed() -> None:
    names = [t.name for t in TOOLS]
    assert len(names) == len(set(names))
    for name in names:
        assert len(name) <= 64, name
        assert NAME_RE.match(name), name
    squashed = [n.replace("_", "") for n in names]
    assert len(squashed) == len(set(squashed))


@pytest.mark.parametrize("tool_obj", TOOLS, ids=lambda t: t.name)
def test_description_is_one_or_two_clean_sentences_then_an_example(tool_obj: BaseTool) -> None:
    what, example = tool_obj.description.split("\n\n")
    assert what == " ".join(what.split())
    assert 30 <= len(what) <= 300, what
    assert what[0].isupper() and what.endswith("."), what
    sentences = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", what) if s]
    assert 1 <= len(sentences) <= 2, what
    assert example.startswith("Example: ") and example == " ".join(example.split())


# `Example: "<a request in a user's words>" -> tool_name(arg=value, ...)`: an agent shows it to the model
EXAMPLE = re.compile(r'Example: "(?P<request>[^"]+)" -> (?P<call>(?P<tool>\w+)\(.*\))')


@pytest.mark.parametrize("tool_obj", TOOLS, ids=lambda t: t.name)
def test_the_description_a_model_sees_ends_with_one_example_that_calls_the_tool(tool_obj: BaseTool) -> None:
    function = convert_to_openai_tool(tool_obj)["function"]
    lines = function["description"].splitlines()
    examples = [line for line in lines if "Example:" in line]
    assert examples == [lines[-1]], function["description"]  # exactly one, on the last line
    found = EXAMPLE.fullmatch(examples[0])
    assert found is not None, examples[0]
    assert found["tool"] == tool_obj.name
    call = ast.parse(found["call"], mode="eval").body
    assert isinstance(call, ast.Call) and not call.args, found["call"]  # arguments by name only
    given = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    properties = function["parameters"].get("properties", {})
    assert set(given) <= set(properties), f"{found['call']} names parameters the tool lacks"
    assert set(function["parameters"].get("required", [])) <= set(given), found["call"]
    tool_obj.invoke(given)  # the example is a call that works


def test_pack_puts_each_paragraph_of_a_docstring_on_one_line() -> None:
    from langchain_core.tools import tool

    from tools._common import pack

    @tool
    def double(n: int) -> int:
        """Twice a number, for when a
        request says double.

        Example: "double 21" ->
        double(n=21)
        """
        return 2 * n

    (packed,) = pack(double)
    assert (
        packed.description
        == 'Twice a number, for when a request says double.\n\nExample: "double 21" -> double(n=21)'
    )


@pytest.mark.parametrize("tool_obj", TOOLS, ids=lambda t: t.name)
def test_every_parameter_is_described_in_the_json_schema(tool_obj: BaseTool) -> None:
    function = convert_to_openai_tool(tool_obj)["function"]
    assert function["name"] == tool_obj.name
    assert function["description"] == tool_obj.description
    parameters = function["parameters"]
    assert parameters["type"] == "object"
    for param, spec in parameters.get("properties", {}).items():
        assert spec.get("description", "").strip(), f"{tool_obj.name}.{param} has no description"
    json.dumps(parameters)  # the schema itself must be JSON-serialisable
    pydantic_schema = tool_obj.tool_call_schema.model_json_schema()  # type: ignore[union-attr]
    assert set(pydantic_schema.get("properties", {})) == set(parameters.get("properties", {}))


def test_no_near_duplicate_descriptions() -> None:
    offenders = []
    for a, b in itertools.combinations(TOOLS, 2):
        wa, wb = _words(a.description), _words(b.description)
        similarity = len(wa & wb) / len(wa | wb)
        if similarity >= MAX_JACCARD:
            offenders.append((a.name, b.name, round(similarity, 2)))
    assert offenders == []


def test_every_tool_is_exercised_by_a_pack_test() -> None:
    here = Path(__file__).parent
    sources = "\n".join(
        p.read_text(encoding="utf-8") for p in here.glob("test_*.py") if p.name != Path(__file__).name
    )
    missing = [t.name for t in TOOLS if len(re.findall(rf"\b{t.name}\b", sources)) < 2]
    assert missing == []
