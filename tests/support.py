"""Test support: tiny tools, workers, prices and a reply builder for scripted controllers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool, tool
from pydantic import BaseModel

from orchestrator import Orchestrator, classify_worker, extract_worker
from orchestrator.config import PriceOverride

ROOT = Path(__file__).resolve().parent.parent


@tool
def date_diff(start: str, end: str) -> int:
    """Number of days between two ISO dates (end minus start)."""
    import datetime as dt

    return (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days


@tool
def explode(reason: str) -> str:
    """A tool that always raises, for error-path tests."""
    raise RuntimeError(f"boom: {reason}")


@tool
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


@tool
def backtrack(size: int) -> bool:
    """A regular expression that backtracks exponentially and holds the interpreter lock meanwhile."""
    import re

    return re.match(r"(a|aa)+$", "a" * size + "b") is not None


@tool
def noisy(text: str) -> str:
    """A tool that prints to stdout and stderr before it returns."""
    import sys

    print("chatter on stdout")
    print("chatter on stderr", file=sys.stderr)
    return text.upper()


TOOLS: list[BaseTool] = [date_diff, explode, word_count, backtrack, noisy]


class Payment(BaseModel):
    amount: float
    currency: str


WORKERS = [
    classify_worker("classify_request", ["card_arrival", "refund", "other"], "Classify a message"),
    extract_worker("extract_payment", Payment, "Extract a payment"),
]

PRICES = PriceOverride(input=1e-6, output=2e-6)

# Every fake secret a test hands the code under test (API keys, header values, a database password). None
# may reach a store, log or checkpoint: when the session ends, conftest.py scans every file the run wrote
# under its temporary root for each of them. A test that uses a new secret adds it here.
TEST_SECRETS: tuple[str, ...] = (
    "sk-test-do-not-leak-1234",  # test_tool_calling.py
    "sk-test-SECRETKEY123456",  # test_providers.py
    "sk-ask-TOPSECRET987654",  # test_ask.py
    "sk-test-unused",  # test_config.py
    "orch-test-key-5f3a9c1e7d",  # test_privacy.py
    "collector-secret-4242",  # test_privacy.py: an OTLP header
    "c0ll3ct0r%2Dkey",  # test_export.py: an OTLP header, as written in ORCH_OTLP_HEADERS
    "c0ll3ct0r-key",  # ... and as sent
    "acme-test-key",  # test_provider_plugins.py
    "hunter2",  # test_postgres.py: the password in a checkpoints URL
)


def act(**body: Any) -> str:
    """A controller reply."""
    return json.dumps(body)


MakeOrch = Callable[..., Orchestrator]
