"""Which llama.cpp load settings are safe on this CPU: found by a probe in a child process, kept per machine.

llama.cpp's CPU backend chooses its fast paths from what the CPU reports. With its *extra buffer types* on
(the default) it keeps weights in AMX tiles on Intel CPUs that have AMX, and in repacked layouts on others.
On some machines such a path dies with SIGSEGV at the first prompt of more than one token (seen on a
Sapphire Rapids-class Xeon in a VM: `ggml_backend_amx_mul_mat`), and a wheel built for another CPU dies
with SIGILL. A native crash takes the whole process down before any Python handler runs, so it can only be
found from outside: a child process loads the model with the fast settings and decodes a multi-token
prompt. If the child dies by a signal, the model is loaded with the extra buffer types off (slower where
the fast path works, correct everywhere), and one line says so.

The outcome is cached per machine (CPU model and flags, llama-cpp-python's version and build, the model
file) in `probe.json` beside the model files, so a machine probes once. `ORCH_LLAMA_EXTRA_BUFFERS` overrides
it: `on` (never probe, always fast), `off` (never probe, always safe), `auto` (the default: probe).

Run as `python -m orchestrator.providers.llama_probe MODEL.gguf [--extra-buffers on|off]`, this module is
the probe's child: it prints one JSON line with the decoding speeds it measured.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import LocalEngineError

__all__ = [
    "ENV",
    "ProbeOutcome",
    "before_llama_loads",
    "engine_settings",
    "extra_buffers_for",
    "load_params",
    "override",
]

ENV = "ORCH_LLAMA_EXTRA_BUFFERS"
_CHOICES = ("auto", "on", "off")
_TIMEOUT_S = 300.0  # a 1.5B model loads in ~3 s and decodes the prompt in ~2 s; a busy machine is slower
# A prompt of about 150 tokens: the batched matrix products a real prompt makes (a one-token prompt
# takes another path and decodes fine where the fast path crashes)
_PROMPT = " ".join(
    f"Item {i}: the quick brown fox jumps over the lazy dog, and the count is now {i * 7}." for i in range(6)
)
_GENERATE = 8
CHILD = [sys.executable, "-m", __name__]  # the probe's child process (the tests put one that crashes here)
_patch_lock = threading.Lock()
_process_choice: dict[str, bool] = {}  # model file -> extra buffers, decided in this process
_log = logging.getLogger("orchestrator.models")  # the CLI shows these records on stderr


@dataclass(frozen=True)
class ProbeOutcome:
    """What one probe of a setting found: it ran (with its speeds) or its child died, and how."""

    extra_buffers: bool
    ok: bool
    how: str  # "ok", "SIGSEGV", "SIGILL", "exit 1", "timeout after 300 s"
    prompt_tps: float | None = None
    generation_tps: float | None = None
    detail: str = ""  # the child's last stderr line, when it failed without a signal


def _setting_name(extra_buffers: bool) -> str:
    return "extra buffer types on" if extra_buffers else "extra buffer types off"


def cpu_name() -> str:
    """The CPU's model name, as the OS reports it."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_flags() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    return platform.machine()


