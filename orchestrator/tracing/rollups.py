"""Roll-ups written at ingest: what the cost reports read instead of every span.

Each batch of spans the store writes is summed here, in Python, into a few rows keyed by (day, graph, dim,
key), added to the `rollups` table in the same transaction as the spans (an upsert that adds, so several
processes writing one store keep the sums right). The dims:

- `node`, by node: its executions (node spans: time, errors) and the model calls made in it;
- `model`, by `provider:model`: model calls (chat spans): time, tokens of every kind, cost, compute time;
- `slot`, by slot: the same, by the slot that made the call;
- `tool`, by tool: tool calls (tool spans): time, errors.

Cost and compute time are exclusive (the calls made in the node itself) and inclusive (`*_incl`: with the
calls of the nodes nested in it, a subgraph's, through the span's `node_path`: a JSON list of node names,
outermost first). A node's time is inclusive
(its span covers what it runs); `nested_ms` is the part spent in nodes nested in it.

Percentiles come from `rollup_hist`: durations, TTFT and tokens/s counted in logarithmic buckets of 2^(1/8)
(9% wide), so a percentile read back is within about 5% of the true one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["HIST_STEP", "SUMS", "bucket", "bucket_value", "percentile", "summarize"]

DAY_NS = 86_400 * 10**9
HIST_STEP = 8  # buckets per doubling
SUMS = (
    "spans",
    "errors",
    "duration_ms",
    "nested_ms",
    "model_calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "priced_calls",
    "unpriced_calls",
    "compute_ms",
    "cost_incl",
    "compute_incl",
    "repairs",
    "escalations",
)
_INDEX = {name: i for i, name in enumerate(SUMS)}
Key = tuple[int, str, str, str]  # day, graph, dim, key
HistKey = tuple[int, str, str, str, str, int]  # day, graph, dim, key, measure, bucket


def bucket(value: float) -> int:
    """The histogram bucket of a positive value (non-positive values share the lowest bucket)."""
    return math.floor(HIST_STEP * math.log2(value)) if value > 0 else -1_000


def bucket_value(b: int) -> float:
    """A bucket's representative value: its geometric middle."""
    return 0.0 if b <= -1_000 else 2 ** ((b + 0.5) / HIST_STEP)


def summarize(
    rows: Iterable[Mapping[str, Any]], graphs: Mapping[str, str]
) -> tuple[dict[Key, list[float]], dict[HistKey, int]]:
    """Sum span rows into roll-up rows and histogram counts. `graphs`: run id -> graph name."""
    sums: dict[Key, list[float]] = {}
    hist: dict[HistKey, int] = {}
    width = len(SUMS)

    def row_of(k: Key) -> list[float]:
        row = sums.get(k)
        if row is None:
            row = sums[k] = [0.0] * width
        return row

    def count(k: Key, measure: str, value: Any) -> None:
        if value is None:
            return
        h = (*k, measure, bucket(float(value)))
        hist[h] = hist.get(h, 0) + 1

    for r in rows:
        get = r.get
        run_id, kind = get("run_id"), get("kind")
        if run_id is None or kind not in _KINDS:
            continue
        day = int((get("start_ns") or 0) // DAY_NS)
        graph = graphs.get(run_id, "?")
        duration = float(get("duration_ms") or 0.0)
        error = 1.0 if get("status") == "error" else 0.0
        node = get("node")
        encoded = get("node_path")
        path = _path(encoded, node) if encoded else ([str(node)] if node is not None else [])
        if kind == "node":
            if node is None:
                continue
            k = (day, graph, "node", str(node))
            row = row_of(k)
            row[_SPANS] += 1
            row[_ERRORS] += error
            row[_DURATION] += duration
            row[_REPAIRS] += float(get("repairs") or 0)
            row[_ESCALATIONS] += float(get("escalations") or 0)
            count(k, "duration", duration)
            if len(path) > 1:  # time a nested node spent, inside the node around it
                row_of((day, graph, "node", path[-2]))[_NESTED] += duration
        elif kind == "tool":
            tool = get("tool")
            if tool is None:
                continue
            k = (day, graph, "tool", str(tool))
            row = row_of(k)
            row[_SPANS] += 1
            row[_ERRORS] += error
            row[_DURATION] += duration
            count(k, "duration", duration)
        else:  # a chat span: a model call
            cost = get("cost_usd")
            price = float(cost or 0.0)
            compute = float(get("compute_ms") or 0.0)
            call = (
                1.0,
                float(get("input_tokens") or 0),
                float(get("output_tokens") or 0),
                float(get("cache_read_tokens") or 0),
                float(get("cache_write_tokens") or 0),
                price,
                0.0 if cost is None else 1.0,
                1.0 if cost is None else 0.0,
                compute,
            )
            for dim, key in (("model", get("model") or "?"), ("slot", get("slot") or "-")):
                k = (day, graph, dim, str(key))
                row = row_of(k)
                row[_SPANS] += 1
                row[_ERRORS] += error
                row[_DURATION] += duration
                for i, v in zip(_CALL, call, strict=True):
                    row[i] += v
                row[_COST_INCL] += price
                row[_COMPUTE_INCL] += compute
                count(k, "duration", duration)
                if dim == "model":
                    count(k, "ttft", get("ttft_ms"))
                    count(k, "tps", get("tokens_per_s"))
            names = path or ["-"]
            last = len(names) - 1
            for i, name in enumerate(names):
                row = row_of((day, graph, "node", name))
                row[_COST_INCL] += price
                row[_COMPUTE_INCL] += compute
                if i == last:
                    for j, v in zip(_CALL, call, strict=True):
                        row[j] += v
    return sums, hist


_KINDS = frozenset({"node", "chat", "tool"})
_SPANS, _ERRORS, _DURATION, _NESTED = (_INDEX[n] for n in ("spans", "errors", "duration_ms", "nested_ms"))
_REPAIRS, _ESCALATIONS = _INDEX["repairs"], _INDEX["escalations"]
_COST_INCL, _COMPUTE_INCL = _INDEX["cost_incl"], _INDEX["compute_incl"]
_CALL = tuple(
    _INDEX[n]
    for n in (
        "model_calls",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "priced_calls",
        "unpriced_calls",
        "compute_ms",
    )
)


def _path(encoded: Any, node: Any) -> list[str]:
    """A span's node path: its `node_path` (a JSON list, for a node nested in a subgraph), else its node."""
    if encoded:
        try:
            names = json.loads(encoded)
        except ValueError:
            names = None
        if isinstance(names, list) and names:
            return [str(n) for n in names]
    return [str(node)] if node is not None else []


def percentile(counts: Sequence[tuple[int, int]], q: float) -> float | None:
    """The q-th percentile (0..1) of a histogram given as (bucket, count) pairs."""
    total = sum(n for _, n in counts)
    if total == 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for b, n in sorted(counts):
        seen += n
        if seen > rank:
            return bucket_value(b)
    return bucket_value(max(b for b, _ in counts))
