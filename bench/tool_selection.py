"""End to end: the bundled controller's tool selection on BFCL, with tools loaded on demand.

The agent graph (`build_agent_graph`: plan, `find_tools` per tool part, a call or a skip, the answer) runs
on the project's default models (the `controller` slot: local:qwen2.5-1.5b) over a catalog of BFCL tools
whose implementations are stubs returning `{"status": "ok"}`. What is measured is which tools the
controller calls, not the answers.

- **Held-out queries.** 100 queries drawn with a fixed seed from the held-out categories of
  `bench/retrieval.py` (its DEV / HELDOUT split by whole category), only queries with a gold tool. They
  run against the whole pooled catalog (1,853 tools), searched with the hybrid method (BM25 + MiniLM,
  the one docs/tools.md reports best on the held-out categories).
- **A 50-tool slice.** 50 of those queries, chosen by a fixed rule (in the sample's order, a query is
  taken while the union of the chosen queries' gold tools stays within SLICE_GOLD tools), and a catalog of
  their gold tools plus distractors: tools BFCL offered with those same queries (same categories), drawn
  with the seed up to 50. Each query runs twice on that catalog: (a) dynamic loading (the same hybrid
  search, top 3 per part); (b) all 50 tools offered at once: a `retrieve` that returns the whole catalog
  for every search, so every tool part is offered (and its decision constrained to) all 50.
- Configuration for this catalog, written from the development categories only: `covers` (the system
  prompt's phrase for what the tools cover) and six worked plans from development queries. No workers.

Per query: the tools the controller called (its `call_tool` decisions, which the `call_tool` node ran),
all gold called, exactly the gold set called, first call a gold tool, whether search found a gold tool
for a part, the run's status, wall time, controller calls and tokens.

Run: `.venv/bin/python bench/tool_selection.py` (about 60-80 minutes on 2 cores; saves
bench/results/tool-selection.json after every query and writes its section into docs/benchmarks.md);
`--smoke N` (N development queries each way, printed with their calls, nothing saved to the results);
`--resume` (keep the saved queries, run the rest); `--render` (the docs section from the saved file).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.tools import StructuredTool  # noqa: E402

from orchestrator import Limits, Orchestrator, PlanExample, Settings, build_agent_graph  # noqa: E402
from orchestrator.catalog import Catalog, CatalogEntry, ToolHit  # noqa: E402
from orchestrator.decisions import MAX_BOUND_TOOLS, decision_of  # noqa: E402
from orchestrator.plan import merge_plan  # noqa: E402
from orchestrator.retrieval.docs import ToolDoc, read_catalog  # noqa: E402
from retrieval import DEV, HELDOUT  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "tools" / "bfcl"
RESULTS = ROOT / "bench" / "results" / "tool-selection.json"
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- tool-selection:start -->", "<!-- tool-selection:end -->"
AFTER = "<!-- retrieval:end -->"

SEED = 7
N_HELD = 100
N_SLICE = 50
SLICE_TOOLS = 50
SLICE_GOLD = 30  # at most this many of the slice's tools are gold tools; the rest are distractors
METHOD = "hybrid"
LIMITS = Limits(max_steps=6, deadline_s=120, max_tokens=256, top_k=3)

# What the system prompt says the tools cover ("... for <COVERS>."): about the catalog, not its domains.
COVERS = (
    "any lookup, action or computation that one of its tools does (the tools wrap online services, "
    "APIs and code libraries)"
)
# Worked plans for this catalog, from development queries only (live_simple, multiple, simple_python,
# parallel, parallel_multiple); written once, not tuned.
EXAMPLES: tuple[PlanExample, ...] = (
    PlanExample("add todo with content go to sleep at 9 pm", ({"tool": "add a todo: go to sleep at 9 pm"},)),
    PlanExample(
        "I want to book a suite with queen size bed for 3 nights in Hilton New York. Can you find the pricing for me?",
        ({"tool": "room price of a suite with queen size bed for 3 nights at Hilton New York"},),
    ),
    PlanExample(
        "Find a grocery store near me with organic fruits and vegetables in Houston.",
        ({"tool": "find grocery stores in Houston with organic fruits and vegetables"},),
    ),
    PlanExample("kill vs code using taskkill for code.exe", ({"tool": "run the command taskkill for code.exe"},)),
    PlanExample(
        "Find the area of a rectangle with length 7 and breadth 3. Also, calculate the area of a circle with radius 5.",
        ({"tool": "area of a rectangle with length 7 and breadth 3"}, {"tool": "area of a circle with radius 5"}),
    ),
    PlanExample(
        "Search for a Chicken Noodle Soup recipe and a Vegan Salad recipe.",
        ({"tool": "search recipes for Chicken Noodle Soup"}, {"tool": "search recipes for Vegan Salad"}),
    ),
)


# --- data --------------------------------------------------------------------------------------------------
def load() -> tuple[list[ToolDoc], list[dict[str, Any]]]:
    docs = read_catalog(DATA / "catalog.jsonl")
    rows = [json.loads(line) for line in (DATA / "queries.jsonl").read_text().splitlines() if line.strip()]
    return docs, rows


def sample(rows: list[dict[str, Any]], categories: Sequence[str], n: int) -> list[dict[str, Any]]:
    """n labelled queries of these categories (file order, then a seeded sample; kept in sample order)."""
    pool = [r for r in rows if r["category"] in categories and r["gold_tools"]]
    return random.Random(SEED).sample(pool, n)


def slice_of(queries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(the slice's queries, its tools in a seeded order, its gold tools) from a query sample."""
    gold: set[str] = set()
    chosen: list[dict[str, Any]] = []
    for q in queries:
        union = gold | set(q["gold_tools"])
        if len(union) <= SLICE_GOLD:
            gold, chosen = union, [*chosen, q]
        if len(chosen) == N_SLICE:
            break
    rng = random.Random(SEED)
    offered = sorted({t for q in chosen for t in q["candidate_tools"]} - gold)
    distractors = rng.sample(offered, min(len(offered), SLICE_TOOLS - len(gold)))
    tools = sorted(gold) + sorted(distractors)
    rng.shuffle(tools)  # no tool is first because it is gold
    return chosen, tools, sorted(gold)


