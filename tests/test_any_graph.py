"""Any LangGraph graph is traced and priced: a user's own graph, a prebuilt agent, a ToolNode's tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from loopback import Loopback
from wire import anthropic_stream, anthropic_usage, body_of, openai_stream, openai_usage

from orchestrator import ConfigError, Orchestrator, RunContext, Settings, SlotConfig
from orchestrator.config import PriceOverride
from orchestrator.providers.http import aclose_clients, reset_model_states
from orchestrator.testing import ScriptedChatModel
from orchestrator.tracing.report import hotspots
from orchestrator.tracing.store import TraceStore

OPENAI_PRICE = PriceOverride(input=1e-6, output=4e-6)
ANTHROPIC_PRICE = PriceOverride(input=3e-6, output=15e-6)
TWO_SLOTS = "usergraphs.two_slots:build"


@pytest.fixture(autouse=True)
async def _clean() -> AsyncIterator[None]:
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()


def _slots(server: Loopback) -> dict[str, SlotConfig]:
    return {
        "summarize": SlotConfig(
            model="openai-compat:small", base_url=server.url + "/v1", prices=OPENAI_PRICE
        ),
        "write": SlotConfig(model="anthropic:claude-haiku-4-5", base_url=server.url, prices=ANTHROPIC_PRICE),
    }


def _script(server: Loopback) -> None:
    server.route("/v1/chat/completions", openai_stream(["A card has not arrived."], openai_usage(120, 8)))
    server.route("/v1/messages", anthropic_stream(["Sorry, we'll send a new card."], anthropic_usage(60, 12)))


SUMMARIZE_COST = 120 * 1e-6 + 8 * 4e-6
WRITE_COST = 60 * 3e-6 + 12 * 15e-6


async def test_a_users_two_node_graph_is_traced_and_priced_per_node(
    loopback: Loopback, settings: Settings
) -> None:
    _script(loopback)
    orch = Orchestrator(settings=settings, slots=_slots(loopback), graphs={"mine": TWO_SLOTS})
    result = await orch.arun("mine", "My card never came and I need it for a trip.")
    assert result.status == "ok", result.error
    assert result.answer == "Sorry, we'll send a new card."
    by_node = {n.node: n for n in result.ledger.by_node()}
    assert by_node["summarize"].cost_usd == pytest.approx(SUMMARIZE_COST)
    assert by_node["reply"].cost_usd == pytest.approx(WRITE_COST)
    assert by_node["summarize"].model == "openai-compat:small"
    assert orch.store is not None
    spans = orch.store.run_spans(result.run_id)
    nodes = [s for s in spans if s["kind"] == "node"]
    assert [s["node"] for s in nodes] == ["summarize", "reply"]
    chats = [s for s in spans if s["kind"] == "chat"]
    assert len(chats) == 2  # one span per call: the provider's own run is not counted twice
    for chat in chats:
        parent = next(s for s in spans if s["span_id"] == chat["parent_id"])
        assert parent["kind"] == "node" and parent["node"] == chat["node"]
    spots = {h.key: h for h in hotspots(orch.store, "node", run_id=result.run_id)}
    assert spots["summarize"].cost_usd == pytest.approx(SUMMARIZE_COST)
    assert spots["reply"].cost_usd == pytest.approx(WRITE_COST)
    orch.close()


def test_the_same_graph_through_the_cli(loopback: Loopback, tmp_path: Path) -> None:
    _script(loopback)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.orchestrator]
            default_graph = "mine"
            [tool.orchestrator.graphs]
            mine = "{TWO_SLOTS}"
            [tool.orchestrator.slots.summarize]
            model = "openai-compat:small"
            base_url = "{loopback.url}/v1"
            prices = {{ input = 1e-6, output = 4e-6 }}
            [tool.orchestrator.slots.write]
            model = "anthropic:claude-haiku-4-5"
            base_url = "{loopback.url}"
            prices = {{ input = 3e-6, output = 15e-6 }}
            """
        )
    )
    env = {
        **os.environ,
        "ORCH_TRACES": str(tmp_path / "t.db"),
        "ORCH_CHECKPOINTS": str(tmp_path / "c.db"),
        "PYTHONPATH": str(Path(__file__).parent),
    }
    base = [sys.executable, "-m", "orchestrator", "--project", str(project)]
    run = subprocess.run(
        [*base, "run", "mine", "My card never came.", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["status"] == "ok" and isinstance(result["answer"], str)
    assert "summarize" in run.stderr and "reply" in run.stderr  # a progress line per node
    top = subprocess.run(
        [*base, "traces", "top", "--by", "node", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    spots = {h["key"]: h for h in json.loads(top.stdout)}
    assert spots["summarize"]["cost_usd"] == pytest.approx(SUMMARIZE_COST)
    assert spots["reply"]["cost_usd"] == pytest.approx(WRITE_COST)


@tool
def lookup_order(order_id: str) -> str:
    """Look an order up by its id."""
    if order_id == "404":
        raise ValueError("no such order 404")
    return f"order {order_id}: shipped"


@pytest.mark.filterwarnings(
    "ignore:create_react_agent has been moved"
)  # langgraph's prebuilt, as users have it
def test_a_prebuilt_agent_from_the_slot_models_runs_traced_and_priced(
    loopback: Loopback, settings: Settings
) -> None:
    from langgraph.prebuilt import create_react_agent

    call = json.dumps({"order_id": "A7"})
    loopback.route(
        "/v1/chat/completions",
        openai_stream([], openai_usage(200, 10), tool_calls=[("c1", "lookup_order", [call])]),
        openai_stream(["Your order A7 has shipped."], openai_usage(260, 9)),
    )

    def build(models: dict[str, Any]) -> Any:
        return create_react_agent(models["controller"], [lookup_order])

    slots = {
        "controller": SlotConfig(
            model="openai-compat:big", base_url=loopback.url + "/v1", role="racehorse", prices=OPENAI_PRICE
        )
    }
    orch = Orchestrator(settings=settings, slots=slots, graphs={"agent": build})
    result = orch.run_sync("agent", "Where is my order A7?")
    assert result.status == "ok", result.error
    assert result.answer == "Your order A7 has shipped."
    assert result.ledger.cost_usd == pytest.approx((200 + 260) * 1e-6 + (10 + 9) * 4e-6)
    assert orch.store is not None
    spans = orch.store.run_spans(result.run_id)
    assert [s["node"] for s in spans if s["kind"] == "node"] == ["agent", "tools", "agent"]
    (tool_span,) = [s for s in spans if s["kind"] == "tool"]
    assert tool_span["tool"] == "lookup_order" and tool_span["status"] != "error"
    orch.close()


class Orders(TypedDict, total=False):
    messages: list[Any]


async def test_a_tool_node_error_gets_an_error_span(settings: Settings) -> None:
    from langchain_core.messages import AIMessage

    def ask(state: dict[str, Any]) -> dict[str, Any]:
        call = {"name": "lookup_order", "args": {"order_id": "404"}, "id": "c1", "type": "tool_call"}
        return {"messages": [AIMessage("", tool_calls=[call])]}

    from langgraph.graph import MessagesState

    g = StateGraph(MessagesState)
    g.add_node("ask", ask)
    g.add_node("tools", ToolNode([lookup_order], handle_tool_errors=True))
    g.add_edge(START, "ask")
    g.add_edge("ask", "tools")
    g.add_edge("tools", END)
    orch = Orchestrator(settings=settings, graphs={"g": g})
    result = await orch.arun("g", "find order 404")
    assert result.status == "ok"  # ToolNode turns the error into a tool message
    assert orch.store is not None
    (tool_span,) = [s for s in orch.store.run_spans(result.run_id) if s["kind"] == "tool"]
    assert tool_span["status"] == "error" and "no such order 404" in tool_span["status_message"]
    assert tool_span["node"] == "tools"
    orch.close()


async def test_a_graph_without_input_or_messages_asks_for_json_input(settings: Settings) -> None:
    class Odd(TypedDict):
        numbers: list[int]

    g = StateGraph(Odd)
    g.add_node("noop", lambda s: {"numbers": s["numbers"]})
    g.add_edge(START, "noop")
    orch = Orchestrator(settings=settings, graphs={"odd": g})
    with pytest.raises(ConfigError, match="--input-json"):
        await orch.arun("odd", "some text")
    result = await orch.arun("odd", {"numbers": [1, 2]})  # a mapping is the input state
    assert result.status == "ok" and json.loads(result.answer or "") == {"numbers": [1, 2]}
    orch.close()


async def test_an_unknown_slot_names_the_defined_ones(settings: Settings) -> None:
    class S(TypedDict, total=False):
        input: str
        answer: str

    async def node(state: S, runtime: Runtime[RunContext]) -> dict[str, str]:
        await runtime.context.model("sumarize").ainvoke([HumanMessage("x")])
        return {"answer": "never"}

    g = StateGraph(S, context_schema=RunContext)
    g.add_node("n", node)
    g.add_edge(START, "n")
    scripted = {"summarize": ScriptedChatModel(replies=["s"]), "write": ScriptedChatModel(replies=["w"])}
    orch = Orchestrator(
        settings=settings,
        slots={name: SlotConfig(model="python:scripted", prices=OPENAI_PRICE) for name in scripted},
        models=scripted,
        graphs={"g": g},
    )
    result = await orch.arun("g", "x")
    assert result.status == "failed"
    assert "no slot 'sumarize'; did you mean 'summarize'?" in (result.error or "")
    assert "'summarize', 'write'" in (result.error or "")
    orch.close()


def _agree(store: TraceStore, result: Any) -> None:
    chats = [s for s in store.run_spans(result.run_id) if s["kind"] == "chat"]
    assert sum(s["input_tokens"] or 0 for s in chats) == result.ledger.input_tokens
    assert sum(s["output_tokens"] or 0 for s in chats) == result.ledger.output_tokens
    assert sum(s["cost_usd"] or 0.0 for s in chats) == pytest.approx(result.ledger.cost_usd or 0.0)


async def test_spans_and_ledger_agree_to_the_token(loopback: Loopback, settings: Settings) -> None:
    _script(loopback)
    orch = Orchestrator(settings=settings, slots=_slots(loopback), graphs={"mine": TWO_SLOTS})
    result = await orch.arun("mine", "My card never came.")
    assert orch.store is not None
    _agree(orch.store, result)
    orch.close()


async def test_subgraph_nodes_get_their_own_spans_under_the_parent_node(settings: Settings) -> None:
    class S(TypedDict, total=False):
        input: str
        answer: str

    inner = StateGraph(S)
    inner.add_node("draft", lambda s: {"answer": s["input"].upper()})
    inner.add_node("polish", lambda s: {"answer": s["answer"] + "!"})
    inner.add_edge(START, "draft")
    inner.add_edge("draft", "polish")
    outer = StateGraph(S)
    outer.add_node("write", inner.compile())
    outer.add_edge(START, "write")
    orch = Orchestrator(settings=settings, graphs={"nested": outer})
    result = await orch.arun("nested", "hi")
    assert result.status == "ok" and result.answer == "HI!"
    assert orch.store is not None
    nodes = {s["node"]: s for s in orch.store.run_spans(result.run_id) if s["kind"] == "node"}
    assert set(nodes) == {"write", "draft", "polish"}
    assert nodes["draft"]["parent_id"] == nodes["write"]["span_id"]
    assert nodes["polish"]["parent_id"] == nodes["write"]["span_id"]
    orch.close()


async def test_a_provider_failure_in_a_users_graph_is_resumable(
    loopback: Loopback, settings: Settings
) -> None:
    from loopback import Reply

    loopback.route("/v1/chat/completions", openai_stream(["A card has not arrived."], openai_usage(120, 8)))
    loopback.route("/v1/messages", Reply(status=500, body=b'{"error": "down"}'))
    slots = _slots(loopback)
    slots["write"] = slots["write"].model_copy(update={"max_retries": 0})
    orch = Orchestrator(settings=settings, slots=slots, graphs={"mine": TWO_SLOTS})
    failed = await orch.arun("mine", "My card never came.", run_id="r-500")
    assert failed.status == "failed" and failed.resumable, failed.error
    loopback.route(
        "/v1/messages", anthropic_stream(["Sorry, we'll send a new card."], anthropic_usage(60, 12))
    )
    resumed = await orch.arun("mine", None, run_id="r-500", resume=True)
    assert (resumed.status, resumed.answer) == ("ok", "Sorry, we'll send a new card.")
    assert resumed.ledger.cost_usd == pytest.approx(SUMMARIZE_COST + WRITE_COST)  # summarize paid once
    orch.close()


async def test_astream_yields_the_models_text_as_it_arrives(loopback: Loopback, settings: Settings) -> None:
    loopback.route(
        "/v1/chat/completions",
        openai_stream(["The answer ", "is forty", " two"], openai_usage(40, 9), cut_after=2),  # breaks
        openai_stream(["A card ", "has not ", "arrived."], openai_usage(120, 8)),
    )
    loopback.route(
        "/v1/messages", anthropic_stream(["Sorry, ", "we'll send ", "a new card."], anthropic_usage(60, 12))
    )
    orch = Orchestrator(settings=settings, slots=_slots(loopback), graphs={"mine": TWO_SLOTS})
    events = [e async for e in orch.astream("mine", "My card never came.")]
    kinds = [(e.kind, e.node) for e in events if e.kind != "token"]
    assert kinds == [
        ("start", None),
        ("restart", "summarize"),
        ("node", "summarize"),
        ("node", "reply"),
        ("end", None),
    ]
    restart = next(i for i, e in enumerate(events) if e.kind == "restart")
    before = [e.text for e in events[:restart] if e.kind == "token"]
    assert before and "".join(before) in "The answer is forty"  # what the broken stream had sent
    after = [e for e in events[restart:] if e.kind == "token"]
    summarize = [e.text for e in after if e.node == "summarize"]
    reply = [e.text for e in after if e.node == "reply"]
    assert summarize == ["A card ", "has not ", "arrived."]  # piece by piece, as the server sent them
    assert reply == ["Sorry, ", "we'll send ", "a new card."]
    assert {e.source for e in after} == {"summarize", "write"}
    node_at = {e.node: i for i, e in enumerate(events) if e.kind == "node"}
    assert all(
        i < node_at[e.node] for i, e in enumerate(events) if e.kind == "token" and e.node
    )  # before its node ends
    assert events[-1].result is not None and events[-1].result.answer == "Sorry, we'll send a new card."
    orch.close()


async def test_a_slot_model_streams_inside_a_node(loopback: Loopback, settings: Settings) -> None:
    """`astream` on a slot model yields the text in pieces, and the call is still priced and traced."""

    class State(TypedDict, total=False):
        input: str
        answer: str

    pieces: list[str] = []

    async def write(state: State, runtime: Runtime[RunContext]) -> dict[str, str]:
        model = runtime.context.model("write")
        async for chunk in model.astream([HumanMessage(state["input"])]):
            if chunk.content:
                pieces.append(str(chunk.content))
        return {"answer": "".join(pieces)}

    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    g.add_node("write", write)
    g.add_edge(START, "write")
    g.add_edge("write", END)
    loopback.route("/v1/messages", anthropic_stream(["One, ", "two, ", "three."], anthropic_usage(60, 12)))
    orch = Orchestrator(settings=settings, slots=_slots(loopback), graphs={"w": g})
    result = await orch.arun("w", "Count to three.")
    assert pieces == ["One, ", "two, ", "three."]
    assert (result.status, result.answer) == ("ok", "One, two, three.")
    assert result.ledger.cost_usd == pytest.approx(WRITE_COST)
    assert orch.store is not None
    chats = [s for s in orch.store.run_spans(result.run_id) if s["kind"] == "chat"]
    assert [c["node"] for c in chats] == ["write"]
    orch.close()


async def test_a_model_that_does_not_stream_sends_its_text_in_one_piece(settings: Settings) -> None:
    orch = Orchestrator(
        settings=settings,
        slots={
            "summarize": SlotConfig(model="python:scripted", prices=OPENAI_PRICE),
            "write": SlotConfig(model="python:scripted", prices=OPENAI_PRICE),
        },
        models={
            "summarize": ScriptedChatModel(replies=["short"]),
            "write": ScriptedChatModel(replies=["the whole reply"]),
        },
        graphs={"mine": TWO_SLOTS},
    )
    events = [e async for e in orch.astream("mine", "x")]
    assert [(e.node, e.text) for e in events if e.kind == "token"] == [
        ("summarize", "short"),
        ("reply", "the whole reply"),
    ]
    orch.close()


async def test_a_users_own_streaming_model_sends_its_text_too(settings: Settings) -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    class State(TypedDict, total=False):
        input: str
        answer: str

    own = GenericFakeChatModel(messages=iter([AIMessage("hello there world")]))

    async def talk(state: State) -> dict[str, str]:
        text = ""
        async for chunk in own.astream([HumanMessage(state["input"])]):
            text += str(chunk.content)
        return {"answer": text}

    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    g.add_node("talk", talk)
    g.add_edge(START, "talk")
    g.add_edge("talk", END)
    orch = Orchestrator(settings=settings, slots={}, graphs={"g": g})
    events = [e async for e in orch.astream("g", "hi")]
    tokens = [e for e in events if e.kind == "token"]
    assert "".join(e.text for e in tokens) == "hello there world" and len(tokens) > 1
    assert {e.node for e in tokens} == {"talk"}
    assert events[-1].result is not None and events[-1].result.answer == "hello there world"
    orch.close()


def test_a_langgraph_project_runs_as_it_is(tmp_path: Path) -> None:
    """No [tool.orchestrator]: `orch run` reads langgraph.json's graphs (files, a factory taking a config)
    and its env file, and traces every node."""
    project = tmp_path / "lgproj"
    (project / "src" / "agent").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "lgproj"\nversion = "0.1"\n')
    (project / ".env").write_text('# keys\nexport GREETING="Hello"\n')
    (project / "src" / "agent" / "graph.py").write_text(
        textwrap.dedent(
            """
            import os
            from typing import TypedDict

            from langchain_core.runnables import RunnableConfig
            from langgraph.graph import END, START, StateGraph


            class State(TypedDict, total=False):
                input: str
                words: int
                answer: str


            def count(state: State) -> dict:
                return {"words": len(state["input"].split())}


            def greet(state: State) -> dict:
                return {"answer": f"{os.environ['GREETING']}: {state['words']} words"}


            def builder() -> StateGraph:
                g = StateGraph(State)
                g.add_node("count", count)
                g.add_node("greet", greet)
                g.add_edge(START, "count")
                g.add_edge("count", "greet")
                g.add_edge("greet", END)
                return g


            graph = builder().compile()


            def make_graph(config: RunnableConfig):
                return builder().compile()
            """
        )
    )
    (project / "langgraph.json").write_text(
        json.dumps(
            {
                "dependencies": ["."],
                "graphs": {
                    "counter": "./src/agent/graph.py:graph",
                    "made": "./src/agent/graph.py:make_graph",
                },
                "env": ".env",
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "GREETING"}
    env |= {"ORCH_TRACES": str(tmp_path / "t.db"), "ORCH_CHECKPOINTS": str(tmp_path / "c.db")}
    for graph in ([], ["made"]):
        run = subprocess.run(
            [sys.executable, "-m", "orchestrator", "run", *graph, "one two three", "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=project,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout)
        assert (result["status"], result["answer"]) == ("ok", "Hello: 3 words")
    store = TraceStore(tmp_path / "t.db")
    run_id = store.list_runs(limit=1)[0]["run_id"]
    assert [s["node"] for s in store.run_spans(run_id) if s["kind"] == "node"] == ["count", "greet"]
    store.close()


async def test_a_shared_budget_holds_across_concurrent_runs(settings: Settings) -> None:
    """Runs racing for one cap: each call reserves its worst case, so together they never overspend, and a
    refused call ends its run `budget_stop` (a status, not a failure), also in a user's graph."""
    import asyncio

    from orchestrator import Budget, Limits, SharedBudget

    def orch() -> Orchestrator:
        return Orchestrator(
            settings=settings,
            slots={
                "summarize": SlotConfig(model="python:scripted", prices=OPENAI_PRICE),
                "write": SlotConfig(model="python:scripted", prices=OPENAI_PRICE),
            },
            models={
                "summarize": ScriptedChatModel(replies=["short " * 5] * 10, delay_s=0.2),
                "write": ScriptedChatModel(replies=["a reply"] * 10, delay_s=0.2),
            },
            graphs={"mine": TWO_SLOTS},
            limits=Limits(max_tokens=100),
        )

    # a call's worst case here: its prompt's bytes plus template tokens (about 100, the high bound) and 100
    # output tokens, about $0.0005; its actual cost about $0.00003. A cap of $0.0012 holds two calls in
    # flight at once, not three.
    daily = SharedBudget(usd=0.0012)
    service = orch()
    results = await asyncio.gather(
        *(service.arun("mine", f"message {i}", budget=Budget(shared=daily)) for i in range(6))
    )
    statuses = sorted(r.status for r in results)
    assert statuses == ["budget_stop"] * 4 + ["ok"] * 2, [r.stop_reason for r in results]
    stopped = next(r for r in results if r.status == "budget_stop")
    assert stopped.stop_reason is not None and "shared cost budget" in stopped.stop_reason
    spent = sum(r.ledger.cost_usd or 0.0 for r in results)
    assert daily.spent_usd == pytest.approx(spent) and 0 < spent <= 0.0012
    assert daily.spent_tokens == sum(r.ledger.tokens for r in results)
    daily.reset()
    again = await service.arun("mine", "next day", budget=Budget(shared=daily))
    assert again.status == "ok" and daily.spent_usd == pytest.approx(again.ledger.cost_usd or 0.0)
    service.close()


async def test_a_node_that_raises_fails_the_run_naming_it_and_keeps_what_finished(settings: Settings) -> None:
    class State(TypedDict, total=False):
        input: str
        first: str
        answer: str

    ran: list[str] = []
    broken = {"second": True}

    async def first(state: State, runtime: Runtime[RunContext]) -> dict[str, str]:
        ran.append("first")
        reply = await runtime.context.model("summarize").ainvoke([HumanMessage(state["input"])])
        return {"first": str(reply.content)}

    def second(state: State) -> dict[str, str]:
        ran.append("second")
        if broken["second"]:
            raise ValueError("the parser choked on <b>this</b>")
        return {"answer": state["first"].upper()}

    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    g.add_node("first", first)
    g.add_node("second", second)
    g.add_edge(START, "first")
    g.add_edge("first", "second")
    g.add_edge("second", END)
    orch = Orchestrator(
        settings=settings,
        slots={"summarize": SlotConfig(model="python:scripted", prices=OPENAI_PRICE)},
        models={"summarize": ScriptedChatModel(replies=["done"])},
        graphs={"pipeline": g},
    )
    failed = await orch.arun("pipeline", "go", run_id="r-raise")
    assert failed.status == "failed" and not failed.resumable
    assert failed.error == (
        "node 'second' of graph 'pipeline': unexpected ValueError: the parser choked on <b>this</b>"
    )
    assert orch.store is not None
    row = orch.store.get_run("r-raise")
    assert row is not None and row["status"] == "failed"
    spans = orch.store.run_spans("r-raise")
    nodes = {s["node"]: s for s in spans if s["kind"] == "node"}
    assert nodes["second"]["status"] == "error" and nodes["first"]["status"] != "error"
    paid = failed.ledger.cost_usd
    assert paid and paid > 0
    broken["second"] = False  # the bug is fixed: resume from the failed node
    resumed = await orch.arun("pipeline", None, run_id="r-raise", resume=True)
    assert (resumed.status, resumed.answer) == ("ok", "DONE")
    assert ran == ["first", "second", "second"]  # the finished node did not run again
    assert resumed.ledger.cost_usd == pytest.approx(paid)  # nor was it paid twice
    orch.close()


async def test_a_slot_model_gives_structured_output_and_batches(
    loopback: Loopback, settings: Settings
) -> None:
    from pydantic import BaseModel

    class Ticket(BaseModel):
        order_id: str
        urgent: bool

    class State(TypedDict, total=False):
        input: str
        ticket: dict[str, Any]
        answer: str

    async def extract(state: State, runtime: Runtime[RunContext]) -> dict[str, Any]:
        model = runtime.context.model("summarize").with_structured_output(Ticket)
        ticket = await model.ainvoke([HumanMessage(state["input"])])
        assert isinstance(ticket, Ticket)
        return {"ticket": ticket.model_dump()}

    async def reply(state: State, runtime: Runtime[RunContext]) -> dict[str, str]:
        replies = await runtime.context.model("write").abatch([[HumanMessage("one")], [HumanMessage("two")]])
        return {"answer": " / ".join(str(r.content) for r in replies)}

    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    g.add_node("extract", extract)
    g.add_node("reply", reply)
    g.add_edge(START, "extract")
    g.add_edge("extract", "reply")
    g.add_edge("reply", END)
    args = json.dumps({"order_id": "A7", "urgent": True})
    loopback.route(
        "/v1/chat/completions", openai_stream([], openai_usage(120, 8), tool_calls=[("c1", "Ticket", [args])])
    )
    loopback.route(
        "/v1/messages",
        anthropic_stream(["First."], anthropic_usage(60, 12)),
        anthropic_stream(["Second."], anthropic_usage(60, 12)),
    )
    orch = Orchestrator(settings=settings, slots=_slots(loopback), graphs={"g": g})
    result = await orch.arun("g", "Order A7 is late, urgent!")
    assert result.status == "ok", result.error
    assert sorted(result.answer.split(" / ")) == ["First.", "Second."]  # type: ignore[union-attr]
    sent = body_of(next(r for r in loopback.requests if r.path == "/v1/chat/completions"))
    assert [t["function"]["name"] for t in sent["tools"]] == ["Ticket"]
    by_node = {n.node: n for n in result.ledger.by_node()}
    assert by_node["extract"].cost_usd == pytest.approx(SUMMARIZE_COST)
    assert by_node["reply"].calls == 2 and by_node["reply"].cost_usd == pytest.approx(2 * WRITE_COST)
    orch.close()


async def test_a_sync_node_calls_its_slot_model_with_invoke(loopback: Loopback, settings: Settings) -> None:
    """LangGraph runs a sync node in a worker thread: `invoke` and `stream` work there, traced and priced."""

    class State(TypedDict, total=False):
        input: str
        summary: str
        answer: str

    def summarize(state: State, runtime: Runtime[RunContext]) -> dict[str, str]:
        reply = runtime.context.model("summarize").invoke([HumanMessage(state["input"])])
        return {"summary": str(reply.content)}

    def reply(state: State, runtime: Runtime[RunContext]) -> dict[str, str]:
        text = "".join(str(c.content) for c in runtime.context.model("write").stream([HumanMessage("x")]))
        return {"answer": text}

    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    g.add_node("summarize", summarize)
    g.add_node("reply", reply)
    g.add_edge(START, "summarize")
    g.add_edge("summarize", "reply")
    g.add_edge("reply", END)
    _script(loopback)
    orch = Orchestrator(settings=settings, slots=_slots(loopback), graphs={"sync": g})
    result = await orch.arun("sync", "My card never came.")
    assert (result.status, result.answer) == ("ok", "Sorry, we'll send a new card."), result.error
    by_node = {n.node: n for n in result.ledger.by_node()}
    assert by_node["summarize"].cost_usd == pytest.approx(SUMMARIZE_COST)
    assert by_node["reply"].cost_usd == pytest.approx(WRITE_COST)
    assert orch.store is not None
    chats = [s for s in orch.store.run_spans(result.run_id) if s["kind"] == "chat"]
    assert sorted(c["node"] for c in chats) == ["reply", "summarize"]
    orch.close()


async def test_a_sync_call_on_the_event_loop_is_refused_clearly(settings: Settings) -> None:
    class State(TypedDict, total=False):
        input: str
        answer: str

    async def wrong(state: State, runtime: Runtime[RunContext]) -> dict[str, str]:
        return {"answer": str(runtime.context.model("summarize").invoke([HumanMessage("x")]).content)}

    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    g.add_node("wrong", wrong)
    g.add_edge(START, "wrong")
    g.add_edge("wrong", END)
    orch = Orchestrator(
        settings=settings,
        slots={"summarize": SlotConfig(model="python:scripted", prices=OPENAI_PRICE)},
        models={"summarize": ScriptedChatModel(replies=["x"])},
        graphs={"g": g},
    )
    result = await orch.arun("g", "x")
    assert result.status == "failed" and result.error is not None
    assert "node 'wrong'" in result.error and "use `await ...ainvoke(...)`" in result.error
    orch.close()


async def test_a_slot_call_makes_one_langchain_run_unless_someone_else_listens(settings: Settings) -> None:
    """A slot model's call is traced by the orchestrator: with only the graph tracer listening it makes no
    LangChain run of its own (one chat model run per call, the model's, as a bare graph makes); a caller's
    own callback handler still sees the slot model's run, and both calls are traced and priced alike."""
    from langchain_core.callbacks import AsyncCallbackHandler
    from langchain_core.language_models import BaseChatModel

    class Seen(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.started: list[str] = []

        async def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            self.started.append(str((serialized or {}).get("name") or kwargs.get("name")))

    seen = Seen()

    class State(TypedDict, total=False):
        input: str
        plain: str
        answer: str

    async def plain(state: State, runtime: Runtime[RunContext]) -> dict[str, str]:
        reply = await runtime.context.model("summarize").ainvoke([HumanMessage(state["input"])])
        assert reply.id  # named as LangChain names a run's message
        return {"plain": str(reply.content)}

    async def heard(state: State, runtime: Runtime[RunContext]) -> dict[str, str]:
        model = runtime.context.model("summarize")
        reply = await model.ainvoke([HumanMessage(state["plain"])], config={"callbacks": [seen]})
        return {"answer": str(reply.content)}

    g: StateGraph[State, RunContext, State, State] = StateGraph(State, context_schema=RunContext)
    g.add_node("plain", plain)
    g.add_node("heard", heard)
    g.add_edge(START, "plain")
    g.add_edge("plain", "heard")
    g.add_edge("heard", END)
    orch = Orchestrator(
        settings=settings,
        slots={"summarize": SlotConfig(model="python:scripted", prices=OPENAI_PRICE)},
        models={"summarize": ScriptedChatModel(replies=["first", "second"])},
        graphs={"pipeline": g},
    )
    runs: list[str] = []
    agenerate = BaseChatModel.agenerate

    async def counted(self: BaseChatModel, *args: Any, **kwargs: Any) -> Any:
        runs.append(type(self).__name__)
        return await agenerate(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BaseChatModel, "agenerate", counted)
        result = await orch.arun("pipeline", "go", run_id="r-runs")
    assert (result.status, result.answer) == ("ok", "second")
    # the plain call: the scripted model's run only; the heard call: the slot model's run too
    assert runs == ["ScriptedChatModel", "SlotModel", "ScriptedChatModel"]
    assert seen.started == ["SlotModel"]  # the caller's handler sees the slot model's run
    assert orch.store is not None
    spans = orch.store.run_spans("r-runs")
    chats = [s for s in spans if s["kind"] == "chat"]
    nodes = {s["span_id"]: s["node"] for s in spans if s["kind"] == "node"}
    assert sorted(nodes[c["parent_id"]] for c in chats) == ["heard", "plain"]  # each under its node
    assert sorted(line["node"] for line in result.ledger.lines) == ["heard", "plain"]
    orch.close()
