"""`humanglue worker` on a Redis broker: real Celery worker processes on PostgreSQL (issue 2).

The broker only carries wake-ups; the outbox is the truth. So a killed worker, lost messages
and a Redis restart cost latency, never a notification, and never a duplicate. Tests that
restart Redis use a private redis-server; the others keep to a logical database of their
own on the machine's Redis or on a private one, so that no stray wake-up of another test
run is consumed here (it would be harmless, but cost up to a second).
"""

from __future__ import annotations

import random
import statistics
import sys
import threading
import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from celery import Celery

from humanglue_cli.core.watch import WINDOW
from tests.conftest import PrivateRedis
from tests.helpers import CLI, Site, TcpProxy, new_id, wait_until
from tests.test_worker_embedded import (
    RECOVERY,
    Worker,
    all_notified,
    assert_exactly_once,
    cleaned_up,
    latencies,
    stream,
)
from worker.poller import REDISPATCH

pytestmark = pytest.mark.celery
workers = pytest.fixture(cleaned_up, name="workers")


def celery_worker(site: Site, broker: str, *args: str) -> Worker:
    """`humanglue worker` with a broker configured: it becomes a Celery worker (exec)."""
    return Worker(site, *args, HUMANGLUE_BROKER_URL=broker).ready(says=" ready.").ready()


@pytest.fixture
def shared_broker(redis_url: str) -> str:
    """The machine's Redis, on a logical database picked at random (1–15) for this test."""
    return f"{redis_url.rsplit('/', 1)[0]}/{random.randint(1, 15)}"


def test_plain_sql_enrollment_reaches_both_instructors_within_a_second(
    site: Site, shared_broker: str, workers: list[Worker]
) -> None:
    worker = celery_worker(site, shared_broker)
    workers.append(worker)
    found = latencies(site)
    print(
        f"\n{site.backend} celery: commit -> notification p50 "
        f"{statistics.median(found) * 1000:.0f} ms, max {max(found) * 1000:.0f} ms"
    )
    assert max(found) < 1.0, found
    assert_exactly_once(site, len(found))
    assert worker.stop() == 0, worker.log[-3000:]  # a warm shutdown
    (stopped,) = site.sql("SELECT stopped_at FROM hg_workers")  # it said it stopped
    assert stopped[0] is not None


def test_two_workers_process_300_events_exactly_once(
    pg_site: Site, private_redis: PrivateRedis, workers: list[Worker]
) -> None:
    workers += [celery_worker(pg_site, private_redis.url) for _ in range(2)]
    stream(pg_site, 300)
    wait_until(lambda: all_notified(pg_site, 300), timeout=RECOVERY)
    assert_exactly_once(pg_site, 300)


def test_sigkill_mid_stream_loses_and_doubles_nothing(
    pg_site: Site, private_redis: PrivateRedis, workers: list[Worker]
) -> None:
    first = celery_worker(pg_site, private_redis.url)
    workers.append(first)
    writer = threading.Thread(target=stream, args=(pg_site, 300), kwargs={"per_commit": 5})
    writer.start()
    wait_until(lambda: pg_site.count() >= 40, timeout=RECOVERY, every=0.005)
    first.kill()  # the whole process group, mid-stream; its unacked message stays in Redis
    writer.join()
    assert pg_site.pending() > 0
    # Timed from when it is up: a Celery worker's start takes seconds on a loaded machine.
    workers.append(Worker(pg_site, HUMANGLUE_BROKER_URL=private_redis.url))
    workers[-1].ready(says=" ready.")
    restarted = time.monotonic()
    wait_until(lambda: all_notified(pg_site, 300), timeout=RECOVERY)
    print(f"\ncelery: caught up {time.monotonic() - restarted:.2f}s after its start")
    assert_exactly_once(pg_site, 300)


