"""Index-time expansion (doc2query) on catalogs the method never saw: the BFCL held-out categories.

Does a model writing a few requests per tool (`ToolIndex.expand`, `orch tools expand`) help tool search find
tools in users' words? Writing for all 863 held-out tools with the 1.5B racehorse on 2 CPU cores takes hours,
so the measure is made on a sample, fairly:

- a seeded random sample of the held-out categories' own tools (bench/retrieval.py's HELDOUT: their gold and
  candidate tools; `--tools`, default 100; the shuffle is seeded, so a smaller sample is the start of a larger
  one). 150 tools took 67 minutes on the shared 2-core machine (25.6 s a tool with other engineers' local
  models running), past the 40 minutes a run should take, so the default is 100;
- every tool of the sample is expanded, never only the gold ones (that would favour them);
- the queries: the held-out queries whose gold tools all lie in the sample, and, for the irrelevance AUC,
  the held-out queries without gold whose candidate tools all do;
- searched within the sample catalog with bm25, dense and hybrid, with and without the written requests,
  k = 5.

The writer is `--model` (default `local:qwen2.5-1.5b`, the project's racehorse) through the one model call,
temperature 0. The written requests go into an index file that is kept (`--index`, default in the temp
directory, named by model, seed and prompt version), so an interrupted run goes on where it stopped; the
writing cost reported is every sampled tool's, as recorded when it was written.

Run: `nice -n 10 .venv/bin/python bench/expand.py` (about 30-45 minutes on 2 cores; saves
bench/results/expand.json and bench/results/expand.md, and prints the section), `--limit N` for a quick check
on the first N tools of the same shuffle (writes only under the temp directory), `--json` to print the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.markers import machine  # noqa: E402
from bench.retrieval import DATA, HELDOUT  # noqa: E402
from orchestrator.config import Settings, SlotConfig, load_manifest  # noqa: E402
from orchestrator.toolsets.retrieval.docs import LabelledQuery, ToolDoc, read_catalog, read_queries  # noqa: E402
from orchestrator.toolsets.retrieval.evaluate import RetrievalReport, evaluate  # noqa: E402
from orchestrator.toolsets.retrieval.expand import PROMPT_VERSION  # noqa: E402
from orchestrator.toolsets.retrieval.index import ToolIndex  # noqa: E402

MODEL = "local:qwen2.5-1.5b"
TOOLS = 100
SEED = 24  # issue 24
K = 5
METHODS = ("bm25", "dense", "hybrid")
RESULTS = ROOT / "bench" / "results"


def sample(seed: int, n: int) -> tuple[list[ToolDoc], list[LabelledQuery], int]:
    """The first `n` of the held-out tools in a seeded shuffle, the held-out queries they answer (and the
    no-gold ones whose candidates they are), and how many held-out tools there are."""
    docs = {d.name: d for d in read_catalog(DATA / "catalog.jsonl")}
    rows = [json.loads(line) for line in (DATA / "queries.jsonl").read_text().splitlines() if line.strip()]
    held = [r for r in rows if r["category"] in HELDOUT]
    names = sorted({n for r in held for n in r["gold_tools"] + r["candidate_tools"]} & docs.keys())
    random.Random(seed).shuffle(names)
    chosen = set(names[:n])
    keep = {
        r["id"]
        for r in held
        if (r["gold_tools"] and set(r["gold_tools"]) <= chosen)
        or (not r["gold_tools"] and r["candidate_tools"] and set(r["candidate_tools"]) <= chosen)
    }
    queries = [q for q in read_queries(DATA / "queries.jsonl") if q.id in keep]
    return [docs[name] for name in names[:n]], queries, len(names)


def _writer(model: str) -> Any:
    """The writer: `model` bound to a slot of its own, loaded now (outside the timings)."""
    from orchestrator.models.writer import slot_writer

    base = load_manifest(ROOT)
    manifest = base.model_copy(update={"slots": {"writer": SlotConfig(model=model, role="racehorse")}})
    return slot_writer(manifest, "writer", Settings.resolve(manifest))


def _progress(done: int, total: int, tool: str, start: list[float]) -> None:
    if done == 0:
        start[0] = time.monotonic()
        print(f"expand: {total} tools to write for", file=sys.stderr, flush=True)
        return
    spent = time.monotonic() - start[0]
    eta = spent / done * (total - done)
    print(
        f"expand: {done}/{total} {tool} · {spent:.0f} s · ETA {eta / 60:.1f} min", file=sys.stderr, flush=True
    )


class _Recording:
    """The writer, its replies kept by the tool its prompt names (the last one: why a tool failed)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.last = inner, inner.name, {}

    async def __call__(self, messages: Any) -> Any:
        reply = await self.inner(messages)
        found = re.match(r"Tool name: (.+)", str(messages[1].content))
        if found:
            self.last[found.group(1)] = reply.text
        return reply


