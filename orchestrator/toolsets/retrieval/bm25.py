"""BM25 over tool fields (name, description, parameter names, parameter descriptions), each with a weight.

A tool's terms are counted per field and summed with the field's weight (BM25F with one shared length
normalisation); a query term also matches index terms that share a 4+ letter prefix with it, at a lower
weight (diff ~ difference). Scores come from an inverted index with each posting's BM25 contribution
computed once, so a search touches only the postings of its terms.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.toolsets.retrieval.docs import ToolDoc
from orchestrator.toolsets.retrieval.text import terms

__all__ = ["BM25", "FIELD_WEIGHTS", "doc_terms", "with_requests"]

# "requests": the requests a model wrote for the tool (`ToolIndex.expand`); a weight set before measuring,
# not tuned: a word in most of five requests counts about as much as one in the name
FIELD_WEIGHTS: Mapping[str, float] = {
    "name": 3.0,
    "description": 1.0,
    "param_names": 0.5,
    "param_text": 0.3,
    "requests": 0.5,
}


def doc_terms(doc: ToolDoc, weights: Mapping[str, float] = FIELD_WEIGHTS) -> dict[str, float]:
    """A tool's weighted term counts over its fields."""
    param_names, param_text = doc.param_text()
    fields = {
        "name": doc.name,
        "description": doc.description,
        "param_names": param_names,
        "param_text": param_text,
    }
    out: dict[str, float] = {}
    for fld, text in fields.items():
        w = weights.get(fld, 0.0)
        if w:
            for t in terms(text):
                out[t] = out.get(t, 0.0) + w
    return out


def with_requests(
    base: Mapping[str, float], requests: Iterable[str], weight: float = FIELD_WEIGHTS["requests"]
) -> dict[str, float]:
    """A tool's terms (`doc_terms`) with the words of the requests written for it added as one more field."""
    out = dict(base)
    for request in requests:
        for t in terms(request):
            out[t] = out.get(t, 0.0) + weight
    return out


@dataclass(frozen=True)
class _Params:
    k1: float = 1.2
    b: float = 0.75
    prefix_weight: float = 0.6


class BM25:
    """A BM25 index over tools' weighted term counts.

    Example:
        >>> from orchestrator.toolsets.retrieval.docs import ToolDoc
        >>> index = BM25({"getWeather": doc_terms(ToolDoc("getWeather", "Current weather in a city."))})
        >>> [name for name, _ in index.search("what's the weather like in Rome", 3)]
        ['getWeather']
    """

    def __init__(
        self,
        docs: Mapping[str, Mapping[str, float]],
        k1: float = 1.2,
        b: float = 0.75,
        prefix_weight: float = 0.6,
    ) -> None:
        self.params = _Params(k1, b, prefix_weight)
        self.names: list[str] = list(docs)
        n = max(len(self.names), 1)
        lengths = [sum(t.values()) for t in docs.values()]
        avg = (sum(lengths) / len(lengths)) if lengths else 1.0
        df: dict[str, int] = defaultdict(int)
        for t in docs.values():
            for term in t:
                df[term] += 1
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for i, (doc, length) in enumerate(zip(docs.values(), lengths, strict=True)):
            norm = k1 * (1 - b + b * length / avg)
            for term, tf in doc.items():
                postings[term].append((i, self.idf[term] * tf * (k1 + 1) / (tf + norm)))
        self.postings = dict(postings)
        self._by_prefix: dict[str, list[str]] = defaultdict(list)
        for term in self.postings:
            if len(term) >= 4:
                self._by_prefix[term[:4]].append(term)

    def _expand(self, term: str) -> dict[str, float]:
        out = {term: 1.0} if term in self.postings else {}
        if len(term) >= 4:
            for other in self._by_prefix.get(term[:4], ()):
                if other != term and (other.startswith(term) or term.startswith(other)):
                    out.setdefault(other, self.params.prefix_weight)
        return out

    def query_terms(self, query: str) -> dict[str, float]:
        """The index terms a query matches, each with its weight."""
        q: dict[str, float] = {}
        for term in set(terms(query)):
            for t, w in self._expand(term).items():
                q[t] = max(q.get(t, 0.0), w)
        return q

    def scores(self, query: str) -> dict[int, float]:
        """Positive scores by document position."""
        acc: dict[int, float] = defaultdict(float)
        for t, w in self.query_terms(query).items():
            for i, contribution in self.postings[t]:
                acc[i] += w * contribution
        return acc

    def search(self, query: str, k: int, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """Top-k (name, score), best first; ties broken by name."""
        skip = set(exclude)
        hits = [(self.names[i], s) for i, s in self.scores(query).items() if self.names[i] not in skip]
        hits.sort(key=lambda h: (-h[1], h[0]))
        return hits[:k]

    def max_possible(self, query: str) -> float:
        """An upper bound of a score for this query (every term at its best posting): a scale for fusion."""
        return sum(
            w * max((c for _, c in self.postings[t]), default=0.0) for t, w in self.query_terms(query).items()
        )


def rank(scores: Mapping[int, float], names: Sequence[str]) -> list[int]:
    """Positions by score, best first, ties by name."""
    return sorted(scores, key=lambda i: (-scores[i], names[i]))
