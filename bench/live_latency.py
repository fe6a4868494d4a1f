"""Live latency: from the platform's commit of a plain-SQL enrollment to the line that
`humanglue notifications tail --json` prints for it, at a steady write rate.

Per backend, in a database of its own:

    postgres  PostgreSQL + `HUMANGLUE_BROKER_URL=redis://…/12 humanglue worker` (Celery; the
              Redis db is flushed before and after)
    sqlite    SQLite file + `humanglue worker` (the embedded default: no broker)

the schema by `humanglue db upgrade`, one instructor (ada) with a course and N students; one
worker and three `humanglue notifications tail --json -n 0` processes acting as ada, each read
on a pipe by a thread here that stamps every chunk it reads with time.time(). Writers here
(--writers connections on PostgreSQL, each in a thread; one on SQLite, which has one writer
at a time) insert enrollments in plain SQL, one per
transaction (autocommit), on one paced schedule — enrollment n is due at start + n/rate —
(100/s, then 500/s, for --seconds each), stamping time.time() right after each COMMIT
returns; the rate achieved and how late the schedule ran are printed, so that "500/s" is
never a saturated writer. A notification's `data.enrollment_id` names its enrollment: latency
= a line's arrival − its enrollment's commit. Figures pool the three tails; each tail is
checked for every enrollment exactly once (missing / duplicate). Ten warm-up enrollments
before each rate are not counted.

Where the milliseconds go (PostgreSQL; --no-breakdown leaves it out): a benchmark-only
statement trigger on notifications NOTIFYs `hgbench_commit` with the inserting transaction's
id, heard here by a LISTEN connection of its own (~0.2 ms after the commit), and each
notification's `commit_seq` names that transaction. So each line splits into
    wake+claim   the enrollment's commit → the worker's processing transaction begins
                 (`created_at`: noticing the event, the wake-up, the claim)
    batch        → that transaction has committed (heard on `hgbench_commit`)
    tail         → the line is read from the tail's pipe (NOTIFY, the tail's read, printing)
On SQLite only the first (commit → `created_at`) is known; the rest is "batch+tail".

    python bench/live_latency.py [--seconds 10] [--rates 100,500] [--backends postgres,sqlite]
        [--students 200] [--writers 4] [--redis-url redis://127.0.0.1:6379/12] [--no-breakdown]
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
import sys
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
from _common import ADMIN_URL, CLI, cli_env, libpq, pct, table

TAILS = 3
WARMUP = 10
ENROLL = "INSERT INTO enrollments (id, course_id, student_id) VALUES ({p}, {p}, {p})"
MARK_CHANNEL = "hgbench_commit"
MARK_TRIGGER = (  # benchmark-only: when each transaction that inserts notifications commits
    "CREATE OR REPLACE FUNCTION hgbench_commit_fn() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN PERFORM pg_notify('{MARK_CHANNEL}', pg_current_xact_id()::text); RETURN NULL; END $$",
    "CREATE TRIGGER hgbench_commit AFTER INSERT ON notifications "
    "FOR EACH STATEMENT EXECUTE FUNCTION hgbench_commit_fn()",
)


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
    def start(cls, url: str, user: str = "ada@example.edu") -> Tail:
        proc = subprocess.Popen(
            [CLI, "notifications", "tail", "--json", "-n", "0"],
            env=cli_env(url, HUMANGLUE_USER=user),
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
        # Whole chunks with os.read, stamped as they come: readline() on an unbuffered pipe
        # reads one byte per system call, which cost this process ~40% of a core at 500/s.
        assert self.proc.stdout is not None
        fd, rest = self.proc.stdout.fileno(), b""
        while chunk := os.read(fd, 1 << 16):
            now = time.time()
            *whole, rest = (rest + chunk).split(b"\n")
            self.lines.extend((now, line) for line in whole)

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
    """Plain-SQL enrollments, one per transaction, from `connections` connections (threads)
    on one paced schedule; each returns the time right after its COMMIT."""

    def __init__(self, url: str, course: str, students: list[str], connections: int) -> None:
        self.course, self.students = course, students
        self.conns: list[Any] = []
        if url.startswith("sqlite"):
            # One: SQLite has one writer at a time, and more connections only queue for its
            # lock through the busy handler's sleeps (up to 100 ms each), which is no
            # platform's steady write rate but a lock fight (500/s needs ~0.3 ms per insert).
            path = sa.make_url(url).database or ""
            self.sql = ENROLL.format(p="?")
            self.conns = [
                sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
            ]
        else:
            self.sql = ENROLL.format(p="%s")
            self.conns = [psycopg.connect(libpq(url), autocommit=True) for _ in range(connections)]

    def enroll(self, conn: Any = None) -> tuple[str, float]:
        eid = str(uuid.uuid4())
        (conn or self.conns[0]).execute(self.sql, (eid, self.course, random.choice(self.students)))
        return eid, time.time()

    def paced(self, rate: float, total: int) -> tuple[dict[str, float], float, list[float]]:
        """`total` enrollments, number n due at start + n/rate: (id → commit time, seconds
        taken, ms each commit came after its due time)."""
        committed: dict[str, float] = {}
        late: list[float] = []
        slots = iter(range(total))
        lock = threading.Lock()
        begin = time.perf_counter()

        def write(conn: Any) -> None:
            while True:
                with lock:
                    n = next(slots, None)
                if n is None:
                    return
                due = begin + n / rate
                if (ahead := due - time.perf_counter()) > 0:
                    time.sleep(ahead)
                eid, at = self.enroll(conn)
                committed[eid] = at
                late.append((time.perf_counter() - due) * 1000)

        threads = [threading.Thread(target=write, args=(c,)) for c in self.conns]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return committed, time.perf_counter() - begin, late

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


class CommitMarks:
    """PostgreSQL: when each transaction that inserted notifications committed, as heard on a
    benchmark-only channel (MARK_TRIGGER), by transaction id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.heard: dict[int, float] = {}
        self.batches = 0
        self.stop = threading.Event()
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            for sql in MARK_TRIGGER:
                conn.execute(sql)
        self.conn = psycopg.connect(libpq(url), autocommit=True)
        self.conn.execute(f"LISTEN {MARK_CHANNEL}")
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.stop.is_set():
            for note in self.conn.notifies(timeout=0.25):
                self.heard.setdefault(int(note.payload), time.time())

    def committed(self, enrollments: set[str]) -> dict[str, float]:
        """Enrollment id → when the transaction that made its notification for ada committed."""
        with psycopg.connect(libpq(self.url), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT n.data->>'enrollment_id', n.commit_seq FROM notifications n "
                "JOIN profiles p ON p.id = n.user_id WHERE p.email = 'ada@example.edu' "
                "AND n.data->>'enrollment_id' = ANY(%s)",
                (list(enrollments),),
            ).fetchall()
        self.batches = len({x for _, x in rows})
        return {e: self.heard[x] for e, x in rows if x in self.heard}

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.conn.close()
        with psycopg.connect(libpq(self.url), autocommit=True) as conn:
            conn.execute("DROP TRIGGER IF EXISTS hgbench_commit ON notifications")
            conn.execute("DROP FUNCTION IF EXISTS hgbench_commit_fn()")


