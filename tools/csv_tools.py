"""CSV pack: statistics, filtering, grouping and CSV<->JSON conversion for tables given as text."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Callable
from typing import Annotated, Literal

from langchain_core.tools import BaseTool, tool

from tools._common import clean_number, pack
from tools.json_tools import load_json

MAX_CSV_CHARS = 500_000
Delimiter = Literal[",", ";", "\t", "|"]
_DELIM_DOC = "Field separator: ',' (default), ';', tab or '|'"
_CSV_DOC = "CSV text whose first line is the header row"
_INFER_DOC = "Turn numeric cells into numbers, true/false into booleans and blank cells into null"


def _read(csv_text: str, delimiter: str) -> tuple[list[str], list[dict[str, str]]]:
    if len(csv_text) > MAX_CSV_CHARS:
        raise ValueError(f"csv_text is {len(csv_text)} characters; the limit is {MAX_CSV_CHARS}")
    reader = csv.DictReader(io.StringIO(csv_text.strip()), delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header or not any(header):
        raise ValueError("csv_text must start with a header row naming the columns")
    rows = []
    for raw in reader:
        rows.append({k.strip(): (v or "").strip() for k, v in raw.items() if isinstance(k, str)})
    return header, rows


def _require_column(header: list[str], column: str) -> str:
    if column.strip() not in header:
        raise ValueError(f"column {column!r} not found; the columns are {header}")
    return column.strip()


def _to_number(cell: str) -> float | None:
    cleaned = cell.replace(",", "").replace("$", "").replace("€", "").replace("£", "").strip()
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _write(header: list[str], rows: list[dict[str, str]], delimiter: str) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@tool
def csv_column_stats(
    csv_text: Annotated[str, _CSV_DOC],
    column: Annotated[str, "Name of the numeric column to summarise, as written in the header"],
    delimiter: Annotated[Delimiter, _DELIM_DOC] = ",",
) -> dict[str, float | int]:
    """Total, average (mean), median, minimum and maximum of one numeric column of a CSV table, skipping blank
    or non-numeric cells. Returns those figures and the counts of values used and skipped.

    Example: "what's the average price in this CSV?" ->
    csv_column_stats(csv_text="item,price\\npen,2\\nbook,12", column="price")
    """
    header, rows = _read(csv_text, delimiter)
    col = _require_column(header, column)
    numbers = [n for n in (_to_number(r.get(col, "")) for r in rows) if n is not None]
    if not numbers:
        raise ValueError(f"column {col!r} has no numeric values")
    return {
        "count": len(numbers),
        "skipped": len(rows) - len(numbers),
        "sum": clean_number(math.fsum(numbers)),
        "mean": clean_number(statistics.fmean(numbers)),
        "median": clean_number(statistics.median(numbers)),
        "min": min(numbers),
        "max": max(numbers),
    }


def _infer(cell: str) -> str | int | float | bool | None:
    if cell == "":
        return None
    if cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    if cell.lstrip("-").isdigit() and len(cell) < 19:
        return int(cell)
    try:
        number = float(cell)
    except ValueError:
        return cell
    return number if math.isfinite(number) else cell


@tool
def csv_to_json(
    csv_text: Annotated[str, _CSV_DOC],
    infer_types: Annotated[bool, _INFER_DOC] = True,
    delimiter: Annotated[Delimiter, _DELIM_DOC] = ",",
) -> str:
    """Convert CSV text (a header row, then rows) into JSON: an array with one object per row, keyed by column
    name. Returns the JSON text.

    Example: "turn this CSV into JSON" -> csv_to_json(csv_text="name,age\\nAnn,31\\nBo,27")
    """
    _, rows = _read(csv_text, delimiter)
    if infer_types:
        typed = [{k: _infer(v) for k, v in r.items()} for r in rows]
        return json.dumps(typed, ensure_ascii=False)
    return json.dumps(rows, ensure_ascii=False)


@tool
def json_to_csv(
    json_text: Annotated[str, 'A JSON array of flat objects, e.g. [{"name": "Ann", "age": 31}]'],
    delimiter: Annotated[Delimiter, _DELIM_DOC] = ",",
) -> str:
    """Convert a JSON array of objects into a CSV table (spreadsheet rows) with a header row of their keys.
    Returns the CSV text.

    Example: "make a CSV out of this JSON list" -> json_to_csv(json_text='[{"name": "Ann", "age": 31},
    {"name": "Bo", "age": 27}]')
    """
    data = load_json("json_text", json_text)
    if not isinstance(data, list) or not data or not all(isinstance(r, dict) for r in data):
        raise ValueError("json_text must be a non-empty JSON array of objects")
    header: dict[str, None] = {}
    for row in data:
        for key in row:
            header.setdefault(str(key), None)

    def cell(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False)
        return str(value)

    rows = [{str(k): cell(v) for k, v in row.items()} for row in data]
    return _write(list(header), rows, delimiter)


Operator = Literal["==", "!=", ">", ">=", "<", "<=", "contains", "startswith"]
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _matches(cell: str, op: str, value: str) -> bool:
    if op == "contains":
        return value.lower() in cell.lower()
    if op == "startswith":
        return cell.lower().startswith(value.lower())
    a, b = _to_number(cell), _to_number(value)
    if op in ("==", "!="):
        equal = a == b if a is not None and b is not None else cell == value
        return equal if op == "==" else not equal
    if a is None or b is None:
        return False  # ordering comparisons only make sense between numbers
    return _COMPARE[op](a, b)


@tool
def csv_filter_rows(
    csv_text: Annotated[str, _CSV_DOC],
    column: Annotated[str, "Column to test"],
    operator: Annotated[Operator, "Test: ==, !=, >, >=, <, <= (numbers), contains or startswith (text)"],
    value: Annotated[str, "Value to compare each cell with, e.g. '100' or 'Berlin'"],
    delimiter: Annotated[Delimiter, _DELIM_DOC] = ",",
) -> str:
    """Keep only the rows of a CSV table where a column meets a condition, like price > 100 or city contains
    'York'. Returns the matching rows as CSV with the header.

    Example: "which rows of this CSV cost more than 10?" ->
    csv_filter_rows(csv_text="item,price\\npen,2\\nbook,12", column="price", operator=">", value="10")
    """
    header, rows = _read(csv_text, delimiter)
    col = _require_column(header, column)
    kept = [r for r in rows if _matches(r.get(col, ""), operator, value.strip())]
    return _write(header, kept, delimiter)


@tool
def csv_group_aggregate(
    csv_text: Annotated[str, _CSV_DOC],
    group_by: Annotated[str, "Column whose values define the groups, e.g. 'region'"],
    value_column: Annotated[str, "Numeric column to aggregate, e.g. 'sales'"],
    aggregation: Annotated[Literal["sum", "mean", "count", "min", "max"], "How to combine a group's values"],
    delimiter: Annotated[Delimiter, _DELIM_DOC] = ",",
) -> dict[str, float]:
    """Group the rows of a CSV table by one column and total, average, count, or take the min or max of
    another, like a pivot table or SQL GROUP BY. Returns each group with its result.

    Example: "average delivery days per courier in this table" ->
    csv_group_aggregate(csv_text="courier,days\\nUPS,3\\nDHL,2\\nUPS,5", group_by="courier",
    value_column="days", aggregation="mean")
    """
    header, rows = _read(csv_text, delimiter)
    key_col = _require_column(header, group_by)
    val_col = _require_column(header, value_column)
    groups: dict[str, list[float]] = {}
    for r in rows:
        number = _to_number(r.get(val_col, ""))
        bucket = groups.setdefault(r.get(key_col, ""), [])
        if number is not None:
            bucket.append(number)
    result: dict[str, float] = {}
    for key, values in groups.items():
        if aggregation == "count":
            result[key] = len(values)
        elif not values:
            continue
        elif aggregation == "sum":
            result[key] = clean_number(math.fsum(values))
        elif aggregation == "mean":
            result[key] = clean_number(statistics.fmean(values))
        else:
            result[key] = min(values) if aggregation == "min" else max(values)
    return result


TOOLS: list[BaseTool] = pack(csv_column_stats, csv_to_json, json_to_csv, csv_filter_rows, csv_group_aggregate)
