"""`orch worker`: a process that takes runs from the fleet's queue and runs them, until it is drained.

Data flow of one job (see `orchestrator/run/jobs.py` for the submitting side):

    queue `orch-runs` (DBOS, in PostgreSQL) -> workflow `orch_run` -> step `run` ->
        Orchestrator.arun(run id, resume if it has a checkpoint) -> the result as a dict (the step's output)

The run is one DBOS step, and its progress is LangGraph's: each finished node is checkpointed before the next
starts. When a worker dies, DBOS re-enqueues its unfinished workflows (`recovery` below) and another worker
runs the step again, which resumes the run from its last checkpoint: finished nodes are not run, nor paid,
twice; only the call in flight at the kill is made again.

Who recovers a dead worker's runs, without DBOS Conductor (a hosted service a fleet may not reach):
- the same worker restarted with the same `--id` (DBOS recovers an executor's own pending workflows at
  launch);
- any live worker, which sees in `orch_workers` (one row per worker id: host, pid, heartbeat) a worker whose
  process is gone (same host) or whose heartbeat is older than `DEAD_AFTER_S` (another host), claims it in
  one update, and asks DBOS to recover that executor's workflows;
- a person: `orch fleet recover ID`.

Draining (SIGTERM, or SIGINT): the worker takes no new job, lets its runs finish for up to `--drain-timeout`
seconds, then exits; what is still running is handed back (its row is marked so, and the next worker to look
recovers it at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.cost.ledger import Budget
from orchestrator.errors import ConfigError, RunOwnedError
from orchestrator.fleet.budget import release_owner
from orchestrator.locations import unreachable
from orchestrator.procs import HOST, alive, process_started
from orchestrator.providers.fleet_limits import use_fleet_limits
from orchestrator.run.jobs import QUEUE, WORKFLOW, Job, system_database_url
from orchestrator.run.lease import HEARTBEAT_S, TTL_S

if TYPE_CHECKING:
    import psycopg

    from orchestrator.run.orchestrator import Orchestrator

__all__ = ["APP_VERSION", "DEAD_AFTER_S", "WorkerOptions", "recover", "serve", "workers"]

# DBOS recovers a workflow only on executors of the same application version. Our runs resume from LangGraph's
# checkpoints, not by replaying DBOS steps, so any worker of any release can resume any run: the version names
# the job format, and changes only when a job's input or output does.
APP_VERSION = "orch-job-1"
DEAD_AFTER_S = TTL_S + 2 * HEARTBEAT_S  # another host's worker silent this long has died (its leases expired)
_log = logging.getLogger("orchestrator.fleet")

_CREATE = (
    "create table if not exists orch_workers (executor_id text primary key, host text not null, "
    "pid integer not null, pid_started bigint, heartbeat double precision not null, state text not null, "
    "started double precision not null)"
)
_LOCK = 0x6F72_6377  # advisory lock "orcw": one worker at a time claims an id or a dead worker


@dataclass(frozen=True)
class WorkerOptions:
    executor_id: str
    concurrency: int = 4  # runs at once in this worker
    drain_timeout_s: float = 300.0
    poll_s: float = 0.5  # how often the queue is read for new jobs


@dataclass(frozen=True)
class Member:
    executor_id: str
    host: str
    pid: int
    pid_started: int | None
    heartbeat: float
    state: str

    def dead(self, now: float) -> bool:
        if self.state == "handed back":
            return True
        if self.host == HOST:
            return not alive(self.pid, self.pid_started)
        return now - self.heartbeat > DEAD_AFTER_S


# --- the job ------------------------------------------------------------------------------------------
_orch: Orchestrator | None = None
_executor_id = ""  # this worker's id: the owner of its reservations on fleet budgets


def _orchestrator() -> Orchestrator:
    if _orch is None:
        raise RuntimeError("this process serves no fleet: start it with `orch worker`")
    return _orch


def _budget(fields: dict[str, Any]) -> Budget:
    limits = {k: v for k, v in fields.items() if k in ("usd", "tokens", "seconds", "steps")}
    shared = None
    if fields.get("shared"):
        from orchestrator.fleet.budget import open_budget

        url = system_database_url(_orchestrator().settings.checkpoints_path)
        shared = open_budget(url, str(fields["shared"]), _executor_id)
    return Budget(**limits, shared=shared)


_capturing: Orchestrator | None = (
    None  # the project's Orchestrator recording content (built when first asked)
)


def _orchestrator_for(j: Job) -> Orchestrator:
    """The worker's Orchestrator; for a job that asks for content on its spans, one built so (once)."""
    global _capturing
    orch = _orchestrator()
    if not j.capture_content or orch.settings.capture_content:
        return orch
    if _capturing is None:
        from dataclasses import replace

        if orch.manifest.root is None:
            raise ConfigError("a job asks for content on its spans; this worker was not built from a project")
        _capturing = type(orch).from_project(
            orch.manifest.root, settings=replace(orch.settings, capture_content=True)
        )
    return _capturing


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) one job's run to its end; the result as a dict."""
    j = Job.from_dict(job)
    orch = _orchestrator_for(j)
    # held for the job: the check below and the run share this process's connection pool (PostgreSQL)
    async with orch.checkpoints.open():
        # a job run again after its worker died resumes from its checkpoint; a first job never started one
        resume = j.resume or await orch.run_exists(j.run_id)
        approve: Any = j.approve
        give_up = time.monotonic() + DEAD_AFTER_S
        while True:
            try:
                result = await orch.arun(
                    j.graph,
                    None if resume else j.input,
                    run_id=j.run_id,
                    resume=resume,
                    approve=approve,
                    answer=j.answer,
                    budget=_budget(j.budget),
                )
                return result.to_dict()
            except RunOwnedError:
                # its former worker (on another host) died so recently that its lease has not expired yet
                if time.monotonic() > give_up:
                    raise
                await asyncio.sleep(HEARTBEAT_S)


