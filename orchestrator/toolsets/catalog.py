"""The tool catalog and its retrieval index (BM25 with identifier splitting and field weights).

Only tools in the catalog can ever be bound or called, whatever a model or a tool result says.

By default a catalog searches its tools with the in-memory BM25 below, the one the bundled agent's task
eval was measured with. Given an `index` (a `ToolIndex` or the path of its SQLite file) or a `method`, it
searches through `orchestrator.toolsets.retrieval` instead: BM25 over split identifiers and parameters, dense
embeddings or hybrid fusion, persisted and updated incrementally (docs/tools.md).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from orchestrator.errors import ConfigError, ToolError, did_you_mean

if TYPE_CHECKING:
    from orchestrator.toolsets.retrieval.docs import ToolDoc
    from orchestrator.toolsets.retrieval.index import ToolIndex

__all__ = ["Catalog", "CatalogEntry", "ToolHit"]

# A tool's own name: any printable name without spaces (API identifiers like `math.factorial` or
# `repos/list-for-org` included). A name a provider refuses is bound under a stable alias
# (`decisions.wire_name`) and mapped back.
_NAME_RE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,200}$")
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")  # HTTP in HTTPRequest, JSON: one word each
_STOP = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "given",
        "how",
        "i",
        "in",
        "into",
        "is",
        "it",
        "of",
        "on",
        "or",
        "the",
        "this",
        "to",
        "what",
        "with",
        "you",
        "your",
        "return",
        "returns",
        "me",
        "my",
        "please",
        "can",
        "do",
        "does",
    }
)


def tokenize(text: str) -> list[str]:
    """Lower-case words, splitting snake_case and camelCase identifiers; light suffix stemming."""
    words = [w.lower() for w in _WORD_RE.findall(text.replace("_", " "))]
    # a lone letter ("what's", "don't") matches nothing a tool is about
    return [_stem(w) for w in words if w not in _STOP and (len(w) > 1 or w.isdigit())]


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


@dataclass(frozen=True)
class CatalogEntry:
    """One tool: what the index searches and what a model sees when it is bound."""

    name: str
    description: str
    parameters: dict[str, Any]
    tool: BaseTool | None = None


@dataclass(frozen=True)
class ToolHit:
    """A search result."""

    name: str
    score: float
    description: str
    # 0..1: the share of the query's best possible match this tool reaches (BM25: each query term at its
    # best posting in the catalog; dense: the cosine similarity). Comparable across queries: a floor on it
    # says when nothing counts as found.
    relevance: float = 1.0


class Catalog:
    """Every tool a project knows, searchable by `find_tools(query)`.

    Example:
        >>> from langchain_core.tools import tool
        >>> @tool
        ... def date_diff(start: str, end: str) -> int:
        ...     '''Days between two ISO dates.'''
        ...     return 0
        >>> Catalog.from_tools([date_diff]).search("difference between dates")[0].name
        'date_diff'
    """

    FIELD_WEIGHTS: ClassVar[dict[str, float]] = {"name": 3.0, "description": 1.0, "params": 0.5}
    PREFIX_WEIGHT: ClassVar[float] = 0.6
    # The relevance (cosine similarity) a hit must reach to count as found, per method that embeds: a dense
    # search always returns its top k. Chosen on the everyday-phrasing set's dev split and 40 requests no
    # bundled tool answers (bench/data/phrasing/none.txt): at 0.2 a right tool's hit is kept for 98.6% of the
    # dev requests that find one, and 60% of the unanswerable ones find nothing. BM25's relevance (the share
    # of the query's terms matched) does not separate them, so BM25 has none: no shared word is its floor;
    # and a hybrid hit that shares a word with the query is found whatever its dense relevance (`counts`):
    # then the held-out right-tool rate is hybrid's own (0.922) and 27.5% of the unanswerable find nothing.
    FLOORS: ClassVar[dict[str, float]] = {"dense": 0.2, "hybrid": 0.2}

    def __init__(
        self,
        entries: Iterable[CatalogEntry],
        k1: float = 1.2,
        b: float = 0.75,
        *,
        index: ToolIndex | str | Path | None = None,
        method: str | None = None,
    ) -> None:
        self._entries: dict[str, CatalogEntry] = {}
        for entry in entries:
            if not _NAME_RE.match(entry.name):
                raise ConfigError(
                    f"tool name {entry.name!r} must be 1-200 characters with no spaces or control "
                    "characters; rename it"
                )
            if entry.name in self._entries:
                raise ConfigError(
                    f"tool {entry.name!r} is defined twice in the catalog; tool names must be unique"
                )
            self._entries[entry.name] = entry
        self.k1, self.b = k1, b
        # tools that can stop being callable (an MCP server's: `unavailable` says why), checked per search
        self._fallible = [n for n, e in self._entries.items() if hasattr(type(e.tool), "unavailable")]
        self._docs: dict[str, dict[str, float]] = {n: self._doc_terms(e) for n, e in self._entries.items()}
        lengths = [sum(c.values()) for c in self._docs.values()]
        self._avg_len = (sum(lengths) / len(lengths)) if lengths else 1.0
        df: Counter[str] = Counter()
        for terms in self._docs.values():
            df.update(terms.keys())
        n = max(len(self._docs), 1)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.method = method
        self.index: ToolIndex | None = None
        if index is not None or method is not None:
            from orchestrator.toolsets.retrieval.index import METHODS, ToolIndex

            if method is not None and method not in METHODS:
                raise ConfigError(f"unknown search method {method!r}" + did_you_mean(method, METHODS))
            self.index = index if isinstance(index, ToolIndex) else ToolIndex(index or ":memory:")
            self.index.sync(self.docs(), dense=method in ("dense", "hybrid"))

    @classmethod
    def from_tools(
        cls,
        tools: Sequence[BaseTool],
        *,
        index: ToolIndex | str | Path | None = None,
        method: str | None = None,
    ) -> Catalog:
        """Build a catalog from langchain-core tools."""
        entries = []
        for t in tools:
            fn = convert_to_openai_tool(t)["function"]
            entries.append(CatalogEntry(t.name, fn.get("description", ""), fn.get("parameters", {}), t))
        return cls(entries, index=index, method=method)

    @classmethod
    def from_jsonl(
        cls, path: str | Path, *, index: ToolIndex | str | Path | None = None, method: str | None = None
    ) -> Catalog:
        """Build a catalog from a JSON Lines file in the standard format (`{"name", "description",
        "parameters"}` per line). Its tools can be searched and bound, not called: they have no implementation
        here. Names must already suit the providers (1-64 letters, digits, '_' or '-')."""
        from orchestrator.toolsets.retrieval.docs import read_catalog

        entries = [CatalogEntry(d.name, d.description, dict(d.parameters)) for d in read_catalog(path)]
        return cls(entries, index=index, method=method)

    @property
    def embeds_queries(self) -> bool:
        """A search runs the embedding model on the query (milliseconds of CPU: not for an event loop)."""
        if self.index is None:
            return False
        return (self.method or self.index.default_method()) != "bm25"

    def prime(self, queries: Sequence[str]) -> None:
        """Embed the queries that searches are about to make, in one batch (see `ToolIndex.prime`); nothing
        when searches do not embed their queries."""
        if self.index is not None and self.embeds_queries:
            self.index.prime(queries, self.method)

    def primed(self, queries: Sequence[str]) -> bool:
        """Whether searches of these queries run no embedding (see `ToolIndex.primed`)."""
        return self.index is None or not self.embeds_queries or self.index.primed(queries, self.method)

    @property
    def floor(self) -> float:
        """The relevance below which a hit is not found (0.0: no floor)."""
        return self.FLOORS.get(self.method or "", 0.0) if self.index is not None else 0.0

    def counts(self, hit: ToolHit, query: str) -> bool:
        """Is this hit found for the query: at or above the floor, or (hybrid search, which fuses both)
        sharing a word with it, as BM25 would have found it."""
        if hit.relevance >= self.floor:
            return True
        if self.method != "hybrid" or hit.name not in self._docs:
            return False
        terms = self._docs[hit.name]
        return any(t in terms for term in set(tokenize(query)) for t in self._expand(term))

    def docs(self) -> list[ToolDoc]:
        """The tools as the retrieval index reads them, in catalog order."""
        from orchestrator.toolsets.retrieval.docs import ToolDoc

        def source(e: CatalogEntry) -> str:
            return str(getattr(getattr(e.tool, "func", None), "__module__", "") or "")

        return [ToolDoc(e.name, e.description, e.parameters, source(e)) for e in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        """Tool names in catalog order."""
        return list(self._entries)

    def get(self, name: str) -> CatalogEntry:
        """The entry for a name; a ToolError for anything outside the catalog."""
        try:
            return self._entries[name]
        except KeyError:
            raise ToolError(
                f"tool {name!r} is not in the catalog" + did_you_mean(name, self._entries)
            ) from None

    def unavailable(self) -> dict[str, str]:
        """Tools that can't be called now, with why (an MCP server that stopped for good): never found."""
        out = {}
        for name in self._fallible:
            why = getattr(self._entries[name].tool, "unavailable", None)
            if isinstance(why, str) and why:
                out[name] = why
        return out

    def _doc_terms(self, entry: CatalogEntry) -> dict[str, float]:
        terms: dict[str, float] = {}
        props = entry.parameters.get("properties", {})
        param_text = " ".join(
            f"{k} {v.get('description', '')}" for k, v in props.items() if isinstance(v, dict)
        )
        fields = {"name": entry.name, "description": entry.description, "params": param_text}
        for fld, text in fields.items():
            for tok in tokenize(text):
                terms[tok] = terms.get(tok, 0.0) + self.FIELD_WEIGHTS[fld]
        return terms

    def _expand(self, term: str) -> dict[str, float]:
        """The term itself, plus vocabulary terms sharing a 4+ letter prefix with it (diff ~ difference)."""
        out = {term: 1.0} if term in self._idf else {}
        if len(term) >= 4:
            for other in self._idf:
                if other != term and len(other) >= 4 and (other.startswith(term) or term.startswith(other)):
                    out.setdefault(other, self.PREFIX_WEIGHT)
        return out

    def search(self, query: str, k: int = 5, exclude: Iterable[str] = ()) -> list[ToolHit]:
        """Top-k tools for a query (BM25, or the index's method); tools in `exclude` (already loaded) and
        unavailable tools are skipped."""
        down = self.unavailable()
        if down:
            exclude = {*exclude, *down}
        if self.index is not None:
            found = self.index.search(query, k, self.method, exclude)
            return [
                ToolHit(h.name, h.score, h.description, h.relevance) for h in found if h.name in self._entries
            ]
        q: dict[str, float] = {}
        for term in set(tokenize(query)):
            for t, w in self._expand(term).items():
                q[t] = max(q.get(t, 0.0), w)
        skip = set(exclude)
        scores: dict[str, float] = {}
        best: dict[str, float] = {}  # each query term's best contribution to any tool's score
        for name, terms in self._docs.items():
            length = sum(terms.values())
            score = 0.0
            for t, weight in q.items():
                tf = terms.get(t, 0.0)
                if tf:
                    norm = tf + self.k1 * (1 - self.b + self.b * length / self._avg_len)
                    part = weight * self._idf[t] * tf * (self.k1 + 1) / norm
                    best[t] = max(best.get(t, 0.0), part)
                    score += part
            if score > 0 and name not in skip:
                scores[name] = score
        bound = sum(best.values()) or 1.0
        scored = [
            ToolHit(name, score, self._entries[name].description, round(score / bound, 4))
            for name, score in scores.items()
        ]
        scored.sort(key=lambda h: (-h.score, h.name))
        return scored[:k]
