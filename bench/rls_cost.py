"""What row-level security (migration 0004) costs `notifications list/count` and the worker.

One run, two PostgreSQL databases seeded identically: "before" at revision 0003 (no roles, no
row-level security) and "after" at head (0004: roles, policies, SECURITY DEFINER capture
triggers). "after" is a copy of "before" (CREATE DATABASE … TEMPLATE) taken once it is seeded
and analyzed, then upgraded: the same rows on the same pages, the same statistics.

Seed: 50 instructors teaching 100 courses (every other one with a co-instructor), students
up to --profiles, three enrollments each, and --rows notifications over a year, in time
order, every k-th one for the measured instructor (teacher1@example.edu, --instructor-rows of
them), 30% unread.

1. The plans: EXPLAIN (ANALYZE, BUFFERS) of the statements that `list` (the first page, and a
   page 3/4 of the way back by --cursor) and `count` run, captured from the store's own
   functions: as the superuser on "before"; on "after" as the people's role acting as the
   instructor (what `--user` does) and as the instructor's personal login. Also the personal
   login's look-up of its own profile, and `list` for a student with a few hundred
   notifications (where ix_notifications_user_created is the plan, with or without RLS).
2. `humanglue notifications list --json` (first page and the deep page) and `count --json`
   as whole processes (HUMANGLUE_DATABASE_URL, HUMANGLUE_USER): "before" on the superuser's
   URL (the application's WHERE only); "after" on the same URL (an operator acting `--user`:
   SET LOCAL ROLE to the people's group and the person's id, the policies apply); "after" on
   the instructor's personal login (`humanglue access grant … --json`). The CLI refuses a
   schema without roles, so on "before" it runs with its two role look-ups stubbed out
   (NO_ROLES below: what it did before 0004). Then the CLI's steps alone, in process, one
   transaction each: whom it acts as (`resolve`, before any role is entered), then the
   statement. Variants alternate round-robin; the personal login's processes take seconds
   (its profile's policy), so they run in the first --login-rounds rounds only.
3. The platform's writes: --events plain-SQL enrollments, executemany in transactions of 100
   (psycopg), and the same number in one INSERT … SELECT (the triggers' own cost per row,
   undiluted by round trips); the capture triggers SECURITY INVOKER (before) and SECURITY
   DEFINER with a fixed search_path (after); as the superuser (the platform's role here).
   Alternating, the outbox emptied before each.
4. The worker's batch: --events enrollments queued (untimed), then `humanglue worker --burst
   --json` timed until done (start-up included), on "before" and "after" as the superuser
   (which bypasses row-level security) and on "after" as a login in the `<prefix>_worker`
   group (which passes the permissive policies). Alternating, outbox and ledger emptied first.

The databases (hgbench_rls_<random>_before/_after) are dropped at the end, also on Ctrl-C or an
error, with the roles `db upgrade`, `access grant` and this script made for them.

    python bench/rls_cost.py [--rows 1000000] [--instructor-rows 200000] [--profiles 3000]
                             [--rounds 15] [--login-rounds 2] [--events 20000]
                             [--worker-rounds 3] [--capture-rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from _common import ADMIN_URL, COURSE, INSTRUCTOR, STUDENT, libpq, median, table, uid
from sqlalchemy.pool import NullPool

from humanglue_cli.core import access, migrate
from humanglue_cli.core.db import create_engine, dispose_engines
from humanglue_cli.core.domain import NOTIFICATION_TYPES
from humanglue_cli.core.store import notifications, people

TEACHERS, COURSES = 50, 100
EMAIL = "teacher1@example.edu"
TEACHER1 = uid(INSTRUCTOR, 1)
INDEX = "ix_notifications_user_created"


def sql_uid(kind: int, number: str) -> str:
    """`uid(kind, n)` as an SQL expression of the integer expression `number`."""
    return f"('{kind:08x}-0000-4000-8000-' || lpad(({number})::text, 12, '0'))::uuid"


# --- the two databases --------------------------------------------------------------------------


@dataclass
class Databases:
    admin: sa.Engine
    before: str
    after: str

    def url(self, name: str, user: str | None = None) -> str:
        url = sa.make_url(ADMIN_URL).set(database=name)
        if user:
            url = url.set(username=user, password=None)
        return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def databases() -> Iterator[Databases]:
    """Names of two databases (only "before" is created here); both dropped on exit, with every
    role whose comment names one of them ('… (database oid N)', as `db upgrade` comments)."""
    tag = uuid.uuid4().hex[:8]
    dbs = Databases(
        sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool),
        f"hgbench_rls_{tag}_before",
        f"hgbench_rls_{tag}_after",
    )
    with dbs.admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{dbs.before}"'))
    try:
        yield dbs
    finally:
        dispose_engines()
        with dbs.admin.connect() as conn:
            oids = [
                str(o)
                for o in conn.execute(
                    sa.text("SELECT oid FROM pg_database WHERE datname = ANY(:n)"),
                    {"n": [dbs.before, dbs.after]},
                ).scalars()
            ]
            for name in (dbs.before, dbs.after):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            roles = (
                conn.execute(
                    sa.text(
                        "SELECT r.rolname FROM pg_roles r JOIN pg_shdescription d "
                        "ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass "
                        "WHERE d.description ~ '^humanglue: ' AND substring(d.description "
                        "from '[(]database oid ([0-9]+)[)]') = ANY(:oids) "
                        "ORDER BY r.rolcanlogin DESC, r.rolname"
                    ),
                    {"oids": oids},
                )
                .scalars()
                .all()
            )
            for role in roles:
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        dbs.admin.dispose()


def upgraded(url: str, target: str) -> None:
    engine = create_engine(url)
    try:
        migrate.upgrade(engine, target)
    finally:
        engine.dispose()


def seed(url: str, rows: int, mine: int, profiles: int) -> dict[str, Any]:
    """Profiles, courses, enrollments and `rows` notifications (set-based), then ANALYZE.

    The platform's rows go in with triggers off (session_replication_role = replica): no
    outbox rows, no foreign-key checks (the rows are consistent by construction).
    """
    students = profiles - TEACHERS
    every = max(1, rows // mine)
    others = profiles - 1  # everyone but teacher1
    other = (
        f"CASE WHEN (g * 7919::bigint) % {others} < {TEACHERS - 1} "
        f"THEN {sql_uid(INSTRUCTOR, f'(g * 7919::bigint) % {others} + 2')} "
        f"ELSE {sql_uid(STUDENT, f'(g * 7919::bigint) % {others} - {TEACHERS - 1} + 1')} END"
    )
    types = "ARRAY[" + ", ".join(f"'{t}'" for t in NOTIFICATION_TYPES) + "]"
    step = 365 * 86400 / rows  # seconds between two notifications: a year in all
    course = sql_uid(COURSE, f"g % {COURSES} + 1")
    enrolled = f"((g - 1) / {students} * 31 + (g - 1) % {students} * 7) % {COURSES} + 1"
    statements = [
        "SET session_replication_role = replica",
        "INSERT INTO profiles (id, email, full_name, role) SELECT "
        f"{sql_uid(INSTRUCTOR, 'g')}, 'teacher' || g || '@example.edu', 'Teacher ' || g, "
        f"'instructor' FROM generate_series(1, {TEACHERS}) g",
        "INSERT INTO profiles (id, email, full_name, role) SELECT "
        f"{sql_uid(STUDENT, 'g')}, 'student' || g || '@example.edu', 'Student ' || g, "
        f"'student' FROM generate_series(1, {students}) g",
        "INSERT INTO courses (id, instructor_id, title) SELECT "
        f"{sql_uid(COURSE, 'g')}, {sql_uid(INSTRUCTOR, f'(g - 1) % {TEACHERS} + 1')}, "
        f"'Course ' || g FROM generate_series(1, {COURSES}) g",
        "INSERT INTO course_instructors (course_id, user_id) SELECT "
        f"{sql_uid(COURSE, 'g')}, {sql_uid(INSTRUCTOR, f'g % {TEACHERS} + 1')} "
        f"FROM generate_series(2, {COURSES}, 2) g",
        "INSERT INTO enrollments (id, course_id, student_id) SELECT gen_random_uuid(), "
        f"{sql_uid(COURSE, enrolled)}, {sql_uid(STUDENT, f'(g - 1) % {students} + 1')} "
        f"FROM generate_series(1, {3 * students}) g",
        "INSERT INTO notifications (id, user_id, type, title, message, data, link, priority, "
        "read_at, created_at) SELECT gen_random_uuid(), "
        f"CASE WHEN g % {every} = 0 THEN '{TEACHER1}'::uuid ELSE {other} END, "
        f"({types})[g % {len(NOTIFICATION_TYPES)} + 1], "
        f"'Notification ' || g, 'Something happened in Course ' || (g % {COURSES} + 1) || '.', "
        f"jsonb_build_object('course_id', {course}), '/courses/' || (g % {COURSES} + 1), "
        "'normal', "
        f"CASE WHEN g / {every} % 10 < 7 THEN t.c + interval '1 hour' END, t.c "
        f"FROM generate_series(1, {rows}) g, "
        f"LATERAL (SELECT now() - ({rows} - g) * interval '{step:.6f} seconds' AS c) t",
    ]
    conn = psycopg.connect(libpq(url), autocommit=True)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.execute("RESET session_replication_role")
        conn.execute("ANALYZE")
        return {
            "notifications": rows,
            "mine": conn.execute(
                "SELECT count(*) FROM notifications WHERE user_id = %s", [TEACHER1]
            ).fetchone()[0],  # type: ignore[index]
            "profiles": profiles,
            "enrollments": 3 * students,
        }
    finally:
        conn.close()


def deep_cursor(url: str, mine: int) -> str:
    """The cursor after the instructor's notification 3/4 of the way back (newest first)."""
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT id, created_at FROM notifications WHERE user_id = :u "
                "ORDER BY created_at DESC, id DESC OFFSET :k LIMIT 1"
            ),
            {"u": TEACHER1, "k": mine * 3 // 4},
        ).one()
    engine.dispose()
    last = cast(Any, argparse.Namespace(id=str(row.id), created_at=row.created_at))
    return notifications.encode_cursor(last, notifications.Filters())