def _register() -> None:
    """The workflow and its one step, registered with DBOS (once per process, before DBOS launches)."""
    from dbos import DBOS

    @DBOS.step(name="run")
    async def run_step(job: dict[str, Any]) -> dict[str, Any]:
        return await run_job(job)

    @DBOS.workflow(name=WORKFLOW)
    async def orch_run(job: dict[str, Any]) -> dict[str, Any]:
        return await run_step(job)


# --- membership: who is in the fleet, and who died --------------------------------------------------------
class Members:
    """The `orch_workers` table: one row per worker id, its process and heartbeat."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        try:
            self._conn: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise unreachable(url, exc) from None
        self._lock = threading.Lock()
        with self._lock, self._conn.transaction():
            self._conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK,))
            self._conn.execute(_CREATE)

    def join(self, executor_id: str) -> None:
        """Take the worker id: refused while another live process holds it."""
        now = time.time()
        me = (executor_id, HOST, os.getpid(), process_started(os.getpid()), now, "running", now)
        with self._lock, self._conn.transaction():
            self._conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK,))
            row = self._conn.execute(
                "select executor_id, host, pid, pid_started, heartbeat, state from orch_workers "
                "where executor_id = %s",
                (executor_id,),
            ).fetchone()
            if row is not None:
                other = Member(*row)
                if other.state in ("running", "draining") and not other.dead(now):
                    raise ConfigError(
                        f"worker id {executor_id!r} is in use by process {other.pid} on {other.host}; give "
                        "each worker its own --id (a restarted worker keeps its id, so it recovers its runs)"
                    )
            self._conn.execute(
                "insert into orch_workers values (%s, %s, %s, %s, %s, %s, %s) on conflict (executor_id) do "
                "update set host = excluded.host, pid = excluded.pid, pid_started = excluded.pid_started, "
                "heartbeat = excluded.heartbeat, state = excluded.state, started = excluded.started",
                me,
            )

    def beat(self, executor_id: str, state: str) -> None:
        with self._lock:
            self._conn.execute(
                "update orch_workers set heartbeat = %s, state = %s where executor_id = %s and pid = %s",
                (time.time(), state, executor_id, os.getpid()),
            )

    def leave(self, executor_id: str, state: str) -> None:
        """'stopped' (nothing left) or 'handed back' (runs left: the next worker to look recovers them)."""
        self.beat(executor_id, state)

    def all(self) -> list[Member]:
        with self._lock:
            rows = self._conn.execute(
                "select executor_id, host, pid, pid_started, heartbeat, state from orch_workers "
                "order by executor_id"
            ).fetchall()
        return [Member(*r) for r in rows]

    def claim_dead(self, me: str) -> list[Member]:
        """Claim the workers that died or handed their runs back (each claimed by one worker only)."""
        now, claimed = time.time(), []
        for m in self.all():
            if (
                m.executor_id == me
                or m.state not in ("running", "draining", "handed back")
                or not m.dead(now)
            ):
                continue
            with self._lock:
                cur = self._conn.execute(
                    "update orch_workers set state = 'recovered' where executor_id = %s and state = %s "
                    "and heartbeat = %s",
                    (m.executor_id, m.state, m.heartbeat),
                )
            if cur.rowcount == 1:
                claimed.append(m)
        return claimed

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def workers(url: str) -> list[Member]:
    """The fleet's workers, as their rows say."""
    m = Members(system_database_url(url))
    try:
        return m.all()
    finally:
        m.close()


