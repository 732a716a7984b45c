"""The run's wall-time limits (the deadline, a time budget) cut a model call under way, bill what it used,
and the stopped run returns what was computed and resumes from its checkpoint."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import Loopback
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from wire import openai_stream, openai_usage

from orchestrator import Budget, Limits, Orchestrator, Settings, SlotConfig
from orchestrator.config import PriceOverride
from orchestrator.providers import local
from orchestrator.providers.http import aclose_clients, reset_model_states
from orchestrator.providers.llama_engine import Completion
from orchestrator.tracing.store import TraceStore
from support import TOOLS, WORKERS, MakeOrch, act

TASK = "How many days from 2026-03-02 to 2026-03-20? Also classify: 'my card has not arrived'"
PLAN = json.dumps(
    {
        "plan": [
            {"tool": "days between 2026-03-02 and 2026-03-20"},
            {"worker": "classify_request", "text": "my card has not arrived"},
        ]
    }
)
CALL = act(action="call_tool", tool="date_diff", args={"start": "2026-03-02", "end": "2026-03-20"})
FINAL = act(action="final", answer="18 days; card_arrival")
LABEL = '{"label": "card_arrival"}'
SLOW_S = 60.0  # a call that takes this long, against a wall-time limit of a few seconds
WITHIN_S = 25.0  # the stopped run ends well before the slow call would have (generous: 2 busy cores)


def model_calls(result: Any) -> dict[str, int]:
    return {n.node: n.calls for n in result.ledger.by_node()}


@pytest.mark.parametrize(
    ("limits", "budget", "reason"),
    [
        (Limits(max_steps=8, deadline_s=5, isolate_tools=False), None, "deadline of 5s reached"),
        (Limits(max_steps=8, isolate_tools=False), Budget(seconds=5), "time budget of 5s used up"),
    ],
    ids=["deadline", "time-budget"],
)
async def test_a_wall_time_limit_cuts_the_call_under_way_keeps_the_results_and_resumes(
    make_orch: MakeOrch,
    spans: InMemorySpanExporter,
    settings: Settings,
    limits: Limits,
    budget: Budget | None,
    reason: str,
) -> None:
    # the tool part is done; then the worker's call hangs (a scripted model: cancelled at the limit)
    orch = make_orch([PLAN, CALL, FINAL], [LABEL], by_turn=True, limits=limits, worker_delay_s=SLOW_S)
    t0 = time.monotonic()
    result = await orch.arun("agent", TASK, run_id="r-slow", budget=budget)
    elapsed = time.monotonic() - t0
    orch.close()
    assert elapsed < WITHIN_S, f"the run took {elapsed:.1f}s: the call under way was not cut at the limit"
    assert (result.status, result.stop_reason, result.resumable) == ("budget_stop", reason, True)
    # what was computed before the stop is returned, in an answer built from the results
    assert result.answer == (
        "Results: days between 2026-03-02 and 2026-03-20: 18; "
        "classify_request of the message: not done (the run stopped first)."
    )
    # the cut call is billed: its prompt (estimated), in the ledger and on its span
    (cut,) = [line for line in result.ledger.lines if line["node"] == "worker"]
    assert cut["input_tokens"] > 0 and cut["cost_usd"] and cut["cost_usd"] > 0
    assert model_calls(result) == {"controller": 2, "call_tool": 1, "worker": 1}
    chats = [dict(s.attributes or {}) for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    worker_chat = [c for c in chats if c["orchestrator.node"] == "worker"][-1]
    assert worker_chat["gen_ai.response.finish_reasons"] == ("deadline",)
    assert worker_chat["orchestrator.stop_reason"] == reason
    assert worker_chat["orchestrator.usage_estimated"] is True
    assert worker_chat["gen_ai.usage.input_tokens"] == cut["input_tokens"]
    store = TraceStore(settings.traces_path)
    run = store.get_run("r-slow")
    assert run is not None and run["status"] == "budget_stop"
    assert run["cost_usd"] == pytest.approx(result.ledger.cost_usd)
    store.close()

    # resumed with time to spare: only the unfinished part runs; the plan and the tool call are not repeated
    again = make_orch([PLAN, CALL, FINAL], [LABEL], by_turn=True, limits=Limits(max_steps=8, deadline_s=60))
    resumed = await again.arun("agent", None, run_id="r-slow", resume=True)
    again.close()
    assert (resumed.status, resumed.answer, resumed.stop_reason) == ("ok", "18 days; card_arrival", None)
    assert [r["value"] for r in resumed.results] == [{"label": "card_arrival"}]
    # the ledger spans both attempts: 3 controller calls (plan, tool call, answer), 1 tool run, 2 worker calls
    assert model_calls(resumed) == {"controller": 3, "call_tool": 1, "worker": 2}


async def test_a_limit_stop_answers_from_the_results_so_far_and_resumes_with_a_larger_limit(
    make_orch: MakeOrch,
) -> None:
    # the tool part is done when the step limit stops the controller (before it delegates the worker part)
    orch = make_orch([PLAN, CALL, FINAL], [LABEL], by_turn=True, limits=Limits(max_steps=2))
    result = await orch.arun("agent", TASK, run_id="r-steps")
    orch.close()
    assert (result.status, result.stop_reason, result.resumable) == (
        "budget_stop",
        "step limit of 2 reached",
        True,
    )
    assert result.answer == (
        "Results: days between 2026-03-02 and 2026-03-20: 18; "
        "classify_request of the message: not done (the run stopped first)."
    )
    assert result.results == [] and model_calls(result) == {"controller": 2, "call_tool": 1}

    again = make_orch([PLAN, CALL, FINAL], [LABEL], by_turn=True, limits=Limits(max_steps=8))
    resumed = await again.arun("agent", None, run_id="r-steps", resume=True)
    again.close()
    assert (resumed.status, resumed.answer) == ("ok", "18 days; card_arrival")
    assert [r["value"] for r in resumed.results] == [{"label": "card_arrival"}]
    assert model_calls(resumed) == {"controller": 3, "call_tool": 1, "worker": 1}  # nothing done twice


# --- a real HTTP provider on loopback: the stalling stream's request is cancelled at the deadline ------

PRICE = PriceOverride(input=1e-6, output=4e-6)
DAYS_TASK = "How many days from 2026-03-02 to 2026-03-20?"
DAYS_PLAN = json.dumps({"plan": [{"tool": "days between 2026-03-02 and 2026-03-20"}]})
DAYS_FINAL = act(action="final", answer="18 days")


@pytest.fixture
async def _clean_http() -> AsyncIterator[None]:
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()


def http_orch(settings: Settings, server: Loopback, deadline_s: float) -> Orchestrator:
    slot = SlotConfig(
        model="openai-compat:ctl", base_url=server.url + "/v1", role="racehorse", prices=PRICE, max_retries=1
    )
    return Orchestrator(
        settings=settings,
        slots={"controller": slot},
        tools=TOOLS,
        workers=[w for w in WORKERS if w.slot == "controller"],
        graphs={"agent": "orchestrator.graph:build_agent_graph"},
        limits=Limits(max_steps=6, deadline_s=deadline_s),
    )


@pytest.mark.usefixtures("_clean_http")
async def test_a_stalled_stream_is_cancelled_at_the_deadline_billed_and_the_run_resumes(
    loopback: Loopback, settings: Settings
) -> None:
    loopback.push(
        openai_stream([DAYS_PLAN], openai_usage(300, 20)),
        openai_stream([CALL], openai_usage(400, 30)),
        # the answer: two pieces of text, then nothing for a minute (the connection stays open)
        openai_stream(
            [DAYS_FINAL[:16], DAYS_FINAL[16:32], DAYS_FINAL[32:]], stall_after_events=3, stall=SLOW_S
        ),
    )
    orch = http_orch(settings, loopback, deadline_s=5)
    t0 = time.monotonic()
    result = await orch.arun("agent", DAYS_TASK, run_id="r-stall")
    elapsed = time.monotonic() - t0
    assert elapsed < WITHIN_S, f"the run took {elapsed:.1f}s: the stalled request was not cancelled"
    assert (result.status, result.stop_reason, result.resumable) == (
        "budget_stop",
        "deadline of 5s reached",
        True,
    )
    assert result.answer == "Results: days between 2026-03-02 and 2026-03-20: 18."
    finished = 300 * 1e-6 + 20 * 4e-6 + 400 * 1e-6 + 30 * 4e-6
    assert result.ledger.cost_usd is not None and result.ledger.cost_usd > finished  # the cut call is billed

    store = TraceStore(settings.traces_path)
    chats = [s for s in store.spans("run_id = ?", ["r-stall"]) if s["kind"] == "chat"]
    cut = chats[-1]  # the answer's call (a try with native tools before it was refused, unsent)
    attributes = json.loads(cut["attributes"])
    assert cut["status"] != "error"  # cut short by the limit, not failed
    assert attributes["gen_ai.response.finish_reasons"] == ["deadline"]
    assert attributes["orchestrator.usage_estimated"] is True
    # the prompt and the text that arrived (32 characters: about 8 tokens), estimated
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] == 8
    assert cut["cost_usd"] == pytest.approx(result.ledger.cost_usd - finished)
    store.close()
    orch.close()

    loopback.push(openai_stream([DAYS_FINAL], openai_usage(450, 10)))
    again = http_orch(settings, loopback, deadline_s=60)
    resumed = await again.arun("agent", None, run_id="r-stall", resume=True)
    again.close()
    assert (resumed.status, resumed.answer) == ("ok", "18 days"), resumed.error
    assert len(loopback.requests) == 4  # the plan and the tool call were not asked for again


# --- the in-process model: the generation thread stops at the deadline and frees the model --------------


class _Engine:
    """Stands in for `LlamaEngine` (no model file is loaded): a token every 10 ms until told to stop."""

    def __init__(self) -> None:
        self.running = threading.Event()

    def complete(self, messages: Any, *, max_tokens: int, stop: Any = None, **_: Any) -> Completion:
        self.running.set()
        tokens = 0
        while tokens < max_tokens and not (stop is not None and stop()):
            time.sleep(0.01)
            tokens += 1
        finish = "length" if tokens == max_tokens else "deadline"
        return Completion("x" * tokens, 12, 0, tokens, finish, 0.0, 0.0, tokens * 0.01, 0)


LOCAL_TOKENS = 3000  # at 10 ms a token: 30 s, against a deadline of 1 s


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[_Engine, local.LocalChatModel, threading.Lock]]:
    path = tmp_path / "stand-in.gguf"
    path.write_bytes(b"")
    fake, lock = _Engine(), threading.Lock()
    key = (str(path), 4096)
    local._instances[key] = local._Instance(fake, lock, 0.0)  # type: ignore[arg-type]
    yield fake, local.LocalChatModel(model_path=str(path), model_name="local:stand-in"), lock
    del local._instances[key]


async def test_a_local_generation_stops_at_its_deadline_and_a_cancelled_one_frees_the_model(
    engine: tuple[_Engine, local.LocalChatModel, threading.Lock],
) -> None:
    fake, model, lock = engine
    t0 = time.monotonic()
    reply = await model.ainvoke("hi", max_tokens=LOCAL_TOKENS, deadline=time.monotonic() + 1.0)
    assert time.monotonic() - t0 < 15, "the generation ran on past its deadline"
    assert reply.response_metadata["finish_reason"] == "deadline"
    usage = reply.usage_metadata
    assert usage is not None and usage["input_tokens"] == 12 and 0 < usage["output_tokens"] < LOCAL_TOKENS

    # a call cancelled by its caller (no deadline) stops too, and frees the model for the next caller
    fake.running.clear()
    task = asyncio.create_task(model.ainvoke("hi", max_tokens=LOCAL_TOKENS))
    assert await asyncio.to_thread(fake.running.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    t1 = time.monotonic()
    reply = await model.ainvoke("hi", max_tokens=3)
    assert time.monotonic() - t1 < 15, "the cancelled generation kept the model"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 3
    assert not lock.locked()


@pytest.mark.parametrize(
    ("models", "limits", "deadline"),
    [
        (["local:qwen2.5-1.5b", "local:qwen2.5-0.5b"], None, None),  # in process: bounded by steps and tokens
        (["local:qwen2.5-1.5b", "openai:gpt-4o-mini"], None, 120.0),  # one network model: the default
        (["openai:gpt-4o-mini"], None, 120.0),
        (["local:qwen2.5-1.5b"], Limits(deadline_s=30), 30.0),  # set: kept, whatever the models
    ],
)
def test_an_unset_deadline_applies_to_network_models_only(
    settings: Settings, models: list[str], limits: Limits | None, deadline: float | None
) -> None:
    """On a slow or busy machine a local run is not cut by a deadline that only measures the machine."""
    slots = {
        name: SlotConfig(model=model, role="racehorse" if name == "controller" else "workhorse")
        for name, model in zip(("controller", "classify"), models, strict=False)
    }
    orch = Orchestrator(settings=settings, slots=slots, tools=TOOLS, workers={}, limits=limits)
    assert orch.limits.deadline_s == deadline
    orch.close()
