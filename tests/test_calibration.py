"""The judge's calibration: the hand-written data, the known-bad outputs made from it, a judge measured on
both over a real loopback HTTP server, the cache of its calibration, and `orch trial` refusing a judge that
can't tell good from bad.

The judges here are scripted OpenAI-compatible models on the loopback server: `sharp` answers "yes" (sure)
to the known-good outputs of the calibration set and "no" to anything else; `blunt` answers "yes" to
everything, equally sure, as the 1.5B local model nearly did.
"""

from __future__ import annotations

import json
import math
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

from orchestrator import Settings, SlotConfig
from orchestrator.evals.calibrate import (
    MIN_AUC,
    Calibration,
    cache_path,
    calibrated,
    calibration_workers,
    load_calibration,
    refusal,
)
from orchestrator.evals.judge import (
    JUDGE_INSTRUCTIONS,
    JUDGE_QUESTIONS,
    judge_digest,
    log_odds,
    p_yes,
    parse_answer,
)
from orchestrator.evals.variants import BAD_KINDS, bad_variants, sentences_of
from orchestrator.models.binding import bind_slot
from orchestrator.providers import create_chat_model
from orchestrator.sync import run_blocking
from orchestrator.workers.grounding import Evidence, find_numbers
from orchestrator.workers.validators import (
    adds_no_facts,
    condenses,
    keeps_facts,
    rewrites,
    within_sentences,
)

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = ROOT / "orchestrator" / "data" / "judge-calibration.jsonl"
HELDOUT = ROOT / "bench" / "data" / "judge-heldout.jsonl"
ROWS = [json.loads(line) for path in (CALIBRATION, HELDOUT) for line in path.read_text().splitlines()]
GOODS = {(r["source"], r["good"]) for r in ROWS}
CALLS = len(JUDGE_QUESTIONS)  # the judge's calls for one output
SURE = (-0.05, -3.05)  # the judge's answer and its runner-up, in log-probability: a margin of 3 nats


def _tagged(tag: str, text: str) -> str | None:
    found = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.S)
    return found.group(1) if found else None


def judge_server(request: Request) -> Reply:
    """`sharp` and `blunt` (see the module docstring), told apart by the request's `model`."""
    body = request.json()
    task = str(body["messages"][1]["content"])
    source, output = _tagged("source", task), _tagged("output", task)
    assert body["messages"][0]["content"] == JUDGE_INSTRUCTIONS and any(
        task.endswith("Question: " + q) for _, q in JUDGE_QUESTIONS
    )
    assert body.get("logprobs") is True  # the margin is asked for
    answer = "yes" if body["model"] == "blunt" or (source, output) in GOODS else "no"
    return openai_stream([answer], openai_usage(100, 1), logprobs=[SURE])


def _judge(url: str, name: str) -> tuple[Any, Any]:
    binding = bind_slot(
        "controller",
        SlotConfig(model=f"openai-compat:{name}", base_url=url, role="racehorse", price_as="gpt-4o-mini"),
    )
    return binding, create_chat_model(binding, Settings())


# --- the data ----------------------------------------------------------------------------------------------


def test_the_good_outputs_pass_their_workers_validators_and_match_the_bench_texts() -> None:
    workers = calibration_workers()
    for row in ROWS:
        worker = workers[row["worker"]]
        assert [v(row["source"], row["good"]) for v in worker.validators] == [None] * len(worker.validators)
        if row["worker"] == "summarize":
            assert len(sentences_of(row["good"])) == 2, row["id"]
    texts = {
        t["id"]: t["input"]
        for t in map(json.loads, (ROOT / "bench/data/texts.jsonl").read_text().split("\n")[:-1])
    }
    items, digest = load_calibration()
    assert len(items) == 40 and {i.worker for i in items} == {"summarize", "style"}
    assert all(texts[i.id] == i.source for i in items)  # the 20 bench texts, each with both workers
    assert len(digest) == 16 and load_calibration(CALIBRATION)[1] == digest  # the shipped file


