"""The one exception root of orchestrator.

```
OrchestratorError
├── ConfigError                 a developer mistake; fix the configuration and run again
│   ├── ManifestError           malformed [tool.orchestrator] section or definition reference
│   ├── UnknownGraphError       a graph name the manifest does not define
│   ├── UnknownModelError       a model name no provider knows ("did you mean ...")
│   ├── ModelFileError          a local model file that is missing or fails its sha256 check
│   ├── LocalEngineError        the local engine crashes on this CPU with every setting it can try
│   ├── RunOwnedError           the run is running in another process: one owner at a time
│   ├── TraceStoreError         a trace or checkpoint store file can't be opened or written
│   └── TraceStoreDamaged       the trace store file is damaged: move it aside
└── RunError                    something failed after a run started (kept in the trace store)
    ├── ModelError              a model call failed or returned output we cannot use
    │   ├── PromptTooLongError  the prompt and the reply's max_tokens don't fit the context window
    │   ├── ToolsUnsupportedError   the endpoint refuses tools: decide another way (a JSON decision)
    │   └── ProviderError       a call failed after its retries; carries every HTTP attempt
    │       └── UnsupportedFeatureError   the server refused a feature of the request; not retried
    ├── ToolError               a tool could not be called (unknown, outside the catalog)
    ├── StoreBusyError          a store stayed locked by other writers past its wait
    └── WorkerOutputError       a workhorse result failed validation after repair
```

A budget stop is not an exception: it is `RunResult.status == "budget_stop"`. Every error is defined here;
the modules that raise some of them re-export them under their old names (`orchestrator.providers.http.
ProviderError`, `orchestrator.tracing.store.TraceStoreError`, ...).
"""

from __future__ import annotations

import difflib
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from orchestrator.reserve import disk_full

__all__ = [
    "ConfigError",
    "LocalEngineError",
    "ManifestError",
    "ModelError",
    "ModelFileError",
    "OrchestratorError",
    "PromptTooLongError",
    "ProviderError",
    "RunError",
    "RunOwnedError",
    "StoreBusyError",
    "ToolError",
    "ToolsUnsupportedError",
    "TraceStoreDamaged",
    "TraceStoreError",
    "UnknownGraphError",
    "UnknownModelError",
    "UnsupportedFeatureError",
    "WorkerOutputError",
]


class OrchestratorError(Exception):
    """Root of every error this library raises on purpose."""


class ConfigError(OrchestratorError):
    """The configuration is wrong; the message names the value and the fix."""


class ManifestError(ConfigError):
    """The `[tool.orchestrator]` manifest is malformed."""


class UnknownGraphError(ConfigError):
    """A graph name that the manifest does not define."""


class UnknownModelError(ConfigError):
    """A model or provider name that cannot be resolved."""


class ModelFileError(ConfigError):
    """A local model file is missing, incomplete or fails verification."""


class LocalEngineError(ConfigError):
    """llama.cpp crashed in its probe with every load setting: the build does not run on this CPU."""


class RunOwnedError(ConfigError):
    """The run is running now in another process (here or on another host): a run has one owner at a time,
    so a resume or a second start with its id is refused before anything is spent."""

    def __init__(self, run_id: str, host: str, pid: int, heartbeat_age_s: float) -> None:
        self.run_id, self.host, self.pid = run_id, host, pid
        super().__init__(
            f"run {run_id!r} is already running (host {host}, pid {pid}; its last heartbeat "
            f"{max(0.0, heartbeat_age_s):.0f} s ago); wait for it to end or stop that process, "
            f"then resume it with `orch run --resume {run_id}`"
        )


class TraceStoreError(ConfigError):
    """A store file (traces or checkpoints) can't be opened or written: names the path and the fix."""

    def __init__(
        self, path: str, exc: BaseException, what: str = "trace store", setting: str = "traces"
    ) -> None:
        why = getattr(exc, "strerror", None) or str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            why = "the file is not an SQLite database"
        env = f"ORCH_{setting.upper()}"
        fix = f"point {env} (or --{setting}, or the manifest's {setting}) at a writable .db file path"
        if disk_full(exc):
            why, fix = f"its disk is full ({why})", f"free space on it, or {fix} on another disk"
        super().__init__(f"{what} {path!r}: {why}; {fix}")


class TraceStoreDamaged(ConfigError):
    """The trace store file is damaged: names the file and the fix. Nothing more is written into it."""

    def __init__(self, path: str, why: str) -> None:
        self.path, self.why = path, why
        super().__init__(
            f"trace store {path!r} is damaged ({why}); move it aside (with any -wal and -shm file beside "
            "it) and the next run starts a new one; `orch traces check` says what is wrong"
        )


class RunError(OrchestratorError):
    """A failure after a run started."""


class ModelError(RunError):
    """A model call failed, or its output could not be used."""


class PromptTooLongError(ModelError):
    """The prompt and the reply's max_tokens don't fit the model's context window; raised before the call."""


class ToolsUnsupportedError(ModelError):
    """The endpoint refused the tools sent (`feature`: "tools" or "tool_choice"), and is remembered to.

    Raised at once, not retried; later calls with tools to the same endpoint raise it without a request.
    `attempts` are the HTTP attempts it took (none when remembered).
    """

    def __init__(self, message: str, *, feature: str = "tools", attempts: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.feature = feature
        self.attempts = list(attempts)


class ProviderError(ModelError):
    """A call that failed after its retries; carries every attempt (`cost.billing.Attempt`, with any
    estimated usage) and the last HTTP status."""

    def __init__(self, message: str, attempts: list[Any], *, status: int | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status


class UnsupportedFeatureError(ProviderError):
    """The server refused a feature of the request (`feature`: "json_schema", "tools", ...); not retried."""

    def __init__(self, message: str, attempts: list[Any], *, status: int | None, feature: str) -> None:
        super().__init__(message, attempts, status=status)
        self.feature = feature


class ToolError(RunError):
    """A tool could not be resolved or bound."""


class StoreBusyError(RunError):
    """A store stayed locked by other writers past its wait; the run can be resumed when it is less busy."""


class WorkerOutputError(RunError):
    """A workhorse result failed validation, after one repair attempt."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return a `; did you mean 'x'?` suffix for the closest choice, or a list of the valid ones."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(value, options, n=3, cutoff=0.5)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    if len(options) <= 12:
        return "; valid names: " + ", ".join(repr(c) for c in options)
    return ""


def unreadable(exc: BaseException) -> str:
    """Why a JSON or TOML text could not be read, in words: what the file parsers' errors say.

    Beside syntax errors, Python's parsers raise `RecursionError` on deep nesting and `ValueError` on a
    number of more than 4,300 digits (its limit on int conversion); neither is a `JSONDecodeError`.
    """
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start}: {exc.reason})"
    message = str(exc)
    if "integer string conversion" in message:
        return "a number has more than 4,300 digits"
    return message
