"""Presence (issue 9, CONTRACT §8): heartbeats from the CLI, the Python API and the README's
plain SQL; who is online, the follow view, the stats and their peaks, the sweep; on both
backends, and on PostgreSQL through personal logins (row-level security)."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from humanglue_cli import presence as api
from humanglue_cli.core import refresh
from humanglue_cli.core.db import sqlite_path
from humanglue_cli.core.store import presence as store
from tests import test_tail
from tests.helpers import CLI, Site, email
from tests.test_live import workshop
from tests.test_security import grant, on_login, raw, refused

tails = test_tail.tails
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


class Follow(test_tail.Tail):
    COMMAND = ("presence", "list", "--follow", "--json")


def hg_json(site: Site, who: str, *args: str, **env: str) -> Any:
    return json.loads(site.hg("presence", *args, "--json", user=email(who), **env).stdout)


def listed(site: Site, who: str = "ada", course: str | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = hg_json(
        site, who, "list", "--course", course or site.people["course"]
    )["items"]
    return items


def age(site: Site, who: str, seconds: int) -> None:
    """Make `who`'s beats `seconds` old (as if their devices had gone quiet)."""
    back = (
        f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-{seconds} seconds')"
        if site.backend == "sqlite"
        else f"now() - interval '{seconds} seconds'"
    )
    site.sql(
        f"UPDATE student_presence SET last_seen_at = {back} WHERE user_id = :u", u=site.people[who]
    )


def test_two_devices_count_once_and_leave_is_explicit(site: Site) -> None:
    site.enroll("stu")
    course = site.people["course"]
    for device in ("laptop", "phone"):
        assert hg_json(site, "stu", "beat", "--course", course, "--device", device) == {
            "online": True
        }
    hg_json(site, "stu", "beat", "--course", course, "--device", "phone")  # idempotent
    [item] = listed(site)
    assert item["user_id"] == site.people["stu"] and item["full_name"] == "Stu"
    assert item["status"] == "online" and item["devices"] == 2
    assert item["since"] <= item["last_seen_at"]
    plain = site.hg("presence", "list", "--course", course, user=email("ada")).stdout
    assert plain.startswith("Stu\tonline\t2\tjust now\tjust now"), plain
    # One device leaves: still online on the other; the last one leaves: offline.
    assert hg_json(site, "stu", "leave", "--course", course, "--device", "laptop") == {
        "online": True
    }
    assert [i["devices"] for i in listed(site)] == [1]
    assert hg_json(site, "stu", "leave", "--course", course, "--device", "phone") == {
        "online": False
    }
    assert listed(site) == []
    [stat] = hg_json(site, "ada", "stats")["items"]
    assert stat == {"course_id": course, "title": "Deep Listening", "online": 0, "peak_today": 1}


def test_away_timeout_and_the_sweep(site: Site) -> None:
    site.enroll("stu")
    site.enroll("sam")
    course = site.people["course"]
    hg_json(site, "stu", "beat", "--course", course, "--status", "away")
    hg_json(site, "sam", "beat", "--course", course, "--device", "a")
    hg_json(site, "sam", "beat", "--course", course, "--device", "b", "--status", "away")
    by_name = {i["full_name"]: i for i in listed(site)}
    assert by_name["Stu"]["status"] == "away" and by_name["Sam"]["status"] == "online"
    assert by_name["Sam"]["devices"] == 2
    # stu's device goes quiet past the timeout: gone from the list before any sweep
    age(site, "stu", 61)
    assert [i["full_name"] for i in listed(site)] == ["Sam"]
    # ... and a shorter timeout (the flag over the environment) drops sam too
    time.sleep(1.1)
    items = site.hg(
        "--presence-timeout",
        "1s",
        "presence",
        "list",
        "--course",
        course,
        "--json",
        user=email("ada"),
        HUMANGLUE_PRESENCE_TIMEOUT="1h",
    ).stdout
    assert json.loads(items) == {"items": []}
    # The sweep marks the stale rows offline (2 of sam's are fresh under 60s), and only them.
    with site.engine.begin() as conn:
        swept = store.sweep(conn, datetime.now(UTC), timedelta(seconds=60))
    assert swept == 1
    statuses = site.sql("SELECT user_id, status FROM student_presence ORDER BY status")
    assert sorted(s for _, s in statuses) == ["away", "offline", "online"]
    # A stale device that beats again joins anew: a new `since`.
    hg_json(site, "stu", "beat", "--course", course)
    stu = next(i for i in listed(site) if i["full_name"] == "Stu")
    assert datetime.fromisoformat(stu["since"]) > datetime.now(UTC) - timedelta(seconds=30)


