"""Live latency: from the platform's commit of a plain-SQL enrollment to the line that
`humanglue notifications tail --json` prints for it, at a steady write rate.

Per backend, in a database of its own:

    postgres  PostgreSQL + `HUMANGLUE_BROKER_URL=redis://…/12 humanglue worker` (Celery; the
              Redis db is flushed before and after)
    sqlite    SQLite file + `humanglue worker` (the embedded default: no broker)

the schema by `humanglue db upgrade`, one instructor (ada) with a course and N students; one
worker and three `humanglue notifications tail --json -n 0` processes acting as ada, each read
on a pipe by a thread here that stamps every line with time.time() as it is read. A writer
here inserts enrollments in plain SQL, one per transaction (autocommit), at a steady rate
(100/s, then 500/s, for --seconds each), stamping time.time() right after each COMMIT returns.
A notification's `data.enrollment_id` names its enrollment: latency = a line's arrival − its
enrollment's commit. Figures pool the three tails; each tail is checked for every enrollment
exactly once (missing / duplicate). Ten warm-up enrollments before each rate are not counted.

    python bench/live_latency.py [--seconds 10] [--rates 100,500] [--backends postgres,sqlite]
        [--students 200] [--redis-url redis://127.0.0.1:6379/12]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
import sqlalchemy as sa
from _common import ADMIN_URL, CLI, libpq, pct, table

TAILS = 3
WARMUP = 10
ENROLL = "INSERT INTO enrollments (id, course_id, student_id) VALUES ({p}, {p}, {p})"


# --- database --------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    """A new empty database's URL; dropped on exit (PostgreSQL: with the roles made for it)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="hgbench_live_") as tmp:
            yield f"sqlite:///{tmp}/hg.db"
        return
    name = f"hgbench_live_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        oid = conn.execute(
            sa.text("SELECT oid FROM pg_database WHERE datname = :n"), {"n": name}
        ).scalar_one()
    try:
        yield sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            drop_roles_of(conn, int(oid))
        admin.dispose()


def drop_roles_of(conn: sa.Connection, oid: int) -> None:
    """The roles `db upgrade` made for database `oid` (as tests/conftest.py drop_orphan_roles,
    for this one database only): logins before groups."""
    roles = conn.execute(
        sa.text(
            "SELECT r.rolname FROM pg_roles r JOIN pg_shdescription d ON d.objoid = r.oid "
            "AND d.classoid = 'pg_authid'::regclass "
            "WHERE d.description ~ '^humanglue: ' AND d.description LIKE :tag "
            "ORDER BY r.rolcanlogin DESC, r.rolname"
        ),
        {"tag": f"%(database oid {oid})%"},
    ).scalars()
    for role in roles:
        with contextlib.suppress(sa.exc.DBAPIError):
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))


def cli_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUMANGLUE_")}
    env.update(HUMANGLUE_DATABASE_URL=url, NO_COLOR="1", **extra)
    return env


def seed(url: str, students: int) -> tuple[str, list[str]]:
    """`db upgrade`, then ada with one course and `students` students: (course, student ids)."""
    subprocess.run([CLI, "db", "upgrade"], env=cli_env(url), check=True, capture_output=True)
    ada, course = str(uuid.uuid4()), str(uuid.uuid4())
    kids = [str(uuid.uuid4()) for _ in range(students)]
    engine = sa.create_engine(url)
    people = "INSERT INTO profiles (id, email, full_name, role) VALUES (:i, :e, :n, :r)"
    with engine.begin() as conn:
        conn.execute(
            sa.text(people),
            [{"i": ada, "e": "ada@example.edu", "n": "Ada", "r": "instructor"}]
            + [
                {"i": s, "e": f"student{n}@example.edu", "n": f"Student {n}", "r": "student"}
                for n, s in enumerate(kids, start=1)
            ],
        )
        conn.execute(
            sa.text("INSERT INTO courses (id, instructor_id, title) VALUES (:c, :o, :t)"),
            {"c": course, "o": ada, "t": "Deep Listening"},
        )
    engine.dispose()
    return course, kids


