"""`notifications send --all` to N people with a worker already running, until all are visible
(issue 10: 100,000 people, ≤ 1.5 s).

PostgreSQL. N profiles (one admin), then, for each worker — `humanglue worker` on Redis (the
Celery worker) and `humanglue worker` with no broker (the embedded one) — a warm-up send to
the admin alone (the worker is then running and connected), then --runs sends to everyone:
`humanglue -u admin notifications send --all --json` as a whole process, timed from its start
until the announcement's event is gone from the outbox (the worker deletes it in the
transaction that inserts the notifications, so that is when all of them became visible), the
count of its notifications checked afterwards. The notifications are truncated between runs,
so that each run inserts into the same table; with `--existing K` each person has K older
notifications there first (half of them read), and each run's are deleted (and the table
vacuumed, the unread counts folded) instead: a fan-out into a table that is not empty, as in
production. Where the time goes, from the timestamps:

    process     the send command, start to exit (start-up, connect, queue, commit, exit)
    began       start → the worker's transaction began (its `now()`, the notifications'
                created_at): the command's commit and the worker's pick-up; it can come
                before the process has exited
    fan-out     that → visible (the INSERT … SELECT, the ledger, the commit)

Then EXPLAIN (ANALYZE, BUFFERS, WAL) of the fan-out's statement as the worker runs it
(rolled back): what each row costs.

    python bench/send_all.py [--people 100000] [--runs 5] [--workers celery,embedded]
                             [--redis-url redis://127.0.0.1:6379/15] [--existing K] [--quick]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psycopg
import sqlalchemy as sa
from _common import (
    CLI,
    cli_env,
    goal,
    libpq,
    median,
    migrated,
    table,
    temp_database,
    worker_process,
    write_summary,
)

ADMIN = "admin@example.edu"
GOAL_S = 1.5


def seed(url: str, people: int) -> None:
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO profiles (id, email, full_name, role) SELECT gen_random_uuid(), "
            "CASE WHEN g = 1 THEN %s ELSE 'person' || g || '@example.edu' END, "
            "'Person ' || g, CASE WHEN g = 1 THEN 'admin' ELSE 'student' END "
            "FROM generate_series(1, %s) g",
            [ADMIN, people],
        )
        conn.execute("VACUUM ANALYZE")


def seed_existing(url: str, per_person: int) -> None:
    """`per_person` older notifications for each person (of three types, half read)."""
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO notifications (user_id, type, title, message, created_at, read_at) "
            "SELECT p.id, (ARRAY['enrollment', 'review', 'payment'])[1 + g %% 3], 'Older', "
            "'An older notification', now() - g * interval '1 hour', "
            "CASE WHEN g %% 2 = 0 THEN now() END FROM profiles p, generate_series(1, %s) g",
            [per_person],
        )
        conn.execute("VACUUM ANALYZE notifications")


def clear(poll: psycopg.Connection, existing: int) -> None:
    """The runs' notifications gone: all of them, or those of the runs (`--existing`)."""
    if existing:
        poll.execute("DELETE FROM notifications WHERE type = 'system_announcement'")
        poll.execute(  # folded, as maintenance does: one row a (person, type) again
            "WITH gone AS (DELETE FROM hg_unread_counts RETURNING 1) "
            "INSERT INTO hg_unread_counts (user_id, type, n) SELECT user_id, type, count(*) "
            "FROM notifications WHERE read_at IS NULL GROUP BY user_id, type"
        )
        poll.execute("VACUUM ANALYZE hg_unread_counts")
    else:
        poll.execute("TRUNCATE notifications")
    poll.execute("VACUUM ANALYZE notifications")


def send(url: str, poll: psycopg.Connection, title: str, *to: str) -> dict[str, float]:
    """One send as a process, until its event is gone; seconds of each phase."""
    recipients = ["--to", *to] if to else ["--all"]
    argv = [CLI, "-u", ADMIN, "notifications", "send", *recipients]
    argv += ["--title", title, "--message", "Saturday 02:00 UTC: the platform is down", "--json"]
    began_wall, began = time.time(), time.perf_counter()
    out = subprocess.run(argv, env=cli_env(url), capture_output=True, text=True, timeout=120)
    exited = time.perf_counter()
    if out.returncode != 0:
        raise RuntimeError(f"send exited {out.returncode}: {out.stderr}")
    event = int(__import__("json").loads(out.stdout)["event_id"])
    deadline = exited + 60
    while poll.execute("SELECT 1 FROM hg_events WHERE id = %s", [event]).fetchone():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"event {event} still in the outbox after 60 s")
        time.sleep(0.002)
    visible = time.perf_counter()
    count, stamp = poll.execute(
        "SELECT count(*), min(created_at) FROM notifications WHERE title = %s", [title]
    ).fetchone()  # type: ignore[misc]
    started = stamp.timestamp() - began_wall if isinstance(stamp, datetime) else float("nan")
    return {
        "count": count,
        "total": visible - began,
        "process": exited - began,
        "began": started,
        "fan-out": (visible - began) - started,
    }


