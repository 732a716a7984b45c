"""Tests for the extraction pack."""

import pytest

from tools.extract import (
    extract_dates,
    extract_emails,
    extract_hashtags_and_mentions,
    extract_numbers,
    extract_urls,
    regex_find_all,
)


def test_extract_emails() -> None:
    text = "Contact ana.li@example.com or BOB+x@mail.co.uk; ana.li@example.com again. not@valid"
    assert extract_emails.invoke({"text": text}) == ["ana.li@example.com", "BOB+x@mail.co.uk"]
    assert extract_emails.invoke({"text": "no addresses here"}) == []


def test_extract_emails_with_letters_beyond_ascii() -> None:
    # an address with an accented letter was missed whole: "No email addresses found"
    text = "Write to José.Núñez@example.com, or to ann_b@bücher.de. Not: icon@2x or me@@example.com"
    assert extract_emails.invoke({"text": text}) == ["José.Núñez@example.com", "ann_b@bücher.de"]


def test_extract_urls() -> None:
    text = "See https://example.com/a?b=1, and (www.test.org/page). Also http://x.io."
    assert extract_urls.invoke({"text": text}) == [
        "https://example.com/a?b=1",
        "www.test.org/page",
        "http://x.io",
    ]


def test_extract_numbers() -> None:
    text = "Paid $1,250.50 for 3 items at -4.5 degrees; 2e3 units, 25% off."
    assert extract_numbers.invoke({"text": text}) == [1250.5, 3.0, -4.5, 2000.0, 25.0]
    assert extract_numbers.invoke({"text": "range 5-3 and .75"}) == [5.0, 3.0, 0.75]
    assert extract_numbers.invoke({"text": "nothing"}) == []


def test_regex_find_all() -> None:
    text = "See ABC-123 and xyz-9 and DEF-45"
    assert regex_find_all.invoke({"pattern": r"[A-Z]{3}-\d+", "text": text}) == ["ABC-123", "DEF-45"]
    assert regex_find_all.invoke({"pattern": r"[a-z]{3}-\d+", "text": text, "ignore_case": True}) == [
        "ABC-123",
        "xyz-9",
        "DEF-45",
    ]
    assert regex_find_all.invoke({"pattern": r"([a-z]+)=(\d+)", "text": "a=1 b=22"}) == [
        ["a", "1"],
        ["b", "22"],
    ]
    assert regex_find_all.invoke({"pattern": r"(\d)", "text": "1 2 3", "max_matches": 2}) == ["1", "2"]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(a+)+$", "nests repeated groups"),
        ("(\\w*)*", "nests repeated groups"),
        ("(", "invalid regular"),
        ("", "pattern must be"),
        ("a" * 201, "pattern must be"),
    ],
)
def test_regex_find_all_guards(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        regex_find_all.invoke({"pattern": pattern, "text": "aaaa"})


def test_extract_hashtags_and_mentions() -> None:
    post = "Loving #Python3 with @alice and @bob_99! mail me at x@y.com #Python3 #1"
    assert extract_hashtags_and_mentions.invoke({"text": post}) == {
        "hashtags": ["Python3"],
        "mentions": ["alice", "bob_99"],
    }


def test_extract_dates() -> None:
    text = (
        "Due 2026-03-01, kickoff on 2 March 2026, review March 15th, 2026 and Sept. 3, 2027; bad 2026-02-30."
    )
    assert extract_dates.invoke({"text": text}) == ["2026-03-01", "2026-03-02", "2026-03-15", "2027-09-03"]
    assert extract_dates.invoke({"text": "no dates"}) == []
