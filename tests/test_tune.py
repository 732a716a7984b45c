"""`orch trial --tune`: a worker's confidence threshold chosen on labelled items, written to the project's
worker settings file, and read back by the worker."""

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

from orchestrator.errors import ManifestError
from orchestrator.evals.trial import ItemResult
from orchestrator.evals.tune import curve, tune
from orchestrator.run.project import load_definitions
from orchestrator.workers.definitions import classify_worker
from orchestrator.workers.settings import apply_settings, read_settings, write_setting


def item(score: float, margin: float | None, *, valid: bool = True, compute_ms: float = 100.0) -> ItemResult:
    return ItemResult(
        input="x",
        expected="a",
        value={"label": "a"},
        score_alone=score,
        score=score,
        valid_first=valid,
        valid=valid,
        escalated=False,
        cost_usd=compute_ms * 1e-5,  # priced as it computes: the racehorse costs more
        compute_ms=compute_ms,
        ttft_ms=10.0,
        output_tokens=3,
        generation_ms=50.0,
        own_cost_usd=compute_ms * 1e-5,
        own_compute_ms=compute_ms,
        margin=margin,
    )


def test_tune_chooses_the_fewest_escalations_that_keep_the_target() -> None:
    # the workhorse is right when sure (margin >= 2), wrong when unsure; the racehorse is right on all
    small = [item(1.0, 3.0), item(1.0, 2.0), item(0.0, 1.5), item(0.0, 0.5)]
    big = [item(1.0, None, compute_ms=400.0) for _ in small]
    tuned = tune(small, big, target=0.97)
    assert tuned.met and tuned.chosen.min_margin == 2.0  # 1.5 and 0.5 escalate; 2.0 and 3.0 stay
    assert tuned.chosen.accuracy == 1.0 and tuned.chosen.escalation_rate == 0.5
    assert tuned.chosen.compute_s_per_1k == pytest.approx((4 * 100 + 2 * 400) / 4)  # both calls paid
    assert tuned.workhorse_accuracy == 0.5 and tuned.racehorse_accuracy == 1.0
    # a lower target keeps more on the workhorse: 3 of 4 right is 75 % of the racehorse
    assert tune(small, big, target=0.75).chosen.min_margin == 1.5
    points = curve(small, big)
    assert [p.min_margin for p in points] == [0.0, 0.5, 1.5, 2.0, 3.0, 4.0]
    assert points[0].escalation_rate == 0 and points[-1].escalation_rate == 1  # none up, all up


def test_an_invalid_answer_always_escalates() -> None:
    small = [item(0.0, None, valid=False), item(1.0, 0.2), item(0.0, 3.0)]
    big = [item(1.0, None), item(0.0, None), item(0.0, None)]
    points = curve(small, big)
    assert points[0].escalation_rate == pytest.approx(1 / 3)  # the invalid one, even at threshold 0
    assert points[0].accuracy == pytest.approx(2 / 3)  # the racehorse's answer to it, and the kept one
    tuned = tune(small, big, target=0.97)  # the racehorse alone has 1/3: threshold 0 already keeps it
    assert tuned.met and tuned.chosen.min_margin == 0.0
    with pytest.raises(ValueError, match="at most 1"):
        tune(small, big, target=1.5)


def test_tuning_that_cannot_meet_its_target_takes_the_most_accurate_threshold_and_says_so() -> None:
    # escalating everything gives the racehorse's accuracy, unless the model reports no margin: trusted
    small = [item(0.0, None), item(1.0, 1.0)]
    big = [item(1.0, None), item(1.0, None)]
    tuned = tune(small, big, target=0.97)
    assert not tuned.met and tuned.chosen.accuracy == 0.5 and tuned.chosen.min_margin == 0.0
    assert "no threshold keeps 97% of the racehorse's accuracy" in tuned.summary()


