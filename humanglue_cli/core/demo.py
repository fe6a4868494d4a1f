"""`humanglue demo`: a sample platform of its own, and a minute of its life.

Everything here writes the way the course platform does — plain inserts and updates of its
own tables (CONTRACT §5) — so the capture triggers fire exactly as they would in production;
only the announcement goes through our own `announcements.send`, as an admin's would.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from humanglue_cli.core import announcements
from humanglue_cli.core.domain import Person
from humanglue_cli.core.models import (
    course_instructors,
    course_questions,
    course_reviews,
    courses,
    enrollments,
    payments,
    profiles,
    workshop_registrations,
    workshops,
)

DOMAIN = "example.edu"
OWNER = ("ada", "Ada Lovelace")
CO_INSTRUCTOR = ("grace", "Grace Hopper")
ADMIN = ("team", "HumanGlue Team")
STUDENTS = (
    "Maya Patel",
    "Liam Chen",
    "Sofia Rossi",
    "Noah Okafor",
    "Aiko Tanaka",
    "Mateo Garcia",
    "Zara Ahmed",
    "Elias Berg",
)
COURSES = (("Deep Listening", 4900), ("Embodied Presence", 3900))  # title, price in cents
RENAMED = "Deep Listening: Foundations"
WORKSHOP = ("Listening Circles, live", 1500)
QUESTIONS = (
    "Is there a transcript for the lesson on silence?",
    "How long should the daily practice take?",
    "Can I download the audio exercises for offline use?",
    "What is the difference between active and reflective listening?",
    "Will the live sessions be recorded?",
)
REVIEWS = (
    (5, "Changed how I run meetings."),
    (4, "Great content; the pace is a bit fast."),
    (5, None),
    (2, "The audio in module 2 is hard to follow."),
    (4, "Practical and kind."),
)


def email(handle: str) -> str:
    return f"{handle}@{DOMAIN}"


OWNER_EMAIL = email(OWNER[0])
CO_INSTRUCTOR_EMAIL = email(CO_INSTRUCTOR[0])


def new_database_path(now: datetime | None = None) -> Path:
    """A file that does not exist yet: $XDG_DATA_HOME/humanglue/demo-<UTC timestamp>.db."""
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    folder = Path(data) / "humanglue"
    stamp = f"{(now or datetime.now(UTC)):%Y%m%d-%H%M%S}"
    path, n = folder / f"demo-{stamp}.db", 1
    while path.exists():
        n += 1
        path = folder / f"demo-{stamp}-{n}.db"
    return path


def _id() -> str:
    return str(uuid.uuid4())


@dataclass
class Cast:
    """Who and what the sample platform holds, by id."""

    owner: Person
    co_instructor: Person
    admin: Person
    students: list[Person] = field(default_factory=list)
    courses: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (title, price)
    workshop: tuple[str, str, int] = ("", "", 0)  # id, title, price


def build_platform(engine: sa.Engine) -> Cast:
    """An instructor with a co-instructor, two courses, a workshop, students, an admin."""
    people = [(OWNER, "instructor"), (CO_INSTRUCTOR, "instructor"), (ADMIN, "admin")]
    people += [((name.split()[0].lower(), name), "student") for name in STUDENTS]
    made = [Person(_id(), name, role) for (_, name), role in people]
    cast = Cast(made[0], made[1], made[2], made[3:])
    with engine.begin() as conn:
        conn.execute(
            sa.insert(profiles),
            [
                {"id": p.id, "email": email(handle), "full_name": p.name, "role": p.role}
                for p, ((handle, _), _) in zip(made, people, strict=True)
            ],
        )
        for title, price in COURSES:
            cid = _id()
            cast.courses[cid] = (title, price)
            conn.execute(
                sa.insert(courses).values(id=cid, instructor_id=cast.owner.id, title=title)
            )
        first = next(iter(cast.courses))
        conn.execute(
            sa.insert(course_instructors).values(course_id=first, user_id=cast.co_instructor.id)
        )
        wid = _id()
        cast.workshop = (wid, *WORKSHOP)
        conn.execute(
            sa.insert(workshops).values(
                id=wid, instructor_id=cast.owner.id, title=WORKSHOP[0], course_id=first, capacity=30
            )
        )
    return cast


Action = Callable[[sa.Connection], str | None]


class Simulation:
    """The platform's activity, one step at a time; each step is one transaction.

    The first steps show one of each kind of change; then they are drawn at random (a fixed
    seed by default, so that two demos tell the same story).
    """

    def __init__(self, engine: sa.Engine, cast: Cast, seed: int | None = 7) -> None:
        self.engine, self.cast = engine, cast
        self.rng = random.Random(seed)
        self.active: dict[tuple[str, str], str] = {}  # (student id, course id) -> enrollment
        self.enrolled: set[tuple[str, str]] = set()
        self.unpaid: list[tuple[Person, str]] = []  # (student, course id)
        self.reviewed: set[tuple[str, str]] = set()
        self.registered: set[str] = set()
        self.once: set[str] = set()
        self.opening: list[Action] = [
            self.enroll,
            self.pay,
            self.ask,
            self.review,
            self.register,
            self.complete,
            self.edit_course,
            self.enroll,
            self.announce,
        ]
        self.pool: list[tuple[Action, int]] = [
            (self.enroll, 4),
            (self.pay, 3),
            (self.ask, 2),
            (self.review, 2),
            (self.complete, 2),
            (self.register, 1),
            (self.edit_course, 1),
            (self.announce, 1),
        ]

    def step(self) -> str:
        """Make the next change; returns what happened, for people to read."""
        if self.opening:
            action = self.opening.pop(0)
        else:
            actions, weights = zip(*self.pool, strict=True)
            action = self.rng.choices(actions, weights)[0]
        for attempt in (action, self.enroll, self.ask):
            with self.engine.begin() as conn:
                done = attempt(conn)
            if done:
                return done
        return "the platform is quiet"

    def _title(self, course_id: str) -> str:
        return self.cast.courses[course_id][0]

    def enroll(self, conn: sa.Connection) -> str | None:
        free = [
            (s, c)
            for s in self.cast.students
            for c in self.cast.courses
            if (s.id, c) not in self.enrolled
        ]
        if not free:
            return None
        student, cid = self.rng.choice(free)
        eid = _id()
        conn.execute(sa.insert(enrollments).values(id=eid, course_id=cid, student_id=student.id))
        self.enrolled.add((student.id, cid))
        self.active[(student.id, cid)] = eid
        self.unpaid.append((student, cid))
        return f"{student.name} enrolled in {self._title(cid)}"

    def pay(self, conn: sa.Connection) -> str | None:
        if not self.unpaid:
            return None
        student, cid = self.unpaid.pop(0)
        price = self.cast.courses[cid][1]
        conn.execute(
            sa.insert(payments).values(
                id=_id(), user_id=student.id, course_id=cid, amount_cents=price, status="succeeded"
            )
        )
        return f"{student.name} paid {price / 100:.2f} USD for {self._title(cid)}"

    def ask(self, conn: sa.Connection) -> str | None:
        if not self.enrolled:
            return None
        sid, cid = self.rng.choice(sorted(self.enrolled))
        student = next(s for s in self.cast.students if s.id == sid)
        conn.execute(
            sa.insert(course_questions).values(
                id=_id(), course_id=cid, student_id=sid, body=self.rng.choice(QUESTIONS)
            )
        )
        return f"{student.name} asked a question in {self._title(cid)}"

    def review(self, conn: sa.Connection) -> str | None:
        open_ = sorted(self.enrolled - self.reviewed)
        if not open_:
            return None
        sid, cid = self.rng.choice(open_)
        rating, comment = self.rng.choice(REVIEWS)
        conn.execute(
            sa.insert(course_reviews).values(
                id=_id(), course_id=cid, student_id=sid, rating=rating, comment=comment
            )
        )
        self.reviewed.add((sid, cid))
        student = next(s for s in self.cast.students if s.id == sid)
        return f"{student.name} reviewed {self._title(cid)}: {rating}/5"

    def complete(self, conn: sa.Connection) -> str | None:
        if not self.active:
            return None
        key = self.rng.choice(sorted(self.active))
        eid = self.active.pop(key)
        conn.execute(
            sa.update(enrollments)
            .where(enrollments.c.id == eid)
            .values(status="completed", progress=100, completed_at=sa.func.current_timestamp())
        )
        student = next(s for s in self.cast.students if s.id == key[0])
        return f"{student.name} completed {self._title(key[1])}"

    def register(self, conn: sa.Connection) -> str | None:
        free = [s for s in self.cast.students if s.id not in self.registered]
        if not free:
            return None
        student = self.rng.choice(free)
        wid, title, price = self.cast.workshop
        conn.execute(
            sa.insert(workshop_registrations).values(id=_id(), workshop_id=wid, user_id=student.id)
        )
        conn.execute(
            sa.insert(payments).values(
                id=_id(),
                user_id=student.id,
                workshop_id=wid,
                amount_cents=price,
                status="succeeded",
            )
        )
        self.registered.add(student.id)
        return f"{student.name} registered (and paid) for {title}"

    def edit_course(self, conn: sa.Connection) -> str | None:
        if "edit" in self.once:
            return None
        self.once.add("edit")
        cid = next(iter(self.cast.courses))
        conn.execute(
            sa.update(courses)
            .where(courses.c.id == cid)
            .values(
                title=RENAMED,
                updated_by=self.cast.co_instructor.id,
                updated_at=sa.func.current_timestamp(),
            )
        )
        old, price = self.cast.courses[cid]
        self.cast.courses[cid] = (RENAMED, price)
        return f"{self.cast.co_instructor.name} (co-instructor) renamed {old} to {RENAMED}"

    def announce(self, conn: sa.Connection) -> str | None:
        if "announce" in self.once:
            return None
        self.once.add("announce")
        announcements.send(
            conn,
            self.cast.admin,
            announcements.Request(
                role="instructor",
                title="Scheduled maintenance",
                message="The platform is read-only on Saturday from 02:00 to 02:30 UTC.",
            ),
        )
        return f"{self.cast.admin.name} (admin) sent an announcement to every instructor"
