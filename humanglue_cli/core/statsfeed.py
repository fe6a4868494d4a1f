"""`humanglue stats`: which courses and workshops a reader sees, read once or followed.

Following redraws only when a figure changed, and at most `MAX_REDRAWS` times a second
however fast events come: after each redraw it waits out the rest of the quarter second
before reading again, so a burst of a thousand enrollments costs a few reads, not a thousand.
It reads again when the activity journal signals a worker's batch (PostgreSQL's LISTEN on
`hg_activity`, migration 0006), and every `POLL` seconds in any case: presence comes and goes
by the clock (a device that stops beating goes offline with no write at all), and the
platform's plain-SQL writes count in the views before any worker has seen them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from humanglue_cli.core.domain import Person
from humanglue_cli.core.errors import NotFound
from humanglue_cli.core.store import activity, people
from humanglue_cli.core.store import stats as views
from humanglue_cli.core.tail import patiently
from humanglue_cli.core.wakeup import Listener

T = TypeVar("T")

MAX_REDRAWS = 4  # a second
POLL = {"postgresql": 1.0, "sqlite": 0.25}  # seconds between reads without a wake-up
DAYS = 14  # of history, for the sparklines


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True)
class Target:
    """What a reader asked for: one course, one workshop, or (neither) all they teach."""

    course: str | None = None
    workshop: str | None = None


@dataclass(frozen=True)
class Chosen:
    """The ids read: None means "every one the reader may see" (an admin)."""

    course_ids: tuple[str, ...] | None
    workshop_ids: tuple[str, ...] | None
    where: str  # what it is, for status lines


def choose(conn: sa.Connection, person: Person, target: Target) -> Chosen:
    """The courses and workshops `person` reads the stats of.

    Raises:
        BadInput: an empty or ambiguous reference.
        NotFound: no such course or workshop, or one `person` does not teach (CONTRACT §8:
            the two are indistinguishable).
    """
    admin = person.role == "admin"
    taught = None if admin else activity.taught(conn, person.id)
    if target.course is not None:
        course_id, title = people.find_course(conn, target.course, seen_by=person)
        if taught is not None and course_id not in taught.course_ids:
            raise NotFound(f"no course {target.course!r} among those you teach")
        return Chosen((course_id,), (), title)
    if target.workshop is not None:
        workshop_id, title = people.find_workshop(conn, target.workshop, seen_by=person)
        if taught is not None and workshop_id not in taught.workshop_ids:
            raise NotFound(f"no workshop {target.workshop!r} among those you teach")
        return Chosen((), (workshop_id,), title)
    if taught is None:
        return Chosen(None, None, "every course and workshop")
    return Chosen(taught.course_ids, taught.workshop_ids, "the courses and workshops you teach")


def items(conn: sa.Connection, chosen: Chosen) -> list[dict[str, Any]]:
    """CONTRACT §8's items: the courses by title, then the workshops by title."""
    return views.courses(conn, chosen.course_ids) + views.workshops(conn, chosen.workshop_ids)


@dataclass(frozen=True)
class Snapshot:
    """The items, and (when asked) the last `DAYS` days of each, per day in the display zone."""

    items: list[dict[str, Any]]
    days: dict[str, dict[str, list[int]]]  # id -> {"enrollment"|"completion"|"revenue": [...]}


def snapshot(conn: sa.Connection, chosen: Chosen, tz: Any = UTC, history: bool = False) -> Snapshot:
    found = items(conn, chosen)
    if not history:
        return Snapshot(found, {})
    today = datetime.now(tz).date()
    first = today - timedelta(days=DAYS - 1)
    since = datetime.combine(first, datetime.min.time(), tzinfo=tz)
    course_ids = [i["course_id"] for i in found if "course_id" in i]
    workshop_ids = [i["workshop_id"] for i in found if "workshop_id" in i]
    days: dict[str, dict[str, list[int]]] = {}
    for key, events in views.history(conn, course_ids, workshop_ids, since).items():
        series = days.setdefault(key, {})
        for what, at, amount in events:
            index = (at.astimezone(tz).date() - first).days
            if 0 <= index < DAYS:
                series.setdefault(what, [0] * DAYS)[index] += amount
    return Snapshot(found, days)


def follow(
    read: Callable[[], T],
    stop: threading.Event,
    *,
    poll: float,
    listener: Listener | None = None,
    idle_timeout: float | None = None,
    on_status: Callable[[str], None] = _quiet,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """`read()` now, then again on each wake-up or `poll`; each result that differs from the
    one before is yielded, at most MAX_REDRAWS times a second. Ends when `stop` is set, or
    after `idle_timeout` seconds without a change; an unreachable database is waited for."""
    if listener is not None:
        listener.start()
    last: T | None = None
    drawn = quiet_since = clock()
    first = True
    while not stop.is_set():
        value = patiently(read, stop, on_status)
        if value is None:
            return
        if first or value != last:
            first, last = False, value
            yield value
            drawn = quiet_since = clock()
        elif idle_timeout is not None and clock() - quiet_since >= idle_timeout:
            return
        wait = poll
        if idle_timeout is not None:
            wait = max(0.0, min(wait, idle_timeout - (clock() - quiet_since)))
        if listener is not None:
            listener.wait(wait)
        else:
            stop.wait(wait)
        rest = 1.0 / MAX_REDRAWS - (clock() - drawn)
        if rest > 0:  # however soon it was woken: the next read waits out the quarter second
            stop.wait(rest)
