"""Tests for the JSON pack."""

import json

import pytest

from tools.json_tools import format_json, json_diff, json_flatten, json_get_path, json_keys, json_validate

DOC = json.dumps(
    {"order": {"id": 7, "items": [{"sku": "A1", "price": 9.5}, {"sku": "B2", "price": 3}]}, "tags": []}
)


def test_json_get_path() -> None:
    assert json_get_path.invoke({"json_text": DOC, "path": "order.items[1].sku"}) == "B2"
    assert json_get_path.invoke({"json_text": DOC, "path": "order.items.0.price"}) == 9.5
    assert json_get_path.invoke({"json_text": DOC, "path": "order.items[-1]"}) == {"sku": "B2", "price": 3}
    assert json_get_path.invoke({"json_text": DOC, "path": ""}) == json.loads(DOC)


@pytest.mark.parametrize(
    ("json_text", "path", "message"),
    [
        (DOC, "order.nope", "key 'nope' not found at order"),
        (DOC, "order.items[5]", "index 5 is out of range"),
        (DOC, "order.id.x", "cannot step into int"),
        ("{", "a", "not valid JSON"),
        (DOC, "order[", "malformed"),
    ],
)
def test_json_get_path_errors(json_text: str, path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        json_get_path.invoke({"json_text": json_text, "path": path})


def test_json_validate() -> None:
    assert json_validate.invoke({"json_text": DOC}) == {
        "valid": True,
        "error": None,
        "line": None,
        "column": None,
        "type": "object",
    }
    bad = json_validate.invoke({"json_text": '{"a": 1,\n "b": }'})
    assert bad["valid"] is False
    assert (bad["line"], bad["column"]) == (2, 7)
    assert json_validate.invoke({"json_text": "3.5"})["type"] == "number"


def test_json_keys() -> None:
    assert json_keys.invoke({"json_text": DOC}) == ["order", "tags"]
    assert json_keys.invoke({"json_text": '{"a": {"b": 1, "c": {"d": 2}}}', "recursive": True}) == [
        "a.b",
        "a.c.d",
    ]
    assert json_keys.invoke({"json_text": '[{"a": 1}, {"b": 2, "a": 3}]'}) == ["a", "b"]
    with pytest.raises(ValueError, match="JSON object"):
        json_keys.invoke({"json_text": "[1, 2]"})


def test_format_json() -> None:
    assert format_json.invoke({"json_text": '{ "b": 1, "a": [1, 2] }', "indent": 0, "sort_keys": True}) == (
        '{"a":[1,2],"b":1}'
    )
    assert format_json.invoke({"json_text": '{"a": 1}'}) == '{\n  "a": 1\n}'
    assert format_json.invoke({"json_text": '"café"', "indent": 0}) == '"café"'


def test_json_flatten() -> None:
    assert json_flatten.invoke({"json_text": '{"a": {"b": [1, {"c": null}]}, "d": {}}'}) == {
        "a.b[0]": 1,
        "a.b[1].c": None,
        "d": {},
    }
    with pytest.raises(ValueError, match="must be a JSON object"):
        json_flatten.invoke({"json_text": "[1]"})


def test_json_diff() -> None:
    before = '{"a": 1, "b": {"c": 2}, "d": true, "f": 1}'
    after = '{"a": 1.0, "b": {"c": 3}, "e": null, "f": true}'
    assert json_diff.invoke({"before": before, "after": after}) == [
        {"path": "b.c", "change": "changed", "old": 2, "new": 3},
        {"path": "d", "change": "removed", "old": True},
        {"path": "e", "change": "added", "new": None},
        {"path": "f", "change": "changed", "old": 1, "new": True},
    ]
    assert json_diff.invoke({"before": DOC, "after": DOC}) == []
