"""The rules of CONTRACT §6 as pure functions: events and contexts built by hand, no database.

Each handler: who receives what, with which `data`, title and message, priority and ledger key.
`apply`: whatever is wrong with an event — its kind, its payload, what it names, or an error of
any type in its handler — is `Unprocessable`, never anything else. And the capture triggers of
migrations/versions/0002 and the handlers of `rules.RULES` share their names (`EventKind`).
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from humanglue_cli.core import domain, rules
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
    Workshop,
)

ROOT = Path(__file__).resolve().parent.parent

OWNER = "00000001-0000-4000-8000-000000000001"
CO_1 = "00000001-0000-4000-8000-000000000002"
CO_2 = "00000001-0000-4000-8000-000000000003"
HOST = "00000001-0000-4000-8000-000000000004"  # the workshop's instructor
STUDENT = "00000002-0000-4000-8000-000000000001"
ADMIN = "00000002-0000-4000-8000-000000000002"  # edits courses, teaches none
COURSE = "00000003-0000-4000-8000-000000000001"
WORKSHOP = "00000004-0000-4000-8000-000000000001"
ENTITY = "00000005-0000-4000-8000-000000000001"  # the enrollment, review, payment … itself
UNKNOWN = "0000000f-0000-4000-8000-000000000001"
EVENT_ID = 7

COURSE_TITLE, WORKSHOP_TITLE = "Compilers from Scratch", "Live Debugging Clinic"
STUDENT_NAME, EDITOR_NAME = "Grace Hopper", "Barbara Liskov"
INSTRUCTORS = [OWNER, CO_1, CO_2]


def context() -> Context:
    people = [
        Person(OWNER, "Ada Lovelace", "instructor"),
        Person(CO_1, EDITOR_NAME, "instructor"),
        Person(CO_2, "Edsger Dijkstra", "instructor"),
        Person(HOST, "Alan Kay", "instructor"),
        Person(STUDENT, STUDENT_NAME, "student"),
        Person(ADMIN, "Margaret Hamilton", "admin"),
    ]
    return Context(
        people={p.id: p for p in people},
        courses={COURSE: Course(COURSE, COURSE_TITLE, (OWNER, CO_1, CO_2))},
        workshops={WORKSHOP: Workshop(WORKSHOP, WORKSHOP_TITLE, HOST)},
    )


def entity_of(kind: str) -> str:
    """The entity an event of `kind` is about: a course edit's is the course."""
    return COURSE if kind == EventKind.COURSE_UPDATED else ENTITY


def event(kind: str, payload: Any, entity_id: str = ENTITY, event_id: int = EVENT_ID) -> Event:
    return Event(event_id, kind, entity_id, payload)


# A well-formed payload of each kind, as its trigger (or `notifications send`) writes it.
PAYLOADS: dict[str, dict[str, Any]] = {
    EventKind.ENROLLMENT_CREATED: {"course_id": COURSE, "student_id": STUDENT, "status": "active"},
    EventKind.ENROLLMENT_COMPLETED: {
        "course_id": COURSE,
        "student_id": STUDENT,
        "status": "completed",
    },
    EventKind.WORKSHOP_REGISTRATION_CREATED: {"workshop_id": WORKSHOP, "user_id": STUDENT},
    EventKind.REVIEW_CREATED: {
        "course_id": COURSE,
        "student_id": STUDENT,
        "rating": 4,
        "comment": "Clear and deep.",
    },
    EventKind.QUESTION_CREATED: {
        "course_id": COURSE,
        "student_id": STUDENT,
        "body": "Is there a  recording?",
    },
    EventKind.PAYMENT_SUCCEEDED: {
        "user_id": STUDENT,
        "course_id": COURSE,
        "workshop_id": None,
        "amount_cents": 4900,
        "currency": "EUR",
    },
    EventKind.COURSE_UPDATED: {"updated_by": CO_1, "changed": ["title", "price_cents"]},
    EventKind.ANNOUNCEMENT_SENT: {
        "title": "Maintenance tonight",
        "message": "Back at 02:00 UTC.",
        "link": "/status",
        "priority": "high",
        "to": [STUDENT, OWNER],
        "role": None,
        "all": False,
        "sender_id": ADMIN,
    },
}
# The payload keys without which a handler cannot work.
REQUIRED = {
    EventKind.ENROLLMENT_CREATED: ("course_id", "student_id"),
    EventKind.ENROLLMENT_COMPLETED: ("course_id", "student_id"),
    EventKind.WORKSHOP_REGISTRATION_CREATED: ("workshop_id", "user_id"),
    EventKind.REVIEW_CREATED: ("course_id", "student_id", "rating"),
    EventKind.QUESTION_CREATED: ("course_id", "student_id"),
    EventKind.PAYMENT_SUCCEEDED: ("user_id", "amount_cents"),
    EventKind.COURSE_UPDATED: ("updated_by",),
    EventKind.ANNOUNCEMENT_SENT: ("title", "message"),
}


