"""The tools a project's manifest names, loaded in one place for the agent (`run/project`) and for
`orch tools` (`retrieval/sources`)."""

from __future__ import annotations

import sys
from pathlib import Path

from langchain_core.tools import BaseTool

from orchestrator.config import Manifest
from orchestrator.errors import ManifestError
from orchestrator.toolsets.sources import load_pack

__all__ = ["project_tools"]


def project_tools(manifest: Manifest, root: Path) -> list[tuple[str, list[BaseTool]]]:
    """The tools a project's manifest names, as (source, tools) pairs in manifest order: each tool pack
    (`module:attr` in the project folder `root`, or an installed pack's entry-point name), then each MCP
    server's tools (the servers are started). The one place the agent and `orch tools` load them from."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    sources: list[tuple[str, list[BaseTool]]] = [(ref, load_pack(ref)) for ref in manifest.tool_packs]
    if manifest.mcp_servers:
        try:  # the MCP SDK is imported only when a server is named
            from orchestrator.toolsets.mcp import manifest_tools
        except ModuleNotFoundError as exc:
            raise ManifestError(
                f"[tool.orchestrator].mcp_servers needs the MCP SDK ({exc}); install it with "
                "pip install 'racehorse-orchestrator[mcp]'"
            ) from None
        for tool in manifest_tools(manifest):
            sources.append((f"mcp:{tool.server.name}", [tool]))
    return sources