# The CLI refuses a schema without roles ("the schema predates HumanGlue's roles: run `humanglue
# db upgrade`"). On "before" it runs with its two role look-ups stubbed out: `login_person` (not
# a personal login) and `roles` (no people's role to enter), which is what the CLI did before
# 0004 (commit 186fa6a added them): find the person, then the statement with its WHERE only.
# Every variant runs through the same `python -c`, so that start-up costs the same.
NO_ROLES = (
    "from humanglue_cli.core import access\n"
    "access.login_person = lambda conn: None\n"
    "access.roles = lambda conn: None\n"
)
RUN = "import sys\n{stub}from humanglue_cli.main import main\nsys.argv[0] = 'humanglue'\nmain()\n"


def cli(url: str, *args: str, user: str | None = EMAIL, roles: bool = True) -> tuple[float, str]:
    """Run the CLI as a whole process (without its role look-ups if not `roles`); (s, stdout)."""
    env = dict(os.environ, HUMANGLUE_DATABASE_URL=url, NO_COLOR="1")
    env.pop("HUMANGLUE_BROKER_URL", None)
    env.pop("HUMANGLUE_USER", None)
    if user:
        env["HUMANGLUE_USER"] = user
    code = RUN.format(stub="" if roles else NO_ROLES)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600
    )
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"humanglue {' '.join(args)} exited {out.returncode}: {out.stderr}")
    return elapsed, out.stdout


