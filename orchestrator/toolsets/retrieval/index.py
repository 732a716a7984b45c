"""`ToolIndex`: BM25, dense and hybrid tool search over a catalog, persisted in SQLite and kept in step
with the catalog incrementally.

Methods:

| method   | what ranks the tools                                                                  |
|----------|----------------------------------------------------------------------------------------|
| `bm25`   | BM25 over name, description and parameters, identifiers split, fields weighted          |
| `dense`  | cosine similarity of all-MiniLM-L6-v2 embeddings (needs the `embed` extra)             |
| `hybrid` | reciprocal rank fusion of the two (the default when the `embed` extra is installed)    |

Every method also splits a multi-part request into clauses, searches each, and merges the rankings, so a
request for two things finds a tool for each.

`expand` has a model write a few requests per tool that users would type (doc2query, `expand.py`), stored
in the index by the tool's digest. A tool's requests then count in every method: BM25 reads their words as
one more field, and dense scores a tool by the best of its description's and its requests' similarities.
An index without them searches exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.errors import ConfigError, did_you_mean
from orchestrator.toolsets.retrieval.bm25 import BM25, FIELD_WEIGHTS, doc_terms, with_requests
from orchestrator.toolsets.retrieval.dense import MODEL_ID, MiniLM, available
from orchestrator.toolsets.retrieval.docs import ToolDoc
from orchestrator.toolsets.retrieval.expand import (
    PROMPT_VERSION,
    REQUESTS,
    Writer,
    unwritable,
    write_requests,
)
from orchestrator.toolsets.retrieval.store import Expansion, IndexStore
from orchestrator.toolsets.retrieval.text import clauses, terms

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["METHODS", "ExpandReport", "Hit", "SyncReport", "ToolIndex", "dense_text"]

Method = Literal["bm25", "dense", "hybrid"]
METHODS: tuple[str, ...] = ("bm25", "dense", "hybrid")
# Bumped when what `doc_terms` or `dense_text` produce changes: stored terms and vectors are then re-made.
TERMS_VERSION = "terms-2"
DENSE_VERSION = f"{MODEL_ID}/text-1"


def dense_text(doc: ToolDoc) -> str:
    """What the embedding model reads for a tool: its name as words, then its description."""
    return f"{' '.join(w.lower() for w in _split_name(doc.name))}: {doc.description}"


def _split_name(name: str) -> list[str]:
    import re

    return re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)


@dataclass(frozen=True)
class Hit:
    """A search result: the tool, its rank score, and `relevance`, a 0..1 confidence comparable across
    queries (cosine similarity for dense and hybrid, BM25 score over its bound for bm25) that a threshold can
    use to say no tool fits."""

    name: str
    score: float
    relevance: float
    description: str
    source: str = ""


@dataclass(frozen=True)
class SyncReport:
    """What `sync` changed."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    embedded: int = 0
    fingerprint: str = ""
    embedded_requests: int = 0  # tools whose written requests were embedded


@dataclass(frozen=True)
class ExpandReport:
    """What `expand` did: tools written now, tools that already had requests from this writer for their
    content, tools left (past `limit`), tools whose replies held no requests (`failed`: asked again on the
    next call), and what the writing cost (failed tools' replies included)."""

    tools: int = 0
    written: int = 0
    had: int = 0
    left: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    failed: tuple[str, ...] = ()


@dataclass
class _Loaded:
    docs: list[ToolDoc] = field(default_factory=list)
    bm25: BM25 | None = None
    matrix: Any = None  # NDArray[np.float32] | None, rows in `docs` order
    # The written requests' vectors, tool by tool in `docs` order: `owners` the tools' positions, `starts`
    # where each tool's rows begin. `pending`: some tool's requests have no vectors yet.
    requests: Any = None
    owners: Any = None
    starts: Any = None
    pending: bool = False


def _requests_digest(requests: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(requests)).encode()).hexdigest()[:32]


