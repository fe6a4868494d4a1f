"""The outbox of domain events, the once-per-entity ledger, and worker heartbeats.

Every query on the internal `hg_*` tables lives here (STYLE.md, one seam for SQL).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from humanglue_cli.core.errors import NotFound
from humanglue_cli.core.models import (
    UTCDateTime,
    events,
    ledger,
    maintenance_runs,
    utcnow,
    workers,
)
from humanglue_cli.core.rules import Event

MAX_ATTEMPTS = 5
BACKOFF_BASE = timedelta(seconds=2)
BACKOFF_CAP = timedelta(minutes=5)


def backoff(attempts: int) -> timedelta:
    """Delay before retry number `attempts` (1, 2, …): 2 s, 4 s, 8 s … capped at 5 min."""
    factor: int = 2 ** max(attempts - 1, 0)
    return min(BACKOFF_BASE * factor, BACKOFF_CAP)


def _insert(conn: sa.Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _payload(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(events.c.status == "pending", events.c.available_at <= now)


def claim(conn: sa.Connection, limit: int, only_id: int | None = None) -> list[Event]:
    """Lock up to `limit` due events for this transaction, oldest first.

    PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent workers take disjoint batches and a
    killed worker's batch is free again the moment its connection drops. SQLite: the
    transaction already holds the single write lock (BEGIN IMMEDIATE).
    """
    query = (
        sa.select(events.c.id, events.c.kind, events.c.entity_id, events.c.payload)
        .where(_due(utcnow()))
        .order_by(events.c.id)
        .limit(limit)
    )
    if only_id is not None:
        query = query.where(events.c.id == only_id)
    if conn.dialect.name != "postgresql":
        return [Event(r.id, r.kind, r.entity_id, _payload(r.payload)) for r in conn.execute(query)]
    # Walk the partial index in id order and stop at `limit`. With statistics from when the
    # outbox was small (autovacuum lags a burst), the planner would rather bitmap-scan every
    # due row and sort them: 35 ms instead of 0.3 ms per claim at a 100k backlog.
    conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
    rows = conn.execute(query.with_for_update(skip_locked=True)).all()
    conn.exec_driver_sql("SET LOCAL enable_bitmapscan TO DEFAULT")
    return [Event(r.id, r.kind, r.entity_id, _payload(r.payload)) for r in rows]


def first_due(conn: sa.Connection) -> int | None:
    """Cheap index probe: the oldest due event's id, if any (the workers' wake-up poll)."""
    query = sa.select(events.c.id).where(_due(utcnow())).order_by(events.c.id).limit(1)
    return conn.execute(query).scalar()


def record(conn: sa.Connection, keys: Sequence[tuple[str, str, int, int]]) -> set[tuple[str, str]]:
    """Insert ledger rows (rule, entity_id, event_id, recipients); return the keys that are new.

    A key already present — notified before, by this or any worker — is skipped: that is what
    makes every rule fire once per entity, whatever redelivery or crash happened.
    """
    if not keys:
        return set()
    rows = [{"rule": r, "entity_id": e, "event_id": ev, "recipients": n} for r, e, ev, n in keys]
    stmt = (
        _insert(conn)(ledger)
        .on_conflict_do_nothing(index_elements=["rule", "entity_id"])
        .returning(ledger.c.rule, ledger.c.entity_id)
    )
    # executemany: SQLAlchemy sends multi-row batches ("insertmanyvalues") of a statement it
    # compiles once, rather than a new statement per batch (bench/README.md: 29% of a drain).
    return {(row.rule, row.entity_id) for row in conn.execute(stmt, rows)}


def finish(conn: sa.Connection, event_ids: Iterable[int]) -> None:
    """Processed events leave the outbox (the ledger keeps what they did)."""
    ids = list(event_ids)
    if ids:
        conn.execute(sa.delete(events).where(events.c.id.in_(ids)))


def fail(conn: sa.Connection, failures: Sequence[tuple[int, str]]) -> int:
    """Count a failed attempt per event: back off, or give up after MAX_ATTEMPTS.

    Returns how many events were given up on (now kept as failed).
    """
    given_up = 0
    now = utcnow()
    for event_id, reason in failures:
        attempts = (
            conn.execute(sa.select(events.c.attempts).where(events.c.id == event_id)).scalar_one()
            + 1
        )
        final = attempts >= MAX_ATTEMPTS
        given_up += final
        conn.execute(
            sa.update(events)
            .where(events.c.id == event_id)
            .values(
                attempts=attempts,
                last_error=reason[:2000],
                status="failed" if final else "pending",
                failed_at=now if final else None,
                available_at=now if final else now + backoff(attempts),
            )
        )
    return given_up


def enqueue(conn: sa.Connection, kind: str, entity_id: str, payload: dict[str, Any]) -> int:
    """Add an event from our own code (an announcement); returns its id."""
    result = conn.execute(
        sa.insert(events)
        .values(kind=kind, entity_id=entity_id, payload=payload)
        .returning(events.c.id)
    )
    return int(result.scalar_one())


@dataclass(frozen=True)
class Backlog:
    pending: int
    due: int
    oldest_due_at: datetime | None
    failed: int


def backlog(conn: sa.Connection) -> Backlog:
    now = utcnow()
    row = conn.execute(
        sa.select(
            sa.func.count().filter(events.c.status == "pending"),
            sa.func.count().filter(_due(now)),
            sa.func.min(events.c.created_at).filter(_due(now)),
            sa.func.count().filter(events.c.status == "failed"),
        )
    ).one()
    oldest = row[2]
    if isinstance(oldest, str):
        oldest = UTCDateTime().process_result_value(oldest, conn.dialect)
    return Backlog(int(row[0]), int(row[1]), oldest, int(row[3]))


def failed_events(conn: sa.Connection, limit: int = 100) -> list[sa.Row[Any]]:
    return list(
        conn.execute(
            sa.select(events).where(events.c.status == "failed").order_by(events.c.id).limit(limit)
        )
    )


def retry(conn: sa.Connection, event_ids: Sequence[int] | None) -> int:
    """Put failed events back in the queue, with fresh attempts; None means all of them."""
    stmt = sa.update(events).where(events.c.status == "failed")
    if event_ids is not None:
        stmt = stmt.where(events.c.id.in_(list(event_ids)))
    stmt = stmt.values(status="pending", attempts=0, available_at=utcnow(), failed_at=None)
    return conn.execute(stmt).rowcount


def unknown_failed_ids(conn: sa.Connection, event_ids: Sequence[int]) -> list[int]:
    found = set(
        conn.execute(
            sa.select(events.c.id).where(
                events.c.id.in_(list(event_ids)), events.c.status == "failed"
            )
        ).scalars()
    )
    return [i for i in event_ids if i not in found]


def heartbeat(
    conn: sa.Connection, worker_id: str, kind: str, hostname: str, pid: int, processed: int
) -> None:
    now = utcnow()
    stmt = _insert(conn)(workers).values(
        id=worker_id,
        kind=kind,
        hostname=hostname,
        pid=pid,
        started_at=now,
        last_seen_at=now,
        processed=processed,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={"last_seen_at": now, "processed": processed},
        )
    )


def workers_seen_since(conn: sa.Connection, since: datetime) -> list[sa.Row[Any]]:
    return list(
        conn.execute(
            sa.select(workers)
            .where(workers.c.last_seen_at >= since)
            .order_by(workers.c.last_seen_at.desc())
        )
    )


def forget_worker(conn: sa.Connection, worker_id: str) -> None:
    conn.execute(sa.delete(workers).where(workers.c.id == worker_id))


def record_maintenance(conn: sa.Connection, task: str, result: dict[str, Any]) -> None:
    conn.execute(sa.insert(maintenance_runs).values(task=task, ran_at=utcnow(), result=result))


def last_maintenance(conn: sa.Connection, task: str) -> sa.Row[Any] | None:
    return conn.execute(
        sa.select(maintenance_runs)
        .where(maintenance_runs.c.task == task)
        .order_by(maintenance_runs.c.id.desc())
        .limit(1)
    ).first()


def longest_due_wait_since(conn: sa.Connection) -> datetime | None:
    """Since when the longest-waiting due event has been ready for a worker (`status`).

    That is its `available_at` — its creation, or the end of its last back-off — so an event
    just back from a retry does not look stuck; None when nothing is due.
    """
    return conn.execute(
        sa.select(sa.func.min(events.c.available_at)).where(_due(utcnow()))
    ).scalar()


def retry_failed(conn: sa.Connection, event_ids: Sequence[int] | None) -> int:
    """`events retry`: all or nothing — NotFound, and nothing changed, if any id is not failed.

    None means every failed event. Returns how many were put back in the queue.
    """
    if event_ids is not None:
        unknown = unknown_failed_ids(conn, event_ids)
        if unknown:
            raise NotFound(
                f"no failed event {unknown[0]}"
                + (f" (nor {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            )
    return retry(conn, event_ids)