# --- 1. plans and 2. list/count ----------------------------------------------------------------


@dataclass
class Variant:
    name: str
    url: str
    acting: str | None = None  # the people's role an operator's session takes (--user), if any
    roles: bool = True  # False on "before": the CLI's role look-ups stubbed out (NO_ROLES)
    login: bool = False  # the instructor's personal login


RESOLVE = "resolve the person"
COMMANDS = ("list", "list --cursor (deep)", "count")


def resolve(conn: sa.Connection, variant: Variant) -> object:
    """What the CLI runs to know whom it acts as (Runtime._resolve), before entering any role."""
    own = access.login_person(conn) if variant.roles else None
    if own is not None:  # a personal login: its profile, through the policy on profiles
        return people.find_person(conn, own)
    person = people.find_person(conn, EMAIL)
    if variant.roles:
        access.roles(conn)
    return person


def statements(cursor: str, user: str = TEACHER1) -> dict[str, Callable[[sa.Connection], object]]:
    """The store's calls that `list`, `list --cursor` and `count` make, once the CLI knows whom
    it acts as (after `enter` on an operator's session)."""
    filters = notifications.Filters()
    return {
        "list": lambda c: notifications.list_page(c, user, filters, 20),
        "list --cursor (deep)": lambda c: notifications.list_page(c, user, filters, 20, cursor),
        "count": lambda c: notifications.count_unread(c, user),
    }