def _fingerprint(digests: Iterable[str]) -> str:
    h = hashlib.sha256()
    for d in digests:
        h.update(d.encode())
    return h.hexdigest()[:32]


class ToolIndex:
    """A retrieval index over tools, in a SQLite file (or in memory).

    Example:
        >>> from orchestrator.toolsets.retrieval.docs import ToolDoc
        >>> index = ToolIndex()  # in memory; ToolIndex("tools.db") persists it
        >>> index.sync([ToolDoc("getWeather", "Current weather in a city."),
        ...             ToolDoc("math.factorial", "Factorial of a number.")]).added
        2
        >>> [h.name for h in index.search("factorial of 5", k=1, method="bm25")]
        ['math.factorial']
    """

    RRF_K: float = 5.0  # chosen on the development categories from 5, 10, 20, 60 (bench/retrieval.py)
    DENSE_WEIGHT: float = 1.0
    CLAUSE_WEIGHT: float = 1.0
    SPLIT: bool = False  # clause splitting measured slightly worse on the development categories
    CLAUSE_TOP: int = 1
    REQUESTS_WEIGHT: float = FIELD_WEIGHTS["requests"]  # BM25's weight of the written requests' words
    FAIL_FIRST: int = 3  # `expand` stops when this many tools fail before the writer has written any

    def __init__(self, path: str | Path = ":memory:", embedder: MiniLM | None = None) -> None:
        self.store = IndexStore(path)
        self._embedder = embedder
        self._loaded = _Loaded()
        self._lock = threading.Lock()
        self._read()

    def close(self) -> None:
        self.store.close()

    # --- keeping in step with the catalog -------------------------------------------------------------
    def sync(self, docs: Sequence[ToolDoc], dense: bool = False) -> SyncReport:
        """Make the index hold exactly `docs`, in their order: re-read only added or changed tools.
        With `dense`, also embed every tool that has no current vector."""
        seen: set[str] = set()
        for d in docs:
            if d.name in seen:
                raise ConfigError(
                    f"tool {d.name!r} is defined twice in the catalog; tool names must be unique"
                )
            seen.add(d.name)
        digests = [d.digest() for d in docs]
        fingerprint = _fingerprint([TERMS_VERSION, *digests])
        report = SyncReport(unchanged=len(docs), fingerprint=fingerprint)
        with self._lock:
            if self.store.meta("fingerprint") != fingerprint:
                report = self._write(docs, digests, fingerprint)
            if dense:
                tools, requests = self._embed_missing()
                report = replace(report, embedded=tools, embedded_requests=requests)
            self._read()
        return report

    def _write(self, docs: Sequence[ToolDoc], digests: Sequence[str], fingerprint: str) -> SyncReport:
        stale_terms = self.store.meta("terms_version") != TERMS_VERSION
        old = self.store.digests()
        added = changed = 0
        with self.store.transaction() as db:
            names = {d.name for d in docs}
            gone = [n for n in old if n not in names]
            db.executemany("delete from tools where name = ?", [(n,) for n in gone])
            db.executemany("delete from vectors where name = ?", [(n,) for n in gone])
            db.executemany("delete from expansion_vectors where name = ?", [(n,) for n in gone])
            for pos, (doc, digest) in enumerate(zip(docs, digests, strict=True)):
                if old.get(doc.name) == digest and not stale_terms:
                    db.execute("update tools set position = ? where name = ?", (pos, doc.name))
                    continue
                added += doc.name not in old
                changed += doc.name in old
                db.execute(
                    "insert or replace into tools values (?, ?, ?, ?, ?, ?, ?)",
                    (
                        doc.name,
                        pos,
                        digest,
                        doc.source,
                        doc.description,
                        json.dumps(doc.parameters),
                        json.dumps(doc_terms(doc)),
                    ),
                )
            self.store.set_meta("fingerprint", fingerprint)
            self.store.set_meta("terms_version", TERMS_VERSION)
        return SyncReport(added, changed, len(gone), len(docs) - added - changed, 0, fingerprint)

    def _embed_missing(self) -> tuple[int, int]:
        """Embed the tools and the tools' written requests that have no current vectors; how many of each."""
        import numpy as np

        have = self.store.vectors(DENSE_VERSION)
        rows = self.store.rows()
        todo = [(n, d, desc) for n, d, _, desc, _, _ in rows if have.get(n, ("", b""))[0] != d]
        if todo:
            docs = [ToolDoc(n, desc) for n, _, desc in todo]
            vectors = self.embedder.embed([dense_text(d) for d in docs])
            with self.store.transaction():
                self.store.put_vectors(
                    DENSE_VERSION,
                    (
                        (n, d, np.asarray(v, dtype=np.float32).tobytes())
                        for (n, d, _), v in zip(todo, vectors, strict=True)
                    ),
                )
        have_requests = self.store.expansion_vectors(DENSE_VERSION)
        requests = [
            (n, digest, e.requests)
            for n, e in self.store.expansions().items()
            if have_requests.get(n, ("", b""))[0] != (digest := _requests_digest(e.requests))
        ]
        if requests:
            flat = self.embedder.embed([r for _, _, texts in requests for r in texts])
            blocks, at = [], 0
            for n, digest, texts in requests:
                block = np.asarray(flat[at : at + len(texts)], dtype=np.float32)
                blocks.append((n, digest, block.tobytes()))
                at += len(texts)
            with self.store.transaction():
                self.store.put_expansion_vectors(DENSE_VERSION, blocks)
        return len(todo), len(requests)

    def _read(self) -> None:
        rows = self.store.rows()
        docs = [ToolDoc(n, desc, params, src) for n, _, src, desc, params, _ in rows]
        written = self.store.expansions() if rows else {}
        bm25 = BM25(
            {
                n: with_requests(t, written[n].requests, self.REQUESTS_WEIGHT) if n in written else t
                for n, _, _, _, _, t in rows
            }
        )
        loaded = _Loaded(docs, bm25)
        have = self.store.vectors(DENSE_VERSION) if rows else {}
        if rows and all(have.get(n, ("", b""))[0] == d for n, d, *_ in rows):
            import numpy as np

            loaded.matrix = np.frombuffer(b"".join(have[n][1] for n, *_ in rows), dtype=np.float32).reshape(
                len(rows), -1
            )
            if written:
                self._read_requests(loaded, [n for n, *_ in rows], written)
        self._loaded = loaded

    def _read_requests(self, loaded: _Loaded, names: list[str], written: dict[str, Expansion]) -> None:
        """The written requests' vectors, for tools whose current requests have them."""
        import numpy as np

        have = self.store.expansion_vectors(DENSE_VERSION)
        blobs, owners, starts, at = [], [], [], 0
        for pos, name in enumerate(names):
            if name not in written:
                continue
            got = have.get(name)
            if got is None or got[0] != _requests_digest(written[name].requests):
                loaded.pending = True
                continue
            rows = len(got[1]) // (4 * loaded.matrix.shape[1])
            blobs.append(got[1])
            owners.append(pos)
            starts.append(at)
            at += rows
        if blobs:
            loaded.requests = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(at, -1)
            loaded.owners = np.array(owners, dtype=np.int64)
            loaded.starts = np.array(starts, dtype=np.int64)

    @property
    def embedder(self) -> MiniLM:
        if self._embedder is None:
            self._embedder = MiniLM.shared()
        return self._embedder

    # --- written requests (doc2query) -----------------------------------------------------------------
    async def expand(
        self,
        write: Writer,
        writer_name: str,
        on_progress: Callable[[int, int, str], None] | None = None,
        limit: int | None = None,
        per_tool: int = REQUESTS,
    ) -> ExpandReport:
        """Have `write` write `per_tool` requests for every tool that has none from `writer_name` for its
        current content (at most `limit` tools this time), each tool committed as it is written: an
        interruption loses only the tool in flight, and the next call goes on from there.

        `on_progress(done, total, tool)` is called before the first tool (0, total, "") and after each. A
        tool whose replies held no requests is skipped and listed in the report's `failed`; when the first
        `FAIL_FIRST` tools all fail and the writer has written for no tool of this index before, it can't
        follow the prompt: ModelError (a later call, left with the tools it failed, goes through them). Search
        uses each tool's latest requests for its current content.
        """
        if not writer_name.strip():
            raise ConfigError("expand needs the writer's name (e.g. the model's 'provider:model')")
        digests = self.store.digests()
        done = self.store.expanded(writer_name, PROMPT_VERSION)
        docs = self.docs()
        todo = [d for d in docs if (d.name, digests[d.name]) not in done]
        now = todo if limit is None else todo[:limit]
        count = requests = tokens_in = tokens_out = 0
        seconds = 0.0
        failed: list[str] = []
        if on_progress is not None:
            on_progress(0, len(now), "")
        try:
            for at, doc in enumerate(now, 1):
                start = time.perf_counter()
                attempt = await write_requests(doc, write, per_tool)
                spent = time.perf_counter() - start
                written = replace(attempt.expansion, writer=writer_name, seconds=round(spent, 3))
                tokens_in += written.input_tokens
                tokens_out += written.output_tokens
                seconds += spent
                if written.requests:
                    with self._lock, self.store.transaction():
                        self.store.put_expansion(
                            doc.name, digests[doc.name], writer_name, PROMPT_VERSION, written
                        )
                    count += 1
                    requests += len(written.requests)
                else:
                    failed.append(doc.name)
                    if len(failed) == self.FAIL_FIRST and not count and not done:
                        raise unwritable(failed, attempt.last_reply)
                if on_progress is not None:
                    on_progress(at, len(now), doc.name)
        finally:
            with self._lock:
                self._read()
        had, left = len(docs) - len(todo), len(todo) - count - len(failed)
        return ExpandReport(
            len(docs), count, had, left, requests, tokens_in, tokens_out, seconds, tuple(failed)
        )

    def expansions(self) -> dict[str, Expansion]:
        """The written requests search uses, by tool: each tool's latest for its current content."""
        return self.store.expansions()

    # --- reading -------------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the catalog the index holds."""
        return self.store.meta("fingerprint")

    def __len__(self) -> int:
        return len(self._loaded.docs)

    def docs(self) -> list[ToolDoc]:
        """The tools, in catalog order."""
        return list(self._loaded.docs)

    def has_vectors(self) -> bool:
        return self._loaded.matrix is not None

    def default_method(self) -> Method:
        """hybrid when embeddings are at hand (stored, or the `embed` extra installed), else bm25."""
        return "hybrid" if self.has_vectors() or available() else "bm25"

    def search(
        self,
        query: str,
        k: int = 5,
        method: str | None = None,
        exclude: Iterable[str] = (),
        split: bool | None = None,
    ) -> list[Hit]:
        """The top-k tools for a request, best first; tools in `exclude` are skipped. With `split` (default
        `SPLIT`), each clause of a multi-part request is searched too and its best tool brought in."""
        method = method or self.default_method()
        if method not in METHODS:
            raise ConfigError(f"unknown search method {method!r}" + did_you_mean(method, METHODS))
        loaded = self._loaded
        if not loaded.docs:
            return []
        if method != "bm25" and (loaded.matrix is None or loaded.pending):
            self.sync(loaded.docs, dense=True)
            loaded = self._loaded
        texts = self._texts(query, split)
        qvecs = self.embedder.queries(texts) if method != "bm25" else None
        skip = set(exclude)
        rankings = []
        for j, text in enumerate(texts):
            rankings.append(self._rank(text, method, None if qvecs is None else qvecs[j], loaded))
        # The whole request's ranking leads; each clause's best tool is then brought in right after the
        # request's own best, so a request for two things finds a tool for each without a clause's weaker
        # candidates crowding out the whole request's.
        full, full_rel = rankings[0]
        relevance = dict(full_rel)
        order: list[int] = full[:1]
        for ranked, rel in rankings[1:]:
            for i in ranked[: self.CLAUSE_TOP]:
                relevance[i] = max(relevance.get(i, 0.0), rel.get(i, 0.0))
                if i not in order:
                    order.append(i)
        order += [i for i in full[1:] if i not in order]
        hits = []
        for r, i in enumerate(order):
            doc = loaded.docs[i]
            if doc.name in skip:
                continue
            hits.append(
                Hit(
                    doc.name,
                    round(1.0 / (1 + r), 6),
                    round(relevance.get(i, 0.0), 4),
                    doc.description,
                    doc.source,
                )
            )
            if len(hits) >= k:
                break
        return hits

    def _texts(self, query: str, split: bool | None) -> list[str]:
        """What a search ranks: the request, and with `split` each of its clauses too."""
        parts = clauses(query) if (self.SPLIT if split is None else split) else [query]
        return [query, *parts] if len(parts) > 1 else [query]

    def prime(self, queries: Sequence[str], method: str | None = None) -> None:
        """Embed the queries searches are about to make, in one batch (their vectors are then cached):
        several queries cost less together than one by one. Nothing for a BM25 search."""
        if (method or self.default_method()) == "bm25":
            return
        self.embedder.queries(self._all_texts(queries))

    def primed(self, queries: Sequence[str], method: str | None = None) -> bool:
        """Whether searches of these queries embed nothing (BM25, or their vectors made): cheap enough to
        run on an event loop. Never loads the model."""
        if (method or self.default_method()) == "bm25":
            return True
        model = self._embedder
        return model is not None and model.has_queries(self._all_texts(queries))

    def _all_texts(self, queries: Sequence[str]) -> list[str]:
        return [t for q in queries for t in self._texts(q, None)]

    DEPTH = 50  # how deep each ranking goes into the fusion

    def _rank(
        self, text: str, method: str, qvec: NDArray[np.float32] | None, loaded: _Loaded
    ) -> tuple[list[int], dict[int, float]]:
        """One query's ranking (positions, best first) and its relevance per position."""
        if method == "bm25":
            return self._rank_bm25(text, loaded)
        assert qvec is not None and loaded.matrix is not None
        import numpy as np

        sims = loaded.matrix @ qvec
        if loaded.requests is not None:  # a tool scores the best of its description and its requests
            best = np.maximum.reduceat(loaded.requests @ qvec, loaded.starts)
            sims[loaded.owners] = np.maximum(sims[loaded.owners], best)
        top = np.argpartition(-sims, min(self.DEPTH, len(sims) - 1))[: self.DEPTH]
        dense_ranked = [int(i) for i in sorted(top, key=lambda i: -sims[i])]
        rel = {i: float(sims[i]) for i in dense_ranked}
        if method == "dense":
            return dense_ranked, rel
        bm_ranked, _ = self._rank_bm25(text, loaded)
        fused: dict[int, float] = {}
        for r, i in enumerate(bm_ranked):
            fused[i] = fused.get(i, 0.0) + 1.0 / (self.RRF_K + r)
        for r, i in enumerate(dense_ranked):
            fused[i] = fused.get(i, 0.0) + self.DENSE_WEIGHT / (self.RRF_K + r)
        ranked = sorted(fused, key=lambda i: -fused[i])[: self.DEPTH]
        return ranked, {i: float(sims[i]) for i in ranked}

    def _rank_bm25(self, text: str, loaded: _Loaded) -> tuple[list[int], dict[int, float]]:
        assert loaded.bm25 is not None
        scores = loaded.bm25.scores(text)
        ranked = sorted(scores, key=lambda i: (-scores[i], loaded.bm25.names[i] if loaded.bm25 else ""))[
            : self.DEPTH
        ]
        bound = loaded.bm25.max_possible(text) or 1.0
        return ranked, {i: scores[i] / bound for i in ranked}


def query_terms(text: str) -> list[str]:
    """The BM25 terms of a request (for showing why a tool matched)."""
    return terms(text)
