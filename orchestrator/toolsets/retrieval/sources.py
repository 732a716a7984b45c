"""Where the tools to search come from: a project's tool packs and JSON Lines catalog files; and where their
index is kept."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import platformdirs
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from orchestrator.errors import ConfigError
from orchestrator.toolsets.retrieval.docs import ToolDoc, read_catalog

__all__ = ["gather", "index_path"]


def _pack_docs(project: str | Path) -> list[ToolDoc]:
    from orchestrator.config import load_manifest
    from orchestrator.toolsets.sources import guard, load_pack

    root = Path(project).resolve()
    manifest = load_manifest(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    docs = []
    sources: list[tuple[str, Sequence[BaseTool]]] = [(ref, load_pack(ref)) for ref in manifest.tool_packs]
    if manifest.mcp_servers:  # the servers' tools, as the agent gets them (the servers are started)
        from orchestrator.toolsets.mcp import manifest_tools

        for tool in manifest_tools(manifest):
            sources.append((f"mcp:{tool.server.name}", [tool]))
    for ref, pack in sources:
        kept, _ = guard(pack, manifest.allow_side_effects)  # what the agent may be offered, as it is
        for t in kept:
            fn = convert_to_openai_tool(t)["function"]
            docs.append(ToolDoc(t.name, fn.get("description", ""), fn.get("parameters", {}), ref))
    return docs


def gather(project: str | Path | None, catalogs: Sequence[str | Path] = ()) -> list[ToolDoc]:
    """The project's tool packs (when `project` is given) followed by each catalog file's tools; a name
    defined twice is a ConfigError naming both sources."""
    docs = _pack_docs(project) if project is not None else []
    for path in catalogs:
        docs.extend(read_catalog(path, source=str(path)))
    seen: dict[str, str] = {}
    for d in docs:
        if d.name in seen:
            raise ConfigError(
                f"tool {d.name!r} comes from both {seen[d.name]!r} and {d.source!r}; "
                "tool names must be unique"
            )
        seen[d.name] = d.source
    return docs


def index_path(key: str) -> Path:
    """The index file for a set of sources: `$ORCH_TOOL_INDEX`, else one file per key in the user cache."""
    override = os.environ.get("ORCH_TOOL_INDEX")
    if override:
        return Path(override)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(platformdirs.user_cache_dir("orchestrator")) / "tool-index" / f"{digest}.db"
