"""What the live stats views (migration 0008) cost for a course with 10,000 enrollments.

Seed: 50 courses (build_school) and --students students; course 1 has --enrollments of them
(30% completed, 5% cancelled), a fifth of them reviewed it, each paid once (80% succeeded,
10% failed, 10% refunded), and each has a presence row in it (half online, a quarter away, the
rest offline or stale); the other 49 courses have 200 enrollments, reviews and payments each.

1. EXPLAIN (ANALYZE, BUFFERS) of `SELECT * FROM live_course_stats WHERE course_id = …`, as the
   owner, and on PostgreSQL as the people's role acting as the course's instructor (what
   `--user` does: row-level security under the security_invoker view).
2. Its time in process (median of --rounds), and that of all 50 courses (an admin's `stats`).
3. `humanglue stats --json --course …` as a whole process (start-up included).

    python bench/stats_query.py [--backend postgres|sqlite] [--enrollments 10000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    CLI,
    COURSE,
    INSTRUCTOR,
    STUDENT,
    build_school,
    median,
    migrated,
    table,
    temp_database,
    uid,
)
from humanglue_cli.core import access  # noqa: E402


def seed(engine: sa.Engine, enrollments: int, students: int) -> None:
    build_school(engine, courses=50, students=students)
    course = uid(COURSE, 1)
    rows, reviews, pays, presence = [], [], [], []
    for n in range(1, enrollments + 1):
        status = "completed" if n % 10 < 3 else "cancelled" if n % 20 == 3 else "active"
        rows.append({"i": uid(9, n), "c": course, "s": uid(STUDENT, n), "st": status})
        if n % 5 == 0:
            reviews.append({"i": uid(10, n), "c": course, "s": uid(STUDENT, n), "r": 1 + n % 5})
        paid = "succeeded" if n % 10 < 8 else "failed" if n % 10 == 8 else "refunded"
        pays.append({"i": uid(11, n), "c": course, "s": uid(STUDENT, n), "st": paid})
        state, age = [("online", 5), ("online", 5), ("away", 5), ("offline", 5), ("online", 600)][
            n % 5
        ]
        presence.append(
            {"u": uid(STUDENT, n), "sc": f"course:{course}", "c": course, "st": state, "a": age}
        )
    n = enrollments
    for c in range(2, 51):
        for _k in range(200):
            n += 1
            who = uid(STUDENT, 1 + (n % students))
            rows.append({"i": uid(9, n), "c": uid(COURSE, c), "s": who, "st": "active"})
            reviews.append({"i": uid(10, n), "c": uid(COURSE, c), "s": who, "r": 4})
            pays.append({"i": uid(11, n), "c": uid(COURSE, c), "s": who, "st": "succeeded"})
    postgres = engine.dialect.name == "postgresql"
    ago = (
        "now() - make_interval(secs => :a)"
        if postgres
        else "strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || :a || ' seconds')"
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO enrollments (id, course_id, student_id, status) "
                "VALUES (:i, :c, :s, :st)"
            ),
            rows,
        )
        conn.execute(
            sa.text(
                "INSERT INTO course_reviews (id, course_id, student_id, rating) "
                "VALUES (:i, :c, :s, :r)"
            ),
            reviews,
        )
        conn.execute(
            sa.text(
                "INSERT INTO payments (id, user_id, course_id, amount_cents, status) "
                "VALUES (:i, :s, :c, 4900, :st)"
            ),
            pays,
        )
        conn.execute(
            sa.text(
                "INSERT INTO student_presence (user_id, scope, device_id, course_id, status, "
                f"last_seen_at) VALUES (:u, :sc, 'web', :c, :st, {ago})"
            ),
            presence,
        )
        conn.execute(sa.text("DELETE FROM hg_events"))  # the captures: not what is measured
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE" if postgres else "ANALYZE"))


def as_instructor(conn: sa.Connection) -> None:
    roles = access.roles(conn)
    assert roles is not None
    access.enter(conn, roles.people, uid(INSTRUCTOR, 1))


def explain(engine: sa.Engine, sql: str, people: bool) -> str:
    with engine.connect() as conn, conn.begin():
        if people:
            as_instructor(conn)
        if engine.dialect.name == "sqlite":
            return "\n".join(r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        lines = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql).scalars()
        return "\n".join(lines)


def timed(engine: sa.Engine, sql: str, people: bool, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        with engine.connect() as conn, conn.begin():
            if people:
                as_instructor(conn)
            began = time.perf_counter()
            conn.exec_driver_sql(sql).all()
            times.append((time.perf_counter() - began) * 1000)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--enrollments", type=int, default=10_000)
    parser.add_argument("--students", type=int, default=12_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with temp_database(args.backend) as url:
        engine = migrated(url)
        seed(engine, args.enrollments, max(args.students, args.enrollments))
        one = f"SELECT * FROM live_course_stats WHERE course_id = '{uid(COURSE, 1)}'"
        every = "SELECT * FROM live_course_stats"
        postgres = args.backend == "postgres"
        print(f"== plan of one course ({args.backend}, as the owner)")
        print(explain(engine, one, False), "\n")
        if postgres:
            print("== plan of one course, as its instructor (people's role, RLS)")
            print(explain(engine, one, True), "\n")
        rows = [("one course, owner", timed(engine, one, False, args.rounds))]
        rows.append(("all 50 courses, owner", timed(engine, every, False, args.rounds)))
        if postgres:
            rows.append(("one course, instructor", timed(engine, one, True, args.rounds)))
        env = dict(os.environ, HUMANGLUE_DATABASE_URL=url, HUMANGLUE_USER="teacher1@example.edu")
        process = []
        for _ in range(5):
            began = time.perf_counter()
            subprocess.run(
                [CLI, "stats", "--json", "--course", uid(COURSE, 1)],
                env=env,
                check=True,
                capture_output=True,
            )
            process.append((time.perf_counter() - began) * 1000)
        rows.append(("`humanglue stats --json --course` (process)", median(process)))
        table(["query", "median ms"], rows)
        engine.dispose()


if __name__ == "__main__":
    main()
