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
from orchestrator.providers import llama_probe  # noqa: E402
from orchestrator.providers.modelfiles import LOCAL_MODELS  # noqa: E402

START, END = "<!-- engine:start -->", "<!-- engine:end -->"
DEMO_INPUT = (
    "How many days are there between 2026-03-02 and 2026-03-20? Also classify this customer message: "
    "'My new card was ordered on 2026-03-02 and still has not arrived.'"
)


def _spin(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def _case(python: str, model: Path, extra: bool, wait: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(ROOT)
    if wait == "ours":  # what the orchestrator sets (llama_probe.before_llama_loads), as a user gets it
        pass
    elif wait == "default":  # libgomp's own: spin 300,000 times, then sleep (empty: the child sets nothing)
        env["OMP_WAIT_POLICY"] = ""
    elif wait.startswith("spin="):  # libgomp's default policy with another spin count
        env["OMP_WAIT_POLICY"], env["GOMP_SPINCOUNT"] = "", wait.split("=", 1)[1]
    else:
        env["OMP_WAIT_POLICY"] = wait
    argv = [python, "-m", llama_probe.__name__, str(model), "--extra-buffers", "on" if extra else "off"]
    argv += ["--threads", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        return {
            "crash": llama_probe._signal_name(-done.returncode)
            if done.returncode < 0
            else f"exit {done.returncode}"
        }
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


Case = tuple[str, str, bool, str]  # build, model, extra buffer types, OpenMP wait policy


def measure(
    rounds: int, busy: bool, builds: dict[str, str], waits: list[str], extras: tuple[bool, ...] = (True, False)
) -> dict[Case, list[dict[str, Any]]]:
    models_dir = Settings.resolve(None).models_dir
    cases = [
        (build, name, extra, wait)
        for name in ("qwen2.5-0.5b", "qwen2.5-1.5b")
        for build in builds
        for extra in extras
        for wait in waits
    ]
    results: dict[Case, list[dict[str, Any]]] = {c: [] for c in cases}
    spinners: list[multiprocessing.Process] = []
    if busy:
        stop_at = time.time() + 3600
        spinners = [multiprocessing.Process(target=_spin, args=(stop_at,), daemon=True) for _ in range(2)]
        for p in spinners:
            p.start()
    try:
        for r in range(rounds):
            for case in cases:
                build, name, extra, wait = case
                if results[case] and "crash" in results[case][0]:
                    continue  # a crash is a crash: once is enough
                out = _case(builds[build], LOCAL_MODELS[name].path(models_dir), extra, wait)
                results[case].append(out)
                print(f"{'busy' if busy else 'idle'} round {r + 1} {case}: {out}", file=sys.stderr)
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
    idle: dict[Case, list[dict[str, Any]]],
    busy: dict[Case, list[dict[str, Any]]],
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
        "cores meanwhile. The OpenMP wait is how llama.cpp's threads wait for each other at every barrier: "
        "`OMP_WAIT_POLICY` ACTIVE spins, PASSIVE sleeps, default (unset) spins 300,000 times then sleeps, "
        "spin=N sets libgomp's `GOMP_SPINCOUNT` to N with the policy unset.",
        "",
        "| model | build | extra buffer types | OpenMP wait | prompt tok/s idle | generation tok/s idle | prompt tok/s busy | generation tok/s busy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in idle:
        build, name, extra, wait = key
        rows.append(
            f"| {name} | {build} | {'on' if extra else 'off'} | {wait} | {_cell(idle[key], 'prompt_tps')} | "
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
    parser.add_argument("--waits", default="default,ACTIVE,PASSIVE", help="OpenMP waits to compare (comma-separated)")
    parser.add_argument("--extra", default="on,off", help="extra buffer type settings to compare")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--build",
        action="append",
        default=[],
        metavar="LABEL=PYTHON",
        help="another llama-cpp-python build to measure: an interpreter that has it (e.g. a venv with a portable wheel)",
    )
    args = parser.parse_args()
    builds = {"native": sys.executable, **dict(b.split("=", 1) for b in args.build)}
    waits = args.waits.split(",")
    extras = tuple(e == "on" for e in args.extra.split(","))
    idle = measure(args.rounds, busy=False, builds=builds, waits=waits, extras=extras)
    busy = {} if args.no_busy else measure(args.rounds, busy=True, builds=builds, waits=waits, extras=extras)
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
