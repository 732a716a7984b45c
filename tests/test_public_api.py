"""The public API is curated: this list changes only on purpose."""

import orchestrator


def test_exported_members() -> None:
    assert sorted(orchestrator.__all__) == sorted(
        [
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
            "PromptTooLongError",
            "Orchestrator",
            "OrchestratorError",
            "PlanExample",
            "PostgresBudget",
            "RunError",
            "RunContext",
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
    )
    for name in orchestrator.__all__:
        assert hasattr(orchestrator, name), name


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, orchestrator; print('llama_cpp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # llama-cpp loads only when a local slot is used
