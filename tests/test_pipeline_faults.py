"""No event can stall the others (issue 6): poison events, malformed rows, platform locks,
crashes between claim and commit, deadlock-free ledger keys, and the ledger's bounds.

In-process against real databases; each test is Given/When/Then.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from humanglue_cli.core import pipeline
from humanglue_cli.core.settings import load_settings
from humanglue_cli.core.store import events, ledger
from tests.helpers import Site, new_id, wait_until


def due_now(site: Site, event_id: int | None = None) -> None:
    """End every back-off and lease (as time passing would)."""
    where = "" if event_id is None else f" WHERE id = {int(event_id)}"
    site.sql(f"UPDATE hg_events SET available_at = created_at{where}")


def drain_until_settled(site: Site, rounds: int = 12) -> None:
    """Drain, end the back-offs, drain again… until nothing is pending."""
    for _ in range(rounds):
        pipeline.drain(site.engine)
        if site.pending() == 0:
            return
        due_now(site)
    raise AssertionError(f"{site.pending()} events still pending after {rounds} rounds")


def event_row(site: Site, event_id: int) -> sa.Row:
    (row,) = site.sql(
        "SELECT status, attempts, last_error FROM hg_events WHERE id = :i", i=event_id
    )
    return row


def poison_notifications(site: Site, when: str) -> None:
    """A platform trigger that makes inserting some notifications fail, always."""
    if site.backend == "postgres":
        site.sql(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF {when} THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$"
        )
        site.sql(
            "CREATE TRIGGER poison BEFORE INSERT ON notifications "
            "FOR EACH ROW EXECUTE FUNCTION poison()"
        )
    else:
        site.sql(
            f"CREATE TRIGGER poison BEFORE INSERT ON notifications WHEN {when} "
            "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
        )


def review(site: Site, rating: int = 4) -> str:
    rid = new_id()
    site.sql(
        "INSERT INTO course_reviews (id, course_id, student_id, rating) VALUES (:i, :c, :s, :r)",
        i=rid,
        c=site.people["course"],
        s=site.people["sam"],
        r=rating,
    )
    return rid


def test_an_insert_that_always_fails_fails_only_its_event(site: Site) -> None:
    # Given reviews whose notifications the platform refuses, between two enrollments
    poison_notifications(site, "NEW.type = 'review'")
    first = site.enroll()
    bad = review(site)
    second = site.enroll()
    # When the worker drains once
    result = pipeline.drain(site.engine)
    # Then both enrollments are delivered, and the review alone failed its first attempt
    assert site.count("type = 'enrollment'") == 4
    assert (result.processed, result.failed) == (2, 1)
    (review_event,) = site.sql("SELECT id FROM hg_events WHERE kind = 'review.created'")
    row = event_row(site, review_event.id)
    assert (row.status, row.attempts) == ("pending", 1) and "poisoned row" in row.last_error
    # And, retried with backoff, it ends failed with its reason; nothing else is touched
    for _ in range(events.MAX_ATTEMPTS):
        due_now(site)
        pipeline.drain(site.engine)
    row = event_row(site, review_event.id)
    assert (row.status, row.attempts) == ("failed", events.MAX_ATTEMPTS)
    assert "poisoned row" in row.last_error
    assert site.count() == 4 and bad and first != second


def test_an_announcement_that_times_out_does_not_hold_up_an_enrollment(pg_site: Site) -> None:
    site = pg_site
    # Given a statement_timeout, and an announcement whose fan-out always outlasts it
    name = sa.make_url(site.url).database
    site.sql(f"ALTER DATABASE \"{name}\" SET statement_timeout = '1s'")
    site.engine.dispose()  # new connections take the setting
    site.sql(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.title = 'Poison' THEN PERFORM pg_sleep(3); END IF; RETURN NEW; END $$"
    )
    site.sql(
        "CREATE TRIGGER slow BEFORE INSERT ON notifications FOR EACH ROW EXECUTE FUNCTION slow()"
    )
    with site.engine.begin() as conn:
        poison = events.enqueue(
            conn,
            "announcement.sent",
            site.people["root"],
            {
                "title": "Poison",
                "message": "m",
                "to": [site.people["ada"]],
                "role": None,
                "all": False,
            },
        )
    site.enroll()
    # When the worker drains
    started = time.monotonic()
    pipeline.drain(site.engine)
    # Then the enrollment is delivered within a few seconds; the announcement failed an attempt
    assert site.count("type = 'enrollment'") == 2
    took = time.monotonic() - started
    print(f"\nenrollment behind a timed-out announcement delivered in {took:.2f}s")
    assert took < 5
    row = event_row(site, poison)
    assert (row.status, row.attempts) == ("pending", 1)
    assert "statement timeout" in row.last_error


def test_an_insert_that_times_out_is_run_three_times_not_once_per_halving(pg_site: Site) -> None:
    site = pg_site
    # Given a statement_timeout, and a course whose notifications' insert always outlasts it
    # (each try counted in a sequence: a timeout rolls back everything but sequences)
    name = sa.make_url(site.url).database
    site.sql(f"ALTER DATABASE \"{name}\" SET statement_timeout = '1s'")
    site.engine.dispose()  # new connections take the setting
    site.sql("CREATE SEQUENCE poison_tries")
    site.sql(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.title LIKE '%Poison%' THEN PERFORM nextval('poison_tries'); "
        "PERFORM pg_sleep(3); END IF; RETURN NEW; END $$"
    )
    site.sql(
        "CREATE TRIGGER slow BEFORE INSERT ON notifications FOR EACH ROW EXECUTE FUNCTION slow()"
    )
    poison = site.enroll(course=site.course("cy", "Poison"))
    behind = site.enroll_many(60)
    # When the worker processes one batch (all of them)
    started = time.monotonic()
    result = pipeline.process_batch(site.engine)
    took = time.monotonic() - started
    # Then everything behind the poison is delivered, and the poison's insert ran three times:
    # with its batch, its piece, alone (halving would run it once per halving, each a timeout)
    print(f"\n60 enrollments behind an insert that times out: delivered in {took:.2f}s")
    assert site.count("type = 'enrollment'") == 2 * len(behind)
    assert (result.processed, result.failed) == (len(behind), 1)
    assert site.sql("SELECT last_value FROM poison_tries")[0][0] == 3
    (row,) = site.sql("SELECT status, attempts, last_error FROM hg_events")
    assert (row.status, row.attempts) == ("pending", 1) and "statement timeout" in row.last_error
    assert poison


@pytest.mark.parametrize("payload", ["null", "[1, 2]", '"text"', "42"])
def test_a_malformed_outbox_row_fails_alone(site: Site, payload: str) -> None:
    # Given a malformed outbox row, written by hand, before an enrollment
    site.sql(
        "INSERT INTO hg_events (kind, entity_id, payload) VALUES ('enrollment.created', 'x', "
        + ("CAST(:p AS jsonb))" if site.backend == "postgres" else ":p)"),
        p=payload,
    )
    site.enroll()
    # When the worker drains, and again after each back-off
    result = pipeline.drain(site.engine)
    # Then the enrollment is delivered at once, and the row fails with its reason
    assert site.count("type = 'enrollment'") == 2 and result.failed == 1
    (bad,) = site.sql("SELECT id FROM hg_events")
    for _ in range(events.MAX_ATTEMPTS):
        due_now(site)
        pipeline.drain(site.engine)
    row = event_row(site, bad.id)
    assert row.status == "failed" and "not a JSON object" in row.last_error


def test_a_row_that_is_not_json_at_all_fails_alone(tmp_path: Path) -> None:
    # SQLite keeps the payload as text: the platform could write anything there.
    site = Site.create(f"sqlite:///{tmp_path / 'hg.db'}", tmp_path, "sqlite")
    try:
        site.sql(
            "INSERT INTO hg_events (kind, entity_id, payload) "
            "VALUES ('enrollment.created', 'x', '{not json')"
        )
        site.enroll()
        result = pipeline.drain(site.engine)
        assert site.count("type = 'enrollment'") == 2 and result.failed == 1
        (row,) = site.sql("SELECT last_error FROM hg_events")
        assert "not a JSON object" in row.last_error
    finally:
        site.close()


@pytest.fixture
def locked_profile(pg_site: Site) -> Iterator[tuple[Site, sa.Connection]]:
    """cy's profile row held by the platform (`SELECT … FOR UPDATE` in an open transaction)."""
    conn = pg_site.engine.connect()
    conn.execute(
        sa.text("SELECT id FROM profiles WHERE id = :i FOR UPDATE"), {"i": pg_site.people["cy"]}
    )
    try:
        yield pg_site, conn
    finally:
        conn.rollback()
        conn.close()


