"""`humanglue worker` without a broker, as real processes: latency, concurrency, kill -9,
signals, --burst, and a database outage (CONTRACT §6–§7, issue 2).

The helpers at the top (`Worker`, `workers`, `stream`, `assert_exactly_once`) are shared with
tests/test_worker_celery.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from humanglue_cli.core.store import events
from tests.helpers import CLI, Site, TcpProxy, free_port, new_id, wait_until

RECOVERY = 10.0  # seconds within which a restarted worker or broker must have caught up


class Worker:
    """A `humanglue worker ARGS` process (or `program`), in a session of its own so that it is
    killed with its whole process group; its stdout and stderr go to `log_path`."""

    def __init__(
        self, site: Site, *args: str, program: list[str] | None = None, **env: str
    ) -> None:
        # Site.spawn's way, but closing our copy of the log file (it leaks a ResourceWarning).
        self.site = site
        self.log_path = site.home / f"worker-{uuid.uuid4().hex[:6]}.log"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                program or [CLI, "worker", *args],
                env=site.env(**env),
                text=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=site.home,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self, timeout: float = 60.0, says: str | None = None) -> Worker:
        """Wait until the worker's heartbeat row is in `hg_workers` (it polls from then on),
        or until its log `says` something."""

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log[-3000:]}")
            if says is not None:
                return says in self.log
            return bool(self.site.sql("SELECT 1 FROM hg_workers WHERE pid = :p", p=self.proc.pid))

        try:
            wait_until(up, timeout, every=0.05)
        except AssertionError as error:
            if self.proc.poll() is None:
                self.kill()  # never left running by a failed test
            raise AssertionError(f"{error}; the worker's log ends:\n{self.log[-3000:]}") from None
        return self

    def send(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        self.send(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL to the whole process group (a Celery worker and anything it started)."""
        self.send(signal.SIGKILL)
        self.proc.wait(10)


def cleaned_up() -> Iterator[list[Worker]]:
    """A list for every Worker a test starts; whatever still runs is killed afterwards."""
    started: list[Worker] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.kill()


workers = pytest.fixture(cleaned_up, name="workers")


def stream(site: Site, total: int, per_commit: int = 10, pause: float = 0.005) -> list[str]:
    """The platform enrolling students with plain SQL, a few per transaction."""
    ids: list[str] = []
    while len(ids) < total:
        ids += site.enroll_many(min(per_commit, total - len(ids)))
        time.sleep(pause)
    return ids


def assert_exactly_once(site: Site, enrollments: int) -> None:
    """Every enrollment reached ada and bob once: no loss, no duplicate, nothing left."""
    dupes = site.sql(
        "SELECT user_id, data ->> 'enrollment_id' AS e, count(*) FROM notifications "
        "WHERE type = 'enrollment' GROUP BY 1, 2 HAVING count(*) > 1"
        if site.backend == "postgres"
        else "SELECT user_id, json_extract(data, '$.enrollment_id') AS e, count(*) "
        "FROM notifications "
        "WHERE type = 'enrollment' GROUP BY 1, 2 HAVING count(*) > 1"
    )
    assert dupes == []
    assert site.count("type = 'enrollment'") == 2 * enrollments
    recipients = {str(r[0]) for r in site.sql("SELECT DISTINCT user_id FROM notifications")}
    assert recipients == {site.people["ada"], site.people["bob"]}
    assert site.sql("SELECT count(*) FROM hg_events")[0][0] == 0


def all_notified(site: Site, enrollments: int) -> bool:
    return site.count("type = 'enrollment'") >= 2 * enrollments and site.pending() == 0


def latencies(site: Site, samples: int = 5) -> list[float]:
    """Seconds from an enrollment's commit until both its notifications are visible."""
    found: list[float] = []
    for _ in range(samples):
        before = site.count()
        site.enroll()  # returns once committed
        start = time.monotonic()
        wait_until(lambda before=before: site.count() >= before + 2, timeout=5, every=0.002)
        found.append(time.monotonic() - start)
        time.sleep(0.05)
    return found


# --- the tests ----------------------------------------------------------------------------


