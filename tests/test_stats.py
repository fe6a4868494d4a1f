"""The live stats views (migration 0008) and `humanglue stats`, on both backends; on
PostgreSQL also through personal logins (the views are security_invoker, row-level security).

Every row is written as the platform writes it, in plain SQL, and no worker runs unless a
test says so: the views are views, so what the platform commits counts at once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from humanglue_cli.commands.stats import plain_line, spark
from humanglue_cli.core import pipeline
from tests.helpers import CLI, Site, email, new_id
from tests.test_live import workshop
from tests.test_security import grant, on_login, raw


def ago(site: Site, seconds: int) -> str:
    """SQL for the time `seconds` ago, as each backend keeps timestamps."""
    if site.backend == "postgres":
        return f"now() - interval '{seconds} seconds'"
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-{seconds} seconds')"


def enroll(site: Site, who: str, course: str, status: str = "active") -> str:
    eid = new_id()
    done = "CURRENT_TIMESTAMP" if status == "completed" else "NULL"
    site.sql(
        "INSERT INTO enrollments (id, course_id, student_id, status, completed_at) "
        f"VALUES (:i, :c, :s, :st, {done})",
        i=eid,
        c=course,
        s=site.people[who],
        st=status,
    )
    return eid


def review(site: Site, who: str, course: str, rating: int) -> None:
    site.sql(
        "INSERT INTO course_reviews (id, course_id, student_id, rating) VALUES (:i, :c, :s, :r)",
        i=new_id(),
        c=course,
        s=site.people[who],
        r=rating,
    )


def pay(site: Site, who: str, cents: int, status: str, *, course: str | None = None,
        workshop_id: str | None = None) -> None:  # fmt: skip
    site.sql(
        "INSERT INTO payments (id, user_id, course_id, workshop_id, amount_cents, status) "
        "VALUES (:i, :u, :c, :w, :a, :s)",
        i=new_id(),
        u=site.people[who],
        c=course,
        w=workshop_id,
        a=cents,
        s=status,
    )


def register(site: Site, who: str, lab: str, *, checked_in: bool, status: str = "registered"):  # type: ignore[no-untyped-def]
    site.sql(
        "INSERT INTO workshop_registrations (id, workshop_id, user_id, status, checked_in_at) "
        f"VALUES (:i, :w, :u, :s, {'CURRENT_TIMESTAMP' if checked_in else 'NULL'})",
        i=new_id(),
        w=lab,
        u=site.people[who],
        s=status,
    )


def present(site: Site, who: str, *, course: str | None = None, lab: str | None = None,
            device: str = "", status: str = "online", seconds_ago: int = 1) -> None:  # fmt: skip
    scope = f"course:{course}" if course else f"workshop:{lab}"
    site.sql(
        "INSERT INTO student_presence (user_id, scope, device_id, course_id, workshop_id, "
        f"status, last_seen_at) VALUES (:u, :sc, :d, :c, :w, :s, {ago(site, seconds_ago)})",
        u=site.people[who],
        sc=scope,
        d=device,
        c=course,
        w=lab,
        s=status,
    )


def school(site: Site) -> str:
    """Deep Listening (ada, co-teacher bob) with figures worked out by hand below; Pottery
    (cy) with nothing; ada's workshop Listening lab. Returns the workshop's id."""
    course = site.people["course"]
    for name in ("kim", "lee", "max", "ned"):
        site.person(name, "student")
    enroll(site, "stu", course)  # active 1, completed 2, cancelled 1: rate 2/4
    enroll(site, "sam", course, "completed")
    enroll(site, "kim", course, "completed")
    enroll(site, "lee", course, "cancelled")
    for who, rating in (("stu", 5), ("sam", 4), ("kim", 2)):  # 11/3
        review(site, who, course, rating)
    pay(site, "stu", 4900, "succeeded", course=course)  # revenue: 4900 + 1000
    pay(site, "sam", 1000, "succeeded", course=course)
    pay(site, "kim", 7000, "failed", course=course)
    pay(site, "lee", 3000, "refunded", course=course)
    pay(site, "max", 500, "pending", course=course)
    # online: stu on two devices (once), sam away; max beat 5 minutes ago; ned left
    present(site, "stu", course=course, device="phone")
    present(site, "stu", course=course, device="laptop", seconds_ago=20)
    present(site, "sam", course=course, status="away")
    present(site, "max", course=course, seconds_ago=300)
    present(site, "ned", course=course, status="offline")
    lab = workshop(site, "ada", "Listening lab")
    register(site, "stu", lab, checked_in=True)
    register(site, "sam", lab, checked_in=False)
    register(site, "kim", lab, checked_in=True, status="cancelled")
    pay(site, "stu", 2500, "succeeded", workshop_id=lab)
    pay(site, "sam", 100, "failed", workshop_id=lab)
    present(site, "stu", lab=lab, device="tablet")
    present(site, "kim", lab=lab, seconds_ago=120)
    return lab


def stats(site: Site, who: str, *args: str) -> list[dict[str, Any]]:
    proc = site.hg("stats", "--json", *args, user=email(who))
    items: list[dict[str, Any]] = json.loads(proc.stdout)["items"]
    return items


def deep_listening(site: Site, **changed: Any) -> dict[str, Any]:
    return {
        "course_id": site.people["course"],
        "title": "Deep Listening",
        "enrollments_active": 1,
        "enrollments_completed": 2,
        "completion_rate": 0.5,
        "rating_avg": pytest.approx(11 / 3),
        "rating_count": 3,
        "revenue_cents": 5900,
        "online_now": 2,
        **changed,
    }


def listening_lab(lab: str, **changed: Any) -> dict[str, Any]:
    return {
        "workshop_id": lab,
        "title": "Listening lab",
        "registrations": 2,
        "checked_in": 1,
        "online_now": 1,
        "revenue_cents": 2500,
        **changed,
    }


POTTERY = {
    "title": "Pottery",
    "enrollments_active": 0,
    "enrollments_completed": 0,
    "completion_rate": 0.0,
    "rating_avg": None,  # no reviews: null, not 0
    "rating_count": 0,
    "revenue_cents": 0,
    "online_now": 0,
}


def test_the_figures_are_the_hand_computed_ones(site: Site) -> None:
    lab = school(site)
    # An instructor sees what they teach, in CONTRACT §8's shapes, courses then workshops
    assert stats(site, "ada") == [deep_listening(site), listening_lab(lab)]
    assert stats(site, "ada", "--course", "Deep Listening") == [deep_listening(site)]
    assert stats(site, "ada", "--workshop", lab[:8]) == [listening_lab(lab)]
    assert stats(site, "bob") == [deep_listening(site)]  # a co-teacher; not ada's workshop
    assert stats(site, "cy") == [{"course_id": site.people["other_course"], **POTTERY}]
    assert stats(site, "stu") == []  # teaches nothing
    everything = stats(site, "root")  # an admin: all
    assert [i["title"] for i in everything] == ["Deep Listening", "Pottery", "Listening lab"]
    # The platform's next plain-SQL writes count at once: no worker has run
    enroll(site, "max", site.people["course"], "completed")
    review(site, "max", site.people["course"], 1)
    pay(site, "max", 99, "succeeded", course=site.people["course"])
    assert stats(site, "ada", "--course", site.people["course"]) == [
        deep_listening(
            site,
            enrollments_completed=3,
            completion_rate=0.6,
            rating_avg=pytest.approx(3.0),
            rating_count=4,
            revenue_cents=5999,
        )
    ]
    # The views read the same, in plain SQL
    with site.engine.connect() as conn:
        row = (
            conn.execute(sa.text("SELECT * FROM live_course_stats WHERE title = 'Pottery'"))
            .one()
            ._asdict()
        )
        unread = conn.execute(sa.text("SELECT count(*) FROM user_unread_notifications")).scalar()
    assert row["rating_avg"] is None and row["enrollments_total"] == 0
    assert unread == 0  # no worker has run: no notification yet
    # Plain text into a pipe: one line an item
    lines = site.hg("stats", user=email("ada")).stdout.splitlines()
    assert lines[0].startswith(f"course {site.people['course']} 'Deep Listening' ")
    assert "rating_avg 3.000 rating_count 4" in lines[0] and len(lines) == 2


def test_the_presence_timeout_is_the_resolved_setting(site: Site) -> None:
    lab = school(site)
    # max beat 5 minutes ago, kim 2: online with a 10-minute timeout (db upgrade records it)
    site.hg("db", "upgrade", HUMANGLUE_PRESENCE_TIMEOUT="10m")
    assert stats(site, "ada") == [
        deep_listening(site, online_now=3),
        listening_lab(lab, online_now=2),
    ]
    # every worker start records it too: 15 s leaves stu's laptop out, but his phone beat
    site.hg("worker", "--burst", HUMANGLUE_PRESENCE_TIMEOUT="15s")
    assert stats(site, "ada") == [deep_listening(site), listening_lab(lab)]
    site.hg("worker", "--burst", HUMANGLUE_PRESENCE_TIMEOUT="1s")  # everyone has gone quiet
    assert [i["online_now"] for i in stats(site, "ada")] == [0, 0]
    bad = site.hg("worker", "--burst", check=False, HUMANGLUE_PRESENCE_TIMEOUT="0s")
    assert bad.returncode == 2 and "presence timeout" in bad.stderr
    # The worker's notifications show in the unread view, per user
    with site.engine.connect() as conn:
        query = sa.text("SELECT user_id, unread_count FROM user_unread_notifications")
        unread = {str(user): count for user, count in conn.execute(query)}
        recent = conn.execute(
            sa.text("SELECT kind FROM instructor_recent_activity WHERE instructor_id = :a"),
            {"a": site.people["ada"]},
        ).scalars()
        kinds = Counter(recent)
    # bob: 4 enrollments, 2 completions, 3 reviews, 2 payments; ada: her lab's 3 + 1 too
    assert (unread[site.people["bob"]], unread[site.people["ada"]]) == (11, 15)
    assert kinds == Counter(
        enrollment=4, completion=2, review=3, payment=3, workshop_registration=3
    )  # (a check-in is an update of checked_in_at: these registrations came checked in)


def test_stats_of_what_one_does_not_teach_is_exit_3(site: Site) -> None:
    lab = school(site)

    def code(who: str, *args: str) -> subprocess.CompletedProcess[str]:
        return site.hg("stats", *args, user=email(who), check=False)

    for proc in (
        code("cy", "--course", "Deep Listening"),
        code("cy", "--course", site.people["course"]),
        code("bob", "--workshop", lab),
        code("stu", "--course", site.people["course"]),
        code("ada", "--course", new_id()),  # unknown: the same
    ):
        assert proc.returncode == 3 and proc.stdout == "", proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    both = code("ada", "--course", "x", "--workshop", "y")
    assert both.returncode == 2 and "exclude" in both.stderr
    for bad in (("--max-count", "0"), ("--idle-timeout", "0s"), ("--idle-timeout", "soon")):
        proc = code("ada", "--follow", *bad)
        assert proc.returncode == 2 and bad[0] in proc.stderr, proc.stderr


def test_personal_logins_read_the_views_under_their_own_rights(pg_site: Site) -> None:
    site = pg_site
    lab = school(site)
    ada, stu, cy = grant(site, "ada"), grant(site, "stu"), grant(site, "cy")
    shown = json.loads(on_login(site, ada, "stats", "--json").stdout)["items"]
    assert shown == [deep_listening(site), listening_lab(lab)]
    assert on_login(site, cy, "stats", "--course", "Deep Listening").returncode == 3
    assert json.loads(on_login(site, stu, "stats", "--json").stdout) == {"items": []}
    with raw(stu).connect() as conn:  # a student: his own rows only, in the views too
        assert conn.execute(sa.text("SELECT count(*) FROM enrollments")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM payments")).scalar() == 2
        mine = conn.execute(sa.text("SELECT * FROM live_course_stats")).one()._asdict()
        assert (mine["enrollments_active"], mine["revenue_cents"], mine["rating_count"]) == (
            1,
            4900,
            1,
        )
        assert conn.execute(sa.text("SELECT count(*) FROM live_workshop_stats")).scalar() == 1
    with raw(cy).connect() as conn:  # another instructor: nothing of ada's
        for table in ("enrollments", "course_reviews", "payments", "workshop_registrations"):
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == 0
        assert conn.execute(sa.text("SELECT title FROM live_course_stats")).scalars().all() == [
            "Pottery"
        ]
        with pytest.raises(sa.exc.ProgrammingError):  # hg_settings stays closed
            conn.execute(sa.text("SELECT * FROM hg_settings"))
    # A worker's least-privilege login records the timeout (it may not write hg_settings)
    prefix = site.sql("SELECT value FROM hg_settings WHERE name = 'role_prefix'")[0][0]
    login = f"w_{new_id()[:8]}"
    site.sql(f'CREATE ROLE "{login}" LOGIN IN ROLE "{prefix}_worker"')
    try:
        as_worker = sa.make_url(site.url).set(username=login).render_as_string(False)
        site.hg(
            "worker", "--burst", HUMANGLUE_DATABASE_URL=as_worker, HUMANGLUE_PRESENCE_TIMEOUT="7m"
        )
        recorded = "SELECT value FROM hg_settings WHERE name = 'presence_timeout_seconds'"
        assert site.sql(recorded) == [("420",)]
        assert stats(site, "ada")[0]["online_now"] == 3  # max, 5 minutes ago, counts now
    finally:
        site.sql(f'DROP OWNED BY "{login}"')
        site.sql(f'DROP ROLE "{login}"')
    # The platform's writes are still captured, and processed, after the new policies
    pipeline.drain(site.engine)
    site.enroll("ned")
    assert site.pending() == 1
    assert pipeline.drain(site.engine).notified == 2  # ada and bob


def test_follow_redraws_at_most_four_times_a_second(site: Site) -> None:
    school(site)
    worker = site.spawn("worker")  # on PostgreSQL each batch also wakes the follower
    follower = subprocess.Popen(
        [CLI, "stats", "--follow", "--json", "--course", "Deep Listening", "--idle-timeout", "2s"],
        env=site.env(email("ada")),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())["items"][0]
        assert first == deep_listening(site)
        drawn: list[tuple[float, str]] = []  # each line as it arrives, timed by its reader
        reader = threading.Thread(
            target=lambda: drawn.extend(
                (time.monotonic(), line)
                for line in iter(
                    follower.stdout.readline,
                    "",  # type: ignore[union-attr]
                )
            )
        )
        reader.start()
        writes, began = 0, time.monotonic()
        while time.monotonic() - began < 2.5:  # a change every few milliseconds
            enroll(site, "stu", site.people["course"])
            writes += 1
        reader.join(timeout=15)
        stamps = [at for at, _ in drawn]
        last = json.loads(drawn[-1][1])["items"][0]
        assert follower.wait(timeout=10) == 0  # --idle-timeout
    finally:
        for proc in (worker, follower):
            proc.kill() if proc.poll() is None else None
        worker.wait(timeout=10)
        follower.stdout.close()  # type: ignore[union-attr]
    assert writes > 50 and last["enrollments_active"] == 1 + writes  # the final figures
    assert 4 <= len(stamps) <= 4 * 3.5  # redrawn while it changed, never above 4 a second
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    # Stamped by our reader thread, which the writing loop may hold up now and then: a late
    # stamp shortens the gap after it. An unthrottled follower draws once per write (> 50).
    assert min(gaps) > 0.1, gaps


def test_follow_into_head_ends_cleanly(site: Site) -> None:
    school(site)
    proc = subprocess.run(
        f"'{CLI}' stats --follow | head -n 1; echo \"${{PIPESTATUS[@]}}\"",
        shell=True,
        executable="/bin/bash",
        env=site.env(email("ada")),
        capture_output=True,
        text=True,
        timeout=30,
    )
    out = proc.stdout.splitlines()
    assert out[0].startswith("course ") and out[-1] == "0 0", proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctrl_c_ends_a_follow_with_exit_0(site: Site) -> None:
    school(site)
    proc = subprocess.Popen(
        [CLI, "stats", "--follow", "--json"],
        env=site.env(email("ada")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert len(json.loads(proc.stdout.readline())["items"]) == 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert "Traceback" not in proc.stderr.read()


def test_sparklines_and_plain_lines() -> None:
    assert spark([0, 0, 0]) == "▁▁▁"
    assert spark([0, 1, 2, 4, 8]) == "▁▂▃▅█"
    assert spark([3]) == "█"
    line = plain_line({"workshop_id": "w1", "title": "a\nb", "registrations": 2, "x": None})
    assert line == "workshop w1 'a b' registrations 2 x -"
