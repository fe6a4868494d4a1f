"""Reads of the platform's own tables: people, courses, workshops (the rules' context)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core.errors import BadInput, NotFound
from humanglue_cli.core.models import course_instructors, courses, profiles, workshops
from humanglue_cli.core.rules import Context, Course, Needs, Person, Workshop


def _person(row: Any) -> Person:
    return Person(str(row.id), row.full_name or row.email, row.role)


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def find_person(conn: sa.Connection, ref: str) -> Person:
    """A profile by email or id. Raises NotFound (exit 3) or BadInput for a malformed ref."""
    ref = ref.strip()
    if "@" in ref:
        cond = sa.func.lower(profiles.c.email) == ref.lower()
    elif is_uuid(ref):
        cond = profiles.c.id == str(uuid.UUID(ref))
    else:
        raise BadInput(f"not an email or a user id: {ref!r}")
    row = conn.execute(sa.select(profiles).where(cond)).first()
    if row is None:
        raise NotFound(f"no such user: {ref}")
    return _person(row)


def find_people(conn: sa.Connection, emails: Iterable[str]) -> list[Person]:
    """Profiles for emails, all or nothing: NotFound names the first unknown one."""
    wanted = [e.strip().lower() for e in emails]
    rows = conn.execute(
        sa.select(profiles).where(sa.func.lower(profiles.c.email).in_(wanted))
    ).all()
    by_email = {r.email.lower(): r for r in rows}
    for e in wanted:
        if e not in by_email:
            raise NotFound(f"no such user: {e}")
    return [_person(by_email[e]) for e in dict.fromkeys(wanted)]


def load_context(conn: sa.Connection, needs: Needs) -> Context:
    """Everything a batch of events names, in four queries whatever the batch size."""
    ctx = Context()
    if needs.workshops:
        for w in conn.execute(
            sa.select(workshops.c.id, workshops.c.title, workshops.c.instructor_id).where(
                workshops.c.id.in_(sorted(needs.workshops))
            )
        ):
            ctx.workshops[str(w.id)] = Workshop(str(w.id), w.title, str(w.instructor_id))
    if needs.courses:
        ids = sorted(needs.courses)
        co: dict[str, list[str]] = {}
        for link in conn.execute(
            sa.select(course_instructors)
            .where(course_instructors.c.course_id.in_(ids))
            .order_by(course_instructors.c.user_id)
        ):
            co.setdefault(str(link.course_id), []).append(str(link.user_id))
        for c in conn.execute(
            sa.select(courses.c.id, courses.c.title, courses.c.instructor_id).where(
                courses.c.id.in_(ids)
            )
        ):
            owner = str(c.instructor_id)
            others = [u for u in co.get(str(c.id), []) if u != owner]
            ctx.courses[str(c.id)] = Course(str(c.id), c.title, (owner, *others))
    if needs.people:
        for p in conn.execute(sa.select(profiles).where(profiles.c.id.in_(sorted(needs.people)))):
            ctx.people[str(p.id)] = _person(p)
    return ctx
