"""The example graph: the racehorse-led agent loop over the project's tools and workers."""

from __future__ import annotations

from typing import Any

from langgraph.graph import StateGraph

from orchestrator import build_agent_graph


def build() -> StateGraph[Any, Any, Any, Any]:
    """Return the uncompiled assistant graph."""
    return build_agent_graph()
