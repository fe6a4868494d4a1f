"""Which change notifies whom (CONTRACT §6), as a table of small pure handlers.

Each handler turns one outbox event plus the context it names (people, courses, workshops,
loaded in bulk by the pipeline) into an `Outcome`: the ledger key that makes it "once per
entity", and the notifications to create. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class Unprocessable(Exception):
    """The event cannot be turned into notifications (yet): retried, then kept as failed."""


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    entity_id: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    role: str


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
    rule: str  # with entity_id: the ledger key, at most one outcome ever per key
    entity_id: str
    drafts: tuple[Draft, ...] = ()
    broadcast: tuple[Audience, Draft] | None = None


@dataclass(frozen=True)
class Needs:
    people: frozenset[str] = frozenset()
    courses: frozenset[str] = frozenset()
    workshops: frozenset[str] = frozenset()


def _ids(*values: Any) -> frozenset[str]:
    return frozenset(str(v) for v in values if v)


def needs(event: Event) -> Needs:
    """The people, courses and workshops an event's handler will look up."""
    p = event.payload
    if event.kind == "course.updated":
        return Needs(_ids(p.get("updated_by")), _ids(event.entity_id))
    people = _ids(p.get("student_id"), p.get("user_id"))
    return Needs(people, _ids(p.get("course_id")), _ids(p.get("workshop_id")))


def _quote(value: Any, limit: int = 140) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _money(cents: int, currency: str) -> str:
    return f"{cents / 100:,.2f} {currency}"


def _to_all(ids: tuple[str, ...] | list[str], **kw: Any) -> tuple[Draft, ...]:
    return tuple(Draft(user_id=uid, **kw) for uid in dict.fromkeys(ids))


def enrollment(e: Event, ctx: Context) -> Outcome:
    course, student = ctx.course(e.payload["course_id"]), ctx.person(e.payload["student_id"])
    data = {"course_id": course.id, "student_id": student.id, "enrollment_id": e.entity_id}
    return Outcome(
        "enrollment",
        e.entity_id,
        _to_all(
            course.instructor_ids,
            type="enrollment",
            data=data,
            title=f"New enrollment in {course.title}",
            message=f"{student.name} enrolled in {course.title}.",
        ),
    )


def completion(e: Event, ctx: Context) -> Outcome:
    course, student = ctx.course(e.payload["course_id"]), ctx.person(e.payload["student_id"])
    data = {"course_id": course.id, "student_id": student.id, "enrollment_id": e.entity_id}
    return Outcome(
        "course_completion",
        e.entity_id,
        _to_all(
            course.instructor_ids,
            type="course_completion",
            data=data,
            title=f"{student.name} completed {course.title}",
            message=f"{student.name} finished every lesson of {course.title}.",
        ),
    )


def registration(e: Event, ctx: Context) -> Outcome:
    ws, person = ctx.workshop(e.payload["workshop_id"]), ctx.person(e.payload["user_id"])
    data = {"workshop_id": ws.id, "user_id": person.id, "registration_id": e.entity_id}
    return Outcome(
        "workshop_registration",
        e.entity_id,
        _to_all(
            [ws.instructor_id],
            type="workshop_registration",
            data=data,
            title=f"New registration for {ws.title}",
            message=f"{person.name} registered for {ws.title}.",
        ),
    )


def review(e: Event, ctx: Context) -> Outcome:
    course, student = ctx.course(e.payload["course_id"]), ctx.person(e.payload["student_id"])
    rating = int(e.payload["rating"])
    comment = f": “{_quote(e.payload['comment'])}”" if e.payload.get("comment") else "."
    data = {
        "course_id": course.id,
        "student_id": student.id,
        "review_id": e.entity_id,
        "rating": rating,
    }
    return Outcome(
        "review",
        e.entity_id,
        _to_all(
            course.instructor_ids,
            type="review",
            data=data,
            title=f"New {rating}★ review of {course.title}",
            message=f"{student.name} rated {course.title} {rating}/5{comment}",
            priority="high" if rating <= 2 else "normal",
        ),
    )


