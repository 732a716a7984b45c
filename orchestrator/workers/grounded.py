"""A grounded record: an extraction whose every value is copied from the text it is given, by construction.

`grounded_shape(output)` builds, for each source, a JSON schema in which every field may be null and holds
only what the source writes (`orchestrator.workers.spans`):

- `str` (a name, a merchant): a run of 1 to 4 words of the source, as written;
- `int`, `float` (an amount): a number the source writes in digits, as written, its value read by code;
- `datetime.date`, or a model of {year, month, day}: a span the date reader reads ("in 9 days", "15th of
  March"), read by code into the date;
- `datetime.time`, or a model of {hour, minute}: a span the time reader reads ("5pm"), read by code;
- `Literal[...]` (a currency code): a value the source names (GBP for "£" or "pounds": `CURRENCY_NAMES`);
- `bool`: true or false;
- another model ({amount, currency}): its fields, each as above; null when a part it requires is null;
- `list[...]` of the above: a list of them.

Under a grammar (the local engine) or a server's schema the model can only choose among those spans, so a
value the text lacks cannot be decoded: an invented amount, a name from an example. A model that ignores the
schema gets its reply refused (a value that is not one of the source's) and the worker repairs or escalates.
Relative dates and times are read against `now` (default: the moment of the call).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from orchestrator.errors import ConfigError
from orchestrator.workers.shapes import Shape
from orchestrator.workers.spans import maximal_spans, number_spans, read_date, read_number, read_time, spans

__all__ = ["CURRENCY_NAMES", "grounded_shape"]

NAME_WORDS = 4  # a copied name or merchant: up to this many words
DATE_WORDS = 7  # a copied date or time ("the 5th of May 1962", "5 50 in the afternoon")

# What a text writes for a currency code: a Literal field of codes is grounded by these as by the code itself.
CURRENCY_NAMES: Mapping[str, tuple[str, ...]] = {
    "GBP": ("£", "pound", "pounds", "quid", "sterling"),
    "EUR": ("€", "euro", "euros"),
    "USD": ("$", "dollar", "dollars", "bucks", "us$"),
    "JPY": ("¥", "yen"),
    "CHF": ("franc", "francs"),
    "INR": ("₹", "rupee", "rupees"),
}

Kind = Literal["span", "number", "date", "time", "choice", "flag", "record", "list"]


@dataclass(frozen=True)
class _Field:
    """How one field of the output model is grounded."""

    kind: Kind
    nullable: bool
    integer: bool = False  # a number that must be whole (an int field)
    parts: bool = False  # a date or time kept as a model of its parts ({year, month, day})
    choices: tuple[Any, ...] = ()  # a Literal's values
    model: type[BaseModel] | None = None  # a record's model
    fields: tuple[tuple[str, _Field], ...] = ()  # a record's fields
    item: _Field | None = None  # a list's item


@dataclass(frozen=True)
class _Source:
    """What one source offers: its word spans, numbers, date spans and time spans, as written."""

    words: tuple[str, ...]
    numbers: tuple[str, ...]
    dates: tuple[str, ...]
    times: tuple[str, ...]
    lowered: str


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The type inside an Optional, and whether None is allowed."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(get_args(annotation))
    return annotation, False


def _plan(annotation: Any, where: str) -> _Field:
    inner, nullable = _unwrap(annotation)
    if inner is str:
        return _Field("span", nullable)
    if inner is bool:
        return _Field("flag", nullable)
    if inner in (int, float):
        return _Field("number", nullable, integer=inner is int)
    if inner is dt.date:
        return _Field("date", nullable)
    if inner is dt.time:
        return _Field("time", nullable)
    if get_origin(inner) is Literal:
        return _Field("choice", nullable, choices=get_args(inner))
    if get_origin(inner) is list:
        (item,) = get_args(inner) or (str,)
        planned = _plan(item, where + "[]")
        if planned.kind in ("record", "list"):
            raise ConfigError(f"grounded field {where}: a list of {item} can't be grounded; use a list of "
                              "str, numbers, dates, times or Literal values")  # fmt: skip
        return _Field("list", nullable, item=planned)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        names = set(inner.model_fields)
        if names == {"year", "month", "day"}:
            return _Field("date", nullable, parts=True, model=inner)
        if names in ({"hour", "minute"}, {"hour", "minute", "second"}):
            return _Field("time", nullable, parts=True, model=inner)
        fields = tuple((k, _plan(f.annotation, f"{where}.{k}")) for k, f in inner.model_fields.items())
        return _Field("record", nullable, model=inner, fields=fields)
    raise ConfigError(
        f"grounded field {where} has type {inner!r}; a grounded field is str, int, float, bool, a Literal, "
        "datetime.date, datetime.time, a model of such fields, or a list of them (or drop grounded=True)"
    )


def _source(text: str, now: dt.datetime, day_first: bool | None) -> _Source:
    dates = maximal_spans(text, lambda s: read_date(s, now, day_first) is not None, DATE_WORDS)
    times = maximal_spans(text, lambda s: read_time(s, now) is not None, DATE_WORDS)
    words = [s for _, _, s in spans(text, NAME_WORDS) if read_number(s) is None]
    return _Source(
        tuple(dict.fromkeys(words)),
        tuple(number_spans(text, dates + times)),
        tuple(dates),
        tuple(times),
        " ".join(text.casefold().replace("’", "'").split()),
    )


def _named(choice: Any, src: _Source) -> bool:
    """Does the source name a Literal's value: the value itself, or (a currency code) one of its names, as
    a word (no letter either side: "20eur" names EUR, "europe" does not) or a symbol."""
    for name in (str(choice), *CURRENCY_NAMES.get(str(choice), ())):
        name = name.casefold()
        if re.search(rf"(?<![^\W\d_]){re.escape(name)}(?![^\W\d_])", src.lowered):
            return True
    return False


def _numbers(field: _Field, src: _Source) -> list[str]:
    return [
        n for n in src.numbers if not field.integer or ((v := read_number(n)) is not None and v.is_integer())
    ]


def _schema(field: _Field, src: _Source) -> dict[str, Any]:
    """The schema of one field for a source (null allowed when `field.nullable` or below a record)."""
    if field.kind == "record":
        return {
            "type": "object",
            "properties": {k: _schema(_nullable(f), src) for k, f in field.fields},
            "required": [k for k, _ in field.fields],
            "additionalProperties": False,
        }
    if field.kind == "list":
        assert field.item is not None
        offered = _offered(field.item, src)
        if not offered:
            return {"type": "array", "maxItems": 0}
        return {"type": "array", "items": offered[0]}
    offered = _offered(field, src)
    if not offered:
        return {"type": "null"} if field.kind == "span" else {"enum": [None]}
    if field.kind == "span":
        return {"anyOf": [*offered, {"type": "null"}]}
    return {"enum": [*offered[0]["enum"], None]}


def _offered(field: _Field, src: _Source) -> list[dict[str, Any]]:
    """The schemas of what a leaf field may hold (none: only null)."""
    if field.kind == "flag":
        return [{"enum": [True, False]}]
    if field.kind == "span":
        return [{"$ref": "#/$defs/span"}] if src.words else []
    values: list[Any] = (
        _numbers(field, src)
        if field.kind == "number"
        else list(src.dates)
        if field.kind == "date"
        else list(src.times)
        if field.kind == "time"
        else [c for c in field.choices if _named(c, src)]
    )
    return [{"enum": values}] if values else []


def _nullable(field: _Field) -> _Field:
    return field if field.nullable else _Field(**{**field.__dict__, "nullable": True})


def _read(
    field: _Field, src: _Source, value: Any, where: str, now: dt.datetime, day_first: bool | None
) -> Any:
    """The output value of one field from the reply's copy (ValueError: not one the source offers)."""
    if value is None:
        return None
    if field.kind == "record":
        assert field.model is not None
        record = _fields(field, src, value, where, now, day_first)
        if all(v is None for v in record.values()):
            return None
        try:
            return field.model.model_validate(record).model_dump(mode="json")
        except ValidationError:
            return None  # a part it needs is not in the text ({amount: null, currency: "GBP"}): absent
    if field.kind == "list":
        assert field.item is not None
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list")
        return [_read(field.item, src, v, f"{where}[]", now, day_first) for v in value]
    if field.kind == "flag":
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true, false or null, not {value!r}")
        return value
    if field.kind == "choice":
        if value not in field.choices or not _named(value, src):
            raise ValueError(f"{where} {value!r} is not named in the text")
        return value
    if field.kind == "number":
        offered = {n: read_number(n) for n in _numbers(field, src)}
        if isinstance(value, int | float) and not isinstance(value, bool):
            if float(value) not in offered.values():
                raise ValueError(f"{where} {value!r} is not a number the text writes")
            number = float(value)
        elif isinstance(value, str) and value in offered:
            number = offered[value] or 0.0
        else:
            raise ValueError(
                f"{where} {value!r} is not a number the text writes; copy one of {list(offered)}"
            )
        return int(number) if field.integer else number
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a span of the text, not {value!r}")
    if field.kind == "span":
        if value not in src.words:
            raise ValueError(f"{where} {value!r} is not in the text; copy it as the text writes it")
        return value
    if field.kind == "date":
        day = read_date(value, now, day_first) if value in src.dates else None
        if day is None:
            raise ValueError(
                f"{where} {value!r} is not a date the text writes; copy one of {list(src.dates)}"
            )
        return {"year": day.year, "month": day.month, "day": day.day} if field.parts else day.isoformat()
    clock = read_time(value, now) if value in src.times else None
    if clock is None:
        raise ValueError(f"{where} {value!r} is not a time the text writes; copy one of {list(src.times)}")
    if field.parts:
        assert field.model is not None
        parts = {"hour": clock.hour, "minute": clock.minute, "second": clock.second}
        return {k: parts[k] for k in field.model.model_fields}
    return clock.isoformat()