def test_only_instructors_and_admins_see_presence(site: Site) -> None:
    site.enroll("stu")
    course, pottery = site.people["course"], site.people["other_course"]
    hg_json(site, "stu", "beat", "--course", course)
    for who in ("ada", "bob", "root"):  # owner, co-instructor, admin
        assert len(listed(site, who)) == 1
    for who in ("stu", "cy"):  # a student of it, another course's instructor
        proc = site.hg("presence", "list", "--course", course, user=email(who), check=False)
        assert proc.returncode == 3 and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    # Beats only where one is enrolled or teaches: sam takes neither course.
    before = site.sql("SELECT count(*) FROM student_presence")
    proc = site.hg("presence", "beat", "--course", course, user=email("sam"), check=False)
    assert proc.returncode == 3, proc.stderr
    assert site.sql("SELECT count(*) FROM student_presence") == before
    assert hg_json(site, "ada", "beat", "--course", course) == {"online": True}  # teaches it
    # Stats: what one teaches; an admin all.
    assert [i["course_id"] for i in hg_json(site, "cy", "stats")["items"]] == [pottery]
    assert {i["course_id"] for i in hg_json(site, "root", "stats")["items"]} == {course, pottery}
    assert hg_json(site, "stu", "stats") == {"items": []}
    # Bad input: exit 2, one line, nothing done (found before the database: one backend will do).
    checks = [
        (("list", "--course", course), {"HUMANGLUE_PRESENCE_TIMEOUT": "0s"}, "TIMEOUT"),
        (("list", "--course", course), {"HUMANGLUE_PRESENCE_TIMEOUT": "soon"}, "TIMEOUT"),
        (("beat", "--course", course, "--status", "busy"), {}, "--status"),
        (("beat",), {}, "--course"),
    ]
    for args, env, named in checks if site.backend == "sqlite" else []:
        proc = site.hg("presence", *args, user=email("ada"), check=False, **env)
        assert proc.returncode == 2 and named in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1


def test_follow_prints_joins_status_changes_and_timeouts(
    site: Site, tails: list[test_tail.Tail]
) -> None:
    site.enroll("stu")
    site.enroll("sam")
    course = site.people["course"]
    sam, stu = site.people["sam"], site.people["stu"]
    # (sam's beats in process: a slow CLI start must not let sam time out early)
    api.beat(site.engine, sam, course_id=course)  # there before the view starts
    follow = Follow(
        site, tails, "--course", course, "--max-count", "4", HUMANGLUE_PRESENCE_TIMEOUT="5s"
    ).ready()
    api.beat(site.engine, sam, course_id=course, status="away")
    first = follow.next()
    assert first["event"] == "join" and first["user_id"] == sam
    hg_json(site, "stu", "beat", "--course", course, "--device", "phone")
    events = [follow.next(), follow.next()]
    assert {(e["event"], e["full_name"], e["status"]) for e in events} == {
        ("join", "Stu", "online"),
        ("status", "Sam", "away"),
    }
    for e in events:
        assert set(e) == {"event", "user_id", "full_name", "status", "course_id", "at"}
        assert e["course_id"] == course
    # stu keeps beating; sam stops: after the 5 s timeout sam leaves, with no sweep running
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and follow.lines.empty():
        api.beat(site.engine, stu, course_id=course, device="phone")
        time.sleep(0.3)
    leave = follow.next()
    assert (leave["event"], leave["full_name"], leave["status"]) == ("leave", "Sam", "offline")
    assert follow.proc.wait(timeout=10) == 0  # --max-count reached