def recover(executor_ids: list[str], on_recover: Callable[[str], None] | None = None) -> int:
    """Hand a dead worker's unfinished runs back to the queue (in a launched worker); how many."""
    from dbos import DBOS

    handles = DBOS._recover_pending_workflows(executor_ids)
    for executor_id in executor_ids:
        if on_recover is not None:
            on_recover(executor_id)
    return len(handles)


# --- serving ------------------------------------------------------------------------------------------
def serve(orch: Orchestrator, options: WorkerOptions, ready: Callable[[], None] | None = None) -> int:
    """Take and run jobs until SIGTERM or SIGINT, then drain; returns how many runs were handed back."""
    global _orch, _executor_id, _capturing
    try:
        from dbos import DBOS
    except ImportError:
        raise ConfigError("`orch worker` needs DBOS: pip install 'racehorse-orchestrator[fleet]'") from None
    url = system_database_url(orch.settings.checkpoints_path)
    members = Members(url)
    members.join(options.executor_id)
    # a worker restarted under its id: what its last life held on fleet budgets is let go (its runs, which
    # DBOS recovers at launch, reserve again as they go)
    release_owner(url, options.executor_id)
    _orch, _executor_id = orch, options.executor_id
    _register()
    # every model's max_concurrency and Retry-After hold across the fleet (providers/fleet_limits.py)
    use_fleet_limits(url)
    DBOS(
        config={
            "name": "orchestrator",
            "system_database_url": url,
            "executor_id": options.executor_id,
            "application_version": APP_VERSION,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=options.concurrency,
        polling_interval_sec=options.poll_s,
        on_conflict="always_update",
    )
    # what start-up made (modules, the model stack, DBOS) leaves the collector's generations: a full
    # collection no longer walks it between runs (bench/stream_cpu.py: up to 0.47 ms a call -> 0.04-0.08)
    gc.freeze()
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    state = "running"
    try:
        if ready is not None:
            ready()
        while not stop.wait(HEARTBEAT_S / 5):
            members.beat(options.executor_id, state)
            for dead in members.claim_dead(options.executor_id):
                n = recover([dead.executor_id])
                released = release_owner(url, dead.executor_id)  # they counted as spent until now
                how = "handed back its runs" if dead.state == "handed back" else "died"
                _log.warning("worker %s %s; %d of its runs went back on the queue", dead.executor_id, how, n)
                if released:
                    _log.warning(
                        "worker %s: %d reservation(s) on fleet budgets released", dead.executor_id, released
                    )
        state = "draining"
        members.beat(options.executor_id, state)
        _log.warning(
            "draining: no new runs; waiting up to %.0f s for the running ones", options.drain_timeout_s
        )
        left = _drain(url, options.executor_id, options.drain_timeout_s)
        members.leave(options.executor_id, "handed back" if left else "stopped")
        return left
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        with contextlib.suppress(Exception):
            members.close()
        use_fleet_limits(None)
        if _capturing is not None:
            _capturing.close()
        _orch = _capturing = None


def _drain(url: str, executor_id: str, timeout_s: float) -> int:
    """Stop taking jobs, wait for the running ones up to `timeout_s`; how many were left unfinished."""
    from dbos import DBOS, DBOSClient

    DBOS.destroy(workflow_completion_timeout_sec=max(0, round(timeout_s)))
    client = DBOSClient(system_database_url=url, application_name="orchestrator")
    try:
        left = client.list_workflows(
            status="PENDING", executor_id=executor_id, name=WORKFLOW, load_input=False, load_output=False
        )
        return len(left)
    finally:
        client.destroy()


def hand_back(url: str, executor_id: str) -> bool:
    """Mark a dead worker's runs for recovery (a person's `orch jobs --recover ID`): the next live worker to
    look hands them back to the queue. False if there is no such worker; a `ConfigError` if it still runs."""
    m = Members(system_database_url(url))
    try:
        found = next((w for w in m.all() if w.executor_id == executor_id), None)
        if found is None:
            return False
        if found.state in ("running", "draining") and not found.dead(time.time()):
            raise ConfigError(
                f"worker {executor_id!r} still runs (process {found.pid} on {found.host}, heartbeat "
                f"{time.time() - found.heartbeat:.0f} s ago): stop it with SIGTERM, which drains it, instead"
            )
        with m._lock:
            m._conn.execute(
                "update orch_workers set state = 'handed back' "
                "where executor_id = %s and state <> 'recovered'",
                (executor_id,),
            )
        return True
    finally:
        m.close()