def test_redis_restart_mid_stream_loses_and_doubles_nothing(
    pg_site: Site, private_redis: PrivateRedis, workers: list[Worker]
) -> None:
    worker = celery_worker(pg_site, private_redis.url)
    workers.append(worker)
    stream(pg_site, 100)
    with pg_site.engine.begin() as lock:
        # Hold tasks mid-flight: both threads wait on the ledger, wake-ups pile up unacked.
        lock.execute(sa.text("LOCK TABLE hg_ledger IN EXCLUSIVE MODE"))
        # In two steps: events that all came at once could be one batch of the watch's, and
        # a wake-up for them would find nothing left to claim.
        stream(pg_site, 10)
        wait_until(lambda: waiting_on_locks(pg_site) >= 1, timeout=RECOVERY)
        stream(pg_site, 40)
        wait_until(lambda: waiting_on_locks(pg_site) >= 2, timeout=RECOVERY)
        time.sleep(1.2)  # the poller re-sends its wake-up each second
        private_redis.stop()  # every queued message is gone; the worker keeps running
    stream(pg_site, 50)
    time.sleep(1.0)  # shorter than the poller's stall fallback: recovery is Celery's own
    offset = len(worker.log)
    private_redis.start()
    back = time.monotonic()
    stream(pg_site, 50)
    wait_until(lambda: all_notified(pg_site, 250), timeout=RECOVERY)
    print(f"\ncelery: caught up {time.monotonic() - back:.2f}s after Redis was back")
    assert worker.proc.poll() is None, worker.log[-3000:]
    assert_exactly_once(pg_site, 250)
    # The consumer itself is back, not only the poller's fallback (which may have covered the
    # seconds before the poller's own broker retry): once both have seen Redis again, wake-ups
    # are consumed by Celery and the poller processes nothing itself.
    wait_until(lambda: "Connected to redis" in worker.log[offset:], timeout=RECOVERY)
    time.sleep(2 * REDISPATCH + 0.5)  # past the poller's broker backoff cap
    settled = len(worker.log)
    assert max(latencies(pg_site, samples=2)) < 1.0
    assert "poller processed" not in worker.log[settled:], worker.log[settled:]
    assert "Unrecoverable" not in worker.log


def waiting_on_locks(site: Site) -> int:
    return int(
        site.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
            "current_database() AND wait_event_type = 'Lock'"
        )[0][0]
    )


def test_broker_down_the_worker_processes_the_outbox_itself(
    pg_site: Site, private_redis: PrivateRedis, workers: list[Worker]
) -> None:
    worker = celery_worker(pg_site, private_redis.url)
    workers.append(worker)
    private_redis.stop()
    # New events: the worker's watch drains them itself at once; no wake-up is needed
    stream(pg_site, 50)
    wait_until(lambda: all_notified(pg_site, 50), timeout=RECOVERY)
    assert max(latencies(pg_site, samples=2)) < 1.0
    # Work the watch does not see — a late commit, its ids taken before newer events that
    # committed more than the watch's window ago — is the poller's: it cannot wake anyone, so
    # it processes the outbox itself (STALL and a bit), and says so.
    with pg_site.engine.begin() as late:
        late.execute(
            sa.text("INSERT INTO enrollments (id, course_id, student_id) VALUES (:i, :c, :s)"),
            [
                {"i": new_id(), "c": pg_site.people["course"], "s": pg_site.people["stu"]}
                for _ in range(3)
            ],
        )
        pg_site.enroll()
        wait_until(lambda: all_notified(pg_site, 53), timeout=RECOVERY)
        time.sleep(WINDOW + 0.5)
    wait_until(lambda: all_notified(pg_site, 56), timeout=RECOVERY)
    assert "processing the outbox in the poller" in worker.log
    private_redis.start()
    offset = len(worker.log)
    wait_until(lambda: "Connected to redis" in worker.log[offset:], timeout=RECOVERY)
    assert max(latencies(pg_site, samples=2)) < 1.0
    assert_exactly_once(pg_site, 58)


def test_celery_entry_points_start(
    pg_site: Site, private_redis: PrivateRedis, workers: list[Worker]
) -> None:
    """CONTRACT §1: `celery -A worker worker` and `celery -A worker beat` work."""
    celery = [sys.executable, "-m", "celery", "-A", "worker"]
    env = {"HUMANGLUE_BROKER_URL": private_redis.url}
    plain = Worker(
        pg_site, program=[*celery, "worker", "--concurrency", "1", "--loglevel", "INFO"], **env
    )
    beat = Worker(
        pg_site,
        program=[
            *celery,
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(pg_site.home / "beat-schedule"),
        ],
        **env,
    )
    workers += [plain, beat]
    plain.ready(says=" ready.").ready()
    beat.ready(says="beat: Starting")
    assert max(latencies(pg_site, samples=2)) < 1.0
    assert plain.stop() == 0 and beat.stop() == 0, plain.log[-2000:] + beat.log[-2000:]


