"""Tests for the dates pack: every result depends only on the arguments, never on the clock."""

import pytest

from tools.dates import (
    add_days,
    add_months,
    age_from_birthdate,
    business_days_between,
    convert_unix_timestamp,
    convert_utc_offset,
    date_diff,
    days_until_weekday,
    iso_week,
    month_calendar_info,
    nth_weekday_of_month,
    parse_duration,
    weekday_of,
)


def test_date_diff() -> None:
    assert date_diff.invoke({"start_date": "2026-01-15", "end_date": "2026-03-01"}) == 45
    assert date_diff.invoke({"start_date": "2024-03-01", "end_date": "2024-02-01"}) == -29
    with pytest.raises(ValueError, match="start_date must be an ISO date"):
        date_diff.invoke({"start_date": "15/01/2026", "end_date": "2026-03-01"})


def test_add_days() -> None:
    assert add_days.invoke({"start_date": "2026-12-25", "days": 10}) == "2027-01-04"
    assert add_days.invoke({"start_date": "2024-03-01", "days": -1}) == "2024-02-29"
    with pytest.raises(ValueError, match="supported years"):
        add_days.invoke({"start_date": "9999-12-31", "days": 1})


def test_add_months_clamps_to_month_end() -> None:
    assert add_months.invoke({"start_date": "2026-01-31", "months": 1}) == "2026-02-28"
    assert add_months.invoke({"start_date": "2024-02-29", "months": -12}) == "2023-02-28"
    assert add_months.invoke({"start_date": "2026-11-15", "months": 3}) == "2027-02-15"


def test_weekday_of() -> None:
    assert weekday_of.invoke({"date_text": "2026-03-01"}) == "Sunday"
    assert weekday_of.invoke({"date_text": "2000-01-01"}) == "Saturday"


def test_days_until_weekday() -> None:
    assert days_until_weekday.invoke({"from_date": "2026-03-01", "weekday": "monday"}) == {
        "days": 1,
        "date": "2026-03-02",
    }
    assert days_until_weekday.invoke({"from_date": "2026-03-01", "weekday": "sunday"})["days"] == 7
    with pytest.raises(ValueError):
        days_until_weekday.invoke({"from_date": "2026-03-01", "weekday": "funday"})


def test_iso_week() -> None:
    assert iso_week.invoke({"date_text": "2026-01-01"}) == {
        "iso_year": 2026,
        "week": 1,
        "weekday": 4,
        "label": "2026-W01",
    }
    assert iso_week.invoke({"date_text": "2027-01-01"})["label"] == "2026-W53"


def test_business_days_between() -> None:
    assert business_days_between.invoke({"start_date": "2026-03-02", "end_date": "2026-03-16"}) == 10
    with_holidays = business_days_between.invoke(
        {"start_date": "2026-03-02", "end_date": "2026-03-16", "holidays": ["2026-03-04", "2026-03-07"]}
    )
    assert with_holidays == 9  # the 7th is a Saturday, so only the 4th is removed
    assert business_days_between.invoke({"start_date": "2026-03-07", "end_date": "2026-03-09"}) == 0
    assert business_days_between.invoke({"start_date": "2026-03-16", "end_date": "2026-03-02"}) == -10
    with pytest.raises(ValueError, match="holidays"):
        business_days_between.invoke(
            {"start_date": "2026-03-02", "end_date": "2026-03-16", "holidays": ["soon"]}
        )


@pytest.mark.parametrize(
    ("text", "seconds", "normalized"),
    [
        ("1h30m", 5400, "0d 01:30:00"),
        ("PT1H30M", 5400, "0d 01:30:00"),
        ("2 days, 4 hours and 5 minutes", 187500, "2d 04:05:00"),
        ("45 sec", 45, "0d 00:00:45"),
        ("P1W", 604800, "7d 00:00:00"),
        ("1.5 hours", 5400, "0d 01:30:00"),
    ],
)
def test_parse_duration(text: str, seconds: int, normalized: str) -> None:
    result = parse_duration.invoke({"text": text})
    assert result["total_seconds"] == seconds
    assert result["normalized"] == normalized


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="could not parse duration"):
        parse_duration.invoke({"text": "soon"})
    with pytest.raises(ValueError, match="unknown time unit"):
        parse_duration.invoke({"text": "3 fortnights"})


def test_convert_utc_offset() -> None:
    tokyo = convert_utc_offset.invoke(
        {"date_time": "2026-03-01T09:00", "from_offset": "+02:00", "to_offset": "+09:00"}
    )
    assert tokyo == "2026-03-01T16:00:00+09:00"
    india = convert_utc_offset.invoke(
        {"date_time": "2026-03-01T01:00", "from_offset": "UTC", "to_offset": "-0530"}
    )
    assert india == "2026-02-28T19:30:00-05:30"
    with pytest.raises(ValueError, match="from_offset must be a UTC offset"):
        convert_utc_offset.invoke({"date_time": "2026-03-01T09:00", "from_offset": "CET", "to_offset": "UTC"})


def test_age_from_birthdate() -> None:
    assert age_from_birthdate.invoke({"birthdate": "1990-06-15", "on_date": "2026-03-01"}) == {
        "years": 35,
        "months": 8,
        "days": 14,
        "total_days": 13043,
    }
    assert age_from_birthdate.invoke({"birthdate": "2000-02-29", "on_date": "2026-02-28"})["years"] == 25
    assert age_from_birthdate.invoke({"birthdate": "2000-02-29", "on_date": "2026-03-01"})["years"] == 26
    with pytest.raises(ValueError, match="before birthdate"):
        age_from_birthdate.invoke({"birthdate": "2026-01-01", "on_date": "2025-01-01"})


def test_convert_unix_timestamp_both_directions() -> None:
    assert convert_unix_timestamp.invoke({"value": "1767225600"}) == {
        "unix_seconds": 1767225600,
        "utc": "2026-01-01T00:00:00+00:00",
    }
    assert convert_unix_timestamp.invoke({"value": "2026-01-01T00:00:00+01:00"})["unix_seconds"] == 1767222000
    assert convert_unix_timestamp.invoke({"value": "1970-01-01"})["unix_seconds"] == 0
    with pytest.raises(ValueError, match="ISO date-time"):
        convert_unix_timestamp.invoke({"value": "yesterday"})


def test_month_calendar_info() -> None:
    assert month_calendar_info.invoke({"year": 2024, "month": 2}) == {
        "days_in_month": 29,
        "leap_year": True,
        "first_day": "2024-02-01",
        "first_weekday": "Thursday",
        "last_day": "2024-02-29",
        "last_weekday": "Thursday",
    }
    assert month_calendar_info.invoke({"year": 1900, "month": 2})["days_in_month"] == 28
    with pytest.raises(ValueError, match="month must be between 1 and 12"):
        month_calendar_info.invoke({"year": 2024, "month": 13})


def test_nth_weekday_of_month() -> None:
    thanksgiving = nth_weekday_of_month.invoke({"year": 2026, "month": 11, "weekday": "thursday", "n": 4})
    assert thanksgiving == "2026-11-26"
    assert (
        nth_weekday_of_month.invoke({"year": 2026, "month": 5, "weekday": "monday", "n": -1}) == "2026-05-25"
    )
    with pytest.raises(ValueError, match="only 4"):
        nth_weekday_of_month.invoke({"year": 2026, "month": 2, "weekday": "monday", "n": 5})