def outcome_of(kind: str, entity_id: str = ENTITY, **changes: Any) -> Outcome:
    return rules.apply(event(kind, {**PAYLOADS[kind], **changes}, entity_id), context())


def recipients(outcome: Outcome) -> list[str]:
    return [d.user_id for d in outcome.drafts]


def only_draft_shape(outcome: Outcome) -> Draft:
    """The drafts of one outcome differ only by recipient: return the first, checked so."""
    first = outcome.drafts[0]
    for draft in outcome.drafts:
        assert (draft.type, draft.title, draft.message, draft.data, draft.priority, draft.link) == (
            first.type,
            first.title,
            first.message,
            first.data,
            first.priority,
            first.link,
        )
    return first


def text(draft: Draft) -> str:
    return f"{draft.title}\n{draft.message}"


# --- one test per rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "rule", "entity_key"),
    [
        (EventKind.ENROLLMENT_CREATED, "enrollment", "enrollment_id"),
        (EventKind.ENROLLMENT_COMPLETED, "course_completion", "enrollment_id"),
        (EventKind.QUESTION_CREATED, "student_question", "question_id"),
    ],
)
def test_course_rule_tells_every_instructor_once_per_entity(
    kind: str, rule: str, entity_key: str
) -> None:
    outcome = outcome_of(kind)
    assert outcome.key == (rule, ENTITY)
    assert outcome.broadcast is None
    assert recipients(outcome) == INSTRUCTORS
    draft = only_draft_shape(outcome)
    assert draft.type == rule
    assert draft.data == {"course_id": COURSE, "student_id": STUDENT, entity_key: ENTITY}
    assert COURSE_TITLE in text(draft) and STUDENT_NAME in text(draft)
    assert draft.priority == ("high" if rule == "student_question" else "normal")


def test_question_quotes_its_body_on_one_line() -> None:
    draft = only_draft_shape(outcome_of(EventKind.QUESTION_CREATED, body="Is there\na  recording?"))
    assert "“Is there a recording?”" in draft.message


def test_registration_tells_the_workshop_instructor() -> None:
    outcome = outcome_of(EventKind.WORKSHOP_REGISTRATION_CREATED)
    assert outcome.key == ("workshop_registration", ENTITY)
    assert recipients(outcome) == [HOST]
    draft = only_draft_shape(outcome)
    assert draft.type == "workshop_registration"
    assert draft.data == {"workshop_id": WORKSHOP, "user_id": STUDENT, "registration_id": ENTITY}
    assert WORKSHOP_TITLE in text(draft) and STUDENT_NAME in text(draft)
    assert draft.priority == "normal"


@pytest.mark.parametrize(
    ("rating", "priority"), [(1, "high"), (2, "high"), (3, "normal"), (4, "normal"), (5, "normal")]
)
def test_review_carries_its_rating_and_low_ones_are_high_priority(
    rating: int, priority: str
) -> None:
    outcome = outcome_of(EventKind.REVIEW_CREATED, rating=rating)
    assert outcome.key == ("review", ENTITY)
    assert recipients(outcome) == INSTRUCTORS
    draft = only_draft_shape(outcome)
    assert draft.type == "review"
    assert draft.data == {
        "course_id": COURSE,
        "student_id": STUDENT,
        "review_id": ENTITY,
        "rating": rating,
    }
    assert COURSE_TITLE in text(draft) and STUDENT_NAME in text(draft)
    assert f"{rating}/5" in draft.message and "Clear and deep." in draft.message
    assert draft.priority == priority


def test_review_without_comment_and_with_rating_as_text() -> None:
    draft = only_draft_shape(outcome_of(EventKind.REVIEW_CREATED, rating="2", comment=None))
    assert draft.data["rating"] == 2 and draft.priority == "high"
    assert draft.message.endswith("2/5.")


