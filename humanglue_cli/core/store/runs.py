"""Maintenance runs (`hg_maintenance_runs`): the claim of each tick, and what each run did.

A run is claimed in one short transaction that holds a lock per job (PostgreSQL: a
transaction-level advisory lock; SQLite: its single writer), so that two claims of one job
never interleave:
- a run of the job that is still going (unfinished, its lease not run out) refuses the claim;
- a tick already claimed is not claimed again (`INSERT … ON CONFLICT DO NOTHING` on the
  unique `(task, scheduled_for)`), unless its run never finished and its lease ran out: then
  the claimant takes it over and runs it again;
- a run started by hand has no tick (`scheduled_for` NULL) and is always a new row.
The runner renews its lease as it goes; `renew` says whether the run is still its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import db
from humanglue_cli.core.models import maintenance_runs

R = maintenance_runs.c


def _lock_job(conn: sa.Connection, task: str) -> None:
    if conn.dialect.name == "postgresql":
        key = sa.func.hashtext(sa.literal(f"hg_maintenance:{task}"))
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def claim(
    conn: sa.Connection, task: str, scheduled_for: datetime | None, owner: str, lease: timedelta
) -> int | None:
    """Claim a run of `task` for the tick `scheduled_for` (None: by hand); its id, or None if
    the tick is taken or another run of the job is going."""
    _lock_job(conn, task)
    unfinished = sa.and_(R.task == task, R.finished_at.is_(None))
    going = sa.select(R.id).where(unfinished, R.lease_until > db.now(conn)).limit(1)
    if conn.execute(going).first() is not None:
        return None
    held = {"owner": owner, "lease_until": db.now_plus(conn, lease), "ran_at": db.now(conn)}
    if scheduled_for is not None:
        stale = sa.update(maintenance_runs).where(unfinished, R.scheduled_for == scheduled_for)
        taken = conn.execute(stale.values(**held).returning(R.id)).scalar_one_or_none()
        if taken is not None:  # its runner died: run it again
            return int(taken)
    insert = _insert(conn).values(task=task, scheduled_for=scheduled_for, result={}, **held)
    insert = insert.on_conflict_do_nothing(index_elements=[R.task, R.scheduled_for])
    run_id = conn.execute(insert.returning(R.id)).scalar_one_or_none()
    return None if run_id is None else int(run_id)


def _insert(conn: sa.Connection) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    if conn.dialect.name == "postgresql":
        return postgresql.insert(maintenance_runs)
    return sqlite.insert(maintenance_runs)


def renew(conn: sa.Connection, run_id: int, owner: str, lease: timedelta) -> bool:
    """Extend the lease; False if the run is no longer `owner`'s (taken over, or finished)."""
    mine = sa.and_(R.id == run_id, R.owner == owner, R.finished_at.is_(None))
    update = sa.update(maintenance_runs).where(mine)
    return conn.execute(update.values(lease_until=db.now_plus(conn, lease))).rowcount == 1


def finish(conn: sa.Connection, run_id: int, owner: str, result: dict[str, Any]) -> bool:
    """Record the result; False if the run is no longer `owner`'s."""
    mine = sa.and_(R.id == run_id, R.owner == owner, R.finished_at.is_(None))
    update = sa.update(maintenance_runs).where(mine)
    return conn.execute(update.values(finished_at=db.now(conn), result=result)).rowcount == 1


def latest_tick(conn: sa.Connection, task: str) -> datetime | None:
    """The newest tick of `task` that was claimed."""
    query = sa.select(sa.func.max(R.scheduled_for)).where(R.task == task)
    value: datetime | None = conn.execute(query).scalar_one()
    return value


def recent(conn: sa.Connection, limit: int) -> list[sa.Row[Any]]:
    """The newest runs first."""
    query = sa.select(maintenance_runs).order_by(R.ran_at.desc(), R.id.desc()).limit(limit)
    return list(conn.execute(query))


def forgotten(conn: sa.Connection, before: datetime) -> sa.ColumnElement[bool]:
    """Finished runs that started before `before`, except each job's newest."""
    newest = sa.select(sa.func.max(R.id)).group_by(R.task)
    return sa.and_(R.ran_at < before, R.finished_at.is_not(None), R.id.not_in(newest))


def last(conn: sa.Connection, task: str) -> sa.Row[Any] | None:
    """The newest finished run of `task`."""
    finished = sa.and_(R.task == task, R.finished_at.is_not(None))
    query = sa.select(maintenance_runs).where(finished).order_by(R.id.desc()).limit(1)
    return conn.execute(query).first()
