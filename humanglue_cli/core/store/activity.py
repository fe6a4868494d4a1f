"""The activity feed's journal (`hg_activity`): the worker's inserts, the readers' reads.

Readers name the courses and workshops they teach (`taught`) in every query, on both backends;
on PostgreSQL row-level security checks the same (migration 0006).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core.activity import Entry, Item, Scope
from humanglue_cli.core.models import activity, course_instructors, courses, profiles, workshops
from humanglue_cli.core.store.visibility import (
    Mark,
    became_visible,
    journal_mark,
    journal_new,
    marked,
    read_marked,
)

A = activity.c
PAGE = 1000  # entries of a start in the past read at a time (`latest`, `older`)


def record(conn: sa.Connection, entries: Sequence[Entry]) -> int:
    """Journal processed events' entries, in the transaction that processes them."""
    if not entries:
        return 0
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(*pg_record(entries))
        return len(entries)
    rows = [
        {
            "event_id": e.event_id,
            "kind": e.kind,
            "course_id": e.course_id,
            "workshop_id": e.workshop_id,
            "student_id": e.student_id,
            "data": e.data,
            **({"at": e.at} if e.at is not None else {}),
        }
        for e in entries
    ]
    # Rows without `at` take the default: insert them apart (one statement, one column set).
    stamped = [r for r in rows if "at" in r]
    unstamped = [r for r in rows if "at" not in r]
    for part in (stamped, unstamped):
        if part:
            conn.execute(sa.insert(activity), part)
    return len(rows)


def pg_record(entries: Sequence[Entry]) -> tuple[str, dict[str, Any]]:
    """`record`'s statement on PostgreSQL, with its parameters (to run with others at once:
    `db.together`)."""
    return _PG_RECORD, {
        "event_id": [e.event_id for e in entries],
        "kind": [e.kind for e in entries],
        "course_id": [e.course_id for e in entries],
        "workshop_id": [e.workshop_id for e in entries],
        "student_id": [e.student_id for e in entries],
        "data": [json.dumps(e.data, default=datetime.isoformat) for e in entries],
        "at": [e.at for e in entries],
    }


# PostgreSQL: a batch's entries as one binary array per column, unnested by the server (as
# notifications are inserted: store/notifications.py). An entry without `at` takes the
# transaction's time, as the column's default would.
_PG_RECORD = (
    "INSERT INTO hg_activity (event_id, kind, course_id, workshop_id, student_id, data, at)"
    " SELECT e, k, c::uuid, w::uuid, s::uuid, d::jsonb, coalesce(a, now())"
    " FROM unnest(%(event_id)b::bigint[], %(kind)b::text[], %(course_id)b::text[],"
    " %(workshop_id)b::text[], %(student_id)b::text[], %(data)b::text[], %(at)b::timestamptz[])"
    " AS r(e, k, c, w, s, d, a)"
)


def taught(conn: sa.Connection, person_id: str) -> Scope:
    """The courses and workshops `person_id` teaches now, listed."""
    mine = sorted({str(c) for c in conn.execute(_taught_courses(person_id)).scalars()})
    workshop_ids = conn.execute(_taught_workshops(person_id)).scalars()
    return Scope(tuple(mine), tuple(sorted({str(w) for w in workshop_ids})))


def _taught_courses(person_id: str) -> sa.CompoundSelect[Any]:
    """What `person_id` owns or co-teaches (hg_taught_courses() on PostgreSQL)."""
    return sa.union(
        sa.select(courses.c.id).where(courses.c.instructor_id == person_id),
        sa.select(course_instructors.c.course_id).where(course_instructors.c.user_id == person_id),
    )


def _taught_workshops(person_id: str) -> sa.Select[Any]:
    """What `person_id` teaches, also through its course (hg_taught_workshops())."""
    return sa.select(workshops.c.id).where(
        sa.or_(
            workshops.c.instructor_id == person_id,
            workshops.c.course_id.in_(_taught_courses(person_id)),
        )
    )


