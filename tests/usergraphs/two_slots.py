"""A user's own graph, written only against the public API: two nodes, each calling its own slot."""

from __future__ import annotations

from typing import TypedDict

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from orchestrator import RunContext


class State(TypedDict, total=False):
    input: str
    summary: str
    answer: str


async def summarize(state: State, runtime: Runtime[RunContext]) -> dict[str, str]:
    reply = await runtime.context.model("summarize").ainvoke([HumanMessage(f"Summarize: {state['input']}")])
    return {"summary": str(reply.content)}


async def reply(state: State, runtime: Runtime[RunContext]) -> dict[str, str]:
    answer = await runtime.context.model("write").ainvoke([HumanMessage(f"Reply to: {state['summary']}")])
    return {"answer": str(answer.content)}


def build() -> StateGraph[State, RunContext, State, State]:
    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    g.add_node("summarize", summarize)
    g.add_node("reply", reply)
    g.add_edge(START, "summarize")
    g.add_edge("summarize", "reply")
    g.add_edge("reply", END)
    return g
