"""Where the tools to search come from: a project's tool packs and JSON Lines catalog files; and where their
index is kept."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import platformdirs
from langchain_core.utils.function_calling import convert_to_openai_tool

from orchestrator.errors import ConfigError
from orchestrator.toolsets.retrieval.docs import ToolDoc, read_catalog

__all__ = ["gather", "index_path"]


def _pack_docs(project: str | Path) -> list[ToolDoc]:
    from orchestrator.config import load_manifest
    from orchestrator.toolsets.project import project_tools
    from orchestrator.toolsets.sources import guard

    root = Path(project).resolve()
    manifest = load_manifest(root)
    docs = []
    for ref, pack in project_tools(manifest, root):
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