# --- the catalog: BFCL tools with stub implementations ------------------------------------------------------
async def _ok(**_: Any) -> str:
    return '{"status": "ok"}'


def stub(doc: ToolDoc) -> StructuredTool:
    """A callable stand-in: any arguments, a short neutral result (async, so it runs in process)."""
    return StructuredTool.from_function(
        coroutine=_ok, name=doc.name, description=doc.description or doc.name, args_schema=dict(doc.parameters)
    )


def catalog_of(docs: Sequence[ToolDoc], index: Path) -> Catalog:
    entries = [CatalogEntry(d.name, d.description, dict(d.parameters), stub(d)) for d in docs]
    return Catalog(entries, index=index, method=METHOD)


def everything(catalog: Catalog, query: str, k: int) -> list[ToolHit]:
    """A search that finds every tool: the whole catalog is offered to every tool part."""
    return [ToolHit(n, 1.0, catalog.get(n).description) for n in catalog.names()]


# --- one run -----------------------------------------------------------------------------------------------
async def run_one(orch: Orchestrator, graph: Any, q: dict[str, Any], label: str) -> dict[str, Any]:
    """Run one query; read the calls, the plan and the searches from the node updates."""
    plan: list[Any] | None = None
    calls: list[dict[str, Any]] = []
    observed: list[str] = []
    result = None
    t0 = time.perf_counter()
    error = None
    try:
        async for event in orch.astream(graph, q["query"], tokens=False):
            if event.kind == "node":
                update = event.update
                if "plan" in update:
                    plan = merge_plan(plan, update["plan"])
                for m in update.get("messages") or []:
                    if event.node == "controller" and isinstance(m, AIMessage):
                        d = decision_of(str(m.content)) or {}
                        if d.get("action") == "call_tool":
                            calls.append({"tool": d.get("tool"), "args": d.get("args")})
                    elif event.node == "call_tool":
                        observed.append(str(m.content)[:200])
            elif event.kind == "end":
                result = event.result
    except Exception as exc:  # a run that raises is a failed query, not a failed bench
        error = f"{type(exc).__name__}: {exc}"
    wall = time.perf_counter() - t0
    gold = list(dict.fromkeys(q["gold_tools"]))
    called = [c["tool"] for c in calls]
    found = sorted({t for p in plan or [] for t in p.get("tools") or []})
    controller = [n for n in (result.ledger.by_node() if result else []) if n.node == "controller"]
    row = {
        "id": q["id"],
        "category": q["category"],
        "query": q["query"],
        "gold": gold,
        "called": called,
        "calls": calls,
        "observations": observed,
        "all_gold": bool(gold) and set(gold) <= set(called),
        "exact": set(called) == set(gold),
        "first_gold": bool(called) and called[0] in gold,
        "gold_found": bool(set(gold) & set(found)),
        "all_gold_found": set(gold) <= set(found),
        "plan": [
            {k: p.get(k) for k in ("tool", "worker", "status", "tools", "note")} for p in plan or []
        ],
        "status": result.status if result else "failed",
        "stop_reason": result.stop_reason if result else None,
        "error": (result.error if result else None) or error,
        "answer": result.answer if result else None,
        "wall_s": round(wall, 2),
        "controller_calls": sum(n.calls for n in controller),
        "controller_input_tokens": sum(n.input_tokens for n in controller),
        "controller_output_tokens": sum(n.output_tokens for n in controller),
    }
    row["kind"] = failure_kind(row)
    mark = "ok  " if row["all_gold"] else "MISS"
    print(
        f"{mark} {label:14} {q['id']:28} {row['status']:11} {wall:5.1f}s in={row['controller_input_tokens']:5} "
        f"gold={gold} called={called} [{row['kind']}]",
        flush=True,
    )
    return row