# --- the known-bad outputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['id']}-{r['worker']}")
def test_each_bad_variant_is_bad_in_the_way_it_is_named(row: dict[str, str]) -> None:
    source, good, worker = row["source"], row["good"], row["worker"]
    bad = bad_variants(worker, source, good, ROWS.index(row))
    assert list(bad) == list(BAD_KINDS)
    assert bad_variants(worker, source, good, ROWS.index(row)) == bad  # deterministic
    evidence = Evidence(source)

    # one number changed: the same words around it, the new number one the source lacks
    changed = bad["fact_changed"]
    assert changed != good and len(changed.split()) == len(good.split())
    diff = [(a, b) for a, b in zip(good.split(), changed.split(), strict=True) if a != b]
    assert len(diff) == 1 and re.search(r"\d", diff[0][1]), diff
    assert adds_no_facts(source, changed) is not None

    # a number added: one the source lacks, inside a sentence (the count of sentences stays)
    added = bad["number_added"]
    new = [n for n, places in find_numbers(added) if not evidence.supports_number(n, places)]
    assert new, added
    assert len(sentences_of(added)) == len(sentences_of(good)) and len(added) > len(good)
    assert adds_no_facts(source, added) is not None

    # a copy of the source
    assert bad["copy"] == source
    assert (rewrites if worker == "style" else condenses)(source, bad["copy"]) is not None

    # the wrong length, every fact in it true: a summary of 5 sentences, a rewrite cut to its first one
    wrong = bad["wrong_length"]
    assert adds_no_facts(source, wrong) is None
    if worker == "summarize":
        assert len(sentences_of(wrong)) == 5 and within_sentences(2, 2)(source, wrong) is not None
    else:
        assert wrong == sentences_of(good)[0] and keeps_facts(source, wrong) is not None


# --- the judge's reply ------------------------------------------------------------------------------------


def test_a_yes_or_no_and_its_margin_make_a_continuous_probability() -> None:
    assert parse_answer("yes") is True and parse_answer(" No.") is False and parse_answer("Yes, it does")
    for bad in ("maybe", "yesterday", '{"score": 5}', ""):
        with pytest.raises(ValueError, match="neither yes nor no"):
            parse_answer(bad)
    assert p_yes(True, 3.0) == pytest.approx(0.9526, abs=1e-4)
    assert p_yes(False, 3.0) == pytest.approx(0.0474, abs=1e-4)
    assert p_yes(True, 0.5) < p_yes(True, 3.0)  # a doubtful yes ranks below a sure one
    # no margin: the answer as certain (the log-odds capped at 20 nats)
    assert (log_odds(True, None), log_odds(False, None)) == (20.0, -20.0)
    assert p_yes(True, None) > 1 - 1e-8 and p_yes(False, None) < 1e-8
    assert log_odds(False, 35.0) == -20.0 and log_odds(True, 1.25) == 1.25


# --- calibration over the loopback server -----------------------------------------------------------------


