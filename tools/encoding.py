"""Encoding pack: Base64, URL percent-encoding, hashing, UUIDs, number bases and Roman numerals."""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
import urllib.parse
import uuid
from typing import Annotated, Literal

from langchain_core.tools import BaseTool, tool

from tools._common import pack

MAX_INPUT_CHARS = 1_000_000


def _limit(name: str, value: str) -> str:
    if len(value) > MAX_INPUT_CHARS:
        raise ValueError(f"{name} is {len(value)} characters; the limit is {MAX_INPUT_CHARS}")
    return value


@tool
def base64_encode(
    text: Annotated[str, "Plain text to encode (encoded as UTF-8 bytes first)"],
    url_safe: Annotated[bool, "Use the URL-safe alphabet with - and _ instead of + and /"] = False,
) -> str:
    """Encode a text as Base64 (standard or URL-safe alphabet). Returns the Base64 string.

    Example: "base64-encode 'user:secret'" -> base64_encode(text="user:secret")
    """
    data = _limit("text", text).encode("utf-8")
    return (base64.urlsafe_b64encode(data) if url_safe else base64.b64encode(data)).decode("ascii")


@tool
def base64_decode(encoded: Annotated[str, "Base64 string (standard or URL-safe, padding optional)"]) -> str:
    """Decode a Base64 string back into its text; invalid Base64 or binary content is an error. Returns the
    decoded text.

    Example: "decode d2VsY29tZQ==" -> base64_decode(encoded="d2VsY29tZQ==")
    """
    cleaned = re.sub(r"\s+", "", _limit("encoded", encoded)).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        data = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"encoded is not valid Base64: {encoded[:60]!r}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the Base64 decodes to binary data that is not UTF-8 text") from None


@tool
def url_encode(
    text: Annotated[str, "Text to place inside a URL, e.g. a search term or parameter value"],
    space_as_plus: Annotated[bool, "Encode spaces as '+' (HTML form style) instead of '%20'"] = False,
) -> str:
    """URL-encode (percent-encode) a text so it is safe in a link's query or path, e.g. 'a b&c' becomes
    'a%20b%26c'. Returns the encoded text.

    Example: "URL-encode 'fish & chips'" -> url_encode(text="fish & chips")
    """
    body = _limit("text", text)
    return urllib.parse.quote_plus(body, safe="") if space_as_plus else urllib.parse.quote(body, safe="")


@tool
def url_decode(encoded: Annotated[str, "Percent-encoded text such as 'caf%C3%A9%20au+lait'"]) -> str:
    """Decode URL-encoded (percent-encoded) text such as 'caf%C3%A9%20au+lait' back into readable characters.
    Returns the decoded text.

    Example: "decode the URL text 'caf%C3%A9%20au+lait'" -> url_decode(encoded="caf%C3%A9%20au+lait")
    """
    try:
        return urllib.parse.unquote_plus(_limit("encoded", encoded), errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"encoded {encoded[:60]!r} has percent escapes that are not valid UTF-8") from None


@tool
def sha256_hex(text: Annotated[str, "Text to fingerprint (hashed as UTF-8 bytes)"]) -> str:
    """SHA-256 hash (checksum, fingerprint) of a text. Returns the 64-character lowercase hex digest.

    Example: "hash 'build 7' with SHA256" -> sha256_hex(text="build 7")
    """
    return hashlib.sha256(_limit("text", text).encode("utf-8")).hexdigest()


Namespace = Literal["dns", "url", "oid", "x500"]
_NAMESPACES = {"dns": uuid.NAMESPACE_DNS, "url": uuid.NAMESPACE_URL, "oid": uuid.NAMESPACE_OID,
               "x500": uuid.NAMESPACE_X500}  # fmt: skip


@tool
def uuid5_from_name(
    name: Annotated[str, "Name to derive the identifier from, e.g. 'example.com'"],
    namespace: Annotated[Namespace, "RFC 4122 namespace the name belongs to"] = "dns",
) -> str:
    """Make a name-based UUID (version 5) from a name and a namespace; the same name always gives the same
    UUID. Returns the UUID.

    Example: "make a stable UUID for example.com" -> uuid5_from_name(name="example.com", namespace="dns")
    """
    if not name:
        raise ValueError("name must be a non-empty string")
    return str(uuid.uuid5(_NAMESPACES[namespace], _limit("name", name)))


_BASES = {"binary": 2, "octal": 8, "decimal": 10, "hex": 16}
BaseName = Literal["binary", "octal", "decimal", "hex"]


def _format_int(value: int, base: int) -> str:
    sign, magnitude = ("-", -value) if value < 0 else ("", value)
    formatted = {2: f"{magnitude:b}", 8: f"{magnitude:o}", 10: f"{magnitude:d}", 16: f"{magnitude:X}"}[base]
    return sign + formatted