def test_a_locked_profile_sets_its_events_aside_and_the_rest_flow(
    locked_profile: tuple[Site, sa.Connection],
) -> None:
    site, platform = locked_profile
    # Given an enrollment that notifies cy (locked) and one that notifies ada and bob
    site.enroll(course=site.people["other_course"])
    site.enroll()
    # When the worker drains
    started = time.monotonic()
    result = pipeline.drain(site.engine)
    # Then ada and bob have theirs at once, with no lock wait; cy's event waits, attempt refunded
    assert time.monotonic() - started < 1.0
    assert site.count("type = 'enrollment'") == 2 and result.set_aside == 1
    (row,) = site.sql("SELECT attempts, status, last_error FROM hg_events")
    assert (row.status, row.attempts) == ("pending", 0) and "locked" in row.last_error
    # And once the platform lets go, cy's arrives
    platform.rollback()
    due_now(site)
    pipeline.drain(site.engine)
    assert site.count("user_id = :u", u=site.people["cy"]) == 1 and site.pending() == 0


def test_an_email_change_in_flight_does_not_stall_an_announcement_to_others(
    pg_site: Site,
) -> None:
    site = pg_site
    # Given the platform changing cy's email in an open transaction, and an announcement to all
    with site.engine.connect() as platform:
        platform.execute(
            sa.text("UPDATE profiles SET email = 'cy2@example.edu' WHERE id = :i"),
            {"i": site.people["cy"]},
        )
        with site.engine.begin() as conn:
            root = site.people["root"]
            events.enqueue(
                conn,
                "announcement.sent",
                root,
                {"title": "T", "message": "M", "to": [], "role": None, "all": True},
            )
        site.enroll()
        # When the worker drains
        started = time.monotonic()
        result = pipeline.drain(site.engine)
        # Then the enrollment is delivered, and the announcement waits (after one short wait;
        # set aside again if this drain outlasts the second after which it is due again, as it
        # may on a loaded machine)
        assert time.monotonic() - started < 3
        assert site.count("type = 'enrollment'") == 2 and result.set_aside >= 1
        assert site.count("type = 'system_announcement'") == 0
        platform.rollback()
    due_now(site)
    pipeline.drain(site.engine)
    assert site.count("type = 'system_announcement'") == 6  # everyone, once


