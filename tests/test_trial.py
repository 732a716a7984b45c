"""`orch trial`: a new model tried on a worker's labelled items, against the model in the slot now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from loopback import Loopback, Reply, Request
from wire import openai_stream, openai_usage

from orchestrator.errors import ConfigError
from orchestrator.evals.trial import _field_f1, labels_from, load_items

ITEMS = [
    ("My card never arrived in the post", "card_arrival"),
    ("Someone stole my wallet with the card", "lost_or_stolen_card"),
    ("Where is my new card?", "card_arrival"),
    ("I lost my card at the station", "lost_or_stolen_card"),
]


def labeller(request: Request) -> Reply:
    """Three models on one server, told apart by the `model` field: `big` is always right, `small` is right
    but answers "stolen" (not a label) for theft, `current` calls everything card_arrival."""
    body = request.json()
    text = body["messages"][-1]["content"]
    if isinstance(text, list):
        text = " ".join(b.get("text", "") for b in text)
    right = "lost_or_stolen_card" if any(w in text.lower() for w in ("stole", "lost")) else "card_arrival"
    label = {
        "big": right,
        "small": "stolen" if right != "card_arrival" else right,
        "current": "card_arrival",
    }[body["model"]]
    return openai_stream([json.dumps({"label": label})], openai_usage(50, 6))


def test_orch_trial_scores_a_new_model_against_the_slot(loopback: Loopback, tmp_path: Path) -> None:
    loopback.handle("/v1/chat/completions", labeller)
    project = tmp_path / "proj"
    project.mkdir()
    url = loopback.url + "/v1"
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.orchestrator]
            [tool.orchestrator.slots.classify]
            model = "openai-compat:current"
            base_url = "{url}"
            prices = {{ input = 1e-6, output = 4e-6 }}
            [tool.orchestrator.slots.controller]
            model = "openai-compat:big"
            base_url = "{url}"
            role = "racehorse"
            prices = {{ input = 1e-5, output = 4e-5 }}
            """
        )
    )
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"input": i, "expected": e}) + "\n" for i, e in ITEMS))
    env = {**os.environ, "ORCH_TRACES": str(tmp_path / "t.db"), "ORCH_CHECKPOINTS": str(tmp_path / "c.db")}
    cmd = [sys.executable, "-m", "orchestrator", "--project", str(project), "trial", "openai-compat:small"]
    cmd += [
        "--base-url",
        url,
        "--price-as",
        "gpt-4o-mini",
        "--worker",
        "classify",
        "--data",
        str(data),
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # small: right on the two card_arrival items; "stolen" is no label, so the other two are repaired
    # (still "stolen") and escalate to the racehorse, which is right
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["accuracy_escalated"] == pytest.approx(1.0)
    assert out["validity_before_repair"] == pytest.approx(0.5)
    assert out["validity"] == pytest.approx(1.0)
    assert out["escalation_rate"] == pytest.approx(0.5)
    assert out["cost_per_1k_usd"] > 0 and out["p50_ttft_ms"] is not None
    # the slot's current model: labels everything card_arrival, valid at once, half right
    assert out["baseline"]["model"] == "openai-compat:current"
    assert out["baseline"]["accuracy"] == pytest.approx(0.5)
    assert out["baseline"]["escalation_rate"] == 0
    assert out["verdict"] == "similar"  # as accurate, and not cheaper: its escalations cost more
    assert set(out) >= {
        "accuracy", "accuracy_escalated", "validity_before_repair", "validity", "escalation_rate",
        "cost_per_1k_usd", "compute_s_per_1k", "p50_ttft_ms", "tokens_per_s", "verdict",
    }  # fmt: skip
    # side by side: small alone (half right), small routed up to big (all right), big alone (all right)
    sides = out["sides"]
    assert out["racehorse"] == "openai-compat:big"
    assert sides["workhorse"]["accuracy"] == pytest.approx(0.5)
    assert sides["routed"]["accuracy"] == pytest.approx(1.0) and sides["routed"]["escalation_rate"] == 0.5
    assert sides["racehorse"]["accuracy"] == pytest.approx(1.0)
    alone, routed, big = (sides[k]["cost_per_1k_usd"] for k in ("workhorse", "routed", "racehorse"))
    assert 0 < alone < routed  # the pair pays for the workhorse's calls and for the escalations
    assert alone == pytest.approx(out["cost_alone_per_1k_usd"])
    share = routed / big
    assert out["pair_verdict"] == ("routed" if share <= 0.8 else "racehorse")
    assert (
        f"routed pair: 100% of the racehorse's accuracy at {share:.0%} of its cost" in out["pair_verdict_why"]
    )
    table = subprocess.run(cmd[:-1], capture_output=True, text=True, env=env, timeout=120)
    assert table.returncode == 0 and "verdict: similar" in table.stdout
    assert "workhorse alone" in table.stdout and f"run: {out['pair_verdict']}" in table.stdout
    skipped = subprocess.run([*cmd, "--no-racehorse"], capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(skipped.stdout)["sides"] is None


def test_trial_items_and_scores(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "x"}\n')
    with pytest.raises(ConfigError, match=r'line 1: an item is \{"input"'):
        load_items(bad)
    assert labels_from([{"expected": "b"}, {"expected": "a"}, {"expected": "b"}]) == ["a", "b"]
    assert _field_f1({"amount": 12.0, "currency": "EUR"}, {"amount": 12, "currency": "eur"}) == 1.0
    assert _field_f1({"amount": 12.0, "currency": "USD"}, {"amount": 12, "currency": "EUR"}) == pytest.approx(
        0.5
    )
    assert _field_f1({}, {"amount": 12}) == 0.0


def test_field_f1_compares_nested_records_and_ignores_empty_fields() -> None:
    """Records inside a record (a time as {hour, minute}, money as {amount, currency}) compare part by part,
    normalised like top-level values; a field that is None, blank, or a record of nothing but Nones is
    absent, not a wrong answer; a bool is never equal to a number."""
    want = {"time": {"hour": 9, "minute": 5}, "money": {"amount": 40, "currency": "EUR"}, "date": None}
    got = {
        "time": {"hour": 9.0, "minute": 5},
        "money": {"amount": 40.0, "currency": " eur"},
        "date": None,
        "person": {"name": None},
        "note": "  ",
    }
    assert _field_f1(got, want) == 1.0
    # an empty record predicted for an absent field is no prediction
    assert _field_f1({"time": {"hour": None, "minute": None}}, {}) == 1.0
    assert _field_f1({"time": {}}, {"time": None}) == 1.0
    # a nested record with one part wrong is a wrong field: 1 of 2 predicted, 1 of 2 expected
    wrong_minute = {"time": {"hour": 9, "minute": 50}, "money": {"amount": 40, "currency": "EUR"}}
    assert _field_f1(wrong_minute, want) == pytest.approx(0.5)
    # a part the text lacks (currency null) must stay absent: guessing one is wrong
    guessed = {"money": {"amount": 40, "currency": "GBP"}}
    assert _field_f1(guessed, {"money": {"amount": 40, "currency": None}}) == 0
    assert _field_f1({"money": {"amount": 40, "currency": None}}, {"money": {"amount": 40}}) == 1.0
    # a missing expected field and a spurious predicted one both count
    assert _field_f1({"time": {"hour": 9, "minute": 5}}, want) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert _field_f1({"name": "Ann", "extra": "x"}, {"name": "ann"}) == pytest.approx(2 * 0.5 / 1.5)
    # lists item by item; bools never equal numbers
    assert _field_f1({"tags": ["A ", "b"]}, {"tags": ["a", "B"]}) == 1.0
    assert _field_f1({"flag": True}, {"flag": 1}) == 0.0
    assert _field_f1({"flag": False}, {"flag": False}) == 1.0


async def test_an_item_that_went_up_the_chain_counts_as_escalated_even_when_nothing_there_was_valid(
    tmp_path: Path,
) -> None:
    from orchestrator import Orchestrator, Settings, SlotConfig, classify_worker
    from orchestrator.evals.trial import TrialReport, run_items
    from orchestrator.testing import ScriptedChatModel
    from support import PRICES

    orch = Orchestrator(
        settings=Settings(traces_path=tmp_path / "t.db", checkpoints_path=tmp_path / "c.db"),
        slots={
            "classify": SlotConfig(model="python:scripted", role="workhorse", prices=PRICES),
            "controller": SlotConfig(model="python:scripted", role="racehorse", prices=PRICES),
        },
        models={
            "classify": ScriptedChatModel(replies=['{"label": "nope"}'] * 2),
            "controller": ScriptedChatModel(replies=['{"label": "nope"}']),
        },
    )
    worker = classify_worker("classify", ["card_arrival", "other"], "Classify")
    chain = {"controller": (orch.slots["controller"], orch.model_for("controller"))}
    report = TrialReport("python:scripted", "classify", "classify")
    report.items = await run_items(
        orch.slots["classify"],
        orch.model_for("classify"),
        worker,
        [{"input": "x", "expected": "other"}],
        chain,
    )
    figures = report.figures()
    assert figures["validity"] == 0 and figures["escalation_rate"] == 1.0
    orch.close()


def test_a_verdict_that_is_not_given_says_why(loopback: Loopback, tmp_path: Path) -> None:
    """Trying the model the slot already has: there is nothing to compare, and the report says so."""
    loopback.handle("/v1/chat/completions", labeller)
    project = tmp_path / "proj"
    project.mkdir()
    url = loopback.url + "/v1"
    (project / "pyproject.toml").write_text(
        f'[tool.orchestrator]\n[tool.orchestrator.slots.classify]\nmodel = "openai-compat:small"\n'
        f'base_url = "{url}"\nprices = {{ input = 1e-6, output = 4e-6 }}\n'
    )
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"input": i, "expected": e}) + "\n" for i, e in ITEMS))
    env = {**os.environ, "ORCH_TRACES": str(tmp_path / "t.db"), "ORCH_CHECKPOINTS": str(tmp_path / "c.db")}
    cmd = [sys.executable, "-m", "orchestrator", "--project", str(project), "trial", "openai-compat:small"]
    cmd += ["--base-url", url, "--worker", "classify", "--data", str(data), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verdict"] is None and "is bound to slot 'classify' now" in out["verdict_why"]
    other = [("openai-compat:big" if c == "openai-compat:small" else c) for c in cmd]
    proc = subprocess.run([*other, "--no-compare"], capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(proc.stdout)["verdict_why"] == "not compared (--no-compare)"
