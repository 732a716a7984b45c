"""Where manifests name the bundled agent (`orchestrator.graph:build_agent_graph`): see agent/graph.py."""

from orchestrator.agent.graph import AgentState, build_agent_graph

__all__ = ["AgentState", "build_agent_graph"]
