"""Following a person's notifications: the last few, then each new one as it arrives.

Today this polls. Commit order is not `created_at` order (ENGINEERING.md, live delivery): a
row whose transaction commits late carries a `created_at` earlier than rows already seen. So
every poll looks back `lookback` behind the newest row seen, and a set of the ids already
delivered within that window keeps any row from being delivered twice. The set holds only the
window's ids: whatever falls out of the window is never read again.

The interface — an iterator of `Notification`s that ends when `stop` is set — is what a
push-based follower (LISTEN/NOTIFY, a Redis stream) will keep when it replaces the polling.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TypeVar

import sqlalchemy as sa

from humanglue_cli.core import db
from humanglue_cli.core.backoff import Backoff
from humanglue_cli.core.db import Fault, classify
from humanglue_cli.core.domain import Notification
from humanglue_cli.core.store import notifications as inbox
from humanglue_cli.core.store.notifications import Filters

T = TypeVar("T")
# A read-only connection in a short transaction (Runtime.read: on SQLite it never blocks writers).
Reader = Callable[[], AbstractContextManager[sa.Connection]]

POLL_INTERVAL = 0.15
LOOKBACK = timedelta(seconds=30)


def _quiet(_message: str) -> None:
    pass


def patiently(
    work: Callable[[], T], stop: threading.Event, on_status: Callable[[str], None] = _quiet
) -> T | None:
    """`work()`, retried with backoff while the database is unreachable; None if stopped first."""
    backoff = Backoff("database", say=on_status)
    while not stop.is_set():
        try:
            result = work()
        except Exception as error:
            if classify(error) is not Fault.OUTAGE:
                raise
            stop.wait(backoff.failed(error))
            continue
        backoff.ok()
        return result
    return None


class _Seen:
    """Ids already delivered (or there before the start), forgotten once out of the window."""

    def __init__(self) -> None:
        self._at: dict[str, datetime] = {}

    def add(self, ident: str, at: datetime) -> None:
        self._at[ident] = at

    def __contains__(self, ident: object) -> bool:
        return ident in self._at

    def __len__(self) -> int:
        return len(self._at)

    def forget_before(self, floor: datetime) -> None:
        for ident in [i for i, at in self._at.items() if at < floor]:
            del self._at[ident]


def follow(
    read: Reader,
    user_id: str,
    filters: Filters,
    stop: threading.Event,
    *,
    backlog: int = 10,
    live: bool = True,
    poll_interval: float = POLL_INTERVAL,
    lookback: timedelta = LOOKBACK,
    on_status: Callable[[str], None] = _quiet,
    on_ready: Callable[[], None] | None = None,
) -> Iterator[Notification]:
    """The last `backlog` notifications, oldest first, then (if `live`) each new one.

    `on_ready` is called once the start is read: from then on, whatever arrives is delivered.
    Ends when `stop` is set. While following, database outages are waited out with backoff
    (reported through `on_status`) and what arrived meanwhile is caught up on reconnect;
    without `live` they raise, as for any other command.
    """
    seen = _Seen()

    def start() -> tuple[datetime, list[Notification]]:
        with read() as conn:
            now = db.current_time(conn)
            # What is already there counts as seen, shown or not; read before the backlog so that
            # a row committing in between is either in the backlog or delivered as new.
            for ident, at in inbox.keys_since(conn, user_id, filters, now - lookback):
                seen.add(ident, at)
            return now, inbox.latest(conn, user_id, filters, backlog) if backlog else []

    def poll(since: datetime) -> list[Notification]:
        with read() as conn:
            keys = inbox.keys_since(conn, user_id, filters, since)
            fresh = [ident for ident, _ in keys if ident not in seen]
            return inbox.get_many(conn, user_id, fresh) if fresh else []

    started = patiently(start, stop, on_status) if live else start()
    if started is None:
        return
    newest, items = started
    if on_ready is not None:
        on_ready()
    while True:
        for n in items:
            seen.add(n.id, n.created_at)
            newest = max(newest, n.created_at)
            yield n
        if not live or stop.wait(poll_interval):
            return
        floor = newest - lookback
        seen.forget_before(floor)
        polled = patiently(functools.partial(poll, floor), stop, on_status)
        if polled is None:
            return
        items = polled
