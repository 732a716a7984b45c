"""Shared fixtures: settings in a temp dir and an orchestrator on scripted models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from loopback import loopback  # noqa: F401  (a fixture: a real HTTP server on 127.0.0.1)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator import Limits, Orchestrator, Settings, SlotConfig
from orchestrator.testing import ScriptedChatModel
from support import PRICES, TOOLS, WORKERS, MakeOrch


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        traces_path=tmp_path / "traces.db",
        checkpoints_path=tmp_path / "ckpt.db",
        models_dir=tmp_path / "models",
    )


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def make_orch(settings: Settings, spans: InMemorySpanExporter) -> MakeOrch:
    """An orchestrator whose controller and workers replay scripts; spans also go to memory."""

    def make(
        controller: Sequence[Any],
        worker: Sequence[Any] = (),
        *,
        limits: Limits | None = None,
        tracing: bool = True,
        priced: bool = True,
        by_turn: bool = False,
        worker_delay_s: float = 0.0,
        **kw: Any,
    ) -> Orchestrator:
        prices = PRICES if priced else None
        slots = {
            "controller": SlotConfig(model="python:scripted", role="racehorse", prices=prices),
            "classify": SlotConfig(model="python:scripted", role="workhorse", prices=prices),
            "extract": SlotConfig(model="python:scripted", role="workhorse", prices=prices),
        }
        worker_model = ScriptedChatModel(replies=list(worker), delay_s=worker_delay_s)
        models = {
            "controller": ScriptedChatModel(replies=list(controller), by_turn=by_turn),
            "classify": worker_model,
            "extract": worker_model,
        }
        orch = Orchestrator(
            settings=kw.pop("settings", settings),
            slots=slots,
            models=models,
            tools=TOOLS,
            workers=WORKERS,
            graphs={"agent": "orchestrator.graph:build_agent_graph"},
            limits=limits or Limits(max_steps=8),
            tracing=tracing,
            **kw,
        )
        if tracing:
            orch.tracing.provider.add_span_processor(SimpleSpanProcessor(spans))  # type: ignore[attr-defined]
        return orch

    return make
