"""Presence heartbeats/s and the query time of `presence list` (issue 9).

Seed (PostgreSQL; `--backend sqlite` too): one instructor teaching 100 courses; --students
students (default 100,000), --big of them (default 10,000) enrolled in the first course, the
rest spread over the other 99. Then:

1. Joins: every student's first beat (one device each), through `presence.beat_many` in
   batches of --batch (the peak trigger counts each batch's scope once).
2. Sustained beats, everyone already online: `beat_many` over all students (100,000 in all)
   and over the big course only (10,000 in one course), --rounds rounds each; then single-row
   `presence.beat` calls, each its own transaction, on 1 and on 4 connections (threads) for
   --seconds each. Beats/s, the median of the rounds.
3. `presence list` for the big course (10,000 online): the store's query (`store.online`) in
   process, as the superuser (no row-level security) and as the people's role acting as the
   instructor (what `--user` does on PostgreSQL); the statement's execution time in the
   database (EXPLAIN ANALYZE); and the whole `humanglue presence list --json` process. Medians.

The database is dropped at the end (with the roles `db upgrade` made for it).

    python bench/presence.py [--backend postgres|sqlite] [--students 100000] [--big 10000]
                             [--batch 1000] [--rounds 3] [--seconds 5] [--samples 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from _common import CLI, COURSE, INSTRUCTOR, STUDENT, goal, median, table, uid, write_summary
from live_latency import cli_env, fresh_database

from humanglue_cli import presence
from humanglue_cli.core import access
from humanglue_cli.core.db import create_engine, dispose_engines
from humanglue_cli.core.migrate import upgrade
from humanglue_cli.core.store import presence as store

TIMEOUT = timedelta(seconds=60)


def seed(engine: sa.Engine, students: int, big: int) -> None:
    teacher = uid(INSTRUCTOR, 1)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO profiles (id, email, full_name, role) VALUES (:i, :e, :n, :r)"),
            [{"i": teacher, "e": "teacher1@example.edu", "n": "Teacher One", "r": "instructor"}]
            + [
                {
                    "i": uid(STUDENT, n),
                    "e": f"s{n}@example.edu",
                    "n": f"Student {n}",
                    "r": "student",
                }
                for n in range(students)
            ],
        )
        conn.execute(
            sa.text("INSERT INTO courses (id, instructor_id, title) VALUES (:i, :o, :t)"),
            [{"i": uid(COURSE, c), "o": teacher, "t": f"Course {c}"} for c in range(100)],
        )
        conn.execute(
            sa.text("INSERT INTO enrollments (id, course_id, student_id) VALUES (:i, :c, :s)"),
            [
                {"i": uid(9, n), "c": uid(COURSE, course_of(n, big)), "s": uid(STUDENT, n)}
                for n in range(students)
            ],
        )
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ANALYZE"))


def course_of(n: int, big: int) -> int:
    return 0 if n < big else 1 + n % 99


def beats(students: range, big: int) -> list[presence.Beat]:
    return [
        presence.Beat(uid(STUDENT, n), course_id=uid(COURSE, course_of(n, big)), device="web")
        for n in students
    ]


def batched_rate(engine: sa.Engine, all_beats: list[presence.Beat], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(all_beats), batch):
        presence.beat_many(engine, all_beats[i : i + batch], TIMEOUT)
    return len(all_beats) / (time.perf_counter() - started)


def single_rate(
    engine: sa.Engine, all_beats: list[presence.Beat], threads: int, seconds: float
) -> float:
    done = [0] * threads
    stop = threading.Event()

    def run(k: int) -> None:
        i = k
        while not stop.is_set():
            b = all_beats[i % len(all_beats)]
            presence.beat(
                engine, b.user_id, course_id=b.course_id, device=b.device, timeout=TIMEOUT
            )
            done[k] += 1
            i += threads

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - started)


def timed(fn: Any, samples: int) -> float:
    took = []
    for _ in range(samples):
        started = time.perf_counter()
        fn()
        took.append((time.perf_counter() - started) * 1000)
    return median(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--students", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--json-summary", metavar="PATH", help="write the headline figures here")
    args = parser.parse_args()
    with fresh_database(args.backend) as url:
        engine = create_engine(url, create=True, pool_size=8)
        upgrade(engine)
        seed(engine, args.students, args.big)
        everyone = beats(range(args.students), args.big)
        rows: list[list[Any]] = []
        rows.append(["joins, beat_many", len(everyone), batched_rate(engine, everyone, args.batch)])
        big = everyone[: args.big]
        for label, group in (("beat_many, all courses", everyone), ("beat_many, one course", big)):
            rates = [batched_rate(engine, group, args.batch) for _ in range(args.rounds)]
            rows.append([label, len(group), median(rates)])
        for threads in (1, 4):
            rate = single_rate(engine, everyone, threads, args.seconds)
            rows.append([f"single-row beat, {threads} connection(s)", len(everyone), rate])
        print(f"heartbeats/s ({args.backend}, batch {args.batch}, median of {args.rounds})")
        table(["path", "devices", "beats/s"], rows)
        sustained = rows[1][2]  # beat_many, all courses
        write_summary(
            args.json_summary,
            [
                goal(
                    f"presence heartbeats sustained (`beat_many`, {len(everyone):,} devices, "
                    f"{args.backend})",
                    "≥ 5,000/s",
                    f"{sustained:,.0f}/s",
                    sustained >= 5_000,
                )
            ],
            beats_s={str(r[0]): r[2] for r in rows},
        )

        course = uid(COURSE, 0)
        teacher = uid(INSTRUCTOR, 1)
        with engine.connect() as conn:
            online = len(store.online(conn, course, None, TIMEOUT))
        found: list[list[Any]] = []

        def as_superuser() -> None:
            with engine.connect() as conn:
                store.online(conn, course, None, TIMEOUT)

        found.append(["store.online, no RLS (superuser)", timed(as_superuser, args.samples)])
        if args.backend == "postgres":
            with engine.connect() as conn:
                roles = access.roles(conn)
            assert roles is not None

            def as_person() -> None:
                with engine.begin() as conn:
                    access.enter(conn, roles.people, teacher)
                    store.online(conn, course, None, TIMEOUT)

            found.append(["store.online, people's role (RLS)", timed(as_person, args.samples)])
            for fn in ("hg_visible_courses", "hg_visible_workshops"):
                for who, person in (("instructor", teacher), ("student", uid(STUDENT, 0))):

                    def visible(fn: str = fn, person: str = person) -> None:
                        with engine.begin() as conn:
                            access.enter(conn, roles.people, person)
                            conn.execute(sa.text(f"SELECT {fn}()")).scalar_one()

                    found.append([f"{fn}(), {who}", timed(visible, args.samples)])
            for label, enter in (("in the DB, no RLS", False), ("in the DB, RLS", True)):
                found.append(
                    [
                        f"EXPLAIN ANALYZE execution, {label}",
                        explain(
                            engine, course, teacher, roles.people if enter else None, args.samples
                        ),
                    ]
                )
        env = cli_env(url, HUMANGLUE_USER="teacher1@example.edu")
        command = [CLI, "presence", "list", "--course", course, "--json"]

        def process() -> None:
            proc = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            assert len(json.loads(proc.stdout)["items"]) == online

        found.append(
            ["humanglue presence list --json (process)", timed(process, max(3, args.samples // 3))]
        )
        print(f"presence list of a course with {online:,} online ({args.backend}, medians)")
        table(["what", "ms"], found)
        engine.dispose()
        dispose_engines()


def explain(
    engine: sa.Engine, course: str, teacher: str, people: str | None, samples: int
) -> float:
    """The median execution time (ms) of `store.online`'s statement, by EXPLAIN ANALYZE."""
    took = []
    for _ in range(samples):
        with engine.begin() as conn:
            if people:
                access.enter(conn, people, teacher)
            statement = _online_sql(conn, course)
            plan = conn.execute(sa.text("EXPLAIN (ANALYZE, FORMAT JSON) " + statement))
            took.append(float(plan.scalar_one()[0]["Execution Time"]))
    return median(took)


def _online_sql(conn: sa.Connection, course: str) -> str:
    """The statement `store.online` runs, with its parameters inlined."""
    seen: list[str] = []

    def before(_c: Any, cursor: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        import psycopg

        seen.append(psycopg.ClientCursor(cursor.connection).mogrify(statement, params))

    sa.event.listen(conn, "before_cursor_execute", before)
    try:
        store.online(conn, course, None, TIMEOUT)
    finally:
        sa.event.remove(conn, "before_cursor_execute", before)
    return next(s for s in seen if "student_presence" in s or "hg_presence_online" in s)


if __name__ == "__main__":
    sys.exit(main())