def test_payment_for_a_course_tells_its_instructors() -> None:
    outcome = outcome_of(EventKind.PAYMENT_SUCCEEDED)
    assert outcome.key == ("payment", ENTITY)
    assert recipients(outcome) == INSTRUCTORS
    draft = only_draft_shape(outcome)
    assert draft.type == "payment"
    expected = {"payment_id": ENTITY, "course_id": COURSE, "amount_cents": 4900, "currency": "EUR"}
    assert draft.data.items() >= expected.items()
    assert "workshop_id" not in draft.data
    assert COURSE_TITLE in text(draft) and STUDENT_NAME in text(draft)
    assert "49.00 EUR" in draft.message
    assert draft.priority == "normal"


def test_payment_for_a_workshop_tells_its_instructor() -> None:
    outcome = outcome_of(
        EventKind.PAYMENT_SUCCEEDED,
        course_id=None,
        workshop_id=WORKSHOP,
        amount_cents=125000,
        currency=None,
    )
    assert outcome.key == ("payment", ENTITY)
    assert recipients(outcome) == [HOST]
    draft = only_draft_shape(outcome)
    expected = {
        "payment_id": ENTITY,
        "workshop_id": WORKSHOP,
        "amount_cents": 125000,
        "currency": "USD",
    }
    assert draft.data.items() >= expected.items()
    assert "course_id" not in draft.data
    assert WORKSHOP_TITLE in text(draft) and STUDENT_NAME in text(draft)
    assert "1,250.00 USD" in draft.message


def test_payment_for_neither_notifies_no_one_but_is_recorded() -> None:
    outcome = outcome_of(EventKind.PAYMENT_SUCCEEDED, course_id=None, workshop_id=None)
    assert outcome == Outcome("payment", ENTITY)


def test_course_update_by_an_instructor_tells_the_others() -> None:
    outcome = outcome_of(EventKind.COURSE_UPDATED, entity_id=COURSE)
    assert outcome.key == ("co_instructor_update", f"event:{EVENT_ID}")
    assert recipients(outcome) == [OWNER, CO_2]  # the editor, CO_1, is not told
    draft = only_draft_shape(outcome)
    assert draft.type == "co_instructor_update"
    assert draft.data.items() >= {"course_id": COURSE, "updated_by": CO_1}.items()
    assert COURSE_TITLE in text(draft) and EDITOR_NAME in text(draft)
    assert "title, price cents" in draft.message
    assert draft.priority == "normal"


def test_course_update_by_the_owner_tells_the_co_instructors() -> None:
    outcome = outcome_of(EventKind.COURSE_UPDATED, entity_id=COURSE, updated_by=OWNER, changed=[])
    assert recipients(outcome) == [CO_1, CO_2]
    assert "changed the details of" in only_draft_shape(outcome).message


def test_course_update_by_a_non_instructor_tells_no_one() -> None:
    outcome = outcome_of(EventKind.COURSE_UPDATED, entity_id=COURSE, updated_by=ADMIN)
    assert outcome == Outcome("co_instructor_update", f"event:{EVENT_ID}")


def test_course_edits_are_keyed_by_event_not_by_course() -> None:
    ctx, payload = context(), PAYLOADS[EventKind.COURSE_UPDATED]
    first = rules.apply(event(EventKind.COURSE_UPDATED, payload, COURSE, 1), ctx)
    second = rules.apply(event(EventKind.COURSE_UPDATED, payload, COURSE, 2), ctx)
    assert (first.key, second.key) == (
        ("co_instructor_update", "event:1"),
        ("co_instructor_update", "event:2"),
    )


@pytest.mark.parametrize("kind", [k for k in PAYLOADS if k != EventKind.ANNOUNCEMENT_SENT])
def test_each_recipient_is_told_once(kind: str) -> None:
    ctx = context()
    # Owner repeated among the co-instructors, a co-instructor listed twice.
    ctx.courses[COURSE] = Course(COURSE, COURSE_TITLE, (OWNER, CO_1, OWNER, CO_2, CO_1))
    entity = entity_of(kind)
    outcome = rules.apply(event(kind, PAYLOADS[kind], entity), ctx)
    assert len(recipients(outcome)) == len(set(recipients(outcome)))
    expected = [HOST] if kind == EventKind.WORKSHOP_REGISTRATION_CREATED else INSTRUCTORS
    if kind == EventKind.COURSE_UPDATED:
        expected = [OWNER, CO_2]
    assert recipients(outcome) == expected


