"""Events in, notifications out: exactly once, and no event can hold up the others.

A batch is claimed in a short transaction that counts an attempt for each event and leases it
(store/events.py), then processed in one transaction: its rows locked, the context loaded in
bulk, the rules applied, the recipients' profiles held, the ledger consulted, the notifications
written, the activity feed's entries journaled and the events removed. A crash at any point
rolls the processing back and the lease brings the events back; the ledger makes a second
delivery of the same work a no-op.

Nothing in a batch can stall it:
- a recipient's profile held by the platform (`SELECT … FOR UPDATE`, an email change) sets the
  events that notify that person aside, attempt refunded, and the rest go through;
- any other lock wait ends after LOCK_TIMEOUT, and is treated the same way;
- any other error — a constraint, a statement timeout, an exception of any type — makes the
  batch go again in a fresh transaction, split at once in savepoints until each culprit is alone
  (in halves; after a statement timeout in pieces of 16, then one by one, so that a poison
  costs three timeouts at most, not one per halving): it fails its attempt with the reason
  (retried with backoff, then kept as failed), a deadlock is retried at once, and everything
  else is processed.
Only an outage (the database unreachable) or a missing schema stops the work: then nothing can
be done, and the events come back when the database does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from humanglue_cli.core import activity, db, rules
from humanglue_cli.core.db import Fault, classify
from humanglue_cli.core.domain import Event, Needs, Outcome, Unprocessable
from humanglue_cli.core.errors import first_line
from humanglue_cli.core.models import UTCDateTime
from humanglue_cli.core.store import activity as journal
from humanglue_cli.core.store import events, ledger, notifications, people

log = logging.getLogger("humanglue.pipeline")

BATCH_SIZE = 500
LOCK_TIMEOUT = "500ms"  # a set_config value: the longest any statement waits for a lock
CONFLICT_RETRIES = 3
TIMEOUT_PIECE = 16  # after a statement timeout, a batch is tried in pieces of this many
HELD = "set aside: a row it needs is locked by another transaction"


@dataclass
class BatchResult:
    claimed: int = 0
    processed: int = 0  # events done (with or without notifications)
    failed: int = 0  # attempts that failed (the event is retried later, or kept as failed)
    set_aside: int = 0  # events that met a lock: back soon, their attempt refunded
    notified: int = 0  # notifications created

    def __iadd__(self, other: BatchResult) -> BatchResult:
        self.claimed += other.claimed
        self.processed += other.processed
        self.failed += other.failed
        self.set_aside += other.set_aside
        self.notified += other.notified
        return self


def _stoppable(fault: Fault) -> bool:
    """Faults that no retry of the work can get past: they end the batch."""
    return fault in (Fault.OUTAGE, Fault.SCHEMA)


_PG_BEGIN = sa.select(
    sa.func.set_config("lock_timeout", LOCK_TIMEOUT, True),
    sa.type_coerce(sa.func.now(), UTCDateTime()),
)


def _begin(conn: sa.Connection) -> datetime:
    """Start processing: bound every lock wait (PostgreSQL); returns the database's time."""
    if conn.dialect.name == "postgresql":
        now: datetime = conn.execute(_PG_BEGIN).one()[1]
        return now
    return db.current_time(conn)


def process_batch(engine: sa.Engine, limit: int = BATCH_SIZE) -> BatchResult:
    """Claim up to `limit` due events and process them (see the module docstring).

    The claim and the processing are two transactions on one connection: one checkout."""
    with engine.connect() as conn:
        claimed = _claim(conn, limit)
        if not claimed:
            return BatchResult()
        try:
            with conn.begin():
                result = _process_claimed(conn, claimed)
        except Exception as error:
            fault, reason = classify(error), first_line(error)
            if _stoppable(fault):
                raise
            log.info("a batch of %d failed (%s): isolating the culprit", len(claimed), reason)
            with conn.begin():
                now = _begin(conn)
                batch = events.lock_claimed(conn, claimed)
                # What failed is known only if the batch is the same (none taken over meanwhile)
                known = (fault, reason) if len(batch) == len(claimed) else None
                result = _isolate(conn, batch, now, known)
    result.claimed = len(claimed)
    return result


