"""Scheduled maintenance inside the workers (issue 9): each tick runs exactly once.

Schedules here carry croniter's sixth field, seconds (`* * * * * */2`: every two seconds),
so that real workers and a real beat show in seconds what an every-minute schedule does in
minutes. The clock that decides a tick is the database's; the core-level tests pass one in.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from humanglue_cli.core import maintenance, schedule
from humanglue_cli.core.db import create_engine
from humanglue_cli.core.settings import Settings, load_settings
from humanglue_cli.core.store import runs
from tests.conftest import PrivateRedis
from tests.helpers import CLI, Site, wait_until
from tests.test_worker_embedded import Worker, cleaned_up

workers = pytest.fixture(cleaned_up, name="workers")

EVERY_2S = "* * * * * */2"
TICK_LINE = re.compile(r"cleanup ran for (\S+):")


def settings_for(site: Site) -> Settings:
    return load_settings(database_url=site.url)


def job(name: str, expression: str, tz: str = "UTC") -> schedule.Job:
    from zoneinfo import ZoneInfo

    return schedule.Job(name, expression, ZoneInfo(tz))


def old_notifications(site: Site, count: int, age: str) -> None:
    """`count` notifications to stu created `age` ago (a SQL interval / SQLite modifier)."""
    if site.backend == "postgres":
        site.sql(
            "INSERT INTO notifications (user_id, type, title, message, created_at) "
            "SELECT :u, 'system_announcement', 't', 'm', now() - CAST(:age AS interval) "
            "FROM generate_series(1, :n)",
            u=site.people["stu"],
            age=age,
            n=count,
        )
    else:
        site.sql(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
            "INSERT INTO notifications (user_id, type, title, message, created_at) "
            "SELECT :u, 'system_announcement', 't', 'm', "
            "strftime('%Y-%m-%d %H:%M:%f', 'now', :age) FROM s",
            u=site.people["stu"],
            age=f"-{age}",
            n=count,
        )


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "config", "named"),
    [
        ({"HUMANGLUE_CLEANUP_SCHEDULE": "61 * * * *"}, "", "HUMANGLUE_CLEANUP_SCHEDULE"),
        ({"HUMANGLUE_PRESENCE_SWEEP_SCHEDULE": "every minute"}, "", "PRESENCE_SWEEP_SCHEDULE"),
        ({}, 'cleanup_schedule = "* * *"\n', "cleanup_schedule in "),
        ({"HUMANGLUE_SCHEDULE_TZ": "Mars/Olympus"}, "", "HUMANGLUE_SCHEDULE_TZ"),
        ({}, 'schedule_tz = "Nowhere"\n', "schedule_tz in "),
    ],
)
def test_a_bad_schedule_or_zone_is_exit_2_at_start_naming_it(
    tmp_path: Path, env: dict[str, str], config: str, named: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config)
    database = tmp_path / "never.db"
    base = {k: v for k, v in os.environ.items() if not k.startswith("HUMANGLUE_")}
    base["HUMANGLUE_DATABASE_URL"] = f"sqlite:///{database}"
    for args in (["worker"], ["maintenance", "schedule"], ["beat"]):
        extra = {"HUMANGLUE_BROKER_URL": "redis://127.0.0.1:6379/0"} if args == ["beat"] else {}
        proc = subprocess.run(
            [CLI, "--config", str(path), *args],
            env={**base, **env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and named in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not database.exists()


def test_schedule_prints_the_next_three_runs_utc_in_json(site: Site) -> None:
    asked = datetime.now(UTC)
    proc = site.hg(
        "maintenance",
        "schedule",
        "--json",
        HUMANGLUE_CLEANUP_SCHEDULE="0 3 * * *",
        HUMANGLUE_SCHEDULE_TZ="America/New_York",
    )
    jobs = {j["name"]: j for j in json.loads(proc.stdout)["jobs"]}
    assert set(jobs) == {"cleanup", "presence_sweep"}
    assert jobs["cleanup"]["schedule"] == "0 3 * * *"
    assert jobs["presence_sweep"]["schedule"] == "* * * * *"
    from zoneinfo import ZoneInfo

    nyc = ZoneInfo("America/New_York")
    runs_ = [datetime.fromisoformat(t) for t in jobs["cleanup"]["next_runs"]]
    assert len(runs_) == 3 and all(t.utcoffset() == timedelta(0) for t in runs_)
    assert all(t.astimezone(nyc).hour == 3 for t in runs_)
    # A day apart on New York's calendar (in UTC 23 or 25 hours across a change of its clocks)
    days = [t.astimezone(nyc).date() for t in runs_]
    assert [b - a for a, b in zip(days, days[1:], strict=False)] == [timedelta(days=1)] * 2
    minutes = [datetime.fromisoformat(t) for t in jobs["presence_sweep"]["next_runs"]]
    assert minutes[0] > asked and minutes[2] - minutes[0] == timedelta(minutes=2)


# --- claims, in the core ---------------------------------------------------------------------


def test_a_missed_tick_runs_once_on_return_not_once_per_missed_tick(site: Site) -> None:
    settings = settings_for(site)
    sweep = job("presence_sweep", "* * * * *")
    t0 = datetime(2026, 11, 27, 10, 0, 30, tzinfo=UTC)
    # Given a tick that ran
    assert schedule.run_tick(site.engine, settings, sweep, "a", t0) is not None
    # When everything was down for ten minutes, and two workers come back
    back = t0 + timedelta(minutes=10, seconds=5)
    first = schedule.run_tick(site.engine, settings, sweep, "a", back)
    second = schedule.run_tick(site.engine, settings, sweep, "b", back)
    # Then the latest missed tick ran once, and none of the nine before it
    assert first is not None and second is None
    ticks = [r[0] for r in site.sql("SELECT scheduled_for FROM hg_maintenance_runs ORDER BY 1")]
    assert [str(t)[:19].replace("T", " ") for t in ticks] == [
        "2026-11-27 10:00:00",
        "2026-11-27 10:10:00",
    ]


def test_a_run_whose_worker_died_is_taken_over_once_its_lease_runs_out(site: Site) -> None:
    with site.engine.begin() as conn:
        tick = datetime(2026, 11, 27, 3, 17, tzinfo=UTC)
        first = runs.claim(conn, "cleanup", tick, "dead", timedelta(seconds=1))
    assert first is not None
    with site.engine.begin() as conn:  # while its lease holds: nobody else, not even by hand
        assert runs.claim(conn, "cleanup", tick, "b", timedelta(seconds=60)) is None
        assert runs.claim(conn, "cleanup", None, "c", timedelta(seconds=60)) is None
    time.sleep(1.2)
    with site.engine.begin() as conn:
        assert runs.claim(conn, "cleanup", tick, "b", timedelta(seconds=60)) == first
    with site.engine.begin() as conn:  # the dead one cannot finish it any more
        assert not runs.renew(conn, first, "dead", timedelta(seconds=60))
        assert runs.finish(conn, first, "b", {"deleted": {}})
        assert runs.claim(conn, "cleanup", tick, "c", timedelta(seconds=60)) is None


def test_the_sweep_marks_stale_presence_offline_and_the_cleanup_removes_it_later(
    site: Site,
) -> None:
    from tests.test_cli_inbox import presence

    presence(site, "stu", "online", "5 minutes")  # a device that vanished
    presence(site, "sam", "away", "2 minutes")
    presence(site, "sam", "online", "10 seconds")  # beating
    presence(site, "stu", "offline", "30 hours")  # past the presence retention
    settings = settings_for(site)
    result = schedule.run_tick(site.engine, settings, job("presence_sweep", "* * * * *"), "a")
    assert result == {"swept": 2, "deleted": {}}
    statuses = sorted(r[0] for r in site.sql("SELECT status FROM student_presence"))
    assert statuses == ["offline", "offline", "offline", "online"]
    cleaned = schedule.run_tick(site.engine, settings, job("cleanup", "* * * * *"), "a")
    assert cleaned is not None and cleaned["deleted"]["presence"] == 1
    assert len(site.sql("SELECT 1 FROM student_presence")) == 3


def test_runs_lists_the_newest_first_a_hand_started_cleanup_without_a_tick(site: Site) -> None:
    old_notifications(site, 3, "40 days")
    settings = settings_for(site)
    schedule.run_tick(site.engine, settings, job("presence_sweep", "* * * * *"), "a")
    site.hg("maintenance", "cleanup", "--json")
    items = json.loads(site.hg("maintenance", "runs", "--json").stdout)["items"]
    assert [i["job"] for i in items] == ["cleanup", "presence_sweep"]
    hand, sweep = items
    assert hand["scheduled_for"] is None and hand["deleted"]["notifications"] == 3
    assert sweep["scheduled_for"].endswith(":00+00:00") and sweep["deleted"] == {}
    for item in items:
        started = datetime.fromisoformat(item["started_at"])
        assert started <= datetime.fromisoformat(item["finished_at"])
    limited = json.loads(site.hg("maintenance", "runs", "--limit", "1", "--json").stdout)
    assert limited["items"] == [hand]
    text = site.hg("maintenance", "runs").stdout.splitlines()  # plain text into a pipe
    assert text[0].startswith("cleanup") and "by hand" in text[0] and "3 notifications" in text[0]
    assert text[1].startswith("presence_sweep") and len(text) == 2
    bad = site.hg("maintenance", "runs", "--limit", "0", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_tick_missed_while_the_worker_was_down_runs_once_when_it_returns(
    site: Site, workers: list[Worker]
) -> None:
    env = {"HUMANGLUE_CLEANUP_SCHEDULE": EVERY_2S}
    first = Worker(site, **env)
    workers.append(first)
    first.ready()
    time.sleep(2.5)
    assert first.stop() == 0
    stopped = datetime.now(UTC)
    time.sleep(5.0)  # two or three ticks go by with no worker
    back = datetime.now(UTC)
    second = Worker(site, **env)
    workers.append(second)
    second.ready()
    time.sleep(1.0)
    assert second.stop() == 0
    with site.engine.connect() as conn:
        found = runs.recent(conn, 100)
    ticks = sorted(r.scheduled_for for r in found if r.task == "cleanup" and r.scheduled_for)
    # Ticks fell due at least every two seconds while it was down (two or more); none of
    # them ran but the latest, on return
    after_stop = [t for t in ticks if t > stopped]
    assert after_stop, (stopped, back, ticks)
    assert after_stop[0] >= back - timedelta(seconds=2), (stopped, back, ticks)
    assert after_stop[0] - stopped > timedelta(seconds=2)  # earlier ticks were skipped


# --- maintenance cleanup ---------------------------------------------------------------------


def test_a_second_cleanup_while_one_runs_says_so_and_exits_0(site: Site) -> None:
    old_notifications(site, 5, "40 days")
    with site.engine.begin() as conn:
        assert runs.claim(conn, "cleanup", None, "other", maintenance.LEASE) is not None
    proc = site.hg("maintenance", "cleanup", "--json")
    assert proc.returncode == 0 and proc.stdout == ""
    assert "another cleanup is running" in proc.stderr
    assert site.count() == 5  # nothing deleted


def test_two_cleanups_at_once_delete_everything_once_without_an_error(site: Site) -> None:
    old_notifications(site, 30_000, "40 days")
    old_notifications(site, 100, "2 days")
    procs = [
        subprocess.Popen(
            [CLI, "maintenance", "cleanup", "--json"],
            env=site.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    deleted = [json.loads(out)["deleted"]["notifications"] for out, _ in outs if out]
    said = [err for out, err in outs if not out]
    assert sum(deleted) == 30_000 and all("another cleanup is running" in e for e in said)
    assert site.count() == 100
    assert site.sql("SELECT count(*) FROM hg_maintenance_runs WHERE finished_at IS NULL") == [(0,)]


def test_cleanup_while_the_platform_inserts_never_holds_it_up(site: Site) -> None:
    # Given 100,000 expired notifications (SQLite: one delete of them holds the only write
    # lock for seconds) and some that are not expired
    old_notifications(site, 100_000, "40 days")
    old_notifications(site, 50, "29 days")
    waits: list[float] = []
    stop = threading.Event()
    engine = create_engine(site.url) if site.backend == "postgres" else site.engine

    def insert() -> None:
        while not stop.is_set():
            started = time.monotonic()
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO notifications (user_id, type, title, message) "
                        "VALUES (:u, 'system_announcement', 'new', 'm')"
                    ),
                    {"u": site.people["sam"]},
                )
            waits.append(time.monotonic() - started)
            stop.wait(0.005)

    inserter = threading.Thread(target=insert)
    inserter.start()
    try:
        time.sleep(0.3)
        # When the cleanup runs meanwhile
        proc = site.hg("maintenance", "cleanup", "--json")
        time.sleep(0.2)
    finally:
        stop.set()
        inserter.join()
        if engine is not site.engine:
            engine.dispose()
    # Then every insert went through within a fraction of a second, and only the expired went
    result = json.loads(proc.stdout)
    assert result["deleted"]["notifications"] == 100_000
    assert site.count("type = 'system_announcement' AND title = 't'") == 50
    assert site.count("title = 'new'") == len(waits) > 20
    print(f"\n{site.backend}: {len(waits)} inserts during cleanup, max wait {max(waits):.3f}s")
    assert max(waits) < 0.25


# --- real workers and beat -------------------------------------------------------------------


def logged_ticks(*logs: str) -> collections.Counter[str]:
    return collections.Counter(t for log in logs for t in TICK_LINE.findall(log))


def test_two_workers_and_a_beat_run_each_tick_exactly_once(
    pg_site: Site, private_redis: PrivateRedis, workers: list[Worker]
) -> None:
    # Given two Celery workers, an embedded worker and a beat, all on a two-second schedule
    env = {
        "HUMANGLUE_CLEANUP_SCHEDULE": EVERY_2S,
        "HUMANGLUE_PRESENCE_SWEEP_SCHEDULE": EVERY_2S,
    }
    celery = {"HUMANGLUE_BROKER_URL": private_redis.url, **env}
    workers.extend(Worker(pg_site, **celery) for _ in range(2))
    workers.append(Worker(pg_site, program=[CLI, "beat"], **celery))
    workers.append(Worker(pg_site, **env))
    workers[0].ready(says=" ready.")
    workers[1].ready(says=" ready.")
    workers[2].ready(says="beat: Starting")
    workers[3].ready()
    # When they run for eight seconds (and until two of them have claimed a tick: four
    # claimants racing for each of a few ticks, one may by chance win them all at first)
    time.sleep(8)
    owners = "SELECT count(DISTINCT owner) FROM hg_maintenance_runs"
    wait_until(lambda: pg_site.sql(owners)[0][0] >= 2, timeout=30)
    for w in workers:
        assert w.stop() == 0, w.log[-2000:]
    # Then every tick ran once: one run each, all finished, none missing in between
    rows = pg_site.sql(
        "SELECT task, scheduled_for, ran_at, finished_at, owner FROM hg_maintenance_runs "
        "WHERE scheduled_for > now() - interval '1 hour' ORDER BY scheduled_for"
    )
    for task in ("cleanup", "presence_sweep"):
        ticks = [r.scheduled_for for r in rows if r.task == task]
        assert len(ticks) >= 3
        assert all(b - a == timedelta(seconds=2) for a, b in zip(ticks, ticks[1:], strict=False))
    assert all(r.finished_at is not None for r in rows)
    said = logged_ticks(*(w.log for w in workers))
    assert said and set(said.values()) == {1}, said
    assert len({r.owner for r in rows}) >= 2  # several claimants took part
    assert "Sending due task cleanup" in workers[2].log  # beat was in the race too


def test_a_settings_files_schedule_and_retention_reach_a_celery_worker(
    pg_site: Site, private_redis: PrivateRedis, workers: list[Worker]
) -> None:
    config = pg_site.home / "humanglue.toml"
    config.write_text(f'cleanup_schedule = "{EVERY_2S}"\nnotification_retention = "90d"\n')
    program = [CLI, "--config", str(config), "--broker-url", private_redis.url, "worker"]
    worker = Worker(pg_site, program=program)
    workers.append(worker)
    worker.ready(says=" ready.")

    def two_runs() -> list[object]:
        found = pg_site.sql(
            "SELECT scheduled_for, ran_at, result FROM hg_maintenance_runs WHERE "
            "task = 'cleanup' AND finished_at IS NOT NULL ORDER BY scheduled_for"
        )
        return found if len(found) >= 3 else []

    found = wait_until(two_runs, timeout=15)
    assert worker.stop() == 0
    # Every two seconds (the file's schedule, not 03:17), with the file's 90 days
    ticks = [r.scheduled_for for r in found[1:]]  # the first: the tick missed before it started
    assert all(b - a == timedelta(seconds=2) for a, b in zip(ticks, ticks[1:], strict=False))
    for _, ran_at, result in found:
        cutoff = datetime.fromisoformat(result["cutoffs"]["notifications"])
        assert abs((ran_at - cutoff) - timedelta(days=90)) < timedelta(minutes=1), result


def test_worker_and_beat_leave_the_working_directory_untouched(
    tmp_path: Path, pg_site: Site, private_redis: PrivateRedis
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = pg_site.env(
        HUMANGLUE_BROKER_URL=private_redis.url,
        HUMANGLUE_CLEANUP_SCHEDULE=EVERY_2S,
        XDG_STATE_HOME=str(tmp_path / "state"),
    )
    procs = [
        subprocess.Popen(
            [CLI, *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for args in (["worker"], ["beat"], ["worker", "--burst"])
    ]
    try:
        runs = "SELECT count(*) FROM hg_maintenance_runs"
        wait_until(lambda: pg_site.sql(runs)[0][0] >= 2, timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 15)
            p.wait(20)
    assert list(cwd.iterdir()) == []
    assert not list(tmp_path.rglob("celerybeat-schedule*"))


def test_beat_never_skips_a_tick_that_falls_between_two_looks_at_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Celery beat asks a schedule "due?" and "how long until the next?" in one call. With the
    clock read twice, a tick between the two readings was neither (the next wait ran past it):
    seen 10:14 → 10:15, then 10:16 sent twice. One reading answers both."""
    from zoneinfo import ZoneInfo

    from worker import schedule as beat_schedule

    readings = iter(
        [
            datetime(2026, 11, 27, 10, 14, 59, 999_000, tzinfo=UTC),
            datetime(2026, 11, 27, 10, 15, 0, 1_000, tzinfo=UTC),
        ]
    )

    class Clock(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return next(readings)

    monkeypatch.setattr(beat_schedule, "datetime", Clock)
    tick = beat_schedule.CronTick(schedule.Job("cleanup", "* * * * *", ZoneInfo("UTC")))
    due, wait = tick.is_due(datetime(2026, 11, 27, 10, 14, tzinfo=UTC))
    assert not due and wait <= 0.01  # back at 10:15:00, not at 10:16
