"""`humanglue activity` (the instructors' feed) and `humanglue broadcast`, as real processes,
on both backends; on PostgreSQL also through personal logins (row-level security)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from humanglue_cli.core import pipeline, runner
from tests import test_tail
from tests.helpers import Site, email, new_id
from tests.test_security import grant, on_login, raw, refused

tails = test_tail.tails
Tail = test_tail.Tail


class Activity(Tail):
    COMMAND = ("activity", "--follow", "--json")


COURSE_KINDS = {"enrollment", "completion", "review", "question", "payment", "lesson_completed"}
WORKSHOP_KINDS = {"workshop_registration", "check_in"}


def workshop(site: Site, owner: str, title: str) -> str:
    wid = new_id()
    site.sql(
        "INSERT INTO workshops (id, instructor_id, title) VALUES (:i, :o, :t)",
        i=wid,
        o=site.people[owner],
        t=title,
    )
    return wid


def happen(site: Site, student: str = "stu", course: str | None = None) -> dict[str, str]:
    """One of each kind of activity in `course` (ada's by default), in plain SQL; returns the
    ids by kind."""
    course = course or site.people["course"]
    who = site.people[student]
    ids = {k: new_id() for k in ("enrollment", "review", "question", "payment", "lesson")}
    enrollment = site.enroll(student, course)
    ids["enrollment"] = enrollment
    site.sql("UPDATE enrollments SET status = 'completed' WHERE id = :i", i=enrollment)
    site.sql(
        "INSERT INTO course_reviews (id, course_id, student_id, rating, comment) "
        "VALUES (:i, :c, :s, 2, 'too fast')",
        i=ids["review"],
        c=course,
        s=who,
    )
    site.sql(
        "INSERT INTO course_questions (id, course_id, student_id, body) "
        "VALUES (:i, :c, :s, 'why?')",
        i=ids["question"],
        c=course,
        s=who,
    )
    site.sql(
        "INSERT INTO payments (id, user_id, course_id, amount_cents, status) "
        "VALUES (:i, :s, :c, 4900, 'succeeded')",
        i=ids["payment"],
        c=course,
        s=who,
    )
    site.sql(
        "INSERT INTO student_activity (id, student_id, course_id, activity_type, details) "
        "VALUES (:i, :s, :c, 'lesson_completed', :d)",
        i=ids["lesson"],
        c=course,
        s=who,
        d='{"lesson": 3}',
    )
    return ids


def attend(site: Site, workshop_id: str, student: str = "stu") -> str:
    rid = new_id()
    site.sql(
        "INSERT INTO workshop_registrations (id, workshop_id, user_id) VALUES (:i, :w, :u)",
        i=rid,
        w=workshop_id,
        u=site.people[student],
    )
    site.sql(
        "UPDATE workshop_registrations SET checked_in_at = CURRENT_TIMESTAMP WHERE id = :i", i=rid
    )
    return rid


def feed(site: Site, who: str, *args: str) -> list[dict[str, Any]]:
    proc = site.hg("activity", "--json", *args, user=email(who))
    items: list[dict[str, Any]] = json.loads(proc.stdout)["items"]
    return items


def test_the_feed_shows_each_activity_once_in_ones_own_courses_only(site: Site) -> None:
    lab = workshop(site, "ada", "Listening lab")
    ids = happen(site)
    registration = attend(site, lab)
    happen(site, "sam", site.people["other_course"])  # cy's course
    pipeline.drain(site.engine)
    pipeline.drain(site.engine)  # nothing is journaled twice

    items = feed(site, "ada")
    kinds = Counter(i["kind"] for i in items)
    assert kinds == Counter(COURSE_KINDS | WORKSHOP_KINDS)  # each exactly once
    for item in items:
        assert set(item) == {
            "kind",
            "course_id" if "course_id" in item else "workshop_id",
            "student_id",
            "student_name",
            "at",
            "data",
        }
        assert item.get("course_id", site.people["course"]) == site.people["course"]
        assert item.get("workshop_id", lab) == lab
        assert item["student_id"] == site.people["stu"] and item["student_name"] == "Stu"
    by_kind = {i["kind"]: i for i in items}
    assert by_kind["review"]["data"] == {
        "review_id": ids["review"],
        "rating": 2,
        "comment": "too fast",
    }
    assert by_kind["payment"]["data"]["amount_cents"] == 4900
    assert by_kind["lesson_completed"]["data"] == {
        "activity_id": ids["lesson"],
        "details": {"lesson": 3},
    }
    assert by_kind["check_in"]["data"]["registration_id"] == registration
    assert [i["at"] for i in items] == sorted(i["at"] for i in items)  # oldest first

    # bob co-teaches the course, not ada's own workshop; cy sees Pottery; a student nothing
    assert {i["kind"] for i in feed(site, "bob")} == COURSE_KINDS
    assert {i.get("course_id") for i in feed(site, "cy")} == {site.people["other_course"]}
    assert feed(site, "stu") == []
    # narrowed, and refused where one does not teach
    assert {i["kind"] for i in feed(site, "ada", "--workshop", "Listening lab")} == WORKSHOP_KINDS
    assert len(feed(site, "ada", "--course", "Deep Listening", "-n", "2")) == 2
    assert (
        site.hg("activity", "--course", "Pottery", user=email("ada"), check=False).returncode == 3
    )
    taken = site.hg("activity", "--course", "Deep Listening", user=email("stu"), check=False)
    assert taken.returncode == 4 and "instructors" in taken.stderr
    plain = site.hg("activity", user=email("ada")).stdout.splitlines()
    assert len(plain) == len(items) and "Stu rated it 2/5: “too fast”" in plain[2]


def test_since_shows_everything_from_then_on(site: Site) -> None:
    """`--since` prints every entry from then on, oldest first — not the last 20 of them;
    `-n` alone, the last N; `--max-count` caps either."""
    site.enroll_many(30)
    pipeline.drain(site.engine)
    since = feed(site, "ada", "--since", "1h")
    assert len(since) == 30 and [i["at"] for i in since] == sorted(i["at"] for i in since)
    assert len(feed(site, "ada")) == 20 and len(feed(site, "ada", "-n", "5")) == 5
    assert feed(site, "ada", "--since", "1h", "--max-count", "7") == since[:7]
    plain = site.hg("activity", "--since", "1h", user=email("ada"))
    assert len(plain.stdout.splitlines()) == 30
    assert feed(site, "ada", "--since", "2999-01-01") == []


def test_a_feed_since_long_ago_is_read_a_page_at_a_time_and_misses_nothing_meanwhile(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a tail's start in the past (tests/test_tail.py): entries journaled between two pages
    — one stamped an hour back, before every entry of the pages to come — are in none of them
    and come after the last, each once."""
    from datetime import UTC, datetime, timedelta

    from humanglue_cli.core import tail as following
    from humanglue_cli.core.activity import Scope

    monkeypatch.setattr(following, "PAGE", 3)
    site.enroll_many(8)
    pipeline.drain(site.engine)

    def journal() -> list[int]:
        return [int(r.id) for r in site.sql("SELECT id FROM hg_activity ORDER BY at, id")]

    before = journal()
    reads = test_tail.Reads(site)
    since = datetime.now(UTC) - timedelta(days=1)
    items = following.follow_activity(
        reads, Scope(teacher=site.people["ada"]), threading.Event(), since=since, live=False
    )
    got: list[int] = []
    for item in items:
        got.append(item.id)
        if len(got) == 3:  # between the first page and the second
            hour_ago = (
                "now() - interval '1 hour'"
                if site.backend == "postgres"
                else "datetime('now', '-1 hour')"
            )
            site.sql(
                "INSERT INTO hg_activity (event_id, kind, course_id, data, at) "
                f"VALUES (987654321, 'enrollment', :c, '{{}}', {hour_ago})",
                c=site.people["course"],
            )
            site.enroll_many(1)
            pipeline.drain(site.engine)
    late = sorted(set(journal()) - set(before))
    assert len(late) == 2
    assert got[:6] == before[:6]  # the hour-old entry would have come first in any page
    assert sorted(got[6:]) == sorted(before[6:] + late) and len(got) == len(set(got)) == 10
    assert reads.count == 3  # three pages; the last, short, with what became visible since


def test_following_the_feed_live(site: Site, tails: list[test_tail.Tail]) -> None:
    happen(site)
    pipeline.drain(site.engine)
    follower = Activity(site, tails, "-n", "1", "--max-count", "3").ready()
    assert follower.next()["kind"] == "lesson_completed"  # the last one, first
    lab = workshop(site, "ada", "Listening lab")
    attend(site, lab)
    pipeline.drain(site.engine)
    assert [follower.next()["kind"] for _ in range(2)] == ["workshop_registration", "check_in"]
    assert follower.proc.wait(timeout=10) == 0  # --max-count 3
    assert not follower.said("Traceback")


def test_a_feed_in_a_pipe_ends_when_its_reader_does(site: Site) -> None:
    happen(site)
    pipeline.drain(site.engine)
    proc = site.hg("activity", "--idle-timeout", "1s", "--follow", user=email("ada"))
    assert len(proc.stdout.splitlines()) == 6 and "following the activity" in proc.stderr


@pytest.fixture
def lab(site: Site) -> Iterator[str]:
    yield workshop(site, "ada", "Listening lab")


def broadcasts_stored(site: Site) -> int:
    return int(site.sql("SELECT count(*) FROM hg_broadcasts")[0][0])


def test_a_broadcast_reaches_the_instructors_tails_and_nothing_else(
    site: Site, tails: list[test_tail.Tail], lab: str
) -> None:
    ada = Tail(site, tails, "-n", "0").ready()
    bob = Tail(site, tails, "-n", "0", user="bob").ready()
    cy = Tail(site, tails, "-n", "0", user="cy").ready()
    typed = Tail(site, tails, "-n", "0", "--type", "review").ready()  # notifications only
    before = site.count()
    sent = site.hg("broadcast", "--course", "Deep Listening", "Q&A in 5 minutes", user=email("ada"))
    assert "sent to the instructors of Deep Listening" in sent.stdout
    for tail in (ada, bob):
        line = tail.next()
        assert set(line) == {"type", "message", "course_id", "sender_id", "at"}
        assert line["type"] == "broadcast" and line["message"] == "Q&A in 5 minutes"
        assert line["course_id"] == site.people["course"]
        assert line["sender_id"] == site.people["ada"]
    # a workshop's: its instructor only (bob co-teaches the course, not this workshop)
    site.hg("broadcast", "--workshop", lab, "--json", "Lab opens", user=email("root"))
    assert ada.next() == {**lab_opens(site, lab), "at": last_broadcast_at(site)}
    cy.nothing_more(within=0.5)
    bob.nothing_more(within=0.1)
    typed.nothing_more(within=0.1)
    assert site.count() == before  # never a notification
    listed = site.hg("notifications", "list", "--json", user=email("ada")).stdout
    assert "Q&A" not in listed


def lab_opens(site: Site, lab: str) -> dict[str, Any]:
    return {
        "type": "broadcast",
        "message": "Lab opens",
        "workshop_id": lab,
        "sender_id": site.people["root"],
    }


def last_broadcast_at(site: Site) -> str:
    (row,) = site.sql("SELECT created_at FROM hg_broadcasts ORDER BY id DESC LIMIT 1")
    stamp = row[0]
    if isinstance(stamp, str):  # SQLite's text
        from humanglue_cli.core.models import UTCDateTime

        stamp = UTCDateTime().process_result_value(stamp, site.engine.dialect)
    return str(stamp.isoformat())


def test_who_may_broadcast_and_how_often(site: Site, lab: str) -> None:
    def send(who: str, *args: str, **env: str) -> Any:
        return site.hg("broadcast", *args, user=email(who), check=False, **env)

    site.enroll("stu")
    taken = send("stu", "--course", "Deep Listening", "hi")  # a student of it
    assert taken.returncode == 4 and "instructors or an admin" in taken.stderr
    assert send("cy", "--course", "Deep Listening", "hi").returncode == 3  # not cy's to see
    assert send("cy", "--workshop", lab, "hi").returncode == 3
    for bad in (
        ("--course", "Deep Listening", "--workshop", lab, "hi"),
        ("hi",),
        ("--course", "Deep Listening", "   "),
        ("--course", "Deep Listening", "x" * 2001),
    ):
        proc = send("ada", *bad)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (bad, proc.stderr)
    assert send("ada", "--course", "x", "hi", HUMANGLUE_BROADCAST_RATE="0").returncode == 2
    assert broadcasts_stored(site) == 0  # nothing stored by a refusal

    rate = {"HUMANGLUE_BROADCAST_RATE": "2"}
    assert send("bob", "--course", "Deep Listening", "one", **rate).returncode == 0
    assert send("bob", "--course", "Deep Listening", "two", **rate).returncode == 0
    third = send("bob", "--course", "Deep Listening", "three", **rate)
    assert third.returncode == 4 and "rate limit: 2 broadcasts a minute" in third.stderr
    assert send("ada", "--course", "Deep Listening", "ada's own", **rate).returncode == 0
    assert send("root", "--workshop", lab, "an admin may", **rate).returncode == 0
    assert broadcasts_stored(site) == 4


def test_broadcasts_are_kept_a_minute_at_most(site: Site, tails: list[test_tail.Tail]) -> None:
    site.hg("broadcast", "--course", "Deep Listening", "fresh", user=email("ada"))
    old = (
        "now() - interval '61 seconds'"
        if site.backend == "postgres"
        else "strftime('%Y-%m-%d %H:%M:%f', 'now', '-61 seconds')"
    )
    site.sql(
        "INSERT INTO hg_broadcasts (course_id, sender_id, message, created_at) "
        f"VALUES (:c, :s, 'stale', {old})",
        c=site.people["course"],
        s=site.people["ada"],
    )
    tail = Tail(site, tails, "-n", "0").ready()
    tail.nothing_more(within=0.5)  # neither the earlier one nor the stale one: live only
    runner.Heartbeat(site.engine, "test").beat()  # a worker's heartbeat
    assert [r[0] for r in site.sql("SELECT message FROM hg_broadcasts")] == ["fresh"]
    site.sql(
        "UPDATE hg_broadcasts SET created_at = "
        + ("now() - interval '56 seconds'" if site.backend == "postgres" else old)
    )
    runner.Heartbeat(site.engine, "test").beat()  # none outlives the minute until the next
    assert broadcasts_stored(site) == 0


def test_the_feed_and_broadcasts_on_personal_logins(pg_site: Site) -> None:
    site = pg_site
    happen(site)
    happen(site, "sam", site.people["other_course"])
    pipeline.drain(site.engine)
    ada, stu = grant(site, "ada"), grant(site, "stu")
    shown = json.loads(on_login(site, ada, "activity", "--json").stdout)["items"]
    assert {i["kind"] for i in shown} == COURSE_KINDS
    assert on_login(site, ada, "broadcast", "--course", "Deep Listening", "hi").returncode == 0
    assert on_login(site, stu, "broadcast", "--course", "Deep Listening", "x").returncode == 4
    engine = raw(stu)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM hg_activity")).scalar() == 0
            assert conn.execute(sa.text("SELECT count(*) FROM hg_broadcasts")).scalar() == 0
            assert refused(conn, "DELETE FROM hg_broadcasts") == "42501"
            assert (
                refused(
                    conn,
                    "INSERT INTO hg_broadcasts (sender_id, message) VALUES (:s, 'forged')",
                    s=site.people["stu"],
                )
                == "42501"
            )
            assert (
                refused(
                    conn,
                    "SELECT hg_broadcast(CAST(:c AS uuid), NULL, 'x', 1000)",
                    c=site.people["course"],
                )
                == "42501"
            )
    finally:
        engine.dispose()
    engine = raw(ada)
    try:
        with engine.connect() as conn:
            seen = conn.execute(sa.text("SELECT DISTINCT course_id FROM hg_activity")).scalars()
            assert {str(c) for c in seen} == {site.people["course"]}
            assert conn.execute(sa.text("SELECT message FROM hg_broadcasts")).scalars().all() == [
                "hi"
            ]
    finally:
        engine.dispose()


def test_an_event_that_fails_is_not_in_the_feed_and_the_rest_are_once(site: Site) -> None:
    """The feed's entries are written with the events' processing, in its transaction."""
    happen(site)
    site.sql(
        "INSERT INTO hg_events (kind, entity_id, payload) VALUES ('review.created', 'x', '[1]')"
    )
    result = pipeline.drain(site.engine)
    assert result.failed == 1
    counts = site.sql("SELECT event_id, count(*) FROM hg_activity GROUP BY event_id")
    assert counts and all(n == 1 for _, n in counts)
    assert len(counts) == len(COURSE_KINDS)
