"""Wake-up latency: from the platform's commit of a plain-SQL enrollment to the worker's
commit of its notifications, one write at a time (~20/s, randomly spaced, so each sample is an
idle-to-busy wake-up).

    embedded-pg      `humanglue worker` (embedded: its watch looks every 2 ms for new events,
                     core/watch.py; the due index is probed every 50 ms) on PostgreSQL
    notify-pg        a LISTEN/NOTIFY listener here that calls pipeline.drain() on each notify,
                     with a NOTIFY trigger on enrollments installed for this part only
    celery-pg        `HUMANGLUE_BROKER_URL=redis://… humanglue worker` (Celery; new events are
                     drained by its watch thread, in-process; its poller publishes wake-ups
                     for the rest) — skipped if Redis is not reachable
    embedded-sqlite  `humanglue worker` (embedded: watch every 2 ms, probe every 20 ms) on
                     SQLite

The end is seen through a benchmark-only NOTIFY trigger on notifications (PostgreSQL,
~0.2 ms) or by polling the notifications table every 0.5 ms (SQLite).

    python bench/wakeup.py [--samples 200] [--rate 20] [--parts embedded-pg,notify-pg,...]
"""

from __future__ import annotations

import argparse
import random
import socket
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import sqlalchemy as sa
from _common import (
    COURSE,
    STUDENT,
    build_school,
    libpq,
    migrated,
    pct,
    set_notify_trigger,
    table,
    temp_database,
    uid,
    worker_process,
)

from humanglue_cli.core import pipeline

ENROLL = "INSERT INTO enrollments (id, course_id, student_id) VALUES ({p}, {p}, {p})"
DONE_FN = (
    "CREATE OR REPLACE FUNCTION hgbench_done_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM pg_notify('hgbench_done', NEW.data->>'enrollment_id'); RETURN NULL; END $$"
)
DONE_TRIGGER = (
    "CREATE TRIGGER hgbench_done AFTER INSERT ON notifications FOR EACH ROW "
    "EXECUTE FUNCTION hgbench_done_fn()"
)


def enrollment() -> tuple[str, str, str]:
    return (
        str(uuid.uuid4()),
        uid(COURSE, random.randint(1, 50)),
        uid(STUDENT, random.randint(1, 2000)),
    )


def pg_probe(url: str) -> Callable[[float], float | None]:
    """Write one enrollment; return seconds until its notifications committed (None: timeout)."""
    writer = psycopg.connect(libpq(url), autocommit=True)
    done = psycopg.connect(libpq(url), autocommit=True)
    done.execute("LISTEN hgbench_done")

    def sample(timeout: float) -> float | None:
        row = enrollment()
        writer.execute(ENROLL.format(p="%s"), row)
        start = time.perf_counter()
        deadline = start + timeout
        while (left := deadline - time.perf_counter()) > 0:
            for note in done.notifies(timeout=left, stop_after=1):
                if note.payload == row[0]:
                    return time.perf_counter() - start
        return None

    return sample


def sqlite_probe(url: str) -> Callable[[float], float | None]:
    path = sa.make_url(url).database or ""
    writer = sqlite3.connect(path, isolation_level=None, timeout=30)
    reader = sqlite3.connect(path, isolation_level=None, timeout=30)

    def last() -> int:
        return int(
            reader.execute("SELECT coalesce(max(rowid), 0) FROM notifications").fetchone()[0]
        )

    def sample(timeout: float) -> float | None:
        before = last()
        writer.execute(ENROLL.format(p="?"), enrollment())
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if last() > before:
                return time.perf_counter() - start
            time.sleep(0.0005)
        return None

    return sample


@contextmanager
def notify_listener(url: str, engine: sa.Engine) -> Iterator[None]:
    """The NOTIFY-driven alternative: LISTEN hg, drain the outbox on every notification."""
    with engine.begin() as conn:
        set_notify_trigger(conn, True, ["enrollments"])
    stop = threading.Event()
    conn = psycopg.connect(libpq(url), autocommit=True)
    conn.execute("LISTEN hg")

    def run() -> None:
        pipeline.drain(engine)  # catch up from the table on (re)connect
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.2):
                pipeline.drain(engine)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        conn.close()
        with engine.begin() as c:
            set_notify_trigger(c, False, ["enrollments"])


def measure(sample: Callable[[float], float | None], samples: int, rate: float) -> list[float]:
    """Warm up (up to 60 s for the worker to start), then `samples` spaced-out writes."""
    if sample(60.0) is None:
        raise RuntimeError("the worker never produced a notification (see its log)")
    for _ in range(3):
        sample(5.0)
    got: list[float] = []
    for _ in range(samples):
        time.sleep(random.uniform(0.5, 1.5) / rate)
        value = sample(5.0)
        if value is None:
            raise RuntimeError("a notification took over 5 s")
        got.append(value * 1000)
    return got


def redis_up(url: str) -> bool:
    u = sa.make_url(url)
    try:
        with socket.create_connection((u.host or "127.0.0.1", u.port or 6379), timeout=1):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="writes per second")
    parser.add_argument("--parts", default="embedded-pg,notify-pg,celery-pg,embedded-sqlite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    parts = args.parts.split(",")
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="hgbench_") as tmp:
        for backend in ("postgres", "sqlite"):
            mine = [p for p in parts if p.endswith("-pg" if backend == "postgres" else "-sqlite")]
            if not mine:
                continue
            with temp_database(backend) as url:
                engine = migrated(url)
                build_school(engine)
                if backend == "postgres":
                    with engine.begin() as conn:
                        conn.execute(sa.text(DONE_FN))
                        conn.execute(sa.text(DONE_TRIGGER))
                sample = pg_probe(url) if backend == "postgres" else sqlite_probe(url)
                for part in mine:
                    if part == "celery-pg" and not redis_up(args.redis_url):
                        print(f"  {part}: skipped, no Redis at {args.redis_url}")
                        continue
                    print(f"  measuring {part} …", flush=True)
                    log = Path(tmp) / f"{part}.log"
                    running = (
                        notify_listener(url, engine)
                        if part == "notify-pg"
                        else worker_process(url, log, HUMANGLUE_BROKER_URL=args.redis_url)
                        if part == "celery-pg"
                        else worker_process(url, log)
                    )
                    with running:
                        results[part] = measure(sample, args.samples, args.rate)
                engine.dispose()
    print(
        f"\nwake-up latency, platform commit → notifications committed, ms "
        f"({args.samples} samples each, ~{args.rate:.0f} writes/s)"
    )
    table(
        ["path", "p50", "p95", "p99", "max", "samples"],
        [[part, pct(v, 50), pct(v, 95), pct(v, 99), max(v), len(v)] for part, v in results.items()],
    )


if __name__ == "__main__":
    main()
