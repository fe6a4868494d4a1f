"""The outbox (`hg_events`): one row per domain event, deleted once processed.

A worker claims a batch in a short transaction of its own that counts an attempt for each event
and leases it for LEASE; it then processes the batch in a second transaction that first locks
the rows it claimed (`lock_claimed`), and deletes them, fails them or sets them aside. So every
way of failing counts an attempt — an exception, a timeout, a crash or `kill -9` between the
two, after which the lease runs out and the event is due again — and MAX_ATTEMPTS bounds them.
While a worker's processing transaction holds its rows, no other worker can take them (SKIP
LOCKED), however long it runs; the lease covers only the milliseconds between the claim's
commit and the processing's lock, and after a crash it is how long the events wait.

An event that has been claimed twice without being finished ("a suspect": it may be what
crashes the worker) is claimed alone from then on, so that it cannot take a batch of innocent
events down with it again; once is forgiven — a `kill -9` on a deploy strands a whole batch,
which then goes through at batch speed. Due times are the database's clock.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import db
from humanglue_cli.core.domain import Event
from humanglue_cli.core.errors import NotFound
from humanglue_cli.core.models import UTCDateTime, events

E = events.c
MAX_ATTEMPTS = 5
BACKOFF_BASE = timedelta(seconds=2)
BACKOFF_CAP = timedelta(minutes=5)
LEASE = timedelta(seconds=3)  # a claimed event is due again this long after a crash
SET_ASIDE = timedelta(seconds=1)  # an event that met a lock waits this long, attempt refunded
SUSPECT_AFTER = 3  # from this attempt on, an event is claimed alone
CRASHED = "the worker stopped while processing it (crash, kill -9 or lost connection)"


def backoff(attempts: int) -> timedelta:
    """Delay before retry number `attempts` (1, 2, …): 2 s, 4 s, 8 s … capped at 5 min."""
    factor: int = 2 ** max(attempts - 1, 0)
    return min(BACKOFF_BASE * factor, BACKOFF_CAP)


def _due(conn: sa.Connection) -> sa.ColumnElement[bool]:
    return sa.and_(E.status == "pending", E.available_at <= db.now(conn))


def enqueue(conn: sa.Connection, kind: str, entity_id: str, payload: dict[str, Any]) -> int:
    """Add an event from our own code (an announcement); returns its id."""
    stmt = sa.insert(events).values(kind=kind, entity_id=entity_id, payload=payload)
    return int(conn.execute(stmt.returning(E.id)).scalar_one())


def first_due(conn: sa.Connection) -> int | None:
    """Cheap index probe: the oldest due event's id, if any (the workers' wake-up poll)."""
    return conn.execute(_hot(conn.dialect.name).first_due).scalar()


@dataclass(frozen=True)
class _Hot:
    """The statements of a batch's hot path, built once per dialect: building one costs the
    client about as much as running it (~0.1 ms)."""

    first_due: sa.Select[Any]
    pick: sa.Select[Any]
    lock: sa.Select[Any]
    finish: sa.Delete


@functools.cache
def _hot(dialect: str) -> _Hot:
    due = sa.and_(E.status == "pending", E.available_at <= db.now_in(dialect))
    pick = sa.select(E.id, E.attempts).where(due).order_by(E.id).limit(sa.bindparam("limit"))
    lock = (
        sa.select(E.id, E.attempts)
        .where(db.any_of(dialect, E.id, "ids"), E.status == "pending")
        .order_by(E.id)
    )
    if dialect == "postgresql":
        pick, lock = pick.with_for_update(skip_locked=True), lock.with_for_update()
    return _Hot(
        first_due=sa.select(E.id).where(due).order_by(E.id).limit(1),
        pick=pick,
        lock=lock,
        finish=sa.delete(events).where(db.any_of(dialect, E.id, "ids")),
    )


def claim(conn: sa.Connection, limit: int) -> list[Event]:
    """Take up to `limit` due events, oldest first, counting an attempt for each.

    The caller commits at once, then processes them in a transaction of its own. Events that
    have run out of attempts by crashing are marked failed here instead of being returned.

    PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent workers take disjoint batches. SQLite: the
    transaction already holds the single write lock (BEGIN IMMEDIATE).
    """
    if conn.dialect.name == "postgresql":
        # A claim lost in a server crash only gives its events one more try than counted:
        # not worth waiting for the disk, as the processing's commit must. And walk the partial
        # due index in id order, stopping at `limit`: with statistics from when the outbox was
        # small (autovacuum lags a burst) the planner would rather bitmap-scan every due row
        # and sort them, 35 ms instead of 0.3 ms per claim at a 100k backlog. (The rest of
        # this short transaction updates rows by id: no bitmap scan to miss.) One round trip.
        conn.exec_driver_sql(
            "SELECT set_config('synchronous_commit', 'off', true),"
            " set_config('enable_bitmapscan', 'off', true)"
        )
    while True:
        picked = _pick(conn, limit)
        spent = [row.id for row in picked if row.attempts >= MAX_ATTEMPTS]
        if not spent:
            break
        _give_up(conn, spent, f"gave up after {MAX_ATTEMPTS} attempts: {CRASHED}")
    if not picked:
        return []
    if picked[0].attempts + 1 >= SUSPECT_AFTER:
        picked = picked[:1]  # a suspect goes alone
    else:
        picked = [row for row in picked if row.attempts + 1 < SUSPECT_AFTER]
    rows = conn.execute(
        sa.update(events)
        .where(db.one_of(conn, E.id, [row.id for row in picked]))
        .values(attempts=E.attempts + 1, available_at=db.now_plus(conn, LEASE))
        .returning(
            E.id,
            E.kind,
            E.entity_id,
            sa.cast(E.payload, sa.Text).label("raw"),
            E.attempts,
            E.created_at,
        )
    ).all()
    found = [
        Event(r.id, r.kind, r.entity_id, _payload(r.raw), r.attempts, r.created_at) for r in rows
    ]
    return sorted(found, key=lambda e: e.id)


def claim_at_once(conn: sa.Connection, limit: int) -> list[Event] | None:
    """PostgreSQL: `claim` in one statement that is its own transaction (`conn` in autocommit):
    migration 0014's `hg_claim`. None when a suspect or a spent event is among the first due
    ones: `claim` decides then."""
    rows = conn.execute(_CLAIM, {"limit": limit, "suspect": SUSPECT_AFTER, "lease": LEASE}).all()
    if rows and rows[0].id is None:
        return None
    found = [
        Event(r.id, r.kind, r.entity_id, _payload(r.raw), r.attempts, r.created_at) for r in rows
    ]
    return sorted(found, key=lambda e: e.id)


_CLAIM = sa.text(
    "SELECT id, kind, entity_id, raw, attempts, created_at FROM hg_claim(:limit, :suspect, :lease)"
).columns(created_at=UTCDateTime())


def _pick(conn: sa.Connection, limit: int) -> list[sa.Row[Any, Any]]:
    """Due events, oldest first (PostgreSQL: SKIP LOCKED, no bitmap scan — see `claim`)."""
    return list(conn.execute(_hot(conn.dialect.name).pick, {"limit": limit}))


def _payload(raw: str | None) -> Any:
    """The payload as JSON data, read by hand: a row that is not JSON at all (SQLite keeps
    text) must fail its own event, not the claim. Whether it is well-formed is the rules' call."""
    try:
        return json.loads(raw) if raw is not None else None
    except ValueError:
        return raw