def test_settings_of_flags_and_config_file_reach_the_celery_worker(
    pg_site: Site, private_redis: PrivateRedis, workers: list[Worker]
) -> None:
    # Given a retention that only the config file sets, and the broker only a flag
    config = pg_site.home / "humanglue.toml"
    config.write_text('notification_retention = "90d"\n')
    cli = [CLI, "--config", str(config), "--broker-url", private_redis.url, "worker"]
    # And the same file for a `celery -A worker worker` started by hand
    by_hand = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel", "INFO"]
    for program, env in (
        (cli, {}),
        (by_hand, {"HUMANGLUE_CONFIG": str(config), "HUMANGLUE_BROKER_URL": private_redis.url}),
    ):
        pg_site.sql("DELETE FROM hg_maintenance_runs")
        worker = Worker(pg_site, program=program, **env)
        workers.append(worker)  # killed afterwards whatever happens
        worker.ready(says=" ready.").ready()
        # When a cleanup runs in that worker: the one sent to it, or the one its schedule
        # catches up on at start (today's tick, its run forgotten above), whichever is first —
        # the other finds it running and leaves it be
        Celery(broker=private_redis.url).send_task("humanglue.cleanup", queue="humanglue")
        run = wait_until(
            lambda: pg_site.sql(
                "SELECT ran_at, result FROM hg_maintenance_runs "
                "WHERE task = 'cleanup' AND finished_at IS NOT NULL"
            )
        )
        # Then it used the file's 90 days, not the 30-day default
        ran_at, result = run[0]
        cutoff = datetime.fromisoformat(result["cutoffs"]["notifications"])
        assert abs((ran_at - cutoff) - timedelta(days=90)) < timedelta(minutes=1), result
        assert worker.stop() == 0


def test_an_idle_worker_is_quiet_and_a_database_outage_is_one_line(
    pg_site: Site, private_redis: PrivateRedis, workers: list[Worker]
) -> None:
    url = sa.make_url(pg_site.url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    try:
        behind = url.set(port=proxy.port).render_as_string(hide_password=False)
        worker = (
            Worker(pg_site, HUMANGLUE_BROKER_URL=private_redis.url, HUMANGLUE_DATABASE_URL=behind)
            .ready(says=" ready.")
            .ready()
        )
        workers.append(worker)
        # Idle: nothing at all is written
        time.sleep(1.0)
        quiet = len(worker.log)
        time.sleep(4.0)
        assert worker.log[quiet:] == ""
        # The database goes away for a while, events wait
        proxy.cut()
        pg_site.enroll_many(5)
        wait_until(lambda: "database unavailable" in worker.log, timeout=10)
        time.sleep(4.0)
        proxy.start()
        wait_until(lambda: all_notified(pg_site, 5), timeout=RECOVERY)
        during = worker.log[quiet:]
        # One line when it started, one when it ended; no traceback; not blamed on the broker
        assert during.count("database unavailable") == 1, during
        assert "reachable again" in during and "Traceback" not in during
        assert "processing the outbox in the poller" not in during
        assert_exactly_once(pg_site, 5)
    finally:
        proxy.cut()


def test_tls_to_a_plaintext_redis_says_so_and_stops_on_sigterm(
    site: Site, private_redis: PrivateRedis, workers: list[Worker]
) -> None:
    broker = f"rediss://127.0.0.1:{private_redis.port}/0"
    worker = Worker(site, HUMANGLUE_BROKER_URL=broker)
    workers.append(worker)
    wait_until(lambda: f"cannot reach {broker}" in worker.log, timeout=20)
    worker.ready()  # it runs: the outbox is processed by the poller meanwhile
    site.enroll()
    try:
        wait_until(lambda: all_notified(site, 1), timeout=RECOVERY)
    except AssertionError:
        raise AssertionError(worker.log[-3000:]) from None
    started = time.monotonic()
    worker.stop(timeout=20)
    assert time.monotonic() - started < 15


def test_beat_keeps_no_state_on_disk(
    site: Site, private_redis: PrivateRedis, workers: list[Worker]
) -> None:
    # The database's claims say what ran (tests/test_schedule.py): beat keeps nothing.
    state = site.home / "state"
    beat = Worker(
        site,
        program=[CLI, "beat"],
        HUMANGLUE_BROKER_URL=private_redis.url,
        XDG_STATE_HOME=str(state),
    )
    workers.append(beat)
    beat.ready(says="beat: Starting")
    time.sleep(1.0)
    assert beat.stop() == 0
    assert not list(site.home.rglob("celerybeat-schedule*"))  # neither here nor in state
