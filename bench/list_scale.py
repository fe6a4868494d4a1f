"""`notifications list --json` and `count --json` for a person with 1,000,000 of 5,000,000
notifications, at any depth and with any filter (issue 10: each ≤ 1.15 × the bare
`python -c "import sqlalchemy, psycopg, typer"`, as whole processes, in the same run).

PostgreSQL. Seed (one INSERT … SELECT generate_series, triggers off while seeding, then
VACUUM ANALYZE): 50 instructors, 100 courses, students up to --profiles; --rows notifications
over a year, every k-th one the measured instructor's (teacher1@example.edu, --mine of them),
seven types alike and co_instructor_update one in a thousand, each about one of the 100
courses (`data.course_id`, an announcement about none), 30% unread; the unread counts filled
in as migration 0010 does (the triggers are off while seeding).

1. Each case — the first page, a page 3/4 of the way back (`--cursor`), and the filters alone
   and combined, some deep — runs as a whole process on an operator's URL acting `--user`
   (the people's role: row-level security applies), interleaved round by round with the bare
   imports; the median of --rounds, its ratio to the bare imports' median, and the median of
   each round's ratio.
2. The plan of each case's statement, EXPLAIN (ANALYZE, BUFFERS) as the CLI runs it (the
   people's role, acting as the instructor): its nodes and execution time.

    python bench/list_scale.py [--rows 5000000] [--mine 1000000] [--rounds 15] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import sqlalchemy as sa
from _common import (
    CLI,
    COURSE,
    INSTRUCTOR,
    STUDENT,
    goal,
    libpq,
    median,
    table,
    temp_database,
    uid,
    write_summary,
)
from sqlalchemy.pool import NullPool

from humanglue_cli.core import access, migrate
from humanglue_cli.core.db import create_engine
from humanglue_cli.core.domain import NOTIFICATION_TYPES
from humanglue_cli.core.store import notifications

TEACHERS, COURSES = 50, 100
EMAIL = "teacher1@example.edu"
TEACHER1 = uid(INSTRUCTOR, 1)
RATIO_GOAL = 1.15
BARE = "import sqlalchemy, psycopg, typer"
RARE = "co_instructor_update"
F = notifications.Filters


def sql_uid(kind: int, number: str) -> str:
    return f"('{kind:08x}-0000-4000-8000-' || lpad(({number})::text, 12, '0'))::uuid"


def seed(url: str, rows: int, mine: int, profiles: int) -> None:
    students = profiles - TEACHERS
    every = max(1, rows // mine)
    others = profiles - 1
    other = (
        f"CASE WHEN (g * 7919::bigint) % {others} < {TEACHERS - 1} "
        f"THEN {sql_uid(INSTRUCTOR, f'(g * 7919::bigint) % {others} + 2')} "
        f"ELSE {sql_uid(STUDENT, f'(g * 7919::bigint) % {others} - {TEACHERS - 1} + 1')} END"
    )
    common = [t for t in NOTIFICATION_TYPES if t != RARE]
    types = "ARRAY[" + ", ".join(f"'{t}'" for t in common) + "]"
    # Type, course and read state independent of each other (hashes of the row's number); one
    # type in a thousand is RARE.
    kind = (
        f"CASE WHEN abs(hashint4(g::int)) % 1000 = 0 THEN '{RARE}' "
        f"ELSE ({types})[abs(hashint4(g::int)) % {len(common)} + 1] END"
    )
    step = 365 * 86400 / rows
    course = sql_uid(COURSE, f"abs(hashint4(g::int + 1)) % {COURSES} + 1")
    statements = [
        "SET session_replication_role = replica",  # no capture triggers, no FK checks
        "INSERT INTO profiles (id, email, full_name, role) SELECT "
        f"{sql_uid(INSTRUCTOR, 'g')}, 'teacher' || g || '@example.edu', 'Teacher ' || g, "
        f"'instructor' FROM generate_series(1, {TEACHERS}) g",
        "INSERT INTO profiles (id, email, full_name, role) SELECT "
        f"{sql_uid(STUDENT, 'g')}, 'student' || g || '@example.edu', 'Student ' || g, "
        f"'student' FROM generate_series(1, {students}) g",
        "INSERT INTO courses (id, instructor_id, title) SELECT "
        f"{sql_uid(COURSE, 'g')}, {sql_uid(INSTRUCTOR, f'(g - 1) % {TEACHERS} + 1')}, "
        f"'Course ' || g FROM generate_series(1, {COURSES}) g",
        "INSERT INTO notifications (id, user_id, type, title, message, data, link, priority, "
        "read_at, created_at) SELECT gen_random_uuid(), "
        f"CASE WHEN g % {every} = 0 THEN '{TEACHER1}'::uuid ELSE {other} END, {kind}, "
        f"'Notification ' || g, 'Something happened in Course ' || (g % {COURSES} + 1) || '.', "
        f"CASE WHEN {kind} = 'system_announcement' THEN '{{}}'::jsonb "
        f"ELSE jsonb_build_object('course_id', {course}) END, "
        f"'/courses/' || (g % {COURSES} + 1), 'normal', "
        f"CASE WHEN abs(hashint4(g::int + 2)) % 10 >= 3 THEN t.c + interval '1 hour' END, t.c "
        f"FROM generate_series(1, {rows}) g, "
        f"LATERAL (SELECT now() - ({rows} - g) * interval '{step:.6f} seconds' AS c) t",
        "RESET session_replication_role",
    ]
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
        if conn.execute("SELECT to_regclass('hg_unread_counts')").fetchone() != (None,):
            # The triggers were off while seeding: the counts as migration 0010 fills them in.
            conn.execute(
                "INSERT INTO hg_unread_counts (user_id, type, n) SELECT user_id, type, count(*) "
                "FROM notifications WHERE read_at IS NULL GROUP BY user_id, type"
            )
        conn.execute("VACUUM ANALYZE")


# --- the cases ---------------------------------------------------------------------------------


def cases(engine: sa.Engine, mine: int) -> dict[str, tuple[list[str], Callable[..., Any]]]:
    """name → (the CLI's arguments, the store's call it makes once it knows the user)."""
    course = uid(COURSE, 51)  # taught by teacher1; about 1 in 100 of its rows
    now = datetime.now(UTC)
    since = (now - timedelta(days=30)).replace(microsecond=0)
    until = (now - timedelta(days=180)).replace(microsecond=0)

    def deep(filters: notifications.Filters, fraction: float = 0.75) -> str:
        """The cursor 3/4 of the way back through what `filters` select."""
        query = sa.select(sa.func.count()).where(*filters.where(TEACHER1))
        query = query.select_from(notifications.notifications)
        with engine.connect() as conn:
            total = conn.execute(query).scalar_one()
            row = conn.execute(
                sa.select(notifications.N.id, notifications.N.created_at)
                .where(*filters.where(TEACHER1))
                .order_by(notifications.N.created_at.desc(), notifications.N.id.desc())
                .offset(int(total * fraction))
                .limit(1)
            ).one()
        last = argparse.Namespace(id=str(row.id), created_at=row.created_at)
        return notifications.encode_cursor(last, filters)  # type: ignore[arg-type]

    def listing(filters: notifications.Filters, cursor: str | None = None) -> Callable[..., Any]:
        return lambda c: notifications.list_page(c, TEACHER1, filters, 20, cursor)

    read, unread = F(read=True), F(read=False)
    review = F(types=("review",))
    two = F(types=("review", "payment"))
    on_course = F(course_id=course)
    combined = F(read=False, types=("review",), course_id=course)
    rare = F(types=(RARE,))
    recent = F(since=since)
    old = F(until=until)
    iso = {"since": since.isoformat(), "until": until.isoformat()}
    table_: dict[str, tuple[list[str], Callable[..., Any]]] = {
        "list": ([], listing(F())),
        "list --cursor (3/4 back)": (["--cursor", deep(F())], listing(F(), deep(F()))),
        "list --unread": (["--unread"], listing(unread)),
        "list --read --cursor (deep)": (
            ["--read", "--cursor", deep(read)],
            listing(read, deep(read)),
        ),
        "list --type review": (["--type", "review"], listing(review)),
        "list --type review --type payment --cursor (deep)": (
            ["--type", "review", "--type", "payment", "--cursor", deep(two)],
            listing(two, deep(two)),
        ),
        "list --course": (["--course", course], listing(on_course)),
        "list --course --cursor (deep)": (
            ["--course", course, "--cursor", deep(on_course)],
            listing(on_course, deep(on_course)),
        ),
        "list --unread --type review --course": (
            ["--unread", "--type", "review", "--course", course],
            listing(combined),
        ),
        f"list --type {RARE} (1 in 1,000)": (["--type", RARE], listing(rare)),
        f"list --type {RARE} --cursor (deep)": (
            ["--type", RARE, "--cursor", deep(rare)],
            listing(rare, deep(rare)),
        ),
        "list --since 30 days": (["--since", iso["since"]], listing(recent)),
        "list --until 180 days --cursor (deep)": (
            ["--until", iso["until"], "--cursor", deep(old)],
            listing(old, deep(old)),
        ),
        "count": ([], lambda c: notifications.count_unread(c, TEACHER1)),
    }
    return table_


def run_cli(url: str, argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, the process's CPU seconds, its stdout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUMANGLUE_")}
    env.update(HUMANGLUE_DATABASE_URL=url, HUMANGLUE_USER=EMAIL, NO_COLOR="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}: {out.stderr}")
    return elapsed, cpu, out.stdout


def explain(url: str, call: Callable[[sa.Connection], Any]) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the last statement `call` runs, as the CLI runs it."""
    seen: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            roles = access.roles(conn)
            assert roles is not None
            conn.rollback()
            sa.event.listen(conn, "before_cursor_execute", capture)
            with conn.begin():
                access.enter(conn, roles.people, TEACHER1)
                call(conn)
            sa.event.remove(conn, "before_cursor_execute", capture)
            statement, parameters = seen[-1]
            with conn.begin():
                access.enter(conn, roles.people, TEACHER1)
                text = "EXPLAIN (ANALYZE, BUFFERS) " + statement
                return list(conn.exec_driver_sql(text, parameters).scalars())
    finally:
        engine.dispose()