def test_plain_sql_enrollment_reaches_both_instructors_within_a_second(
    site: Site, workers: list[Worker]
) -> None:
    workers.append(Worker(site).ready())
    found = latencies(site)
    print(
        f"\n{site.backend} embedded: commit -> notification p50 "
        f"{statistics.median(found) * 1000:.0f} ms, max {max(found) * 1000:.0f} ms"
    )
    assert max(found) < 1.0, found
    assert_exactly_once(site, len(found))


def test_two_workers_process_300_events_exactly_once(site: Site, workers: list[Worker]) -> None:
    workers += [Worker(site, "--batch-size", "7").ready() for _ in range(2)]
    stream(site, 300)
    wait_until(lambda: all_notified(site, 300), timeout=RECOVERY)
    assert_exactly_once(site, 300)
    if site.backend == "postgres":  # both took part: they claim side by side (SKIP LOCKED)
        assert all("processed" in w.log for w in workers)
    # SQLite has one writer, and its busy handler is no queue: the worker that commits a batch
    # may begin its next before the other's retry comes round, and so take every batch. Who
    # takes part is chance there; that nothing is lost or doubled is not.


def test_sigkill_mid_stream_loses_and_doubles_nothing(site: Site, workers: list[Worker]) -> None:
    first = Worker(site, "--batch-size", "3")
    workers.append(first.ready())
    writer = threading.Thread(target=stream, args=(site, 200), kwargs={"per_commit": 5})
    writer.start()
    wait_until(lambda: site.count() >= 40, timeout=RECOVERY, every=0.005)
    first.kill()  # mid-stream: most likely inside a batch's transaction
    writer.join()
    assert site.pending() > 0
    workers.append(Worker(site, "--batch-size", "3").ready())  # timed from when it is up
    restarted = time.monotonic()
    wait_until(lambda: all_notified(site, 200), timeout=RECOVERY)
    print(f"\n{site.backend} embedded: caught up {time.monotonic() - restarted:.2f}s after start")
    assert_exactly_once(site, 200)


def test_completed_reopened_completed_notifies_once(site: Site, workers: list[Worker]) -> None:
    workers.append(Worker(site).ready())
    enrollment = site.enroll()
    for status in ("completed", "active", "completed"):
        site.sql("UPDATE enrollments SET status = :s WHERE id = :i", s=status, i=enrollment)
        wait_until(lambda: site.pending() == 0, timeout=5)
    assert site.count("type = 'course_completion'") == 2  # ada and bob, once each


def test_each_course_edit_notifies_through_a_running_worker(
    site: Site, workers: list[Worker]
) -> None:
    # Each edit is its own event: ledger keys name the event id, which is never reused
    # (SQLite: AUTOINCREMENT on hg_events, or a processed row's id would come back).
    workers.append(Worker(site).ready())
    for title in ("Deep Listening II", "Deep Listening III"):
        site.sql(
            "UPDATE courses SET title = :t, updated_by = :u WHERE id = :c",
            t=title,
            u=site.people["bob"],
            c=site.people["course"],
        )
        wait_until(lambda: site.pending() == 0, timeout=5)
    assert site.count("type = 'co_instructor_update'") == 2  # to ada, once per edit


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_worker_cleanly(site: Site, workers: list[Worker], sig: int) -> None:
    worker = Worker(site)
    workers.append(worker.ready())
    assert worker.stop(sig) == 0, worker.log
    (stopped,) = site.sql("SELECT stopped_at FROM hg_workers")  # it said it stopped
    assert stopped[0] is not None
    assert "Traceback" not in worker.log


def test_burst_reports_processed_and_failed(site: Site) -> None:
    site.enroll_many(3)
    done = site.hg("worker", "--burst", "--json")
    assert json.loads(done.stdout) == {"processed": 3, "failed": 0}
    with site.engine.begin() as conn:
        events.enqueue(conn, "no.such.kind", new_id(), {})
    site.enroll()
    failed = site.hg("worker", "--burst", "--json", check=False)
    assert failed.returncode == 1, failed.stderr
    assert json.loads(failed.stdout) == {"processed": 1, "failed": 1}
    assert "unknown event kind" in failed.stderr and "Traceback" not in failed.stderr
    assert site.count("type = 'enrollment'") == 8


