"""orchestrator: a racehorse model plans, cheap workhorse models do the bulk, every call traced and priced."""

from orchestrator._version import __version__
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
