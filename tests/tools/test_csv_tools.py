"""Tests for the CSV pack."""

import json

import pytest

from tools.csv_tools import csv_column_stats, csv_filter_rows, csv_group_aggregate, csv_to_json, json_to_csv

SALES = (
    "region,product,sales\n"
    "North,Apples,120\n"
    "South,Pears,80.5\n"
    "North,Pears,\n"
    "East,Plums,n/a\n"
    "South,Apples,40\n"
)


def test_csv_column_stats() -> None:
    assert csv_column_stats.invoke({"csv_text": SALES, "column": "sales"}) == {
        "count": 3,
        "skipped": 2,
        "sum": 240.5,
        "mean": pytest.approx(80.1666666667),
        "median": 80.5,
        "min": 40.0,
        "max": 120.0,
    }
    semicolons = csv_column_stats.invoke({"csv_text": "x;y\n1;$1,000\n2;3", "column": "y", "delimiter": ";"})
    assert semicolons["max"] == 1000.0
    with pytest.raises(ValueError, match="column 'price' not found"):
        csv_column_stats.invoke({"csv_text": SALES, "column": "price"})
    with pytest.raises(ValueError, match="no numeric values"):
        csv_column_stats.invoke({"csv_text": SALES, "column": "region"})


def test_csv_to_json() -> None:
    rows = json.loads(csv_to_json.invoke({"csv_text": SALES}))
    assert rows[0] == {"region": "North", "product": "Apples", "sales": 120}
    assert rows[2]["sales"] is None
    assert rows[3]["sales"] == "n/a"
    raw = json.loads(
        csv_to_json.invoke({"csv_text": "a\tb\n1\ttrue", "delimiter": "\t", "infer_types": False})
    )
    assert raw == [{"a": "1", "b": "true"}]
    typed = json.loads(csv_to_json.invoke({"csv_text": "a,b,c\n1,true,nan"}))
    assert typed == [{"a": 1, "b": True, "c": "nan"}]


def test_json_to_csv() -> None:
    text = json.dumps([{"name": "Ann", "age": 31}, {"name": "Bo, Jr", "tags": ["x"], "ok": True}])
    assert json_to_csv.invoke({"json_text": text}) == 'name,age,tags,ok\nAnn,31,,\n"Bo, Jr",,"[""x""]",true\n'
    assert json_to_csv.invoke({"json_text": '[{"a": 1}]', "delimiter": "|"}) == "a\n1\n"
    with pytest.raises(ValueError, match="array of objects"):
        json_to_csv.invoke({"json_text": '{"a": 1}'})


def test_csv_filter_rows() -> None:
    over_50 = csv_filter_rows.invoke({"csv_text": SALES, "column": "sales", "operator": ">", "value": "50"})
    assert over_50 == "region,product,sales\nNorth,Apples,120\nSouth,Pears,80.5\n"
    pears = csv_filter_rows.invoke(
        {"csv_text": SALES, "column": "product", "operator": "contains", "value": "pear"}
    )
    assert pears.splitlines()[1:] == ["South,Pears,80.5", "North,Pears,"]
    north = csv_filter_rows.invoke(
        {"csv_text": SALES, "column": "region", "operator": "!=", "value": "North"}
    )
    assert len(north.splitlines()) == 4
    exact = csv_filter_rows.invoke({"csv_text": SALES, "column": "sales", "operator": "==", "value": "120.0"})
    assert exact.splitlines()[1:] == ["North,Apples,120"]


def test_csv_group_aggregate() -> None:
    def run(aggregation: str) -> dict[str, float]:
        return csv_group_aggregate.invoke(
            {"csv_text": SALES, "group_by": "region", "value_column": "sales", "aggregation": aggregation}
        )

    assert run("sum") == {"North": 120.0, "South": 120.5}
    assert run("count") == {"North": 1, "South": 2, "East": 0}
    assert run("mean") == {"North": 120.0, "South": 60.25}
    assert run("min") == {"North": 120.0, "South": 40.0}
    assert run("max") == {"North": 120.0, "South": 80.5}
