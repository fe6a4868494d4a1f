"""Which change notifies whom (CONTRACT §6), as a table of small pure handlers.

Each handler turns one outbox event plus the context it names (people, courses, workshops,
loaded in bulk by the pipeline) into an `Outcome`: the ledger key that makes it "once per
entity", and the notifications to create. No I/O here; the types are in core/domain.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from humanglue_cli.core.domain import (
    Audience,
    Context,
    Course,
    Draft,
    Event,
    EventKind,
    Needs,
    Outcome,
    Person,
    Unprocessable,
    event_key,
)
from humanglue_cli.core.ids import uuid_or_none


def _ids(*values: Any) -> frozenset[str]:
    """The values that are ids (UUIDs); anything else is left for its handler to reject."""
    return frozenset(i for v in values if v is not None and (i := uuid_or_none(v)) is not None)


def needs(event: Event) -> Needs:
    """The people, courses and workshops an event's handler will look up."""
    p = event.payload
    if not isinstance(p, dict):
        return Needs()
    if event.kind == EventKind.COURSE_UPDATED:
        return Needs(_ids(p.get("updated_by")), _ids(event.entity_id))
    people = _ids(p.get("student_id"), p.get("user_id"))
    return Needs(people, _ids(p.get("course_id")), _ids(p.get("workshop_id")))


def _list(value: Any, name: str) -> list[Any]:
    """A JSON array (or nothing); a string would otherwise be taken letter by letter."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{name} is {type(value).__name__}, not a list")
    return value


def _quote(value: Any, limit: int = 140) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _money(cents: int, currency: str) -> str:
    return f"{cents / 100:,.2f} {currency}"


def _notify(
    rule: str,
    key: str,
    recipients: Sequence[str],
    data: dict[str, Any],
    title: str,
    message: str,
    priority: str = "normal",
) -> Outcome:
    """`rule`'s notification (its type is the rule's name) to each recipient, once."""
    drafts = tuple(
        Draft(uid, rule, title, message, data, priority=priority)
        for uid in dict.fromkeys(recipients)
    )
    return Outcome(rule, key, drafts)


def _course_and_student(e: Event, ctx: Context) -> tuple[Course, Person, dict[str, Any]]:
    course, student = ctx.course(e.payload["course_id"]), ctx.person(e.payload["student_id"])
    return course, student, {"course_id": course.id, "student_id": student.id}


def enrollment(e: Event, ctx: Context) -> Outcome:
    course, student, data = _course_and_student(e, ctx)
    return _notify(
        "enrollment",
        e.entity_id,
        course.instructor_ids,
        {**data, "enrollment_id": e.entity_id},
        title=f"New enrollment in {course.title}",
        message=f"{student.name} enrolled in {course.title}.",
    )


def completion(e: Event, ctx: Context) -> Outcome:
    course, student, data = _course_and_student(e, ctx)
    return _notify(
        "course_completion",
        e.entity_id,
        course.instructor_ids,
        {**data, "enrollment_id": e.entity_id},
        title=f"{student.name} completed {course.title}",
        message=f"{student.name} finished every lesson of {course.title}.",
    )


def registration(e: Event, ctx: Context) -> Outcome:
    ws, person = ctx.workshop(e.payload["workshop_id"]), ctx.person(e.payload["user_id"])
    data = {"workshop_id": ws.id, "user_id": person.id, "registration_id": e.entity_id}
    return _notify(
        "workshop_registration",
        e.entity_id,
        [ws.instructor_id],
        data,
        title=f"New registration for {ws.title}",
        message=f"{person.name} registered for {ws.title}.",
    )


def review(e: Event, ctx: Context) -> Outcome:
    course, student, data = _course_and_student(e, ctx)
    rating = int(e.payload["rating"])
    comment = f": “{_quote(e.payload['comment'])}”" if e.payload.get("comment") else "."
    return _notify(
        "review",
        e.entity_id,
        course.instructor_ids,
        {**data, "review_id": e.entity_id, "rating": rating},
        title=f"New {rating}★ review of {course.title}",
        message=f"{student.name} rated {course.title} {rating}/5{comment}",
        priority="high" if rating <= 2 else "normal",
    )


def question(e: Event, ctx: Context) -> Outcome:
    course, student, data = _course_and_student(e, ctx)
    return _notify(
        "student_question",
        e.entity_id,
        course.instructor_ids,
        {**data, "question_id": e.entity_id},
        title=f"New question in {course.title}",
        message=f"{student.name} asked: “{_quote(e.payload.get('body'))}”",
        priority="high",
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
    recipients: Sequence[str]
    if p.get("course_id"):
        course = ctx.course(p["course_id"])
        data["course_id"], what, recipients = course.id, course.title, course.instructor_ids
    elif p.get("workshop_id"):
        ws = ctx.workshop(p["workshop_id"])
        data["workshop_id"], what, recipients = ws.id, ws.title, (ws.instructor_id,)
    else:
        return Outcome("payment", e.entity_id)  # bought nothing an instructor owns
    return _notify(
        "payment",
        e.entity_id,
        recipients,
        data,
        title=f"Payment received for {what}",
        message=f"{payer.name} paid {_money(cents, currency)} for {what}.",
    )


def course_update(e: Event, ctx: Context) -> Outcome:
    course, editor = ctx.course(e.entity_id), ctx.person(e.payload["updated_by"])
    key = event_key(e.id)
    if editor.id not in course.instructor_ids:
        return Outcome("co_instructor_update", key)  # not one of its instructors: no one to tell
    changed = [str(c) for c in _list(e.payload.get("changed"), "changed")]
    what = ", ".join(c.replace("_", " ") for c in changed) or "details"
    data = {"course_id": course.id, "updated_by": editor.id, "changed": changed}
    others = [uid for uid in course.instructor_ids if uid != editor.id]
    return _notify(
        "co_instructor_update",
        key,
        others,
        data,
        title=f"{editor.name} updated {course.title}",
        message=f"{editor.name} changed the {what} of {course.title}.",
    )


def announcement(e: Event, _ctx: Context) -> Outcome:
    p = e.payload
    audience = Audience(
        user_ids=tuple(str(u) for u in _list(p.get("to"), "to")),
        role=p.get("role"),
        everyone=bool(p.get("all")),
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
    return Outcome("system_announcement", event_key(e.id), broadcast=(audience, draft))


def nobody(_e: Event, _ctx: Context) -> None:
    """Activity that notifies no one: it only reaches the instructors' feeds (core/activity.py)."""
    return None