def _per_query(index: ToolIndex, queries: list[LabelledQuery], method: str) -> dict[str, bool]:
    """For each labelled query: every gold tool in the top k."""
    out = {}
    for q in queries:
        if q.gold:
            top = {h.name for h in index.search(q.query, K, method)}
            out[q.id] = set(q.gold) <= top
    return out


def run(tools: int, seed: int, model: str, index_file: Path) -> dict[str, Any]:
    docs, queries, pool = sample(seed, tools)
    labelled = [q for q in queries if q.gold]
    out: dict[str, Any] = {
        "model": model,
        "seed": seed,
        "tools": len(docs),
        "heldout_tools": pool,
        "queries": len(queries),
        "labelled": len(labelled),
        "gold_tools": len({g for q in labelled for g in q.gold}),
        "prompt": PROMPT_VERSION,
        "index": str(index_file),
    }
    index_file.parent.mkdir(parents=True, exist_ok=True)
    expanded = ToolIndex(index_file)
    expanded.sync(docs)

    start = time.perf_counter()
    writer = _Recording(_writer(model))
    out["load_s"] = round(time.perf_counter() - start, 1)
    start_at = [0.0]
    start = time.perf_counter()
    report = asyncio.run(expanded.expand(writer, writer.name, lambda d, t, n: _progress(d, t, n, start_at)))
    out["wall_s"] = round(time.perf_counter() - start, 1)
    out["run"] = {k: v for k, v in report.__dict__.items() if k != "seconds"} | {
        "seconds": round(report.seconds, 1)
    }
    out["failed_replies"] = {n: writer.last.get(n, "") for n in report.failed}
    written = {n: e for n, e in expanded.expansions().items() if n in {d.name for d in docs}}
    out["written"] = len(written)
    out["cost"] = {
        "seconds": round(sum(e.seconds for e in written.values()), 1),
        "input_tokens": sum(e.input_tokens for e in written.values()),
        "output_tokens": sum(e.output_tokens for e in written.values()),
        "requests": sum(len(e.requests) for e in written.values()),
    }
    out["requests"] = {n: list(e.requests) for n, e in sorted(written.items())}

    plain = ToolIndex(index_file.parent / f"plain-{os.getpid()}.db", embedder=expanded.embedder)
    try:
        plain.sync(docs, dense=True)
        start = time.perf_counter()
        out["embedded_requests"] = expanded.sync(docs, dense=True).embedded_requests
        out["embed_requests_s"] = round(time.perf_counter() - start, 1)
        reports: list[tuple[str, RetrievalReport]] = []
        changes: dict[str, tuple[int, int]] = {}
        tops: dict[str, float] = {}
        for m in METHODS:
            reports.append(("without", evaluate(plain, queries, K, m)))
            reports.append(("with", evaluate(expanded, queries, K, m)))
            for label, index in (("without", plain), ("with", expanded)):
                tops[f"{label}/{m}/1"] = evaluate(index, labelled, 1, m).mrr  # first hit is a gold tool
                tops[f"{label}/{m}/3"] = evaluate(index, labelled, 3, m).all_gold_at_k
            before, after = _per_query(plain, queries, m), _per_query(expanded, queries, m)
            changes[m] = (
                sum(after[i] and not before[i] for i in before),
                sum(before[i] and not after[i] for i in before),
            )
        out["reports"] = [(label, r.as_dict()) for label, r in reports]
        out["changes"] = changes
        out["tops"] = tops
    finally:
        plain.close()
        (index_file.parent / f"plain-{os.getpid()}.db").unlink(missing_ok=True)
    expanded.close()
    out["machine"] = machine()
    out["load"] = os.getloadavg()[0]
    out["date"] = date.today().isoformat()
    return out