def test_a_judge_that_separates_passes_and_one_that_does_not_is_refused(
    loopback: Loopback, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    loopback.handle("/v1/chat/completions", judge_server)
    seen: list[tuple[int, int]] = []
    sharp = run_blocking(
        lambda: calibrated(*_judge(loopback.url + "/v1", "sharp"), on_output=lambda *a: seen.append(a))
    )
    assert sharp.goods + sharp.bads == 200 and seen[-1] == (200, 200)
    assert len(loopback.requests) == 200 * CALLS  # each output: one call a question
    assert (sharp.goods, sharp.bads, sharp.unjudged) == (40, 160, 0)
    assert sharp.auc == 1.0 and sharp.auc_by_kind == dict.fromkeys(BAD_KINDS, 1.0) and sharp.usable
    assert sharp.auc_by_worker == {"summarize": 1.0, "style": 1.0}
    assert sharp.mean_good == pytest.approx(1 + 4 * p_yes(True, 3.0))
    assert sharp.mean_bad == pytest.approx(1 + 4 * p_yes(False, 3.0))
    assert sharp.judge == "openai-compat:sharp" and sharp.judge_prompt == judge_digest()

    blunt = run_blocking(lambda: calibrated(*_judge(loopback.url + "/v1", "blunt")))
    assert blunt.auc == 0.5 and not blunt.usable  # every output scored alike: ties count half
    message = refusal(blunt, "controller")
    assert message == (
        "judge openai-compat:blunt (slot 'controller') can't tell good outputs from bad: AUC 0.50 on 40 "
        "known-good and 160 known-bad outputs (weakest: fact changed 0.50), below the 0.90 a judged figure "
        "needs; bind a stronger model to slot 'controller' (or judge with another slot: --judge SLOT)"
    )
    assert MIN_AUC == 0.9


def test_the_answers_to_the_questions_combine_into_one_score(
    loopback: Loopback, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A judge that sees copies only, by the one question about them: the copies rank below every other
    output, the other kinds tie with the good ones."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    own = dict(JUDGE_QUESTIONS)["own"]

    def copies_only(request: Request) -> Reply:
        task = str(request.json()["messages"][1]["content"])
        copied = task.endswith(own) and _tagged("source", task) == _tagged("output", task)
        return openai_stream(["no" if copied else "yes"], openai_usage(100, 1), logprobs=[SURE])

    loopback.handle("/v1/chat/completions", copies_only)
    cal = run_blocking(lambda: calibrated(*_judge(loopback.url + "/v1", "copies")))
    assert cal.auc_by_kind == {"fact_changed": 0.5, "number_added": 0.5, "copy": 1.0, "wrong_length": 0.5}
    assert cal.auc == pytest.approx((0.5 * 3 + 1.0) / 4)
    assert cal.auc_by_worker == {"summarize": pytest.approx(cal.auc), "style": pytest.approx(cal.auc)}
    # three sure yeses and a sure no: the mean log-odds is (3 + 3 + 3 - 3) / 4
    assert cal.mean_by_kind["copy"] == pytest.approx(1 + 4 / (1 + math.exp(-1.5)))
    copy = next(r for r in cal.scores if r["kind"] == "copy")
    assert copy["reason"] == "faithful yes (0.95), own no (0.05), length yes (0.95), complete yes (0.95)"


def test_the_calibration_is_kept_per_judge_model_prompt_and_data(
    loopback: Loopback, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    loopback.handle("/v1/chat/completions", judge_server)
    url = loopback.url + "/v1"
    first = run_blocking(lambda: calibrated(*_judge(url, "sharp")))
    assert not first.cached and len(loopback.requests) == 200 * CALLS
    path = cache_path("openai-compat:sharp", judge_digest(), load_calibration()[1])
    assert path.is_relative_to(tmp_path / "cache") and path.exists()

    again = run_blocking(lambda: calibrated(*_judge(url, "sharp")))  # the same judge: not measured again
    assert again.cached and len(loopback.requests) == 200 * CALLS
    assert (again.auc, again.auc_by_kind, again.scores) == (first.auc, first.auc_by_kind, first.scores)

    other = run_blocking(lambda: calibrated(*_judge(url, "blunt")))  # another judge model: measured
    assert not other.cached and len(loopback.requests) == 400 * CALLS and other.auc == 0.5

    fresh = run_blocking(lambda: calibrated(*_judge(url, "sharp"), refresh=True))  # asked to measure again
    assert not fresh.cached and len(loopback.requests) == 600 * CALLS

    data = tmp_path / "few.jsonl"  # other calibration data: measured
    data.write_text("".join(line + "\n" for line in CALIBRATION.read_text().splitlines()[:4]))
    few = run_blocking(lambda: calibrated(*_judge(url, "sharp"), data=data))
    assert not few.cached and len(loopback.requests) == 620 * CALLS and (few.goods, few.bads) == (4, 16)

    path.write_text("{not json")  # a damaged cache file is measured again, not an error
    assert not run_blocking(lambda: calibrated(*_judge(url, "sharp"))).cached
    assert Calibration.from_dict(json.loads(path.read_text())).auc == 1.0


# --- orch trial ---------------------------------------------------------------------------------------------


def _server(request: Request) -> Reply:
    """The judges, and `worker`: a summarize worker that answers with the first sentence of its text."""
    body = request.json()
    if body["messages"][0]["content"] == JUDGE_INSTRUCTIONS:
        return judge_server(request)
    text = str(body["messages"][1]["content"])
    return openai_stream([re.split(r"(?<=\.)\s+", text.strip(), maxsplit=1)[0]], openai_usage(50, 10))


def _project(tmp_path: Path, url: str, judge: str) -> Path:
    project = tmp_path / judge
    project.mkdir()
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.orchestrator]
            [tool.orchestrator.slots.summarize]
            model = "openai-compat:worker"
            base_url = "{url}"
            price_as = "gpt-4o-mini"
            [tool.orchestrator.slots.controller]
            model = "openai-compat:{judge}"
            base_url = "{url}"
            role = "racehorse"
            price_as = "gpt-4o-mini"
            """
        )
    )
    return project


def _orch(tmp_path: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ORCH_TRACES": str(tmp_path / "t.db"),
        "ORCH_CHECKPOINTS": str(tmp_path / "c.db"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }
    cmd = [sys.executable, "-m", "orchestrator", "--project", str(project), "trial", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _items(tmp_path: Path) -> str:
    data = tmp_path / "items.jsonl"
    text = "Invoice 4471 was paid on 2026-02-03 by Lena Berg. Nothing else is open on that account."
    data.write_text(json.dumps({"input": text, "expected": None}) + "\n")
    return str(data)


def test_orch_trial_refuses_a_judge_that_cannot_separate(loopback: Loopback, tmp_path: Path) -> None:
    loopback.handle("/v1/chat/completions", _server)
    project = _project(tmp_path, loopback.url + "/v1", "blunt")
    trial = ["openai-compat:worker", "--base-url", loopback.url + "/v1", "--price-as", "gpt-4o-mini"]
    trial += ["--worker", "summarize", "--data", _items(tmp_path), "--no-compare", "--no-racehorse"]
    proc = _orch(tmp_path, project, *trial, "--judge", "--json")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""  # no judged figure is reported
    line = " ".join(proc.stderr.split())
    assert (
        "error: judge openai-compat:blunt (slot 'controller') can't tell good outputs from bad: AUC 0.50"
        in line
    )
    assert "bind a stronger model to slot 'controller'" in line
    assert not any(r.json()["model"] == "worker" for r in loopback.requests)  # refused before the trial ran

    shown = _orch(tmp_path, project, "--judge", "--calibrate-only")  # from the cache: no call
    assert shown.returncode == 0, shown.stderr
    assert len(loopback.requests) == 200 * CALLS
    for kind in ("fact changed", "number added", "copy", "wrong length"):
        assert re.search(rf"{kind}\s*│\s*0\.500", shown.stdout), shown.stdout
    assert re.search(r"all, summarize outputs\s*│\s*0\.500", shown.stdout), shown.stdout
    assert "from the cache" in shown.stdout and "refused: judge openai-compat:blunt" in shown.stdout

    need = _orch(tmp_path, project, "--judge")
    assert need.returncode == 2 and "orch trial needs MODEL, --worker, --data" in need.stderr


def test_orch_trial_reports_the_judges_auc_beside_its_figures(loopback: Loopback, tmp_path: Path) -> None:
    loopback.handle("/v1/chat/completions", _server)
    project = _project(tmp_path, loopback.url + "/v1", "sharp")
    trial = ["openai-compat:worker", "--base-url", loopback.url + "/v1", "--price-as", "gpt-4o-mini"]
    trial += ["--worker", "summarize", "--data", _items(tmp_path), "--no-compare", "--no-racehorse"]
    proc = _orch(tmp_path, project, *trial, "--judge", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["judge_auc"] == 1.0 and out["judged_items"] == 1
    assert out["judge_calibration"]["auc_by_kind"] == dict.fromkeys(BAD_KINDS, 1.0)
    assert out["judge_calibration"]["usable"] is True and out["judge_calibration"]["cached"] is False
    calls = len(loopback.requests)

    table = _orch(tmp_path, project, *trial, "--judge")  # calibrated once: not measured again
    assert table.returncode == 0, table.stderr
    assert [r.json()["model"] for r in loopback.requests[calls:]] == ["worker", *["sharp"] * CALLS]
    assert re.search(r"judge_auc\s*│\s*1\.000", table.stdout), table.stdout
    assert "AUC 1.00 on its calibration (40 known-good, 160 known-bad outputs)" in table.stdout

    _orch(tmp_path, project, "--judge", "--calibrate-only", "--recalibrate")
    assert len(loopback.requests) == calls + (1 + CALLS) + 200 * CALLS
