"""Shared fixtures: settings in a temp dir and an orchestrator on scripted models; when the session ends,
a scan of everything the run wrote for the test secrets."""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from loopback import loopback  # noqa: F401  (a fixture: a real HTTP server on 127.0.0.1)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pgserver import pg_url, postgres_server  # noqa: F401  (fixtures: a throwaway PostgreSQL server)

from orchestrator import Limits, Orchestrator, Settings, SlotConfig
from orchestrator.testing import ScriptedChatModel
from support import PRICES, TEST_SECRETS, TOOLS, WORKERS, MakeOrch

# In CI the property tests draw the same examples every run (a failure is reproducible and a green run stays
# green); a developer's run explores new ones
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


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
    """An orchestrator whose controller and workers replay scripts (`workers=`: other workers than the
    support ones, each slot of theirs bound to the workers' script); spans also go to memory."""

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
        workers = kw.pop("workers", WORKERS)
        workhorses = dict.fromkeys(["classify", "extract", *(w.slot for w in workers)])
        slots = {"controller": SlotConfig(model="python:scripted", role="racehorse", prices=prices)}
        slots |= {s: SlotConfig(model="python:scripted", role="workhorse", prices=prices) for s in workhorses}
        worker_model = ScriptedChatModel(replies=list(worker), delay_s=worker_delay_s)
        models: dict[str, Any] = {"controller": ScriptedChatModel(replies=list(controller), by_turn=by_turn)}
        models |= dict.fromkeys(workhorses, worker_model)
        orch = Orchestrator(
            settings=kw.pop("settings", settings),
            slots=slots,
            models=models,
            tools=kw.pop("tools", TOOLS),
            workers=workers,
            graphs={"agent": "orchestrator.graph:build_agent_graph"},
            limits=limits or Limits(max_steps=8),
            tracing=tracing,
            **kw,
        )
        if tracing:
            orch.tracing.provider.add_span_processor(SimpleSpanProcessor(spans))  # type: ignore[attr-defined]
        return orch

    return make


# --- when the session ends: no test secret in any file the run wrote ------------------------------------

_STARTED = pytest.StashKey[float]()
_MODEL_FILES = (".gguf", ".onnx", ".safetensors")  # large, and never written with a secret in them


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_STARTED] = time.time()


def find_secrets(roots: Iterable[Path], secrets: Sequence[str], since: float = 0.0) -> list[tuple[Path, str]]:
    """(file, secret) for each secret whose bytes a file under `roots` holds (a root may be a file itself);
    files last changed before `since` are left out. Files are read whole: a SQLite file's free pages, its WAL
    and journal too."""
    needles = [(s, s.encode()) for s in secrets]
    found: list[tuple[Path, str]] = []
    for root in roots:
        paths = [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []
        for path in paths:
            try:
                if path.is_symlink() or not path.is_file() or path.suffix in _MODEL_FILES:
                    continue
                stat = path.stat()
                if stat.st_size == 0 or stat.st_mtime < since:
                    continue
                with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    found += [(path, s) for s, needle in needles if data.find(needle) != -1]
            except (OSError, ValueError):  # removed meanwhile, unreadable, emptied
                continue
    return found


@pytest.hookimpl(tryfirst=True)  # before pytest's own, which may remove the temporary root
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when a test secret (support.TEST_SECRETS) is in a file the run wrote: anything under
    its temporary root (the stores, logs and checkpoints of every tmp_path), and the stores outside it that
    $ORCH_TRACES / $ORCH_CHECKPOINTS or the defaults name, when written during the session."""
    if hasattr(session.config, "workerinput"):  # a pytest-xdist worker: the controller scans the whole root
        return
    factory = getattr(session.config, "_tmp_path_factory", None)  # pytest's own (its sessionfinish reads it)
    basetemp = getattr(factory, "_basetemp", None)  # None: no test asked for a temporary path
    defaults = Settings()
    stores = [os.environ.get("ORCH_TRACES"), os.environ.get("ORCH_CHECKPOINTS")]
    stores += [str(defaults.traces_path), str(defaults.checkpoints_path)]
    outside = [Path(s + suffix) for s in stores if s for suffix in ("", "-wal", "-journal")]
    leaks = find_secrets([basetemp] if basetemp is not None else [], TEST_SECRETS)
    leaks += find_secrets(outside, TEST_SECRETS, since=session.stash.get(_STARTED, 0.0))
    if not leaks:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "test secrets found in files the run wrote", red=True)
        for path, secret in leaks:
            reporter.write_line(f"{path}: holds the test secret {secret[:6]}...")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
