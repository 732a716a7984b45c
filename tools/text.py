"""Text pack: statistics, transformations and comparisons of plain text."""

from __future__ import annotations

import re
import textwrap
import unicodedata
from collections import Counter
from typing import Annotated, Literal

from langchain_core.tools import BaseTool, tool

from tools._common import pack

MAX_TEXT_CHARS = 200_000
MAX_COMPARE_CHARS = 1_000

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
# A sentence ends at . ! or ? before a space or the end; closing quotes or brackets may follow it when the
# text ends there or a new sentence starts ("'Hi there.' 'Bye now.'" is two, 'asked "why?" and left' one)
_SENTENCE_END = re.compile(r"[.!?]+(?:(?=\s|$)|[\"'’”)\]]+(?=\s*$|\s+[\"'‘“(\[]?[A-Z]))")
_STOPWORDS = frozenset(
    (
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "do", "does", "did", "for", "from", "has",
        "have", "he", "her", "his", "i", "if", "in", "into", "is", "it", "its", "no", "not", "of", "on", "or",
        "our", "she", "so", "that", "the", "their", "them", "they", "this", "to", "was", "we", "were", "will",
        "with", "you", "your",
    )
)  # fmt: skip


def _text(name: str, value: str, limit: int = MAX_TEXT_CHARS) -> str:
    if len(value) > limit:
        raise ValueError(f"{name} is {len(value)} characters long; the limit is {limit}")
    return value


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _sentence_count(text: str) -> int:
    stripped = text.strip()
    if not stripped:
        return 0
    ends = len(_SENTENCE_END.findall(stripped))
    return ends + (0 if re.search(r"[.!?]\W*$", stripped) else 1)


@tool
def text_statistics(
    text: Annotated[str, "The text whose words, characters and sentences to count"],
) -> dict[str, int | float]:
    """Count the words, characters, sentences and paragraphs of a text: how long a text is, or how many
    letters a word has. Returns each count by name (characters with and without spaces) and the average word
    and sentence length.

    Example: "how many words and characters are in 'Better late than never'?" -> text_statistics(text="Better
    late than never")
    """
    body = _text("text", text)
    words = _words(body)
    sentences = _sentence_count(body)
    paragraphs = len([p for p in re.split(r"\n\s*\n", body) if p.strip()])
    return {
        "words": len(words),
        "characters": len(body),
        "characters_no_spaces": len(re.sub(r"\s", "", body)),
        "sentences": sentences,
        "paragraphs": paragraphs,
        "avg_word_length": round(sum(len(w) for w in words) / len(words), 2) if words else 0.0,
        "avg_sentence_length": round(len(words) / sentences, 2) if sentences else 0.0,
    }


@tool
def word_frequency(
    text: Annotated[str, "The text to analyse"],
    top_n: Annotated[int, "How many of the most frequent words to return (1-500)"] = 10,
    skip_stopwords: Annotated[bool, "Ignore common English filler words such as 'the', 'and', 'of'"] = True,
) -> list[dict[str, str | int]]:
    """The most common words (keywords) of a text and how often each occurs, ignoring case and optionally
    filler words like 'the'. Returns word and count pairs, most frequent first.

    Example: "what are the 2 most common words in 'the cat saw the other cat and the dog'?" ->
    word_frequency(text="the cat saw the other cat and the dog", top_n=2)
    """
    if not 1 <= top_n <= 500:
        raise ValueError(f"top_n must be between 1 and 500, got {top_n}")
    words = [w.lower() for w in _words(_text("text", text))]
    counts = Counter(w for w in words if not (skip_stopwords and w in _STOPWORDS))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]
    return [{"word": w, "count": c} for w, c in ranked]


@tool
def count_occurrences(
    text: Annotated[str, "The text to search in"],
    target: Annotated[str, "The letter, word or phrase to look for"],
    case_sensitive: Annotated[bool, "Match upper/lower case exactly"] = False,
    whole_word: Annotated[bool, "Match whole words only, not parts of longer ones"] = False,
) -> int:
    """How often one given letter, word or phrase (the target) appears in a text, like the letter s in
    'Mississippi'. Returns that one number; the total words or characters of a text come from text_statistics.

    Example: "count the o characters in 'bookkeeping notebook'" -> count_occurrences(text="bookkeeping
    notebook", target="o")
    """
    body = _text("text", text)
    if not target:
        raise ValueError("target must be a non-empty string")
    pattern = re.escape(target)
    if whole_word:
        pattern = rf"(?<!\w){pattern}(?!\w)"
    return len(re.findall(pattern, body, 0 if case_sensitive else re.IGNORECASE))