def question(e: Event, ctx: Context) -> Outcome:
    course, student = ctx.course(e.payload["course_id"]), ctx.person(e.payload["student_id"])
    data = {"course_id": course.id, "student_id": student.id, "question_id": e.entity_id}
    return Outcome(
        "student_question",
        e.entity_id,
        _to_all(
            course.instructor_ids,
            type="student_question",
            data=data,
            title=f"New question in {course.title}",
            message=f"{student.name} asked: “{_quote(e.payload.get('body'))}”",
            priority="high",
        ),
    )


def payment(e: Event, ctx: Context) -> Outcome:
    p = e.payload
    payer = ctx.person(p["user_id"])
    cents, currency = int(p["amount_cents"]), str(p.get("currency") or "USD")
    data: dict[str, Any] = {
        "payment_id": e.entity_id,
        "amount_cents": cents,
        "currency": currency,
        "user_id": payer.id,
    }
    if p.get("course_id"):
        course = ctx.course(p["course_id"])
        data["course_id"], what, recipients = course.id, course.title, course.instructor_ids
    elif p.get("workshop_id"):
        ws = ctx.workshop(p["workshop_id"])
        data["workshop_id"], what, recipients = ws.id, ws.title, (ws.instructor_id,)
    else:
        return Outcome("payment", e.entity_id)  # bought nothing an instructor owns
    return Outcome(
        "payment",
        e.entity_id,
        _to_all(
            recipients,
            type="payment",
            data=data,
            title=f"Payment received for {what}",
            message=f"{payer.name} paid {_money(cents, currency)} for {what}.",
        ),
    )


def course_update(e: Event, ctx: Context) -> Outcome:
    course, editor = ctx.course(e.entity_id), ctx.person(e.payload["updated_by"])
    key = f"event:{e.id}"
    if editor.id not in course.instructor_ids:
        return Outcome("co_instructor_update", key)  # not one of its instructors: no one to tell
    changed = [str(c) for c in e.payload.get("changed") or []]
    what = ", ".join(c.replace("_", " ") for c in changed) or "details"
    data = {"course_id": course.id, "updated_by": editor.id, "changed": changed}
    others = [uid for uid in course.instructor_ids if uid != editor.id]
    return Outcome(
        "co_instructor_update",
        key,
        _to_all(
            others,
            type="co_instructor_update",
            data=data,
            title=f"{editor.name} updated {course.title}",
            message=f"{editor.name} changed the {what} of {course.title}.",
        ),
    )


def announcement(e: Event, _ctx: Context) -> Outcome:
    p = e.payload
    audience = Audience(
        user_ids=tuple(p.get("to") or ()), role=p.get("role"), everyone=bool(p.get("all"))
    )
    draft = Draft(
        user_id="",
        type="system_announcement",
        title=str(p["title"]),
        message=str(p["message"]),
        data={"event_id": str(e.id)},
        link=p.get("link"),
        priority=str(p.get("priority") or "normal"),
    )
    return Outcome("system_announcement", f"event:{e.id}", broadcast=(audience, draft))


RULES: dict[str, Callable[[Event, Context], Outcome]] = {
    "enrollment.created": enrollment,
    "enrollment.completed": completion,
    "workshop_registration.created": registration,
    "review.created": review,
    "question.created": question,
    "payment.succeeded": payment,
    "course.updated": course_update,
    "announcement.sent": announcement,
}


def apply(event: Event, ctx: Context) -> Outcome:
    """The outcome of one event. Raises Unprocessable if it cannot be processed now."""
    handler = RULES.get(event.kind)
    if handler is None:
        raise Unprocessable(f"unknown event kind {event.kind!r}")
    try:
        return handler(event, ctx)
    except (KeyError, TypeError, ValueError) as error:
        raise Unprocessable(f"malformed {event.kind} event: {error!r}") from None
