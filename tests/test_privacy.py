"""Privacy: content is recorded only on opt-in, API keys never appear, and the manifest's redaction hook runs
before anything is stored or exported. Each test greps the whole trace store file (and its WAL) and every
OTLP payload a real receiver on loopback got."""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from collector import collect, payloads
from loopback import Loopback, Reply, Request
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from wire import openai_stream, openai_usage

from orchestrator import Manifest, Orchestrator, Settings, SlotConfig
from orchestrator.config import PriceOverride
from orchestrator.errors import ManifestError
from orchestrator.providers.http import aclose_clients, reset_model_states
from orchestrator.tracing.redact import Redactor
from support import MakeOrch, act

MARKER = "Zanzibar7731"  # in the user's text only: wherever it turns up, content was recorded
TASK = f"How many days from 2026-03-02 to 2026-03-20? Also classify: 'my card {MARKER} has not arrived'"
DAYS = {"tool": "days between 2026-03-02 and 2026-03-20"}
CLASSIFY = {"worker": "classify_request", "text": f"my card {MARKER} has not arrived"}
CALL = act(action="call_tool", tool="date_diff", args={"start": "2026-03-02", "end": "2026-03-20"})
FINAL = act(action="final", answer="18 days; card_arrival")
LABEL = '{"label": "card_arrival"}'
EMAIL = "ana.lopez@example.com"
KEY = "orch-test-key-5f3a9c1e7d"  # not key-shaped: only knowing the key can take it out
HOOK = """
import re

EMAIL = re.compile(r"[\\w.+-]+@[\\w-]+\\.[\\w.-]+")


def redact(name, attributes):
    return {k: EMAIL.sub("<email>", v) if isinstance(v, str) else v for k, v in attributes.items()}


def broken(name, attributes):
    raise ValueError("hook bug: " + str(attributes.get("gen_ai.input.messages")))
"""


def plan(*parts: dict[str, str]) -> str:
    return json.dumps({"plan": list(parts)})


def store_bytes(orch: Orchestrator) -> bytes:
    """The trace store file and its WAL and shared-memory files, as they are on disk after `close()`."""
    assert orch.store is not None
    path = Path(orch.store.path)
    files = sorted(path.parent.glob(path.name + "*"))
    assert files
    return b"".join(f.read_bytes() for f in files)


@pytest.fixture
def exported(settings: Settings, loopback: Loopback) -> Settings:
    """Settings that also export to an OTLP receiver on the loopback server."""
    collect(loopback)
    return replace(settings, otlp_endpoint=loopback.url)


@pytest.fixture(autouse=True)
async def _clean() -> AsyncIterator[None]:
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()


@pytest.mark.parametrize("capture", [False, True], ids=["capture off", "capture on (the control)"])
async def test_with_capture_off_no_text_of_the_input_is_stored_or_exported(
    capture: bool, make_orch: MakeOrch, exported: Settings, loopback: Loopback
) -> None:
    orch = make_orch(
        [plan(DAYS, CLASSIFY), CALL, FINAL], [LABEL], settings=replace(exported, capture_content=capture)
    )
    result = await orch.arun("agent", TASK)
    assert result.status == "ok" and result.results[0]["value"] == {"label": "card_arrival"}
    orch.close()
    stored, sent = store_bytes(orch), payloads(loopback)
    assert b"chat python:scripted" in stored and b"chat python:scripted" in sent  # the spans are there
    assert (MARKER.encode() in stored, MARKER.encode() in sent) == (capture, capture)
    assert (b"gen_ai.input.messages" in stored) == capture


