"""The layout's promises to users: old import paths keep working, without warnings; the layers hold."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter with every warning an error (a re-export must not warn)."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_manifest_reference_to_the_bundled_agent_still_resolves() -> None:
    done = _python(
        "from orchestrator._refs import import_ref; from orchestrator.agent.graph import build_agent_graph; "
        "assert import_ref('orchestrator.graph:build_agent_graph', 'graph') is build_agent_graph"
    )
    assert done.returncode == 0, done.stderr


def test_provider_error_still_importable_from_the_http_client() -> None:
    done = _python(
        "from orchestrator.providers.http import Attempt, ProviderError; "
        "from orchestrator.cost.billing import Attempt as Billed; "
        "assert Attempt is Billed and issubclass(ProviderError, Exception)"
    )
    assert done.returncode == 0, done.stderr


def test_sync_bridge_closes_the_http_clients_it_opened() -> None:
    """The HTTP client registers its closer with the bridge (sync imports nothing above it)."""
    done = _python(
        "import asyncio\n"
        "from orchestrator.providers import http\n"
        "from orchestrator.sync import run_blocking\n"
        "async def use():\n"
        "    http._client(http.Endpoint('http://127.0.0.1:9'))\n"
        "    return len(http._clients)\n"
        "assert run_blocking(use) == 1\n"
        "assert not http._clients, http._clients\n"
    )
    assert done.returncode == 0, done.stderr


_LINT = Path(sys.executable).parent / "lint-imports"


@pytest.mark.skipif(not _LINT.exists(), reason="import-linter comes with the dev extra")
def test_layers_contract_holds() -> None:
    lint = str(_LINT)
    done = subprocess.run([lint, "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]


def _engine_imports(path: Path) -> list[str]:
    """The `orchestrator` modules a file imports from (`orchestrator` itself for the public API)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "orchestrator":
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "orchestrator"]
    return found


def test_definition_folders_use_only_the_public_api() -> None:
    """What users copy from tools/, workers/ and graphs/ must not reach into the engine's internals."""
    files = [p for folder in ("tools", "workers", "graphs") for p in (ROOT / folder).rglob("*.py")]
    assert files
    private = {
        str(p.relative_to(ROOT)): mod for p in files for mod in _engine_imports(p) if mod != "orchestrator"
    }
    assert private == {}


def test_every_charge_is_made_in_cost() -> None:
    """One place for a charge: no module outside `orchestrator/cost/` builds a ledger entry by hand."""
    package = ROOT / "orchestrator"
    by_hand = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.relative_to(package).parts[0] != "cost" and "LedgerEntry(" in path.read_text(encoding="utf-8")
    ]
    assert by_hand == []


def test_a_projects_tools_are_loaded_in_one_place() -> None:
    """The agent and `orch tools` load a manifest's tool packs and MCP servers through toolsets/project.py
    (they were loaded twice, in the runner and in retrieval/sources, and could drift)."""
    package = ROOT / "orchestrator"
    loaders = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if any(word in path.read_text(encoding="utf-8") for word in (".tool_packs", "manifest_tools("))
    )
    assert loaders == ["toolsets/mcp.py", "toolsets/project.py"], loaders
