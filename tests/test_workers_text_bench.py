"""`bench/workers_text.py` reads how each item ended from the trial's `ItemResult`. The trial counts an item
as escalated when it went up the chain, valid or not; the bench's "rescued" column must count only the items
made valid up there (a slice run showed summarize "100% (100%)" escalated (rescued) with 0 % valid)."""

from __future__ import annotations

from typing import Any

import bench.workers_text as bench_workers_text
from orchestrator.evals.trial import ItemResult


def _done(valid_first: bool, valid: bool, went_up: bool) -> ItemResult:
    return ItemResult(
        input="text",
        expected=None,
        value="a summary." if valid else None,
        score_alone=0.0,
        score=0.0,
        valid_first=valid_first,
        valid=valid,
        escalated=went_up,
        cost_usd=None,
        compute_ms=1000.0,
        ttft_ms=None,
        output_tokens=0,
        generation_ms=0.0,
    )


def _row(done: ItemResult) -> dict[str, Any]:
    return {
        **bench_workers_text.outcome(done),
        "own_compute_s": 1.0,
        "compute_s": 2.0 if done.escalated else 1.0,
        "judge_score": 4 if done.valid else None,
    }


def test_rescued_counts_only_items_made_valid_up_the_chain() -> None:
    rows = [
        _row(_done(valid_first=True, valid=True, went_up=False)),
        _row(_done(valid_first=False, valid=False, went_up=True)),  # went up, still invalid
        _row(_done(valid_first=False, valid=True, went_up=True)),  # went up, made valid there
    ]
    up = bench_workers_text.figures(rows)
    assert (up["went_up"], up["rescued"], up["valid"]) == (2 / 3, 1 / 3, 2 / 3)
    off = bench_workers_text.figures(rows, escalation=False)  # the same run read up to its repair
    assert (off["valid"], off["judged"]) == (1 / 3, 1)
    report = {
        "date": "2026-01-01",
        "machine": "test",
        "judge_calls": 0,
        "judge_compute_s": 0.0,
        "runs": [
            {
                "setup": "0.5B, escalation to 1.5B",
                "model": bench_workers_text.SMALL,
                "worker": "summarize",
                "items": rows,
            }
        ],
    }
    table = bench_workers_text.markdown(report)
    assert "| summarize | 0.5B, escalation to 1.5B | 33% | 67% | 67% (33%) |" in table
    assert "| summarize | 0.5B, escalation off | 33% | 33% | 0% (0%) |" in table
