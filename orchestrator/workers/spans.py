"""Spans of a source text, and the plain code that reads a value from one: what a grounded extraction
(`orchestrator.workers.grounded`) lets a model copy, and how the copy becomes a number, a date or a time.

A reader takes a whole span and returns its value, or None when the span is not one it can read. Readers
guess nothing: a date whose day and month could be either way round ("9/3/2019") is read only when the
caller says which comes first; a bare number is not a time ("at 6"); a month alone is not a date.

    >>> now = dt.datetime(2022, 3, 15, 9, 0)  # a Tuesday
    >>> read_date("in 9 days", now), read_date("last Friday", now), read_date("15th of March 2021", now)
    (datetime.date(2022, 3, 24), datetime.date(2022, 3, 11), datetime.date(2021, 3, 15))
    >>> read_time("5 50 in the afternoon", now), read_time("in half an hour", now), read_time("6", now)
    (datetime.time(17, 50), datetime.time(9, 30), None)
    >>> read_number("1,250.50"), read_number("12,40"), read_number("3 days")
    (1250.5, 12.4, None)
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence

from orchestrator.workers.grounding import MONTHS

__all__ = ["maximal_spans", "number_spans", "read_date", "read_number", "read_time", "spans"]

# a token: a run of word characters, with inner marks that keep it one word ("9:20", "p.m", "co.uk",
# "O'Brien", "7-Eleven", "1,250.50")
_TOKEN = re.compile(r"\w+(?:[.,:'’&@/-]\w+)*")
_NUMBER = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)*(?![\w]|[.,]\d)")

_MONTHS = MONTHS  # month names and abbreviations -> 1..12, as the grounding checks read them
_WEEKDAYS = {
    name: i
    for i, names in enumerate(
        [
            ("monday", "mon"),
            ("tuesday", "tue", "tues"),
            ("wednesday", "wed"),
            ("thursday", "thu", "thur", "thurs"),
            ("friday", "fri"),
            ("saturday", "sat"),
            ("sunday", "sun"),
        ]
    )
    for name in names
}
_COUNTS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "a couple of": 2, "couple of": 2, "a couple": 2,
}  # fmt: skip
_MONTH = "(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_WEEKDAY = "(?:" + "|".join(sorted(_WEEKDAYS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4})"
_COUNT = r"(?P<n>\d+|" + "|".join(sorted(_COUNTS, key=len, reverse=True)) + ")"
_UNIT = r"(?P<unit>day|week|month|year|fortnight)s?"
_LEAD = rf"(?:{_WEEKDAY},?\s+)?(?:the\s+)?"  # "Saturday, 26 Oct", "the 5th of May"

_RELATIVE_DAYS = {
    "today": 0, "tonight": 0, "this morning": 0, "this afternoon": 0, "this evening": 0,
    "tomorrow": 1, "tomorrow morning": 1, "tomorrow afternoon": 1, "tomorrow evening": 1,
    "tomorrow night": 1, "the day after tomorrow": 2, "yesterday": -1, "yesterday morning": -1,
    "yesterday afternoon": -1, "yesterday evening": -1, "last night": -1, "the day before yesterday": -2,
}  # fmt: skip
_DATES = [
    re.compile(rf"{_LEAD}{_DAY}(?:\s+of)?\s+{_MONTH}(?:,?\s+{_YEAR})?"),
    re.compile(rf"{_LEAD}{_MONTH}\s+(?:the\s+)?{_DAY}(?:,?\s+{_YEAR})?"),
    re.compile(r"(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})"),
]
_NUMERIC_DATE = re.compile(r"(?P<a>\d{1,2})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)(?P<year>\d{4}|\d{2})")
_IN = re.compile(rf"(?:in|within)\s+{_COUNT}\s+{_UNIT}(?:\s+time)?")
_FROM_NOW = re.compile(rf"{_COUNT}\s+{_UNIT}\s+(?:from\s+(?:now|today)|away\s+from\s+now|later)")
_AGO = re.compile(rf"{_COUNT}\s+{_UNIT}\s+(?:ago|back|before\s+today)")
_ON_WEEKDAY = re.compile(
    rf"(?P<which>this\s+coming|this\s+past|this|next|last|coming|past)?\s*(?P<wd>{_WEEKDAY})"
)
_DAY_OF_MONTH = re.compile(r"(?:the\s+|next\s+)?(?P<day>\d{1,2})(?:st|nd|rd|th)")

_AM = r"a\.?\s?m\.?"
_PM = r"p\.?\s?m\.?"
_PART = r"(?:in\s+the\s+|at\s+|this\s+)?(?P<part>morning|afternoon|evening|night)"
_SUFFIX = rf"(?:\s*(?P<am>{_AM})|\s*(?P<pm>{_PM})|\s+{_PART}|\s+o'?clock)"
_CLOCK = [
    re.compile(rf"(?P<h>\d{{1,2}}):(?P<m>\d{{2}})(?:{_SUFFIX})?"),  # 9:20, 9:20 pm
    re.compile(rf"(?P<h>\d{{1,2}})\.(?P<m>\d{{2}}){_SUFFIX}"),  # 9.20 pm (9.20 alone is a number)
    re.compile(rf"(?P<h>\d{{1,2}})\s(?P<m>\d{{2}}){_SUFFIX}"),  # 5 50 in the afternoon
    re.compile(rf"(?P<h>\d{{1,2}}){_SUFFIX}"),  # 5pm, 5 o'clock
]
_PAST = re.compile(
    r"(?P<min>half|(?:a\s+)?quarter|\d{1,2})(?:\s+(?:mins?|minutes))?\s+(?P<dir>past|after|to|before)\s+"
    rf"(?P<h>\d{{1,2}})(?:{_SUFFIX})?"
)
_IN_TIME = re.compile(
    r"in\s+(?:(?P<half>half\s+an\s+hour)|(?P<quarter>a\s+quarter\s+of\s+an\s+hour)|"
    r"(?P<n>\d+|an|a|one|two|three|four|five|ten|twenty|thirty)\s+(?P<unit>hours?|hrs?|minutes?|mins?))"
)
_NAMED_TIMES = {"noon": dt.time(12), "midday": dt.time(12), "midnight": dt.time(0)}


def _plain(span: str) -> str:
    return " ".join(span.replace("’", "'").casefold().split())


def spans(source: str, most: int = 4) -> Iterator[tuple[int, int, str]]:
    """Every run of 1 to `most` tokens of `source`, as (first token, last token + 1, the text as written)."""
    tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(source)]
    for i, (start, _) in enumerate(tokens):
        for j in range(i, min(i + most, len(tokens))):
            yield i, j + 1, source[start : tokens[j][1]]


def maximal_spans(source: str, accepts: Callable[[str], bool], most: int = 7) -> list[str]:
    """The spans of up to `most` tokens that `accepts`, leaving out one inside a longer accepted span
    ("Friday" inside "this Friday", "5 50" inside "5 50 in the afternoon"), first occurrence first."""
    found = [(i, j, text) for i, j, text in spans(source, most) if accepts(text)]
    kept = [
        (i, j, text)
        for i, j, text in found
        if not any(a <= i and j <= b and (a, b) != (i, j) for a, b, _ in found)
    ]
    return list(dict.fromkeys(text for _, _, text in kept))


def number_spans(source: str, outside: Sequence[str] = ()) -> list[str]:
    """The numbers written in digits in `source`, as written, leaving out those inside one of `outside`
    (the dates and times of the text: the 20 of "9:20 pm" is not an amount)."""
    blanked = source
    for span in outside:
        blanked = blanked.replace(span, " " * len(span))
    return list(dict.fromkeys(m.group(0) for m in _NUMBER.finditer(blanked)))


def read_number(span: str) -> float | None:
    """A number written in digits: thousands separated by commas ("1,250.50"), or a decimal comma when
    not followed by exactly three digits ("12,40"). Anything else in the span: None."""
    text = span.strip()
    if not re.fullmatch(r"\d+(?:[.,]\d+)*", text):
        return None
    if "," in text and "." in text:
        decimal = "." if text.rindex(".") > text.rindex(",") else ","
        whole, _, frac = text.rpartition(decimal)
        text = re.sub(r"[.,]", "", whole) + "." + frac
    elif "," in text:
        groups = text.split(",")
        if all(len(g) == 3 for g in groups[1:]):
            text = "".join(groups)
        elif len(groups) == 2:
            text = ".".join(groups)
        else:
            return None
    elif text.count(".") > 1:
        groups = text.split(".")
        if not all(len(g) == 3 for g in groups[1:]):
            return None
        text = "".join(groups)
    return float(text)


def _count(raw: str) -> int:
    return int(raw) if raw.isdigit() else _COUNTS[raw]


def _shift(day: dt.date, n: int, unit: str) -> dt.date | None:
    if unit in ("day", "week", "fortnight"):
        return day + dt.timedelta(days=n * {"day": 1, "week": 7, "fortnight": 14}[unit])
    months = day.month - 1 + n * (12 if unit == "year" else 1)
    year, month = day.year + months // 12, months % 12 + 1
    try:
        return day.replace(year=year, month=month)
    except ValueError:  # 31 March minus a month: no such day
        return None


def _year(raw: str | None, now: dt.datetime) -> int:
    if raw is None:
        return now.year
    return 2000 + int(raw) if len(raw) == 2 else int(raw)


def _date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def read_date(span: str, now: dt.datetime, day_first: bool | None = None) -> dt.date | None:
    """The calendar date a span names, relative ones against `now`: "today", "tomorrow", "in 9 days",
    "2 weeks ago", "Friday" / "this Friday" (the next one, today counting), "next Friday" (the one in next
    week), "last Friday", "the 5th" (the next 5th of a month), "15th of March", "March 15, 2021",
    "2022-03-15", "15/03/2022" (`day_first` True; False reads it month first; None reads it only
    when just one order makes a date). A month without a year is the one of `now`'s year. None for
    anything else."""
    text = _plain(span)
    today = now.date()
    if text in _RELATIVE_DAYS:
        return today + dt.timedelta(days=_RELATIVE_DAYS[text])
    for pattern, sign in ((_IN, 1), (_FROM_NOW, 1), (_AGO, -1)):
        if m := pattern.fullmatch(text):
            return _shift(today, sign * _count(m.group("n")), m.group("unit"))
    if m := _ON_WEEKDAY.fullmatch(text):
        weekday = _WEEKDAYS[m.group("wd").rstrip(".")]
        which = " ".join((m.group("which") or "").split())
        if which in ("last", "past", "this past"):
            return today - dt.timedelta(days=(today.weekday() - weekday - 1) % 7 + 1)
        if which == "next":
            monday = today + dt.timedelta(days=7 - today.weekday())
            return monday + dt.timedelta(days=weekday)
        return today + dt.timedelta(days=(weekday - today.weekday()) % 7)
    for pattern in _DATES:
        if m := pattern.fullmatch(text):
            raw = m.group("month")
            month = _MONTHS[raw.rstrip(".")] if raw.rstrip(".") in _MONTHS else int(raw)
            return _date(_year(m.group("year"), now), month, int(m.group("day")))
    if m := _NUMERIC_DATE.fullmatch(text):
        a, b, year = int(m.group("a")), int(m.group("b")), _year(m.group("year"), now)
        orders = [(b, a), (a, b)] if day_first is None else [(b, a)] if day_first else [(a, b)]
        read = {d for month, day in orders if month <= 12 and (d := _date(year, month, day))}
        return read.pop() if len(read) == 1 else None
    if m := _DAY_OF_MONTH.fullmatch(text):
        day, month, year = int(m.group("day")), today.month, today.year
        for _ in range(12):  # the next month that has that day, this one counting
            later = day >= today.day or (month, year) != (today.month, today.year)
            if later and (found := _date(year, month, day)):
                return found
            month, year = (1, year + 1) if month == 12 else (month + 1, year)
        return None
    return None


def _hour(hour: int, m: re.Match[str]) -> int | None:
    """The 24-hour hour of a clock reading with its suffix (a.m., p.m., in the afternoon, at night)."""
    groups = m.groupdict()
    part = groups.get("part")
    if groups.get("pm") or part in ("afternoon", "evening"):
        hour = hour + 12 if hour < 12 else hour
    elif part == "night":
        hour = 0 if hour == 12 else hour + 12 if 6 <= hour < 12 else hour
    elif (groups.get("am") or part == "morning") and hour == 12:
        hour = 0
    elif (groups.get("am") or part == "morning") and hour > 12:
        return None  # "18:00 a.m." is not a time
    return hour if 0 <= hour <= 23 else None


def read_time(span: str, now: dt.datetime) -> dt.time | None:
    """The time of day a span names: "9:20", "9:20 p.m.", "5pm", "5 50 in the afternoon", "11:05 night",
    "6 o'clock", "half past 5", "20 mins after 10 PM", "quarter to 6", "noon", "in 2 hours" / "in half an
    hour" (from `now`). A bare number ("6", "at 6") is not a time: None, as for anything else."""
    text = _plain(span)
    if text in _NAMED_TIMES:
        return _NAMED_TIMES[text]
    if m := _IN_TIME.fullmatch(text):
        if m.group("half") or m.group("quarter"):
            minutes = 30 if m.group("half") else 15
        else:
            n = int(m.group("n")) if m.group("n").isdigit() else _COUNTS.get(m.group("n"), 1)
            minutes = n * (60 if m.group("unit").startswith("h") else 1)
        return (now + dt.timedelta(minutes=minutes)).time().replace(second=0, microsecond=0)
    if m := _PAST.fullmatch(text):
        word = m.group("min").removeprefix("a ").strip()
        minutes = 30 if word == "half" else 15 if word == "quarter" else int(word)
        hour = _hour(int(m.group("h")), m)
        if hour is None or minutes >= 60:
            return None
        total = hour * 60 + (minutes if m.group("dir") in ("past", "after") else -minutes)
        return dt.time(total // 60 % 24, total % 60)
    for pattern in _CLOCK:
        if m := pattern.fullmatch(text):
            hour = _hour(int(m.group("h")), m)
            minute = int(m.groupdict().get("m") or 0)
            if hour is None or minute > 59:
                return None
            return dt.time(hour, minute)
    return None