def summary(plan: list[str]) -> tuple[str, str]:
    nodes = [
        line.strip().removeprefix("->").strip().split("  (")[0]
        for n, line in enumerate(plan)
        if n == 0
        or (line.lstrip().startswith("->") and not plan[n - 1].lstrip().startswith("InitPlan"))
    ]
    took = next((line.split(":")[1].strip() for line in plan if "Execution Time" in line), "?")
    return " > ".join(nodes), took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--mine", type=int, default=1_000_000)
    parser.add_argument("--profiles", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--plans", action="store_true", help="print the whole plans")
    parser.add_argument("--quick", action="store_true", help="500,000 rows, 100,000 mine, 5 rounds")
    parser.add_argument("--json-summary", help="write the goal row there, for bench/all.py")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.mine, args.rounds = 500_000, 100_000, 5
    with temp_database("postgres") as url:
        engine = create_engine(url)
        migrate.upgrade(engine)
        began = time.perf_counter()
        seed(url, args.rows, args.mine, args.profiles)
        print(
            f"seeded {args.rows:,} notifications ({args.mine:,} of {EMAIL}) "
            f"in {time.perf_counter() - began:.0f} s",
            flush=True,
        )
        chosen = {k: v for k, v in cases(engine, args.mine).items() if args.only in k}
        engine.dispose()
        argvs = {BARE: [sys.executable, "-c", BARE]}
        for name, (extra, _call) in chosen.items():
            command = "count" if name == "count" else "list"
            argvs[name] = [CLI, "notifications", command, "--json", *extra]
        for argv in argvs.values():  # warm the page cache
            run_cli(url, argv)
        samples: dict[str, list[float]] = {name: [] for name in argvs}
        cpus: dict[str, list[float]] = {name: [] for name in argvs}
        order = list(argvs)
        for rnd in range(args.rounds):
            shift = rnd % len(order)
            for name in order[shift:] + order[:shift]:
                seconds, cpu, _ = run_cli(url, argvs[name])
                samples[name].append(seconds * 1000)
                cpus[name].append(cpu * 1000)
            print(f"  round {rnd + 1}/{args.rounds}", flush=True)
        answers = {n: json.loads(run_cli(url, argvs[n])[2]) for n in chosen}
        plans = {name: explain(url, call) for name, (_extra, call) in chosen.items()}

    bare = median(samples[BARE])
    print(
        f"\nwhole processes, {args.rounds} rounds interleaved, {args.mine:,} of {args.rows:,} "
        f"rows (ms); ratio: to the bare imports' median; paired: the median of each round's\n"
    )
    bare_cpu = median(cpus[BARE])
    ratios = {name: median(samples[name]) / bare for name in chosen}
    worst = max(ratios, key=lambda name: ratios[name]) if ratios else ""
    write_summary(
        args.json_summary,
        [
            goal(
                "`notifications list --json` / `count --json`, 1,000,000 of 5,000,000 rows",
                f"≤ {RATIO_GOAL} × bare imports",
                f"{sum(r <= RATIO_GOAL for r in ratios.values())} of {len(ratios)} cases met; "
                f"worst {ratios.get(worst, 0):.2f}× ({worst})",
                bool(ratios) and max(ratios.values()) <= RATIO_GOAL,
            )
        ],
        **ratios,
    )
    rows = [[BARE, median(samples[BARE]), "1.00", "", "", bare_cpu, "1.00", ""]]
    for name in chosen:
        mid = median(samples[name])
        paired = median([a / b for a, b in zip(samples[name], samples[BARE], strict=True)])
        cpu = median(cpus[name])
        items = answers[name].get("items")
        shown = len(items) if items is not None else answers[name].get("unread")
        rows.append(
            [
                name,
                mid,
                f"{mid / bare:.2f}",
                f"{paired:.2f}",
                "met" if mid / bare <= RATIO_GOAL else "NOT met",
                cpu,
                f"{cpu / bare_cpu:.2f}",
                str(shown),
            ]
        )
    table(
        [
            "process",
            "median",
            "ratio",
            "paired",
            f"≤ {RATIO_GOAL}×",
            "CPU",
            "CPU ratio",
            "items/unread",
        ],
        rows,
    )
    print(
        "CPU: the process's own user + system time (median), which a busy machine moves less "
        "than the wall time; the database's time is not in it\n"
    )
    print("plans (the people's role acting as the instructor), EXPLAIN (ANALYZE, BUFFERS)\n")
    plan_rows = []
    for name, plan in plans.items():
        nodes, took = summary(plan)
        plan_rows.append([name, took, nodes])
        if args.plans:
            print(name + ":\n" + "\n".join("  " + line for line in plan) + "\n")
    table(["case", "execution", "plan"], plan_rows)


if __name__ == "__main__":
    main()
