"""The async-first `Orchestrator`: runs graphs with a budget, a checkpointer, tracing and a ledger.

A run is one LangGraph thread: the run id is the thread id, and each node's result is checkpointed before
the next node starts, so `resume` continues after the last completed node without paying for it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.types import Command
from opentelemetry.trace import Status, StatusCode

from orchestrator._refs import import_ref
from orchestrator.agent.graph import APPROVAL, RESUMED
from orchestrator.config import Limits, Manifest, Settings, SlotConfig
from orchestrator.cost.ledger import Budget, BudgetMeter, Ledger, LedgerEntry
from orchestrator.cost.pricing import price_table
from orchestrator.errors import (
    ConfigError,
    ManifestError,
    OrchestratorError,
    StoreBusyError,
    UnknownGraphError,
    did_you_mean,
)
from orchestrator.models.binding import bind_slot
from orchestrator.models.context import BudgetStop, RunContext, TextSink
from orchestrator.models.slot import SlotModel
from orchestrator.profiles import SlotBinding
from orchestrator.providers import create_chat_model, provenance
from orchestrator.providers.http import ProviderError
from orchestrator.run.checkpoints import Checkpoints
from orchestrator.run.events import RunEvent, RunResult, Status_
from orchestrator.run.graphs import answer_of, entry_nodes, input_state, is_compiled
from orchestrator.run.jobs import Job, Jobs, JobState, budget_fields, result_of
from orchestrator.run.lease import Lease
from orchestrator.run.project import build_catalog, load_definitions, redact_hook
from orchestrator.toolsets.catalog import Catalog
from orchestrator.toolsets.process_pool import ToolRunner, shared_runner, tool_reference
from orchestrator.toolsets.sources import Blocked, guard
from orchestrator.tracing import attrs as A
from orchestrator.tracing.callbacks import GraphTracer
from orchestrator.tracing.setup import Tracing
from orchestrator.tracing.spans import open_span
from orchestrator.tracing.store import TraceStore, TraceStoreDamaged, TraceStoreError, disk_full, run_totals
from orchestrator.workers.definitions import Worker

__all__ = ["Orchestrator", "RunEvent", "RunResult"]

Approve = bool | Iterable[str] | None
GraphRef = str | StateGraph[Any, Any, Any, Any]
_log = logging.getLogger("orchestrator.tracing")


class Orchestrator:
    """Runs agent graphs; safe to share between many concurrent runs in one process.

    Checkpoints go where `settings.checkpoints_path` points (a SQLite file or a `postgresql://` URL), unless
    `checkpointer` gives any LangGraph checkpointer (sync or async): runs then use it as given (its `setup()`
    is called once) and the ledger stays where the setting points (see `orchestrator.run.checkpoints`).

    Example:
        >>> import asyncio
        >>> from orchestrator import Orchestrator, Budget
        >>> orch = Orchestrator.from_project(".")                               # doctest: +SKIP
        >>> result = asyncio.run(orch.arun("assistant", "What is 2+2?",        # doctest: +SKIP
        ...                                budget=Budget(usd=0.01, steps=6)))
        >>> result.status, result.answer                                        # doctest: +SKIP
        ('ok', '4')
    """

    def __init__(
        self,
        *,
        manifest: Manifest | None = None,
        settings: Settings | None = None,
        slots: Mapping[str, SlotConfig | SlotBinding] | None = None,
        models: Mapping[str, BaseChatModel] | None = None,
        tools: Sequence[BaseTool] | Catalog = (),
        workers: Sequence[Worker] = (),
        graphs: Mapping[str, GraphRef | Callable[[], StateGraph[Any, Any, Any, Any]]] | None = None,
        limits: Limits | None = None,
        tracing: bool = True,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
    ) -> None:
        self.manifest = manifest or Manifest()
        self.settings = settings or Settings.resolve(self.manifest)
        self.limits = limits or self.manifest.limits
        raw_slots: dict[str, SlotConfig | SlotBinding] = dict(self.manifest.slots)
        raw_slots.update(slots or {})
        table = price_table(self.settings.prices_path)
        self._prices = table
        self._built: dict[str, Any] = {}  # graph name -> what its factory built
        self._compiled: dict[int, tuple[Any, Any]] = {}  # id(builder) -> (builder, compiled graph)
        self.slots = {
            n: s if isinstance(s, SlotBinding) else bind_slot(n, s, table) for n, s in raw_slots.items()
        }
        self._model_overrides = dict(models or {})
        # an unset deadline: the default for a run on network models, none for one run wholly in process
        in_process = all(
            b.profile.provider == "local" and not b.fallbacks and n not in self._model_overrides
            for n, b in self.slots.items()
        )
        self.limits = self.limits.for_models(all_local=in_process)
        for name in self._model_overrides:
            if name not in self.slots:
                raise ConfigError(
                    f"a model was given for slot {name!r}, which has no binding"
                    + did_you_mean(name, self.slots)
                )
        # side-effecting tools stay out of the catalog unless allow-listed (a Catalog given is used as it is)
        self.blocked_tools: list[Blocked] = []
        if not isinstance(tools, Catalog):
            tools, self.blocked_tools = guard(list(tools), self.manifest.allow_side_effects)
        self.catalog = tools if isinstance(tools, Catalog) else build_catalog(list(tools), self.manifest)
        self._tool_names(self.manifest.confirm_tools, "[tool.orchestrator].confirm_tools")
        self.workers = {w.name: w for w in workers}
        for w in self.workers.values():
            for slot in (w.slot, *w.escalation()):
                if slot not in self.slots:
                    raise ConfigError(
                        f"worker {w.name!r} uses slot {slot!r}, which is not bound; add it under "
                        "[tool.orchestrator.slots]" + did_you_mean(slot, self.slots)
                    )
        self.graphs: dict[str, Any] = dict(graphs or {})
        entries = (self.catalog.get(n) for n in self.catalog.names())
        modules = {ref[0] for e in entries if e.tool and (ref := tool_reference(e.tool))}
        self._tool_modules = sorted(modules)
        self.tool_runner = shared_runner() if self.limits.isolate_tools else ToolRunner(isolate=False)
        self._models: dict[str, BaseChatModel] = {}
        self.checkpoints = Checkpoints(self.settings.checkpoints_path, checkpointer)
        self.book = self.checkpoints.ledger()
        self.leases = self.checkpoints.leases()  # one owner per run, across processes and machines
        redact = redact_hook(self.manifest.redact)
        self._store = self._open_store() if tracing else None
        self._jobs: Jobs | None = None
        self.tracing = Tracing(
            self._store, enabled=tracing, otlp_endpoint=self.settings.otlp_endpoint, redact=redact
        )

    @classmethod
    def from_project(cls, project_dir: str | Path = ".", **overrides: Any) -> Orchestrator:
        """Build from `[tool.orchestrator]` in `project_dir/pyproject.toml`; load its definition folders."""
        manifest, tools, workers = load_definitions(Path(project_dir))
        settings = overrides.pop("settings", None) or Settings.resolve(manifest)
        return cls(
            manifest=manifest,
            settings=settings,
            tools=tools,
            workers=workers,
            graphs=dict(manifest.graphs),
            **overrides,
        )

    def _open_store(self) -> TraceStore | None:
        """The trace store; None, with a warning, when it is known to be damaged: a run's answer matters
        more than its spans, so runs go on unrecorded rather than write into a damaged file."""
        try:
            return TraceStore(self.settings.traces_path, totals=self.book.totals)
        except TraceStoreDamaged as exc:
            _log.warning("%s; runs go on without recording into it", exc)
            return None

    @property
    def store(self) -> TraceStore | None:
        """The trace store runs are recorded in (None when tracing is off, or the store is damaged)."""
        return self._store

    # --- models ----------------------------------------------------------------------------------------
    def model_for(self, slot: str) -> BaseChatModel:
        """The chat model bound to a slot (created once, shared by all runs)."""
        if slot not in self._models:
            model = self._model_overrides.get(slot) or create_chat_model(self.slots[slot], self.settings)
            preload = getattr(model, "preload", None)
            if callable(preload):
                preload()  # in-process models load now, not mid-run (see LocalChatModel.preload)
            self._models[slot] = model
        return self._models[slot]

    def slot_models(self) -> dict[str, BaseChatModel]:
        """Every slot's model, instrumented (each call budgeted, traced and priced in the current run)."""
        return {slot: SlotModel(slot=slot) for slot in self.slots}

    def _graph(self, graph: GraphRef) -> tuple[str, Any]:
        """The graph's name and its builder (a `StateGraph`) or compiled graph."""
        if isinstance(graph, StateGraph) or is_compiled(graph):
            return getattr(graph, "name", None) or "graph", graph
        name = graph or self.manifest.default_graph or ""
        if name not in self.graphs:
            raise UnknownGraphError(
                f"unknown graph {name!r}"
                + did_you_mean(name, self.graphs)
                + "; graphs are listed under [tool.orchestrator.graphs]"
            )
        if name in self._built:
            return name, self._built[name]
        ref = self.graphs[name]
        target = import_ref(ref, f"graph {name!r}") if isinstance(ref, str) else ref
        if isinstance(target, StateGraph) or is_compiled(target):
            return name, target
        if not callable(target):
            raise ManifestError(f"graph {name!r} ({ref!r}) must be a graph or a function that returns one")
        try:
            params = [
                p
                for p in inspect.signature(target).parameters.values()
                if p.default is inspect.Parameter.empty
                and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            ]
        except (TypeError, ValueError):
            params = []
        if len(params) > 1:
            raise ManifestError(
                f"graph {name!r} ({ref!r}): a graph factory takes no parameter or one (the slot models, "
                f"a mapping from slot name to chat model; or a RunnableConfig named config); it takes "
                f"{len(params)}"
            )
        wants_config = bool(params) and (
            params[0].name == "config" or "RunnableConfig" in str(params[0].annotation)
        )  # a LangGraph factory: make_graph(config)
        try:
            if wants_config:
                built = target({"configurable": {}})
            else:
                built = target(self.slot_models()) if params else target()
        except OrchestratorError:
            raise
        except Exception as exc:
            raise ManifestError(
                f"graph {name!r} ({ref!r}): its factory raised {type(exc).__name__}: {exc}"
            ) from None
        if not (isinstance(built, StateGraph) or is_compiled(built)):
            raise ManifestError(
                f"graph {name!r} ({ref!r}) must return a StateGraph or a compiled graph; "
                f"got {type(built).__name__}"
            )
        self._built[name] = built  # a factory runs once: its slot models and parts do not change
        return name, built

    def _compile(self, name: str, builder: Any) -> Any:
        """The graph compiled once (without a checkpointer: each run sets its own on a copy)."""
        if not isinstance(builder, StateGraph):
            return builder
        hit = self._compiled.get(id(builder))
        if hit is not None and hit[0] is builder:
            return hit[1]
        try:
            app = builder.compile(name=name)
        except Exception as exc:
            raise ManifestError(f"graph {name!r} does not compile: {type(exc).__name__}: {exc}") from None
        self._compiled[id(builder)] = (builder, app)
        return app

    def _check_slots(self, name: str, app: Any) -> None:
        """Every slot the graph's nodes say they use (node metadata `orch_slots`) is bound: a missing one is
        a `ConfigError` now, not a failed node after the run has started."""
        nodes = getattr(getattr(app, "builder", None), "nodes", None) or {}
        for node, spec in nodes.items():
            for slot in (getattr(spec, "metadata", None) or {}).get("orch_slots") or ():
                if slot not in self.slots:
                    raise ConfigError(
                        f"graph {name!r} (node {node!r}) uses slot {slot!r}, which is not bound; add it "
                        f'under [tool.orchestrator.slots], e.g. {slot} = {{ model = "openai:gpt-4o-mini", '
                        'role = "racehorse" }' + did_you_mean(slot, self.slots)
                    )

    # --- running ---------------------------------------------------------------------------------------
    async def arun(
        self,
        graph: GraphRef,
        input: str | Mapping[str, Any] | None,
        *,
        budget: Budget | None = None,
        run_id: str | None = None,
        resume: bool = False,
        approve: Approve = None,
        answer: Any = None,
    ) -> RunResult:
        """Run a graph to its end and return the result; a budget stop is a status, not an exception.

        A run that stops to wait for a person ends with status "waiting" and `RunResult.waiting`; resume it
        (`resume=True`, its `run_id`) with `approve` for tool calls (True: all, False: none, or the names
        of the tools approved), or `answer`, the value the graph's own `interrupt()` returns. In a new run,
        `approve` names tools whose calls need no confirmation this time.
        """
        result: RunResult | None = None
        events = self.astream(
            graph,
            input,
            budget=budget,
            run_id=run_id,
            resume=resume,
            tokens=False,
            approve=approve,
            answer=answer,
        )
        async for event in events:
            if event.result is not None:
                result = event.result
        assert result is not None
        return result

    def run_sync(
        self,
        graph: GraphRef,
        input: str | Mapping[str, Any] | None,
        *,
        budget: Budget | None = None,
        run_id: str | None = None,
        resume: bool = False,
        approve: Approve = None,
        answer: Any = None,
    ) -> RunResult:
        """`arun` for scripts (starts its own event loop, and closes its HTTP connections at the end)."""
        from orchestrator.sync import run_blocking

        return run_blocking(
            lambda: self.arun(
                graph, input, budget=budget, run_id=run_id, resume=resume, approve=approve, answer=answer
            )
        )

    async def astream(
        self,
        graph: GraphRef,
        input: str | Mapping[str, Any] | None,
        *,
        budget: Budget | None = None,
        run_id: str | None = None,
        resume: bool = False,
        tokens: bool = True,
        approve: Approve = None,
        answer: Any = None,
    ) -> AsyncIterator[RunEvent]:
        """Run a graph, yielding events (`RunEvent`): the models' text as it arrives (`tokens=False`: none),
        each node as it finishes, and a last one with the result. `approve` and `answer`: see `arun`."""
        name, builder = self._graph(graph)
        if input is not None and not isinstance(input, str | Mapping):
            raise ConfigError(
                f"graph {name!r}: the input {_short(input)} ({type(input).__name__}) is neither a text nor a "
                "mapping; give the request as a text, or the input state as a mapping of its input keys"
            )
        if not resume and (input is None or input == ""):  # an empty mapping: the input keys say
            raise ConfigError("the run needs an input text (or resume=True with a run_id)")
        app = self._compile(name, builder)
        self._check_slots(name, app)
        graph_input: Any = None if resume else input_state(app, input, name)
        if resume and not run_id:
            raise ConfigError("resume=True needs the run_id of the run to continue")
        if not resume and answer is not None:
            raise ConfigError("answer= is for resuming a waiting run (resume=True with its run_id)")
        if approve is not None and not isinstance(approve, bool):
            approve = self._tool_names(approve, "approve")
        self.tool_runner.warm(self._tool_modules)  # its child imports the tools while models load
        for slot in self.slots:
            self.model_for(slot)  # load and verify models before the run starts
        run_id = run_id or uuid.uuid4().hex[:16]
        queue: asyncio.Queue[RunEvent] = asyncio.Queue()
        task = asyncio.create_task(
            self._drive(
                name, app, graph_input, budget or Budget(), run_id, resume, queue, tokens, approve, answer
            )
        )
        ended = False
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    event = getter.result()
                    if event.kind == "end":
                        ended = True
                    yield event
                    if ended:
                        break
                    continue
                getter.cancel()
                while not queue.empty():
                    yield queue.get_nowait()
                task.result()  # re-raise what the driver raised
                break
        finally:
            if ended:
                await task  # it is closing its checkpoint connection: let it, or the close is cut off
            elif not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _drive(
        self,
        name: str,
        compiled: Any,
        graph_input: Any,
        budget: Budget,
        run_id: str,
        resume: bool,
        queue: asyncio.Queue[RunEvent],
        tokens: bool = False,
        approve: Approve = None,
        answer: Any = None,
    ) -> None:
        # one owner per run: a run running elsewhere is refused here, before anything is spent. In threads:
        # waiting on the file's write lock on the loop would stall this process's own checkpoint writes,
        # which hold that lock across awaits
        taking = asyncio.ensure_future(asyncio.to_thread(self.leases.acquire, run_id))
        try:
            lease = await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(self._give_back)  # the thread goes on: what it takes is given back
            raise
        try:
            await self._drive_owned(
                name, compiled, graph_input, budget, run_id, resume, queue, tokens, approve, answer
            )
        finally:
            await asyncio.shield(asyncio.to_thread(self.leases.release, lease))

    def _give_back(self, taking: asyncio.Future[Lease]) -> None:
        if not taking.cancelled() and taking.exception() is None:
            asyncio.get_running_loop().run_in_executor(None, self.leases.release, taking.result())

    async def _drive_owned(
        self,
        name: str,
        compiled: Any,
        graph_input: Any,
        budget: Budget,
        run_id: str,
        resume: bool,
        queue: asyncio.Queue[RunEvent],
        tokens: bool,
        approve: Approve,
        answer: Any,
    ) -> None:
        """One run, owned: where it starts, its context, the graph played under the run's span, its result."""
        async with self.checkpoints.open() as saver:
            app = copy.copy(compiled)  # the run's checkpointer on a copy
            app.checkpointer = saver
            config: RunnableConfig = {
                "configurable": {"thread_id": run_id},
                "recursion_limit": max(25, 2 * self.limits.max_steps + 6),
            }
            start = await self._start(app, config, run_id, resume, graph_input, approve, answer)
            t0 = time.perf_counter()
            meter = BudgetMeter(
                budget,
                start.prior.cost_usd or 0.0,
                start.prior.tokens,
                record=lambda e: self.book.add(run_id, e),
            )
            # approve= names tools approved in advance (a new run), or answers what a run waits for
            approved = approve if not resume and isinstance(approve, frozenset) else frozenset()
            sink = _token_sink(run_id, queue, t0) if tokens else None
            ctx = self._context(run_id, meter, sink, approved)
            if self._store is not None:
                with contextlib.suppress(TraceStoreDamaged):  # the run goes on; its end says so (_finish)
                    self.tracing.start_run(
                        run_id, name, config_hash=self.manifest.config_hash(), version=_version()
                    )
            await queue.put(RunEvent(run_id, "start"))
            try:
                end = await self._play(name, app, start.graph_input, config, ctx, queue, t0)
            except (asyncio.CancelledError, KeyboardInterrupt):
                self.book.flush()
                latest = Ledger.from_entries(run_id, start.earlier + meter.entries, start.legacy)
                self._finish(
                    run_id, "cancelled", None, latest, f"cancelled; resume with `orch run --resume {run_id}`"
                )
                raise
            state, status = end.state, end.status
            result = RunResult(
                run_id=run_id,
                status=status,
                answer=answer_of(state, self.manifest.outputs.get(name))
                if status not in ("failed", "waiting")
                else None,
                ledger=Ledger.from_entries(run_id, start.earlier + meter.entries, start.legacy),
                stop_reason=end.stopped or state.get("stop_reason"),
                error=end.error,
                results=list(state.get("results") or []) if isinstance(state.get("results"), list) else [],
                resumable=end.resumable,
                waiting=end.waiting if status == "waiting" else [],
            )
            # the run's ledger rows are committed before it returns: a resume, in this process or another,
            # reads them from the store, and a row still queued in this book would be a call paid twice
            await self.book.aflush()
            try:
                self._finish(run_id, status, result, start.prior, end.error)
            except TraceStoreError as exc:  # its end can't be recorded (a full disk): a failure to resume
                result = replace(
                    result,
                    status="failed",
                    answer=None,
                    error=f"{exc}; then resume the run (its checkpoints and ledger are kept)",
                    resumable=True,
                )
            await queue.put(RunEvent(run_id, "end", elapsed_s=time.perf_counter() - t0, result=result))

    async def _start(
        self,
        app: Any,
        config: RunnableConfig,
        run_id: str,
        resume: bool,
        graph_input: Any,
        approve: Approve,
        answer: Any,
    ) -> _Start:
        """Where the run starts: a new run's input, or for a resume, the answer to what it waits for or the
        lifted stop; and what its earlier attempts paid. A resume of no run, or a new run on an existing id,
        is a ConfigError."""
        snapshot = await app.aget_state(config)
        if resume and snapshot.interrupts:  # it waits for a person: resume with the answer
            graph_input = Command(resume=_answers(run_id, snapshot.interrupts, approve, answer))
        elif resume and not snapshot.next and (snapshot.values or {}).get("status") == "budget_stop":
            # a limit stopped it (the agent ends so, with its state): lift the stop and go on from where
            # the graph starts (an update, not an input: the graph's input schema may not take these keys)
            graph_input = Command(
                update={"status": RESUMED, "stop_reason": RESUMED, "answer": None}, goto=entry_nodes(app)
            )
        legacy = (snapshot.values or {}).get("ledger")  # totals a checkpoint of version 0.1 holds
        # what earlier attempts paid (a new run has none); never block the loop on the store
        earlier = await asyncio.to_thread(self.book.entries, run_id) if snapshot.values else []
        if resume and not snapshot.values:
            raise ConfigError(
                f"no checkpoint for run {run_id!r} in {self.checkpoints.describe()}; "
                "check the id with `orch traces list`"
            )
        if not resume and snapshot.values:
            raise ConfigError(f"run {run_id!r} already exists; resume it with `orch run --resume {run_id}`")
        return _Start(graph_input, earlier, legacy, Ledger.from_entries(run_id, earlier, legacy))

    def _context(
        self, run_id: str, meter: BudgetMeter, sink: TextSink | None, approved: frozenset[str]
    ) -> RunContext:
        """What the graph's nodes see of this run: its models, tools, workers, limits, meter and tracer."""
        return RunContext(
            run_id=run_id,
            slots=self.slots,
            models={s: self.model_for(s) for s in self.slots},
            catalog=self.catalog,
            workers=self.workers,
            limits=self.limits,
            tracer=self.tracing.tracer,
            meter=meter,
            capture_content=self.settings.capture_content,
            tool_runner=self.tool_runner,
            text_sink=sink,
            loop=asyncio.get_running_loop(),
            confirm=frozenset(self.manifest.confirm_tools),
            approved=approved,
        )

    async def _play(
        self,
        name: str,
        app: Any,
        graph_input: Any,
        config: RunnableConfig,
        ctx: RunContext,
        queue: asyncio.Queue[RunEvent],
        t0: float,
    ) -> _End:
        """The graph streamed under the run's span, a node event per step; how it ended, never raised
        (a failure is a failed run, a BudgetStop from a user's node a stop), read back from its checkpoint."""
        run_id, meter = ctx.run_id, ctx.meter
        attributes: dict[str, Any] = {
            A.OPERATION: "invoke_workflow",
            A.WORKFLOW_NAME: name,
            A.RUN_ID: run_id,
            A.CONVERSATION_ID: run_id,
            A.VERSION: _version(),
            A.CONFIG_HASH: self.manifest.config_hash(),
            **provenance(self.slots, self.settings),
        }
        end = _End()
        with open_span(self.tracing.tracer, f"invoke_workflow {name}", "run", attributes) as span:
            watcher = GraphTracer(
                run_id=run_id,
                tracer=self.tracing.tracer,
                root=span,
                meter=meter,
                prices=self._prices,
                capture_content=self.settings.capture_content,
                text_sink=ctx.text_sink,
            )
            seen = 0  # ledger entries already reported with a node event
            final: Any = None
            try:
                stream = app.astream(
                    graph_input,
                    {**config, "callbacks": [watcher]},
                    context=ctx,
                    stream_mode=["updates", "values"],
                    durability="sync",
                )
                async for mode, chunk in stream:
                    if mode == "values":
                        final = chunk  # the state after each step: the last one is the run's
                        continue
                    for node, update in chunk.items():
                        if node.startswith("__"):
                            continue
                        fresh = [e for e in meter.entries[seen:] if e["node"] == node]
                        seen = len(meter.entries)
                        await queue.put(
                            RunEvent(
                                run_id,
                                "node",
                                node,
                                update if isinstance(update, Mapping) else {},
                                time.perf_counter() - t0,
                                node_s=watcher.node_seconds.get(node),
                                calls=sum(e["kind"] == "model" for e in fresh),
                                cost_usd=_known_cost(fresh),
                                tokens=sum(e["input_tokens"] + e["output_tokens"] for e in fresh),
                            )
                        )
            except BudgetStop as stop:  # from a user's node: a status, as in the agent
                end.status, end.stopped = "budget_stop", stop.reason
                span.set_attribute(A.STOP_REASON, stop.reason)
            except Exception as exc:  # recorded as a failed run, never left "running"
                end.status = "failed"
                end.error, end.resumable = self._failure(name, exc, watcher.failed_node)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, end.error[:500]))
            finally:
                watcher.close()
            latest = await app.aget_state(config)
            if not isinstance(final, Mapping) or end.status != "ok":  # read what was checkpointed
                final = latest.values
            end.state = final if isinstance(final, Mapping) else {}
            end.waiting = [{"id": i.id, "value": i.value} for i in latest.interrupts]
            if end.status == "ok" and end.waiting:
                end.status = "waiting"
            if end.status == "ok" and end.state.get("status") in ("budget_stop", "failed"):
                end.status = end.state["status"]
            if end.status == "budget_stop":  # resumed with more budget or time, it goes on from here
                end.resumable = True
            span.set_attribute(A.STATUS, end.status)
        return end

    def _failure(self, name: str, exc: Exception, node: str | None) -> tuple[str, bool]:
        """A failed run's one-line error, and whether a resume can help (a provider's failure or a full
        disk can pass; a bad output would repeat)."""
        kind = "" if isinstance(exc, OrchestratorError) else "unexpected "
        where = f"node {node!r} of " if node else ""
        if not where and _disk_full(exc):  # the checkpointer could not save a step
            return (
                f"graph {name!r}: the checkpoint store ({self.checkpoints.describe()}) is "
                f"out of disk space ({exc}); free space on it, then resume the run"
            ), True
        return f"{where}graph {name!r}: {kind}{type(exc).__name__}: {exc}", _provider_failed(exc)

    def _finish(
        self, run_id: str, status: str, result: RunResult | None, prior: Ledger, error: str | None
    ) -> None:
        self.tracing.flush()
        store = self._store
        if store is None:
            return
        ledger = result.ledger if result else prior
        answer = result.answer if result and self.settings.capture_content else None
        full = store.disk_was_full()  # its records are in (from its reserve), but it has no room left
        if status != "ok":
            full = None  # a run that did not finish ends as it is
        if full is not None:
            status, answer, error = "failed", None, f"{full}; then resume the run"
        answer, error = self.tracing.redact_run(answer, error)  # the row, like the spans, is redacted first
        try:
            store.end_run(run_id, status=status, **run_totals(ledger), answer=answer, error=error)
        except TraceStoreDamaged as exc:  # found damaged in this run (or an earlier one of this process)
            _log.warning(
                "%s; run %s is not recorded in it (its result and checkpoints are kept)", exc, run_id
            )
            return
        if full is not None:
            raise full

    async def run_exists(self, run_id: str) -> bool:
        """Whether the run has a checkpoint: it was started, by this process or by another."""
        async with self.checkpoints.open() as saver:
            config: RunnableConfig = {"configurable": {"thread_id": run_id, "checkpoint_ns": ""}}
            return await saver.aget_tuple(config) is not None

    # --- the fleet: runs as durable jobs on a queue, run by `orch worker` processes (run/jobs.py) ---------
    @property
    def jobs(self) -> Jobs:
        """The fleet's queue, in the checkpoints' PostgreSQL database (a `ConfigError` if they are not)."""
        if self._jobs is None:
            self._jobs = Jobs(self.settings.checkpoints_path)
        return self._jobs

    async def submit(
        self,
        graph: str,
        input: str | Mapping[str, Any] | None,
        *,
        budget: Budget | None = None,
        run_id: str | None = None,
        resume: bool = False,
        approve: bool | Iterable[str] | None = None,
        answer: Any = None,
        capture_content: bool = False,
    ) -> str:
        """Put a run on the fleet's queue (`arun`'s arguments); return its run id at once. A worker runs it.

        `wait` for its result, or poll `job`. To resume a run that waits for a person, submit it again with
        `resume=True`, its `run_id` and the `approve` or `answer`. `capture_content`: the worker records the
        run's prompts, arguments and answers on its spans whatever its own setting (an evaluation reads them).
        """
        if not isinstance(graph, str):
            raise ConfigError(
                f"a run submitted to the fleet names its graph (got {type(graph).__name__}): the workers "
                "build it from the project; add it under [tool.orchestrator.graphs]"
            )
        self._graph(graph)  # an unknown name fails here, not in a worker
        if input is not None and not isinstance(input, str | Mapping):
            raise ConfigError(f"graph {graph!r}: the input {_short(input)} is neither a text nor a mapping")
        if not resume and (input is None or input == ""):
            raise ConfigError("the run needs an input text (or resume=True with a run_id)")
        if resume and not run_id:
            raise ConfigError("resume=True needs the run_id of the run to continue")
        if approve is not None and not isinstance(approve, bool):
            approve = sorted(self._tool_names(approve, "approve"))
        job = Job(
            run_id=run_id or uuid.uuid4().hex[:16],
            graph=graph,
            input=dict(input) if isinstance(input, Mapping) else input,
            resume=resume,
            approve=approve,
            answer=answer,
            budget=budget_fields(budget, self.jobs.url),
            capture_content=capture_content,
        )
        await self.jobs.submit(job)
        return job.run_id

    async def job(self, run_id: str) -> JobState | None:
        """Where a submitted run stands (queued, running, or how it ended); None if it was never submitted."""
        return await self.jobs.state(run_id)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunResult:
        """Wait for a submitted run's latest job to end and return its result (`TimeoutError` after `timeout`
        seconds). A job that failed in its worker (not the run: the job) is a `failed`, resumable result."""
        state = await self.jobs.wait(run_id, timeout)
        ledger = await asyncio.to_thread(self.book.totals, run_id)
        return result_of(state, ledger or Ledger.from_entries(run_id, []))

    def _tool_names(self, names: Iterable[str], what: str) -> frozenset[str]:
        """Tool names given for `approve` or `confirm_tools`, each checked against the catalog."""
        if isinstance(names, str):
            names = [names]
        out = frozenset(names)
        for name in sorted(out):
            if name == "*" or name in self.catalog:
                continue
            blocked = next((b for b in self.blocked_tools if b.name == name), None)
            if blocked is not None:
                raise ConfigError(
                    f"{what}: tool {name!r} is side-effecting and not allowed; add it to "
                    "[tool.orchestrator].allow_side_effects first"
                )
            raise ConfigError(
                f"{what}: there is no tool {name!r} in the catalog" + did_you_mean(name, self.catalog.names())
            )
        return out

    def close(self) -> None:
        """Flush traces, release the stores (tool processes are shared, and stop at exit)."""
        self.tracing.close()
        self.leases.close()
        self.book.close()
        self.checkpoints.close()
        if self._jobs is not None:
            self._jobs.close()
        if self._store is not None:
            self._store.close()


