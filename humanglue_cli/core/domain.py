"""The domain's vocabulary: events, the people and things they name, and what they yield.

Plain data, no I/O. `EventKind` is the name shared by the capture triggers that write an event
(migrations/versions/0002_capture_triggers.py) and the rule that handles it (core/rules.py);
tests/test_rules.py checks that each trigger's kind has a rule and each rule a source.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

NOTIFICATION_TYPES = (
    "enrollment",
    "workshop_registration",
    "course_completion",
    "review",
    "student_question",
    "payment",
    "system_announcement",
    "co_instructor_update",
)
PRIORITIES = ("low", "normal", "high", "urgent")
ROLES = ("student", "instructor", "admin")


class EventKind(enum.StrEnum):
    """What an outbox row says happened."""

    ENROLLMENT_CREATED = "enrollment.created"
    ENROLLMENT_COMPLETED = "enrollment.completed"
    WORKSHOP_REGISTRATION_CREATED = "workshop_registration.created"
    REVIEW_CREATED = "review.created"
    QUESTION_CREATED = "question.created"
    PAYMENT_SUCCEEDED = "payment.succeeded"
    COURSE_UPDATED = "course.updated"
    ANNOUNCEMENT_SENT = "announcement.sent"  # written by `notifications send`, not a trigger
    # Activity only (migration 0006): in instructors' feeds, never a notification.
    CHECKED_IN = "workshop_registration.checked_in"
    STUDENT_ACTIVITY = "student_activity.created"


ENQUEUED_BY_CODE = frozenset({EventKind.ANNOUNCEMENT_SENT})


EVENT_KEY_PREFIX = "event:"


def event_key(event_id: int) -> str:
    """The ledger key of a rule that fires once per event (course edits, announcements)."""
    return f"{EVENT_KEY_PREFIX}{event_id}"


class Unprocessable(Exception):
    """The event cannot be turned into notifications (yet): retried, then kept as failed."""


@dataclass(frozen=True)
class Event:
    """An outbox row as claimed: `attempts` counts this one."""

    id: int
    kind: str
    entity_id: str
    payload: Any  # a JSON object when well-formed; the rules check it
    attempts: int = 1
    created_at: datetime | None = None  # when the platform's change happened


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    role: str
    email: str = ""


@dataclass(frozen=True)
class Course:
    id: str
    title: str
    instructor_ids: tuple[str, ...]  # the owner first, then co-instructors


@dataclass(frozen=True)
class Workshop:
    id: str
    title: str
    instructor_id: str


@dataclass
class Context:
    """What a batch of events refers to, by id."""

    people: dict[str, Person] = field(default_factory=dict)
    courses: dict[str, Course] = field(default_factory=dict)
    workshops: dict[str, Workshop] = field(default_factory=dict)

    def person(self, person_id: Any) -> Person:
        found = self.people.get(str(person_id))
        if found is None:
            raise Unprocessable(f"profile {person_id} not found")
        return found

    def course(self, course_id: Any) -> Course:
        found = self.courses.get(str(course_id))
        if found is None:
            raise Unprocessable(f"course {course_id} not found")
        return found

    def workshop(self, workshop_id: Any) -> Workshop:
        found = self.workshops.get(str(workshop_id))
        if found is None:
            raise Unprocessable(f"workshop {workshop_id} not found")
        return found


@dataclass(frozen=True)
class Needs:
    """The ids a batch's rules will look up (loaded in bulk before they run)."""

    people: frozenset[str] = frozenset()
    courses: frozenset[str] = frozenset()
    workshops: frozenset[str] = frozenset()

    @staticmethod
    def merge(all_needs: list[Needs]) -> Needs:
        return Needs(
            frozenset().union(*(n.people for n in all_needs)),
            frozenset().union(*(n.courses for n in all_needs)),
            frozenset().union(*(n.workshops for n in all_needs)),
        )


@dataclass(frozen=True)
class Draft:
    """A notification to create for one user."""

    user_id: str
    type: str
    title: str
    message: str
    data: dict[str, Any]
    link: str | None = None
    priority: str = "normal"


@dataclass(frozen=True)
class Audience:
    """Recipients chosen in the database, set-based (announcements to many)."""

    user_ids: tuple[str, ...] = ()
    role: str | None = None
    everyone: bool = False


@dataclass(frozen=True)
class Outcome:
    """What one event yields. (rule, entity_id) is its ledger key: at most one outcome ever."""

    rule: str
    entity_id: str
    drafts: tuple[Draft, ...] = ()
    broadcast: tuple[Audience, Draft] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.entity_id)


@dataclass(frozen=True)
class Notification:
    """A notification as stored; `to_json` is CONTRACT §3's NOTIFICATION."""

    id: str
    user_id: str
    type: str
    title: str
    message: str
    data: Mapping[str, Any]
    link: str | None
    priority: str
    read_at: datetime | None
    created_at: datetime

    @property
    def read(self) -> bool:
        return self.read_at is not None

    @property
    def course_id(self) -> str | None:
        value = self.data.get("course_id")
        return str(value) if value else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "type": self.type,
            "title": self.title,
            "message": self.message,
            "data": dict(self.data),
            "link": self.link,
            "priority": self.priority,
            "read": self.read,
            "read_at": self.read_at.isoformat() if self.read_at else None,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Broadcast:
    """A broadcast as a tail shows it; `to_json` is CONTRACT §3's shape."""

    id: int
    course_id: str | None
    workshop_id: str | None
    sender_id: str
    sender_name: str | None
    message: str
    at: datetime
    title: str | None  # the course's or workshop's

    def to_json(self) -> dict[str, Any]:
        scope = (
            {"course_id": self.course_id} if self.course_id else {"workshop_id": self.workshop_id}
        )
        return {
            "type": "broadcast",
            "message": self.message,
            **scope,
            "sender_id": self.sender_id,
            "at": self.at.isoformat(),
        }