def test_announcement_is_one_broadcast_keyed_by_event() -> None:
    outcome = outcome_of(EventKind.ANNOUNCEMENT_SENT, entity_id=ADMIN)
    assert outcome.key == ("system_announcement", f"event:{EVENT_ID}")
    assert outcome.drafts == ()
    assert outcome.broadcast is not None
    audience, draft = outcome.broadcast
    assert audience == Audience(user_ids=(STUDENT, OWNER))
    assert (draft.type, draft.title, draft.message, draft.link, draft.priority) == (
        "system_announcement",
        "Maintenance tonight",
        "Back at 02:00 UTC.",
        "/status",
        "high",
    )
    assert draft.data == {"event_id": str(EVENT_ID)}


@pytest.mark.parametrize(
    ("changes", "audience"),
    [
        ({"to": [], "role": "instructor"}, Audience(role="instructor")),
        ({"to": None, "all": True}, Audience(everyone=True)),
    ],
)
def test_announcement_audience_by_role_or_to_all(
    changes: dict[str, Any], audience: Audience
) -> None:
    outcome = outcome_of(EventKind.ANNOUNCEMENT_SENT, priority=None, link=None, **changes)
    assert outcome.broadcast is not None
    assert outcome.broadcast[0] == audience
    assert (outcome.broadcast[1].priority, outcome.broadcast[1].link) == ("normal", None)


def test_every_rule_names_its_ids_as_strings() -> None:
    for kind in PAYLOADS:
        entity = entity_of(kind)
        outcome = outcome_of(kind, entity_id=entity)
        drafts = list(outcome.drafts) + ([outcome.broadcast[1]] if outcome.broadcast else [])
        for draft in drafts:
            assert draft.type in domain.NOTIFICATION_TYPES and draft.priority in domain.PRIORITIES
            ids = {k: v for k, v in draft.data.items() if k.endswith("_id") or k == "updated_by"}
            assert ids and all(isinstance(v, str) for v in ids.values()), (kind, draft.data)


# --- apply: anything wrong is Unprocessable ----------------------------------------------------


def unprocessable(e: Event, ctx: Context | None = None) -> str:
    """apply's error message for `e`: it must raise Unprocessable and nothing else."""
    with pytest.raises(Unprocessable) as raised:
        rules.apply(e, ctx if ctx is not None else context())
    return str(raised.value)


def test_unknown_kind() -> None:
    assert "unknown event kind 'course.deleted'" in unprocessable(event("course.deleted", {}))


@pytest.mark.parametrize("payload", [None, [], ["course_id"], "course_id", 42, True])
@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_payload_that_is_not_an_object(kind: str, payload: Any) -> None:
    message = unprocessable(event(kind, payload))
    assert kind in message and "not a JSON object" in message
    assert type(payload).__name__ in message


@pytest.mark.parametrize(
    ("kind", "key"), [(k, key) for k, keys in REQUIRED.items() for key in keys]
)
def test_missing_key(kind: str, key: str) -> None:
    payload = {k: v for k, v in PAYLOADS[kind].items() if k != key}
    message = unprocessable(event(kind, payload, entity_of(kind)))
    assert kind in message and repr(key) in message


@pytest.mark.parametrize(
    ("kind", "changes", "says"),
    [
        (EventKind.REVIEW_CREATED, {"rating": "x"}, "ValueError"),
        (EventKind.REVIEW_CREATED, {"rating": None}, "TypeError"),
        (EventKind.REVIEW_CREATED, {"rating": [5]}, "TypeError"),
        (EventKind.REVIEW_CREATED, {"rating": float("inf")}, "OverflowError"),
        (EventKind.PAYMENT_SUCCEEDED, {"amount_cents": "4,900"}, "ValueError"),
        (EventKind.PAYMENT_SUCCEEDED, {"amount_cents": {"value": 4900}}, "TypeError"),
        (EventKind.COURSE_UPDATED, {"changed": 3}, "TypeError"),
        (EventKind.ANNOUNCEMENT_SENT, {"to": 3}, "TypeError"),
        (EventKind.ENROLLMENT_CREATED, {"course_id": [COURSE]}, "not found"),
        (EventKind.ENROLLMENT_CREATED, {"student_id": {"id": STUDENT}}, "not found"),
    ],
)
def test_wrong_type(kind: str, changes: dict[str, Any], says: str) -> None:
    entity = entity_of(kind)
    message = unprocessable(event(kind, {**PAYLOADS[kind], **changes}, entity))
    assert says in message
    assert kind in message or "not found" in message