def within(table: sa.Table, scope: Scope) -> sa.ColumnElement[bool]:
    """`table`'s rows (course_id, workshop_id) in `scope`, in SQL: one query, however often."""
    if scope.teacher is not None:
        return sa.or_(
            table.c.course_id.in_(_taught_courses(scope.teacher)),
            table.c.workshop_id.in_(_taught_workshops(scope.teacher)),
        )
    return sa.or_(
        table.c.course_id.in_(list(scope.course_ids)),
        table.c.workshop_id.in_(list(scope.workshop_ids)),
    )


def _query() -> sa.Select[Any]:
    title = sa.func.coalesce(courses.c.title, workshops.c.title).label("title")
    name = sa.func.coalesce(profiles.c.full_name, profiles.c.email).label("student_name")
    return sa.select(activity, name, title).select_from(
        activity.outerjoin(profiles, profiles.c.id == A.student_id)
        .outerjoin(courses, courses.c.id == A.course_id)
        .outerjoin(workshops, workshops.c.id == A.workshop_id)
    )


def _item(row: Any) -> Item:
    data = json.loads(row.data) if isinstance(row.data, str) else row.data
    return Item(
        int(row.id),
        row.kind,
        str(row.course_id) if row.course_id else None,
        str(row.workshop_id) if row.workshop_id else None,
        str(row.student_id) if row.student_id else None,
        row.student_name,
        row.at,
        data if isinstance(data, dict) else {},
        row.title,
    )


def latest(
    conn: sa.Connection,
    scope: Scope,
    last: int,
    since: datetime | None = None,
    page: int = PAGE,
) -> tuple[Mark, list[Item]]:
    """The `last` entries — or, with `since`, those from then on, the first `page` of them
    (`older` reads the rest) — oldest first, and the mark of what was visible when they were
    read."""
    mark = journal_mark(conn, activity)
    if scope.empty or (last <= 0 and since is None):
        return mark, []
    query = _query().where(within(activity, scope))
    if since is not None:
        ordered = query.where(A.at >= since).order_by(A.at, A.id).limit(page)
        return mark, [_item(r) for r in conn.execute(ordered)]
    newest = query.order_by(A.at.desc(), A.id.desc()).limit(last)
    return mark, [_item(r) for r in reversed(conn.execute(newest).all())]


def older(
    conn: sa.Connection, scope: Scope, mark: Mark, after: Item, page: int = PAGE
) -> list[Item]:
    """The next `page` entries of a start in the past: visible at `mark` (those that became
    visible since come after, as new), after `after` by (at, id), oldest first."""
    key = sa.tuple_(A.at, A.id) > sa.tuple_(
        sa.bindparam(None, after.at, type_=A.at.type),
        sa.bindparam(None, after.id, type_=A.id.type),
    )
    visible = sa.not_(journal_new(conn, activity, mark))
    if conn.dialect.name == "postgresql":
        visible = sa.or_(A.commit_seq.is_(None), visible)
    query = (
        _query()
        .where(within(activity, scope), A.at >= after.at, key, visible)  # `at`: an index bound
        .order_by(A.at, A.id)
        .limit(page)
    )
    return [_item(r) for r in conn.execute(query)]


def since(conn: sa.Connection, scope: Scope, mark: Mark) -> tuple[Mark, list[Item]]:
    """The entries that became visible since `mark`, oldest first, and the next mark."""
    following = journal_mark(conn, activity)
    if scope.empty or following == mark and conn.dialect.name != "postgresql":
        return following, []
    query = _query().where(within(activity, scope), journal_new(conn, activity, mark))
    rows = [_item(r) for r in conn.execute(query)]
    return following, sorted(rows, key=lambda i: (i.at, i.id))


def pushed_query(scope: Scope) -> sa.Select[Any]:
    """PostgreSQL: `since` as one statement (store/visibility.marked), built once per follower
    and run by `read_pushed` on an autocommit connection."""
    return marked(_query().where(within(activity, scope), became_visible(A.commit_seq)))


def read_pushed(conn: sa.Connection, query: sa.Select[Any], mark: Mark) -> tuple[Mark, list[Item]]:
    """`since` in one round trip: the entries that became visible since `mark`, oldest first,
    and the next mark."""
    following, _, rows = read_marked(conn, query, mark)
    return following, sorted((_item(r) for r in rows), key=lambda i: (i.at, i.id))


def expired(before: datetime) -> sa.ColumnElement[bool]:
    """Entries older than `before` (the notification retention)."""
    return A.at < before
