"""The instructors' activity feed: what happened in the courses and workshops they teach.

Every platform event that is activity — an enrollment, a completion, a registration or a
check-in, a review, a question, a payment, a `student_activity` row (a lesson completed, a quiz
submitted) — becomes one feed entry, written by the worker in the transaction that processes
the event (core/pipeline.py), so exactly once, and read by commit order like notifications
(store/activity.py). Only what the event's payload says is kept; names and titles are read
when shown, under the reader's rights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from humanglue_cli.core.domain import Event, EventKind
from humanglue_cli.core.ids import uuid_or_none

# Event kind → (the feed's kind, the payload's key of the person, the id's name in `data`,
# the payload's keys copied into `data`).
_KINDS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    EventKind.ENROLLMENT_CREATED: ("enrollment", "student_id", "enrollment_id", ("status",)),
    EventKind.ENROLLMENT_COMPLETED: ("completion", "student_id", "enrollment_id", ()),
    EventKind.WORKSHOP_REGISTRATION_CREATED: (
        "workshop_registration",
        "user_id",
        "registration_id",
        (),
    ),
    EventKind.CHECKED_IN: ("check_in", "user_id", "registration_id", ("checked_in_at",)),
    EventKind.REVIEW_CREATED: ("review", "student_id", "review_id", ("rating", "comment")),
    EventKind.QUESTION_CREATED: ("question", "student_id", "question_id", ("body",)),
    EventKind.PAYMENT_SUCCEEDED: (
        "payment",
        "user_id",
        "payment_id",
        ("amount_cents", "currency"),
    ),
    EventKind.STUDENT_ACTIVITY: ("", "student_id", "activity_id", ("details",)),
}
# The kinds a feed shows (the `activity_type` of student_activity rows come on top).
KINDS = tuple(k for k, *_ in _KINDS.values() if k)


@dataclass(frozen=True)
class Entry:
    """A feed entry as the worker records it."""

    event_id: int
    kind: str
    course_id: str | None
    workshop_id: str | None
    student_id: str | None
    data: dict[str, Any]
    at: datetime | None


def entry(event: Event) -> Entry | None:
    """The feed entry of a processed event; None if it is no activity (a course edit, an
    announcement) or names no course or workshop (a payment for nothing an instructor owns)."""
    spec = _KINDS.get(event.kind)
    p = event.payload
    if spec is None or not isinstance(p, dict):
        return None
    kind, person_key, id_name, copied = spec
    if not kind:  # a student_activity row: its own type
        kind = " ".join(str(p.get("activity_type") or "").split())[:100] or "activity"
    course_id, workshop_id = _uuid(p.get("course_id")), _uuid(p.get("workshop_id"))
    if course_id is None and workshop_id is None:
        return None
    data = {id_name: event.entity_id, **{k: p.get(k) for k in copied if k in p}}
    return Entry(
        event.id,
        kind,
        course_id,
        None if course_id else workshop_id,
        _uuid(p.get(person_key)),
        data,
        event.created_at,
    )


def _uuid(value: Any) -> str | None:
    return None if value is None else uuid_or_none(value)


@dataclass(frozen=True)
class Item:
    """A feed entry as a reader sees it; `to_json` is CONTRACT §3's ACTIVITY."""

    id: int
    kind: str
    course_id: str | None
    workshop_id: str | None
    student_id: str | None
    student_name: str | None
    at: datetime
    data: Mapping[str, Any]
    title: str | None  # the course's or workshop's, as the reader may see it

    def to_json(self) -> dict[str, Any]:
        scope = (
            {"course_id": self.course_id}
            if self.course_id or not self.workshop_id
            else {"workshop_id": self.workshop_id}
        )
        return {
            "kind": self.kind,
            **scope,
            "student_id": self.student_id,
            "student_name": self.student_name,
            "at": self.at.isoformat(),
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class Scope:
    """The courses and workshops whose activity (or broadcasts) a reader sees: those given,
    or — `teacher` — whatever that person teaches at the time of each read (a course or a
    workshop added while following comes along)."""

    course_ids: tuple[str, ...] = ()
    workshop_ids: tuple[str, ...] = ()
    teacher: str | None = None

    @property
    def empty(self) -> bool:
        return not self.course_ids and not self.workshop_ids and self.teacher is None