def test_follow_idle_timeout_and_a_closed_pipe_exit_cleanly(site: Site) -> None:
    site.enroll("stu")
    course = site.people["course"]
    hg_json(site, "stu", "beat", "--course", course)
    proc = site.hg(
        "presence",
        "list",
        "--course",
        course,
        "--follow",
        "--json",
        "--idle-timeout",
        "1s",
        user=email("ada"),
    )
    assert [json.loads(line)["event"] for line in proc.stdout.splitlines()] == ["join"]
    shell = subprocess.run(
        f"'{CLI}' presence list --course {course} --follow --json | head -n 1",  # ours, not PATH's
        shell=True,
        env=site.env(email("ada")),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shell.returncode == 0 and "Traceback" not in shell.stderr, shell.stderr
    assert json.loads(shell.stdout)["event"] == "join"


def test_ctrl_c_stops_the_follow_view(site: Site, tails: list[test_tail.Tail]) -> None:
    follow = Follow(site, tails, "--course", site.people["course"]).ready()
    follow.proc.send_signal(signal.SIGINT)
    assert follow.proc.wait(timeout=10) == 0
    assert not any("Traceback" in e for e in follow.errors)


def test_redraws_at_most_four_times_a_second() -> None:
    # Given a state that changes at every poll, polled a hundred times a second
    ticks = iter(range(10**6))
    draws: list[float] = []
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    began = time.monotonic()
    emitted = refresh.run(
        lambda: next(ticks),
        lambda before, after: [after],
        stop,
        emit=lambda _: None,
        redraw=lambda _: draws.append(time.monotonic()),
        every=0.01,
    )
    # Then every event is emitted, but the view is drawn at most 4 times a second
    elapsed = time.monotonic() - began  # 1.5 s, or more if the timer fired late
    assert emitted > 50
    assert 4 <= len(draws) <= 1 + elapsed / 0.25
    assert all(b - a >= 0.24 for a, b in zip(draws, draws[1:], strict=False))


def _readme_sql(backend: str) -> str:
    match = re.search(rf"<!-- presence-beat-{backend} -->\n```sql\n(.*?)```", README, re.S)
    assert match, f"README.md has no presence-beat-{backend} statement"
    return match.group(1)


def _platform_beat(site: Site, **params: Any) -> None:
    """What the platform runs: the README's statement, verbatim, through the plain driver."""
    row = {"course_id": None, "workshop_id": None, "device_id": "", "status": "online", **params}
    path = sqlite_path(site.url)
    if path:
        with sqlite3.connect(path) as conn:
            conn.execute(_readme_sql("sqlite"), row)
        conn.close()
    else:
        dsn = site.url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as pg:
            pg.execute(_readme_sql("postgresql").encode(), row)


def test_the_readme_sql_statement_beats(site: Site) -> None:
    site.enroll("stu")
    site.enroll("sam")
    course = site.people["course"]
    lab = workshop(site, "ada", "Listening lab")
    stu, sam = site.people["stu"], site.people["sam"]
    _platform_beat(site, user_id=stu, course_id=course, device_id="laptop")
    _platform_beat(site, user_id=stu, course_id=course, device_id="laptop")  # idempotent
    _platform_beat(site, user_id=stu, course_id=course, device_id="phone", status="away")
    _platform_beat(site, user_id=sam, course_id=course)
    _platform_beat(site, user_id=sam, workshop_id=lab)
    by_name = {i["full_name"]: i for i in listed(site)}
    assert by_name["Stu"]["devices"] == 2 and by_name["Stu"]["status"] == "online"
    assert by_name["Sam"]["devices"] == 1
    items = hg_json(site, "ada", "list", "--workshop", lab)["items"]
    assert [i["user_id"] for i in items] == [sam]
    assert site.sql("SELECT count(*) FROM student_presence")[0][0] == 4
    joined = site.sql("SELECT joined_at FROM student_presence WHERE device_id = 'laptop'")
    _platform_beat(site, user_id=stu, course_id=course, device_id="laptop")
    assert site.sql("SELECT joined_at FROM student_presence WHERE device_id = 'laptop'") == joined
    stats = {
        i.get("course_id") or i["workshop_id"]: i for i in hg_json(site, "ada", "stats")["items"]
    }
    assert stats[course]["online"] == 2 and stats[course]["peak_today"] == 2
    assert stats[lab]["online"] == 1 and stats[lab]["peak_today"] == 1
    # the peak, kept by the trigger: 2 in the course, whatever is online later
    api.leave(site.engine, sam, course_id=course)
    stats = {
        i.get("course_id") or i["workshop_id"]: i for i in hg_json(site, "ada", "stats")["items"]
    }
    assert stats[course]["online"] == 1 and stats[course]["peak_today"] == 2


def test_the_python_api_and_peaks(site: Site) -> None:
    ids = [site.person(f"s{n}", "student") for n in range(30)]
    for n in range(30):
        site.enroll(f"s{n}")
    course = site.people["course"]
    beats = [api.Beat(i, course_id=course, device="web") for i in ids]
    assert api.beat_many(site.engine, beats + beats[:5]) == 30  # duplicates: once each
    assert api.beat_many(site.engine, beats) == 30  # again: nothing new
    with pytest.raises(ValueError):
        api.beat(site.engine, ids[0])  # neither course nor workshop
    with pytest.raises(ValueError):
        api.beat(site.engine, ids[0], course_id=course, status="busy")
    with site.engine.begin() as conn:  # in the caller's transaction
        api.beat(conn, ids[0], course_id=course, device="phone", status="away")
        assert api.leave(conn, ids[0], course_id=course, device="web") is True
    assert api.leave(site.engine, ids[0], course_id=course, device=None) is False
    assert len(listed(site)) == 29
    peaks = site.sql("SELECT peak FROM hg_presence_peaks")
    assert peaks == [(30,)]
    # Old peaks expire; today's stays.
    site.sql(
        "INSERT INTO hg_presence_peaks (scope, day, course_id, peak, peak_at) "
        "VALUES (:s, :d, :c, 7, :at)",
        s=f"course:{course}",
        d="2020-01-01" if site.backend == "sqlite" else datetime(2020, 1, 1).date(),
        c=course,
        at=datetime(2020, 1, 1, tzinfo=UTC) if site.backend != "sqlite" else "2020-01-01 10:00:00",
    )
    with site.engine.begin() as conn:
        assert store.expire_peaks(conn, datetime.now(UTC), dry_run=True) == 1
        assert store.expire_peaks(conn, datetime.now(UTC)) == 1
    assert site.sql("SELECT peak FROM hg_presence_peaks") == [(30,)]


def test_workshop_check_ins_count_as_attendance(site: Site) -> None:
    lab = workshop(site, "ada", "Listening lab")
    for who in ("stu", "sam"):
        site.sql(
            "INSERT INTO workshop_registrations (id, workshop_id, user_id) VALUES (:i, :w, :u)",
            i=str(__import__("uuid").uuid4()),
            w=lab,
            u=site.people[who],
        )
    site.sql(
        "UPDATE workshop_registrations SET checked_in_at = CURRENT_TIMESTAMP WHERE user_id = :u",
        u=site.people["stu"],
    )
    hg_json(site, "sam", "beat", "--workshop", lab)
    items = {i["full_name"]: i for i in hg_json(site, "ada", "list", "--workshop", lab)["items"]}
    assert items["Stu"]["status"] == "checked_in" and items["Stu"]["devices"] == 0
    assert items["Sam"]["status"] == "online"
    [stat] = hg_json(site, "ada", "stats")["items"][1:] or hg_json(site, "ada", "stats")["items"]
    assert stat["workshop_id"] == lab and stat["online"] == 1 and stat["peak_today"] == 2
    proc = site.hg("presence", "beat", "--workshop", lab, user=email("cy"), check=False)
    assert proc.returncode == 3


@pytest.fixture
def logins(pg_site: Site) -> Site:
    pg_site.enroll("stu")
    pg_site.enroll("sam", pg_site.people["other_course"])
    return pg_site


def test_personal_logins_write_only_their_own_presence(logins: Site) -> None:
    site = logins
    course, pottery = site.people["course"], site.people["other_course"]
    stu_url, ada_url, cy_url = grant(site, "stu"), grant(site, "ada"), grant(site, "cy")
    beat = on_login(site, stu_url, "presence", "beat", "--course", course, "--json")
    assert beat.returncode == 0 and json.loads(beat.stdout) == {"online": True}, beat.stderr
    assert on_login(site, stu_url, "presence", "beat", "--course", pottery).returncode == 3
    listing = on_login(site, ada_url, "presence", "list", "--course", course, "--json")
    assert [i["full_name"] for i in json.loads(listing.stdout)["items"]] == ["Stu"]
    assert on_login(site, cy_url, "presence", "list", "--course", course).returncode == 3
    stats = json.loads(on_login(site, ada_url, "presence", "stats", "--json").stdout)["items"]
    assert [(s["online"], s["peak_today"]) for s in stats] == [(1, 1)]
    # Raw SQL on the logins: the policies hold whatever the client.
    engine = raw(stu_url)
    with engine.connect() as conn:
        insert = (
            "INSERT INTO student_presence (user_id, scope, device_id, course_id) "
            "VALUES (:u, :s, 'sql', :c)"
        )
        for user, scope, target in (
            (site.people["sam"], f"course:{course}", course),  # someone else
            (site.people["stu"], f"course:{pottery}", pottery),  # not enrolled there
            (site.people["stu"], f"course:{pottery}", course),  # a scope that lies
        ):
            assert refused(conn, insert, u=user, s=scope, c=target) == "42501"
        conn.execute(
            sa.text(insert), {"u": site.people["stu"], "s": f"course:{course}", "c": course}
        )
        api.beat(conn, site.people["stu"], course_id=course, device="raw")
        assert conn.execute(sa.text("SELECT count(*) FROM hg_presence_peaks")).scalar_one() == 0
    engine.dispose()
    online = "SELECT count(*) FROM hg_presence_online(:s, 60)"
    for url, expected, people in ((ada_url, 3, 1), (cy_url, 0, 0), (stu_url, 3, 0)):
        engine = raw(url)
        with engine.connect() as conn:
            seen = conn.execute(sa.text("SELECT count(*) FROM student_presence")).scalar_one()
            assert seen == expected
            # the SECURITY DEFINER reader shows what one teaches only
            count = conn.execute(sa.text(online), {"s": f"course:{course}"}).scalar_one()
            assert count == people
        engine.dispose()


def test_tables_and_the_live_view_on_a_terminal(site: Site) -> None:
    from tests.test_cli_edges import in_terminal

    site.enroll("stu")
    course = site.people["course"]
    hg_json(site, "stu", "beat", "--course", course, "--device", "phone")
    table = in_terminal(site, "presence", "list", "--course", course).decode()
    assert "NAME" in table and "DEVICES" in table and "Stu" in table
    stats = in_terminal(site, "presence", "stats").decode()
    assert "PEAK TODAY" in stats and "Deep Listening" in stats
    # The live view: drawn, then exits quietly after its idle timeout.
    live = in_terminal(
        site, "presence", "list", "--course", course, "--follow", "--idle-timeout", "2s"
    ).decode()
    assert "1 online, 1 present" in live and "join" in live and "Stu" in live
    assert "Traceback" not in live


def test_the_timeout_setting_resolves_flag_env_file_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from humanglue_cli.core.errors import BadInput
    from humanglue_cli.core.settings import load_settings

    config = tmp_path / "config.toml"
    config.write_text('presence_timeout = "90s"\n')
    monkeypatch.delenv("HUMANGLUE_PRESENCE_TIMEOUT", raising=False)
    monkeypatch.setenv("HUMANGLUE_CONFIG", str(tmp_path / "none.toml"))
    assert load_settings(config=str(config)).presence_timeout == timedelta(seconds=90)
    monkeypatch.setenv("HUMANGLUE_PRESENCE_TIMEOUT", "2m")
    settings = load_settings(config=str(config))
    assert settings.presence_timeout == timedelta(minutes=2)
    flagged = load_settings(config=str(config), presence_timeout="5s")
    assert flagged.presence_timeout == timedelta(seconds=5)
    assert settings.child_env()["HUMANGLUE_PRESENCE_TIMEOUT"] == "2m"  # reaches the workers
    monkeypatch.delenv("HUMANGLUE_PRESENCE_TIMEOUT")
    config.write_text("")
    assert load_settings(config=str(config)).presence_timeout == timedelta(seconds=60)
    config.write_text('presence_timeout = "500ms"\n')
    with pytest.raises(BadInput, match="presence_timeout in"):
        load_settings(config=str(config)).presence_timeout  # noqa: B018


def test_a_device_name_is_a_name(site: Site) -> None:
    """Found trying it from outside: a 5,000-character device, or one with escape sequences,
    was stored as given."""
    site.enroll("stu")
    for device, says in (("x" * 201, "at most 200 characters"), ("\x1b[2J", "no control")):
        proc = site.hg(
            "presence", "beat", "--course", site.people["course"], "--device", device,
            user=email("stu"), check=False,
        )  # fmt: skip
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert site.sql("SELECT * FROM student_presence") == []