@tool
def slugify(
    text: Annotated[str, "Title or phrase to turn into a slug, e.g. 'Crème Brûlée: A How-To!'"],
    separator: Annotated[Literal["-", "_"], "Character placed between words"] = "-",
    max_length: Annotated[int, "Maximum slug length (1-200); cut at a word boundary"] = 80,
) -> str:
    """Make a URL slug from a title or phrase: lower-case words joined by hyphens, accents and punctuation
    removed, e.g. 'Crème Brûlée: A How-To!' becomes 'creme-brulee-a-how-to'. Returns the slug.

    Example: "the web address part for a post called 'Spring Sale: 30% Off!'" -> slugify(text="Spring Sale:
    30% Off!")
    """
    if not 1 <= max_length <= 200:
        raise ValueError(f"max_length must be between 1 and 200, got {max_length}")
    ascii_text = unicodedata.normalize("NFKD", _text("text", text)).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for w in words:
        candidate = f"{slug}{separator}{w}" if slug else w
        if len(candidate) > max_length:
            break
        slug = candidate
    return slug or (words[0][:max_length] if words else "")


CaseStyle = Literal["upper", "lower", "title", "sentence", "snake", "camel", "pascal", "kebab", "constant"]
_SMALL_WORDS = frozenset(
    ("a", "an", "and", "as", "at", "but", "by", "for", "in", "nor", "of", "on", "or", "the", "to", "vs")
)


