"""One way to write money and time: `orch traces top` and the HTML report's summary line say the same
compute time and cost for the same run (there were two `_ms`: the report wrote `7.2 ms` where the CLI
wrote `7 ms`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.formats import format_ms, format_usd, json_object
from orchestrator.tracing import Tracing
from orchestrator.tracing import attrs as A
from orchestrator.tracing.spans import open_span
from orchestrator.tracing.store import TraceStore


def test_money_and_time_are_written_one_way() -> None:
    assert [format_ms(v) for v in (None, 0.4, 7.25, 999.4, 1000.0, 61_234.0)] == [
        "-", "0 ms", "7 ms", "999 ms", "1.00 s", "61.23 s",
    ]  # fmt: skip
    assert [format_usd(v) for v in (None, 0.0, 0.000042, 0.0123, 12.5)] == [
        "?", "$0.000000", "$0.000042", "$0.0123", "$12.5000",
    ]  # fmt: skip
    assert format_usd(0.5, unpriced=3) == "$0.5000 (+? x3)"


def _run_with_one_call(db: Path, compute_ms: float, cost: float) -> str:
    """A traced run with one model call of known compute time and cost, through the real exporter."""
    store = TraceStore(db)
    tracing = Tracing(store)
    run_id = "run-formats"
    store.start_run(run_id, "g", config_hash="test", version="test")
    base = {A.RUN_ID: run_id}
    with (
        open_span(tracing.tracer, "invoke_workflow g", "run", base),
        open_span(tracing.tracer, "invoke_agent work", "node", {**base, A.NODE: "work"}),
        open_span(
            tracing.tracer,
            "chat local:m",
            "chat",
            {**base, A.NODE: "work", A.REQUEST_MODEL: "local:m", A.COST: cost, A.COMPUTE_MS: compute_ms},
        ),
    ):
        pass
    tracing.close()
    store.end_run(run_id, status="ok", cost_usd=cost, input_tokens=1, output_tokens=1)
    store.close()
    return run_id


def test_the_cli_and_the_html_report_write_the_same_time_and_money(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "traces.db"
    run_id = _run_with_one_call(db, compute_ms=7.25, cost=0.000042)
    assert cli.main(["traces", "top", "--run", run_id, "--traces", str(db)]) == 0
    top = capsys.readouterr().out
    row = next(line for line in top.splitlines() if " work " in line)
    assert "7 ms" in row and "$0.000042" in row, top
    html = str(tmp_path / "r.html")
    assert cli.main(["traces", "report", run_id, "--html", html, "--traces", str(db)]) == 0
    line = capsys.readouterr().out
    assert re.search(r"cost \$0\.000042, compute time 7 ms;", line), line
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "7 ms" in page and "7.2 ms" not in page and "7.3 ms" not in page


def test_a_json_reply_is_read_the_same_way_by_the_plan_and_the_judge() -> None:
    from orchestrator.agent.decisions import DecisionError, parse_plan

    assert json_object(' ```json\n{"a": 1}\n``` ') == {"a": 1}
    with pytest.raises(ValueError, match=r"not a JSON object but a JSON list"):
        json_object("[1]")
    with pytest.raises(ValueError, match=r"not valid JSON .*: '\{\"a\":'"):
        json_object('{"a": ')
    # the plan parser raises its own error with the same words
    with pytest.raises(DecisionError, match="not a JSON object"):
        parse_plan("```json\n[1]\n```", ["summarize"])