@pytest.mark.parametrize(
    ("kind", "changes", "entity", "says"),
    [
        (EventKind.ENROLLMENT_CREATED, {"course_id": UNKNOWN}, ENTITY, f"course {UNKNOWN}"),
        (EventKind.ENROLLMENT_COMPLETED, {"student_id": UNKNOWN}, ENTITY, f"profile {UNKNOWN}"),
        (
            EventKind.WORKSHOP_REGISTRATION_CREATED,
            {"workshop_id": UNKNOWN},
            ENTITY,
            f"workshop {UNKNOWN}",
        ),
        (
            EventKind.WORKSHOP_REGISTRATION_CREATED,
            {"user_id": UNKNOWN},
            ENTITY,
            f"profile {UNKNOWN}",
        ),
        (EventKind.REVIEW_CREATED, {"course_id": UNKNOWN}, ENTITY, f"course {UNKNOWN}"),
        (EventKind.QUESTION_CREATED, {"student_id": UNKNOWN}, ENTITY, f"profile {UNKNOWN}"),
        (EventKind.PAYMENT_SUCCEEDED, {"user_id": UNKNOWN}, ENTITY, f"profile {UNKNOWN}"),
        (EventKind.PAYMENT_SUCCEEDED, {"course_id": UNKNOWN}, ENTITY, f"course {UNKNOWN}"),
        (
            EventKind.PAYMENT_SUCCEEDED,
            {"course_id": None, "workshop_id": UNKNOWN},
            ENTITY,
            f"workshop {UNKNOWN}",
        ),
        (EventKind.COURSE_UPDATED, {}, UNKNOWN, f"course {UNKNOWN}"),
        (EventKind.COURSE_UPDATED, {"updated_by": UNKNOWN}, COURSE, f"profile {UNKNOWN}"),
    ],
)
def test_what_it_names_is_not_in_the_context(
    kind: str, changes: dict[str, Any], entity: str, says: str
) -> None:
    message = unprocessable(event(kind, {**PAYLOADS[kind], **changes}, entity))
    assert f"{says} not found" in message


class Surprise(Exception):
    """An exception no one expects from a handler."""