class CpuMeter:
    """CPU used while the writers write, in % of one core: this benchmark's processes (itself,
    the worker, the tails, and on PostgreSQL the server processes of its database) and the
    whole machine — on a shared machine, the rest is other people's load."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, url: str, procs: dict[str, list[int]]) -> None:
        self.url, self.procs = url, procs
        self.start: tuple[float, dict[str, float], float] | None = None

    @classmethod
    def _of(cls, pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / cls.TICK

    @classmethod
    def _machine(cls) -> float:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        return (sum(ticks) - ticks[3] - ticks[4]) / cls.TICK  # all but idle and iowait

    def _server_pids(self) -> list[int]:
        if self.url.startswith("sqlite"):
            return []
        with psycopg.connect(libpq(self.url), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
        return [r[0] for r in rows]

    def _sample(self) -> dict[str, float]:
        used = {k: sum(self._of(p) for p in pids) for k, pids in self.procs.items()}
        used["bench"] = self._of(os.getpid())
        used["postgres"] = sum(self._of(p) for p in self._server_pids())
        return used

    def __enter__(self) -> CpuMeter:
        self.start = (time.monotonic(), self._sample(), self._machine())
        return self

    def __exit__(self, *_: object) -> None:
        began, before, machine = self.start or (0.0, {}, 0.0)
        took = time.monotonic() - began
        after = self._sample()
        self.used = {k: (after[k] - before.get(k, 0.0)) / took * 100 for k in after}
        self.ours = sum(self.used.values())
        self.machine = (self._machine() - machine) / took * 100
        self.others = max(0.0, self.machine - self.ours)


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
    writer: Writer,
    tails: list[Tail],
    rate: float,
    seconds: float,
    settle: float,
    marks: CommitMarks | None,
    meter: CpuMeter,
) -> dict[str, Any]:
    warm = {writer.enroll()[0] for _ in range(WARMUP)}
    if not wait_for(tails, warm, 60.0):
        raise RuntimeError("the warm-up enrollments never reached every tail (see the logs)")
    time.sleep(0.5)
    lines = [len(t.lines) for t in tails]
    total = round(rate * seconds)
    with meter:
        committed, took, late = writer.paced(rate, total)
    wait_for(tails, set(committed), settle)
    heard = marks.committed(set(committed)) if marks is not None else {}
    latencies: list[float] = []
    created: dict[str, float] = {}
    stages: dict[str, list[float]] = {"wake+claim": [], "batch": [], "tail": []}
    received, missing, dupes = [], [], []
    for tail, mark in zip(tails, lines, strict=True):
        seen: Counter[str] = Counter()
        for arrived, eid, at in tail.arrivals()[mark:]:
            if eid in committed:
                created[eid] = (at - committed[eid]) * 1000
                seen[eid] += 1
                if seen[eid] == 1:
                    latencies.append((arrived - committed[eid]) * 1000)
                    if eid in heard:
                        stages["tail"].append((arrived - heard[eid]) * 1000)
                    elif marks is None:  # the worker's commit is not known: the rest in one
                        rest = (arrived - committed[eid]) * 1000 - created[eid]
                        stages.setdefault("batch+tail", []).append(rest)
        received.append(len(seen))
        missing.append(len(committed) - len(seen))
        dupes.append(sum(c - 1 for c in seen.values()))
    stages["wake+claim"] = list(created.values())
    for eid, at in heard.items():
        made = created.get(eid)
        if made is not None:
            stages["batch"].append((at - committed[eid]) * 1000 - made)
    return {
        "sent": total,
        "achieved": total / took,
        "late": late,
        "received": received,
        "missing": sum(missing),
        "dupes": sum(dupes),
        "lat": latencies,
        "stages": stages,
        "batches": marks.batches / took if marks is not None else None,
    }


GOALS = {  # issue 8: (backend, rate) → (p50, p99) in ms at most, nothing lost or doubled
    ("postgres", 500.0): (10.0, 30.0),
    ("sqlite", 100.0): (None, 50.0),
}


def verdict(backend: str, rate: float, got: dict[str, Any], lat: list[float]) -> str:
    """Whether this row meets issue 8's goal (only rows it sets one for), and why not."""
    goal = GOALS.get((backend, rate))
    if goal is None:
        return ""
    p50, p99 = goal
    short = []
    if got["achieved"] < 0.98 * rate:
        short.append(f"rate {got['achieved']:.0f}/s")
    if got["missing"] or got["dupes"]:
        short.append("lost/doubled")
    if p50 is not None and not pct(lat, 50) <= p50:
        short.append(f"p50 > {p50:g}")
    if not pct(lat, 99) <= p99:
        short.append(f"p99 > {p99:g}")
    limits = f"p50 ≤ {p50:g}, " if p50 is not None else ""
    return f"{limits}p99 ≤ {p99:g}: " + (
        "met" if not short else "NOT met (" + ", ".join(short) + ")"
    )