def _fields(
    field: _Field, src: _Source, value: Any, where: str, now: dt.datetime, day_first: bool | None
) -> dict[str, Any]:
    """A record's fields, each read from the reply's copy."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object")
    return {k: _read(f, src, value.get(k), f"{where}.{k}", now, day_first) for k, f in field.fields}


def _copy(field: _Field, src: _Source, value: Any, now: dt.datetime, day_first: bool | None) -> Any:
    """The reply form of an example's value: the span of its text that reads as it (None: there is none)."""
    if value is None:
        return None
    if field.kind == "record":
        return {k: _copy(f, src, value.get(k), now, day_first) for k, f in field.fields}
    if field.kind == "list":
        assert field.item is not None
        return [_copy(field.item, src, v, now, day_first) for v in value]
    if field.kind in ("flag", "choice"):
        return value
    candidates: Sequence[str] = {
        "span": src.words,
        "number": src.numbers,
        "date": src.dates,
        "time": src.times,
    }[field.kind]
    for span in candidates:
        if _read(field, src, span, "", now, day_first) == value:
            return span
    if field.kind == "span":
        return next((s for s in candidates if s.casefold() == str(value).casefold()), None)
    return None


def grounded_shape(
    output: type[BaseModel],
    *,
    now: dt.datetime | dt.date | None = None,
    day_first: bool | None = None,
) -> Shape:
    """The grounded shape of `output` (see the module docstring): relative dates and times are read against
    `now` (a date counts as its midnight; None: the moment of each call); `day_first` orders a numeric date
    ("9/3/2019": True reads 9 March, False 3 September, None reads it only when one order is impossible).

    Example:
        >>> from pydantic import BaseModel
        >>> class Payment(BaseModel):
        ...     amount: float | None
        ...     date: dt.date | None
        >>> shape = grounded_shape(Payment, now=dt.date(2022, 3, 15))
        >>> shape.schema("I sent 40 pounds 2 days ago")["properties"]["amount"]
        {'enum': ['40', None]}
        >>> shape.output("I sent 40 pounds 2 days ago", {"amount": "40", "date": "2 days ago"})
        {'amount': 40.0, 'date': '2022-03-13'}
    """
    plan = _plan(output, output.__name__)
    if plan.kind != "record":
        raise ConfigError(f"grounded_shape needs a pydantic model, not {output!r}")

    def reference() -> dt.datetime:
        if isinstance(now, dt.datetime):
            return now
        if isinstance(now, dt.date):
            return dt.datetime.combine(now, dt.time())
        return dt.datetime.now()

    def schema(source: str) -> dict[str, Any]:
        src = _source(source, reference(), day_first)
        shaped = _schema(plan, src)
        if src.words:
            shaped["$defs"] = {"span": {"enum": list(src.words)}}
        return shaped

    def read(source: str, reply: Mapping[str, Any]) -> Any:
        at = reference()
        return _fields(plan, _source(source, at, day_first), reply, output.__name__, at, day_first)

    def example(text: str, record: Any) -> str:
        """An example's record as the model writes it for `text`: each value as the span that reads as it
        (ConfigError: the text does not write one, so the model could not copy it)."""
        at = reference()
        copied = _copy(plan, _source(text, at, day_first), record, at, day_first)
        back = read(text, copied) or {}
        want = output.model_validate(record).model_dump(mode="json")
        wrong = [k for k in want if want[k] != back.get(k)]
        if wrong:
            raise ConfigError(
                f"example {text[:60]!r}: {', '.join(wrong)} can't be copied from its text; a grounded "
                "worker's examples copy every value from their text (write it there, or use null)"
            )
        return json.dumps(copied, ensure_ascii=False)

    return Shape(
        schema,
        read,
        "Copy each value exactly as the text writes it: a name as written, a number as its digits, a date "
        "or a time as the words that say it (such as 'tomorrow', 'in 9 days', '3pm'). Use null for what "
        "the text does not say.",
        example,
    )