def _process_claimed(conn: sa.Connection, claimed: list[Event]) -> BatchResult:
    """Lock the claimed events and process them (PostgreSQL: the lock, the lock timeout and
    the database's time in the transaction's first round trip)."""
    if conn.dialect.name == "postgresql":
        batch, at = events.begin_processing(conn, claimed, LOCK_TIMEOUT)
        return _process(conn, batch, at) if at is not None else BatchResult()
    now = _begin(conn)
    return _process(conn, events.lock_claimed(conn, claimed), now)


def _claim(conn: sa.Connection, limit: int) -> list[Event]:
    """The claim: on PostgreSQL one statement in autocommit (one round trip, where a
    transaction of its own takes five), unless a suspect is among the first due events."""
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="AUTOCOMMIT")
        quick = events.claim_at_once(conn, limit)
        conn.commit()  # SQLAlchemy's own; the statement committed by itself (no round trip)
        conn.execution_options(isolation_level=conn.default_isolation_level)
        if quick is not None:
            return quick
    with conn.begin():
        return events.claim(conn, limit)


def _isolate(
    conn: sa.Connection, batch: list[Event], now: datetime, known: tuple[Fault, str] | None
) -> BatchResult:
    """Process `batch` in savepoints, splitting each part that fails until its culprit is alone.

    `known`: how the whole batch just failed, so that it is split at once, not run again."""
    result = BatchResult()
    todo: list[tuple[list[Event], tuple[Fault, str] | None]] = [(batch, known)]
    conflicts = 0
    while todo:
        part, failed = todo.pop()
        if not part:
            continue
        if failed is None:
            try:
                with conn.begin_nested():
                    result += _process(conn, part, now)
                continue
            except Exception as error:
                failed = classify(error), first_line(error)
                if _stoppable(failed[0]):
                    raise
        fault, reason = failed
        if fault is Fault.CONFLICT and conflicts < CONFLICT_RETRIES:
            conflicts += 1
            todo.append((part, None))
        elif len(part) > 1:
            todo += [(piece, None) for piece in _split(part, fault)]
        elif fault is Fault.LOCKED:
            events.set_aside(conn, part, HELD)
            result.set_aside += 1
        else:
            _fail(conn, [(part[0], reason)])
            result.failed += 1
    return result


def _split(part: list[Event], fault: Fault) -> list[list[Event]]:
    """The pieces of a failed part, the last to be tried first. A quick error is cheap to meet
    again: halves. After a statement timeout every run of the culprit costs a whole timeout,
    so halving would cost one per halving: pieces of TIMEOUT_PIECE events, then each alone —
    the culprit runs three times at most (with its batch, its piece, alone)."""
    if fault is Fault.TIMEOUT:
        size = TIMEOUT_PIECE if len(part) > TIMEOUT_PIECE else 1
    else:
        size = (len(part) + 1) // 2
    return [part[i : i + size] for i in range(0, len(part), size)][::-1]


def _fail(conn: sa.Connection, failures: list[tuple[Event, str]]) -> None:
    events.fail(conn, failures)
    for event, reason in failures:
        final = " (giving up: kept as failed)" if event.attempts >= events.MAX_ATTEMPTS else ""
        log.warning(
            "event %s (%s) failed attempt %d: %s%s",
            event.id,
            event.kind,
            event.attempts,
            reason,
            final,
        )


