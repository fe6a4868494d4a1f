"""Cleanup throughput, and what it costs the inserts that go on meanwhile (issue 9, goal issue 10).

Each round fills `notifications` with N rows past the retention (40 days old) and 10,000 that
are not, over 2,000 students, then runs `maintenance.cleanup` (the paced batches of
core/maintenance.py, as the scheduled job and `maintenance cleanup` run it) and reports its
rows/s. Meanwhile a writer thread inserts one notification per transaction, as the worker
does, at about RATE a second, and its commit latencies are recorded: before the cleanup (the
baseline, same round, same table size) and during it. Figures are medians over the rounds.
Goal (issue 10): at least 100,000 rows/s, and insert p99 at most 50 ms during the cleanup.

    python bench/cleanup.py [--rows 1000000] [--runs 3] [--backend postgres|sqlite]
"""

from __future__ import annotations

import argparse
import threading
import time

import sqlalchemy as sa
from _common import (
    STUDENT,
    build_school,
    goal,
    median,
    migrated,
    pct,
    table,
    temp_database,
    uid,
    write_summary,
)

from humanglue_cli.core import maintenance
from humanglue_cli.core.db import dispose_engines
from humanglue_cli.core.settings import load_settings

RATE = 200  # inserts a second by the writer
BASELINE = 3.0  # seconds of inserts before the cleanup starts

FILL_PG = (
    "INSERT INTO notifications (user_id, type, title, message, created_at) "
    "SELECT ('00000002-0000-4000-8000-' || lpad((1 + g % 2000)::text, 12, '0'))::uuid, "
    "'system_announcement', 'old', 'm', now() - interval '40 days' - g * interval '1 second' "
    "FROM generate_series(1, :n) g"
)
FILL_SQLITE = (
    "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < :n) "
    "INSERT INTO notifications (user_id, type, title, message, created_at) "
    "SELECT '00000002-0000-4000-8000-' || printf('%012d', 1 + g % 2000), "
    "'system_announcement', 'old', 'm', strftime('%Y-%m-%d %H:%M:%f', 'now', '-40 days') FROM s"
)
INSERT = (
    "INSERT INTO notifications (user_id, type, title, message) "
    "VALUES (:u, 'system_announcement', 'new', 'm')"
)


def fill(engine: sa.Engine, expired: int) -> None:
    fill_sql = FILL_PG if engine.dialect.name == "postgresql" else FILL_SQLITE
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM notifications"))
        conn.execute(sa.text(fill_sql), {"n": expired})
        recent = fill_sql.replace("40 days", "1 day").replace("'old'", "'recent'")
        conn.execute(sa.text(recent), {"n": 10_000})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE notifications"))


class Writer(threading.Thread):
    """One notification per transaction at RATE a second; latencies by phase."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        self.phase = "baseline"
        self.latencies: dict[str, list[float]] = {"baseline": [], "during": []}
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            started = time.perf_counter()
            with self.engine.begin() as conn:
                conn.execute(sa.text(INSERT), {"u": uid(STUDENT, 1 + n % 2000)})
            took = time.perf_counter() - started
            if self.phase in self.latencies:
                self.latencies[self.phase].append(took)
            n += 1
            self.stop.wait(max(0.0, 1 / RATE - took))
        self.engine.dispose()


def one_round(url: str, engine: sa.Engine, rows: int) -> dict[str, float]:
    fill(engine, rows)
    settings = load_settings(database_url=url)
    writer = Writer(url)
    writer.start()
    time.sleep(BASELINE)
    writer.phase = "during"
    started = time.perf_counter()
    result = maintenance.cleanup(engine, settings, dry_run=False)
    took = time.perf_counter() - started
    writer.phase = "after"
    writer.stop.set()
    writer.join()
    deleted = result["deleted"]["notifications"]
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM notifications WHERE title = 'old'"))
        assert left.scalar_one() == 0 and deleted == rows, (deleted, rows)
    base, during = writer.latencies["baseline"], writer.latencies["during"]
    return {
        "rows_s": deleted / took,
        "seconds": took,
        "base_p50": pct(base, 50) * 1000,
        "base_p99": pct(base, 99) * 1000,
        "p50": pct(during, 50) * 1000,
        "p99": pct(during, 99) * 1000,
        "max": max(during) * 1000,
        "inserts": len(during),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--json-summary", metavar="PATH", help="write the headline figures here")
    args = parser.parse_args()
    with temp_database(args.backend) as url:
        engine = migrated(url)
        build_school(engine, courses=10, students=2000)
        rounds = [one_round(url, engine, args.rows) for _ in range(args.runs)]
        engine.dispose()
        dispose_engines()
    keys = list(rounds[0])
    print(f"{args.backend}: cleanup of {args.rows:,} expired notifications, {args.runs} rounds")
    table(
        ["round", *keys],
        [[str(n + 1), *(r[k] for k in keys)] for n, r in enumerate(rounds)]
        + [["median", *(median([r[k] for r in rounds]) for k in keys)]],
    )
    rows_s = median([r["rows_s"] for r in rounds])
    p99 = median([r["p99"] for r in rounds])
    print(
        f"median: {rows_s:,.0f} rows/s (goal >= 100,000), insert p99 during {p99:.1f} ms "
        f"(goal <= 50), baseline p99 {median([r['base_p99'] for r in rounds]):.1f} ms"
    )
    what = f"`maintenance cleanup` of {args.rows:,} expired rows ({args.backend})"
    write_summary(
        args.json_summary,
        [
            goal(what, "≥ 100,000 rows/s", f"{rows_s:,.0f} rows/s", rows_s >= 100_000),
            goal("the worker's insert p99 during it", "≤ 50 ms", f"{p99:.1f} ms", p99 <= 50),
        ],
        rounds=rounds,
        rows=args.rows,
    )


if __name__ == "__main__":
    main()
