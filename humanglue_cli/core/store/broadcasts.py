"""Broadcasts (`hg_broadcasts`): ephemeral messages to a course's or workshop's instructors.

Never a notification: a row lives at most TTL (deleted by the next broadcast and by the
workers' heartbeat; never read older), only so that the tails of other processes can read it,
each under its reader's rights. On PostgreSQL sending goes through `hg_broadcast(…)`
(migration 0006), which checks the sender's right and rate and wakes the tails; on SQLite the
same checks are made here, in the write transaction that inserts it.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from humanglue_cli.core import db
from humanglue_cli.core.activity import Scope
from humanglue_cli.core.domain import Broadcast, Person
from humanglue_cli.core.errors import Forbidden
from humanglue_cli.core.models import UTCDateTime, broadcasts, courses, profiles, workshops
from humanglue_cli.core.store.activity import within
from humanglue_cli.core.store.visibility import Mark, journal_mark, journal_new

B = broadcasts.c
TTL = timedelta(minutes=1)
LIMIT = 2000  # characters in one message


def send(
    conn: sa.Connection,
    sender: Person,
    scope: Scope,
    message: str,
    per_minute: int,
) -> float:
    """Send `message` to the instructors of the one course or workshop in `scope`; returns 0,
    or — the sender's rate used up — the seconds until they may send again.

    Raises:
        Forbidden: the sender neither teaches it nor is an admin.
    """
    course = scope.course_ids[0] if scope.course_ids else None
    workshop = scope.workshop_ids[0] if scope.workshop_ids else None
    if conn.dialect.name == "postgresql":
        wait = conn.execute(
            sa.text(
                "SELECT hg_broadcast(CAST(:course AS uuid), CAST(:workshop AS uuid), "
                "CAST(:message AS text), CAST(:rate AS integer))"
            ),
            {"course": course, "workshop": workshop, "message": message, "rate": per_minute},
        ).scalar_one()
        return float(wait)
    now = db.current_time(conn)
    conn.execute(sa.delete(broadcasts).where(B.created_at < now - TTL))
    recent = conn.execute(
        sa.select(sa.func.count(), sa.func.min(B.created_at)).where(B.sender_id == sender.id)
    ).one()
    if recent[0] >= per_minute:
        oldest = UTCDateTime().process_result_value(recent[1], conn.dialect)  # an aggregate
        assert oldest is not None
        return max((oldest + TTL - now).total_seconds(), 0.001)
    conn.execute(
        sa.insert(broadcasts).values(
            course_id=course, workshop_id=workshop, sender_id=sender.id, message=message
        )
    )
    return 0.0


def check_sender(conn: sa.Connection, sender: Person, scope: Scope, teaches: Scope) -> None:
    """Refuse (exit 4) a sender who neither teaches the course or workshop nor is an admin."""
    if sender.role == "admin":
        return
    if set(scope.course_ids) <= set(teaches.course_ids) and set(scope.workshop_ids) <= set(
        teaches.workshop_ids
    ):
        return
    what = "course" if scope.course_ids else "workshop"
    raise Forbidden(f"only the {what}'s instructors or an admin may broadcast to it")


def since(
    conn: sa.Connection, scope: Scope, mark: Mark, now: Mark | None = None
) -> tuple[Mark, list[Broadcast]]:
    """The broadcasts to `scope` that became visible since `mark` and are younger than TTL,
    oldest first, and the next mark (`now`: the mark of `conn`'s snapshot, if the caller took
    it already)."""
    following = journal_mark(conn, broadcasts) if now is None else now
    if scope.empty or following == mark and conn.dialect.name != "postgresql":
        return following, []
    if conn.dialect.name == "postgresql" and not conn.execute(_ANY_RECENT).scalar():
        # Almost always: nothing younger than TTL at all (they are purged within a minute).
        # A tail polls on every worker batch; the full query (its scope, three joins) was
        # half of each poll's time.
        return following, []
    title = sa.func.coalesce(courses.c.title, workshops.c.title).label("title")
    name = sa.func.coalesce(profiles.c.full_name, profiles.c.email).label("sender_name")
    query = (
        sa.select(broadcasts, name, title)
        .select_from(
            broadcasts.outerjoin(profiles, profiles.c.id == B.sender_id)
            .outerjoin(courses, courses.c.id == B.course_id)
            .outerjoin(workshops, workshops.c.id == B.workshop_id)
        )
        .where(
            within(broadcasts, scope),
            B.created_at > db.now_plus(conn, -TTL),
            journal_new(conn, broadcasts, mark),
        )
        .order_by(B.created_at, B.id)
    )
    found = [
        Broadcast(
            int(r.id),
            str(r.course_id) if r.course_id else None,
            str(r.workshop_id) if r.workshop_id else None,
            str(r.sender_id),
            r.sender_name,
            r.message,
            r.created_at,
            r.title,
        )
        for r in conn.execute(query)
    ]
    return following, found


# Whether any broadcast younger than TTL is visible: a follower's cheap look before the query.
RECENT = sa.exists().where(
    B.created_at > sa.func.now() - sa.text(f"interval '{int(TTL.total_seconds())} seconds'")
)
_ANY_RECENT = sa.select(RECENT)


def mark(conn: sa.Connection) -> Mark:
    return journal_mark(conn, broadcasts)


def purge(conn: sa.Connection, every: timedelta) -> int:
    """Delete the broadcasts that would be older than TTL by the next call, `every` from now
    (the workers' heartbeat): none is kept longer than TTL."""
    old = B.created_at < db.now_plus(conn, every - TTL)
    return conn.execute(sa.delete(broadcasts).where(old)).rowcount
