"""Fuzz the file parsers with many more examples than the tests, and count what happened.

The targets and their inputs are the ones of `tests/test_fuzz_parsers.py` (the manifest, a price file, a
tool catalog, a task file, a labelled-query file): random bytes and text, and plausible documents that are
wrong (wrong types, missing keys, huge numbers, NaN, deep nesting, non-UTF-8, a BOM, nothing at all). Each
example ends one of four ways: accepted, rejected with a clear error (a `ConfigError` naming the file),
rejected with an unclear one, or a crash (any other exception: a traceback for the user).

Run: `.venv/bin/python bench/fuzz.py --examples 3000` (`--only prices`, `--seed N`; `--docs` writes the
counts into docs/reliability.md between its markers). Exit status 1 when anything crashed or was unclear.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import hypothesis  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from test_fuzz_parsers import TARGETS, Target, attempt  # noqa: E402

from bench.markers import machine, splice  # noqa: E402

DOCS = ROOT / "docs" / "reliability.md"
START, END = "<!-- fuzz:start -->", "<!-- fuzz:end -->"


def _signature(outcome: str, detail: str) -> str:
    """What tells one failure from another: the exception and the innermost frame of the project's code."""
    if outcome == "unclear":
        return "unclear: " + re.sub(r"/tmp\S*", "<tmp>", detail)[:120]
    lines = detail.strip().splitlines()
    frames = [ln.strip() for ln in lines if ln.strip().startswith('File "')]
    ours = [f for f in frames if "/orchestrator/" in f] or frames
    where = re.sub(r'File ".*/(orchestrator/[^"]+)"', r"\1", ours[-1]) if ours else "?"
    kind = lines[-1].split(":", 1)[0]
    return f"{kind} at {where}"


def fuzz(target: Target, examples: int, seed: int | None) -> dict[str, Any]:
    """Run `examples` generated inputs through one target; the counts and the first input of each failure."""
    counts: collections.Counter[str] = collections.Counter()
    failures: dict[str, tuple[str, dict[str, bytes]]] = {}
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target.name}-") as tmp:
        base = Path(tmp)

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],  # count generated inputs only: no replays, no shrinking
            suppress_health_check=list(HealthCheck),
        )
        @given(files=target.files)
        def run(files: dict[str, bytes]) -> None:
            outcome, detail = attempt(target, files, base)
            counts[outcome] += 1
            if outcome in ("crash", "unclear"):
                failures.setdefault(_signature(outcome, detail), (detail.strip().splitlines()[-1], files))

        if seed is not None:
            run = hypothesis.seed(seed)(run)
        t0 = time.perf_counter()
        run()
        elapsed = time.perf_counter() - t0
    return {"counts": counts, "failures": failures, "seconds": elapsed}


def section(results: dict[str, dict[str, Any]], examples: int, seed: int | None) -> str:
    """The docs section: one row per parser."""
    rows = [
        "## Parser fuzzing",
        "",
        f"`bench/fuzz.py --examples {examples}{f' --seed {seed}' if seed is not None else ''}`, "
        f"{time.strftime('%Y-%m-%d')}, {machine()}, hypothesis {hypothesis.__version__}. Inputs: random bytes and text, and plausible documents "
        "that are wrong (wrong types, missing keys, huge numbers, NaN, deep nesting, non-UTF-8, a BOM, empty), "
        "from the strategies of `tests/test_fuzz_parsers.py` (which runs 60 of each in the suite). "
        "Rejected: a `ConfigError` naming the file and the problem. Unclear: a `ConfigError` that does not "
        "name the file. Crash: any other exception, a traceback for the user. A parse counts only if what it "
        "returned works: prices are looked up and priced, tools digested, tasks scored. The inputs that "
        "crashed a parser when this bench was first run (non-UTF-8 text, numbers past 4,300 digits, deep "
        "nesting, NaN or negative prices, environment names the OS refuses, `~user` paths) are kept as "
        "`@example` regressions in the tests.",
        "",
        "| parser | what reads it | examples | accepted | rejected (clear error) | unclear | crashes | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    readers = {
        "manifest": "`load_manifest` + `Settings.resolve` (pyproject.toml, or langgraph.json and its .env)",
        "prices": "`PriceTable.from_file`, `price_table`, `lookup`, `context_window`",
        "catalog": "`read_catalog`, `ToolDoc.digest` / `param_text`, `schema_tokens`",
        "tasks": "`load_tasks`, `score`",
        "queries": "`read_queries`",
    }
    for name, r in results.items():
        c = r["counts"]
        total = sum(c.values())
        rows.append(
            f"| {name} | {readers.get(name, '')} | {total:,} | {c['accepted']:,} | {c['rejected']:,} | "
            f"{c['unclear']:,} | {c['crash']:,} | {r['seconds']:.0f} |"
        )
    return "\n".join(rows) + "\n"


def write_docs(text: str) -> None:
    """Put `text` between the fuzz markers of docs/reliability.md (others keep their own sections there)."""
    splice(DOCS, f"{START}\n{text}{END}", START, END, "Reliability")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000, help="generated inputs per parser")
    parser.add_argument("--only", action="append", choices=sorted(TARGETS), help="fuzz only these parsers")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--docs", action="store_true", help="write the counts into docs/reliability.md")
    args = parser.parse_args(argv)
    results = {}
    for name in args.only or list(TARGETS):
        r = results[name] = fuzz(TARGETS[name], args.examples, args.seed)
        c = r["counts"]
        print(
            f"{name:9} {sum(c.values()):6} examples: {c['accepted']:6} accepted, {c['rejected']:6} rejected, "
            f"{c['unclear']:4} unclear, {c['crash']:4} crashes  ({r['seconds']:.1f} s)",
            flush=True,
        )
        for signature, (message, files) in r["failures"].items():
            shown = {k: (v[:300] + b"..." if len(v) > 300 else v) for k, v in files.items()}
            print(f"    {signature}\n        {message[:200]}\n        {shown!r}")
    text = section(results, args.examples, args.seed)
    if args.docs:
        write_docs(text)
        print(f"wrote {DOCS.relative_to(ROOT)}")
    bad = sum(r["counts"]["crash"] + r["counts"]["unclear"] for r in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
