"""Tools run where a timeout can stop them: CPU-bound tools in killable child processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from langchain_core.tools import StructuredTool
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator import Limits
from orchestrator.toolsets.process_pool import ToolFailed, ToolRunner
from support import MakeOrch, act, backtrack, noisy
from tools.arithmetic import calculate
from tools.extract import regex_find_all


@pytest.fixture
async def runner() -> AsyncIterator[ToolRunner]:
    r = ToolRunner(max_processes=2)
    yield r
    r.close()


class Ticker:
    """Measures the longest gap between event-loop ticks while it runs."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.02)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        (regex_find_all, {"pattern": "(a|aa)+$", "text": "a" * 59 + "b"}),
        (calculate, {"expression": "round(1, -10**20)"}),
        (backtrack, {"size": 60}),
    ],
)
async def test_a_runaway_tool_is_stopped_at_its_timeout_without_freezing_the_loop(
    runner: ToolRunner, tool: StructuredTool, args: dict[str, object]
) -> None:
    assert runner.isolated(tool)
    await runner.run(calculate, {"expression": "1+1"}, 30)  # a child is up: time only the runaway
    async with Ticker() as ticker:
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError):
            await runner.run(tool, args, 1.0)
        took = time.perf_counter() - t0
    assert took < 10, took  # unstoppable code would run for minutes or for ever
    assert ticker.longest < 0.8, ticker.longest  # the event loop kept running meanwhile
    assert await runner.run(calculate, {"expression": "6*7"}, 30) == 42  # a fresh child takes over


async def test_other_calls_finish_while_one_tool_runs_away(runner: ToolRunner) -> None:
    await runner.run(calculate, {"expression": "1+1"}, 30)
    finished: dict[str, float] = {}
    t0 = time.perf_counter()

    async def runaway() -> None:
        with pytest.raises(TimeoutError):
            await runner.run(backtrack, {"size": 60}, 8.0)  # a second child starts slowly on a busy machine
        finished["runaway"] = time.perf_counter() - t0

    async def normal() -> None:
        assert await runner.run(calculate, {"expression": "2**10"}, 30) == 1024
        finished["normal"] = time.perf_counter() - t0

    await asyncio.gather(runaway(), normal())
    assert finished["normal"] < finished["runaway"]


async def test_a_tool_error_keeps_its_type_and_message(runner: ToolRunner) -> None:
    with pytest.raises(ToolFailed) as info:
        await runner.run(calculate, {"expression": "1/0"}, 30)
    assert info.value.type_name == "ValueError" and "division by zero" in str(info.value)


async def test_a_tool_that_prints_does_not_corrupt_its_reply(runner: ToolRunner) -> None:
    assert runner.isolated(noisy)
    assert await runner.run(noisy, {"text": "abc"}, 30) == "ABC"
    assert await runner.run(noisy, {"text": "def"}, 30) == "DEF"


async def test_tools_that_cannot_be_imported_by_reference_run_in_process(runner: ToolRunner) -> None:
    factor = 3
    closure = StructuredTool.from_function(lambda x: x * factor, name="triple", description="Triple x.")
    assert not runner.isolated(closure)
    assert await runner.run(closure, {"x": 5}, 5) == 15


async def test_a_runaway_tool_in_a_run_becomes_a_timeout_observation(
    make_orch: MakeOrch, spans: InMemorySpanExporter
) -> None:
    call = act(action="call_tool", tool="backtrack", args={"size": 60})
    orch = make_orch(
        [json_plan("backtrack the pattern on size 60"), call, call],
        by_turn=True,
        limits=Limits(tool_timeout_s=1.0),
    )
    t0 = time.perf_counter()
    result = await orch.arun("agent", "Backtrack the pattern on size 60")
    assert time.perf_counter() - t0 < 30
    assert result.status == "ok"
    tool_spans = [s for s in spans.get_finished_spans() if s.name == "execute_tool backtrack"]
    assert tool_spans and all(s.attributes and s.attributes["orch.tool.isolated"] for s in tool_spans)
    assert all("timed out after 1s" in (s.status.description or "") for s in tool_spans)


def json_plan(words: str) -> str:
    import json

    return json.dumps({"plan": [{"tool": words}]})
