"""Runs as durable jobs: submitted to a DBOS queue in the fleet's database, run by `orch worker` processes.

A job is one attempt at a run: the first (`<run id>`) starts it; each later one (`<run id>/2`, `/3`, ...)
resumes it, for instance after a person approved what it waits for. A job is a DBOS workflow on the
`orch-runs` queue, kept in the same database as the run's checkpoints (the `dbos` schema beside LangGraph's
tables); its input is the `Job` below as plain JSON-ready values, its output the run's result as a dict.

This module is the submitting side: a service (`Orchestrator.submit`, `wait`, `job`) or `orch submit` needs
only the database, never the graph's code. The running side is `orchestrator/fleet/worker.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.cost.ledger import Budget, Ledger
from orchestrator.errors import ConfigError
from orchestrator.locations import redact, unreachable
from orchestrator.run.events import RunResult

if TYPE_CHECKING:
    from dbos import DBOSClient

__all__ = ["QUEUE", "WORKFLOW", "Job", "JobState", "Jobs", "system_database_url"]

QUEUE = "orch-runs"  # the queue every worker takes runs from
WORKFLOW = "orch_run"  # the workflow that runs one job (registered by orchestrator/fleet/worker.py)
JOB_ID_SEP = "/"  # `<run id>/<n>`: the n-th job of a run (the first is the bare run id)
_FLEET_EXTRA = "pip install 'racehorse-orchestrator[fleet]'"

JobStatus = Literal["queued", "running", "ok", "budget_stop", "failed", "cancelled", "waiting", "error"]


@dataclass(frozen=True)
class Job:
    """What a worker needs to run (or resume) a run: all plain values, stored as the workflow's input."""

    run_id: str
    graph: str
    input: str | dict[str, Any] | None
    resume: bool = False
    approve: bool | list[str] | None = None
    answer: Any = None
    budget: dict[str, Any] = field(default_factory=dict)  # Budget's limits; "shared": a fleet budget's name
    capture_content: bool = False  # record prompts, arguments and answers on the run's spans (an evaluation)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})  # a newer submitter's extra keys: ignored


@dataclass(frozen=True)
class JobState:
    """Where a run stands on the queue: its latest job's id and status, and the result once it ended."""

    run_id: str
    job_id: str
    status: JobStatus
    executor: str | None  # the worker that runs (or ran) it
    queued_at: float | None  # unix seconds
    result: dict[str, Any] | None = None  # the run's `RunResult.to_dict()` once the job ended
    error: str | None = None  # the job itself failed (not the run): the worker's error


def system_database_url(checkpoints: str | Any) -> str:
    """The DBOS system database of a fleet: the checkpoints' PostgreSQL database (a `dbos` schema in it)."""
    text = str(checkpoints)
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql://" + text.split("://", 1)[1]
    raise ConfigError(
        f"runs are submitted to a fleet's queue, which lives in the checkpoints' PostgreSQL database; the "
        f"checkpoints are {text!r}: set ORCH_CHECKPOINTS (or `checkpoints` in the manifest) to a "
        "postgresql:// URL that the service and every `orch worker` share"
    )


def budget_fields(budget: Budget | None, fleet_url: str) -> dict[str, Any]:
    """A budget as plain values for a job; a shared budget goes by name (a fleet budget in the database)."""
    if budget is None:
        return {}
    out = {
        k: getattr(budget, k) for k in ("usd", "tokens", "seconds", "steps") if getattr(budget, k) is not None
    }
    if budget.shared is not None:
        from orchestrator.cost.pg_budget import PostgresBudget

        name = budget.shared.name if isinstance(budget.shared, PostgresBudget) else None
        if isinstance(budget.shared, PostgresBudget) and system_database_url(budget.shared.url) != fleet_url:
            raise ConfigError(
                f"budget {name!r} is kept in {redact(budget.shared.url)!r}, not in the fleet's database "
                f"{redact(fleet_url)!r}, where the workers look for it: open it on the fleet's URL"
            )
        if not name:
            raise ConfigError(
                f"the shared budget {budget.shared.name!r} lives in this process's memory, and a fleet's "
                "workers can't draw from it: use a budget kept in the fleet's database (docs/deploy.md, "
                "'One budget across the fleet')"
            )
        out["shared"] = name
    return out