def _process(conn: sa.Connection, batch: list[Event], now: datetime) -> BatchResult:
    """Apply the rules to locked events, inside the caller's transaction (`now`: its time)."""
    result = BatchResult()
    if not batch:
        return result
    ctx = people.load_context(conn, Needs.merge([rules.needs(e) for e in batch]))
    outcomes: dict[tuple[str, str], tuple[Event, Outcome]] = {}
    failures: list[tuple[Event, str]] = []
    done: list[Event] = []
    for event in batch:
        try:
            outcome = rules.apply(event, ctx)
        except Unprocessable as error:
            failures.append((event, str(error)))
            continue
        done.append(event)
        if outcome is not None:
            # Two events of one entity in one batch (completed, reopened, completed): first wins.
            outcomes.setdefault(outcome.key, (event, outcome))

    held = people.lock_recipients(conn, {d.user_id for _, o in outcomes.values() for d in o.drafts})
    aside = [e for e, o in outcomes.values() if any(d.user_id in held for d in o.drafts)]
    for event in aside:
        done.remove(event)
    plain = {
        key: (e, o) for key, (e, o) in outcomes.items() if o.broadcast is None and e not in aside
    }
    new = ledger.record(conn, [(*key, e.id, len(o.drafts)) for key, (e, o) in plain.items()])
    drafts = [d for key, (_, o) in plain.items() if key in new for d in o.drafts]
    result.notified = notifications.insert(conn, drafts, now)

    for key, (event, outcome) in outcomes.items():
        if outcome.broadcast is None:
            continue
        try:
            with conn.begin_nested():  # one announcement's trouble is its own
                if ledger.record(conn, [(*key, event.id, 0)]):
                    result.notified += notifications.fan_out(conn, *outcome.broadcast, now)
        except Exception as error:
            fault = classify(error)
            if _stoppable(fault):
                raise
            done.remove(event)
            if fault in (Fault.LOCKED, Fault.CONFLICT):
                aside.append(event)
            else:
                failures.append((event, first_line(error)))

    feed = [entry for e in done if (entry := activity.entry(e)) is not None]
    # The instructors' feed is journaled with the events' end, so exactly once.
    if conn.dialect.name == "postgresql":  # one round trip for both
        db.together(
            conn,
            [
                *([journal.pg_record(feed)] if feed else []),
                *([events.pg_finish(e.id for e in done)] if done else []),
            ],
        )
    else:
        journal.record(conn, feed)
        events.finish(conn, [e.id for e in done])
    events.set_aside(conn, aside, HELD)
    _fail(conn, failures)
    result.processed, result.failed, result.set_aside = len(done), len(failures), len(aside)
    return result


def drain(
    engine: sa.Engine,
    limit: int = BATCH_SIZE,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    watched: bool = False,
) -> BatchResult:
    """Process batches until nothing is due (or `should_stop`): the `worker --burst` loop.

    `watched`: the caller watches for new work (core/watch.py), so a batch that was not full
    ends the drain — one more claim only to find nothing would cost the machine more than the
    watch's next look."""
    total = BatchResult()
    while not should_stop():
        result = process_batch(engine, limit)
        total += result
        if not result.claimed or (watched and result.claimed < limit):
            break
    return total


def drain_parallel(
    engine: sa.Engine,
    threads: int,
    limit: int = BATCH_SIZE,
    should_stop: Callable[[], bool] = lambda: False,
) -> BatchResult:
    """`drain` on `threads` connections at once: claims are disjoint (SKIP LOCKED), so while
    one thread waits for the database another applies the rules, and the two cores both work
    (bench/burst_throughput.py: 1.4× with two on this machine). The first error of any thread
    stops the others at their next batch and is raised once they have all ended."""
    if threads <= 1 or engine.dialect.name != "postgresql":  # SQLite: one writer at a time
        return drain(engine, limit, should_stop)
    total, errors, lock = BatchResult(), list[BaseException](), threading.Lock()

    def stopped() -> bool:
        return bool(errors) or should_stop()

    def run() -> None:
        try:
            result = drain(engine, limit, stopped)
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            with lock:
                errors.append(error)
            return
        with lock:
            total.__iadd__(result)

    workers = [
        threading.Thread(target=run, name=f"humanglue-drain-{n}", daemon=True)
        for n in range(threads)
    ]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if errors:
        raise errors[0]
    return total
