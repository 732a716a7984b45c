"""Extraction pack: pull emails, links, numbers, dates, tags and regex matches out of free text."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from langchain_core.tools import BaseTool, tool

from tools._common import pack

MAX_TEXT_CHARS = 200_000
MAX_PATTERN_CHARS = 200
MAX_MATCHES = 1000

# Letters of any script, in the name and the domain ("josé.núñez@bücher.de" is an address; ASCII-only lost it)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.%+-]+@(?:(?:[^\W_]|-)+\.)+[^\W\d_]{2,}\b")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`]+", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
_HASHTAG = re.compile(r"(?<![\w#])#([A-Za-z_][\w]*)")
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_]{1,30})\b(?!\.\w)")
_MONTHS = {
    m: i
    for i, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",),
         ("jun", "june"), ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"),
         ("oct", "october"), ("nov", "november"), ("dec", "december")],
        start=1,
    )
    for m in names
}  # fmt: skip
_MONTH_ALT = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_DMY = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_MONTH_ALT})\.?,?\s+(\d{{4}})\b", re.IGNORECASE)
_MDY = re.compile(rf"\b({_MONTH_ALT})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.IGNORECASE)


def _text(value: str) -> str:
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"text is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}")
    return value


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


@tool
def extract_emails(text: Annotated[str, "Text that may contain email addresses"]) -> list[str]:
    """Find the email addresses in a text, such as a message, a sentence or a signature. Returns each address
    once, in order of appearance.

    Example: "pull the emails out of 'write to ana@example.com or sales@shop.co.uk'" ->
    extract_emails(text="write to ana@example.com or sales@shop.co.uk")
    """
    return _unique(_EMAIL.findall(_text(text)))


@tool
def extract_urls(text: Annotated[str, "Text that may contain web links"]) -> list[str]:
    """Find the web links (URLs starting with http, https or www.) in a text, without trailing punctuation.
    Returns each link once, in order.

    Example: "which sites are linked in 'docs at https://docs.acme.io, blog www.acme.io/news'" ->
    extract_urls(text="docs at https://docs.acme.io, blog www.acme.io/news")
    """
    found = [m.rstrip(".,;:!?)]}") for m in _URL.findall(_text(text))]
    return _unique([u for u in found if len(u) > 4])


@tool
def extract_numbers(
    text: Annotated[str, "Text containing numbers, e.g. 'Paid $1,250.50 for 3 items'"],
) -> list[float]:
    """Pull every number out of a text, like prices, amounts or figures, with decimals, minus signs, thousands
    separators and exponents. Returns the numbers in order.

    Example: "list the numbers in 'Paid $1,249.95 for 3 items on day 17'" -> extract_numbers(text="Paid
    $1,249.95 for 3 items on day 17")
    """
    values = []
    for raw in _NUMBER.findall(_text(text)):
        cleaned = raw.replace(",", "").replace("−", "-")
        if cleaned.strip("+-") in ("", "."):
            continue
        try:
            values.append(float(cleaned))
        except ValueError:
            continue
    return values


def _check_pattern(pattern: str) -> re.Pattern[str]:
    if not pattern or len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"pattern must be 1-{MAX_PATTERN_CHARS} characters, got {len(pattern)}")
    if re.search(r"\([^()]*[+*}][^()]*\)\s*[+*{]", pattern):
        raise ValueError(f"pattern {pattern!r} nests repeated groups like (a+)+, which can hang; simplify it")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


@tool
def regex_find_all(
    pattern: Annotated[str, r"Python regular expression, e.g. [A-Z]{3}-\d+ for ticket IDs like ABC-123"],
    text: Annotated[str, "Text to search"],
    ignore_case: Annotated[bool, "Match without regard to upper/lower case"] = False,
    max_matches: Annotated[int, f"Stop after this many matches (1-{MAX_MATCHES})"] = 100,
) -> list[str | list[str]]:
    """Find every match of a regular expression (regex pattern) in a text, such as order codes or ticket IDs.
    Returns the matches, or their capture groups.

    Example: "find the ticket IDs like ABC-123 in 'fixed ABC-123 and XYZ-9'" ->
    regex_find_all(pattern="[A-Z]{3}-[0-9]+", text="fixed ABC-123 and XYZ-9")
    """
    compiled = _check_pattern(pattern)
    if ignore_case:
        compiled = re.compile(pattern, re.IGNORECASE)
    if not 1 <= max_matches <= MAX_MATCHES:
        raise ValueError(f"max_matches must be between 1 and {MAX_MATCHES}, got {max_matches}")
    results: list[str | list[str]] = []
    for m in compiled.finditer(_text(text)):
        if compiled.groups == 0:
            results.append(m.group(0))
        elif compiled.groups == 1:
            results.append(m.group(1) or "")
        else:
            results.append([g or "" for g in m.groups()])
        if len(results) >= max_matches:
            break
    return results


@tool
def extract_hashtags_and_mentions(
    text: Annotated[str, "Social media post or chat message"],
) -> dict[str, list[str]]:
    """Find the #hashtags and @mentions (user handles) in a social media post or chat message. Returns both
    lists, without the # and @.

    Example: "which hashtags and people are tagged in 'Great day with @amy_k #beach #summer'?" ->
    extract_hashtags_and_mentions(text="Great day with @amy_k #beach #summer")
    """
    body = _text(text)
    return {"hashtags": _unique(_HASHTAG.findall(body)), "mentions": _unique(_MENTION.findall(body))}


@tool
def extract_dates(
    text: Annotated[str, "Text mentioning dates like '2026-03-01', '1 March 2026' or 'March 1st, 2026'"],
) -> list[str]:
    """Find the dates written in a text, like 2026-03-01, 1 March 2026 or March 1st, 2026. Returns them as
    YYYY-MM-DD, in order of appearance.

    Example: "which dates does 'Kickoff on March 3, 2026; review on 2026-04-15' mention?" ->
    extract_dates(text="Kickoff on March 3, 2026; review on 2026-04-15")
    """
    body = _text(text)
    found: list[tuple[int, str]] = []
    for m in _ISO_DATE.finditer(body):
        found.append((m.start(), _make_date(int(m.group(1)), int(m.group(2)), int(m.group(3)))))
    for m in _DMY.finditer(body):
        month = _MONTHS[m.group(2).lower()]
        found.append((m.start(), _make_date(int(m.group(3)), month, int(m.group(1)))))
    for m in _MDY.finditer(body):
        month = _MONTHS[m.group(1).lower()]
        found.append((m.start(), _make_date(int(m.group(3)), month, int(m.group(2)))))
    return _unique([iso for _, iso in sorted(found) if iso])


def _make_date(year: int, month: int, day: int) -> str:
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return ""  # impossible dates like 31 February are skipped


TOOLS: list[BaseTool] = pack(
    extract_emails,
    extract_urls,
    extract_numbers,
    regex_find_all,
    extract_hashtags_and_mentions,
    extract_dates,
)
