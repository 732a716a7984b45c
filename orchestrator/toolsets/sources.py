"""Where a project's tools come from, and which of them the agent may call.

Sources, each a list of langchain-core tools that together form the catalog:

| manifest                                  | what it names                                                |
|-------------------------------------------|--------------------------------------------------------------|
| `tool_packs = ["tools.catalog:TOOLS"]`     | a `module:attr` list of tools in the project (or importable)  |
| `tool_packs = ["weather"]`                 | a third-party pack: an entry point of `orchestrator.tools`    |
| `[tool.orchestrator.mcp_servers.NAME]`     | an MCP server's tools (`orchestrator.toolsets.mcp`)           |

A package adds a pack by declaring, in its own `pyproject.toml`,

    [project.entry-points."orchestrator.tools"]
    weather = "weather_tools:TOOLS"      # a list of BaseTool, or a function returning one

Listing the installed packs reads metadata only; a pack's module is imported when a manifest names it.

Side effects: a tool marked as side-effecting (`side_effects = True` on a BaseTool subclass, or
`metadata={"side_effects": True}` on any tool; an MCP tool annotated `destructiveHint: true`, or every tool of
a server with `side_effects = true`) is left out of the agent's catalog unless the manifest allow-lists it
(`allow_side_effects = ["name"]`): it is never offered, so never called.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.tools import BaseTool

from orchestrator._refs import import_ref
from orchestrator.errors import ManifestError, did_you_mean

__all__ = ["GROUP", "Blocked", "blocked_message", "guard", "has_side_effects", "load_pack", "pack_names"]

GROUP = "orchestrator.tools"
_log = logging.getLogger("orchestrator.tools")


def pack_names() -> list[str]:
    """The third-party tool packs installed (entry points of the `orchestrator.tools` group)."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=GROUP)})


def load_pack(ref: str) -> list[BaseTool]:
    """The tools of one `tool_packs` entry: `module:attr`, or the name of an installed pack."""
    if ":" in ref:
        value = import_ref(ref, "tool pack")
    else:
        found = [ep for ep in importlib.metadata.entry_points(group=GROUP) if ep.name == ref]
        if not found:
            raise ManifestError(
                f"tool pack {ref!r} is neither 'module:attribute' nor an installed pack (entry point of "
                f"{GROUP!r})" + did_you_mean(ref, pack_names())
            )
        entry = found[0]
        try:
            value = entry.load()
        except Exception as exc:  # the plugin's own import failed: name its package
            dist = entry.dist.name if entry.dist else "?"
            raise ManifestError(
                f"tool pack {ref!r} ({entry.value}, from the package {dist!r}) failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if callable(value) and not isinstance(value, BaseTool):
            value = value()
    if not isinstance(value, list | tuple) or not all(isinstance(t, BaseTool) for t in value):
        raise ManifestError(f"tool pack {ref!r} must be a list of langchain-core tools")
    return list(value)


def has_side_effects(tool: BaseTool) -> bool:
    """Whether a tool says it changes something outside the run (files, messages, money)."""
    if getattr(tool, "side_effects", False) is True:
        return True
    return bool((tool.metadata or {}).get("side_effects") is True)


def blocked_message(name: str) -> str:
    """What the model and the user are told about a side-effecting tool that is not allow-listed."""
    return (
        f"tool {name!r} has side effects and is not allowed in this project; to let the agent call it, add "
        f'allow_side_effects = ["{name}"] to [tool.orchestrator] in pyproject.toml'
    )


@dataclass(frozen=True)
class Blocked:
    """A side-effecting tool kept out of the catalog, and why."""

    name: str
    reason: str


def guard(tools: Sequence[BaseTool], allow: Sequence[str]) -> tuple[list[BaseTool], list[Blocked]]:
    """The tools the agent may be offered, and the side-effecting ones left out (not in `allow`)."""
    allowed = set(allow)
    kept: list[BaseTool] = []
    blocked: list[Blocked] = []
    for t in tools:
        if has_side_effects(t) and t.name not in allowed:
            blocked.append(Blocked(t.name, blocked_message(t.name)))
        else:
            kept.append(t)
    unknown = allowed - {t.name for t in tools}
    if unknown and tools:
        _log.warning("allow_side_effects names tools no source defines: %s", ", ".join(sorted(unknown)))
    for b in blocked:
        _log.info("left out of the catalog: %s", b.reason)
    return kept, blocked
