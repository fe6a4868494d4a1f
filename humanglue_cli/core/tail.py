"""Following a person's notifications: the last few (or from a point in the past), then each
new one as it becomes visible — exactly once, whatever order their transactions commit in.

A row's `created_at` is stamped before its transaction commits, so "newer than the newest shown"
skips a row whose transaction commits late. Instead each read asks what became visible since
the previous read's snapshot (store/visibility.py): no time window, no set of ids to keep, and a
transaction left open anywhere holds back nothing. Where the reader stands (a `Position`) can be
saved after every line and resumed from (`tail --cursor-file`).

On PostgreSQL the reader sleeps until a transaction that inserted notifications commits
(core/wakeup.py: LISTEN, a signal without content, once per such transaction), with a timer
for a lost wake-up and polling every 100 ms while its listening connection is being replaced.
On SQLite it looks every 20 ms at a counter that says whether anything was inserted at all.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from humanglue_cli.core import db
from humanglue_cli.core.activity import Item, Scope
from humanglue_cli.core.backoff import Backoff
from humanglue_cli.core.db import Fault, classify
from humanglue_cli.core.domain import Broadcast, Notification
from humanglue_cli.core.store import activity as journal
from humanglue_cli.core.store import broadcasts as ephemeral
from humanglue_cli.core.store import notifications as inbox
from humanglue_cli.core.store.notifications import Filters
from humanglue_cli.core.store.visibility import (
    PAGE,
    Mark,
    Position,
    Reading,
    backlog,
    changed_since,
    mark_now,
    older,
    pushed_query,
    read_pushed,
    read_since,
)
from humanglue_cli.core.wakeup import Listener

T = TypeVar("T")
# A read-only connection in a short transaction (Runtime.read: on SQLite it never blocks writers).
Reader = Callable[[], AbstractContextManager[sa.Connection]]

POLL_INTERVAL = {"postgresql": 0.1, "sqlite": 0.02}
# With a listener armed, commits wake the reader: the timer only covers a lost wake-up.
PUSHED_INTERVAL = 5.0


def _quiet(_message: str) -> None:
    pass


def patiently(
    work: Callable[[], T],
    stop: threading.Event,
    on_status: Callable[[str], None] = _quiet,
    on_recovered: Callable[[], None] | None = None,
) -> T | None:
    """`work()`, retried with backoff while the database is unreachable; None if stopped first.
    `on_recovered` is called when it succeeded after failing."""
    backoff = Backoff("database", say=on_status)
    while not stop.is_set():
        try:
            result = work()
        except Exception as error:
            if classify(error) is not Fault.OUTAGE:
                raise
            stop.wait(backoff.failed(error))
            continue
        failed = backoff.failing
        backoff.ok()
        if failed and on_recovered is not None:
            on_recovered()
        return result
    return None


class _Pace:
    """A follower's rhythm between reads: sleep until a commit wakes its listener (or the
    timer for a lost wake-up: PUSHED_INTERVAL; polling at the backend's interval while no
    listener is armed), then read — patiently, through outages — until `stop`, or until
    `idle_timeout` seconds have passed with nothing delivered."""

    def __init__(
        self,
        read: Reader,
        stop: threading.Event,
        listener: Listener | None,
        idle_timeout: float | None,
        on_status: Callable[[str], None],
    ) -> None:
        self.read, self.stop, self.listener = read, stop, listener
        self.idle_timeout, self.on_status = idle_timeout, on_status
        self.interval: float | None = None
        self.quiet_since = time.monotonic()

    def delivered(self) -> None:
        self.quiet_since = time.monotonic()

    def next(self, poll: Callable[[], T]) -> tuple[T, bool] | None:
        """`poll()` once it is time, and whether it succeeded after an outage; None when the
        follower is to end (stopped, or idle for `idle_timeout`)."""
        idle = self.idle_timeout
        if idle is not None and time.monotonic() - self.quiet_since >= idle:
            return None
        if self.interval is None:
            self.interval = _interval(self.read)
        armed = self.listener is not None and self.listener.armed
        wait = PUSHED_INTERVAL if armed else self.interval
        if idle is not None:
            wait = max(0.0, min(wait, idle - (time.monotonic() - self.quiet_since)))
        if self.listener is not None:
            self.listener.wait(wait)
        else:
            self.stop.wait(wait)
        if self.stop.is_set():
            return None
        recovered = threading.Event()
        polled = patiently(poll, self.stop, self.on_status, recovered.set)
        return None if polled is None else (polled, recovered.is_set())


class _Session:
    """A follower's own connection (PostgreSQL: `Runtime.session`), opened when first used
    and replaced after any failure."""

    def __init__(self, open_: Callable[[], sa.Connection]) -> None:
        self.open = open_
        self.conn: sa.Connection | None = None

    def run(self, work: Callable[[sa.Connection], T]) -> T:
        try:
            if self.conn is None:
                self.conn = self.open()
            with db.wrap_errors(self.conn.engine):
                return work(self.conn)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


@dataclass(frozen=True)
class Start:
    """Where a tail starts: resume from `position`; else the notifications after `after`, or
    those from `since`, or the `last` ones."""

    last: int = 10
    since: datetime | None = None
    after: str | None = None  # a notification id (or a unique prefix) of the user's
    position: Position | None = None


def follow(
    read: Reader,
    user_id: str,
    filters: Filters,
    stop: threading.Event,
    *,
    start: Start | None = None,
    live: bool = True,
    idle_timeout: float | None = None,
    on_status: Callable[[str], None] = _quiet,
    on_ready: Callable[[], None] | None = None,
    listener: Listener | None = None,
    broadcasts: Scope | None = None,
    session: Callable[[], sa.Connection] | None = None,
) -> Iterator[tuple[Notification | Broadcast, Position]]:
    """Each notification to show, oldest first, with the position right after it — and, when
    following with a `broadcasts` scope, each broadcast to it as it arrives (ephemeral: no
    backlog, not in the position).

    `on_ready` is called once the start is read: from then on, whatever becomes visible is
    delivered. Ends when `stop` is set, or after `idle_timeout` seconds with nothing to deliver.
    While following, database outages are waited out with backoff (reported through
    `on_status`) and what became visible meanwhile is delivered on reconnect; without `live`
    they raise, as for any other command.

    `session` (PostgreSQL) opens a connection of the reader's own (autocommit, acting as the
    reader): each poll is then one statement on it, where `read` takes a transaction and
    five round trips (store/visibility.read_pushed).
    """
    start = start or Start()

    heard: Mark | None = None  # what broadcasts were visible at the last read

    def begin() -> tuple[Position, Reading]:
        nonlocal heard
        with read() as conn:
            if live and broadcasts is not None:
                heard = ephemeral.mark(conn)
            if start.position is not None:
                return start.position, rest(conn, start.position)
            after = inbox.get(conn, user_id, start.after) if start.after else None
            position, rows = backlog(
                conn, user_id, filters, last=start.last, since=start.since, after=after, page=PAGE
            )
            paged = start.since is not None or after is not None
            return position, Reading(rows, more=paged and len(rows) == PAGE)

    def rest(conn: sa.Connection, position: Position) -> Reading:
        """A page of what is left of a start in the past; after its last, what became visible
        since the start's mark, at once."""
        if position.key is not None:
            page = older(conn, user_id, filters, position, PAGE)
            if len(page) == PAGE:
                return Reading(page, more=True)
        return read_since(conn, user_id, filters, position)

    def read_rest(position: Position) -> Reading:
        with read() as conn:
            return rest(conn, position)

    own = None if session is None else _Session(session)
    pushed = None if session is None else _pushed_query(user_id, filters, broadcasts)

    def poll_pushed(position: Position) -> tuple[Reading, list[Broadcast], Mark | None]:
        assert own is not None and pushed is not None
        reading, recent = own.run(lambda conn: read_pushed(conn, pushed, position))
        if broadcasts is None or heard is None:
            return reading, [], heard
        if not recent:  # none younger than TTL in that snapshot: nothing to show before it
            assert reading.next is not None
            return reading, [], reading.next.mark
        with read() as conn:  # a snapshot of its own, and a mark from it
            mark, news = ephemeral.since(conn, broadcasts, heard)
        return reading, news, mark

    def poll(position: Position) -> tuple[Reading, list[Broadcast], Mark | None]:
        if pushed is not None and position.key is None:
            return poll_pushed(position)
        with read() as conn:  # one snapshot for both
            news: list[Broadcast] = []
            mark = heard
            # PostgreSQL's mark is the snapshot's, whatever the table: taken once for both.
            now = mark_now(conn) if conn.dialect.name == "postgresql" else None
            if broadcasts is not None and heard is not None:
                mark, news = ephemeral.since(conn, broadcasts, heard, now)
            cheap = conn.dialect.name != "postgresql" and position.key is None
            if cheap and not changed_since(conn, position.mark):
                return Reading(), news, mark
            return read_since(conn, user_id, filters, position, now), news, mark

    try:
        if live and listener is not None:
            listener.start()  # before the first read: whatever commits after it wakes us
        begun = patiently(begin, stop, on_status) if live else begin()
        if begun is None:
            return
        position, reading = begun
        if on_ready is not None:
            on_ready()
        pace = _Pace(read, stop, listener, idle_timeout, on_status)
        while True:
            for n in reading.rows:
                position = position.after_delivering(n, n.id in reading.new)
                pace.delivered()
                yield n, position
            if reading.next is not None:
                position = reading.next
            if reading.more:  # the start's next page, without waiting for a wake-up
                paged = functools.partial(read_rest, position)
                more = patiently(paged, stop, on_status) if live else paged()
                if more is None:
                    return
                reading = more
                continue
            if not live:
                return
            polled = pace.next(functools.partial(poll, position))
            if polled is None:
                return
            (reading, news, heard), recovered = polled
            for b in news:
                pace.delivered()
                yield b, position
            if recovered:
                count = len(reading.rows)
                on_status(f"caught up: {count} notification{'s' * (count != 1)} arrived meanwhile")

    finally:
        if own is not None:
            own.close()