def test_a_worker_that_dies_between_claim_and_commit_costs_an_attempt(site: Site) -> None:
    # Given three enrollments claimed by a worker that then died (the claim committed, the
    # processing never did)
    site.enroll_many(3)
    with site.engine.begin() as conn:
        assert len(events.claim(conn, 10)) == 3
    # When the lease runs out and a worker drains
    assert pipeline.drain(site.engine).claimed == 0  # leased: not due yet
    due_now(site)
    result = pipeline.drain(site.engine)
    # Then each is delivered once (one crash is forgiven: they go as a batch again)
    assert (result.processed, result.claimed) == (3, 3)
    assert site.count("type = 'enrollment'") == 6 and site.pending() == 0


def test_an_event_that_kills_every_worker_ends_failed(site: Site) -> None:
    # Given an event whose every claim dies before commit (it crashes the worker)
    site.enroll()
    for _ in range(events.MAX_ATTEMPTS):
        with site.engine.begin() as conn:
            assert len(events.claim(conn, 10)) == 1
        due_now(site)
    site.enroll()  # an innocent one behind it
    # When a worker drains
    pipeline.drain(site.engine)
    # Then the killer is kept as failed, saying so, and the innocent is delivered
    (row,) = site.sql("SELECT status, last_error FROM hg_events")
    assert row.status == "failed" and "worker stopped while processing" in row.last_error
    assert site.count("type = 'enrollment'") == 2