def run_backend(
    backend: str, rates: list[float], args: argparse.Namespace, tmp: Path
) -> tuple[list[list[Any]], list[list[Any]], list[list[Any]]]:
    rows: list[list[Any]] = []
    parts: list[list[Any]] = []
    cpu: list[list[Any]] = []
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
        marks: CommitMarks | None = None
        log = tmp / f"worker-{backend}.log"
        try:
            if backend == "postgres" and args.breakdown:
                marks = CommitMarks(url)
            worker = start_worker(url, log, **env)
            procs.append(worker)
            tails = [Tail.start(url) for _ in range(TAILS)]
            procs += [t.proc for t in tails]
            for tail in tails:
                if not tail.ready.wait(60):
                    raise RuntimeError(f"a tail never said 'following': {tail.errors}")
            writer = Writer(url, course, kids, args.writers)
            for rate in rates:
                print(f"  {backend}: {rate:.0f}/s for {args.seconds:.0f} s …", flush=True)
                meter = CpuMeter(
                    url, {"worker": [worker.pid], "tails": [t.proc.pid for t in tails]}
                )
                got = run_rate(writer, tails, rate, args.seconds, args.settle, marks, meter)
                lat = got["lat"] or [float("nan")]
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited ({worker.returncode})")
                rows.append(
                    [
                        backend,
                        f"{rate:.0f}/s",
                        got["sent"],
                        round(got["achieved"]),
                        pct(got["late"], 99),
                        "/".join(str(r) for r in got["received"]),
                        got["missing"],
                        got["dupes"],
                        pct(lat, 50),
                        pct(lat, 99),
                        max(lat),
                        verdict(backend, rate, got, lat),
                    ]
                )
                cpu.append(
                    [backend, f"{rate:.0f}/s", meter.ours]
                    + [meter.used[k] for k in ("worker", "tails", "postgres", "bench")]
                    + [meter.others, meter.machine]
                    + [round(got["batches"]) if got["batches"] is not None else "-"]
                )
                for stage, values in got["stages"].items():
                    if values:
                        parts.append(
                            [backend, f"{rate:.0f}/s", stage]
                            + [pct(values, p) for p in (50, 90, 99)]
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
            if marks is not None:
                marks.close()
            if broker is not None:
                broker.flushdb()
                broker.close()
    return rows, parts, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="writing time per rate")
    parser.add_argument("--rates", default="100,500", help="enrollments per second")
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--writers", type=int, default=4, help="writing connections")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument(
        "--settle", type=float, default=15.0, help="s with nothing new before giving up"
    )
    parser.add_argument(
        "--no-breakdown",
        dest="breakdown",
        action="store_false",
        help="no benchmark-only commit trigger (PostgreSQL): no wake/batch/tail split",
    )
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)  # a reading thread stamps its line without waiting 5 ms
    rates = [float(r) for r in args.rates.split(",")]
    rows: list[list[Any]] = []
    parts: list[list[Any]] = []
    cpu: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="hgbench_live_logs_") as tmp:
        for backend in args.backends.split(","):
            got, split, used = run_backend(backend, rates, args, Path(tmp))
            rows += got
            parts += split
            cpu += used
    print(
        f"\nlive latency, platform commit → line read from `tail --json` (×{TAILS} tails, "
        f"pooled), ms; {args.writers} writing connections, 'late p99' = how far behind its "
        "schedule a commit returned"
    )
    table(
        ["backend", "rate", "sent", "achieved/s", "late p99", "received per tail"]
        + ["missing", "dupes", "p50", "p99", "max", "issue 8 goal"],
        rows,
    )
    print("where the milliseconds go, ms (p50 / p90 / p99 of each stage on its own)")
    table(["backend", "rate", "stage", "p50", "p90", "p99"], parts)
    print(
        "CPU while writing, % of one core (this machine has "
        f"{os.cpu_count()}): this benchmark's processes, and the rest of the machine's load; "
        "worker commits/s = its transactions that made notifications (each wakes every tail)"
    )
    table(
        ["backend", "rate", "ours", "worker", "tails", "postgres", "bench", "others", "machine"]
        + ["worker commits/s"],
        cpu,
    )


if __name__ == "__main__":
    main()
