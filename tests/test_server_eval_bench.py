"""`bench/server_eval.py` binds the `controller` slot to llama-cpp-python's server on loopback, an
`openai-compat:` model: unset, the run deadline would be the network default (120 s), which the in-process
eval it is compared with does not have. On a shared 2-core machine a slice run stopped a task at 120 s
(`budget_stop`, no answer) that the saved run had answered in 30 s."""

from __future__ import annotations

from pathlib import Path

import bench.server_eval as bench_server_eval
from orchestrator import load_manifest
from orchestrator.config import DEFAULT_DEADLINE_S


def test_server_eval_runs_have_no_network_deadline(tmp_path: Path) -> None:
    orch = bench_server_eval.orchestrator("http://127.0.0.1:9/v1", tmp_path)  # nothing is called
    try:
        assert orch.slots["controller"].profile.provider == "openai-compat"
        assert orch.limits.deadline_s is not None and orch.limits.deadline_s >= 30 * DEFAULT_DEADLINE_S
        manifest = load_manifest(bench_server_eval.ROOT).limits
        assert (orch.limits.max_steps, orch.limits.max_tokens) == (manifest.max_steps, manifest.max_tokens)
    finally:
        orch.close()
