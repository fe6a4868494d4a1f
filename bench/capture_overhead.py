"""What the capture triggers cost the platform's own writes, and what NOTIFY would add.

pgbench runs a custom script — one plain-SQL INSERT INTO enrollments per transaction, or a
mix — with several clients, in configurations of the same database that alternate round by
round (the order rotates):

    none          the capture triggers dropped (the platform alone)
    ours          our triggers: one outbox row per event, no NOTIFY (what we ship)
    ours+notify   ours plus an AFTER INSERT trigger doing pg_notify('hg', NEW.id::text)
                  per row (the hypothetical variant; removed again afterwards)
    …+listener    (--listener) the same while a connection LISTENs on 'hg' and reads

    python bench/capture_overhead.py [--seconds 10] [--rounds 3] [--clients 8] [--jobs 2]
                                     [--script enroll|mixed] [--listener]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import sqlalchemy as sa
from _common import (
    ENROLL_SQL,
    build_school,
    capture_triggers,
    libpq,
    median,
    migrated,
    pgbench,
    set_notify_trigger,
    table,
    temp_database,
)

COURSES, STUDENTS = 50, 2000
_PICK = "\\set c random(1, {courses})\n\\set s random(1, {students})\n"
_C = "('00000003-0000-4000-8000-' || lpad(:c::text, 12, '0'))::uuid"
_S = "('00000002-0000-4000-8000-' || lpad(:s::text, 12, '0'))::uuid"
MIXED = {  # name: (weight, statement); student_activity has no capture trigger
    "enroll": (5, None),
    "activity": (
        3,
        "INSERT INTO student_activity (id, student_id, course_id, activity_type, "
        f"details) VALUES (gen_random_uuid(), {_S}, {_C}, 'lesson_completed', "
        "'{{\"lesson\": 3}}');",
    ),
    "review": (
        1,
        "INSERT INTO course_reviews (id, course_id, student_id, rating, comment) "
        f"VALUES (gen_random_uuid(), {_C}, {_S}, 5, 'Great');",
    ),
    "question": (
        1,
        "INSERT INTO course_questions (id, course_id, student_id, body) "
        f"VALUES (gen_random_uuid(), {_C}, {_S}, 'When is the next live session?');",
    ),
    "payment": (
        1,
        "INSERT INTO payments (id, user_id, course_id, amount_cents, status) "
        f"VALUES (gen_random_uuid(), {_S}, {_C}, 4900, 'succeeded');",
    ),
}
WRITTEN = (
    "enrollments",
    "student_activity",
    "course_reviews",
    "course_questions",
    "payments",
    "hg_events",
)


def write_scripts(folder: Path, kind: str) -> list[tuple[Path, int]]:
    scripts = []
    for name, (weight, statement) in MIXED.items():
        if kind == "enroll" and name != "enroll":
            continue
        body = ENROLL_SQL if statement is None else _PICK + statement + "\n"
        path = folder / f"{name}.sql"
        path.write_text(body.format(courses=COURSES, students=STUDENTS))
        scripts.append((path, weight))
    return scripts


@contextlib.contextmanager
def listening(url: str, on: bool) -> Iterator[list[int]]:
    """A connection that LISTENs on 'hg' and reads every notification, while inside."""
    received = [0]
    if not on:
        yield received
        return
    stop = threading.Event()
    conn = psycopg.connect(libpq(url), autocommit=True)
    conn.execute("LISTEN hg")

    def read() -> None:
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.2):
                received[0] += 1

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        stop.set()
        thread.join()
        conn.close()


def configure(engine: sa.Engine, config: str, saved: list[tuple[str, str, str]]) -> None:
    with engine.begin() as conn:
        for table_name, name, ddl in saved:
            conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {name} ON {table_name}"))
            if config != "none":
                conn.execute(sa.text(ddl))
        set_notify_trigger(conn, "notify" in config)
        conn.execute(sa.text(f"TRUNCATE {', '.join(WRITTEN)}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--script", choices=["enroll", "mixed"], default="enroll")
    parser.add_argument(
        "--listener",
        action="store_true",
        help="also measure ours+notify while a listener reads the channel",
    )
    args = parser.parse_args()
    configs = ["none", "ours", "ours+notify"] + (["ours+notify+listener"] if args.listener else [])
    tps: dict[str, list[float]] = {c: [] for c in configs}
    with temp_database("postgres") as url, tempfile.TemporaryDirectory() as tmp:
        engine = migrated(url)
        build_school(engine, COURSES, STUDENTS)
        with engine.begin() as conn:
            saved = capture_triggers(conn)
        scripts = write_scripts(Path(tmp), args.script)
        try:
            for rnd in range(args.rounds):
                order = configs[rnd % len(configs) :] + configs[: rnd % len(configs)]
                for config in order:
                    configure(engine, config, saved)
                    with listening(url, "listener" in config) as got:
                        value = pgbench(url, scripts, args.clients, args.jobs, args.seconds)
                    tps[config].append(value)
                    extra = f" ({got[0]:,} notifications read)" if "listener" in config else ""
                    print(f"  round {rnd + 1} {config}: {value:,.0f} tps{extra}", flush=True)
        finally:
            configure(engine, "ours", saved)  # the notify variant is for measurement only
            engine.dispose()

    def paired(c: str, base: str) -> float:  # the median of each round's own ratio
        return median([a / b for a, b in zip(tps[c], tps[base], strict=True)])

    print(
        f"\nplatform write throughput, pgbench script '{args.script}', -c {args.clients} "
        f"-j {args.jobs}, {args.seconds:.0f} s per run, median of {args.rounds} rounds "
        "(ratios: median of the per-round ratios)"
    )
    table(
        ["configuration", "tps (median)", "runs", "vs none", "vs ours"],
        [
            [
                c,
                median(tps[c]),
                " / ".join(f"{v:,.0f}" for v in tps[c]),
                paired(c, "none"),
                paired(c, "ours"),
            ]
            for c in configs
        ],
    )


if __name__ == "__main__":
    main()
