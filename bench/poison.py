"""A poison event's cost to the events behind it (issue 6): an insert that always times out.

PostgreSQL, a `statement_timeout` set on the database, and a platform trigger on notifications
that sleeps past it (and counts its runs in a sequence, which no rollback undoes) for the
notifications of one course. Each round queues one enrollment in that course, then N plain-SQL
enrollments in the 49 others, and runs `humanglue worker --burst --json` as a process: the
wall clock until the N are delivered (polled every 20 ms), of the whole burst, and how often
the poison's insert ran. With `--compare PATH` the rounds alternate between this tree's
`humanglue` and the one at PATH (another checkout's, e.g. main's), on the same database.

    python bench/poison.py [--events 300] [--runs 3] [--timeout-ms 2000] [--compare PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import threading
import time
import uuid

import sqlalchemy as sa
from _common import (
    CLI,
    COURSE,
    STUDENT,
    build_school,
    median,
    migrated,
    table,
    temp_database,
    uid,
)


def arm(engine: sa.Engine, database: str, timeout_ms: int) -> None:
    """The statement timeout, and the trigger that outlasts it for course 1's notifications."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"ALTER DATABASE \"{database}\" SET statement_timeout = '{timeout_ms}ms'")
        )
        conn.execute(
            sa.text("UPDATE courses SET title = 'Poison' WHERE id = :c"), {"c": uid(COURSE, 1)}
        )
        conn.execute(sa.text("CREATE SEQUENCE poison_runs"))
        conn.execute(
            sa.text(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.title LIKE '%Poison%' THEN PERFORM nextval('poison_runs'); "
                f"PERFORM pg_sleep({timeout_ms * 3 / 1000}); END IF; RETURN NEW; END $$"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TRIGGER poison BEFORE INSERT ON notifications "
                "FOR EACH ROW EXECUTE FUNCTION poison()"
            )
        )
    engine.dispose()  # new connections take the timeout


def one_round(engine: sa.Engine, url: str, cli: str, events: int) -> tuple[float, float, int]:
    """(seconds until the good events are delivered, seconds of the burst, poison runs)."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM hg_events"))
        runs_before = conn.execute(sa.text("SELECT nextval('poison_runs')")).scalar_one()
        enroll = "INSERT INTO enrollments (id, course_id, student_id) VALUES (:i, :c, :s)"
        conn.execute(
            sa.text(enroll), {"i": str(uuid.uuid4()), "c": uid(COURSE, 1), "s": uid(STUDENT, 1)}
        )
        good = [
            {"i": str(uuid.uuid4()), "c": uid(COURSE, 2 + n % 49), "s": uid(STUDENT, 1 + n)}
            for n in range(events)
        ]
        conn.execute(sa.text(enroll), good)
    ids = [g["i"] for g in good]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUMANGLUE_")}
    env.update(HUMANGLUE_DATABASE_URL=url, NO_COLOR="1")
    delivered: list[float] = []
    started = time.monotonic()
    burst = subprocess.Popen(
        [cli, "worker", "--burst", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )

    def watch() -> None:
        query = sa.text(
            "SELECT count(DISTINCT data->>'enrollment_id') FROM notifications "
            "WHERE data->>'enrollment_id' = ANY(:ids)"
        )
        while burst.poll() is None or not delivered:
            with engine.connect() as conn:
                if conn.execute(query, {"ids": ids}).scalar_one() == len(ids):
                    delivered.append(time.monotonic() - started)
                    return
            if burst.poll() is not None:
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out, _ = burst.communicate()
    took = time.monotonic() - started
    watcher.join()
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT nextval('poison_runs')")).scalar_one() - runs_before - 1
    print(f"  {cli}: {out.decode().strip()} in {took:.2f}s", flush=True)
    return (delivered[0] if delivered else float("nan")), took, int(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout-ms", type=int, default=2000)
    parser.add_argument("--compare", help="another humanglue executable to alternate with")
    args = parser.parse_args()
    clis = {"this tree": CLI} | ({"--compare": args.compare} if args.compare else {})
    with temp_database("postgres") as url:
        engine = migrated(url)
        build_school(engine, students=max(2000, args.events + 1))
        arm(engine, sa.make_url(url).database or "", args.timeout_ms)
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in clis}
        for _ in range(args.runs):
            for name, cli in clis.items():
                results[name].append(one_round(engine, url, cli, args.events))
        with engine.connect() as conn:  # the roles `db upgrade` made for this database
            roles = (
                conn.execute(
                    sa.text("SELECT rolname FROM pg_roles WHERE rolname LIKE :p"),
                    {"p": f"hg\\_{sa.make_url(url).database}\\_%"},
                )
                .scalars()
                .all()
            )
        engine.dispose()
    admin = sa.create_engine(
        sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        for _ in range(2):  # a role another depends on goes on the second pass
            for role in roles:
                with contextlib.suppress(sa.exc.DBAPIError):
                    conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
    admin.dispose()
    print(
        f"\n{args.events} enrollments behind one whose insert always outlasts a "
        f"{args.timeout_ms} ms statement_timeout; medians of {args.runs} runs"
    )
    table(
        ["humanglue", "delivered after (s)", "burst (s)", "poison runs"],
        [
            [
                name,
                f"{median([r[0] for r in rows]):.2f}",
                f"{median([r[1] for r in rows]):.2f}",
                json.dumps(sorted({r[2] for r in rows})),
            ]
            for name, rows in results.items()
        ],
    )


if __name__ == "__main__":
    main()
