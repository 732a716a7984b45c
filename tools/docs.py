"""Documents pack: BM25 keyword search, listing and reading over the bundled policy corpus."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from langchain_core.tools import BaseTool, tool

from tools._common import pack

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
BM25_K1 = 1.5
BM25_B = 0.75
TITLE_BOOST = 2  # title terms are counted this many extra times
SNIPPET_CHARS = 240

_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    (
        "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "if",
        "in", "is", "it", "its", "my", "of", "on", "or", "our", "so", "that", "the", "their", "this", "to",
        "was", "we", "what", "when", "which", "who", "will", "with", "you", "your",
    )
)  # fmt: skip
_DOC_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,80}$")


def _stem(word: str) -> str:
    """A deliberately small suffix stripper so 'refunds', 'refunded' and 'refunding' meet."""
    if len(word) > 4 and word.endswith(("ies", "ied")):
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix) and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word[:-1] if len(word) > 4 and word.endswith("e") else word


def _terms(text: str) -> list[str]:
    return [_stem(t) for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


@dataclass(frozen=True)
class _Doc:
    doc_id: str
    title: str
    body: str
    term_counts: Counter[str]
    length: int


@dataclass(frozen=True)
class _Index:
    docs: tuple[_Doc, ...]
    doc_freq: dict[str, int]
    avg_length: float


@lru_cache(maxsize=1)
def _index() -> _Index:
    docs = []
    for path in sorted(CORPUS_DIR.glob("*.md")):
        raw = path.read_text(encoding="utf-8").strip()
        first, _, rest = raw.partition("\n")
        title = first.lstrip("#").strip()
        body = rest.strip()
        terms = _terms(body) + _terms(title) * (1 + TITLE_BOOST)
        docs.append(_Doc(path.stem, title, body, Counter(terms), len(terms)))
    if not docs:
        raise RuntimeError(f"no documents found in {CORPUS_DIR}")
    doc_freq: Counter[str] = Counter()
    for d in docs:
        doc_freq.update(d.term_counts.keys())
    avg = sum(d.length for d in docs) / len(docs)
    return _Index(tuple(docs), dict(doc_freq), avg)


def _bm25(index: _Index, doc: _Doc, query_terms: list[str]) -> float:
    n = len(index.docs)
    score = 0.0
    for term in set(query_terms):
        tf = doc.term_counts.get(term, 0)
        if not tf:
            continue
        df = index.doc_freq[term]
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        norm = tf + BM25_K1 * (1 - BM25_B + BM25_B * doc.length / index.avg_length)
        score += idf * tf * (BM25_K1 + 1) / norm
    return score


def _snippet(body: str, query_terms: set[str]) -> str:
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", body.replace("\n", " ")) if s.strip()]
    best = max(sentences, key=lambda s: (len(query_terms & set(_terms(s))), -sentences.index(s)))
    return best if len(best) <= SNIPPET_CHARS else best[: SNIPPET_CHARS - 3].rsplit(" ", 1)[0] + "..."


def _get(doc_id: str) -> _Doc:
    key = doc_id.strip().lower().removesuffix(".md")
    if not _DOC_ID.match(key):
        raise ValueError(f"doc_id {doc_id!r} is malformed; expected a lower-case id like 'refund-policy'")
    for d in _index().docs:
        if d.doc_id == key:
            return d
    known = ", ".join(d.doc_id for d in _index().docs)
    raise ValueError(f"no document with doc_id {doc_id!r}; known ids are: {known}")


@tool
def search_documents(
    query: Annotated[str, "What to look for, in plain words, e.g. 'how long do refunds take'"],
    k: Annotated[int, "Maximum number of results to return (1-10)"] = 3,
) -> list[dict[str, str | float]]:
    """Search the company's policy and help documents (the knowledge base) by keywords, like refunds, shipping
    times, annual leave or passwords. Returns the best matching documents' ids, titles, scores and a relevant
    snippet.

    Example: "can I return an opened item?" -> search_documents(query="returns of opened items")
    """
    if not 1 <= k <= 10:
        raise ValueError(f"k must be between 1 and 10, got {k}")
    if len(query) > 1000:
        raise ValueError(f"query is {len(query)} characters; the limit is 1000")
    terms = _terms(query)
    if not terms:
        raise ValueError(f"query {query!r} has no searchable words; use a few descriptive keywords")
    index = _index()
    scored = [(round(_bm25(index, d, terms), 4), d) for d in index.docs]
    ranked = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1].doc_id))[:k]
    return [
        {"doc_id": d.doc_id, "title": d.title, "score": score, "snippet": _snippet(d.body, set(terms))}
        for score, d in ranked
    ]


@tool
def read_document(
    doc_id: Annotated[str, "Document id as returned by search_documents or list_documents"],
) -> dict[str, str | int]:
    """Open one knowledge-base document by its id to read the whole policy. Returns its title, full Markdown
    text and word count.

    Example: "open the returns policy in full" -> read_document(doc_id="refund-policy")
    """
    d = _get(doc_id)
    return {"doc_id": d.doc_id, "title": d.title, "text": d.body, "word_count": len(d.body.split())}


@tool
def list_documents() -> list[dict[str, str]]:
    """List every document in the knowledge base, with its id and title. Returns them sorted by id.

    Example: "which help documents are there?" -> list_documents()
    """
    return [{"doc_id": d.doc_id, "title": d.title} for d in _index().docs]


TOOLS: list[BaseTool] = pack(search_documents, read_document, list_documents)
