"""The local engine on this CPU: which llama.cpp settings run, how fast, idle and with the cores busy.

Each case is the CPU probe's own child (`python -m orchestrator.providers.llama_probe`): a new process loads
the model with the setting, evaluates a ~140-token prompt and generates 8 tokens, and prints its speeds, or
dies by a signal. Cases are interleaved, `--rounds` times, medians reported. "Busy" runs the same cases while
two other processes spin on the two cores (a loaded CI machine, a shared host). The demo is timed from a new
process to its exit, with the probe's cache removed first (the probe included) and then kept.

    python bench/engine.py [--rounds 3] [--no-demo]

Writes its section of docs/benchmarks.md between its markers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from markers import splice  # noqa: E402

from orchestrator.config import Settings  # noqa: E402
from orchestrator.modelfiles import LOCAL_MODELS  # noqa: E402
from orchestrator.providers import llama_probe  # noqa: E402

START, END = "<!-- engine:start -->", "<!-- engine:end -->"
DEMO_INPUT = (
    "How many days are there between 2026-03-02 and 2026-03-20? Also classify this customer message: "
    "'My new card was ordered on 2026-03-02 and still has not arrived.'"
)


def _spin(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def _case(model: Path, extra: bool, wait: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_WAIT_POLICY": wait}
    argv = [*llama_probe.CHILD, str(model), "--extra-buffers", "on" if extra else "off", "--threads", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        return {
            "crash": llama_probe._signal_name(-done.returncode)
            if done.returncode < 0
            else f"exit {done.returncode}"
        }
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure(rounds: int, busy: bool) -> dict[tuple[str, bool, str], list[dict[str, Any]]]:
    models_dir = Settings.resolve(None).models_dir
    cases = [
        (name, extra, wait)
        for name in ("qwen2.5-0.5b", "qwen2.5-1.5b")
        for extra in (True, False)
        for wait in ("ACTIVE", "PASSIVE")
    ]
    results: dict[tuple[str, bool, str], list[dict[str, Any]]] = {c: [] for c in cases}
    spinners: list[multiprocessing.Process] = []
    if busy:
        stop_at = time.time() + 3600
        spinners = [multiprocessing.Process(target=_spin, args=(stop_at,), daemon=True) for _ in range(2)]
        for p in spinners:
            p.start()
    try:
        for r in range(rounds):
            for case in cases:
                name, extra, wait = case
                if results[case] and "crash" in results[case][0]:
                    continue  # a crash is a crash: once is enough
                out = _case(LOCAL_MODELS[name].path(models_dir), extra, wait)
                results[case].append(out)
                print(
                    f"{'busy' if busy else 'idle'} round {r + 1} {name} extra={extra} {wait}: {out}",
                    file=sys.stderr,
                )
    finally:
        for p in spinners:
            p.terminate()
    return results


def demo_time(fresh_probe: bool) -> tuple[float, int, str]:
    probe = Settings.resolve(None).models_dir / "probe.json"
    if fresh_probe:
        probe.unlink(missing_ok=True)
    t0 = time.perf_counter()
    done = subprocess.run(
        [str(ROOT / ".venv/bin/orch"), "--project", str(ROOT), "run", "assistant", DEMO_INPUT, "--json"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    elapsed = time.perf_counter() - t0
    answer = ""
    if done.returncode == 0:
        answer = str(json.loads(done.stdout).get("answer") or "")
    return elapsed, done.returncode, answer


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cell(runs: list[dict[str, Any]], key: str) -> str:
    if runs and "crash" in runs[0]:
        return f"crashed ({runs[0]['crash']})"
    return f"{_median([r[key] for r in runs]):.1f}"


def section(
    idle: dict[tuple[str, bool, str], list[dict[str, Any]]],
    busy: dict[tuple[str, bool, str], list[dict[str, Any]]],
    rounds: int,
    demos: list[tuple[str, float, int, str]],
) -> str:
    cpu = llama_probe.cpu_name()
    rows = [
        START,
        "## The local engine on this CPU",
        "",
        f"`python bench/engine.py --rounds {rounds}`, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}, llama-cpp-python 0.3.36 compiled here by the Makefile (native). "
        "Each case is the CPU probe's child in a new process: load, a 136-token prompt, 8 generated tokens; "
        f"median of {rounds} interleaved rounds, tokens per second. Busy: two other processes spin on the two "
        "cores meanwhile. `OMP_WAIT_POLICY` is how llama.cpp's OpenMP threads wait for each other "
        "(ACTIVE spins, PASSIVE sleeps).",
        "",
        "| model | extra buffer types | OpenMP wait | prompt tok/s idle | generation tok/s idle | prompt tok/s busy | generation tok/s busy |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in idle:
        name, extra, wait = key
        rows.append(
            f"| {name} | {'on' if extra else 'off'} | {wait} | {_cell(idle[key], 'prompt_tps')} | "
            f"{_cell(idle[key], 'generation_tps')} | {_cell(busy.get(key, []), 'prompt_tps')} | "
            f"{_cell(busy.get(key, []), 'generation_tps')} |"
        )
    if demos:
        rows += [
            "",
            "The demo (`orch run assistant <DEMO_INPUT> --json`, a new process to its exit, models loaded in it):",
            "",
            "| case | wall time | exit | answer |",
            "|---|---|---|---|",
        ]
        for label, elapsed, code, answer in demos:
            rows.append(f"| {label} | {elapsed:.1f} s | {code} | {answer[:90].replace('|', '/')} |")
    rows.append(END)
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--no-busy", action="store_true")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    idle = measure(args.rounds, busy=False)
    busy = {} if args.no_busy else measure(args.rounds, busy=True)
    demos: list[tuple[str, float, int, str]] = []
    if not args.no_demo:
        for label, fresh in (
            ("first run on the machine (probe included)", True),
            ("later runs (probe cached)", False),
        ):
            elapsed, code, answer = demo_time(fresh)
            demos.append((label, elapsed, code, answer))
            print(f"demo {label}: {elapsed:.1f} s rc {code} {answer!r}", file=sys.stderr)
    block = section(idle, busy, args.rounds, demos)
    splice(args.doc, block, START, END, "Benchmarks")
    print(block)
    print(f"(written to {shlex.quote(str(args.doc))})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
