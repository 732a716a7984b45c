"""The NLU++ slot-extraction trial (bench/nlupp.py) on the real 0.5B workhorse: three converted banking items.

Like tests/test_local_models.py: marked e2e, skipped with ORCH_SKIP_LOCAL=1 or when the shared data set
(../shared/data/extraction/nlupp, or $NLUPP_DATA) is absent. No accuracy threshold: it checks the report's
shape, and that validity is measured as it is (a grammar-constrained record is valid at once; a record cut
off by the token limit is invalid, stays so after its repair, and counts so).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Orchestrator, Settings, SlotConfig
from orchestrator.evals.trial import run_trial, score

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("ORCH_SKIP_LOCAL") == "1", reason="ORCH_SKIP_LOCAL=1"),
]
ROOT = Path(__file__).resolve().parent.parent


def _nlupp() -> Any:
    spec = importlib.util.spec_from_file_location("bench_nlupp", ROOT / "bench" / "nlupp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the output model's annotations in its module
    spec.loader.exec_module(module)
    if not (module.DATA / "data" / "banking").is_dir():
        pytest.skip(f"{module.DATA} is absent (the shared data sets sit beside the repository)")
    return module


async def test_nlupp_trial_on_the_local_workhorse(tmp_path: Path) -> None:
    nlupp = _nlupp()
    items = nlupp.sample()[:3]
    assert all(set(i) == {"input", "expected"} and set(i["expected"]) <= set(nlupp.SLOTS) for i in items)
    worker = nlupp.worker(escalate=False)
    cut_off = dataclasses.replace(worker, name="cut_off", max_tokens=4)  # no record fits in 4 tokens
    orch = Orchestrator(
        settings=Settings(traces_path=tmp_path / "t.db", checkpoints_path=tmp_path / "c.db"),
        slots={"extract": SlotConfig(model=nlupp.WORKHORSE, role="workhorse")},
        workers=[worker, cut_off],
        tracing=False,
    )
    try:
        report = await run_trial(orch, nlupp.WORKHORSE, worker.name, items, compare=False, racehorse=False)
        bad = await run_trial(orch, nlupp.WORKHORSE, "cut_off", items[:1], compare=False, racehorse=False)
    finally:
        orch.close()

    out = report.to_dict()
    assert out["items"] == 3 and out["model"] == nlupp.WORKHORSE and out["worker"] == "nlupp_banking"
    assert set(out) >= {
        "accuracy", "accuracy_escalated", "validity_before_repair", "validity", "escalation_rate",
        "cost_per_1k_usd", "compute_s_per_1k", "p50_ttft_ms", "tokens_per_s", "verdict",
    }  # fmt: skip
    # validity as measured: every final record is one the output model accepts, and the figures agree
    for item in report.items:
        assert item.valid and item.value is not None and not item.escalated
        nlupp.BankingSlots.model_validate(item.value)
        assert item.score == score(worker, item.value, item.expected) and 0.0 <= item.score <= 1.0
    assert out["validity_before_repair"] == 1.0 and out["validity"] == 1.0  # a grammar shapes the record
    assert out["escalation_rate"] == 0.0 and 0.0 <= out["accuracy"] <= 1.0
    assert out["compute_s_per_1k"] > 0 and out["p50_ttft_ms"] is not None and out["tokens_per_s"] > 0
    assert out["cost_per_1k_usd"] == 0.0  # local models are priced 0

    # a record cut off by the token limit: invalid at first, still invalid after its one repair
    cut = bad.to_dict()
    assert (cut["validity_before_repair"], cut["validity"], cut["accuracy"]) == (0.0, 0.0, 0.0)
    assert bad.items[0].value is None and "failed validation after 1 repair" in (bad.items[0].error or "")
