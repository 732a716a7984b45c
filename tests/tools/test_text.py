"""Tests for the text pack."""

import pytest

from tools.text import (
    caesar_cipher,
    convert_case,
    count_occurrences,
    is_palindrome,
    levenshtein_distance,
    readability_score,
    reverse_words,
    slugify,
    text_statistics,
    truncate_text,
    word_frequency,
    wrap_text,
)


def test_text_statistics() -> None:
    stats = text_statistics.invoke({"text": "Hello world. How are you today?\n\nFine, thanks!"})
    assert stats == {
        "words": 8,
        "characters": 46,
        "characters_no_spaces": 38,
        "sentences": 3,
        "paragraphs": 2,
        "avg_word_length": 4.25,
        "avg_sentence_length": 2.67,
    }
    assert text_statistics.invoke({"text": ""})["words"] == 0


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        # a quoted sentence at the end was 0 sentences, and its average sentence length 0.0
        ("Count the words in this sentence: 'I really do like long walks on sunny days.'", 1),
        ("'Hi there.' 'Bye now.'", 2),
        ("(This is one.) And two.", 2),
        ("She said \u201cyes.\u201d Then she left.", 2),
        ('He asked "why?" and left.', 1),  # a quoted question inside a sentence does not end it
        ("No closing mark at all", 1),
    ],
)
def test_sentences_ending_in_a_closing_quote_or_bracket_are_counted(text: str, sentences: int) -> None:
    stats = text_statistics.invoke({"text": text})
    assert stats["sentences"] == sentences
    assert stats["avg_sentence_length"] == round(stats["words"] / sentences, 2)


def test_word_frequency() -> None:
    top = word_frequency.invoke({"text": "The cat and the hat. The cat sat.", "top_n": 2})
    assert top == [{"word": "cat", "count": 2}, {"word": "hat", "count": 1}]
    with_stopwords = word_frequency.invoke(
        {"text": "The cat and the hat.", "top_n": 1, "skip_stopwords": False}
    )
    assert with_stopwords == [{"word": "the", "count": 2}]
    with pytest.raises(ValueError, match="top_n"):
        word_frequency.invoke({"text": "x", "top_n": 0})


def test_count_occurrences() -> None:
    text = "Cat, cat, category, CAT"
    assert count_occurrences.invoke({"text": text, "target": "cat"}) == 4
    assert count_occurrences.invoke({"text": text, "target": "cat", "whole_word": True}) == 3
    assert count_occurrences.invoke({"text": text, "target": "cat", "case_sensitive": True}) == 2
    assert count_occurrences.invoke({"text": "a.b.c", "target": "."}) == 2
    with pytest.raises(ValueError, match="non-empty"):
        count_occurrences.invoke({"text": text, "target": ""})


def test_slugify() -> None:
    assert slugify.invoke({"text": "Crème Brûlée: A How-To!"}) == "creme-brulee-a-how-to"
    assert slugify.invoke({"text": "Hello big wide world", "max_length": 12, "separator": "_"}) == "hello_big"
    assert slugify.invoke({"text": "!!!"}) == ""


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("upper", "THE LORD OF THE RINGS"),
        ("lower", "the lord of the rings"),
        ("title", "The Lord of the Rings"),
        ("sentence", "The lord of the rings"),
        ("snake", "the_lord_of_the_rings"),
        ("camel", "theLordOfTheRings"),
        ("pascal", "TheLordOfTheRings"),
        ("kebab", "the-lord-of-the-rings"),
        ("constant", "THE_LORD_OF_THE_RINGS"),
    ],
)
def test_convert_case(style: str, expected: str) -> None:
    assert convert_case.invoke({"text": "the lord OF the rings", "style": style}) == expected


def test_convert_case_splits_identifiers() -> None:
    assert (
        convert_case.invoke({"text": "myHTTPServer getURLValue", "style": "snake"})
        == "my_http_server_get_url_value"
    )


def test_reverse_words() -> None:
    assert reverse_words.invoke({"text": "one two  three"}) == "three two one"


def test_truncate_text() -> None:
    assert truncate_text.invoke({"text": "The quick brown fox jumps", "max_chars": 12}) == "The quick..."
    assert truncate_text.invoke({"text": "short", "max_chars": 12}) == "short"
    assert truncate_text.invoke({"text": "abcdefghij", "max_chars": 6, "ellipsis": "…"}) == "abcde…"
    with pytest.raises(ValueError, match="max_chars must be at least 4"):
        truncate_text.invoke({"text": "abc", "max_chars": 2})


def test_levenshtein_distance() -> None:
    assert levenshtein_distance.invoke({"first": "kitten", "second": "sitting"}) == {
        "distance": 3,
        "similarity": 0.5714,
    }
    assert levenshtein_distance.invoke({"first": "", "second": ""}) == {"distance": 0, "similarity": 1.0}
    assert levenshtein_distance.invoke({"first": "abc", "second": ""})["distance"] == 3
    with pytest.raises(ValueError, match="limit"):
        levenshtein_distance.invoke({"first": "a" * 1001, "second": "b"})


def test_readability_score() -> None:
    easy = readability_score.invoke({"text": "The cat sat on the mat. It was a sunny day."})
    hard = readability_score.invoke(
        {
            "text": "Institutional reimbursement considerations necessitate comprehensive documentation "
            "of extraordinary expenditures, notwithstanding organisational responsibilities."
        }
    )
    assert easy["flesch_reading_ease"] > 90
    assert easy["level"] == "very easy"
    assert hard["flesch_reading_ease"] < 30
    assert hard["level"] == "very difficult"
    assert hard["flesch_kincaid_grade"] > easy["flesch_kincaid_grade"]
    with pytest.raises(ValueError, match="at least one English word"):
        readability_score.invoke({"text": "123 456"})


def test_caesar_cipher() -> None:
    assert caesar_cipher.invoke({"text": "Hello, World!"}) == "Uryyb, Jbeyq!"
    assert caesar_cipher.invoke({"text": "Uryyb", "decode": True}) == "Hello"
    assert caesar_cipher.invoke({"text": "xyz", "shift": 3}) == "abc"
    assert caesar_cipher.invoke({"text": "Khoor", "shift": 3, "decode": True}) == "Hello"


def test_is_palindrome() -> None:
    assert is_palindrome.invoke({"text": "A man, a plan, a canal: Panama"}) is True
    assert is_palindrome.invoke({"text": "Ésope reste ici et se repose"}) is True
    assert is_palindrome.invoke({"text": "palindrome"}) is False
    with pytest.raises(ValueError, match="at least one letter"):
        is_palindrome.invoke({"text": "!!"})


def test_wrap_text() -> None:
    assert (
        wrap_text.invoke({"text": "aaa bbb ccc ddd eee fff ggg", "width": 11})
        == "aaa bbb ccc\nddd eee fff\nggg"
    )
    assert wrap_text.invoke({"text": "one\n\n two  three", "width": 20}) == "one\n\ntwo three"
    with pytest.raises(ValueError, match="width"):
        wrap_text.invoke({"text": "x", "width": 5})
