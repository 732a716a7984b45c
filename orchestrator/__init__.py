"""orchestrator: a racehorse model plans, cheap workhorse models do the bulk, every call traced and priced.

The names below are imported when first used (PEP 562), so `orch traces ...` and other light commands start
without loading LangGraph and the providers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from orchestrator._version import __version__

if TYPE_CHECKING:
    from orchestrator.agent.graph import AgentState, build_agent_graph
    from orchestrator.agent.plan import Example as PlanExample
    from orchestrator.agent.workhorse import worker_node
    from orchestrator.config import Limits, Manifest, Settings, SlotConfig, load_manifest
    from orchestrator.cost.ledger import Budget, Ledger, SharedBudget
    from orchestrator.cost.pg_budget import PostgresBudget
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
    from orchestrator.models.binding import resolve_profile
    from orchestrator.models.context import RunContext
    from orchestrator.profiles import ModelProfile, SlotBinding
    from orchestrator.run.events import RunEvent, RunResult
    from orchestrator.run.orchestrator import Orchestrator
    from orchestrator.toolsets.catalog import Catalog
    from orchestrator.workers.definitions import (
        Worker,
        classify_worker,
        extract_worker,
        style_worker,
        summarize_worker,
    )

_LAZY: dict[str, tuple[str, str]] = {
    "AgentState": ("orchestrator.agent.graph", "AgentState"),
    "Budget": ("orchestrator.cost.ledger", "Budget"),
    "Catalog": ("orchestrator.toolsets.catalog", "Catalog"),
    "ConfigError": ("orchestrator.errors", "ConfigError"),
    "Ledger": ("orchestrator.cost.ledger", "Ledger"),
    "Limits": ("orchestrator.config", "Limits"),
    "Manifest": ("orchestrator.config", "Manifest"),
    "ManifestError": ("orchestrator.errors", "ManifestError"),
    "ModelError": ("orchestrator.errors", "ModelError"),
    "ModelFileError": ("orchestrator.errors", "ModelFileError"),
    "ModelProfile": ("orchestrator.profiles", "ModelProfile"),
    "Orchestrator": ("orchestrator.run.orchestrator", "Orchestrator"),
    "OrchestratorError": ("orchestrator.errors", "OrchestratorError"),
    "PlanExample": ("orchestrator.agent.plan", "Example"),
    "PostgresBudget": ("orchestrator.cost.pg_budget", "PostgresBudget"),
    "PromptTooLongError": ("orchestrator.errors", "PromptTooLongError"),
    "RunContext": ("orchestrator.models.context", "RunContext"),
    "RunError": ("orchestrator.errors", "RunError"),
    "RunEvent": ("orchestrator.run.events", "RunEvent"),
    "RunResult": ("orchestrator.run.events", "RunResult"),
    "Settings": ("orchestrator.config", "Settings"),
    "SharedBudget": ("orchestrator.cost.ledger", "SharedBudget"),
    "SlotBinding": ("orchestrator.profiles", "SlotBinding"),
    "SlotConfig": ("orchestrator.config", "SlotConfig"),
    "ToolError": ("orchestrator.errors", "ToolError"),
    "ToolsUnsupportedError": ("orchestrator.errors", "ToolsUnsupportedError"),
    "UnknownGraphError": ("orchestrator.errors", "UnknownGraphError"),
    "UnknownModelError": ("orchestrator.errors", "UnknownModelError"),
    "Worker": ("orchestrator.workers.definitions", "Worker"),
    "WorkerOutputError": ("orchestrator.errors", "WorkerOutputError"),
    "build_agent_graph": ("orchestrator.agent.graph", "build_agent_graph"),
    "classify_worker": ("orchestrator.workers.definitions", "classify_worker"),
    "extract_worker": ("orchestrator.workers.definitions", "extract_worker"),
    "load_manifest": ("orchestrator.config", "load_manifest"),
    "resolve_profile": ("orchestrator.models.binding", "resolve_profile"),
    "style_worker": ("orchestrator.workers.definitions", "style_worker"),
    "summarize_worker": ("orchestrator.workers.definitions", "summarize_worker"),
    "worker_node": ("orchestrator.agent.workhorse", "worker_node"),
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
    "PostgresBudget",
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