def lock_claimed(conn: sa.Connection, claimed: Sequence[Event]) -> list[Event]:
    """Lock the claimed events for processing; any taken over by another worker (its lease ran
    out and it was claimed again, with another attempt count) drops out."""
    if not claimed:
        return []
    query = _hot(conn.dialect.name).lock
    return _still_mine(claimed, conn.execute(query, {"ids": [e.id for e in claimed]}).all())


def begin_processing(
    conn: sa.Connection, claimed: Sequence[Event], lock_timeout: str
) -> tuple[list[Event], datetime | None]:
    """PostgreSQL, the first statement of a batch's processing transaction, one round trip:
    bound every lock wait of the transaction to `lock_timeout`, lock the claimed events (as
    `lock_claimed`) and read the database's time (None if no event is left).

    The setting is a one-time filter of the statement (an InitPlan without a row of its own):
    PostgreSQL evaluates it before the first row reaches the lock, so the lock waits under it.
    """
    if not claimed:
        return [], None
    params = {"ids": [e.id for e in claimed], "lock_timeout": lock_timeout}
    rows = conn.execute(_lock_at(), params).all()
    return _still_mine(claimed, rows), rows[0].now if rows else None


def _still_mine(claimed: Sequence[Event], locked: Sequence[sa.Row[Any]]) -> list[Event]:
    mine = {(row.id, row.attempts) for row in locked}
    return [e for e in claimed if (e.id, e.attempts) in mine]


@functools.cache
def _lock_at() -> sa.Select[Any]:
    """`_hot`'s lock on PostgreSQL, with the lock timeout set first and the database's time."""
    setting = sa.select(sa.func.set_config("lock_timeout", sa.bindparam("lock_timeout"), True))
    return (
        _hot("postgresql")
        .lock.add_columns(sa.type_coerce(sa.func.now(), UTCDateTime()).label("now"))
        .where(setting.scalar_subquery().is_not(None))
    )


