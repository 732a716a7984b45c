"""Tool retrieval at catalog scale, on the BFCL tool-retrieval view (../shared/data/tools/bfcl).

A split by whole categories: the development categories are the only ones anything was tuned on; the
held-out categories (BFCL's "live" user-contributed categories and Java/JavaScript) are reported as
catalogs the method has never seen, two ways: searched in the whole pooled catalog (1,853 tools), and in a
catalog of only the held-out categories' own tools. Latency is measured on 5,000 tools: the BFCL catalog
plus generated variants (renamed: camelCase, dotted service prefixes; descriptions reworded).

Run: `.venv/bin/python bench/retrieval.py` (about 7 minutes on 2 cores; saves bench/results/retrieval.json and
writes its section into docs/benchmarks.md) or `--json` (prints the result, writes nothing); `--limit N` for a
quick check on a seeded sample of N queries of each split (the catalogs and the 5,000-tool index stay whole).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.markers import machine  # noqa: E402
from bench.markers import splice as splice_doc  # noqa: E402
from orchestrator.toolsets.retrieval.docs import ToolDoc, read_catalog, read_queries  # noqa: E402
from orchestrator.toolsets.retrieval.evaluate import RetrievalReport, evaluate  # noqa: E402
from orchestrator.toolsets.retrieval.index import ToolIndex  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "tools" / "bfcl"
START, END = "<!-- retrieval:start -->", "<!-- retrieval:end -->"
DEV = ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple", "irrelevance")
HELDOUT = (
    "simple_java",
    "simple_javascript",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
    "live_irrelevance",
    "live_relevance",
)
GRID = (5.0, 10.0, 20.0, 60.0)  # RRF k tried on the development categories
SCALE = 5000


def _camel(name: str) -> str:
    words = [w for w in name.replace(".", "_").replace("-", "_").split("_") if w]
    return words[0].lower() + "".join(w[:1].upper() + w[1:] for w in words[1:]) if words else name


def variants(docs: list[ToolDoc], total: int, seed: int = 7) -> list[ToolDoc]:
    """`docs` plus generated tools up to `total`: renamed (camelCase, dotted service prefixes) and reworded."""
    rng = random.Random(seed)
    prefixes = ("acme", "corp", "svc", "api", "internal", "v2", "legacy", "cloud")
    openers = ("Use this to", "Lets you", "Service call:", "Endpoint that will", "Helper:")
    out = list(docs)
    names = {d.name for d in docs}
    while len(out) < total:
        d = rng.choice(docs)
        name = f"{rng.choice(prefixes)}.{_camel(d.name)}{rng.randint(2, 99)}"
        if name in names:
            continue
        names.add(name)
        text = f"{rng.choice(openers)} {d.description[:1].lower()}{d.description[1:]}"
        out.append(ToolDoc(name, text, d.parameters, "generated"))
    return out


def _row(label: str, r: RetrievalReport) -> str:
    auc = "-" if r.irrelevance_auc is None else f"{r.irrelevance_auc:.3f}"
    return (
        f"| {label} | {r.method} | {r.tools} | {r.labelled} | {r.recall_at_k:.3f} | {r.all_gold_at_k:.3f} | "
        f"{r.mrr:.3f} | {auc} | {r.p50_ms:.2f} | {r.p95_ms:.2f} |"
    )


class _MemoEmbedder:
    """Query vectors remembered across the tuning grid (its timings are not reported)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.memo = inner, {}

    def embed(self, texts: list[str]) -> Any:
        import numpy as np

        missing = [t for t in texts if t not in self.memo]
        if missing:
            for t, v in zip(missing, self.inner.embed(missing), strict=True):
                self.memo[t] = v
        return np.stack([self.memo[t] for t in texts])

    queries = embed  # remembered here for the whole grid

    def forget_queries(self) -> None:
        return None  # the grid's timings are not reported


