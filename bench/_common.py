"""Shared by the benchmarks: a throwaway database, a school, platform writes, pgbench, stats.

Every benchmark works in a database of its own (PostgreSQL `hgbench_<random>`, or a SQLite
file in a temporary directory) and drops it at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import migrate
from humanglue_cli.core.db import create_engine, dispose_engines

ADMIN_URL = os.environ.get(
    "HGBENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# The CLI of this interpreter's environment first: never another checkout's on the PATH.
_OWN_CLI = Path(sys.executable).parent / "humanglue"
CLI = str(_OWN_CLI) if _OWN_CLI.exists() else shutil.which("humanglue") or str(_OWN_CLI)
INSTRUCTOR, STUDENT, COURSE = 1, 2, 3


def uid(kind: int, n: int) -> str:
    """Deterministic UUIDs, so that pgbench scripts can name rows by number."""
    return f"{kind:08x}-0000-4000-8000-{n:012d}"


@contextlib.contextmanager
def temp_database(backend: str) -> Iterator[str]:
    """The URL of a new, empty database, dropped on exit."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="hgbench_") as tmp:
            yield f"sqlite:///{tmp}/hg.db"
            dispose_engines()
        return
    name = f"hgbench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def libpq(url: str) -> str:
    """A libpq connection string for psycopg.connect() from a SQLAlchemy URL."""
    u = sa.make_url(url)
    return (
        f"host={u.host or '127.0.0.1'} port={u.port or 5432} dbname={u.database} "
        f"user={u.username or 'postgres'}"
    )


def migrated(url: str) -> sa.Engine:
    """An engine on `url` with the schema upgraded (a SQLite file is created)."""
    engine = create_engine(url, create=True)
    migrate.upgrade(engine)
    return engine


def build_school(engine: sa.Engine, courses: int = 50, students: int = 2000) -> None:
    """`courses` courses, each with its owner and one or two co-instructors; `students`."""
    teachers = courses + 10
    people = [
        {
            "i": uid(INSTRUCTOR, n),
            "e": f"teacher{n}@example.edu",
            "n": f"Teacher {n}",
            "r": "instructor",
        }
        for n in range(1, teachers + 1)
    ]
    people += [
        {"i": uid(STUDENT, n), "e": f"student{n}@example.edu", "n": f"Student {n}", "r": "student"}
        for n in range(1, students + 1)
    ]
    links = []
    for n in range(1, courses + 1):
        links.append({"c": uid(COURSE, n), "u": uid(INSTRUCTOR, courses + 1 + n % 10)})
        if n % 2 == 0:
            links.append({"c": uid(COURSE, n), "u": uid(INSTRUCTOR, courses + 1 + (n + 5) % 10)})
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO profiles (id, email, full_name, role) VALUES (:i, :e, :n, :r)"),
            people,
        )
        conn.execute(
            sa.text("INSERT INTO courses (id, instructor_id, title) VALUES (:c, :o, :t)"),
            [
                {"c": uid(COURSE, n), "o": uid(INSTRUCTOR, n), "t": f"Course {n}"}
                for n in range(1, courses + 1)
            ],
        )
        conn.execute(
            sa.text("INSERT INTO course_instructors (course_id, user_id) VALUES (:c, :u)"), links
        )


_WRITES = {  # plain SQL, as the platform writes; each row makes one event through a trigger
    "enrollment": "INSERT INTO enrollments (id, course_id, student_id) VALUES (:i, :c, :s)",
    "review": "INSERT INTO course_reviews (id, course_id, student_id, rating, comment) "
    "VALUES (:i, :c, :s, 4, 'Lovely course, thank you')",
    "payment": "INSERT INTO payments (id, user_id, course_id, amount_cents, status) "
    "VALUES (:i, :s, :c, 4900, 'succeeded')",
    "question": "INSERT INTO course_questions (id, course_id, student_id, body) "
    "VALUES (:i, :c, :s, 'How long is the second module?')",
}
MIX = {"enrollment": 0.80, "review": 0.07, "payment": 0.07, "question": 0.06}


def platform_writes(
    engine: sa.Engine,
    events: int,
    courses: int = 50,
    students: int = 2000,
    chunk: int = 5000,
    seed: int = 1,
) -> None:
    """`events` mixed platform rows (MIX), executemany in transactions of `chunk` rows."""
    rng = random.Random(seed)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=events)
    for start in range(0, events, chunk):
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in _WRITES}
        for kind in kinds[start : start + chunk]:
            rows[kind].append(
                {
                    "i": str(uuid.uuid4()),
                    "c": uid(COURSE, rng.randint(1, courses)),
                    "s": uid(STUDENT, rng.randint(1, students)),
                }
            )
        with engine.begin() as conn:
            for kind, params in rows.items():
                if params:
                    conn.execute(sa.text(_WRITES[kind]), params)


# --- triggers (PostgreSQL) ---------------------------------------------------------------------