def run(
    conn: sa.Connection, variant: Variant, what: str, cursor: str, user: str = TEACHER1
) -> None:
    """One of the CLI's steps as the CLI runs it, in a transaction of its own."""
    with conn.begin():
        if what == RESOLVE:
            resolve(conn, variant)
            return
        if variant.acting:
            access.enter(conn, variant.acting, user)
        statements(cursor, user)[what](conn)


def explain(url: str, variant: Variant, what: str, cursor: str, user: str = TEACHER1) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the last statement a step executes, as the variant runs it."""
    seen: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            sa.event.listen(conn, "before_cursor_execute", capture)
            run(conn, variant, what, cursor, user)
            sa.event.remove(conn, "before_cursor_execute", capture)
            statement, parameters = seen[-1]
            with conn.begin():
                if variant.acting and what != RESOLVE:
                    access.enter(conn, variant.acting, user)
                text = "EXPLAIN (ANALYZE, BUFFERS) " + statement
                return list(conn.exec_driver_sql(text, parameters).scalars())
    finally:
        engine.dispose()


def summary(plan: list[str]) -> tuple[str, str]:
    """(the plan's nodes in one line, its execution time) from a plan's text."""
    nodes = [  # an InitPlan's node left out
        line.strip().removeprefix("->").strip().split("  (")[0]
        for n, line in enumerate(plan)
        if n == 0
        or (line.lstrip().startswith("->") and not plan[n - 1].lstrip().startswith("InitPlan"))
    ]
    took = next((line.split(":")[1].strip() for line in plan if "Execution Time" in line), "?")
    return " > ".join(nodes), took


Samples = dict[tuple[str, str], list[float]]


def measure_reads(
    variants: list[Variant], cursor: str, rounds: int, login_rounds: int
) -> tuple[Samples, Samples]:
    """Whole processes, and the CLI's steps alone in process, round-robin; seconds. The
    personal login's process and its RESOLVE step take seconds: only in the first
    `login_rounds` rounds."""
    args = {
        "list": ("notifications", "list", "--json"),
        "list --cursor (deep)": ("notifications", "list", "--json", "--cursor", cursor),
        "count": ("notifications", "count", "--json"),
    }
    pairs = [(what, v) for what in COMMANDS for v in variants]
    process: Samples = {(w, v.name): [] for w, v in pairs}
    outputs: dict[tuple[str, str], str] = {}
    for rnd in range(rounds):
        shift = rnd % len(pairs)
        for what, variant in pairs[shift:] + pairs[:shift]:
            if variant.login and rnd >= login_rounds:
                continue
            seconds, stdout = cli(variant.url, *args[what], roles=variant.roles)
            process[(what, variant.name)].append(seconds)
            outputs[(what, variant.name)] = stdout
        print(f"  processes, round {rnd + 1}/{rounds}", flush=True)
    for what in COMMANDS:  # the same answer whatever the variant
        answers = {json.dumps(json.loads(outputs[(what, v.name)])) for v in variants}
        if len(answers) != 1:
            raise RuntimeError(f"{what}: the variants disagree: {answers}")

    steps = [(what, v) for what in (RESOLVE, *COMMANDS) for v in variants]
    alone: Samples = {(w, v.name): [] for w, v in steps}
    engines = [sa.create_engine(v.url, poolclass=NullPool) for v in variants]
    conns = {v.name: e.connect() for v, e in zip(variants, engines, strict=True)}
    try:
        for rnd in range(rounds):
            shift = rnd % len(steps)
            for what, variant in steps[shift:] + steps[:shift]:
                if variant.login and what == RESOLVE and rnd >= login_rounds:
                    continue
                start = time.perf_counter()
                run(conns[variant.name], variant, what, cursor)
                alone[(what, variant.name)].append(time.perf_counter() - start)
    finally:
        for conn in conns.values():
            conn.close()
        for engine in engines:
            engine.dispose()
    return process, alone


# --- 3. the platform's writes and 4. the worker's batch ---------------------------------------


def enrollments(n: int, students: int, seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    return [
        (
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            uid(COURSE, rng.randint(1, COURSES)),
            uid(STUDENT, rng.randint(1, students)),
        )
        for _ in range(n)
    ]


def empty_outbox(url: str, ledger: bool = False) -> None:
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute("TRUNCATE hg_events" + (", hg_ledger" if ledger else ""))


def fill(url: str, rows: list[tuple[str, str, str]], batch: int = 100) -> float:
    """Insert the enrollments in transactions of `batch` (executemany); seconds."""
    with psycopg.connect(libpq(url)) as conn:
        start = time.perf_counter()
        with conn.cursor() as cur:
            for at in range(0, len(rows), batch):
                cur.executemany(
                    "INSERT INTO enrollments (id, course_id, student_id) VALUES (%s, %s, %s)",
                    rows[at : at + batch],
                )
                conn.commit()
        return time.perf_counter() - start


def fill_at_once(url: str, n: int, students: int) -> float:
    """One INSERT … SELECT of `n` enrollments, one transaction; seconds. The trigger's own cost
    per row, with no round trip per row or per batch to dilute it."""
    with psycopg.connect(libpq(url)) as conn:
        start = time.perf_counter()
        conn.execute(
            "INSERT INTO enrollments (id, course_id, student_id) SELECT gen_random_uuid(), "
            f"{sql_uid(COURSE, f'(g * 7) % {COURSES} + 1')}, "
            f"{sql_uid(STUDENT, f'(g * 13) % {students} + 1')} FROM generate_series(1, {n}) g"
        )
        conn.commit()
        return time.perf_counter() - start


CAPTURE = ("100 per commit", "one INSERT … SELECT")


def measure_capture(
    dbs: Databases, n: int, students: int, rounds: int
) -> dict[tuple[str, str], list[float]]:
    """rows/s of the platform's enrollments, (how, before|after); alternating."""
    rates: dict[tuple[str, str], list[float]] = {
        (how, name): [] for how in CAPTURE for name in ("before", "after")
    }
    for rnd in range(rounds):
        rows = enrollments(n, students, seed=rnd)
        order = ["before", "after"] if rnd % 2 == 0 else ["after", "before"]
        for name in order:
            url = dbs.url(getattr(dbs, name))
            empty_outbox(url)
            rates[(CAPTURE[0], name)].append(n / fill(url, rows))
            empty_outbox(url)
            rates[(CAPTURE[1], name)].append(n / fill_at_once(url, n, students))
        print(
            f"  capture, round {rnd + 1}/{rounds}: "
            + ", ".join(f"{how}, {name} {v[-1]:,.0f} rows/s" for (how, name), v in rates.items()),
            flush=True,
        )
    for name in ("before", "after"):
        empty_outbox(dbs.url(getattr(dbs, name)))
    return rates


def worker_login(dbs: Databases) -> str:
    """A login in the after database's `<prefix>_worker` group (dropped with the roles)."""
    with psycopg.connect(libpq(dbs.url(dbs.after)), autocommit=True) as conn:
        prefix = conn.execute(
            "SELECT value FROM hg_settings WHERE name = 'role_prefix'"
        ).fetchone()[0]  # type: ignore[index]
        oid = conn.execute(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        ).fetchone()[0]  # type: ignore[index]
        login = f"{prefix}_bench_w"
        conn.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE "{prefix}_worker"')
        conn.execute(
            f"COMMENT ON ROLE \"{login}\" IS 'humanglue: bench worker login (database oid {oid})'"
        )
    return login


def measure_worker(
    variants: list[tuple[str, str]], n: int, students: int, rounds: int
) -> dict[str, list[float]]:
    """events/s of `worker --burst` per variant (name, worker's URL)."""
    rates: dict[str, list[float]] = {name: [] for name, _ in variants}
    for rnd in range(rounds):
        picks = enrollments(n, students, seed=100 + rnd)  # the same for every variant
        shift = rnd % len(variants)
        for name, url in variants[shift:] + variants[:shift]:
            rows = [(str(uuid.uuid4()), course, student) for _, course, student in picks]
            platform = sa.make_url(url).set(username="postgres").render_as_string(False)
            empty_outbox(platform, ledger=True)
            fill(platform, rows, batch=1000)
            seconds, stdout = cli(url, "worker", "--burst", "--json", user=None)
            processed = int(json.loads(stdout)["processed"])
            if processed != n:
                raise RuntimeError(f"worker --burst on {name}: processed {processed} of {n}")
            rates[name].append(n / seconds)
            print(f"  worker, round {rnd + 1}/{rounds}, {name}: {n / seconds:,.0f} events/s")
    return rates


# --- the run ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="notifications in all")
    parser.add_argument("--instructor-rows", type=int, default=200_000)
    parser.add_argument("--profiles", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=15, help="of list/count")
    parser.add_argument(
        "--login-rounds", type=int, default=2, help="of the personal login's processes"
    )
    parser.add_argument("--events", type=int, default=20_000, help="enrollments per fill")
    parser.add_argument("--worker-rounds", type=int, default=3)
    parser.add_argument("--capture-rounds", type=int, default=5)
    args = parser.parse_args()
    students = args.profiles - TEACHERS
    began = time.perf_counter()
    with databases() as dbs:
        before, after = dbs.url(dbs.before), dbs.url(dbs.after)
        upgraded(before, "0003")
        start = time.perf_counter()
        seeded = seed(before, args.rows, args.instructor_rows, args.profiles)
        print(f"  seeded {seeded} in {time.perf_counter() - start:.1f} s", flush=True)
        start = time.perf_counter()
        dispose_engines()
        with dbs.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{dbs.after}" TEMPLATE "{dbs.before}"'))
        upgraded(after, "head")
        print(f"  copied and upgraded in {time.perf_counter() - start:.1f} s", flush=True)
        # The worker of today locks recipients through 0004's hg_lock_profiles: "before" gets
        # the same statement as a plain function (what the worker ran inline before 0004).
        with psycopg.connect(libpq(before), autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION hg_lock_profiles(ids uuid[]) RETURNS SETOF uuid LANGUAGE sql "
                "AS $$ SELECT id FROM profiles WHERE id = ANY (ids) ORDER BY id "
                "FOR KEY SHARE SKIP LOCKED $$"
            )
        _, granted = cli(after, "access", "grant", EMAIL, "--json", user=None)
        with psycopg.connect(libpq(after)) as conn:
            prefix = conn.execute(
                "SELECT value FROM hg_settings WHERE name = 'role_prefix'"
            ).fetchone()[0]  # type: ignore[index]
        variants = [
            Variant("before, superuser (WHERE only)", before, roles=False),
            Variant("after, operator --user", after, acting=f"{prefix}_people"),
            Variant("after, personal login", json.loads(granted)["database_url"], login=True),
        ]
        cursor = deep_cursor(before, seeded["mine"])

        found: dict[tuple[str, str], list[str]] = {}
        for variant in variants:
            for what in COMMANDS:
                explain(variant.url, variant, what, cursor)  # warm: the second one is shown
                found[(what, variant.name)] = explain(variant.url, variant, what, cursor)
        found[(RESOLVE, variants[2].name)] = explain(variants[2].url, variants[2], RESOLVE, cursor)
        light = uid(STUDENT, 1)  # a person with a few hundred notifications
        for variant in variants[:2]:
            found[("list, student1", variant.name)] = explain(
                variant.url, variant, "list", cursor, light
            )
        print(f"  plans done at {time.perf_counter() - began:.0f} s", flush=True)
        process, alone = measure_reads(variants, cursor, args.rounds, args.login_rounds)
        capture = measure_capture(dbs, args.events, students, args.capture_rounds)
        login = worker_login(dbs)
        worker = measure_worker(
            [
                ("before, superuser", before),
                ("after, superuser", after),
                ("after, worker-group login", dbs.url(dbs.after, login)),
            ],
            args.events,
            students,
            args.worker_rounds,
        )

    print(
        f"\nrow-level security, before (0003) and after (0004): {args.rows:,} notifications, "
        f"{seeded['mine']:,} of them the instructor's, {seeded['profiles']:,} profiles, "
        f"{seeded['enrollments']:,} enrollments; the run took {time.perf_counter() - began:.0f} s\n"
    )
    shown = [(w, v.name) for w in COMMANDS for v in variants[:2]]
    shown += [(RESOLVE, variants[2].name), ("list, student1", variants[1].name)]
    for what, name in shown:
        print(f"EXPLAIN (ANALYZE, BUFFERS) {what}, {name}:")
        print("\n".join("  " + line for line in found[(what, name)][:16]) + "\n")
    rows = []
    for (what, name), plan in found.items():
        nodes, took = summary(plan)
        used = any(INDEX in line for line in plan)
        rows.append([what, name, took, "yes" if used else "no", nodes])
    table(["statement", "variant", "execution", INDEX, "plan"], rows)

    base = variants[0].name
    print(
        f"ms, median of {args.rounds} rounds (the personal login's processes and its "
        f"'{RESOLVE}': of {args.login_rounds}); ratio = after / before"
    )
    rows = []
    for what in (RESOLVE, *COMMANDS):
        for label, data in (("process", process), ("alone", alone)):
            if (what, base) not in data:
                continue
            b = median(data[(what, base)]) * 1000
            cells: list[Any] = [what, label, round(b, 1)]
            for variant in variants[1:]:
                a = median(data[(what, variant.name)]) * 1000
                cells += [round(a, 1), f"{a / b:.2f}"]
            rows.append(cells)
    table(["step", "timed", "before", "after --user", "ratio", "after login", "ratio"], rows)

    print(
        f"platform inserts, {args.events:,} enrollments, capture triggers SECURITY INVOKER "
        f"(before) and DEFINER (after), median of {args.capture_rounds}"
    )
    rows = []
    for how in CAPTURE:
        before_, after_ = capture[(how, "before")], capture[(how, "after")]
        b, a = median(before_), median(after_)
        paired = median([y / x for x, y in zip(before_, after_, strict=True)])
        extra = (1 / a - 1 / b) * 1e6
        rows.append([how, b, a, f"{a / b:.2f}", f"{paired:.2f}", f"{extra:+.1f}"])
    table(
        ["enrollments", "before rows/s", "after rows/s", "ratio", "paired ratio", "µs/row"],
        rows,
    )

    print(
        f"worker --burst ({args.events:,} enrollment events, start-up included), events/s, "
        f"median of {args.worker_rounds}"
    )
    first = worker["before, superuser"]
    rows = []
    for name, rates in worker.items():
        paired = median([y / x for x, y in zip(first, rates, strict=True)])
        rows.append([name, median(rates), f"{median(rates) / median(first):.2f}", f"{paired:.2f}"])
    table(["worker", "events/s", "ratio", "paired ratio"], rows)
    print("paired ratio: the median of each round's ratio (the two measured side by side)")


if __name__ == "__main__":
    main()