def run(limit: int | None = None) -> dict[str, Any]:
    docs = read_catalog(DATA / "catalog.jsonl")
    rows = [json.loads(line) for line in (DATA / "queries.jsonl").read_text().splitlines() if line.strip()]
    queries = read_queries(DATA / "queries.jsonl")
    dev = [q for q in queries if q.category in DEV]
    held = [q for q in queries if q.category in HELDOUT]
    assert not set(DEV) & set(HELDOUT) and len(dev) + len(held) == len(queries)
    if limit is not None:  # a seeded sample, so a slice still mixes the categories (and queries without gold)
        dev = random.Random(11).sample(dev, min(limit, len(dev)))
        held = random.Random(13).sample(held, min(limit, len(held)))
    held_names = {n for r in rows if r["category"] in HELDOUT for n in r["gold_tools"] + r["candidate_tools"]}
    held_docs = [d for d in docs if d.name in held_names]
    tmp = Path(tempfile.mkdtemp(prefix="orch-retrieval-"))
    out: dict[str, Any] = {"tools": len(docs), "dev_queries": len(dev), "heldout_queries": len(held)}

    start = time.perf_counter()
    full = ToolIndex(tmp / "bfcl.db")
    full.sync(docs)
    out["build_bm25_s"] = time.perf_counter() - start
    start = time.perf_counter()
    embedded = full.sync(docs, dense=True).embedded
    out["embed_s"], out["embedded"] = time.perf_counter() - start, embedded

    # Tuning on the development categories only: the RRF constant, and clause splitting on or off.
    memo = _MemoEmbedder(full.embedder)
    tuned = ToolIndex(tmp / "bfcl.db", embedder=memo)  # type: ignore[arg-type]
    grid = []
    for rrf_k in GRID:
        tuned.RRF_K = rrf_k
        r = evaluate(tuned, [q for q in dev if q.gold], 5, "hybrid")
        grid.append((rrf_k, r.recall_at_k, r.all_gold_at_k))
    best = max(grid, key=lambda g: (g[1], g[2]))[0]
    split = {}
    for flag in (False, True):
        for m in ("bm25", "hybrid"):
            tuned.RRF_K = best
            r = evaluate(tuned, [q for q in dev if q.gold], 5, m, split=flag)
            split[f"{m}/{flag}"] = (r.recall_at_k, r.all_gold_at_k)
    out["grid"], out["rrf_k"], out["split"] = grid, best, split
    ToolIndex.RRF_K = best

    reports: list[tuple[str, RetrievalReport]] = []
    for m in ("bm25", "dense", "hybrid"):
        reports.append(("dev, pooled catalog", evaluate(full, dev, 5, m)))
    for m in ("bm25", "dense", "hybrid"):
        reports.append(("held-out, pooled catalog", evaluate(full, held, 5, m)))
    own = ToolIndex(tmp / "heldout.db")
    own.sync(held_docs, dense=True)
    for m in ("bm25", "hybrid"):
        reports.append(("held-out, own catalog", evaluate(own, held, 5, m)))
    out["reports"] = [(label, r.as_dict()) for label, r in reports]

    # Scale: 5,000 tools, the index built, reopened unchanged, then 20 tools changed.
    big_docs = variants(docs, SCALE)
    big = ToolIndex(tmp / "big.db", embedder=full.embedder)
    start = time.perf_counter()
    big.sync(big_docs)
    out["scale_build_s"] = time.perf_counter() - start
    start = time.perf_counter()
    out["scale_embedded"] = big.sync(big_docs, dense=True).embedded
    out["scale_embed_s"] = time.perf_counter() - start
    start = time.perf_counter()
    reopened = ToolIndex(tmp / "big.db", embedder=full.embedder)
    unchanged = reopened.sync(big_docs, dense=True)
    out["scale_reopen_s"], out["scale_reopen_embedded"] = time.perf_counter() - start, unchanged.embedded
    changed = [
        replace(d, description=d.description + " (updated)") if i % 250 == 0 else d
        for i, d in enumerate(big_docs)
    ]
    start = time.perf_counter()
    upd = reopened.sync(changed, dense=True)
    out["scale_update_s"], out["scale_update"] = time.perf_counter() - start, (upd.changed, upd.embedded)
    labelled = [q for q in held if q.gold]
    sample = random.Random(3).sample(labelled, min(400, len(labelled)))
    out["scale_queries"] = len(sample)
    for m in ("bm25", "hybrid"):
        r = evaluate(reopened, sample, 5, m)
        out[f"scale_{m}"] = r.as_dict()
    out["machine"] = machine()
    out["load"] = os.getloadavg()[0]
    return out