def test_a_suspect_is_claimed_alone(site: Site) -> None:
    site.enroll_many(4)
    for _ in range(2):  # claimed twice, and abandoned twice: now a suspect
        with site.engine.begin() as conn:
            first = events.claim(conn, 1)
        due_now(site)
    with site.engine.begin() as conn:
        again = events.claim(conn, 10)
    assert [e.id for e in again] == [first[0].id] and again[0].attempts == 3
    with site.engine.begin() as conn:
        rest = events.claim(conn, 10)
    assert len(rest) == 3 and {e.attempts for e in rest} == {1}


def test_a_worker_claims_a_suspect_alone_and_the_rest_at_once(site: Site) -> None:
    """A worker's own claim (on PostgreSQL one statement, `events.claim_at_once`) leaves a
    suspect to the full claim, which takes it alone; the innocent follow as one batch."""
    site.enroll_many(4)
    for _ in range(2):  # claimed twice, and abandoned twice: now a suspect
        with site.engine.begin() as conn:
            events.claim(conn, 1)
        due_now(site)
    first = pipeline.process_batch(site.engine, 10)
    assert (first.claimed, first.processed) == (1, 1)
    rest = pipeline.process_batch(site.engine, 10)
    assert (rest.claimed, rest.processed) == (3, 3)
    assert pipeline.process_batch(site.engine, 10).claimed == 0
    assert site.count("type = 'enrollment'") == 8 and site.pending() == 0


def test_ledger_keys_go_in_sorted(site: Site) -> None:
    keys = [("enrollment", f"{n:04d}", 1, 1) for n in (3, 1, 2)]
    statements: list[str] = []

    def seen(_c, _cur, statement, params, _ctx, _many):  # type: ignore[no-untyped-def]
        if "hg_ledger" in statement:
            statements.append(json.dumps(params, default=str))

    sa.event.listen(site.engine, "before_cursor_execute", seen)
    try:
        with site.engine.begin() as conn:
            assert ledger.record(conn, keys) == {
                ("enrollment", "0001"),
                ("enrollment", "0002"),
                ("enrollment", "0003"),
            }
    finally:
        sa.event.remove(site.engine, "before_cursor_execute", seen)
    sent = "".join(statements)
    assert sent.index("0001") < sent.index("0002") < sent.index("0003")