@tool
def convert_case(
    text: Annotated[str, "Text or identifier to re-case"],
    style: Annotated[
        CaseStyle,
        "upper, lower, title (headline), sentence, snake, camel, pascal, kebab or constant (UPPER_SNAKE)",
    ],
) -> str:
    """Change the letter case of a text to uppercase (capitals), lowercase, Title Case or Sentence case, or
    join its words as snake_case, camelCase, PascalCase, kebab-case or CONSTANT_CASE. Returns the same words
    re-cased; the wording itself never changes.

    Example: "put 'quarterly sales report' in title case" -> convert_case(text="quarterly sales report",
    style="title")
    """
    body = _text("text", text)
    if style == "upper":
        return body.upper()
    if style == "lower":
        return body.lower()
    if style == "sentence":
        lowered = body.lower()
        return re.sub(r"(^\s*|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), lowered)
    if style == "title":
        tokens = body.split(" ")
        out = []
        for i, tok in enumerate(tokens):
            low = tok.lower()
            keep_small = 0 < i < len(tokens) - 1 and low in _SMALL_WORDS
            out.append(low if keep_small else low[:1].upper() + low[1:])
        return " ".join(out)
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", body))
    parts = [p.lower() for p in re.findall(r"[A-Za-z0-9]+", spaced)]
    if style == "snake":
        return "_".join(parts)
    if style == "kebab":
        return "-".join(parts)
    if style == "constant":
        return "_".join(parts).upper()
    capped = [p.capitalize() for p in parts]
    if style == "pascal":
        return "".join(capped)
    return (parts[0] + "".join(capped[1:])) if parts else ""


@tool
def reverse_words(text: Annotated[str, "Sentence whose word order should be reversed"]) -> str:
    """Reverse the order of the words in a sentence, last word first (each word keeps its letters in order).
    Returns the reordered sentence.

    Example: "reverse the word order of 'one small step for man'" -> reverse_words(text="one small step for
    man")
    """
    return " ".join(reversed(_text("text", text).split()))


@tool
def truncate_text(
    text: Annotated[str, "Text to shorten"],
    max_chars: Annotated[int, "Maximum length of the result including the ellipsis (>= 4)"],
    ellipsis: Annotated[str, "Marker appended when text is cut"] = "...",
) -> str:
    """Shorten a text to at most a number of characters for a preview, teaser or headline, cutting at a word
    boundary and adding '...'. Returns the shortened text.

    Example: "cut 'The annual meeting moves to the main hall on Friday' down to 32 characters" ->
    truncate_text(text="The annual meeting moves to the main hall on Friday", max_chars=32)
    """
    body = _text("text", text)
    if max_chars < len(ellipsis) + 1:
        raise ValueError(f"max_chars must be at least {len(ellipsis) + 1}, got {max_chars}")
    if len(body) <= max_chars:
        return body
    cut = body[: max_chars - len(ellipsis) + 1]
    space = cut.rfind(" ")
    cut = cut[:space] if space > 0 else cut[:-1]
    return cut.rstrip(" ,;:-") + ellipsis


@tool
def levenshtein_distance(
    first: Annotated[str, f"First string (at most {MAX_COMPARE_CHARS} characters)"],
    second: Annotated[str, f"Second string (at most {MAX_COMPARE_CHARS} characters)"],
) -> dict[str, int | float]:
    """How different two words or strings are: the edit distance (Levenshtein), the fewest letters to insert,
    delete or replace, for typos and fuzzy matching. Returns the distance and a 0-1 similarity.

    Example: "how many single-letter changes turn 'flaw' into 'lawn'?" -> levenshtein_distance(first="flaw",
    second="lawn")
    """
    a, b = _text("first", first, MAX_COMPARE_CHARS), _text("second", second, MAX_COMPARE_CHARS)
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    distance = previous[-1]
    longest = max(len(a), len(b))
    return {"distance": distance, "similarity": round(1 - distance / longest, 4) if longest else 1.0}


def _syllables(word: str) -> int:
    w = word.lower()
    groups = re.findall(r"[aeiouy]+", w)
    count = len(groups)
    if w.endswith("e") and not w.endswith(("le", "ee", "ye")) and count > 1:
        count -= 1
    return max(count, 1)


@tool
def readability_score(
    text: Annotated[str, "English prose to score (a few sentences or more)"],
) -> dict[str, float | str]:
    """How easy an English text is to read: the Flesch reading ease (0-100, higher is easier) and the
    Flesch-Kincaid school grade level. Returns both and a plain label such as 'fairly easy'.

    Example: "how readable is 'The cat sat on the mat. It was happy.'?" -> readability_score(text="The cat sat
    on the mat. It was happy.")
    """
    body = _text("text", text)
    words = [w for w in _words(body) if re.search(r"[A-Za-z]", w)]
    if not words:
        raise ValueError("text must contain at least one English word")
    sentences = max(_sentence_count(body), 1)
    syllables = sum(_syllables(w) for w in words)
    wps, spw = len(words) / sentences, syllables / len(words)
    ease = 206.835 - 1.015 * wps - 84.6 * spw
    grade = 0.39 * wps + 11.8 * spw - 15.59
    bands = [(90, "very easy"), (80, "easy"), (70, "fairly easy"), (60, "plain English"),
             (50, "fairly difficult"), (30, "difficult")]  # fmt: skip
    label = next((name for floor, name in bands if ease >= floor), "very difficult")
    return {"flesch_reading_ease": round(ease, 1), "flesch_kincaid_grade": round(grade, 1), "level": label}


@tool
def caesar_cipher(
    text: Annotated[str, "Text to encode or decode"],
    shift: Annotated[int, "How many letters to rotate forward (13 gives ROT13)"] = 13,
    decode: Annotated[bool, "Rotate backwards to undo an earlier encoding"] = False,
) -> str:
    """Encode or decode a text with a Caesar shift or ROT13, rotating each letter A-Z by some places (other
    characters stay). Returns the shifted text.

    Example: "decode 'Uryyb' from ROT13" -> caesar_cipher(text="Uryyb", shift=13, decode=True)
    """
    step = (-shift if decode else shift) % 26
    out = []
    for ch in _text("text", text):
        if "a" <= ch <= "z":
            out.append(chr((ord(ch) - 97 + step) % 26 + 97))
        elif "A" <= ch <= "Z":
            out.append(chr((ord(ch) - 65 + step) % 26 + 65))
        else:
            out.append(ch)
    return "".join(out)


@tool
def is_palindrome(text: Annotated[str, "Word or phrase to check"]) -> bool:
    """Check whether a word or phrase is a palindrome, reading the same backwards, ignoring case, spaces,
    accents and punctuation. Returns true or false.

    Example: "is 'Step on no pets' the same backwards?" -> is_palindrome(text="Step on no pets")
    """
    folded = unicodedata.normalize("NFKD", _text("text", text)).casefold()
    letters = [c for c in folded if c.isalnum()]
    if not letters:
        raise ValueError(f"text must contain at least one letter or digit, got {text!r}")
    return letters == letters[::-1]


@tool
def wrap_text(
    text: Annotated[str, "Text to re-flow"],
    width: Annotated[int, "Maximum line width in characters (10-500)"] = 72,
) -> str:
    """Word-wrap a text into lines no wider than a number of characters, keeping paragraphs (split by blank
    lines) apart. Returns the wrapped text.

    Example: "wrap 'Meet me by the old oak tree at noon on Sunday' at 24 characters a line" ->
    wrap_text(text="Meet me by the old oak tree at noon on Sunday", width=24)
    """
    if not 10 <= width <= 500:
        raise ValueError(f"width must be between 10 and 500, got {width}")
    paragraphs = re.split(r"\n\s*\n", _text("text", text).strip())
    return "\n\n".join(textwrap.fill(" ".join(p.split()), width=width) for p in paragraphs if p.strip())


TOOLS: list[BaseTool] = pack(
    text_statistics,
    word_frequency,
    count_occurrences,
    slugify,
    convert_case,
    reverse_words,
    truncate_text,
    levenshtein_distance,
    readability_score,
    caesar_cipher,
    is_palindrome,
    wrap_text,
)
