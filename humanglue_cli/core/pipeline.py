"""Events in, notifications out: one batch per transaction, exactly once.

A batch is claimed, its context loaded in bulk, the rules applied, the ledger consulted and
the notifications written, and the events removed from the outbox — all in one database
transaction. A crash at any point rolls all of it back and the events are due again; a
second delivery of the same work finds them gone, or finds their ledger keys taken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import directory, outbox
from humanglue_cli.core.models import notifications, profiles, utcnow
from humanglue_cli.core.rules import (
    Audience,
    Context,
    Draft,
    Event,
    Needs,
    Outcome,
    Unprocessable,
    apply,
    needs,
)

log = logging.getLogger("humanglue.pipeline")

BATCH_SIZE = 500


@dataclass
class BatchResult:
    claimed: int = 0
    processed: int = 0  # events done (with or without notifications)
    failed: int = 0  # attempts that failed (the event is retried later, or kept as failed)
    notified: int = 0  # notifications created

    def __iadd__(self, other: BatchResult) -> BatchResult:
        self.claimed += other.claimed
        self.processed += other.processed
        self.failed += other.failed
        self.notified += other.notified
        return self


def _merge(all_needs: list[Needs]) -> Needs:
    return Needs(
        frozenset().union(*(n.people for n in all_needs)),
        frozenset().union(*(n.courses for n in all_needs)),
        frozenset().union(*(n.workshops for n in all_needs)),
    )


def _insert_drafts(conn: sa.Connection, drafts: list[Draft]) -> int:
    if not drafts:
        return 0
    now = utcnow()
    # Distinct, increasing created_at within a batch keeps "newest first" stable.
    rows = [
        {
            "user_id": d.user_id,
            "type": d.type,
            "title": d.title,
            "message": d.message,
            "data": d.data,
            "link": d.link,
            "priority": d.priority,
            "created_at": now + timedelta(microseconds=i),
        }
        for i, d in enumerate(drafts)
    ]
    conn.execute(sa.insert(notifications), rows)
    return len(rows)


def _fan_out(conn: sa.Connection, audience: Audience, draft: Draft) -> int:
    """One INSERT … SELECT for any number of recipients (never a loop in Python)."""
    who = sa.select(profiles.c.id)
    if audience.user_ids:
        who = who.where(profiles.c.id.in_(list(audience.user_ids)))
    elif audience.role:
        who = who.where(profiles.c.role == audience.role)
    elif not audience.everyone:
        return 0
    values = who.add_columns(
        sa.literal(draft.type),
        sa.literal(draft.title),
        sa.literal(draft.message),
        sa.literal(draft.data, notifications.c.data.type),
        sa.literal(draft.link, sa.Text),
        sa.literal(draft.priority),
        sa.literal(utcnow(), notifications.c.created_at.type),
    )
    cols = ["user_id", "type", "title", "message", "data", "link", "priority", "created_at"]
    stmt = sa.insert(notifications).from_select(cols, values)
    return conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount


def _process(conn: sa.Connection, batch: list[Event]) -> BatchResult:
    """Apply the rules to claimed events inside the caller's transaction."""
    result = BatchResult(claimed=len(batch))
    ctx: Context = directory.load_context(conn, _merge([needs(e) for e in batch]))
    outcomes: dict[tuple[str, str], tuple[Event, Outcome]] = {}
    failures: list[tuple[int, str]] = []
    done: list[int] = []
    for event in batch:
        try:
            outcome = apply(event, ctx)
        except Unprocessable as error:
            failures.append((event.id, str(error)))
            continue
        done.append(event.id)
        # Two events of one entity in one batch (completed, reopened, completed): first wins.
        outcomes.setdefault((outcome.rule, outcome.entity_id), (event, outcome))
    new = outbox.record(
        conn, [(o.rule, o.entity_id, e.id, len(o.drafts)) for e, o in outcomes.values()]
    )
    drafts = [d for key, (_, o) in outcomes.items() if key in new for d in o.drafts]
    result.notified = _insert_drafts(conn, drafts)
    for key, (_, o) in outcomes.items():
        if key in new and o.broadcast is not None:
            result.notified += _fan_out(conn, *o.broadcast)
    outbox.finish(conn, done)
    outbox.fail(conn, failures)
    result.processed, result.failed = len(done), len(failures)
    for event_id, reason in failures:
        log.warning("event %s failed: %s", event_id, reason)
    return result


def process_batch(engine: sa.Engine, limit: int = BATCH_SIZE) -> BatchResult:
    """Claim and process up to `limit` due events in one transaction.

    If the batch as a whole hits a database error (a row the rules did not foresee), each of
    its events is processed alone so that only the culprit is counted as failed.
    """
    try:
        with engine.begin() as conn:
            batch = outbox.claim(conn, limit)
            return _process(conn, batch) if batch else BatchResult()
    except sa.exc.DBAPIError as error:
        if error.connection_invalidated or isinstance(error, sa.exc.OperationalError):
            raise
        log.warning("batch failed (%s); retrying its events one by one", _short(error))
    result = BatchResult()
    with engine.begin() as conn:
        ids = [e.id for e in outbox.claim(conn, limit)]
    for event_id in ids:
        result += _process_alone(engine, event_id)
    return result


def _process_alone(engine: sa.Engine, event_id: int) -> BatchResult:
    try:
        with engine.begin() as conn:
            batch = outbox.claim(conn, 1, only_id=event_id)
            return _process(conn, batch) if batch else BatchResult()
    except sa.exc.DBAPIError as error:
        if error.connection_invalidated or isinstance(error, sa.exc.OperationalError):
            raise
        with engine.begin() as conn:
            outbox.fail(conn, [(event_id, _short(error))])
        log.warning("event %s failed: %s", event_id, _short(error))
        return BatchResult(claimed=1, failed=1)


def _short(error: BaseException) -> str:
    orig: Any = getattr(error, "orig", None) or error
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def drain(
    engine: sa.Engine, limit: int = BATCH_SIZE, should_stop: Callable[[], bool] = lambda: False
) -> BatchResult:
    """Process batches until nothing is due (or `should_stop`); the `worker --burst` loop."""
    total = BatchResult()
    while not should_stop():
        result = process_batch(engine, limit)
        total += result
        if result.claimed < limit:
            break
    return total
