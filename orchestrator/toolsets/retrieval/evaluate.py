"""Retrieval quality on labelled queries: recall@k, all-gold@k, MRR, latency, prompt tokens and irrelevance
AUC."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.toolsets.retrieval.docs import LabelledQuery, schema_tokens
from orchestrator.toolsets.retrieval.index import ToolIndex

__all__ = ["RetrievalReport", "auc", "evaluate"]


@dataclass(frozen=True)
class RetrievalReport:
    """Figures over a query set (queries without gold tools count only towards `irrelevance_auc`)."""

    method: str
    k: int
    tools: int
    queries: int
    labelled: int
    recall_at_k: float  # mean over labelled queries of the share of their gold tools in the top k
    all_gold_at_k: float  # share of labelled queries with every gold tool in the top k
    mrr: float  # mean reciprocal rank of the first gold tool (0 when none is in the top k)
    p50_ms: float
    p95_ms: float
    schema_tokens_dynamic: float  # mean tool-schema prompt tokens of the k tools loaded per query
    schema_tokens_all: int  # tool-schema prompt tokens of binding the whole catalog
    irrelevance_auc: (
        float | None
    )  # top relevance separating labelled queries from no-gold ones (None: no such)
    missing_gold: int  # gold names not in the catalog (counted as misses)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if not positives or not negatives:
        return float("nan")
    ranked = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives])
    rank_sum = 0.0
    i = 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid = (i + 1 + j) / 2  # mean 1-based rank of the tie group
        rank_sum += mid * sum(1 for _, p in ranked[i:j] if p)
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def evaluate(
    index: ToolIndex,
    queries: Sequence[LabelledQuery],
    k: int = 5,
    method: str | None = None,
    split: bool | None = None,
) -> RetrievalReport:
    """Search every query once and score the rankings against the gold tools."""
    method = method or index.default_method()
    tokens = {d.name: schema_tokens(d) for d in index.docs()}
    if method != "bm25" and queries:
        index.search(queries[0].query, k, method, split=split)  # the model loads outside the timings
    recall = all_gold = rr = 0.0
    labelled = missing = 0
    latencies: list[float] = []
    loaded_tokens: list[int] = []
    pos_rel: list[float] = []
    neg_rel: list[float] = []
    for q in queries:
        if method != "bm25":  # timed as a new query: not from the vectors of an earlier search
            index.embedder.forget_queries()
        start = time.perf_counter()
        hits = index.search(q.query, k, method, split=split)
        latencies.append((time.perf_counter() - start) * 1000)
        top = [h.name for h in hits]
        loaded_tokens.append(sum(tokens[n] for n in top))
        best = hits[0].relevance if hits else 0.0
        if not q.gold:
            neg_rel.append(best)
            continue
        pos_rel.append(best)
        labelled += 1
        gold = set(q.gold)
        missing += len(gold - tokens.keys())
        found = gold & set(top)
        recall += len(found) / len(gold)
        all_gold += found == gold
        rr += next((1 / (r + 1) for r, n in enumerate(top) if n in gold), 0.0)
    n = max(labelled, 1)
    return RetrievalReport(
        method=method,
        k=k,
        tools=len(tokens),
        queries=len(queries),
        labelled=labelled,
        recall_at_k=round(recall / n, 4),
        all_gold_at_k=round(all_gold / n, 4),
        mrr=round(rr / n, 4),
        p50_ms=round(statistics.median(latencies), 3) if latencies else 0.0,
        p95_ms=round(_pct(latencies, 0.95), 3),
        schema_tokens_dynamic=round(statistics.fmean(loaded_tokens), 1) if loaded_tokens else 0.0,
        schema_tokens_all=sum(tokens.values()),
        irrelevance_auc=round(auc(pos_rel, neg_rel), 4) if pos_rel and neg_rel else None,
        missing_gold=missing,
    )
