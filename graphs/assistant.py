"""The example graph: the racehorse-led agent loop over the project's tools and workers."""

from __future__ import annotations

from typing import Any

from langgraph.graph import StateGraph

from orchestrator import build_agent_graph
from tools.catalog import COVERS, PLAN_EXAMPLES


def build() -> StateGraph[Any, Any, Any, Any]:
    """Return the uncompiled assistant graph: the manifest's tools and workers, with worked plans for
    the bundled tools."""
    return build_agent_graph(covers=COVERS, examples=PLAN_EXAMPLES)
