"""The platform's people, courses and workshops: what events and commands name."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import db
from humanglue_cli.core.domain import Context, Course, Needs, Person, Workshop
from humanglue_cli.core.errors import BadInput, NotFound, check_utf8
from humanglue_cli.core.ids import canonical, is_reference, is_uuid
from humanglue_cli.core.models import (
    course_instructors,
    courses,
    enrollments,
    profiles,
    workshop_registrations,
    workshops,
)
from humanglue_cli.core.text import shown

P = profiles.c


def _person(row: Any) -> Person:
    return Person(str(row.id), row.full_name or row.email, row.role, row.email)


def _by_email(conn: sa.Connection, emails: Sequence[str]) -> dict[str, Person]:
    """Each email's profile: the exact match, else the one that matches ignoring case.

    Raises:
        NotFound: an email of no one.
        BadInput: an email that matches several profiles once case is ignored (named).
    """
    wanted = list(dict.fromkeys(check_utf8(e.strip(), "email") for e in emails))
    # The exact ones first, through the emails' unique index; only the rest by lower(email),
    # which reads every profile (no index on the platform's table holds it): 20–70 ms at
    # 100,000 people, paid by every command that names its user.
    exact: dict[str, list[Any]] = {}
    for row in conn.execute(sa.select(profiles).where(P.email.in_(wanted))):
        exact.setdefault(row.email, []).append(row)
    lowered = {e.lower() for e in wanted if e not in exact}
    rows = (
        conn.execute(sa.select(profiles).where(sa.func.lower(P.email).in_(lowered))).all()
        if lowered
        else []
    )
    found: dict[str, Person] = {}
    for email in wanted:
        candidates = exact.get(email) or [r for r in rows if r.email.lower() == email.lower()]
        if not candidates:
            raise NotFound(f"no such user: {shown(email)}")
        if len(candidates) > 1:
            names = " and ".join(shown(r.email) for r in candidates[:3])
            raise BadInput(f"{shown(email)} matches {names} but for case: give one exactly")
        found[email] = _person(candidates[0])
    return found


def find_person(conn: sa.Connection, ref: str) -> Person:
    """A profile by email (see `_by_email`) or id.

    Raises:
        NotFound: no such profile (exit 3).
        BadInput: neither an email nor an id, or an email ambiguous but for case.
    """
    ref = ref.strip()
    if "@" in ref:
        return _by_email(conn, [ref])[ref]
    if not is_uuid(ref):
        raise BadInput(f"not an email or a user id: {shown(ref)}")
    row = conn.execute(sa.select(profiles).where(P.id == canonical(ref))).first()
    if row is None:
        raise NotFound(f"no such user: {ref}")
    return _person(row)


def find_people(conn: sa.Connection, emails: Iterable[str]) -> list[Person]:
    """Profiles for emails, all or nothing (NotFound names the first unknown one)."""
    wanted = list(emails)
    found = _by_email(conn, wanted)
    return list({p.id: p for p in (found[e.strip()] for e in wanted)}.values())


def find_course(conn: sa.Connection, ref: str, seen_by: Person | None = None) -> tuple[str, str]:
    """(id, title) of a course given as people see it: an id, a unique id prefix (8+
    characters), or its exact title — among the courses `seen_by` teaches or takes (an admin:
    all), the same ones on both backends (PostgreSQL's row-level security also enforces it).

    Raises:
        BadInput: empty, or ambiguous (the candidates named).
        NotFound: no such course.
    """
    # On PostgreSQL the transaction has the person's rights: the policies pick the courses
    # (and a person's role may not read enrollments to pick them here).
    seen = _seen(seen_by) if conn.dialect.name != "postgresql" else []
    return _find_titled(conn, courses, "course", ref, seen)


def find_workshop(conn: sa.Connection, ref: str, seen_by: Person | None = None) -> tuple[str, str]:
    """(id, title) of a workshop, as `find_course` finds a course: among those `seen_by`
    teaches (also through its course) or is registered for (an admin: all)."""
    seen = _seen_workshops(seen_by) if conn.dialect.name != "postgresql" else []
    return _find_titled(conn, workshops, "workshop", ref, seen)


def _find_titled(
    conn: sa.Connection,
    table: sa.Table,
    what: str,
    ref: str,
    seen: list[sa.ColumnElement[bool]],
) -> tuple[str, str]:
    text = ref.strip()
    if not text:
        raise BadInput(f"--{what}: give a {what} id (8+ characters of it) or its exact title")
    matches: Sequence[Any] = []
    if is_reference(text):
        key = text.lower()
        cond = (
            table.c.id == canonical(key)
            if len(key) == 36
            else sa.cast(table.c.id, sa.String).like(key + "%")
        )
        query = sa.select(table.c.id, table.c.title).where(cond, *seen)
        matches = conn.execute(query.limit(4)).all()
    if not matches:
        query = sa.select(table.c.id, table.c.title).where(table.c.title == text, *seen)
        matches = conn.execute(query.limit(4)).all()
    if not matches:
        raise NotFound(f"no {what} {shown(text)}")
    if len(matches) > 1:
        listed = ", ".join(f"{str(m.id)[:8]} {shown(m.title, 40)}" for m in matches[:3])
        raise BadInput(f"--{what} {shown(text)} is ambiguous: {listed}; give the id")
    return str(matches[0].id), matches[0].title


def _seen(person: Person | None) -> list[sa.ColumnElement[bool]]:
    """The courses `person` teaches, co-teaches or takes (no condition for an admin)."""
    if person is None or person.role == "admin":
        return []
    return [sa.or_(courses.c.id.in_(_taught(person)), courses.c.id.in_(_taken(person)))]


def _taught(person: Person) -> sa.CompoundSelect[Any]:
    return sa.union(
        sa.select(courses.c.id).where(courses.c.instructor_id == person.id),
        sa.select(course_instructors.c.course_id).where(course_instructors.c.user_id == person.id),
    )


def _taken(person: Person) -> sa.Select[Any]:
    return sa.select(enrollments.c.course_id).where(enrollments.c.student_id == person.id)


def _seen_workshops(person: Person | None) -> list[sa.ColumnElement[bool]]:
    """The workshops `person` teaches (also through its course) or registered for."""
    if person is None or person.role == "admin":
        return []
    registered = sa.select(workshop_registrations.c.workshop_id).where(
        workshop_registrations.c.user_id == person.id
    )
    return [
        sa.or_(
            workshops.c.instructor_id == person.id,
            workshops.c.course_id.in_(_taught(person)),
            workshops.c.id.in_(registered),
        )
    ]


def course_titles(conn: sa.Connection, course_ids: Iterable[str]) -> dict[str, str]:
    """Titles of courses by id (unknown ids, and ids that are no UUID, are left out)."""
    ids = sorted({canonical(i) for i in course_ids if is_uuid(i)})
    if not ids:
        return {}
    query = sa.select(courses.c.id, courses.c.title).where(courses.c.id.in_(ids))
    return {str(r.id): r.title for r in conn.execute(query)}


def load_context(conn: sa.Connection, needs: Needs) -> Context:
    """Everything a batch of events names, in four queries whatever the batch size."""
    ctx = Context()
    q = _context_queries(conn.dialect.name)
    if needs.workshops:
        for w in conn.execute(q.workshops, {"ids": sorted(needs.workshops)}):
            ctx.workshops[str(w.id)] = Workshop(str(w.id), w.title, str(w.instructor_id))
    if needs.courses:
        ids = sorted(needs.courses)
        co: dict[str, list[str]] = {}
        if q.links is not None:  # PostgreSQL reads the co-instructors with their course
            for link in conn.execute(q.links, {"ids": ids}):
                co.setdefault(str(link.course_id), []).append(str(link.user_id))
        for c in conn.execute(q.courses, {"ids": ids}):
            owner = str(c.instructor_id)
            team = co.get(str(c.id), []) if q.links is not None else map(str, c.team or ())
            others = [u for u in team if u != owner]
            ctx.courses[str(c.id)] = Course(str(c.id), c.title, (owner, *others))
    if needs.people:
        for p in conn.execute(q.people, {"ids": sorted(needs.people)}):
            ctx.people[str(p.id)] = _person(p)
    return ctx


@dataclass(frozen=True)
class _ContextQueries:
    workshops: sa.Select[Any]
    links: sa.Select[Any] | None  # None: `courses` has each course's `team`
    courses: sa.Select[Any]
    people: sa.Select[Any]


@functools.cache
def _context_queries(dialect: str) -> _ContextQueries:
    """load_context's statements, built once per dialect (a batch's hot path). PostgreSQL
    reads each course's co-instructors as an array with the course: one round trip less."""
    ci = course_instructors.c
    course = sa.select(courses.c.id, courses.c.title, courses.c.instructor_id)
    links: sa.Select[Any] | None = None
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import aggregate_order_by

        team = (
            sa.select(sa.func.array_agg(aggregate_order_by(ci.user_id, ci.user_id)))
            .where(ci.course_id == courses.c.id)
            .scalar_subquery()
        )
        course = course.add_columns(team.label("team"))
    else:
        links = (
            sa.select(course_instructors)
            .where(db.any_of(dialect, ci.course_id, "ids"))
            .order_by(ci.user_id)
        )
    return _ContextQueries(
        workshops=sa.select(workshops.c.id, workshops.c.title, workshops.c.instructor_id).where(
            db.any_of(dialect, workshops.c.id, "ids")
        ),
        links=links,
        courses=course.where(db.any_of(dialect, courses.c.id, "ids")),
        # Only what a Person holds: converting every profile's created_at cost 5% of a drain.
        people=sa.select(P.id, P.full_name, P.role, P.email).where(db.any_of(dialect, P.id, "ids")),
    )


def lock_recipients(conn: sa.Connection, user_ids: Iterable[str]) -> set[str]:
    """Hold the recipients' profiles against change until commit; return those someone else
    holds (a `SELECT … FOR UPDATE`, an email change) — their notifications must wait.

    Inserting a notification takes this same key-share lock for its foreign key; taking it
    first, without waiting (SKIP LOCKED), means the insert never queues behind the platform.
    Ids of no profile are not "held": their insert fails, and so does their event. SQLite has
    one writer at a time, so nothing can be held there.
    """
    wanted = sorted(set(user_ids))
    if not wanted or conn.dialect.name != "postgresql":
        return set()
    # Through a SECURITY DEFINER function (migration 0004): a row lock needs an UPDATE right,
    # which the worker's role is not given on the platform's profiles.
    locked = sa.text("SELECT id FROM hg_lock_profiles(:ids) AS id").bindparams(
        db.array_of(P.id, wanted, "ids")
    )
    got = {str(i) for i in conn.execute(locked).scalars()}
    missing = [u for u in wanted if u not in got]
    if not missing:
        return set()
    exist = {str(i) for i in conn.execute(sa.select(P.id).where(P.id.in_(missing))).scalars()}
    return exist