def redis_up(url: str) -> bool:
    u = sa.make_url(url)
    try:
        with socket.create_connection((u.host or "127.0.0.1", u.port or 6379), timeout=1):
            return True
    except OSError:
        return False


def explain(url: str) -> list[str]:
    """The fan-out's statement, as the worker runs it, rolled back."""
    from humanglue_cli.core.db import create_engine
    from humanglue_cli.core.domain import Audience, Draft
    from humanglue_cli.core.store import notifications

    engine = create_engine(url)
    seen: list[tuple[str, object]] = []

    def capture(_c: object, _cur: object, statement: str, params: object, *_: object) -> None:
        seen.append((statement, params))

    draft = Draft("", "system_announcement", "Explained", "EXPLAIN", {}, None, "normal")
    with engine.connect() as conn:
        sa.event.listen(conn, "before_cursor_execute", capture)
        with conn.begin() as tx:
            now = conn.execute(sa.select(sa.func.now())).scalar_one()
            notifications.fan_out(conn, Audience(everyone=True), draft, now)
            tx.rollback()
        sa.event.remove(conn, "before_cursor_execute", capture)
        statement, params = next((s, p) for s, p in seen if s.lstrip().startswith("INSERT"))
        with conn.begin() as tx:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            rows = raw.cursor().execute("EXPLAIN (ANALYZE, BUFFERS, WAL) " + statement, params)  # type: ignore[arg-type]
            plan = [r[0] for r in rows]
            tx.rollback()
    engine.dispose()
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", default="celery,embedded")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--existing", type=int, default=0, help="older notifications a person")
    parser.add_argument("--quick", action="store_true", help="10,000 people, 2 runs")
    parser.add_argument("--json-summary", help="write the goal row there, for bench/all.py")
    args = parser.parse_args()
    if args.quick:
        args.people, args.runs = 10_000, 2
    workers = args.workers.split(",")
    if "celery" in workers and not redis_up(args.redis_url):
        print(f"Redis not reachable at {args.redis_url}: the Celery worker is skipped")
        workers.remove("celery")
    results: dict[str, list[dict[str, float]]] = {}
    with temp_database("postgres") as url, tempfile.TemporaryDirectory() as tmp:
        migrated(url).dispose()
        seed(url, args.people)
        if args.existing:
            seed_existing(url, args.existing)
        poll = psycopg.connect(libpq(url), autocommit=True)
        for name in workers:
            broker = args.redis_url if name == "celery" else None
            log = Path(tmp) / f"{name}.log"
            broker_env = {"HUMANGLUE_BROKER_URL": broker} if broker else {}
            with worker_process(url, log, **broker_env):
                send(url, poll, f"warm-up {name}", ADMIN)
                results[name] = []
                for run in range(args.runs):
                    clear(poll, args.existing)
                    got = send(url, poll, f"{name} {run}")
                    if got["count"] != args.people:
                        raise RuntimeError(f"{got['count']} notifications of {args.people}")
                    results[name].append(got)
                    print(
                        f"  {name} run {run + 1}: {got['total']:.3f} s "
                        f"(process {got['process']:.3f}, worker began {got['began']:.3f}, "
                        f"fan-out {got['fan-out']:.3f})",
                        flush=True,
                    )
        clear(poll, args.existing)
        poll.close()
        plan = explain(url)
    print(
        f"\nsend --all to {args.people:,} people until all are visible, median of {args.runs} (s)"
        + (f", {args.existing} older notifications a person there" if args.existing else "")
        + "\n"
    )
    rows = []
    for name, runs in results.items():
        total = median([r["total"] for r in runs])
        verdict = f"≤ {GOAL_S} s: {'met' if total <= GOAL_S else 'NOT met'}"
        rows.append(
            [
                f"humanglue worker ({'Celery, Redis' if name == 'celery' else 'embedded'})",
                f"{total:.3f}",
                f"{median([r['process'] for r in runs]):.3f}",
                f"{median([r['began'] for r in runs]):.3f}",
                f"{median([r['fan-out'] for r in runs]):.3f}",
                verdict if args.people == 100_000 else "",
            ]
        )
    table(["worker", "total", "process", "began", "fan-out", "issue 10"], rows)
    totals = {name: median([r["total"] for r in runs]) for name, runs in results.items()}
    write_summary(
        args.json_summary,
        [
            goal(
                f"`notifications send --all` to {args.people:,} people, worker running",
                f"≤ {GOAL_S} s",
                ", ".join(f"{name} {t:.2f} s" for name, t in totals.items()),
                bool(totals) and min(totals.values()) <= GOAL_S,
            )
        ],
        **totals,
    )
    print("the fan-out's statement, EXPLAIN (ANALYZE, BUFFERS, WAL), rolled back:")
    print("\n".join("  " + line for line in plan))


if __name__ == "__main__":
    main()
