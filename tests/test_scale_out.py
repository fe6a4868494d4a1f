"""Scale-out (issue 10): three Celery worker processes on one PostgreSQL database, at load.

Several connections write the platform's tables with plain SQL — enrollments, completions
(some reopened and completed again), reviews, questions, payments (some pending, then
succeeded, refunded and succeeded again) — while three `humanglue worker` processes share the
outbox through one Redis of the test's own. Once all three have processed events (their
`hg_workers` rows count them), one is killed with SIGKILL mid-stream and a fourth started.
Then every event must be processed, each expected notification be there exactly once, and
nothing be left pending or failed (CONTRACT §6).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from tests.conftest import PrivateRedis
from tests.helpers import Site, new_id, wait_until
from tests.test_worker_embedded import Worker, cleaned_up

pytestmark = [pytest.mark.celery, pytest.mark.slow]
workers = pytest.fixture(cleaned_up, name="workers")

WRITERS = 4  # connections writing at once
ROWS_PER_COMMIT = 8
PAUSE = 0.06  # seconds between a writer's transactions: ~500 events/s in all
HEARTBEAT_WAIT = 20.0  # a worker's count reaches hg_workers at its next beat (every 5 s)
DRAINED_WAIT = 30.0  # the killed worker's leases (3 s) run out, and the backlog is drained

Expected = Counter[tuple[str, str, str]]  # (type, entity id, recipient) -> times


@dataclass
class Writer:
    """One platform connection: what it committed, as the notifications it must yield."""

    site: Site
    seed: int
    expected: Expected = field(default_factory=Counter)
    open_enrollments: list[tuple[str, str]] = field(default_factory=list)
    completed: list[tuple[str, str]] = field(default_factory=list)
    payments: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (course, status)
    succeeded_once: set[str] = field(default_factory=set)
    error: BaseException | None = None

    def run(self, stop: threading.Event) -> None:
        rng = random.Random(self.seed)
        try:
            while not stop.is_set():
                with self.site.engine.begin() as conn:
                    due = self._transaction(conn, rng)
                self.expected.update(due)  # counted once committed
                stop.wait(PAUSE)
        except BaseException as error:  # reported by the test, not lost in a thread
            self.error = error

    def _transaction(self, conn: sa.Connection, rng: random.Random) -> Expected:
        due: Expected = Counter()
        opened, completed, paid = [], [], dict(self.payments)
        succeeded: set[str] = set()  # payments that were `succeeded` at some point of it
        for _ in range(ROWS_PER_COMMIT):
            course = rng.choice(["course", "course", "other_course"])
            cid, student = self.site.people[course], self.site.people[rng.choice(["stu", "sam"])]
            roll = rng.random()
            if roll < 0.45:
                eid = self._insert(conn, "enrollments", course_id=cid, student_id=student)
                opened.append((eid, course))
                due.update(self._to(course, "enrollment", eid))
            elif roll < 0.55:
                rid = self._insert(
                    conn, "course_reviews", course_id=cid, student_id=student, rating=5
                )
                due.update(self._to(course, "review", rid))
            elif roll < 0.62:
                qid = self._insert(
                    conn, "course_questions", course_id=cid, student_id=student, body="When?"
                )
                due.update(self._to(course, "student_question", qid))
            elif roll < 0.72:
                status = rng.choice(["succeeded", "pending"])
                pid = self._insert(
                    conn,
                    "payments",
                    user_id=student,
                    course_id=cid,
                    amount_cents=4900,
                    status=status,
                )
                paid[pid] = (course, status)
                if status == "succeeded":
                    succeeded.add(pid)
            elif roll < 0.86 and self.open_enrollments:
                eid, course = self.open_enrollments.pop(rng.randrange(len(self.open_enrollments)))
                self._status(conn, "enrollments", eid, "completed")
                completed.append((eid, course))
                due.update(self._to(course, "course_completion", eid))
            elif roll < 0.93 and self.completed:  # reopened and completed again: no new one
                eid, _ = rng.choice(self.completed)
                self._status(conn, "enrollments", eid, "active")
                self._status(conn, "enrollments", eid, "completed")
            elif paid:  # a payment moves on: pending/refunded -> succeeded -> refunded
                pid = rng.choice(list(paid))
                course, status = paid[pid]
                status = "refunded" if status == "succeeded" else "succeeded"
                self._status(conn, "payments", pid, status)
                paid[pid] = (course, status)
                if status == "succeeded":
                    succeeded.add(pid)
        for pid in succeeded - self.succeeded_once:  # once per payment, ever
            due.update(self._to(paid[pid][0], "payment", pid))
        self.succeeded_once |= succeeded
        # Only what committed is remembered for later transactions.
        self.open_enrollments += opened
        self.completed += completed
        self.payments = paid
        return due

    def _insert(self, conn: sa.Connection, table: str, **values: object) -> str:
        row_id = new_id()
        columns = ", ".join(["id", *values])
        params = ", ".join(f":{k}" for k in ["id", *values])
        conn.execute(
            sa.text(f"INSERT INTO {table} ({columns}) VALUES ({params})"), {"id": row_id, **values}
        )
        return row_id

    def _status(self, conn: sa.Connection, table: str, row_id: str, status: str) -> None:
        conn.execute(
            sa.text(f"UPDATE {table} SET status = :s WHERE id = :i"), {"s": status, "i": row_id}
        )

    def _to(self, course: str, kind: str, entity: str) -> Expected:
        instructors = ["ada", "bob"] if course == "course" else ["cy"]
        return Counter((kind, entity, self.site.people[i]) for i in instructors)


ENTITY_KEY = {
    "enrollment": "enrollment_id",
    "course_completion": "enrollment_id",
    "review": "review_id",
    "student_question": "question_id",
    "payment": "payment_id",
}


def delivered(site: Site) -> Expected:
    """Every notification, as (type, the id of the entity it is about, recipient)."""
    rows = site.sql("SELECT type, data, user_id FROM notifications")
    return Counter((t, str(data[ENTITY_KEY[t]]), str(user)) for t, data, user in rows)


def processed_by(site: Site, worker: Worker) -> int:
    """The events `worker` processed, as its last heartbeat said (0 before its first)."""
    rows = site.sql("SELECT processed FROM hg_workers WHERE pid = :p", p=worker.proc.pid)
    return int(rows[0][0]) if rows else 0


@contextlib.contextmanager
def writing(site: Site) -> Iterator[list[Writer]]:
    """Platform writers on connections of their own, until the block ends (whatever happens)."""
    stop = threading.Event()
    found = [Writer(site, seed) for seed in range(WRITERS)]
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in found]
    for t in threads:
        t.start()
    try:
        yield found
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    for w in found:
        assert w.error is None, repr(w.error)


def committed(platform: list[Writer]) -> Expected:
    return sum((w.expected for w in platform), Counter())


def test_three_celery_workers_at_load_deliver_exactly_once_through_a_kill(
    pg_site: Site, private_redis: PrivateRedis, workers: list[Worker]
) -> None:
    # Given three Celery workers on one database and one Redis
    broker = {"HUMANGLUE_BROKER_URL": private_redis.url}
    workers += [Worker(pg_site, **broker) for _ in range(3)]
    for w in workers:
        w.ready(says=" ready.").ready()
    started = time.monotonic()
    # When the platform writes from several connections
    with writing(pg_site) as platform:
        # and every worker has processed some of it,
        wait_until(lambda: all(processed_by(pg_site, w) > 0 for w in workers), HEARTBEAT_WAIT)
        # one of them is killed mid-stream, and another one started
        workers[0].kill()
        at_kill = sum(committed(platform).values())
        replacement = Worker(pg_site, **broker)
        workers.append(replacement)
        replacement.ready(says=" ready.").ready()
        wait_until(lambda: processed_by(pg_site, replacement) > 0, HEARTBEAT_WAIT)
    expected = committed(platform)
    assert sum(expected.values()) > at_kill  # the writes went on after the kill
    # Then every event is processed: none is left pending or failed
    wait_until(lambda: pg_site.pending() == 0, DRAINED_WAIT)
    left = pg_site.sql("SELECT status, count(*), min(last_error) FROM hg_events GROUP BY 1")
    assert left == [], left
    # and each expected notification is there exactly once, and nothing else
    got = delivered(pg_site)
    assert got - expected == Counter(), "unexpected or duplicated notifications"
    assert expected - got == Counter(), "missing notifications"
    # with one ledger row per (rule, entity), and no other
    ledger = Counter(tuple(row) for row in pg_site.sql("SELECT rule, entity_id FROM hg_ledger"))
    assert ledger == Counter({(kind, entity): 1 for kind, entity, _ in expected})
    # and each of the four workers processed a share (as its last heartbeat said)
    shares = [processed_by(pg_site, w) for w in workers]
    events = pg_site.sql(
        "SELECT pg_sequence_last_value(pg_get_serial_sequence('hg_events', 'id'))"
    )[0][0]
    print(
        f"\nscale-out: {events} events, {sum(got.values())} notifications "
        f"({at_kill} committed at the kill); processed per worker {shares}; "
        f"{time.monotonic() - started:.1f}s"
    )
    assert all(n > 0 for n in shares), shares
    for w in workers[1:]:
        assert w.stop() == 0, w.log[-3000:]