def test_no_schema_is_exit_1_with_a_hint(tmp_path: Path) -> None:
    proc = humanglue("worker", database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    assert proc.returncode == 1 and "humanglue db upgrade" in proc.stderr, proc.stderr


def test_burst_on_an_unreachable_database_is_exit_5() -> None:
    proc = humanglue("worker", "--burst", database_url=f"postgresql://127.0.0.1:{free_port()}/x")
    assert proc.returncode == 5, proc.stderr


def humanglue(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        env={**os.environ, "HUMANGLUE_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_embedded_worker_waits_out_a_database_outage(pg_site: Site, workers: list[Worker]) -> None:
    url = sa.make_url(pg_site.url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    try:
        behind = url.set(port=proxy.port).render_as_string(hide_password=False)
        worker = Worker(pg_site, HUMANGLUE_DATABASE_URL=behind)
        workers.append(worker.ready())
        pg_site.enroll()
        wait_until(lambda: pg_site.count() == 2, timeout=5)
        proxy.cut()
        pg_site.enroll_many(5)  # written while the worker cannot reach the database
        wait_until(lambda: "database unavailable" in worker.log, timeout=10)
        time.sleep(3)  # several failed attempts: still one line, no traceback
        assert worker.log.count("database unavailable") == 1 and "Traceback" not in worker.log
        assert worker.proc.poll() is None
        proxy.start()
        back = time.monotonic()
        wait_until(lambda: all_notified(pg_site, 6), timeout=RECOVERY, every=0.01)
        print(f"\nembedded: caught up {time.monotonic() - back:.2f}s after the database was back")
        assert time.monotonic() - back < 3.0  # the backoff is capped at 2 s
        assert "database reachable again" in worker.log
        assert_exactly_once(pg_site, 6)
        assert worker.stop() == 0
    finally:
        proxy.cut()


def test_status_pages_within_30s_of_killing_the_only_worker(
    site: Site, workers: list[Worker]
) -> None:
    # Given the only worker, alive: status is healthy
    worker = Worker(site)
    workers.append(worker.ready())
    assert site.hg("status").returncode == 0
    # When it is killed with kill -9 (no chance to say goodbye)
    worker.kill()
    killed = time.monotonic()
    # Then status fails within 30 s, and its workers line says why
    proc = wait_until(lambda: (p := site.hg("status", check=False)).returncode == 1 and p,
                      timeout=30, every=1.0)  # fmt: skip
    print(f"\n{site.backend}: status unhealthy {time.monotonic() - killed:.1f}s after kill -9")
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("FAIL  workers")]
    assert "no live worker" in line and proc.stdout.endswith("UNHEALTHY: workers\n")


SKEWED_CLOCK = """
import datetime as _dt, os, time as _time

_SKEW = float(os.environ["HG_TEST_CLOCK_SKEW"])
_real_time = _time.time
_time.time = lambda: _real_time() + _SKEW


class _Skewed(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return super().now(tz) + _dt.timedelta(seconds=_SKEW)

    @classmethod
    def utcnow(cls):
        return super().utcnow() + _dt.timedelta(seconds=_SKEW)


_dt.datetime = _Skewed
"""


def test_a_worker_whose_clock_is_20s_behind_delivers_at_once(
    site: Site, workers: list[Worker], tmp_path: Path
) -> None:
    # Given a worker whose clock is 20 s behind the database's (a sitecustomize skews it)
    (tmp_path / "skew").mkdir()
    (tmp_path / "skew" / "sitecustomize.py").write_text(SKEWED_CLOCK)
    workers.append(
        Worker(site, PYTHONPATH=str(tmp_path / "skew"), HG_TEST_CLOCK_SKEW="-20").ready()
    )
    # Then due-ness is the database's: a plain-SQL enrollment is notified within a second
    found = latencies(site, samples=3)
    assert max(found) < 1.0, found