RULES: dict[str, Callable[[Event, Context], Outcome | None]] = {
    EventKind.ENROLLMENT_CREATED: enrollment,
    EventKind.ENROLLMENT_COMPLETED: completion,
    EventKind.WORKSHOP_REGISTRATION_CREATED: registration,
    EventKind.REVIEW_CREATED: review,
    EventKind.QUESTION_CREATED: question,
    EventKind.PAYMENT_SUCCEEDED: payment,
    EventKind.COURSE_UPDATED: course_update,
    EventKind.ANNOUNCEMENT_SENT: announcement,
    EventKind.CHECKED_IN: nobody,
    EventKind.STUDENT_ACTIVITY: nobody,
}


def apply(event: Event, ctx: Context) -> Outcome | None:
    """The outcome of one event; None when it notifies no one at all (activity only).

    Raises:
        Unprocessable: the event cannot be processed now — an unknown kind, a payload that is
            not a JSON object, something it names that does not exist, or any error of its
            handler (a handler is pure: whatever goes wrong in it is the event's doing).
    """
    handler = RULES.get(event.kind)
    if handler is None:
        raise Unprocessable(f"unknown event kind {event.kind!r}")
    if not isinstance(event.payload, dict):
        raise Unprocessable(
            f"malformed {event.kind} event: its payload is {type(event.payload).__name__}, "
            "not a JSON object"
        )
    try:
        return handler(event, ctx)
    except Unprocessable:
        raise
    except Exception as error:
        raise Unprocessable(f"malformed {event.kind} event: {error!r}") from None