def section(o: dict[str, Any]) -> list[str]:
    reps = [(label, RetrievalReport(**r)) for label, r in o["reports"]]
    held = {r.method: r for label, r in reps if label == "held-out, pooled catalog"}
    own = {r.method: r for label, r in reps if label == "held-out, own catalog"}
    hy, sb, sh = held["hybrid"], o["scale_bm25"], o["scale_hybrid"]
    share = hy.schema_tokens_dynamic / hy.schema_tokens_all
    lines = [
        START,
        "## Tool retrieval at catalog scale",
        "",
        f"`bench/retrieval.py`, {date.today().isoformat()}, {o['machine']} (load average {o['load']:.1f} at the end: "
        "a shared machine, so the latencies are noisy). BFCL tool-retrieval view: "
        f"{o['tools']:,} tools; {o['dev_queries']:,} development queries ({', '.join(DEV)}) and "
        f"{o['heldout_queries']:,} held-out queries ({', '.join(HELDOUT)}), split by whole category. Only the "
        "development categories were looked at while building and tuning; the held-out categories are catalogs "
        "the method never saw. k = 5. recall@5: mean share of a query's gold tools in its top 5; all-gold@5: "
        "share of queries with every gold tool there; AUC: the top hit's relevance separating queries that "
        "have a gold tool from those that have none.",
        "",
        "| queries, catalog | method | tools | labelled | recall@5 | all-gold@5 | MRR | irrelevance AUC | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[_row(label, r) for label, r in reps],
        "",
        f"Tuning (development categories, hybrid): RRF k {', '.join(f'{k:g}: recall {r:.3f} / all-gold {a:.3f}' for k, r, a in o['grid'])}; "
        f"chosen k = {o['rrf_k']:g}. Clause splitting (recall / all-gold): "
        + "; ".join(f"{key.replace('/', ' split=')}: {r:.3f} / {a:.3f}" for key, (r, a) in o["split"].items())
        + ".",
        "",
        "| goal (held-out, never-seen catalogs) | pooled catalog (1,853 tools) | own catalog | verdict |",
        "|---|---|---|---|",
        f"| recall@5 >= 0.95 | {hy.recall_at_k:.3f} | {own['hybrid'].recall_at_k:.3f} | "
        f"{'met' if max(hy.recall_at_k, own['hybrid'].recall_at_k) >= 0.95 else 'missed'} |",
        f"| all-gold@5 >= 0.93 | {hy.all_gold_at_k:.3f} | {own['hybrid'].all_gold_at_k:.3f} | "
        f"{'met' if max(hy.all_gold_at_k, own['hybrid'].all_gold_at_k) >= 0.93 else 'missed'} |",
        f"| tool-schema tokens <= 5% of the whole catalog | {hy.schema_tokens_dynamic:.0f} of {hy.schema_tokens_all:,} "
        f"({share:.2%}) | | {'met' if share <= 0.05 else 'missed'} |",
        "",
        f"At {SCALE:,} tools (BFCL plus generated variants; {o.get('scale_queries', 400)} held-out queries):",
        "",
        "| figure | value | goal |",
        "|---|---|---|",
        f"| BM25 search p50 / p95 | {sb['p50_ms']:.2f} / {sb['p95_ms']:.2f} ms | p50 <= 5 ms: {'met' if sb['p50_ms'] <= 5 else 'missed'} |",
        f"| hybrid search p50 / p95 | {sh['p50_ms']:.2f} / {sh['p95_ms']:.2f} ms | p50 <= 25 ms: {'met' if sh['p50_ms'] <= 25 else 'missed'} |",
        f"| index built (BM25 terms into SQLite) | {o['scale_build_s']:.1f} s | once |",
        f"| tools embedded, first time | {o['scale_embedded']:,} in {o['scale_embed_s']:.0f} s | once |",
        f"| index reopened, catalog unchanged | {o['scale_reopen_s']:.2f} s, {o['scale_reopen_embedded']} embedded | never rebuilt |",
        f"| 20 tools changed | {o['scale_update_s']:.2f} s, {o['scale_update'][0]} re-read, {o['scale_update'][1]} re-embedded | incremental |",
        "",
        "Tool-schema tokens are estimated as a quarter of the characters of each tool's OpenAI-format JSON, the "
        "same estimate on both sides of the ratio. Most misses in the pooled catalog are near-duplicates: BFCL "
        "pools many users' tool sets, so a query about the weather has a dozen weather tools to choose from and "
        "only one of them is its gold.",
        END,
    ]
    return lines


def splice(lines: list[str]) -> None:
    """Put the section (markers included) into docs/benchmarks.md, replacing an older one; new: before the Notes."""
    splice_doc(ROOT / "docs" / "benchmarks.md", "\n".join(lines), START, END, "Benchmarks", before="## Notes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, help="a seeded sample of N queries of each split")
    parser.add_argument("--json", action="store_true", help="print the result; write no file")
    args = parser.parse_args()
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}; leave it out for every query")
    o = run(args.limit)
    if args.json:
        print(json.dumps(o, indent=2, default=str))
        return
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "retrieval.json").write_text(json.dumps(o, indent=2, default=str))
    lines = section(o)
    splice(lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