def project(tmp_path: Path, manifest_extra: str = "", slots: str = "") -> Path:
    root = tmp_path / "proj"
    # a package name of its own: `workers` is the repository's example project, imported by other tests
    package = "tune_" + "".join(c if c.isalnum() else "_" for c in tmp_path.name)
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "mine.py").write_text(
        textwrap.dedent(
            """
            from orchestrator import classify_worker
            WORKERS = [classify_worker("triage", ["card_arrival", "lost_or_stolen_card"], "Triage")]
            """
        )
    )
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.orchestrator]
            workers = ["PACKAGE.mine:WORKERS"]
            """
        ).replace("PACKAGE", package)
        + manifest_extra
        + "\n[tool.orchestrator.slots]\n"
        + (slots or 'classify = { model = "local:qwen2.5-0.5b", role = "workhorse" }\n')
    )
    return root


def test_the_settings_file_the_manifest_names_sets_a_workers_threshold(tmp_path: Path) -> None:
    root = project(tmp_path, 'worker_settings = "tuned.json"\n')
    _, _, workers = load_definitions(root)
    assert workers[0].min_margin is None  # no file yet: the definition's own value
    write_setting(root / "tuned.json", "triage", {"min_margin": 1.25, "tuned": {"items": 9}})
    _, _, workers = load_definitions(root)
    assert workers[0].min_margin == 1.25
    write_setting(root / "tuned.json", "classify", {"min_margin": 0.5})  # a built-in's entry, kept beside
    data = json.loads((root / "tuned.json").read_text())
    assert data["triage"]["min_margin"] == 1.25 and data["classify"]["min_margin"] == 0.5
    assert load_definitions(root)[2][0].min_margin == 1.25
    write_setting(root / "tuned.json", "triage", {"min_margin": None})  # routing by confidence off
    assert load_definitions(root)[2][0].min_margin is None
    assert not list(root.glob(".worker-settings-*"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"triaje": {"min_margin": 1}}', "no worker 'triaje' in the project"),
        ('{"triage": {"min_margin": 1, "threshold": 2}}', "unknown key(s) 'threshold'"),
        ('{"triage": {"min_margin": "high"}}', "min_margin must be a number or null (got 'high')"),
        ('{"triage": {"min_margin": true}}', "min_margin must be a number or null (got True)"),
        ('{"triage": 1.2}', "'triage' must be an object"),
        ("[1, 2]", "must be a JSON object of worker name -> settings"),
        ('{"triage": {"min_margin": 1.2}', "not valid JSON"),
    ],
)
def test_a_bad_settings_file_is_an_error_naming_the_entry_and_the_fix(
    tmp_path: Path, content: str, says: str
) -> None:
    root = project(tmp_path, 'worker_settings = "tuned.json"\n')
    (root / "tuned.json").write_text(content)
    with pytest.raises(ManifestError) as exc:
        load_definitions(root)
    assert says in str(exc.value) and "tuned.json" in str(exc.value)


def test_applying_settings_leaves_other_workers_and_keys_alone() -> None:
    a = classify_worker("a", ["x", "y"], "A", min_margin=0.7)
    b = classify_worker("b", ["x", "y"], "B")
    out = apply_settings([a, b], {"b": {"min_margin": 2.0}, "c": {"tuned": {}}})
    assert out[0] is a and out[1].min_margin == 2.0 and out[1].instructions == b.instructions
    assert read_settings(Path("/nonexistent/tuned.json")) == {}


def sure_server(loopback: Loopback) -> None:
    """`small` labels by keyword: right and sure (lead 4.99) unless the text says "maybe", where it is wrong
    and unsure (lead 0.3); `big` is always right."""

    def answer(request: Request) -> Reply:
        body = request.json()
        text = body["messages"][-1]["content"]
        right = "lost_or_stolen_card" if "stole" in text else "card_arrival"
        if body["model"] == "small":
            wrong = "card_arrival" if right != "card_arrival" else "lost_or_stolen_card"
            label, lead = (wrong, (-0.6, -0.9)) if "maybe" in text else (right, (-0.01, -5.0))
            logprobs = [lead] if body.get("logprobs") else None
            return openai_stream([json.dumps({"label": label})], openai_usage(50, 5), logprobs=logprobs)
        return openai_stream([json.dumps({"label": right})], openai_usage(50, 5))

    loopback.handle("/v1/chat/completions", answer)


TUNE_ITEMS = [
    ("my card never came", "card_arrival"),
    ("someone stole my card", "lost_or_stolen_card"),
    ("maybe my card never came", "card_arrival"),
    ("maybe someone stole my card", "lost_or_stolen_card"),
]


def test_orch_trial_tune_writes_the_threshold_and_the_worker_then_routes_by_it(
    loopback: Loopback, tmp_path: Path
) -> None:
    sure_server(loopback)
    url = loopback.url + "/v1"
    slots = (
        f'classify = {{ model = "openai-compat:small", base_url = "{url}", prices = {{ input = 1e-6, '
        "output = 1e-6 } }\n"
        f'controller = {{ model = "openai-compat:big", base_url = "{url}", role = "racehorse", '
        "prices = { input = 1e-5, output = 1e-5 } }\n"
    )
    root = project(tmp_path, 'worker_settings = "tuned.json"\n', slots)
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"input": i, "expected": e}) + "\n" for i, e in TUNE_ITEMS))
    env = {**os.environ, "ORCH_TRACES": str(tmp_path / "t.db"), "ORCH_CHECKPOINTS": str(tmp_path / "c.db")}
    cmd = [sys.executable, "-m", "orchestrator", "--project", str(root), "trial", "openai-compat:small"]
    cmd += ["--base-url", url, "--worker", "triage", "--data", str(data)]
    proc = subprocess.run([*cmd, "--tune", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    threshold = out["tuning"]["min_margin"]
    assert 0.3 < threshold <= 4.99  # above the unsure answers' lead, at most the sure ones'
    assert out["sides"]["workhorse"]["accuracy"] == 0.5 and out["sides"]["routed"]["accuracy"] == 1.0
    assert out["sides"]["routed"]["escalation_rate"] == 0.5
    saved = json.loads((root / "tuned.json").read_text())["triage"]
    assert saved["min_margin"] == pytest.approx(threshold, abs=1e-4)
    assert saved["tuned"]["items"] == 4 and saved["tuned"]["data"] == str(data) and saved["tuned"]["met"]
    # the worker now reads it: a plain trial routes the two unsure answers up and gets all four right
    again = subprocess.run(
        [*cmd, "--json", "--no-racehorse"], capture_output=True, text=True, env=env, timeout=120
    )
    assert again.returncode == 0, again.stderr
    plain = json.loads(again.stdout)
    assert plain["escalation_rate"] == 0.5 and plain["accuracy_escalated"] == 1.0
    table = subprocess.run([*cmd, "--tune"], capture_output=True, text=True, env=env, timeout=120)
    assert table.returncode == 0, table.stderr
    assert "threshold curve" in table.stdout and "tuned.json" in table.stdout


def test_orch_trial_tune_with_no_settings_file_named_says_so_before_running(
    loopback: Loopback, tmp_path: Path
) -> None:
    sure_server(loopback)
    root = project(tmp_path)
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"input": i, "expected": e}) + "\n" for i, e in TUNE_ITEMS))
    cmd = [sys.executable, "-m", "orchestrator", "--project", str(root), "trial", "openai-compat:small"]
    cmd += ["--base-url", loopback.url + "/v1", "--worker", "triage", "--data", str(data), "--tune"]
    env = {**os.environ, "ORCH_TRACES": str(tmp_path / "t.db"), "ORCH_CHECKPOINTS": str(tmp_path / "c.db")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert 'worker_settings = "worker-settings.json"' in proc.stderr
    assert loopback.requests == []  # nothing ran


def test_a_threshold_tuned_on_another_model_than_the_slots_is_applied_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = project(tmp_path, 'worker_settings = "tuned.json"\n')  # classify binds local:qwen2.5-0.5b
    write_setting(
        root / "tuned.json", "triage", {"min_margin": 1.0, "tuned": {"model": "openai:gpt-4o-mini"}}
    )
    with caplog.at_level("WARNING", logger="orchestrator.workers"):
        assert load_definitions(root)[2][0].min_margin == 1.0
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "tuned on openai:gpt-4o-mini" in said and "binds local:qwen2.5-0.5b" in said
    assert "orch trial local:qwen2.5-0.5b --worker triage --data ITEMS --tune" in said
    caplog.clear()
    write_setting(
        root / "tuned.json", "triage", {"min_margin": 1.0, "tuned": {"model": "local:qwen2.5-0.5b"}}
    )
    with caplog.at_level("WARNING", logger="orchestrator.workers"):
        load_definitions(root)
    assert not caplog.records  # tuned on the model bound now: nothing to say


def test_a_router_that_knows_the_workhorses_misses_is_used_when_it_spends_less() -> None:
    # the workhorse is sure of every answer (margin routing can't tell right from wrong) and wrong on half;
    # a router that predicts those misses sends them up before the workhorse pays for them
    small = [item(1.0, 3.0), item(0.0, 3.0), item(1.0, 3.0), item(0.0, 3.0)]
    big = [item(1.0, None, compute_ms=400.0) for _ in small]
    margin_only = tune(small, big, target=0.97)
    assert margin_only.chosen.escalation_rate == 1.0  # everything up: all the workhorse's calls wasted
    routed = tune(small, big, target=0.97, estimates=[0.9, 0.1, 0.8, 0.2])
    assert routed.uses_router and routed.chosen.accuracy == 1.0
    assert routed.chosen.sent_up_rate == 0.5 and 0.2 < routed.chosen.min_p <= 0.8
    assert routed.chosen.compute_s_per_1k == pytest.approx((2 * 100 + 2 * 400) / 4)  # no call wasted
    assert routed.chosen.compute_s_per_1k < margin_only.chosen.compute_s_per_1k
    assert "before the workhorse answers" in routed.summary()
    # where the margin tells right from wrong, a router that can't (the same estimate for all) can only send
    # everything up, which costs more than escalating the unsure half
    telling = [item(1.0, 3.0), item(0.0, 1.0), item(1.0, 3.0), item(0.0, 1.0)]
    by_margin = tune(telling, big, target=0.97)
    blind = tune(telling, big, target=0.97, estimates=[0.5, 0.5, 0.5, 0.5])
    assert not blind.uses_router and blind.chosen == by_margin.chosen and by_margin.chosen.min_margin == 3.0
    assert blind.router.startswith("no cheaper than routing by margin alone")


async def test_a_worker_with_a_router_sends_a_likely_miss_up_without_calling_its_own_model(
    tmp_path: Path,
) -> None:
    import dataclasses

    import numpy as np

    from orchestrator import Orchestrator, Settings, SlotConfig
    from orchestrator.evals.trial import run_items
    from orchestrator.testing import ScriptedChatModel
    from orchestrator.toolsets.retrieval.dense import MiniLM
    from orchestrator.workers.router import Router
    from support import PRICES

    asked: dict[str, list[str]] = {"small": [], "big": []}

    def replying(who: str, label: str):  # type: ignore[no-untyped-def]
        def reply(messages):  # type: ignore[no-untyped-def]
            asked[who].append(str(messages[-1].content))
            return json.dumps({"label": label})

        return reply

    orch = Orchestrator(
        settings=Settings(traces_path=tmp_path / "t.db", checkpoints_path=tmp_path / "c.db"),
        slots={
            "classify": SlotConfig(model="python:scripted", role="workhorse", prices=PRICES),
            "controller": SlotConfig(model="python:scripted", role="racehorse", prices=PRICES),
        },
        models={
            "classify": ScriptedChatModel(replies=[replying("small", "card_arrival")] * 4),
            "controller": ScriptedChatModel(replies=[replying("big", "lost_or_stolen_card")] * 4),
        },
    )
    # the workhorse was right on the two card texts and wrong on the theft one: a router of one neighbour
    known = [
        "my card never came in the post",
        "the card has not arrived yet",
        "a thief took my wallet and card",
    ]
    Router(MiniLM.shared().embed(known), np.array([1.0, 1.0, 0.0], dtype=np.float32), 0.5).save(
        tmp_path / "r.npz"
    )
    worker = classify_worker("triage", ["card_arrival", "lost_or_stolen_card"], "Triage")
    worker = dataclasses.replace(worker, router=Router.load(tmp_path / "r.npz", min_p=0.5, k=1))
    chain = {"controller": (orch.slots["controller"], orch.model_for("controller"))}
    items = [
        {"input": "someone stole my wallet with the card in it", "expected": "lost_or_stolen_card"},
        {"input": "my new card still has not arrived", "expected": "card_arrival"},
    ]
    out = await run_items(orch.slots["classify"], orch.model_for("classify"), worker, items, chain)
    assert asked["small"] == [items[1]["input"]]  # the theft text never reached the workhorse
    assert asked["big"] == [items[0]["input"]]
    assert [i.escalated for i in out] == [True, False] and [i.score for i in out] == [1.0, 1.0]
    orch.close()


def test_a_router_entry_loads_its_file_and_a_missing_or_bad_one_is_an_error(tmp_path: Path) -> None:
    import numpy as np

    from orchestrator.workers.router import Router

    root = project(tmp_path, 'worker_settings = "tuned.json"\n')
    Router(np.eye(3, dtype=np.float32), np.array([1.0, 0.0, 1.0], dtype=np.float32), 0.4).save(
        root / "routers" / "triage.npz"
    )
    write_setting(root / "tuned.json", "triage", {"router": {"file": "routers/triage.npz", "min_p": 0.4}})
    router = load_definitions(root)[2][0].router
    assert router is not None and router.min_p == 0.4 and router.p_right(np.eye(3, dtype=np.float32)[1]) < 0.5
    write_setting(root / "tuned.json", "triage", {"router": {"file": "routers/gone.npz", "min_p": 0.4}})
    with pytest.raises(Exception, match=r"can't read the router .*gone\.npz.*--tune"):
        load_definitions(root)
    write_setting(root / "tuned.json", "triage", {"router": {"file": "routers/triage.npz"}})
    with pytest.raises(ManifestError, match=r"router must be null or"):
        load_definitions(root)


def test_the_pair_verdict_of_models_that_cost_nothing_goes_by_their_compute() -> None:
    from orchestrator.evals.trial import TrialReport

    def free(score: float, escalated: bool, compute_ms: float, own_ms: float) -> ItemResult:
        done = item(score, None, compute_ms=compute_ms)
        done.cost_usd = done.own_cost_usd = 0.0  # local models: priced, at $0
        done.escalated, done.score_alone, done.own_compute_ms = escalated, 0.0 if escalated else score, own_ms
        return done

    report = TrialReport("local:small", "w", "classify")
    report.items = [free(1.0, False, 100.0, 100.0), free(1.0, True, 500.0, 100.0)]
    report.racehorse = TrialReport("local:big", "w", "classify")
    report.racehorse.items = [free(1.0, False, 400.0, 400.0), free(1.0, False, 400.0, 400.0)]
    verdict, why = report.pair_verdict()
    assert "of its compute" in why and "?" not in why  # 600 / 800 ms: 75 % of the racehorse's compute
    assert verdict == "routed"


def test_without_the_embed_extra_a_router_entry_is_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib.util

    root = project(tmp_path, 'worker_settings = "tuned.json"\n')
    write_setting(
        root / "tuned.json", "triage", {"min_margin": 0.5, "router": {"file": "routers/t.npz", "min_p": 0.4}}
    )
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    with caplog.at_level("WARNING", logger="orchestrator.workers"):
        worker = load_definitions(root)[2][0]
    assert worker.router is None and worker.min_margin == 0.5  # routing by margin stays
    assert "needs the embed extra" in caplog.text and "routes by margin alone" in caplog.text
