"""Noticing new events within milliseconds, at a cost the platform does not feel.

The workers' regular probe (`runner.first_due`) goes through the pool — a checkout, a ping, a
read-only transaction — at ~0.8 ms of client time, so it runs every 50 ms (PostgreSQL) or
20 ms (SQLite), and half an interval of waiting was most of a notification's latency. A NOTIFY
from the platform's own transactions would wake us at once, but it takes a cluster-wide lock
at commit and halved the platform's write throughput here (ENGINEERING.md, Live delivery).

So a worker also keeps one connection of its own and asks it, every FAST seconds, a single
prepared statement: the first *due* event among the recent ones — those with an id above a
low-water mark. It sees committed rows only (it is the truth, not a hint), and it reads a
handful of index entries however large the outbox's backlog of retries: its cost does not grow
with the outbox (~0.1 ms of client and server time together here).

The low-water mark is the newest id that existed WINDOW seconds ago. Ids are taken before
commit, so an insert may commit after a larger id did: the window keeps looking at it for
that long. A transaction that commits later still, or an event that becomes due again (a
retry, a lease run out, one set aside), is the regular probe's to find.

An outsider learns nothing new here: the statement reads the outbox, as the worker's role may.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import Any

import sqlalchemy as sa

FAST = 0.002  # seconds between looks while events come: commit → noticed ~1 ms on average
IDLE = 0.005  # seconds between looks once none came for QUIET seconds
QUIET = 2.0
WINDOW = 0.5  # seconds an id stays in view after it was first the newest

# The outbox's due condition (store/events.py `_due`), restricted to ids above a mark, and the
# newest id: one round trip.
_DUE_AFTER = (
    "SELECT (SELECT id FROM hg_events WHERE id > {after} AND status = 'pending'"
    " AND available_at <= {now} ORDER BY id LIMIT 1), (SELECT max(id) FROM hg_events)"
)
_PROBE = {
    "postgresql": _DUE_AFTER.format(after="$1::bigint", now="now()"),
    "sqlite": _DUE_AFTER.format(after=":after", now="strftime('%Y-%m-%d %H:%M:%f', 'now')"),
}
_PREPARED = b"humanglue_watch"


class Watch:
    """`look()`: is a recently inserted event due? `wait()`: until one is, or a timeout.

    Errors propagate from `look()` (its connection is then dropped and made again at the next
    look): the caller's own probe reports outages, once.
    """

    def __init__(self, engine: sa.Engine, interval: float = FAST) -> None:
        self.engine = engine
        self.interval = interval
        self.sql = _PROBE.get(engine.dialect.name)
        self._postgres = engine.dialect.name == "postgresql"
        self._conn: Any = None
        self._after: int | None = None  # the low-water mark
        self._newest = 0
        self._seen: collections.deque[tuple[float, int]] = collections.deque()
        self._active = 0.0  # when a look last found work (monotonic)

    @property
    def supported(self) -> bool:
        return self.sql is not None

    def look(self) -> bool:
        """One probe: True if an event above the low-water mark is due now."""
        if self.sql is None:
            return False
        conn = self._conn or self._connect()
        try:
            due, newest = self._probe(conn)
        except BaseException:
            self.close()
            raise
        self._advance(newest)
        if due is not None:
            self._active = time.monotonic()
        return due is not None

    def _probe(self, conn: Any) -> tuple[int | None, int | None]:
        after = self._after or 0
        if not self._postgres:
            found: tuple[int | None, int | None] = conn.execute(
                self.sql, {"after": after}
            ).fetchone()
            return found
        # libpq directly: a third of the client's time of a cursor (10 µs against 26 here)
        from psycopg import OperationalError, pq

        res = conn.pgconn.exec_prepared(_PREPARED, [str(after).encode()])
        if res.status != pq.ExecStatus.TUPLES_OK:
            raise OperationalError(_error(res))
        due, newest = res.get_value(0, 0), res.get_value(0, 1)
        return (int(due) if due is not None else None), (
            int(newest) if newest is not None else None
        )

    def covers(self, event_id: int | None) -> bool:
        """Whether `event_id` is in view: new enough for `look()` to see it due."""
        return (
            event_id is not None
            and self._conn is not None
            and self._after is not None
            and event_id > self._after
        )

    def wait(self, stop: threading.Event, timeout: float) -> bool:
        """Look every `interval` until an event is due (True), `timeout` or `stop` (False).

        Errors propagate, as from `look()`."""
        if self.sql is None:
            stop.wait(timeout)
            return False
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            if self.look():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            pause = self.interval if time.monotonic() - self._active < QUIET else IDLE
            stop.wait(min(max(pause, self.interval), left))
        return False

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _connect(self) -> Any:
        raw = self.engine.raw_connection()
        conn: Any = raw.driver_connection
        raw.detach()  # its own connection, never back in the pool
        if self._postgres:
            from psycopg import OperationalError, pq

            conn.autocommit = True
            res = conn.pgconn.prepare(_PREPARED, (self.sql or "").encode())
            if res.status != pq.ExecStatus.COMMAND_OK:
                conn.close()
                raise OperationalError(_error(res))
        self._conn = conn
        if self._after is None:  # a fresh start: everything older is the regular probe's
            first = conn.execute("SELECT max(id) FROM hg_events").fetchone()[0]
            self._after = self._newest = int(first or 0)
        return conn

    def _advance(self, newest: int | None) -> None:
        """Record the newest id now; the mark moves to the newest id of WINDOW seconds ago."""
        now = time.monotonic()
        if newest is not None and newest > self._newest:
            self._newest = newest
            self._seen.append((now, newest))
        while self._seen and now - self._seen[0][0] >= WINDOW:
            self._after = self._seen.popleft()[1]


def _error(res: Any) -> str:
    return bytes(res.error_message or b"").decode(errors="replace").strip() or "no answer"