@pytest.mark.parametrize(
    "error",
    [
        Surprise("boom"),
        ZeroDivisionError("division by zero"),
        AttributeError("no .title"),
        RecursionError("too deep"),
        LookupError("lost"),
        UnicodeError("bad text"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_any_error_inside_a_handler_is_unprocessable(
    error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(_e: Event, _ctx: Context) -> Outcome:
        raise error

    monkeypatch.setitem(rules.RULES, EventKind.REVIEW_CREATED, handler)
    with pytest.raises(Unprocessable) as raised:
        rules.apply(event(EventKind.REVIEW_CREATED, {}), context())
    message = str(raised.value)
    assert EventKind.REVIEW_CREATED in message
    assert type(error).__name__ in message and str(error) in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_unprocessable_inside_a_handler_passes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    error = Unprocessable("course 42 not found")

    def handler(_e: Event, _ctx: Context) -> Outcome:
        raise error

    monkeypatch.setitem(rules.RULES, EventKind.ENROLLMENT_CREATED, handler)
    with pytest.raises(Unprocessable) as raised:
        rules.apply(event(EventKind.ENROLLMENT_CREATED, {}), context())
    assert raised.value is error


ODD_VALUES = [None, 0, -1, 2.5, True, "", "x", [], {}, [COURSE], {"id": COURSE}, float("nan")]


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_odd_values_give_an_outcome_or_unprocessable_never_another_error(kind: str) -> None:
    entity = entity_of(kind)
    for key in PAYLOADS[kind]:
        for value in ODD_VALUES:
            e = event(kind, {**PAYLOADS[kind], key: value}, entity)
            try:
                outcome = rules.apply(e, context())
            except Unprocessable:
                continue
            assert isinstance(outcome, Outcome), (key, value)


# --- needs ---------------------------------------------------------------------------------------


def test_needs_names_what_each_handler_looks_up() -> None:
    assert rules.needs(event(EventKind.REVIEW_CREATED, PAYLOADS[EventKind.REVIEW_CREATED])) == (
        Needs(frozenset({STUDENT}), frozenset({COURSE}))
    )
    registration = event(
        EventKind.WORKSHOP_REGISTRATION_CREATED, PAYLOADS[EventKind.WORKSHOP_REGISTRATION_CREATED]
    )
    assert rules.needs(registration) == Needs(frozenset({STUDENT}), workshops=frozenset({WORKSHOP}))
    payment = {**PAYLOADS[EventKind.PAYMENT_SUCCEEDED], "workshop_id": WORKSHOP}
    assert rules.needs(event(EventKind.PAYMENT_SUCCEEDED, payment)) == Needs(
        frozenset({STUDENT}), frozenset({COURSE}), frozenset({WORKSHOP})
    )
    edit = event(EventKind.COURSE_UPDATED, PAYLOADS[EventKind.COURSE_UPDATED], COURSE)
    assert rules.needs(edit) == Needs(frozenset({CO_1}), frozenset({COURSE}))


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_what_needs_names_is_enough_for_the_handler(kind: str) -> None:
    entity = entity_of(kind)
    e = event(kind, PAYLOADS[kind], entity)
    full, wanted = context(), rules.needs(e)
    narrow = Context(
        people={k: v for k, v in full.people.items() if k in wanted.people},
        courses={k: v for k, v in full.courses.items() if k in wanted.courses},
        workshops={k: v for k, v in full.workshops.items() if k in wanted.workshops},
    )
    assert rules.apply(e, narrow) == rules.apply(e, full)


@pytest.mark.parametrize(
    "value", [None, "", "x", "not-a-uuid", 42, 4.2, True, [COURSE], {"id": COURSE}, COURSE[:-1]]
)
def test_needs_leaves_out_what_is_not_an_id(value: Any) -> None:
    payload = {"course_id": value, "student_id": STUDENT, "user_id": value, "workshop_id": value}
    assert rules.needs(event(EventKind.PAYMENT_SUCCEEDED, payload)) == Needs(frozenset({STUDENT}))
    edit = event(EventKind.COURSE_UPDATED, {"updated_by": value}, entity_id="not-a-course")
    assert rules.needs(edit) == Needs()


@pytest.mark.parametrize("payload", [None, [], [COURSE], COURSE, 42, '{"course_id": "x"}'])
@pytest.mark.parametrize("kind", [EventKind.ENROLLMENT_CREATED, EventKind.COURSE_UPDATED])
def test_a_payload_that_is_not_an_object_needs_nothing(kind: str, payload: Any) -> None:
    assert rules.needs(event(kind, payload, COURSE)) == Needs()


# --- triggers and handlers share their names ------------------------------------------------------


def load_migration(stem: str) -> ModuleType:
    """A migration module by file (its name starts with a digit: no import statement takes it)."""
    path = ROOT / "migrations" / "versions" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"hg_migration_{stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_trigger_kind_has_a_handler_and_every_handler_a_source() -> None:
    triggers = load_migration("0002_capture_triggers")
    assert triggers.COURSE_UPDATE  # the course-update trigger, which writes COURSE_UPDATED:
    for upgrade in (triggers.pg_functions, triggers._upgrade_sqlite):
        assert "EventKind.COURSE_UPDATED" in inspect.getsource(upgrade), upgrade.__name__
    written = {c.kind for c in triggers.CAPTURES} | {EventKind.COURSE_UPDATED}
    feed = load_migration("0006_activity_and_broadcasts")  # activity only: notifies nobody
    for upgrade in (feed._upgrade_postgres, feed._upgrade_sqlite):
        for kind in (EventKind.STUDENT_ACTIVITY, EventKind.CHECKED_IN):
            assert f"EventKind.{kind.name}" in inspect.getsource(upgrade), upgrade.__name__
            written.add(kind)
    sources = written | domain.ENQUEUED_BY_CODE

    for kind in [*written, *domain.ENQUEUED_BY_CODE, *rules.RULES]:
        assert isinstance(kind, EventKind), f"{kind!r} is not an EventKind"
    assert not written & domain.ENQUEUED_BY_CODE, "a kind both a trigger and our code write"
    no_handler = sorted(sources - set(rules.RULES))
    no_source = sorted(set(rules.RULES) - sources)
    assert not no_handler, f"events that no rule handles: {no_handler}"
    assert not no_source, f"rules that no trigger or code feeds: {no_source}"
    assert sources == set(rules.RULES)