def test_the_ledger_is_bounded_without_repeating_a_living_entity(site: Site) -> None:
    # Given completions, a course edit and a deleted enrollment, all notified
    kept, gone = site.enroll(), site.enroll()
    for eid in (kept, gone):
        site.sql("UPDATE enrollments SET status = 'completed' WHERE id = :i", i=eid)
    site.sql(
        "UPDATE courses SET title = 'II', updated_by = :u WHERE id = :c",
        u=site.people["bob"],
        c=site.people["course"],
    )
    pipeline.drain(site.engine)
    site.sql("DELETE FROM enrollments WHERE id = :i", i=gone)
    before = site.sql("SELECT count(*) FROM hg_ledger")[0][0]
    # When cleanup runs long after (the event-keyed row is past the notification retention)
    site.sql("UPDATE hg_ledger SET created_at = '2000-01-01 00:00:00'")
    from humanglue_cli.core import maintenance

    result = maintenance.cleanup(site.engine, load_settings(), dry_run=False)
    # Then the rows of the deleted enrollment and of the course edit are gone…
    assert result["deleted"]["ledger"] == 3  # gone's enrollment + completion, the edit
    assert site.sql("SELECT count(*) FROM hg_ledger")[0][0] == before - 3
    # …and the living enrollment still notifies its completion once only
    site.sql("UPDATE enrollments SET status = 'active' WHERE id = :i", i=kept)
    site.sql("UPDATE enrollments SET status = 'completed' WHERE id = :i", i=kept)
    pipeline.drain(site.engine)
    assert site.count("type = 'course_completion'") == 4  # ada and bob, for each, once


def test_a_platform_lock_held_20s_delays_nobody_else(pg_site: Site) -> None:
    """With a worker running, cy's profile locked for 20 s: ada's notifications keep coming
    within a second; cy's arrives once the lock is gone."""
    from tests.test_worker_embedded import Worker

    site = pg_site
    worker = Worker(site).ready()
    try:
        hold = threading.Event()
        locked = threading.Event()

        def platform() -> None:
            with site.engine.connect() as conn:
                conn.execute(
                    sa.text("SELECT 1 FROM profiles WHERE id = :i FOR UPDATE"),
                    {"i": site.people["cy"]},
                )
                locked.set()
                hold.wait(20)
                conn.rollback()

        holder = threading.Thread(target=platform, daemon=True)
        holder.start()
        assert locked.wait(30)
        site.enroll(course=site.people["other_course"])  # for cy: waits for the lock
        slowest = 0.0
        deadline = time.monotonic() + 18
        n = 0
        while time.monotonic() < deadline:
            before = site.count("type = 'enrollment'")
            site.enroll()
            start = time.monotonic()
            wait_until(
                lambda b=before: site.count("type = 'enrollment'") >= b + 2, timeout=5, every=0.005
            )
            slowest = max(slowest, time.monotonic() - start)
            n += 1
            time.sleep(0.5)
        assert site.count("user_id = :u", u=site.people["cy"]) == 0
        hold.set()
        holder.join()
        wait_until(lambda: site.count("user_id = :u", u=site.people["cy"]) == 1, timeout=10)
        print(f"\n{n} enrollments during a 20 s profile lock: slowest {slowest * 1000:.0f} ms")
        assert slowest < 1.0
        # And the wait is one problem, said once: not a line for each second of the lock
        assert worker.log.count("set aside") == 1, worker.log
    finally:
        worker.stop()


def test_the_processing_lock_waits_no_longer_than_the_lock_timeout(pg_site: Site) -> None:
    """The processing's first statement sets the lock timeout and locks the claimed events in
    one round trip: the setting is in force before the lock waits (a lease run out, another
    worker still holding the rows)."""
    site = pg_site
    site.enroll()
    with site.engine.begin() as conn:
        claimed = events.claim(conn, 10)
    with site.engine.connect() as holder, site.engine.connect() as conn:
        holder.execute(sa.text("SELECT id FROM hg_events FOR UPDATE"))  # held until rollback
        conn.execute(sa.text("SET statement_timeout = '10s'"))  # the test's own bound
        conn.commit()
        begun = time.monotonic()
        with pytest.raises(sa.exc.OperationalError) as raised, conn.begin():
            events.begin_processing(conn, claimed, "300ms")
        assert getattr(raised.value.orig, "sqlstate", None) == "55P03"  # lock_not_available
        assert time.monotonic() - begun < 5
        holder.rollback()
        with conn.begin():
            batch, now = events.begin_processing(conn, claimed, "300ms")
        assert [e.id for e in batch] == [e.id for e in claimed] and now is not None
