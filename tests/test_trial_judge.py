"""`orch trial --judge`: a free-text worker's outputs scored 1-5 by another slot's model, apart from its cost.

The scripted models answer over a real loopback HTTP server, each reply derived from the request: the
workers summarize by keeping the source's first sentence, and the judge answers yes or no to what it is shown
(sure of it: a margin of 3 nats). It is calibrated first (`test_calibration.py`): it answers yes to the
known-good outputs of the calibration set and no to the rest, so it passes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from loopback import Loopback, Reply, Request
from wire import openai_stream, openai_usage

from orchestrator.evals.judge import JUDGE_INSTRUCTIONS, JUDGE_QUESTIONS, judge_prompt, p_yes, parse_answer
from orchestrator.workers.definitions import summarize_worker

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = [
    json.loads(line) for line in (ROOT / "orchestrator/data/judge-calibration.jsonl").read_text().splitlines()
]
SURE = (-0.05, -3.05)  # the judge's answer and its runner-up, in log-probability: a margin of 3 nats
YES, NO = 1 + 4 * p_yes(True, 3.0), 1 + 4 * p_yes(False, 3.0)  # the scores of a sure yes and a sure no
JUDGE_USAGE = (100, 10)  # every judge reply: 100 input tokens, 10 output
JUDGE_PRICES = (1e-5, 4e-5)  # the controller slot's prices, per token
SOURCES = [
    # kept whole by `small` (its first sentence), judged a sure yes
    "Invoice 4471 from Nordic Parts was paid on 2026-02-03. The amount was 1200 EUR and Lena Berg "
    "approved it after a check of the delivery notes. Nothing else is open on that account.",
    # the judge answers "Yes." with no log-probabilities: a certain yes, 5
    "The Porto warehouse shipped 36 pallets on Monday. Carla Sousa counted them twice because the scanner "
    "in bay 7 was down again, and the driver left at 18:40 with all of them.",
    # the judge answers neither yes nor no: unjudged, and the trial goes on
    "The Oslo team closed 14 tickets this week. Erik Dahl says the queue is the shortest since March and "
    "that nobody needs to work on Saturday.",
    # `small` adds a year the source lacks; after its repair it escalates to the racehorse
    "The Lagos depot reopens after the flood repairs. Ade Okafor ordered 40 new shelves and the electric "
    "work is signed off, so the first trucks come back on Friday.",
    # rich markup inside the text: shown escaped, never read as markup (an unmatched [/bold] would crash)
    "Ticket [/bold] 12 of Acme [red] was closed after the router fix. Done.",
]


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    return " ".join(b.get("text", "") for b in content) if isinstance(content, list) else str(content)


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=\.)\s+", text.strip(), maxsplit=1)[0]


def _tagged(tag: str, text: str) -> str | None:
    found = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.S)
    return found.group(1) if found else None


def _judge(body: dict[str, Any]) -> Reply:
    """The calibration set: yes to its known-good outputs, no to the rest. The trial's outputs: yes when the
    output keeps at most half the source's words, else no; "Yes." without log-probabilities for the Porto
    text, neither yes nor no for the Oslo text."""
    messages = body["messages"]
    task = _text(messages[1])
    source, output = _tagged("source", task), _tagged("output", task)
    usage = openai_usage(*JUDGE_USAGE)
    if source is None or output is None or "<instruction>\n" not in task:
        return openai_stream(["no"], usage, logprobs=[SURE])
    if any(row["source"] == source for row in CALIBRATION):
        good = any(row["source"] == source and row["good"] == output for row in CALIBRATION)
        return openai_stream(["yes" if good else "no"], usage, logprobs=[SURE])
    if "Oslo" in source:
        return openai_stream(["I would say it is a fine summary."], usage)
    if "Porto" in source:
        return openai_stream(["Yes."], usage)
    share = len(output.split()) / len(source.split())
    return openai_stream(["yes" if share <= 0.5 else "no"], usage, logprobs=[SURE])


def scripted(request: Request) -> Reply:
    """Four models on one server, told apart by `model`: `small` (on trial), `current` (in the slot now),
    `big` (the racehorse: escalations, and the judge)."""
    body = request.json()
    if body["messages"][0]["content"] == JUDGE_INSTRUCTIONS:
        assert body["model"] == "big", body["model"]  # only the controller judges here
        return _judge(body)
    source = _text(body["messages"][1])
    summary = _first_sentence(source)
    if body["model"] == "small" and "Lagos" in source:
        summary += " It reopened in 2031."  # a fact the source lacks: adds_no_facts rejects it
    return openai_stream([summary], openai_usage(50, 10))


def _project(tmp_path: Path, url: str) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.orchestrator]
            [tool.orchestrator.slots.summarize]
            model = "openai-compat:current"
            base_url = "{url}"
            prices = {{ input = 1e-6, output = 4e-6 }}
            [tool.orchestrator.slots.controller]
            model = "openai-compat:big"
            base_url = "{url}"
            role = "racehorse"
            prices = {{ input = {JUDGE_PRICES[0]}, output = {JUDGE_PRICES[1]} }}
            """
        )
    )
    return project