def failure_kind(r: dict[str, Any]) -> str:
    """Why a query missed, read from its run (or 'right')."""
    if r["all_gold"] and r["exact"]:
        return "right"
    if r["all_gold"]:
        return "gold and extra tools called"
    if r["status"] == "failed" and not r["called"]:
        return "run failed"
    if not r["plan"]:
        return "empty plan (no tool can answer)"
    if not r["gold_found"]:
        return "gold tool not found by search" + (" (another called)" if r["called"] else "")
    if any(c in r["gold"] for c in r["called"]):
        return "some gold tools not called"
    if r["called"]:
        return "another found tool called"
    notes = " ".join(str(p.get("note") or "") for p in r["plan"])
    if "not called: a value" in notes:
        return "call dropped as ungrounded"
    if r["status"] == "budget_stop":
        return "step limit before a call"
    return "part skipped"


# --- the whole bench ---------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()} {platform.machine()}"


def save(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)


async def run(smoke: int, resume: bool) -> dict[str, Any]:
    docs, rows = load()
    by_name = {d.name: d for d in docs}
    categories = DEV if smoke else HELDOUT
    held = sample(rows, categories, N_HELD)
    chosen, slice_tools, slice_gold = slice_of(held)
    if smoke:
        held, chosen = held[:smoke], chosen[:smoke]
    out_path = Path(tempfile.gettempdir()) / "tool-selection-smoke.json" if smoke else RESULTS
    data: dict[str, Any] = {}
    if resume and out_path.exists():
        data = json.loads(out_path.read_text())
    data.setdefault("runs", {"full_dynamic": [], "slice_dynamic": [], "slice_all": []})
    done = {label: {r["id"] for r in rs} for label, rs in data["runs"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        settings = dataclasses.replace(
            Settings.resolve(None),
            traces_path=Path(tmp) / "traces.db",
            checkpoints_path=Path(tmp) / "checkpoints.db",
            capture_content=True,
        )
        orch = Orchestrator.from_project(ROOT, settings=settings, limits=LIMITS)
        for slot in orch.slots:
            orch.model_for(slot)  # loaded before the clock starts
        t = time.perf_counter()
        full = catalog_of(docs, Path(tmp) / "full.db")
        small = catalog_of([by_name[n] for n in slice_tools], Path(tmp) / "slice.db")
        index_s = time.perf_counter() - t
        graphs = {
            "full_dynamic": build_agent_graph(catalog=full, workers={}, covers=COVERS, examples=EXAMPLES),
            "slice_dynamic": build_agent_graph(catalog=small, workers={}, covers=COVERS, examples=EXAMPLES),
            "slice_all": build_agent_graph(
                catalog=small, workers={}, covers=COVERS, examples=EXAMPLES, retrieve=everything
            ),
        }
        data.update(
            {
                "date": dt.date.today().isoformat(),
                "machine": machine(),
                "smoke": bool(smoke),
                "config": {
                    "seed": SEED,
                    "method": METHOD,
                    "limits": LIMITS.model_dump(),
                    "controller": orch.slots["controller"].profile.name,
                    "context_window": orch.slots["controller"].profile.context_window,
                    "covers": COVERS,
                    "examples": [e.request for e in EXAMPLES],
                    "max_bound_tools": MAX_BOUND_TOOLS,
                    "categories": list(categories),
                },
                "catalog_tools": len(full),
                "index_s": round(index_s, 1),
                "slice": {"tools": slice_tools, "gold": slice_gold, "queries": [q["id"] for q in chosen]},
                "sample": [q["id"] for q in held],
            }
        )
        started, before = time.perf_counter(), float(data.get("run_s", 0.0)) if resume else 0.0
        # The slice's two variants alternate query by query, so the machine's load falls on both alike.
        slice_ids = {q["id"] for q in chosen}
        for q in held:
            if q["id"] not in done["full_dynamic"]:
                data["runs"]["full_dynamic"].append(await run_one(orch, graphs["full_dynamic"], q, "full/dynamic"))
            if q["id"] in slice_ids:
                for label in ("slice_dynamic", "slice_all"):
                    if q["id"] not in done[label]:
                        data["runs"][label].append(await run_one(orch, graphs[label], q, label.replace("_", "/")))
            data["run_s"] = round(before + time.perf_counter() - started, 1)
            data["load_average"] = os.getloadavg()[0]
            save(data, out_path)
        orch.close()
    save(data, out_path)
    return data


# --- the docs section --------------------------------------------------------------------------------------
def totals(rs: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rs)
    return {
        "n": n,
        "all_gold": sum(r["all_gold"] for r in rs),
        "exact": sum(r["exact"] for r in rs),
        "first_gold": sum(r["first_gold"] for r in rs),
        "gold_found": sum(r["gold_found"] for r in rs),
        "called_any": sum(bool(r["called"]) for r in rs),
        "ok": sum(r["status"] == "ok" for r in rs),
        "median_s": statistics.median(r["wall_s"] for r in rs) if rs else 0.0,
        "in_tokens": statistics.mean(r["controller_input_tokens"] for r in rs) if rs else 0.0,
        "out_tokens": statistics.mean(r["controller_output_tokens"] for r in rs) if rs else 0.0,
        "calls": statistics.mean(r["controller_calls"] for r in rs) if rs else 0.0,
    }


def _frac(k: int, n: int) -> str:
    return f"{k}/{n} ({k / n:.0%})" if n else "-"


def kinds(rs: list[dict[str, Any]]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for r in rs:
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def section(data: dict[str, Any], analysis: Sequence[str] = ()) -> list[str]:
    runs = data["runs"]
    cfg = data["config"]
    full, sd, sa = (runs[k] for k in ("full_dynamic", "slice_dynamic", "slice_all"))
    tf, td, ta = totals(full), totals(sd), totals(sa)
    cats: dict[str, int] = {}
    for r in full:
        cats[r["category"]] = cats.get(r["category"], 0) + 1
    lines = [
        "## Tool selection end to end (BFCL, dynamic loading)",
        "",
        f"`bench/tool_selection.py`, {data['date']}, {data['machine']}; the machine was shared with another "
        f"engineer's work (load average {data.get('load_average', 0):.1f} at the end), so times are noisy. Whole run: "
        f"{data.get('run_s', 0) / 60:.0f} minutes for {len(full) + len(sd) + len(sa)} agent runs. Raw per-query "
        "results: `bench/results/tool-selection.json`.",
        "",
        f"**Method.** The bundled agent graph (`build_agent_graph`: plan, `find_tools` per tool part, a call or "
        f"a skip, the answer) with `controller` = {cfg['controller']} (the project's default, in process, "
        f"JSON-schema decisions), max_steps {cfg['limits']['max_steps']}, top {cfg['limits']['top_k']} tools "
        f"loaded per part, searched with the **{cfg['method']}** method (BM25 + MiniLM, the one docs/tools.md "
        "reports best on the held-out categories). Every BFCL tool gets a stub implementation that returns "
        '`{"status": "ok"}`, so every call succeeds; what is scored is which tools the controller called (its '
        "`call_tool` decisions, each run by the `call_tool` node). "
        f"Queries: {len(full)} drawn with seed {cfg['seed']} from the held-out categories of `bench/retrieval.py` "
        f"that have a gold tool ({', '.join(f'{c} {n}' for c, n in sorted(cats.items(), key=lambda kv: -kv[1]))}); "
        "nothing was tuned on them. The agent's configuration for this catalog was written from development "
        f"queries only: `covers` = \"{cfg['covers']}\", six worked plans from development queries, no workers. "
        "*All gold called*: every gold tool was called; *exact*: the set of tools called is the gold set; "
        "*first call gold*: the first tool called is a gold tool; *search found gold*: a gold tool was among the "
        "tools found for some part of the plan. Tokens are the controller's, per query (all its calls: the plan, "
        "each part's decision, the answer; repairs included).",
        "",
        "| run | catalog | queries | all gold called | exact | first call gold | search found gold | any tool called | median time | controller prompt tokens | controller output tokens | controller calls |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(label: str, catalog: str, t: dict[str, Any]) -> str:
        return (
            f"| {label} | {catalog} | {t['n']} | {_frac(t['all_gold'], t['n'])} | {_frac(t['exact'], t['n'])} | "
            f"{_frac(t['first_gold'], t['n'])} | {_frac(t['gold_found'], t['n'])} | {_frac(t['called_any'], t['n'])} | "
            f"{t['median_s']:.1f} s | {t['in_tokens']:,.0f} | {t['out_tokens']:.0f} | {t['calls']:.1f} |"
        )

    slice_ids = set(data["slice"]["queries"])
    tsub = totals([r for r in full if r["id"] in slice_ids])
    lines += [
        row("held-out, dynamic loading", f"all {data['catalog_tools']:,} tools", tf),
        row("the slice's queries in that run", f"all {data['catalog_tools']:,} tools", tsub),
        row("slice, dynamic loading", f"{len(data['slice']['tools'])} tools", td),
        row(f"slice, all {len(data['slice']['tools'])} offered", f"{len(data['slice']['tools'])} tools", ta),
        "",
        f"**The slice.** {len(sd)} of the {len(full)} queries, taken in the sample's order while the union of "
        f"their gold tools stays within {SLICE_GOLD} tools ({len(data['slice']['gold'])} gold tools), plus "
        f"{len(data['slice']['tools']) - len(data['slice']['gold'])} distractors drawn with the seed from the "
        "tools BFCL offered with those same queries (same categories: mostly other versions of the same "
        "services, the hardest kind). *Dynamic*: the same search over the 50, top 3 per part. *All offered*: a "
        "`retrieve` that returns the whole catalog for every search (`build_agent_graph(retrieve=...)`), so "
        "each tool part is shown all 50 signatures and its decision is constrained to the 50; the cap on the "
        f"bound set (`MAX_BOUND_TOOLS` = {cfg['max_bound_tools']}) is above 50, so nothing was raised. With "
        "this local model the tools are not bound natively: they are listed in the find_tools observation "
        "and offered in the decision's JSON schema (a grammar), which is what a model without native tool "
        "calling gets.",
        "",
        "Outcomes by kind (per run):",
        "",
        "| outcome | held-out, dynamic | slice, dynamic | slice, all offered |",
        "|---|---|---|---|",
    ]
    names = list(dict.fromkeys([k for rs in (full, sd, sa) for k, _ in kinds(rs)]))
    names.sort(key=lambda k: (k != "right", -sum(1 for r in full if r["kind"] == k)))
    for k in names:
        lines.append(
            f"| {k} | " + " | ".join(str(sum(1 for r in rs if r["kind"] == k)) for rs in (full, sd, sa)) + " |"
        )
    statuses = {s for rs in (full, sd, sa) for s in (r["status"] for r in rs)}
    if statuses != {"ok"}:
        lines += [
            "",
            "Run status: "
            + "; ".join(
                f"{label} "
                + ", ".join(f"{s} {sum(1 for r in rs if r['status'] == s)}" for s in sorted(statuses))
                for label, rs in (("held-out", full), ("slice dynamic", sd), ("slice all", sa))
            )
            + ".",
        ]
    if analysis:
        lines += ["", *analysis]
    return [*lines, ""]


def splice(lines: list[str]) -> None:
    text = DOC.read_text()
    block = "\n".join([START, *lines, END])
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    elif AFTER in text:
        i = text.index(AFTER) + len(AFTER)
        text = text[:i] + "\n\n" + block + text[i:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> None:
    args = sys.argv[1:]
    if "--render" in args:
        data = json.loads(RESULTS.read_text())
        lines = section(data, data.get("analysis", []))
        splice(lines)
        print("\n".join(lines))
        return
    smoke = int(args[args.index("--smoke") + 1]) if "--smoke" in args else 0
    data = asyncio.run(run(smoke, "--resume" in args))
    lines = section(data, data.get("analysis", []))
    print("\n".join(lines))
    if not smoke:
        splice(lines)


if __name__ == "__main__":
    main()