@dataclass
class _Start:
    """Where a run starts: the graph's input (or the Command that resumes it), and what it paid before."""

    graph_input: Any
    earlier: list[LedgerEntry]
    legacy: Any  # the totals a checkpoint of version 0.1 holds
    prior: Ledger


@dataclass
class _End:
    """How the graph's stream ended: its status and final state, and what a person or a resume can do."""

    status: Status_ = "ok"
    state: Mapping[str, Any] = field(default_factory=dict)
    stopped: str | None = None
    error: str | None = None
    resumable: bool = False
    waiting: list[dict[str, Any]] = field(default_factory=list)


def _token_sink(run_id: str, queue: asyncio.Queue[RunEvent], t0: float) -> TextSink:
    """Text as it arrives, as token (or restart) events on the run's queue."""

    def sink(node: str, source: str, text: str, restart: bool = False) -> None:
        kind: Literal["token", "restart"] = "restart" if restart else "token"
        elapsed = time.perf_counter() - t0
        queue.put_nowait(RunEvent(run_id, kind, node, elapsed_s=elapsed, text=text, source=source))

    return sink


def _answers(run_id: str, interrupts: Sequence[Any], approve: Approve, answer: Any) -> dict[str, Any]:
    """The resume value for each interrupt a waiting run stopped at: `answer`, or `approve` for tool calls."""
    out: dict[str, Any] = {}
    for pending in interrupts:
        value = pending.value
        asks_tools = isinstance(value, Mapping) and value.get("type") == APPROVAL
        if answer is not None:
            if asks_tools and not _approval_answer(answer):
                raise ConfigError(
                    f"run {run_id!r} waits for tool calls to be approved: answer with True, False, a "
                    f"{{tool: bool}} map or a list of bools (got {type(answer).__name__}), or use approve="
                )
            out[pending.id] = answer
        elif asks_tools and approve is not None:
            out[pending.id] = (
                approve
                if isinstance(approve, bool)
                else {c["tool"]: c["tool"] in approve or "*" in approve for c in value["calls"]}
            )
        else:
            tools = ", ".join(sorted({str(c.get("tool")) for c in value["calls"]})) if asks_tools else ""
            raise ConfigError(
                f"run {run_id!r} waits for approval of {tools}; resume it with approve= (orch run --resume "
                f"{run_id} --approve TOOL, or --deny)"
                if asks_tools
                else f"run {run_id!r} waits for an answer ({_short(value)}); resume it with answer="
            )
    return out


def _approval_answer(answer: Any) -> bool:
    if isinstance(answer, bool):
        return True
    if isinstance(answer, Mapping):
        return all(isinstance(k, str) and isinstance(v, bool) for k, v in answer.items())
    return isinstance(answer, list | tuple) and all(isinstance(v, bool) for v in answer)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 200 else text[:200] + "..."


def _provider_failed(exc: BaseException) -> bool:
    """A provider call failed (perhaps wrapped as the model error of a slot), or a store stayed busy:
    resuming may get past it."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ProviderError | StoreBusyError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _disk_full(exc: BaseException) -> bool:
    """A store's disk is full (SQLite's "database or disk is full", or ENOSPC), perhaps as a cause."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if disk_full(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _known_cost(entries: Sequence[LedgerEntry]) -> float | None:
    costs = [e["cost_usd"] for e in entries if e["kind"] == "model"]
    if costs and all(c is None for c in costs):
        return None
    return sum(c or 0.0 for c in costs)


def _version() -> str:
    from orchestrator._version import __version__

    return __version__


def installed_version(dist: str) -> str | None:
    """A distribution's installed version, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