CAPTURED = (
    "enrollments",
    "workshop_registrations",
    "course_reviews",
    "course_questions",
    "payments",
    "courses",
)
NOTIFY_FN = (
    "CREATE OR REPLACE FUNCTION hgbench_notify_fn() RETURNS trigger LANGUAGE plpgsql "
    "AS $$ BEGIN PERFORM pg_notify('hg', NEW.id::text); RETURN NULL; END $$"
)


def capture_triggers(conn: sa.Connection) -> list[tuple[str, str, str]]:
    """(table, trigger, CREATE TRIGGER statement) of every capture trigger (hg_…)."""
    return [
        tuple(r)
        for r in conn.execute(
            sa.text(
                "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal "
                "AND t.tgname LIKE 'hg\\_%' ORDER BY 1, 2"
            )
        )
    ]


def set_notify_trigger(
    conn: sa.Connection, on: bool, tables: Sequence[str] = CAPTURED[:-1]
) -> None:
    """The hypothetical variant: an extra AFTER INSERT trigger that NOTIFYs per platform row."""
    if on:
        conn.execute(sa.text(NOTIFY_FN))
    for table in tables:
        conn.execute(sa.text(f"DROP TRIGGER IF EXISTS hgbench_notify ON {table}"))
        if on:
            conn.execute(
                sa.text(
                    f"CREATE TRIGGER hgbench_notify AFTER INSERT ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION hgbench_notify_fn()"
                )
            )


# --- pgbench -------------------------------------------------------------------------------------

ENROLL_SQL = (  # one enrollment per transaction, by course and student number
    "\\set c random(1, {courses})\n\\set s random(1, {students})\n"
    "INSERT INTO enrollments (id, course_id, student_id) VALUES (gen_random_uuid(), "
    "('00000003-0000-4000-8000-' || lpad(:c::text, 12, '0'))::uuid, "
    "('00000002-0000-4000-8000-' || lpad(:s::text, 12, '0'))::uuid);\n"
)


def pgbench(
    url: str, scripts: Sequence[tuple[Path, int]], clients: int, jobs: int, seconds: float
) -> float:
    """Run pgbench with weighted custom scripts; return its tps."""
    u = sa.make_url(url)
    argv = [
        "pgbench",
        "-n",
        "-h",
        u.host or "127.0.0.1",
        "-p",
        str(u.port or 5432),
        "-U",
        u.username or "postgres",
        "-c",
        str(clients),
        "-j",
        str(jobs),
        "-T",
        str(max(1, round(seconds))),
    ]
    for path, weight in scripts:
        argv += ["-f", f"{path}@{weight}"]
    out = subprocess.run([*argv, u.database or ""], capture_output=True, text=True, check=True)
    match = re.search(r"tps = ([\d.]+) \(without initial", out.stdout)
    if not match:
        raise RuntimeError(f"no tps in pgbench output:\n{out.stdout}\n{out.stderr}")
    return float(match.group(1))


def plan_shape(engine: sa.Engine, query: sa.Select[Any]) -> str:
    """A query's plan in one line: node types (PostgreSQL) or EXPLAIN QUERY PLAN (SQLite)."""
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return "; ".join(r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        node = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql).scalar()
    node = (json.loads(node) if isinstance(node, str) else node)[0]["Plan"]
    names = []
    while node:
        names.append(node["Node Type"] + (f" {node['Index Name']}" if "Index Name" in node else ""))
        node = (node.get("Plans") or [None])[0]
    return " > ".join(names)


# --- figures -------------------------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a plain-text table: text left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    left = [all(isinstance(r[i], str) for r in rows) for i in range(len(headers))]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.ljust(w) if left[i] else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print(flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


# --- machine-readable summaries (bench/all.py) ---------------------------------------------------


def goal(what: str, target: str, measured: str, met: bool) -> dict[str, Any]:
    """One row of issue 10's goals table, as a script measured it."""
    return {"what": what, "goal": target, "measured": measured, "met": met}


def write_summary(path: str | None, goals: Sequence[dict[str, Any]], **figures: Any) -> None:
    """`--json-summary PATH`: {"goals": [goal(…), …], "figures": {…}} for bench/all.py."""
    if path:
        Path(path).write_text(json.dumps({"goals": list(goals), "figures": figures}, indent=2))


# --- CLI processes ---------------------------------------------------------------------------


def cli_env(url: str, **extra: str) -> dict[str, str]:
    """The environment of a `humanglue` process on `url`: none of the caller's HUMANGLUE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUMANGLUE_")}
    env.update(HUMANGLUE_DATABASE_URL=url, NO_COLOR="1", **extra)
    return env


@contextlib.contextmanager
def worker_process(url: str, log: Path, **env: str) -> Iterator[None]:
    """`humanglue worker` on `url` (its output in `log`) for the duration of the block."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [CLI, "worker"],
            env=cli_env(url, **env),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
