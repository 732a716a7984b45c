"""A user's graph for the fleet's tests: three nodes, one model call each (`three`); and the same with a
person's approval asked between the first and the second (`approved`)."""

from __future__ import annotations

from typing import TypedDict

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from orchestrator import RunContext


class State(TypedDict, total=False):
    input: str
    notes: list[str]
    approved: bool
    answer: str


async def _call(state: State, runtime: Runtime[RunContext], step: str) -> dict[str, object]:
    reply = await runtime.context.model("step").ainvoke([HumanMessage(f"{step}: {state['input']}")])
    notes = [*(state.get("notes") or []), str(reply.content)[:20]]
    return {"notes": notes, "answer": f"{len(notes)} steps for {state['input']}"}


async def first(state: State, runtime: Runtime[RunContext]) -> dict[str, object]:
    return await _call(state, runtime, "first")


async def second(state: State, runtime: Runtime[RunContext]) -> dict[str, object]:
    return await _call(state, runtime, "second")


async def third(state: State, runtime: Runtime[RunContext]) -> dict[str, object]:
    return await _call(state, runtime, "third")


def ask(state: State) -> dict[str, object]:
    return {"approved": bool(interrupt({"type": "question", "text": "go on?"}))}


def build() -> StateGraph[State, RunContext, State, State]:
    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    for name, fn in (("first", first), ("second", second), ("third", third)):
        g.add_node(name, fn)
    g.add_edge(START, "first")
    g.add_edge("first", "second")
    g.add_edge("second", "third")
    g.add_edge("third", END)
    return g


def build_approved() -> StateGraph[State, RunContext, State, State]:
    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    for name, fn in (("first", first), ("ask", ask), ("second", second), ("third", third)):
        g.add_node(name, fn)  # type: ignore[arg-type]
    g.add_edge(START, "first")
    g.add_edge("first", "ask")
    g.add_edge("ask", "second")
    g.add_edge("second", "third")
    g.add_edge("third", END)
    return g