def job_id(run_id: str, n: int) -> str:
    return run_id if n <= 1 else f"{run_id}{JOB_ID_SEP}{n}"


def _run_of(workflow_id: str) -> tuple[str, int]:
    run_id, sep, n = workflow_id.rpartition(JOB_ID_SEP)
    if sep and n.isdigit():
        return run_id, int(n)
    return workflow_id, 1


_STATUS: dict[str, JobStatus] = {
    "ENQUEUED": "queued",
    "DELAYED": "queued",
    "PENDING": "running",
    "ERROR": "error",
    "CANCELLED": "cancelled",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED": "error",
}


class Jobs:
    """The submitting side of a fleet: put runs on the queue, see where they stand, wait for their end."""

    def __init__(self, checkpoints: str | Any) -> None:
        self.url = system_database_url(checkpoints)
        self._client: DBOSClient | None = None

    def describe(self) -> str:
        return redact(self.url)

    def client(self) -> DBOSClient:
        if self._client is None:
            try:
                from dbos import DBOSClient
            except ImportError:
                raise ConfigError(f"submitting runs to a fleet needs DBOS: {_FLEET_EXTRA}") from None
            quiet = logging.getLogger("dbos")  # it logs the error we raise, with its traceback
            level, quiet.level = quiet.level, logging.CRITICAL
            try:
                # errors raised, not retried until the server is back: a submit must not hang
                client = DBOSClient(
                    system_database_url=self.url,
                    application_name="orchestrator",
                    retry_connection_errors=False,
                )
                # the client never creates DBOS's tables; a service may submit before any worker started
                client._sys_db.run_migrations()
            except Exception as exc:  # sqlalchemy's and psycopg's errors alike: the server can't be used
                raise unreachable(self.url, getattr(exc, "orig", None) or exc) from None
            finally:
                quiet.setLevel(level)
            self._client = client
        return self._client

    async def submit(self, job: Job) -> str:
        """Queue a job; its id is the run id for the first job of a run (idempotent: the same id twice is one
        job). Returns the job's id."""
        jobs = await self.history(job.run_id)
        n = 1 if not jobs else _run_of(jobs[-1].job_id)[1] + 1
        if job.resume and not jobs:
            raise ConfigError(
                f"run {job.run_id!r} was never submitted to the fleet in {self.describe()}; "
                "check the id with `orch jobs`"
            )
        if not job.resume and jobs:
            raise ConfigError(
                f"run {job.run_id!r} was already submitted; resume it (`orch submit --resume {job.run_id}`)"
            )
        if jobs and jobs[-1].status in ("queued", "running"):
            raise ConfigError(
                f"run {job.run_id!r} is {jobs[-1].status} ({jobs[-1].job_id}); wait for it to end "
                f"(`orch jobs --wait {job.run_id}`) before resuming it"
            )
        if job.resume and not job.budget:  # a resume keeps the run's budget (a fleet budget by name)
            job = replace(job, budget=(await self.job_input(jobs[-1].job_id) or {}).get("budget") or {})
        from dbos import EnqueueOptions

        options: EnqueueOptions = {
            "queue_name": QUEUE,
            "workflow_name": WORKFLOW,
            "workflow_id": job_id(job.run_id, n),
            "workflow_id_reuse_policy": "reject",
        }
        client = await asyncio.to_thread(self.client)
        from dbos._error import DBOSWorkflowIDInUseError

        try:
            await client.enqueue_async(options, job.to_dict())
        except DBOSWorkflowIDInUseError:  # another submitter got there between the look and the enqueue
            raise ConfigError(
                f"run {job.run_id!r} was submitted by another process just now ({options['workflow_id']}); "
                f"see it with `orch jobs {job.run_id}`"
            ) from None
        return options["workflow_id"]

    async def job_input(self, job_id: str) -> dict[str, Any] | None:
        """A job's input (`Job.to_dict()`), as it was submitted."""
        client = await asyncio.to_thread(self.client)
        found = await client.list_workflows_async(workflow_ids=[job_id], load_output=False)
        given: Any = found[0].input if found else None
        args = given.get("args") if isinstance(given, dict) else None
        return dict(args[0]) if args and isinstance(args[0], dict) else None

    async def history(self, run_id: str) -> list[JobState]:
        """The run's jobs, oldest first."""
        client = await asyncio.to_thread(self.client)
        found = await client.list_workflows_async(workflow_id_prefix=run_id, name=WORKFLOW, load_input=False)
        states = [self._state(w) for w in found if _run_of(w.workflow_id)[0] == run_id]
        return sorted(states, key=lambda s: _run_of(s.job_id)[1])

    async def state(self, run_id: str) -> JobState | None:
        """Where the run stands (its latest job), or None if it was never submitted."""
        jobs = await self.history(run_id)
        return jobs[-1] if jobs else None

    async def recent(self, limit: int = 20) -> list[JobState]:
        """The newest jobs, newest first."""
        client = await asyncio.to_thread(self.client)
        found = await client.list_workflows_async(
            name=WORKFLOW, limit=limit, sort_desc=True, load_input=False
        )
        return [self._state(w) for w in found]

    async def depth(self) -> dict[str, Any]:
        """What to watch: runs queued and running, and how long the oldest queued one has waited (s)."""
        client = await asyncio.to_thread(self.client)
        queued = await client.list_workflows_async(
            name=WORKFLOW, status=["ENQUEUED", "DELAYED"], load_input=False, load_output=False
        )
        running = await client.list_workflows_async(
            name=WORKFLOW, status="PENDING", load_input=False, load_output=False
        )
        oldest = min((w.created_at for w in queued if w.created_at), default=None)
        return {
            "queued": len(queued),
            "running": len(running),
            "oldest_queued_s": None if oldest is None else round(time.time() - oldest / 1000, 1),
        }

    async def wait(self, run_id: str, timeout: float | None = None, poll_s: float = 0.2) -> JobState:
        """Wait until the run's latest job has ended (a `TimeoutError` after `timeout` seconds)."""
        t_end = None if timeout is None else time.monotonic() + timeout
        while True:
            state = await self.state(run_id)
            if state is None:
                raise ConfigError(f"run {run_id!r} was never submitted to the fleet in {self.describe()}")
            if state.status not in ("queued", "running"):
                return state
            if t_end is not None and time.monotonic() >= t_end:
                raise TimeoutError(f"run {run_id!r} is still {state.status} after {timeout:g} s")
            await asyncio.sleep(poll_s)
            poll_s = min(2.0, poll_s * 1.5)

    def _state(self, w: Any) -> JobState:
        run_id, _ = _run_of(w.workflow_id)
        status: JobStatus = _STATUS.get(w.status, "error")
        result = None
        if w.status == "SUCCESS" and isinstance(w.output, dict):
            result = w.output
            status = result.get("status", "error")
        error = None if w.error is None else str(w.error)
        queued = w.created_at / 1000 if w.created_at else None
        return JobState(run_id, w.workflow_id, status, w.executor_id, queued, result, error)

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.destroy()
            self._client = None


def result_of(state: JobState, ledger: Ledger) -> RunResult:
    """A finished job's run result, with the run's ledger as the database holds it."""
    if state.result is None:
        return RunResult(
            run_id=state.run_id,
            status="failed",
            answer=None,
            ledger=ledger,
            error=state.error or f"the job ended {state.status}",
            resumable=True,
        )
    r = state.result
    return RunResult(
        run_id=state.run_id,
        status=r["status"],
        answer=r.get("answer"),
        ledger=ledger,
        stop_reason=r.get("stop_reason"),
        error=r.get("error"),
        results=list(r.get("results") or []),
        resumable=bool(r.get("resumable")),
        waiting=list(r.get("waiting") or []),
    )