@tool
def convert_number_base(
    number: Annotated[str, "Integer written in the source base, e.g. 'FF', '0b1010', '-755'"],
    from_base: Annotated[BaseName, "Base the number is written in"],
    to_base: Annotated[BaseName, "Base to rewrite it in"],
) -> str:
    """Convert a whole number between decimal, binary, octal and hexadecimal (hex), e.g. 255 is 11111111 in
    binary and FF in hex. Returns the number written in the new base.

    Example: "write 0o755 as a decimal number" -> convert_number_base(number="0o755", from_base="octal",
    to_base="decimal")
    """
    raw = number.strip().replace("_", "").replace(" ", "")
    if not raw or len(raw) > 1000:
        raise ValueError(f"number must be 1-1000 digits, got {number!r}")
    prefixes = {2: "0b", 8: "0o", 16: "0x"}
    base = _BASES[from_base]
    body = raw.lstrip("+-")
    if base in prefixes and body.lower().startswith(prefixes[base]):
        body = body[2:]
    try:
        value = int(body, base)
    except ValueError:
        raise ValueError(f"{number!r} is not a valid {from_base} integer") from None
    return _format_int(-value if raw.startswith("-") else value, _BASES[to_base])


_ROMAN = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"), (40, "XL"),
          (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]  # fmt: skip


def _to_roman(n: int) -> str:
    out = []
    for value, symbol in _ROMAN:
        count, n = divmod(n, value)
        out.append(symbol * count)
    return "".join(out)


_ROMAN_LONGEST = len("MMMDCCCLXXXVIII")  # 3888: the longest numeral in 1-3999
# A canonical numeral of 1-3999: thousands, hundreds, tens and ones, each written once in its one form
_CANONICAL_ROMAN = re.compile(r"M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})")


def _roman_value(raw: str) -> int:
    """The value of a numeral written with additive and subtractive pairs, whatever its form."""
    values = {"M": 1000, "D": 500, "C": 100, "L": 50, "X": 10, "V": 5, "I": 1}
    total = 0
    for i, ch in enumerate(raw):
        value = values[ch]
        total += -value if i + 1 < len(raw) and values[raw[i + 1]] > value else value
    return total


@tool
def roman_numeral(
    value: Annotated[str, "Either an integer 1-3999 (e.g. '2026') or a Roman numeral (e.g. 'MMXXVI')"],
) -> dict[str, int | str]:
    """Convert a number to Roman numerals or Roman numerals to a number (1 to 3999), e.g. 2026 is MMXXVI.
    Returns both forms.

    Example: "the film says MCMXCVII; which year?" -> roman_numeral(value="MCMXCVII")
    """
    raw = value.strip().upper()
    if re.fullmatch(r"[+-]?[0-9]+", raw):
        if len(raw) > 6 or not 1 <= int(raw) <= 3999:
            raise ValueError(
                f"integers must be between 1 and 3999 for Roman numerals, got {value.strip()[:20]}"
            )
        n = int(raw)
        return {"integer": n, "roman": _to_roman(n)}
    if not raw or not re.fullmatch(r"[MDCLXVI]+", raw):
        raise ValueError(f"value {value[:60]!r} is neither an integer nor a Roman numeral (letters MDCLXVI)")
    if len(raw) > _ROMAN_LONGEST:
        raise ValueError(
            f"{raw[:20]}... is {len(raw)} letters; Roman numerals of 1-3999 have at most {_ROMAN_LONGEST}"
        )
    if _CANONICAL_ROMAN.fullmatch(raw):
        return {"integer": _roman_value(raw), "roman": raw}
    if re.fullmatch(r"M{4,}.*", raw):
        raise ValueError(f"{raw!r} is 4000 or more; Roman numerals here go from 1 to 3999 (MMMCMXCIX)")
    meant = _roman_value(raw)
    hint = f" (did you mean {_to_roman(meant)}?)" if 1 <= meant <= 3999 and _repeats_only(raw) else ""
    raise ValueError(
        f"{raw!r} is not a well-formed Roman numeral{hint}; write each of thousands, hundreds, tens and ones "
        "once, e.g. 99 is XCIX and 1994 is MCMXCIV"
    )


def _repeats_only(raw: str) -> bool:
    """Whether `raw` adds letters up in descending order (IIII, VV): then its intended value is clear."""
    order = "MDCLXVI"
    return all(order.index(a) <= order.index(b) for a, b in itertools.pairwise(raw))


TOOLS: list[BaseTool] = pack(
    base64_encode,
    base64_decode,
    url_encode,
    url_decode,
    sha256_hex,
    uuid5_from_name,
    convert_number_base,
    roman_numeral,
)
