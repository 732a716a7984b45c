"""llama-cpp-python's OpenAI-compatible server, loading its model with the settings the CPU probe chose.

`python -m llama_cpp.server` loads models with llama.cpp's extra buffer types on, and its settings (0.3.36)
have no option to turn them off; on a CPU whose fast path crashes (see `llama_probe`) it dies at the first
request. This launcher takes the same arguments, probes the `--model` file once per machine (the outcome
shared with in-process models through `probe.json` in the model folder), and starts the server with the
setting that passed. `ORCH_LLAMA_EXTRA_BUFFERS=on|off` skips the probe, as for in-process models.

    python -m orchestrator.providers.llama_server --model qwen.gguf --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import logging
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator.errors import ConfigError
from orchestrator.providers.llama_probe import before_llama_loads, extra_buffers_for, load_params

__all__ = ["main"]


def _option(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Probe the model (once per machine), then run `llama_cpp.server` with `argv` in this process."""
    from orchestrator.config import Settings

    before_llama_loads()
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    model = _option(args, "--model")
    if model is None or not Path(model).is_file():
        print(f"error: --model must name a GGUF file (got {model!r})", file=sys.stderr)
        return 2
    threads = _option(args, "--n_threads")
    try:
        extra = extra_buffers_for(
            model,
            f"llama_cpp.server {Path(model).name}",
            Settings.resolve(None).models_dir / "probe.json",
            n_threads=int(threads) if threads and threads.isdigit() else 2,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.argv = ["llama_cpp.server", *args]
    with load_params(extra):  # for the server's life: every model it loads gets the probed setting
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
