"""Tests for the encoding pack."""

import pytest

from tools.encoding import (
    base64_decode,
    base64_encode,
    convert_number_base,
    roman_numeral,
    sha256_hex,
    url_decode,
    url_encode,
    uuid5_from_name,
)


def test_base64_encode() -> None:
    assert base64_encode.invoke({"text": "héllo"}) == "aMOpbGxv"
    assert base64_encode.invoke({"text": "?>?"}) == "Pz4/"
    assert base64_encode.invoke({"text": "?>?", "url_safe": True}) == "Pz4_"


def test_base64_decode() -> None:
    assert base64_decode.invoke({"encoded": "aMOpbGxv"}) == "héllo"
    assert base64_decode.invoke({"encoded": "Pz4_"}) == "?>?"
    assert base64_decode.invoke({"encoded": "aGk"}) == "hi"  # missing padding is tolerated
    with pytest.raises(ValueError, match="not valid Base64"):
        base64_decode.invoke({"encoded": "@@@"})
    with pytest.raises(ValueError, match="not UTF-8 text"):
        base64_decode.invoke({"encoded": "/w=="})


def test_url_encode() -> None:
    assert url_encode.invoke({"text": "café au lait & more"}) == "caf%C3%A9%20au%20lait%20%26%20more"
    assert url_encode.invoke({"text": "a b/c", "space_as_plus": True}) == "a+b%2Fc"


def test_url_decode() -> None:
    assert url_decode.invoke({"encoded": "caf%C3%A9+au%20lait"}) == "café au lait"
    with pytest.raises(ValueError, match="not valid UTF-8"):
        url_decode.invoke({"encoded": "%FF"})


def test_sha256_hex() -> None:
    assert (
        sha256_hex.invoke({"text": "abc"})
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert (
        sha256_hex.invoke({"text": ""}) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_uuid5_from_name() -> None:
    assert uuid5_from_name.invoke({"name": "python.org"}) == "886313e1-3b8a-5372-9b90-0c9aee199e5d"
    url_uuid = uuid5_from_name.invoke({"name": "https://example.com/", "namespace": "url"})
    assert url_uuid == uuid5_from_name.invoke({"name": "https://example.com/", "namespace": "url"})
    assert url_uuid[14] == "5"
    with pytest.raises(ValueError, match="non-empty"):
        uuid5_from_name.invoke({"name": ""})


@pytest.mark.parametrize(
    ("number", "from_base", "to_base", "expected"),
    [
        ("FF", "hex", "decimal", "255"),
        ("255", "decimal", "binary", "11111111"),
        ("0b1010", "binary", "hex", "A"),
        ("-0o755", "octal", "decimal", "-493"),
        ("1_000", "decimal", "octal", "1750"),
    ],
)
def test_convert_number_base(number: str, from_base: str, to_base: str, expected: str) -> None:
    assert (
        convert_number_base.invoke({"number": number, "from_base": from_base, "to_base": to_base}) == expected
    )


def test_convert_number_base_rejects_bad_digits() -> None:
    with pytest.raises(ValueError, match="not a valid hex integer"):
        convert_number_base.invoke({"number": "12G", "from_base": "hex", "to_base": "decimal"})


def test_roman_numeral() -> None:
    assert roman_numeral.invoke({"value": "2026"}) == {"integer": 2026, "roman": "MMXXVI"}
    assert roman_numeral.invoke({"value": "mcmxciv"}) == {"integer": 1994, "roman": "MCMXCIV"}
    assert roman_numeral.invoke({"value": "3999"})["roman"] == "MMMCMXCIX"
    with pytest.raises(ValueError, match="did you mean IV"):
        roman_numeral.invoke({"value": "IIII"})
    with pytest.raises(ValueError, match="between 1 and 3999"):
        roman_numeral.invoke({"value": "4000"})
    with pytest.raises(ValueError, match="neither an integer nor a Roman numeral"):
        roman_numeral.invoke({"value": "12ab"})
