"""Memory (issue 10): a worker's RSS under the ingest load, and a tail's over 1,000,000 lines.

(a) Worker. `humanglue worker` — the Celery worker on a Redis of this script's own (a private
    `redis-server` on a free port, none of the machine's databases touched), and the embedded
    worker — is started on a fresh PostgreSQL database and left idle for a moment; then the
    platform inserts --events enrollments in plain SQL (batches of 5,000, each its own
    transaction, into courses with exactly two instructors: 2 notifications each) while the
    worker drains them. /proc/PID/status (VmRSS, and VmHWM, the kernel's own peak) of the worker
    process and of every process below it (a prefork pool's children; the threads pool has
    none) is sampled every 50 ms until the outbox is empty. Goal: ≤ 150 MiB RSS (the sum over
    the process tree, at its peak).

(b) Tail. `humanglue notifications tail --json -n 0` acting as one student, read line by line
    from a pipe here; notifications for that student are inserted in plain SQL, --batch rows
    per statement (`INSERT … SELECT generate_series`), each batch once the tail has printed all
    but one batch of what was inserted before, until it has printed --lines lines. Its VmRSS is
    read every 10,000 lines and reported every 100,000: the highest of those ten (an instant's
    RSS depends on where in a batch the tail is). Goal: flat — the slope (least squares, MiB
    per 100,000 lines) over the reports after the first, "flat" meaning under 1 MiB per
    100,000. A tail holds one read's rows at a time, so its level follows --batch.

(c) Backlog. `humanglue notifications tail --json --no-follow --since 2000-01-01` over --lines
    rows already in one student's inbox (a start in the past, as `--after` and a cursor file
    mid-way read it): seconds until its first line, until its last, lines/s and VmHWM; and
    `… | head -n 1` as the shell runs it (`--follow`, the default), seconds until it exits.
    Goal: memory as (b)'s, the first line at once, whatever the backlog's size.

    python bench/memory.py [--events 100000] [--lines 1000000] [--batch 20000]
                           [--parts celery,embedded,tail,backlog] [--json-summary PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from _common import CLI, goal, median, table, write_summary
from live_latency import cli_env, fresh_database

MIB = 1024 * 1024
GOAL_MIB = 150.0
FLAT_MIB = 1.0  # per 100,000 lines
SAMPLE_EVERY = 0.05
PLATFORM_BATCH = 5_000
SAMPLE_LINES = 10_000  # the tail's VmRSS is read every this many lines


# --- /proc -------------------------------------------------------------------------------------


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid`, in KiB ({} once it is gone)."""
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return found


