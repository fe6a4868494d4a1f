"""Presence heartbeats: the API the course platform calls (README.md, "Presence").

    from humanglue_cli import presence
    presence.beat(engine, user_id, course_id=course_id, device="phone")      # every ~30 s
    presence.beat_many(engine, [presence.Beat(u, course_id=c) for u, c in batch])  # at scale
    presence.leave(engine, user_id, course_id=course_id, device="phone")     # tab closed

Each call takes an SQLAlchemy Engine (its own transaction, committed) or Connection (the
caller's transaction: nothing is committed here). All are idempotent and write with the
database's clock. A device is online while it beat within the timeout (`timeout`, default
HUMANGLUE_PRESENCE_TIMEOUT's default, 60 s); a person is online while any device is.
`beat_many` writes a whole batch in one statement (PostgreSQL) — the path for many beats a
second; the database reaches over 5,000 beats/s here (bench/presence.py), so there is no Redis
hot path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import sqlalchemy as sa

from humanglue_cli.core.store import presence as store
from humanglue_cli.core.store.presence import Beat

__all__ = ["DEFAULT_TIMEOUT", "Beat", "beat", "beat_many", "leave"]

DEFAULT_TIMEOUT = timedelta(seconds=60)


@contextmanager
def _connection(conn_or_engine: sa.Engine | sa.Connection) -> Iterator[sa.Connection]:
    if isinstance(conn_or_engine, sa.Engine):
        with conn_or_engine.begin() as conn:
            yield conn
    else:
        yield conn_or_engine


def beat(
    conn_or_engine: sa.Engine | sa.Connection,
    user_id: str,
    course_id: str | None = None,
    workshop_id: str | None = None,
    device: str = "",
    status: str = "online",
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """One heartbeat of `user_id`'s `device` in a course or a workshop (exactly one of the two).

    `status` is "online" or "away". A device that was offline or silent past `timeout` joins
    anew (its `joined_at` is now, and today's peak is raised if need be).

    Raises:
        ValueError: neither or both of course_id and workshop_id, or another status.
    """
    beat_many(conn_or_engine, [Beat(user_id, course_id, workshop_id, device, status)], timeout)


def beat_many(
    conn_or_engine: sa.Engine | sa.Connection,
    beats: Iterable[Beat],
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> int:
    """Many heartbeats in one statement (a later beat of the same device wins); returns how
    many devices were written."""
    batch = list(beats)
    for b in batch:
        b.row()  # validated before anything is written
    with _connection(conn_or_engine) as conn:
        return store.beat(conn, batch, timeout)


def leave(
    conn_or_engine: sa.Engine | sa.Connection,
    user_id: str,
    course_id: str | None = None,
    workshop_id: str | None = None,
    device: str | None = "",
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> bool:
    """The device leaves (`device=None`: all of the user's devices there). Returns whether
    the user is still online there on another device."""
    scope = store.scope_of(course_id, workshop_id)
    with _connection(conn_or_engine) as conn:
        return store.leave(conn, str(user_id), scope, device, timeout)