def before_llama_loads() -> None:
    """Settings llama.cpp's native runtime reads when it loads: call before the first `import llama_cpp`.

    Its threads wait for each other at every barrier of every token (OpenMP, GCC's libgomp). libgomp spins
    300,000 times before it sleeps: on idle cores that is the fastest wait, but on busy ones a spinning
    thread holds a core its partner needs. Measured here (`docs/benchmarks.md`, "The local engine on this
    CPU"): with 20,000 spins, generation is as fast as the default on idle cores (within 6% either way) and
    about twice as fast with the cores busy; sleeping at once (`OMP_WAIT_POLICY=PASSIVE`) is faster still
    when busy but 7-35% slower when idle. A user's own `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` is kept.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "20000")


def _llama_build() -> str:
    """llama-cpp-python's version and its native libraries' sizes and times: a rebuild is another build."""
    before_llama_loads()
    try:
        import llama_cpp
    except ImportError:
        return "not installed"
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    libs = sorted(lib_dir.glob("*.so*")) + sorted(lib_dir.glob("*.dylib")) + sorted(lib_dir.glob("*.dll"))
    stats = ",".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in libs)
    return f"{getattr(llama_cpp, '__version__', '?')}|{stats}"


def _key(model_path: str) -> str:
    st = os.stat(model_path)
    parts = [cpu_name(), _cpu_flags(), _llama_build(), os.path.basename(model_path), str(st.st_size)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


# --- the child ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def load_params(extra_buffers: bool) -> Iterator[None]:
    """While open, models that llama-cpp-python loads get `use_extra_bufts = extra_buffers`.

    `Llama()` (0.3.36) takes no keyword for the field and drops unknown ones, so the field is set on the
    params llama.cpp's defaults give, by wrapping `llama_model_default_params` for the load. Loads in this
    process take turns on one lock, so no other load sees the wrapper.
    """
    before_llama_loads()
    import llama_cpp.llama_cpp as lib

    with _patch_lock:
        original = lib.llama_model_default_params
        if extra_buffers:
            yield
            return

        def safe_defaults() -> Any:
            params = original()
            params.use_extra_bufts = False
            return params

        lib.llama_model_default_params = safe_defaults
        try:
            yield
        finally:
            lib.llama_model_default_params = original


def _child(model_path: str, extra_buffers: bool, n_threads: int) -> dict[str, Any]:
    before_llama_loads()
    import llama_cpp.llama_cpp as lib
    import numpy as np
    from llama_cpp import Llama

    with load_params(extra_buffers):
        llama = Llama(model_path=model_path, n_ctx=1024, n_threads=n_threads, verbose=False)
    tokens = llama.tokenize(_PROMPT.encode(), add_bos=False)
    t0 = time.perf_counter()
    llama.eval(tokens)
    t1 = time.perf_counter()
    n_vocab = int(llama.n_vocab())
    for _ in range(_GENERATE):
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(llama._ctx.ctx, -1), shape=(n_vocab,))
        llama.eval([int(logits.argmax())])
    t2 = time.perf_counter()
    return {
        "prompt_tokens": len(tokens),
        "prompt_tps": len(tokens) / (t1 - t0),
        "generation_tps": _GENERATE / (t2 - t1),
    }


# --- the parent -----------------------------------------------------------------------------------------
def probe(
    model_path: str, extra_buffers: bool, *, n_threads: int = 2, command: Sequence[str] | None = None
) -> ProbeOutcome:
    """Load `model_path` and decode a multi-token prompt in a child process; how the child ended.

    `command` replaces `CHILD`, the child's interpreter and module.
    """
    base = list(command) if command is not None else CHILD
    argv = [
        *base,
        model_path,
        "--extra-buffers",
        "on" if extra_buffers else "off",
        "--threads",
        str(n_threads),
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return ProbeOutcome(extra_buffers, False, f"timeout after {_TIMEOUT_S:.0f} s")
    if done.returncode < 0:
        return ProbeOutcome(extra_buffers, False, _signal_name(-done.returncode))
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [""])[-1][:300]
        return ProbeOutcome(extra_buffers, False, f"exit {done.returncode}", detail=tail)
    try:
        speeds = json.loads(lines[-1])
        return ProbeOutcome(
            extra_buffers, True, "ok", float(speeds["prompt_tps"]), float(speeds["generation_tps"])
        )
    except (ValueError, KeyError, TypeError):
        return ProbeOutcome(extra_buffers, False, "exit 0 without a result", detail=lines[-1][:300])


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def override() -> bool | None:
    """What `ORCH_LLAMA_EXTRA_BUFFERS` forces: True (on), False (off), None (auto: probe)."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        raise LocalEngineError(f"{ENV}={value!r} is not one of {', '.join(_CHOICES)}; unset it or pick one")
    return None if value == "auto" else value == "on"