@pytest.mark.parametrize("server", ["answers", "rejects the key and echoes it"])
async def test_an_api_key_never_reaches_the_store_or_the_export(
    server: str, exported: Settings, loopback: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_TEST_KEY", KEY)
    monkeypatch.setenv("ORCH_OTLP_HEADERS", "x-collector-key=collector-secret-4242")

    def answer(request: Request) -> Reply:
        if server == "answers":
            return openai_stream(["A card has not arrived."], openai_usage(120, 8))
        return Reply(401, body={"error": {"message": f"Incorrect API key provided: {KEY}", "type": "auth"}})

    loopback.handle("/v1/chat/completions", answer)
    slot = {
        "model": "openai-compat:small",
        "base_url": loopback.url + "/v1",
        "api_key_env": "ORCH_TEST_KEY",
        "prices": PriceOverride(input=1e-6, output=4e-6),
    }
    orch = Orchestrator(
        settings=replace(exported, capture_content=True),  # the worst case: everything else is recorded
        slots={"summarize": SlotConfig(**slot), "write": SlotConfig(**slot)},
        graphs={"two": "usergraphs.two_slots:build"},
    )
    result = await orch.arun("two", "My card has not arrived.")
    orch.close()
    calls = [r for r in loopback.requests if r.path == "/v1/chat/completions"]
    assert calls and all(r.headers["authorization"] == f"Bearer {KEY}" for r in calls)  # it was used
    stored, sent = store_bytes(orch), payloads(loopback)
    if server == "answers":
        assert result.status == "ok" and b"A card has not arrived." in stored
    else:
        assert result.status == "failed" and b"Incorrect API key provided: [redacted]" in stored
        assert b"Incorrect API key provided: [redacted]" in sent
    for blob in (stored, sent):
        assert KEY.encode() not in blob
        assert b"collector-secret-4242" not in blob
        assert b"chat openai-compat:small" in blob


async def test_the_redaction_hook_masks_emails_in_the_store_and_the_export(
    make_orch: MakeOrch, exported: Settings, loopback: Loopback, tmp_path: Path
) -> None:
    (tmp_path / "hooks.py").write_text(textwrap.dedent(HOOK), encoding="utf-8")
    text = f"write to {EMAIL}: my card has not arrived"
    task = f"How many days from 2026-03-02 to 2026-03-20? Also classify: '{text}'"
    steps = [plan(DAYS, {"worker": "classify_request", "text": text}), CALL, FINAL]
    orch = make_orch(
        steps,
        [LABEL],
        settings=replace(exported, capture_content=True),
        manifest=Manifest(redact=f"{tmp_path / 'hooks.py'}:redact"),
    )
    result = await orch.arun("agent", task)
    assert result.status == "ok"
    assert orch.store is not None
    (run,) = orch.store.list_runs()
    orch.close()
    stored, sent = store_bytes(orch), payloads(loopback)
    for blob in (stored, sent):
        assert EMAIL.encode() not in blob
        assert b"write to <email>: my card has not arrived" in blob  # captured, then masked
    assert run["answer"] == "18 days; card_arrival"  # the run row went through the hook, unchanged


async def test_a_hook_that_raises_drops_the_content_and_never_breaks_the_run(
    make_orch: MakeOrch,
    exported: Settings,
    loopback: Loopback,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "hooks.py").write_text(textwrap.dedent(HOOK), encoding="utf-8")
    orch = make_orch(
        [plan(DAYS, CLASSIFY), CALL, FINAL],
        [LABEL],
        settings=replace(exported, capture_content=True),
        manifest=Manifest(redact=f"{tmp_path / 'hooks.py'}:broken"),
    )
    with caplog.at_level(logging.WARNING, logger="orchestrator.tracing"):
        result = await orch.arun("agent", TASK)
    assert result.status == "ok" and result.answer == "18 days; card_arrival"
    assert orch.store is not None
    rows = orch.store.run_spans(result.run_id)
    (run,) = orch.store.list_runs()
    orch.close()
    warnings = [r for r in caplog.records if r.name == "orchestrator.tracing"]
    assert len(warnings) == 1  # once, though every span failed
    assert "broken" in warnings[0].getMessage() and "ValueError" in warnings[0].getMessage()
    assert MARKER not in warnings[0].getMessage()  # the exception's message could quote content
    stored, sent = store_bytes(orch), payloads(loopback)
    assert MARKER.encode() not in stored and MARKER.encode() not in sent
    assert b"gen_ai.input.messages" not in stored and b"gen_ai.input.messages" not in sent
    chats = [r for r in rows if r["kind"] == "chat"]  # what is not content is all there
    assert len(chats) == 4 and all(r["input_tokens"] and r["cost_usd"] for r in chats)
    assert {r["run_id"] for r in rows} == {result.run_id} and len(rows) == 13
    assert run["answer"] is None


def test_a_hook_may_edit_in_place_and_values_that_are_no_attribute_are_dropped() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("orchestrator").start_as_current_span(
        "execute_tool lookup",
        attributes={"orchestrator.span_kind": "tool", "gen_ai.tool.call.arguments": f'{{"to": "{EMAIL}"}}'},
    ) as span:
        span.record_exception(ValueError(f"no user {EMAIL}"))
        span.set_status(Status(StatusCode.ERROR, f"ValueError: no user {EMAIL}"))
    (finished,) = memory.get_finished_spans()

    def hook(name: str, attributes: dict[str, Any]) -> None:
        for key, value in list(attributes.items()):
            if isinstance(value, str):
                attributes[key] = value.replace(EMAIL, "<email>")
        attributes["orchestrator.span_kind"] = {"not": "an attribute value"}  # dropped; the kind is kept
        attributes["raw"] = b"\x00bytes"  # no attribute value either: dropped

    redacted = Redactor(hook)(finished)
    assert dict(redacted.attributes or {}) == {
        "orchestrator.span_kind": "tool",
        "gen_ai.tool.call.arguments": '{"to": "<email>"}',
    }
    assert redacted.status.description == "ValueError: no user <email>"
    (event,) = redacted.events
    assert event.name == "exception" and (event.attributes or {})["exception.message"] == "no user <email>"
    original = str((finished.attributes or {})["gen_ai.tool.call.arguments"])
    assert EMAIL in original  # the span the other processors got is as it was
    assert (redacted.context, redacted.parent, redacted.start_time) == (
        finished.context,
        finished.parent,
        finished.start_time,
    )
    provider.shutdown()


def test_a_redact_reference_that_is_no_function_is_a_manifest_error(settings: Settings) -> None:
    with pytest.raises(ManifestError, match=r"redact 'json:__doc__' must be a function \(name, attributes\)"):
        Orchestrator(settings=settings, manifest=Manifest(redact="json:__doc__"))
    with pytest.raises(ManifestError, match="redact reference 'json:nope': module 'json' has no 'nope'"):
        Orchestrator(settings=settings, manifest=Manifest(redact="json:nope"))
