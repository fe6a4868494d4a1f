"""The pipeline in-process on both backends: rules, once per entity, failures and retries."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from humanglue_cli.core import db, pipeline
from humanglue_cli.core.store import events
from tests.helpers import Site, new_id


def test_enrollment_reaches_owner_and_co_instructor_once(site: Site) -> None:
    site.enroll()
    first = pipeline.drain(site.engine)
    again = pipeline.drain(site.engine)
    assert (first.processed, first.notified, again.claimed) == (1, 2, 0)
    rows = site.sql("SELECT user_id, type, data FROM notifications ORDER BY user_id")
    assert {str(r.user_id) for r in rows} == {site.people["ada"], site.people["bob"]}
    assert all(r.type == "enrollment" for r in rows)
    assert site.pending() == 0


def test_completed_reopened_completed_notifies_once_even_after_delete(site: Site) -> None:
    eid = site.enroll()
    for status in ("completed", "active", "completed"):
        site.sql("UPDATE enrollments SET status = :s WHERE id = :i", s=status, i=eid)
        pipeline.drain(site.engine)
        site.sql("DELETE FROM notifications WHERE type = 'course_completion'")
    site.sql("UPDATE enrollments SET status = 'active' WHERE id = :i", i=eid)
    site.sql("UPDATE enrollments SET status = 'completed' WHERE id = :i", i=eid)
    pipeline.drain(site.engine)
    assert site.count("type = 'course_completion'") == 0  # the ledger remembers: still once


def test_events_in_one_batch_for_one_entity_notify_once(site: Site) -> None:
    eid = site.enroll()
    for status in ("completed", "active", "completed"):
        site.sql("UPDATE enrollments SET status = :s WHERE id = :i", s=status, i=eid)
    pipeline.drain(site.engine)
    assert site.count("type = 'course_completion'") == 2  # ada and bob, once each


def test_unprocessable_event_backs_off_then_is_kept_as_failed(site: Site) -> None:
    with site.engine.begin() as conn:
        bad = events.enqueue(conn, "no.such.kind", new_id(), {})
    site.enroll()
    result = pipeline.drain(site.engine)
    assert (result.processed, result.failed) == (1, 1)
    for attempt in range(2, events.MAX_ATTEMPTS + 1):
        site.sql("UPDATE hg_events SET available_at = created_at WHERE id = :i", i=bad)
        assert pipeline.drain(site.engine).failed == 1, attempt
    row = site.sql("SELECT status, attempts, last_error FROM hg_events WHERE id = :i", i=bad)[0]
    assert (row.status, row.attempts) == ("failed", events.MAX_ATTEMPTS)
    assert "unknown event kind" in row.last_error
    assert pipeline.drain(site.engine).claimed == 0  # failed events are not due
    with site.engine.begin() as conn:
        assert events.retry_failed(conn, [bad]) == 1
    assert pipeline.drain(site.engine).failed == 1


def test_backoff_grows_and_is_capped() -> None:
    delays = [events.backoff(n).total_seconds() for n in range(1, 12)]
    assert delays[:4] == [2, 4, 8, 16] and max(delays) == 300 and delays == sorted(delays)


def test_a_database_error_in_a_batch_fails_only_its_culprit(site: Site) -> None:
    # Given a course whose co-instructor's profile is gone (the platform dropped its foreign
    # key), so that notifying them violates notifications' own foreign key
    ghost = new_id()
    if site.backend == "postgres":
        site.sql("ALTER TABLE course_instructors DROP CONSTRAINT course_instructors_user_id_fkey")
        site.sql(
            "INSERT INTO course_instructors VALUES (:c, :u)", c=site.people["other_course"], u=ghost
        )
    else:
        with site.engine.connect() as conn:  # SQLite: checks off for this one connection
            conn.exec_driver_sql("COMMIT")
            conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
            course = site.people["other_course"]
            conn.exec_driver_sql(f"INSERT INTO course_instructors VALUES ('{course}', '{ghost}')")
            conn.exec_driver_sql("PRAGMA foreign_keys = ON")
    # And an enrollment there between two in a healthy course, in one batch
    site.enroll()
    culprit = site.enroll(course=site.people["other_course"])
    site.enroll()
    # When the worker drains
    result = pipeline.drain(site.engine)
    # Then the two others are delivered, and the culprit — only it — failed, with its reason
    assert (result.processed, result.failed) == (2, 1)
    assert site.count("type = 'enrollment'") == 4
    (row,) = site.sql("SELECT entity_id, attempts, last_error FROM hg_events")
    assert (row.entity_id, row.attempts) == (culprit, 1)
    assert "foreign key" in row.last_error.lower()


def test_announcement_fans_out_in_one_statement(site: Site) -> None:
    from humanglue_cli.core import announcements
    from humanglue_cli.core.store import people

    with site.engine.begin() as conn:
        root = people.find_person(conn, "root@example.edu")
        announcements.send(
            conn,
            root,
            announcements.Request(role="student", title="Welcome", message="Term starts Monday"),
        )
    result = pipeline.drain(site.engine)
    assert result.notified == 2
    rows = site.sql("SELECT title, priority FROM notifications")
    assert {(r.title, r.priority) for r in rows} == {("Welcome", "normal")}


def test_course_edit_by_non_instructor_notifies_no_one(site: Site) -> None:
    site.sql(
        "UPDATE courses SET title = 'X', updated_by = :u WHERE id = :c",
        u=site.people["stu"],
        c=site.people["course"],
    )
    site.sql(
        "UPDATE courses SET updated_at = CURRENT_TIMESTAMP, updated_by = :u WHERE id = :c",
        u=site.people["ada"],
        c=site.people["course"],
    )  # bookkeeping only: no event
    result = pipeline.drain(site.engine)
    assert (result.processed, result.notified) == (1, 0)


def test_payment_to_workshop_reaches_its_instructor(site: Site) -> None:
    ws = new_id()
    site.sql(
        "INSERT INTO workshops (id, instructor_id, title) VALUES (:i, :c, 'Clay')",
        i=ws,
        c=site.people["cy"],
    )
    pay = new_id()
    site.sql(
        "INSERT INTO payments (id, user_id, workshop_id, amount_cents, status) "
        "VALUES (:i, :u, :w, 1250, 'succeeded')",
        i=pay,
        u=site.people["sam"],
        w=ws,
    )
    pipeline.drain(site.engine)
    (row,) = site.sql("SELECT user_id, message FROM notifications WHERE type = 'payment'")
    assert str(row.user_id) == site.people["cy"] and "12.50 USD" in row.message
    assert "Clay" in row.message


def test_migrations_leave_an_existing_platform_alone(site: Site) -> None:
    from humanglue_cli.core import migrate

    before = site.sql("SELECT count(*) FROM profiles")[0][0]
    assert migrate.upgrade(site.engine)[0] == migrate.head_revision()
    assert site.sql("SELECT count(*) FROM profiles")[0][0] == before
    assert sa.inspect(site.engine).has_table("hg_events")


def test_event_ids_are_never_reused_after_processing(site: Site) -> None:
    """Ledger keys of course edits and announcements name the event id (SQLite: AUTOINCREMENT)."""
    for title in ("II", "III"):
        site.sql(
            "UPDATE courses SET title = :t, updated_by = :u WHERE id = :c",
            t=title,
            u=site.people["bob"],
            c=site.people["course"],
        )
        pipeline.drain(site.engine)
    assert site.count("type = 'co_instructor_update'") == 2


def test_parallel_drains_deliver_each_event_once(site: Site) -> None:
    """`worker --burst -c N` (pipeline.drain_parallel): threads claim disjoint batches; every
    enrollment reaches its two teachers exactly once, and completions of one entity spread over
    batches still notify once. (SQLite: one writer, so one thread.)"""
    ids = site.enroll_many(600)
    for eid in ids[:100]:
        site.sql("UPDATE enrollments SET status = 'completed' WHERE id = :i", i=eid)
    result = pipeline.drain_parallel(site.engine, 3, limit=25)
    assert (result.processed, result.failed, site.pending()) == (700, 0, 0)
    assert result.notified == 2 * 700
    per_entity = site.sql(
        "SELECT type, data, count(*) AS n FROM notifications GROUP BY type, data, user_id"
    )
    assert len(per_entity) == 2 * 700 and {r.n for r in per_entity} == {1}
    assert site.count("type = 'enrollment'") == 1200
    assert site.count("type = 'course_completion'") == 200


def test_a_parallel_drain_raises_the_first_error_after_every_thread_ends(pg_site: Site) -> None:
    """An outage in one thread stops the others at their next batch; the caller gets it."""
    pg_site.enroll_many(50)
    pg_site.sql("ALTER TABLE hg_events RENAME TO hg_events_gone")
    try:
        with pytest.raises(Exception) as raised:
            pipeline.drain_parallel(pg_site.engine, 2, limit=10)
        assert db.classify(raised.value) is db.Fault.SCHEMA
        assert [t.name for t in threading.enumerate() if t.name.startswith("humanglue-drain")] == []
    finally:
        pg_site.sql("ALTER TABLE hg_events_gone RENAME TO hg_events")
