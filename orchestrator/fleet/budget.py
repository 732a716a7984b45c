"""Budgets a fleet's workers draw from: a `PostgresBudget` in the fleet's database, opened by name.

A job carries its shared budget's name only (`run/jobs.py`, `budget_fields`); a worker opens that budget with
the caps the database holds, and its reservations carry the worker's id, so that when the worker dies the
one who recovers its runs releases them (`release_owner`): until then they count as spent.
"""

from __future__ import annotations

import os
import threading

from orchestrator.cost.pg_budget import PostgresBudget
from orchestrator.errors import ConfigError
from orchestrator.locations import redact
from orchestrator.procs import HOST

__all__ = ["open_budget", "release_owner"]

_open: dict[tuple[str, str, str], PostgresBudget] = {}
_lock = threading.Lock()


def open_budget(url: str, name: str, owner: str) -> PostgresBudget:
    """The fleet budget `name`, its caps as the database holds them; one per (database, name, owner)."""
    key = (url, name, owner)
    with _lock:
        if key not in _open:
            import psycopg

            with psycopg.connect(url) as conn:
                try:
                    row = conn.execute(
                        "select usd, tokens from orch_budgets where name = %s", (name,)
                    ).fetchone()
                except psycopg.errors.UndefinedTable:
                    row = None
            if row is None:
                raise ConfigError(
                    f"budget {name!r} is not in the fleet's database {redact(url)!r}: create it where the "
                    f"run is submitted, PostgresBudget(url, name={name!r}, usd=...)"
                )
            _open[key] = PostgresBudget(url, name, usd=row[0], tokens=row[1], owner=owner)
        return _open[key]


def release_owner(url: str, owner: str) -> int:
    """Release every reservation a (dead) worker held, on every fleet budget; how many were released."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        try:
            row = conn.execute(
                "select name from orch_budget_holds where owner = %s limit 1", (owner,)
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    if row is None:
        return 0
    return open_budget(url, row[0], f"{HOST}:{os.getpid()}:recovery").release_owner(owner)
