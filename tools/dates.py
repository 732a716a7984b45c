"""Dates pack: calendar arithmetic on ISO dates. "Today" is always an explicit argument, never the clock."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated, Literal

from langchain_core.tools import BaseTool, tool

from tools._common import pack, parse_date, parse_datetime

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_WEEKDAYS: list[str] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MAX_SPAN_DAYS = 200 * 366


def _weekday_index(name: str) -> int:
    key = name.strip().lower()
    if key not in _WEEKDAYS:
        raise ValueError(f"weekday {name!r} is not a weekday name; expected one of {_WEEKDAYS}")
    return _WEEKDAYS.index(key)


def _shift(d: date, days: int) -> date:
    try:
        return d + timedelta(days=days)
    except OverflowError:
        raise ValueError(f"moving {d.isoformat()} by {days} days leaves the supported years 1-9999") from None


@tool
def date_diff(
    start_date: Annotated[str, "Earlier date, ISO format YYYY-MM-DD"],
    end_date: Annotated[str, "Later date, ISO format YYYY-MM-DD"],
) -> int:
    """Days between two dates: how long from one date to another, in calendar days (weekends included), e.g.
    days until a deadline, since an event, or the length of a stay. Returns the end minus the start in days
    (negative if the end is earlier).

    Example: "days between the lease start 2026-04-09 and its end 2026-11-23?" ->
    date_diff(start_date="2026-04-09", end_date="2026-11-23")
    """
    return (parse_date("end_date", end_date) - parse_date("start_date", start_date)).days


@tool
def add_days(
    start_date: Annotated[str, "Date to start from, YYYY-MM-DD"],
    days: Annotated[int, "Days to add; negative values go back in time"],
) -> str:
    """The date some days after or before a date: add or subtract days (or weeks as 7 days each), e.g. a due
    date 30 days after an invoice. Returns the new date as YYYY-MM-DD.

    Example: "the parcel ships 2025-11-27 and takes 12 days; arrival date?" ->
    add_days(start_date="2025-11-27", days=12)
    """
    return _shift(parse_date("start_date", start_date), days).isoformat()


@tool
def add_months(
    start_date: Annotated[str, "Date to start from, YYYY-MM-DD"],
    months: Annotated[int, "Months to add; negative values go back"],
) -> str:
    """The date some months or years after or before a date (a year is 12 months), the day kept or moved to
    the end of a shorter month. Returns the new date as YYYY-MM-DD.

    Example: "what's the date 18 months after 2025-08-31?" -> add_months(start_date="2025-08-31", months=18)
    """
    d = parse_date("start_date", start_date)
    index = d.year * 12 + (d.month - 1) + months
    year, month = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise ValueError(f"moving {start_date} by {months} months leaves the supported years 1-9999")
    day = min(d.day, calendar.monthrange(year, month + 1)[1])
    return date(year, month + 1, day).isoformat()


@tool
def weekday_of(date_text: Annotated[str, "Date, YYYY-MM-DD"]) -> str:
    """The day of the week a date falls on: what day (Monday, Tuesday, ...) a date was or will be. Returns the
    weekday name.

    Example: "which weekday was 25 December 2000?" -> weekday_of(date_text="2000-12-25")
    """
    return _WEEKDAYS[parse_date("date_text", date_text).weekday()].title()


@tool
def days_until_weekday(
    from_date: Annotated[str, "Reference date (today), YYYY-MM-DD"],
    weekday: Annotated[Weekday, "Target day of the week in lower case, e.g. 'friday'"],
) -> dict[str, int | str]:
    """The next given weekday after a date, like next Friday or the coming Monday from today. Returns how many
    days away it is (1-7) and its date.

    Example: "today is 2026-05-06; when is next Saturday?" -> days_until_weekday(from_date="2026-05-06",
    weekday="saturday")
    """
    d = parse_date("from_date", from_date)
    delta = (_weekday_index(weekday) - d.weekday() - 1) % 7 + 1
    return {"days": delta, "date": _shift(d, delta).isoformat()}


@tool
def iso_week(date_text: Annotated[str, "Date, YYYY-MM-DD"]) -> dict[str, int | str]:
    """The week number of a date (ISO 8601 weeks, starting on Monday). Returns the ISO year, the week, the day
    of the week (Monday is 1) and a label such as 2026-W09.

    Example: "calendar week of 2025-08-21" -> iso_week(date_text="2025-08-21")
    """
    year, week, weekday = parse_date("date_text", date_text).isocalendar()
    return {"iso_year": year, "week": week, "weekday": weekday, "label": f"{year}-W{week:02d}"}


@tool
def business_days_between(
    start_date: Annotated[str, "First day counted (inclusive), YYYY-MM-DD"],
    end_date: Annotated[str, "Last day, exclusive, YYYY-MM-DD"],
    holidays: Annotated[tuple[str, ...], "Optional public holidays to skip, as YYYY-MM-DD dates"] = (),
) -> int:
    """Working days (business days, Monday to Friday) between two dates, skipping listed holidays; the start
    counts, the end does not. Returns the count (negative if the end is earlier).

    Example: "how many working days from 2026-06-01 to 2026-06-15?" ->
    business_days_between(start_date="2026-06-01", end_date="2026-06-15")
    """
    start, end = parse_date("start_date", start_date), parse_date("end_date", end_date)
    skip = {parse_date("holidays", h) for h in holidays}
    sign = 1
    if end < start:
        start, end, sign = end, start, -1
    span = (end - start).days
    if span > _MAX_SPAN_DAYS:
        raise ValueError(f"the range spans {span} days; the limit is {_MAX_SPAN_DAYS}")
    full_weeks, rest = divmod(span, 7)
    count = full_weeks * 5 + sum(1 for i in range(rest) if (start.weekday() + i) % 7 < 5)
    count -= sum(1 for h in skip if start <= h < end and h.weekday() < 5)
    return sign * count


_UNIT_SECONDS = {
    "w": 604800, "week": 604800, "weeks": 604800, "d": 86400, "day": 86400, "days": 86400,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
}  # fmt: skip
_ISO_DURATION = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_HUMAN_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")


@tool
def parse_duration(
    text: Annotated[str, "Duration such as '1h30m', '2 days 4 hours', '45 min' or ISO 8601 'PT1H30M'"],
) -> dict[str, float | str]:
    """Read a written duration like '1h30m', '2 days 4 hours', '45 min' or ISO 'PT1H30M' as a total of
    seconds, minutes and hours. Returns those totals and a 'Xd HH:MM:SS' form.

    Example: "total length of a playlist of 1h 12m 40s, in seconds" -> parse_duration(text="1h 12m 40s")
    """
    raw = text.strip().lower()
    if not raw or len(raw) > 200:
        raise ValueError(f"text must be a non-empty duration under 200 characters, got {text!r}")
    total = 0.0
    iso = _ISO_DURATION.match(raw.upper())
    if iso and raw != "p" and raw != "pt":
        scale = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
        total = sum(float(v) * scale[k] for k, v in iso.groupdict().items() if v)
    else:
        leftover = _HUMAN_PART.sub("", raw).replace(",", "").replace("and", "").strip()
        parts = _HUMAN_PART.findall(raw)
        if not parts or leftover:
            raise ValueError(f"could not parse duration {text!r}; expected e.g. '1h30m' or 'PT1H30M'")
        for amount, unit in parts:
            if unit not in _UNIT_SECONDS:
                raise ValueError(f"unknown time unit {unit!r} in {text!r}; use w, d, h, m or s")
            total += float(amount) * _UNIT_SECONDS[unit]
    if total > 1e12:
        raise ValueError(f"duration {text!r} is too long; the limit is 10**12 seconds")
    days, rem = divmod(round(total), 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    return {
        "total_seconds": total,
        "total_minutes": round(total / 60, 6),
        "total_hours": round(total / 3600, 6),
        "normalized": f"{days}d {hours:02d}:{minutes:02d}:{seconds:02d}",
    }


_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$|^(?:UTC|GMT|Z)$")


def _parse_offset(name: str, text: str) -> timezone:
    m = _OFFSET.match(text.strip().upper())
    if not m:
        raise ValueError(f"{name} must be a UTC offset like '+05:30', '-08:00' or 'UTC', got {text!r}")
    if m.group(1) is None:
        return UTC
    minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
    if minutes >= 24 * 60:
        raise ValueError(f"{name} {text!r} is out of range; offsets must be under 24 hours")
    return timezone(timedelta(minutes=-minutes if m.group(1) == "-" else minutes))


@tool
def convert_utc_offset(
    date_time: Annotated[str, "Local date and time, e.g. '2026-03-01T09:00'"],
    from_offset: Annotated[str, "UTC offset of the given time, e.g. '+02:00', '-0500' or 'UTC'"],
    to_offset: Annotated[str, "UTC offset to express the time in, e.g. '+09:00'"],
) -> str:
    """Convert a clock time from one time zone to another, both given as UTC offsets (not city names), e.g.
    09:00 at UTC+2 is 16:00 at UTC+9. Returns the ISO date-time at the new offset.

    Example: "a call at 16:30 on 2025-10-08 in UTC-3 is when at UTC+5:30?" ->
    convert_utc_offset(date_time="2025-10-08T16:30", from_offset="-03:00", to_offset="+05:30")
    """
    moment = parse_datetime("date_time", date_time)
    if moment.tzinfo is not None:
        raise ValueError(f"date_time {date_time!r} already has an offset; pass the local time without it")
    source, target = _parse_offset("from_offset", from_offset), _parse_offset("to_offset", to_offset)
    return moment.replace(tzinfo=source).astimezone(target).isoformat()


@tool
def age_from_birthdate(
    birthdate: Annotated[str, "Date of birth, YYYY-MM-DD"],
    on_date: Annotated[str, "Date to measure the age on (e.g. today), YYYY-MM-DD"],
) -> dict[str, int]:
    """How old someone is on a date, from their date of birth (birthday): the age in years, months and days.
    Returns those and the total days lived.

    Example: "how old is someone born on 1988-11-23 on 2026-06-01?" ->
    age_from_birthdate(birthdate="1988-11-23", on_date="2026-06-01")
    """
    born, on = parse_date("birthdate", birthdate), parse_date("on_date", on_date)
    if on < born:
        raise ValueError(f"on_date {on_date} is before birthdate {birthdate}")
    months = (on.year - born.year) * 12 + on.month - born.month
    if on.day < born.day:
        months -= 1
    anchor_index = born.year * 12 + born.month - 1 + months
    year, month = divmod(anchor_index, 12)
    anchor = date(year, month + 1, min(born.day, calendar.monthrange(year, month + 1)[1]))
    lived = (on - born).days
    return {"years": months // 12, "months": months % 12, "days": (on - anchor).days, "total_days": lived}


@tool
def convert_unix_timestamp(
    value: Annotated[str, "Either seconds since 1970-01-01 UTC (e.g. '1767225600') or an ISO date-time"],
) -> dict[str, str | float]:
    """Convert a Unix timestamp (epoch seconds since 1970) to a UTC date and time, or a date and time to a
    Unix timestamp. Returns both forms.

    Example: "the log line says 1751328000; which day was that?" -> convert_unix_timestamp(value="1751328000")
    """
    raw = value.strip()
    try:
        seconds = float(raw)
    except ValueError:
        moment = parse_datetime("value", raw)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    if not -62135596800 <= seconds <= 253402300799:  # e.g. 0001-01-01T00:00+05:00 is in year 0 in UTC
        raise ValueError(f"timestamp {raw[:40]} is outside years 1-9999 in UTC")
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return {"unix_seconds": int(seconds) if seconds.is_integer() else seconds, "utc": moment.isoformat()}


@tool
def month_calendar_info(
    year: Annotated[int, "Year, 1-9999"],
    month: Annotated[int, "Month number, 1-12"],
) -> dict[str, int | str | bool]:
    """Facts about a month: how many days it has, whether its year is a leap year, and the weekdays of its
    first and last day. Returns them by name.

    Example: "does February 2028 have a 29th?" -> month_calendar_info(year=2028, month=2)
    """
    if not 1 <= year <= 9999:
        raise ValueError(f"year must be between 1 and 9999, got {year}")
    if not 1 <= month <= 12:
        raise ValueError(f"month must be between 1 and 12, got {month}")
    first_wd, days = calendar.monthrange(year, month)
    return {
        "days_in_month": days,
        "leap_year": calendar.isleap(year),
        "first_day": date(year, month, 1).isoformat(),
        "first_weekday": _WEEKDAYS[first_wd].title(),
        "last_day": date(year, month, days).isoformat(),
        "last_weekday": _WEEKDAYS[date(year, month, days).weekday()].title(),
    }


@tool
def nth_weekday_of_month(
    year: Annotated[int, "Year, 1-9999"],
    month: Annotated[int, "Month number, 1-12"],
    weekday: Annotated[Weekday, "Day of the week, lower case, e.g. 'thursday'"],
    n: Annotated[int, "Which occurrence: 1 first, 2 second, ... 5 fifth, or -1 for the last"],
) -> str:
    """The date of the first, second, third, fourth, fifth or last given weekday of a month, like Thanksgiving
    on the fourth Thursday of November. Returns the date as YYYY-MM-DD.

    Example: "the final Friday of October 2025" -> nth_weekday_of_month(year=2025, month=10, weekday="friday",
    n=-1)
    """
    if not 1 <= year <= 9999 or not 1 <= month <= 12:
        raise ValueError(f"year must be 1-9999 and month 1-12, got {year}-{month}")
    if n not in (-1, 1, 2, 3, 4, 5):
        raise ValueError(f"n must be 1-5 or -1 for the last occurrence, got {n}")
    target = _weekday_index(weekday)
    days_in_month = calendar.monthrange(year, month)[1]
    matches = [d for d in range(1, days_in_month + 1) if date(year, month, d).weekday() == target]
    if n > len(matches):
        raise ValueError(f"{year}-{month:02d} has only {len(matches)} {weekday}s, so n={n} does not exist")
    return date(year, month, matches[n - 1 if n > 0 else -1]).isoformat()


TOOLS: list[BaseTool] = pack(
    date_diff,
    add_days,
    add_months,
    weekday_of,
    days_until_weekday,
    iso_week,
    business_days_between,
    parse_duration,
    convert_utc_offset,
    age_from_birthdate,
    convert_unix_timestamp,
    month_calendar_info,
    nth_weekday_of_month,
)