def _trial(tmp_path: Path, project: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"input": s, "expected": None}) + "\n" for s in SOURCES))
    env = {**os.environ, "ORCH_TRACES": str(tmp_path / "t.db"), "ORCH_CHECKPOINTS": str(tmp_path / "c.db")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # the judge's calibration is kept there
    cmd = [sys.executable, "-m", "orchestrator", "--project", str(project), "trial", "openai-compat:small"]
    cmd += ["--base-url", _url(project), "--price-as", "gpt-4o-mini", "--worker", "summarize"]
    cmd += ["--data", str(data), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def _url(project: Path) -> str:
    found = re.search(r'base_url = "([^"]+)"', (project / "pyproject.toml").read_text())
    assert found is not None
    return found.group(1)


def test_trial_judges_free_text_outputs_and_bills_the_judge_apart(loopback: Loopback, tmp_path: Path) -> None:
    loopback.handle("/v1/chat/completions", scripted)
    project = _project(tmp_path, loopback.url + "/v1")

    plain = _trial(tmp_path, project, "--no-compare", "--no-racehorse", "--json")
    assert plain.returncode == 0, plain.stderr
    without = json.loads(plain.stdout)
    assert without["judged_score"] is None and without["judged_items"] == 0 and without["judge"] is None
    assert without["judge_cost_usd"] is None and without["judge_compute_s"] is None
    calls_before = len(loopback.requests)

    proc = _trial(tmp_path, project, "--no-compare", "--no-racehorse", "--json", "--judge")  # the controller
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    judged = [r.json() for r in loopback.requests[calls_before:]]
    judged = [b for b in judged if b["messages"][0]["content"] == JUDGE_INSTRUCTIONS]
    # calibrated first: 40 good and 160 bad outputs, a call for each question
    calibration, judge_calls = judged[: 200 * len(JUDGE_QUESTIONS)], judged[200 * len(JUDGE_QUESTIONS) :]
    assert {_tagged("source", _text(b["messages"][1])) for b in calibration} == {
        r["source"] for r in CALIBRATION
    }
    # a call for each question on Invoice, Porto, Lagos (after its escalation) and the ticket; one on Oslo
    # (its first reply is neither yes nor no: unjudged, no more questions)
    questions = len(JUDGE_QUESTIONS)
    assert len(judge_calls) == 4 * questions + 1
    assert out["judge"] == "openai-compat:big"
    assert out["judge_auc"] == 1.0 and out["judge_calibration"]["bads"] == 160
    assert out["judged_items"] == 4
    # Invoice yes (first sentence: 9 of 29 words), Porto a certain yes, Lagos yes (the racehorse's first
    # sentence), the ticket no (its first sentence is nearly all of it)
    assert out["judged_score"] == pytest.approx((YES + 5 + YES + NO) / 4)
    per_call = JUDGE_USAGE[0] * JUDGE_PRICES[0] + JUDGE_USAGE[1] * JUDGE_PRICES[1]
    assert out["judge_cost_usd"] == pytest.approx((4 * questions + 1) * per_call)  # calibration apart:
    assert out["judge_calibration"]["cost_usd"] == pytest.approx(200 * questions * per_call)
    assert out["judge_compute_s"] == 0.0  # a server: no local compute
    # the worker's figures are the same as without a judge: its cost is not mixed in
    for key in ("accuracy", "accuracy_escalated", "validity", "escalation_rate", "cost_per_1k_usd"):
        assert out[key] == pytest.approx(without[key]), key
    assert out["escalation_rate"] == pytest.approx(1 / 5)  # Lagos

    # what the judge was shown: its instructions, the worker's, the source and the output, then each question
    # in turn; asked for the log-probabilities that make its margin
    for call, (_, question) in zip(judge_calls, JUDGE_QUESTIONS, strict=False):
        assert call["messages"][0]["content"].startswith("You check one output")
        task = _text(call["messages"][1])
        assert summarize_worker().instructions in task
        assert _tagged("source", task) == SOURCES[0]
        assert _tagged("output", task) == _first_sentence(SOURCES[0])
        assert task.endswith("Question: " + question)
        assert call["logprobs"] is True and "response_format" not in call


def test_trial_table_shows_the_judge_and_escapes_item_text(loopback: Loopback, tmp_path: Path) -> None:
    loopback.handle("/v1/chat/completions", scripted)
    project = _project(tmp_path, loopback.url + "/v1")
    proc = _trial(tmp_path, project, "--judge", "controller")  # with the slot's current model compared
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    assert re.search(r"judged_score\s*│\s*3\.95 / 5\s*│\s*3\.95 / 5", table), table
    assert re.search(r"judge_auc\s*│\s*1\.000\s*│\s*1\.000", table), table
    assert re.search(r"judged_items\s*│\s*4 / 5\s*│\s*4 / 5", table), table
    assert "judge: openai-compat:big, AUC 1.00 on its calibration" in table
    # the lowest-scored output is shown with the judge's reason, its markup printed as text
    assert "Ticket [/bold] 12 of Acme [red]" in table, table
    assert "1 valid output(s) unjudged" in table


def test_judge_options_that_cannot_work_are_configuration_errors(loopback: Loopback, tmp_path: Path) -> None:
    loopback.handle("/v1/chat/completions", scripted)
    project = _project(tmp_path, loopback.url + "/v1")
    proc = _trial(tmp_path, project, "--json", "--judge", "referee")
    assert proc.returncode == 2 and "no slot 'referee' to judge with" in proc.stderr
    data = tmp_path / "labels.jsonl"
    data.write_text(json.dumps({"input": "Where is my card?", "expected": "card"}) + "\n")
    env = {**os.environ, "ORCH_TRACES": str(tmp_path / "t.db"), "ORCH_CHECKPOINTS": str(tmp_path / "c.db")}
    cmd = [sys.executable, "-m", "orchestrator", "--project", str(project), "trial", "openai-compat:small"]
    cmd += ["--base-url", loopback.url + "/v1", "--worker", "classify", "--data", str(data), "--judge"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "--judge scores free-text workers" in proc.stderr


def test_judge_replies_are_parsed_strictly() -> None:
    assert parse_answer("yes") is True and parse_answer("NO, it adds a year") is False
    for bad in ('{"score": 4, "reason": "fine"}', "yesno", "It is fine."):
        with pytest.raises(ValueError, match="neither yes nor no"):
            parse_answer(bad)
    # braces in the texts stay as they are: they are concatenated, never used as a format string
    messages = judge_prompt(summarize_worker(), "Pay {amount} to {0}.", "Pay {amount}.", "{0}?")
    assert "<source>\nPay {amount} to {0}.\n</source>" in str(messages[1].content)


@pytest.mark.e2e
@pytest.mark.skipif(os.environ.get("ORCH_SKIP_LOCAL") == "1", reason="ORCH_SKIP_LOCAL=1")
def test_orch_trial_judged_on_the_local_models(tmp_path: Path) -> None:
    """The 0.5B workhorse summarizes two texts in the project's `summarize` slot; the 1.5B racehorse
    (the `controller` slot) is calibrated as a judge, and judges them under a grammar when it passes."""
    texts = [
        "Our March order 5512 arrived on 14 April, three weeks late, and two of the 12 chairs had cracked "
        "legs. Jonas Meyer from your Hamburg depot promised a refund of 180 EUR on the phone, but nothing "
        "has reached our account yet. Please confirm when the money will be sent.",
        "At 02:10 the payment API at Brightline returned errors for 25 minutes. About 1,400 card payments "
        "failed. Priya Nair rolled back release 4.2 at 02:31 and traffic recovered by 02:35. A review is "
        "booked for Thursday.",
    ]
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"input": t, "expected": None}) + "\n" for t in texts))
    env = {**os.environ, "ORCH_TRACES": str(tmp_path / "t.db"), "ORCH_CHECKPOINTS": str(tmp_path / "c.db")}
    cmd = [sys.executable, "-m", "orchestrator", "--project", str(ROOT), "trial", "local:qwen2.5-0.5b"]
    # the judge is calibrated on the first 2 texts of the shipped set (4 good and 16 bad outputs, 80 calls
    # of the 1.5B) so that the test stays minutes long on a fresh machine; the whole set's calibration
    # (800 calls, 30 minutes on 2 shared cores) is bench/judge.py's. Kept in the user cache (the models are
    # there too, so it is not moved)
    shipped = (ROOT / "orchestrator" / "data" / "judge-calibration.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in shipped.splitlines() if line.strip()]
    first = sorted({r["id"] for r in rows})[:2]
    subset = tmp_path / "calibration.jsonl"
    subset.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] in first), encoding="utf-8")
    cmd += ["--worker", "summarize", "--data", str(data), "--no-compare", "--judge", "--json"]
    cmd += ["--calibration", str(subset)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode == 2:  # the judge's calibration refused it: that is the gate working, said so
        assert "can't tell good outputs from bad: AUC" in proc.stderr, proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["items"] == 2 and out["judge"] == "local:qwen2.5-1.5b" and out["judge_auc"] >= 0.9
    # the grammar keeps the judge's reply in the schema: every valid output is judged
    assert out["judged_items"] == round(out["validity"] * 2)
    if out["judged_items"]:
        assert 1 <= out["judged_score"] <= 5
        assert out["judge_compute_s"] > 0
    assert out["judge_cost_usd"] == 0.0  # local models are priced 0, explicitly