def finish(conn: sa.Connection, event_ids: Iterable[int]) -> None:
    """Processed events leave the outbox (the ledger keeps what they did)."""
    ids = sorted(event_ids)
    if ids:
        conn.execute(_hot(conn.dialect.name).finish, {"ids": ids})


def pg_finish(event_ids: Iterable[int]) -> tuple[str, dict[str, Any]]:
    """`finish`'s statement on PostgreSQL, with its parameters (`db.together`)."""
    return _PG_FINISH, {"ids": sorted(event_ids)}


_PG_FINISH = "DELETE FROM hg_events WHERE id = ANY (%(ids)s::bigint[])"


def fail(conn: sa.Connection, failures: Sequence[tuple[Event, str]]) -> int:
    """Record a failed attempt (already counted by the claim): back off, or give up.

    Returns how many were given up on (now kept as failed, with their reason).
    """
    given_up = [(e, why) for e, why in failures if e.attempts >= MAX_ATTEMPTS]
    for event, reason in sorted(failures, key=lambda f: f[0].id):
        if event.attempts >= MAX_ATTEMPTS:
            continue
        conn.execute(
            sa.update(events)
            .where(E.id == event.id)
            .values(
                last_error=reason[:2000], available_at=db.now_plus(conn, backoff(event.attempts))
            )
        )
    for event, reason in given_up:
        _give_up(conn, [event.id], reason)
    return len(given_up)


def _give_up(conn: sa.Connection, event_ids: list[int], reason: str) -> None:
    conn.execute(
        sa.update(events)
        .where(db.one_of(conn, E.id, event_ids))
        .values(
            status="failed",
            failed_at=db.now(conn),
            available_at=db.now(conn),
            last_error=reason[:2000],
        )
    )


def set_aside(conn: sa.Connection, claimed: Sequence[Event], reason: str) -> None:
    """Give events back without using up their attempt: they met a lock, not a fault."""
    ids = sorted(e.id for e in claimed)
    if ids:
        conn.execute(
            sa.update(events)
            .where(db.one_of(conn, E.id, ids))
            .values(
                attempts=E.attempts - 1,
                last_error=reason[:2000],
                available_at=db.now_plus(conn, SET_ASIDE),
            )
        )


@dataclass(frozen=True)
class Backlog:
    pending: int
    due: int
    failed: int
    longest_due_since: datetime | None  # when the longest-waiting due event became due


def backlog(conn: sa.Connection) -> Backlog:
    """Counts for `status`. An event's wait starts at its `available_at` — its creation, or the
    end of its last back-off — so an event just back from a retry does not look stuck."""
    due = _due(conn)
    row = conn.execute(
        sa.select(
            sa.func.count().filter(E.status == "pending"),
            sa.func.count().filter(due),
            sa.func.count().filter(E.status == "failed"),
            sa.func.min(E.available_at).filter(due),
        )
    ).one()
    since = row[3]
    if isinstance(since, str):  # SQLite: an aggregate loses the column's type
        since = UTCDateTime().process_result_value(since, conn.dialect)
    return Backlog(int(row[0]), int(row[1]), int(row[2]), since)


@dataclass(frozen=True)
class Failed:
    id: int
    kind: str
    entity_id: str
    payload: Any
    attempts: int
    last_error: str | None
    created_at: datetime
    failed_at: datetime | None


def failed(conn: sa.Connection, limit: int) -> list[Failed]:
    """Failed events, oldest first (a payload that is not JSON is shown as its text)."""
    raw = sa.cast(E.payload, sa.Text).label("raw")
    columns = (E.id, E.kind, E.entity_id, raw, E.attempts, E.last_error, E.created_at, E.failed_at)
    query = sa.select(*columns).where(E.status == "failed").order_by(E.id).limit(limit)
    return [
        Failed(
            r.id,
            r.kind,
            r.entity_id,
            _payload(r.raw),
            r.attempts,
            r.last_error,
            r.created_at,
            r.failed_at,
        )
        for r in conn.execute(query)
    ]


def retry_failed(conn: sa.Connection, event_ids: Sequence[int] | None) -> int:
    """Put failed events back in the queue with fresh attempts; None means all of them.

    All or nothing: NotFound, and nothing changed, if any id is not a failed event.
    """
    stmt = sa.update(events).where(E.status == "failed")
    if event_ids is not None:
        found = set(
            conn.execute(
                sa.select(E.id).where(E.id.in_(list(event_ids)), E.status == "failed")
            ).scalars()
        )
        unknown = [i for i in event_ids if i not in found]
        if unknown:
            more = f" (nor {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise NotFound(f"no failed event {unknown[0]}{more}")
        stmt = stmt.where(E.id.in_(list(event_ids)))
    stmt = stmt.values(status="pending", attempts=0, available_at=db.now(conn), failed_at=None)
    return conn.execute(stmt).rowcount