def _read(cache: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(cache: Path, data: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # a cache that can't be written only means probing again
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, cache)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Processes starting at once probe one at a time (the second then reads the first's outcome)."""
    try:
        import fcntl
    except ImportError:  # Windows: two probes at once cost time, not correctness
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def engine_settings(
    model_path: str,
    model_name: str,
    cache: Path,
    *,
    n_threads: int = 2,
    command: Sequence[str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """The probe's record for this machine and model file: probed now unless cached (or `force`d).

    Raises `LocalEngineError` when the model crashes with every setting.
    """
    key = _key(model_path)
    if not force and (record := _read(cache).get(key)) is not None:
        return dict(record)
    with _file_lock(cache.with_name(cache.name + ".lock")):
        if not force and (record := _read(cache).get(key)) is not None:
            return dict(record)
        _log.info("%s: checking llama.cpp's fast path on this CPU (once per machine)", model_name)
        fast = probe(model_path, True, n_threads=n_threads, command=command)
        record = {
            "model": os.path.basename(model_path),
            "cpu": cpu_name(),
            "llama_cpp": _llama_build().split("|", 1)[0],
            "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "extra_buffers": True,
            "fast": fast.how,
            "prompt_tps": fast.prompt_tps,
            "generation_tps": fast.generation_tps,
        }
        if not fast.ok:
            safe = probe(model_path, False, n_threads=n_threads, command=command)
            if not safe.ok:
                raise LocalEngineError(_crashed_both(model_name, fast, safe))
            record.update(
                extra_buffers=False, safe="ok", prompt_tps=safe.prompt_tps, generation_tps=safe.generation_tps
            )
            _log.warning("%s", _fell_back(model_name, fast))
        if not fast.how.startswith("timeout"):  # a timeout may be a busy machine: probe again next time
            data = _read(cache)
            data[key] = record
            _write(cache, data)
        return record


def extra_buffers_for(
    model_path: str,
    model_name: str,
    cache: Path,
    *,
    n_threads: int = 2,
) -> bool:
    """Whether to load `model_path` with llama.cpp's extra buffer types: the override, else the probe."""
    forced = override()
    if forced is not None:
        return forced
    known = _process_choice.get(model_path)
    if known is None:
        known = bool(engine_settings(model_path, model_name, cache, n_threads=n_threads)["extra_buffers"])
        _process_choice[model_path] = known
    return known


def _fell_back(model_name: str, fast: ProbeOutcome) -> str:
    detail = f" ({fast.detail})" if fast.detail else ""
    return (
        f"{model_name}: llama.cpp {_died(fast)}{detail} decoding a test prompt with its extra buffer types "
        f"(AMX / repacked weights) on this CPU ({cpu_name()}); loading it with them off from now on. "
        f"To force them on: {ENV}=on"
    )


def _crashed_both(model_name: str, fast: ProbeOutcome, safe: ProbeOutcome) -> str:
    return (
        f"{model_name}: llama.cpp {_died(fast)} with its extra buffer types on and {_died(safe)} "
        "with them off, "
        f"decoding a test prompt on this CPU ({cpu_name()}): this llama-cpp-python build does not run here "
        "(a wheel built on another machine?). Rebuild it for this CPU: "
        "pip install --force-reinstall --no-cache-dir 'llama-cpp-python==0.3.36'"
    )


def _died(outcome: ProbeOutcome) -> str:
    if outcome.how.startswith("SIG") or outcome.how.startswith("signal"):
        return f"crashed ({outcome.how})"
    return f"failed ({outcome.how})"


def _main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m orchestrator.providers.llama_probe")
    parser.add_argument("model")
    parser.add_argument("--extra-buffers", choices=["on", "off"], default="on")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    result = _child(args.model, args.extra_buffers == "on", args.threads)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