# --- processes -------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGINT, then SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Tail:
    """One `notifications tail --json -n 0` process, its stdout read by a thread."""

    proc: subprocess.Popen[bytes]
    lines: list[tuple[float, bytes]] = field(default_factory=list)
    parsed: list[tuple[float, str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, url: str) -> Tail:
        proc = subprocess.Popen(
            [CLI, "notifications", "tail", "--json", "-n", "0"],
            env=cli_env(url, HUMANGLUE_USER="ada@example.edu"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            bufsize=0,
        )
        tail = cls(proc)
        threading.Thread(target=tail._read_out, daemon=True).start()
        threading.Thread(target=tail._read_err, daemon=True).start()
        return tail

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        out = self.proc.stdout
        while line := out.readline():
            self.lines.append((time.time(), line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            text = raw.decode(errors="replace").rstrip()
            self.errors.append(text)
            if "following" in text:
                self.ready.set()

    def arrivals(self) -> list[tuple[float, str, float]]:
        """(arrival, enrollment id, the notification's created_at) of every line so far."""
        for t, raw in self.lines[len(self.parsed) : len(self.lines)]:
            n = json.loads(raw)
            self.parsed.append((t, n["data"]["enrollment_id"], stamp(n["created_at"])))
        return list(self.parsed)


def stamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def start_worker(url: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [CLI, "worker"],
            env=cli_env(url, **env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


# --- the measurement -------------------------------------------------------------------------


class Writer:
    """Plain-SQL enrollments, one per transaction; returns the time right after COMMIT."""

    def __init__(self, url: str, course: str, students: list[str]) -> None:
        self.course, self.students = course, students
        if url.startswith("sqlite"):
            self.conn: Any = sqlite3.connect(
                sa.make_url(url).database or "", isolation_level=None, timeout=30
            )
            self.sql = ENROLL.format(p="?")
        else:
            self.conn = psycopg.connect(libpq(url), autocommit=True)
            self.sql = ENROLL.format(p="%s")

    def enroll(self) -> tuple[str, float]:
        eid = str(uuid.uuid4())
        self.conn.execute(self.sql, (eid, self.course, random.choice(self.students)))
        return eid, time.time()

    def close(self) -> None:
        self.conn.close()


def wait_for(tails: list[Tail], ids: set[str], timeout: float) -> bool:
    """Until every tail printed every id in `ids` (True), or nothing new for `timeout` s."""
    quiet_since, seen = time.monotonic(), -1
    while time.monotonic() - quiet_since < timeout:
        counts = [sum(1 for _, e, _ in t.arrivals() if e in ids) for t in tails]
        if all(c >= len(ids) for c in counts):
            return True
        if sum(counts) != seen:
            seen, quiet_since = sum(counts), time.monotonic()
        time.sleep(0.2)
    return False


def run_rate(
    writer: Writer, tails: list[Tail], rate: float, seconds: float, settle: float
) -> dict[str, Any]:
    warm = {writer.enroll()[0] for _ in range(WARMUP)}
    if not wait_for(tails, warm, 60.0):
        raise RuntimeError("the warm-up enrollments never reached every tail (see the logs)")
    time.sleep(0.5)
    marks = [len(t.lines) for t in tails]
    committed: dict[str, float] = {}
    total = round(rate * seconds)
    begin = time.perf_counter()
    for n in range(total):
        due = begin + n / rate
        if (ahead := due - time.perf_counter()) > 0:
            time.sleep(ahead)
        eid, at = writer.enroll()
        committed[eid] = at
    took = time.perf_counter() - begin
    wait_for(tails, set(committed), settle)
    latencies: list[float] = []
    created: dict[str, float] = {}
    received, missing, dupes = [], [], []
    for tail, mark in zip(tails, marks, strict=True):
        seen: Counter[str] = Counter()
        for arrived, eid, at in tail.arrivals()[mark:]:
            if eid in committed:
                created[eid] = (at - committed[eid]) * 1000
                seen[eid] += 1
                if seen[eid] == 1:
                    latencies.append((arrived - committed[eid]) * 1000)
        received.append(len(seen))
        missing.append(len(committed) - len(seen))
        dupes.append(sum(c - 1 for c in seen.values()))
    return {
        "sent": total,
        "achieved": total / took,
        "received": received,
        "missing": sum(missing),
        "dupes": sum(dupes),
        "lat": latencies,
        "created": list(created.values()),
    }


def run_backend(
    backend: str, rates: list[float], args: argparse.Namespace, tmp: Path
) -> list[list[Any]]:
    rows: list[list[Any]] = []
    with fresh_database(backend) as url:
        course, kids = seed(url, args.students)
        env: dict[str, str] = {}
        broker: redis.Redis | None = None
        if backend == "postgres":
            broker = redis.Redis.from_url(args.redis_url)
            broker.flushdb()
            env["HUMANGLUE_BROKER_URL"] = args.redis_url
        procs: list[subprocess.Popen[Any]] = []
        writer: Writer | None = None
        log = tmp / f"worker-{backend}.log"
        try:
            worker = start_worker(url, log, **env)
            procs.append(worker)
            tails = [Tail.start(url) for _ in range(TAILS)]
            procs += [t.proc for t in tails]
            for tail in tails:
                if not tail.ready.wait(60):
                    raise RuntimeError(f"a tail never said 'following': {tail.errors}")
            writer = Writer(url, course, kids)
            for rate in rates:
                print(f"  {backend}: {rate:.0f}/s for {args.seconds:.0f} s …", flush=True)
                got = run_rate(writer, tails, rate, args.seconds, args.settle)
                lat = got["lat"] or [float("nan")]
                made = got["created"] or [float("nan")]
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited ({worker.returncode})")
                rows.append(
                    [
                        backend,
                        f"{rate:.0f}/s",
                        got["sent"],
                        round(got["achieved"]),
                        "/".join(str(r) for r in got["received"]),
                        got["missing"],
                        got["dupes"],
                        pct(lat, 50),
                        pct(lat, 99),
                        max(lat),
                        pct(made, 50),
                        pct(made, 99),
                    ]
                )
        except BaseException:
            if log.exists():
                print(f"  worker log ({backend}), last lines:")
                print("\n".join(log.read_text().splitlines()[-20:]))
            raise
        finally:
            if writer is not None:
                writer.close()
            for proc in reversed(procs):
                stop_process(proc)
            if broker is not None:
                broker.flushdb()
                broker.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="writing time per rate")
    parser.add_argument("--rates", default="100,500", help="enrollments per second")
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument(
        "--settle", type=float, default=15.0, help="s with nothing new before giving up"
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="hgbench_live_logs_") as tmp:
        for backend in args.backends.split(","):
            rows += run_backend(backend, rates, args, Path(tmp))
    print(
        f"\nlive latency, platform commit → line read from `tail --json` (×{TAILS} tails, "
        "pooled), ms; created = commit → the notification's created_at (the worker's part)"
    )
    table(
        ["backend", "rate", "sent", "achieved/s", "received per tail", "missing", "dupes"]
        + ["p50", "p99", "max", "created p50", "created p99"],
        rows,
    )


if __name__ == "__main__":
    main()