def section(o: dict[str, Any]) -> list[str]:
    reps = [(label, RetrievalReport(**r)) for label, r in o["reports"]]
    by = {(label, r.method): r for label, r in reps}
    cost, written = o["cost"], max(o["written"], 1)
    rows = []
    for m in METHODS:
        for label in ("without", "with"):
            r = by[(label, m)]
            auc = "-" if r.irrelevance_auc is None else f"{r.irrelevance_auc:.3f}"
            top1, top3 = o["tops"][f"{label}/{m}/1"], o["tops"][f"{label}/{m}/3"]
            rows.append(
                f"| {m} | {label} | {top1:.3f} | {top3:.3f} | {r.recall_at_k:.3f} | {r.all_gold_at_k:.3f} | "
                f"{r.mrr:.3f} | {auc} | {r.p50_ms:.2f} |"
            )
    delta = {
        m: (
            by[("with", m)].recall_at_k - by[("without", m)].recall_at_k,
            by[("with", m)].all_gold_at_k - by[("without", m)].all_gold_at_k,
            by[("with", m)].mrr - by[("without", m)].mrr,
        )
        for m in METHODS
    }
    failed = o["run"].get("failed") or []
    return [
        "## Index-time expansion (doc2query) on the held-out categories",
        "",
        f"`bench/expand.py --tools {o['tools']}`, {o['date']}, {o['machine']} (load average "
        f"{o['load']:.1f} at the end: a shared machine). "
        f"The writer: `{o['model']}` at temperature 0, {o['prompt']}, 5 requests per tool. A seeded sample "
        f"(seed {o['seed']}) of {o['tools']} of the {o['heldout_tools']} tools of the BFCL held-out "
        "categories, every one of them expanded; the held-out queries whose gold tools all lie in the sample "
        f"({o['labelled']} labelled, over {o['gold_tools']} distinct gold tools; live_multiple's repeat a few "
        f"tools many times) and {o['queries'] - o['labelled']} without gold whose candidates do (for the AUC). "
        "top-1: share of labelled queries whose first hit is a gold tool; all-gold@3: every gold tool in the "
        "first three (what `find_tools` offers the controller). "
        f"Searched within the {o['tools']}-tool sample catalog, k = {K}, with and without the written requests "
        "(BM25: one more field, weight 0.5; dense: a tool scores the best of its description's and its "
        "requests' similarities; hybrid: both, fused as before). Nothing was tuned on these categories.",
        "",
        "| method | expansion | top-1 | all-gold@3 | recall@5 | all-gold@5 | MRR | irrelevance AUC | p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Change with expansion (recall@5 / all-gold@5 / MRR; queries whose gold all entered / left the top 5): "
        + "; ".join(
            f"{m} {d[0]:+.3f} / {d[1]:+.3f} / {d[2]:+.3f} ({o['changes'][m][0]} in, {o['changes'][m][1]} out)"
            for m, d in delta.items()
        )
        + ".",
        "",
        f"Writing cost: {o['written']} tools written ({cost['requests']} requests), "
        f"{cost['seconds']:.0f} s of model time ({cost['seconds'] / written:.1f} s a tool, measured when "
        "each was written), "
        f"{cost['input_tokens']:,} input and {cost['output_tokens']:,} output tokens "
        f"({cost['input_tokens'] / written:.0f} / {cost['output_tokens'] / written:.0f} a tool); "
        f"model load {o['load_s']:.1f} s; the requests embedded in {o['embed_requests_s']:.1f} s. This run "
        f"wrote {o['run']['written']} tools and found {o['run']['had']} already written in the kept index "
        f"file, in {o['wall_s']:.0f} s, {o['run']['input_tokens']:,} / {o['run']['output_tokens']:,} tokens "
        "(failed tools' replies included). "
        + (
            f"{len(failed)} tools' replies held no requests, twice each, and were left unexpanded: "
            + ", ".join(f"`{n}`" for n in failed)
            + "."
            if failed
            else "Every tool's reply held requests."
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tools", type=int, default=TOOLS, help=f"tools in the sample (default {TOOLS})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"the sample's shuffle (default {SEED})")
    parser.add_argument("--model", default=MODEL, help=f"the writer, provider:model (default {MODEL})")
    parser.add_argument("--limit", type=int, help="a quick check: the first N tools of the shuffle")
    parser.add_argument("--index", type=Path, help="the index file with the written requests (kept)")
    parser.add_argument("--json", action="store_true", help="print the result; write no results file")
    args = parser.parse_args()
    for flag in ("tools", "limit"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag} must be at least 1, got {value}")
    tools = args.limit or args.tools
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", args.model)
    index = (
        args.index
        or Path(tempfile.gettempdir()) / "orch-expand-bench" / f"{slug}-s{args.seed}-{PROMPT_VERSION}.db"
    )
    o = run(tools, args.seed, args.model, index)
    text = "\n".join(section(o))
    if args.json:
        print(json.dumps(o, indent=2, default=str))
        return
    where = RESULTS if args.limit is None else Path(tempfile.gettempdir()) / "orch-expand-bench"
    where.mkdir(parents=True, exist_ok=True)
    (where / "expand.json").write_text(json.dumps(o, indent=2, default=str) + "\n")
    (where / "expand.md").write_text(text + "\n")
    print(text)
    print(f"\n(saved {where / 'expand.json'} and {where / 'expand.md'})", file=sys.stderr)


if __name__ == "__main__":
    main()