def _pushed_query(user_id: str, filters: Filters, broadcasts: Scope | None) -> sa.Select[Any]:
    return pushed_query(user_id, filters, None if broadcasts is None else ephemeral.RECENT)


def _interval(read: Reader) -> float:
    with read() as conn:
        return POLL_INTERVAL.get(conn.dialect.name, 0.1)


def follow_activity(
    read: Reader,
    scope: Scope,
    stop: threading.Event,
    *,
    last: int = 20,
    since: datetime | None = None,
    live: bool = True,
    idle_timeout: float | None = None,
    on_status: Callable[[str], None] = _quiet,
    on_ready: Callable[[], None] | None = None,
    listener: Listener | None = None,
    session: Callable[[], sa.Connection] | None = None,
) -> Iterator[Item]:
    """The activity feed of `scope`: the `last` entries (or those from `since`), oldest first,
    then — `live` — each entry as it becomes visible, exactly once, as `follow` reads
    notifications (a worker's batch wakes the listener once; with a `session`, each read is
    one statement on it)."""
    if live and listener is not None:
        listener.start()
    own = None if session is None else _Session(session)
    pushed = None if session is None else journal.pushed_query(scope)

    def begin() -> tuple[Mark, list[Item]]:
        with read() as conn:
            return journal.latest(conn, scope, last, since, PAGE)

    def rest(mark: Mark, after: Item) -> tuple[Mark, list[Item], bool]:
        """A page of what is left of a start in the past; after its last, what became visible
        since the start's mark, at once (as `follow` reads notifications)."""
        with read() as conn:
            page = journal.older(conn, scope, mark, after, PAGE)
            if len(page) == PAGE:
                return mark, page, True
            following, new = journal.since(conn, scope, mark)
        return following, sorted([*page, *new], key=lambda i: (i.at, i.id)), False

    def poll(mark: Mark) -> tuple[Mark, list[Item]]:
        if own is not None and pushed is not None:
            return own.run(lambda conn: journal.read_pushed(conn, pushed, mark))
        with read() as conn:
            return journal.since(conn, scope, mark)

    try:
        begun = patiently(begin, stop, on_status) if live else begin()
        if begun is None:
            return
        mark, items = begun
        more = since is not None and len(items) == PAGE
        if on_ready is not None:
            on_ready()
        pace = _Pace(read, stop, listener, idle_timeout, on_status)
        while True:
            for item in items:
                pace.delivered()
                yield item
            if more:  # the start's next page, without waiting for a wake-up
                paged = functools.partial(rest, mark, items[-1])
                rested = patiently(paged, stop, on_status) if live else paged()
                if rested is None:
                    return
                mark, items, more = rested
                continue
            if not live:
                return
            polled = pace.next(functools.partial(poll, mark))
            if polled is None:
                return
            (mark, items), recovered = polled
            if recovered:
                count = len(items)
                on_status(f"caught up: {count} item{'s' * (count != 1)} of activity meanwhile")
    finally:
        if own is not None:
            own.close()
