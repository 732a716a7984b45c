"""orchestrator: a racehorse model plans, cheap workhorse models do the bulk, every call traced and priced.

The names below are imported when first used (PEP 562), so `orch traces ...` and other light commands start
without loading LangGraph and the providers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from orchestrator._version import __version__

if TYPE_CHECKING:
    from orchestrator.catalog import Catalog
    from orchestrator.config import Limits, Manifest, Settings, SlotConfig, load_manifest
    from orchestrator.context import RunContext
    from orchestrator.errors import (
        ConfigError,
        ManifestError,
        ModelError,
        ModelFileError,
        OrchestratorError,
        PromptTooLongError,
        RunError,
        ToolError,
        ToolsUnsupportedError,
        UnknownGraphError,
        UnknownModelError,
        WorkerOutputError,
    )
    from orchestrator.graph import AgentState, build_agent_graph
    from orchestrator.ledger import Budget, Ledger, SharedBudget
    from orchestrator.plan import Example as PlanExample
    from orchestrator.runner import Orchestrator, RunEvent, RunResult
    from orchestrator.stable import ModelProfile, SlotBinding, resolve_profile
    from orchestrator.workers import Worker, classify_worker, extract_worker, style_worker, summarize_worker
    from orchestrator.workhorse import worker_node

_LAZY: dict[str, tuple[str, str]] = {
    "AgentState": ("orchestrator.graph", "AgentState"),
    "Budget": ("orchestrator.ledger", "Budget"),
    "Catalog": ("orchestrator.catalog", "Catalog"),
    "ConfigError": ("orchestrator.errors", "ConfigError"),
    "Ledger": ("orchestrator.ledger", "Ledger"),
    "Limits": ("orchestrator.config", "Limits"),
    "Manifest": ("orchestrator.config", "Manifest"),
    "ManifestError": ("orchestrator.errors", "ManifestError"),
    "ModelError": ("orchestrator.errors", "ModelError"),
    "ModelFileError": ("orchestrator.errors", "ModelFileError"),
    "ModelProfile": ("orchestrator.stable", "ModelProfile"),
    "Orchestrator": ("orchestrator.runner", "Orchestrator"),
    "OrchestratorError": ("orchestrator.errors", "OrchestratorError"),
    "PlanExample": ("orchestrator.plan", "Example"),
    "PromptTooLongError": ("orchestrator.errors", "PromptTooLongError"),
    "RunContext": ("orchestrator.context", "RunContext"),
    "RunError": ("orchestrator.errors", "RunError"),
    "RunEvent": ("orchestrator.runner", "RunEvent"),
    "RunResult": ("orchestrator.runner", "RunResult"),
    "Settings": ("orchestrator.config", "Settings"),
    "SharedBudget": ("orchestrator.ledger", "SharedBudget"),
    "SlotBinding": ("orchestrator.stable", "SlotBinding"),
    "SlotConfig": ("orchestrator.config", "SlotConfig"),
    "ToolError": ("orchestrator.errors", "ToolError"),
    "ToolsUnsupportedError": ("orchestrator.errors", "ToolsUnsupportedError"),
    "UnknownGraphError": ("orchestrator.errors", "UnknownGraphError"),
    "UnknownModelError": ("orchestrator.errors", "UnknownModelError"),
    "Worker": ("orchestrator.workers", "Worker"),
    "WorkerOutputError": ("orchestrator.errors", "WorkerOutputError"),
    "build_agent_graph": ("orchestrator.graph", "build_agent_graph"),
    "classify_worker": ("orchestrator.workers", "classify_worker"),
    "extract_worker": ("orchestrator.workers", "extract_worker"),
    "load_manifest": ("orchestrator.config", "load_manifest"),
    "resolve_profile": ("orchestrator.stable", "resolve_profile"),
    "style_worker": ("orchestrator.workers", "style_worker"),
    "summarize_worker": ("orchestrator.workers", "summarize_worker"),
    "worker_node": ("orchestrator.workhorse", "worker_node"),
}

__all__ = [
    "AgentState",
    "Budget",
    "Catalog",
    "ConfigError",
    "Ledger",
    "Limits",
    "Manifest",
    "ManifestError",
    "ModelError",
    "ModelFileError",
    "ModelProfile",
    "Orchestrator",
    "OrchestratorError",
    "PlanExample",
    "PromptTooLongError",
    "RunContext",
    "RunError",
    "RunEvent",
    "RunResult",
    "Settings",
    "SharedBudget",
    "SlotBinding",
    "SlotConfig",
    "ToolError",
    "ToolsUnsupportedError",
    "UnknownGraphError",
    "UnknownModelError",
    "Worker",
    "WorkerOutputError",
    "__version__",
    "build_agent_graph",
    "classify_worker",
    "extract_worker",
    "load_manifest",
    "resolve_profile",
    "style_worker",
    "summarize_worker",
    "worker_node",
]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