def tree(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


class Sampler(threading.Thread):
    """VmRSS of a process tree every SAMPLE_EVERY seconds; each process's last VmHWM."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[float] = []  # MiB, the tree's sum
        self.processes: set[int] = set()
        self.hwm: dict[int, float] = {}  # MiB per process
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.take()
            self.stop.wait(SAMPLE_EVERY)
        self.take()

    def take(self) -> None:
        total = 0
        for p in tree(self.pid):
            kib = status_kib(p)
            if kib:
                self.processes.add(p)
                total += kib.get("VmRSS", 0)
                self.hwm[p] = kib.get("VmHWM", 0) / 1024
        self.samples.append(total / 1024)


# --- (a) the worker ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    def __init__(self, workdir: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port)]
            + ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def school(url: str, courses: int = 20, students: int = 2000) -> sa.Engine:
    """`db upgrade`, then `courses` courses with two instructors each, and `students`."""
    subprocess.run([CLI, "db", "upgrade"], env=cli_env(url), check=True, capture_output=True)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO profiles (id, email, full_name, role) SELECT gen_random_uuid(), "
                "'teacher' || g || '@example.edu', 'Teacher ' || g, 'instructor' "
                "FROM generate_series(1, :n) g"
            ),
            {"n": 2 * courses},
        )
        conn.execute(
            sa.text(
                "INSERT INTO profiles (id, email, full_name, role) SELECT gen_random_uuid(), "
                "'student' || g || '@example.edu', 'Student ' || g, 'student' "
                "FROM generate_series(1, :n) g"
            ),
            {"n": students},
        )
        teachers = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT id FROM profiles WHERE role = 'instructor' ORDER BY email")
            )
        ]
        for n in range(courses):
            cid = str(uuid.uuid4())
            conn.execute(
                sa.text("INSERT INTO courses (id, instructor_id, title) VALUES (:c, :o, :t)"),
                {"c": cid, "o": teachers[2 * n], "t": f"Course {n + 1}"},
            )
            conn.execute(
                sa.text("INSERT INTO course_instructors (course_id, user_id) VALUES (:c, :u)"),
                {"c": cid, "u": teachers[2 * n + 1]},
            )
    return engine


ENROLL_MANY = (  # plain SQL, as the platform: random course and student, one event each
    "INSERT INTO enrollments (id, course_id, student_id) "
    "SELECT gen_random_uuid(), c.ids[1 + (random() * (array_length(c.ids, 1) - 1))::int], "
    "s.ids[1 + (random() * (array_length(s.ids, 1) - 1))::int] "
    "FROM generate_series(1, :n), (SELECT array_agg(id) AS ids FROM courses) c, "
    "(SELECT array_agg(id) AS ids FROM profiles WHERE role = 'student') s"
)


def scalar(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def wait_ready(engine: sa.Engine, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while not scalar(engine, f"SELECT count(*) FROM hg_workers WHERE pid = {proc.pid}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


def worker_run(kind: str, events: int, tmp: str) -> dict[str, Any]:
    """One worker (celery or embedded) draining `events` enrollments as they are inserted."""
    redis = PrivateRedis(tmp) if kind == "celery" else None
    try:
        with fresh_database("postgres") as url:
            engine = school(url)
            extra = {"HUMANGLUE_BROKER_URL": redis.url} if redis else {}
            log = Path(tmp) / f"worker-{kind}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [CLI, "worker"],
                    env=cli_env(url, **extra),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            try:
                wait_ready(engine, proc, log)
                time.sleep(1.0)
                idle = sum(status_kib(p).get("VmRSS", 0) for p in tree(proc.pid)) / 1024
                sampler = Sampler(proc.pid)
                sampler.start()
                started = time.perf_counter()
                for start in range(0, events, PLATFORM_BATCH):
                    with engine.begin() as conn:
                        n = min(PLATFORM_BATCH, events - start)
                        conn.execute(sa.text(ENROLL_MANY), {"n": n})
                inserted = time.perf_counter() - started
                while scalar(engine, "SELECT count(*) FROM hg_events") > 0:
                    if proc.poll() is not None:
                        raise RuntimeError(f"the worker exited:\n{log.read_text()[-2000:]}")
                    time.sleep(0.1)
                drained = time.perf_counter() - started
                sampler.stop.set()
                sampler.join()
                notified = scalar(engine, "SELECT count(*) FROM notifications")
                if notified != 2 * events:
                    raise RuntimeError(f"{notified} notifications for {events} events")
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
                engine.dispose()
    finally:
        if redis:
            redis.stop()
    return {
        "worker": f"{kind} (`humanglue worker`" + (", Redis)" if redis else ")"),
        "processes": len(sampler.processes),
        "idle_mib": idle,
        "peak_rss_mib": max(sampler.samples),
        "vmhwm_mib": sum(sampler.hwm.values()),
        "median_rss_mib": median(sampler.samples),
        "insert_s": inserted,
        "events_s": events / drained,
    }


# --- (b) the tail ------------------------------------------------------------------------------

NOTIFY_MANY = (
    "INSERT INTO notifications (user_id, type, title, message, data) "
    "SELECT CAST(:u AS uuid), 'system_announcement', 'Line ' || g, "
    "'A message for the memory benchmark', "
    "json_build_object('n', g) FROM generate_series(CAST(:first AS int), CAST(:last AS int)) g"
)


def tail_run(lines: int, batch: int) -> dict[str, Any]:
    with fresh_database("postgres") as url:
        engine = school(url, courses=1, students=1)
        env = cli_env(url, HUMANGLUE_USER="student1@example.edu")
        proc = subprocess.Popen(
            [CLI, "notifications", "tail", "--json", "-n", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None and proc.stderr is not None
        user = scalar_text(engine, "SELECT id FROM profiles WHERE role = 'student'")
        samples: list[tuple[int, float]] = []  # (lines, the peak VmRSS of the 100,000 before)
        window: list[float] = []
        progress = {"read": 0}
        stop = threading.Event()

        def insert() -> None:  # the platform, never more than one batch ahead of the tail
            inserted = 0
            while inserted < lines and not stop.is_set():
                if inserted - progress["read"] > batch:
                    time.sleep(0.005)
                    continue
                n = min(batch, lines - inserted)
                with engine.begin() as conn:
                    conn.execute(
                        sa.text(NOTIFY_MANY),
                        {"u": user, "first": inserted + 1, "last": inserted + n},
                    )
                inserted += n

        inserter = threading.Thread(target=insert, daemon=True)
        try:
            wait_following(proc.stderr)
            samples.append((0, status_kib(proc.pid)["VmRSS"] / 1024))
            started = time.perf_counter()
            inserter.start()
            last = b""
            for read, last in enumerate(proc.stdout, start=1):  # noqa: B007 - checked below
                progress["read"] = read
                if read % SAMPLE_LINES == 0:  # the window's peak: every 100,000 lines
                    window.append(status_kib(proc.pid)["VmRSS"] / 1024)
                    if read % 100_000 == 0:
                        samples.append((read, max(window)))
                        window.clear()
                if read == lines:
                    break
            else:
                raise RuntimeError(f"tail ended after {progress['read']} lines")
            elapsed = time.perf_counter() - started
            hwm = status_kib(proc.pid)["VmHWM"] / 1024
            json.loads(last)  # the last line is whole JSON
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
            inserter.join(timeout=30)
            engine.dispose()
        read = progress["read"]
    later = samples[1:]
    return {
        "lines": read,
        "lines_s": read / elapsed,
        "samples": samples,
        "first_mib": later[0][1] if later else samples[0][1],
        "last_mib": samples[-1][1],
        "vmhwm_mib": hwm,
        "slope_mib_per_100k": slope(later),
    }


def backlog_run(lines: int, batch: int) -> dict[str, Any]:
    with fresh_database("postgres") as url:
        engine = school(url, courses=1, students=1)
        user = scalar_text(engine, "SELECT id FROM profiles WHERE role = 'student'")
        for first in range(1, lines + 1, batch):
            with engine.begin() as conn:
                last = min(first + batch - 1, lines)
                conn.execute(sa.text(NOTIFY_MANY), {"u": user, "first": first, "last": last})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE notifications")  # as after a day's writes
        engine.dispose()
        env = cli_env(url, HUMANGLUE_USER="student1@example.edu")
        command = [CLI, "notifications", "tail", "--json", "--since", "2000-01-01"]
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*command, "--no-follow"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        first_at = 0.0
        read = 0
        hwm = 0.0
        for read, _line in enumerate(proc.stdout, start=1):  # noqa: B007 - counted
            if read == 1:
                first_at = time.perf_counter() - started
            if read % SAMPLE_LINES == 0:
                hwm = max(hwm, status_kib(proc.pid).get("VmHWM", 0) / 1024)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        hwm = max(hwm, usage.ru_maxrss / 1024)  # KiB on Linux: the whole run's peak
        shell = " ".join([*command, "| head -n 1"])
        began = time.perf_counter()
        head = subprocess.run(
            ["bash", "-c", shell], env=env, capture_output=True, text=True, timeout=600
        )
        head_s = time.perf_counter() - began
        assert head.returncode == 0 and head.stdout.count("\n") == 1, head.stderr
    return {
        "lines": read,
        "first_line_s": first_at,
        "all_s": elapsed,
        "lines_s": read / elapsed,
        "vmhwm_mib": hwm,
        "head_exit_s": head_s,
        "exit": proc.returncode,
    }


def scalar_text(engine: sa.Engine, sql: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.text(sql)).scalar_one())


def wait_following(stderr: IO[bytes]) -> None:
    """Until the tail says on stderr that it is following (CONTRACT §3)."""
    while True:
        line = stderr.readline()
        if not line:
            raise RuntimeError("tail ended before following")
        if b"following" in line:
            threading.Thread(target=stderr.read, daemon=True).start()  # never a full pipe
            return


def slope(points: list[tuple[int, float]]) -> float:
    """Least squares: MiB per 100,000 lines (0 with fewer than two points)."""
    if len(points) < 2:
        return 0.0
    xs = [x / 100_000 for x, _ in points]
    ys = [y for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--parts", default="celery,embedded,tail,backlog")
    parser.add_argument("--json-summary", metavar="PATH", help="write the headline figures here")
    args = parser.parse_args()
    parts = args.parts.split(",")
    summary: dict[str, Any] = {}
    goals: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hgbench_memory_") as tmp:
        runs = [
            worker_run(kind, args.events, tmp) for kind in ("celery", "embedded") if kind in parts
        ]
    if runs:
        print(f"worker memory while draining {args.events:,} events (2 notifications each), MiB")
        keys = list(runs[0])[1:]
        table(["worker", *keys], [[r["worker"], *(r[k] for k in keys)] for r in runs])
        worst = max(max(r["peak_rss_mib"], r["vmhwm_mib"]) for r in runs)
        met = "met" if worst <= GOAL_MIB else "NOT met"
        print(f"peak RSS {worst:.1f} MiB (goal ≤ {GOAL_MIB:.0f} MiB: {met})\n")
        summary["workers"] = runs
        goals.append(
            goal(
                f"worker RSS draining {args.events:,} events "
                f"({', '.join(r['worker'].split()[0] for r in runs)})",
                f"≤ {GOAL_MIB:.0f} MiB",
                f"{worst:.0f} MiB",
                worst <= GOAL_MIB,
            )
        )
    if "tail" in parts:
        tail = tail_run(args.lines, args.batch)
        print(
            f"`notifications tail --json` over {tail['lines']:,} lines ({tail['lines_s']:,.0f}/s)"
        )
        table(
            ["lines printed", "VmRSS MiB (peak of the last 100,000)"],
            [[f"{n:,}", mib] for n, mib in tail["samples"]],
        )
        flat = abs(tail["slope_mib_per_100k"]) < FLAT_MIB
        print(
            f"slope after the first 100,000 lines: {tail['slope_mib_per_100k']:+.2f} MiB per "
            f"100,000 lines ({'flat' if flat else 'NOT flat'}; goal: flat, |slope| < "
            f"{FLAT_MIB:.0f}); VmHWM {tail['vmhwm_mib']:.1f} MiB"
        )
        summary["tail"] = tail
        goals.append(
            goal(
                f"`tail --json` RSS over {tail['lines']:,} lines",
                f"flat (|slope| < {FLAT_MIB:.0f} MiB per 100k lines)",
                f"{tail['first_mib']:.0f} → {tail['last_mib']:.0f} MiB, "
                f"{tail['slope_mib_per_100k']:+.2f} MiB/100k",
                flat,
            )
        )
    if "backlog" in parts:
        back = backlog_run(args.lines, args.batch)
        print(f"`notifications tail --json --since 2000-01-01` over {back['lines']:,} rows")
        table(
            ["--no-follow: first line s", "all s", "lines/s", "VmHWM MiB", "| head -n 1: exit s"],
            [
                [
                    back["first_line_s"],
                    back["all_s"],
                    f"{back['lines_s']:,.0f}",
                    back["vmhwm_mib"],
                    back["head_exit_s"],
                ]
            ],
        )
        summary["backlog"] = back
    write_summary(args.json_summary, goals, **summary)


if __name__ == "__main__":
    main()
