"""Throughput of `worker --burst`: events/s and notifications/s through the pipeline.

The outbox is filled with N events by plain-SQL platform writes (80% enrollments, 7% reviews,
7% payments, 6% questions over 50 courses with co-instructors: ~2.5 recipients per event),
then drained (a) in process by `pipeline.drain(engine, batch_size)` and (b) by the whole
`humanglue worker --burst` process, wall clock including its start-up. Modes alternate
round by round; figures are medians over the rounds. On PostgreSQL it then times one claim
of 200 against backlogs of 1k/20k/100k due events, with the outbox never analyzed (a fresh
burst; this server runs with autovacuum off) and analyzed: `events.claim`'s statements — pick
the due rows (FOR UPDATE SKIP LOCKED), count an attempt and lease them — rolled back instead of
committed, so that every repeat sees the same backlog (the claim's commit is not timed).

    python bench/burst_throughput.py [--events 20000] [--runs 3] [--backend postgres|sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import sqlalchemy as sa
from _common import (
    CLI,
    build_school,
    goal,
    median,
    migrated,
    plan_shape,
    platform_writes,
    table,
    temp_database,
    write_summary,
)

from humanglue_cli.core import db, models, pipeline
from humanglue_cli.core.store import events

PLATFORM = ("enrollments", "course_reviews", "payments", "course_questions")
OURS = ("notifications", "hg_ledger", "hg_events")


def reset(engine: sa.Engine) -> None:
    """Empty the platform's rows and ours, so that every run starts from the same state."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text(f"TRUNCATE {', '.join(PLATFORM + OURS)}"))
        else:
            for name in PLATFORM + OURS:
                conn.execute(sa.text(f"DELETE FROM {name}"))


def count(engine: sa.Engine, what: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {what}")).scalar_one())


def burst_cli(url: str, batch: int) -> tuple[float, int]:
    env = dict(os.environ, HUMANGLUE_DATABASE_URL=url, NO_COLOR="1")
    start = time.perf_counter()
    out = subprocess.run(
        [CLI, "worker", "--burst", "--json", "--batch-size", str(batch)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"worker --burst exited {out.returncode}: {out.stderr[-2000:]}")
    return elapsed, int(json.loads(out.stdout)["processed"])


BACKLOG = (
    "INSERT INTO hg_events (kind, entity_id, payload) "
    "SELECT 'enrollment.created', g::text, '{}' FROM generate_series(1, :n) g"
)


def claim_costs(engine: sa.Engine) -> list[list[object]]:
    """One claim of 200 against growing backlogs, stats stale then analyzed (rolled back)."""
    outbox = models.events.c
    rows: list[list[object]] = []
    for analyzed in (False, True):  # stale first: ANALYZE's statistics outlive TRUNCATE
        for backlog in (1_000, 20_000, 100_000):
            reset(engine)
            with engine.begin() as conn:
                conn.execute(sa.text(BACKLOG), {"n": backlog})
            if analyzed:
                with engine.connect() as conn:
                    conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                        sa.text("ANALYZE hg_events")
                    )
            times = []
            for _ in range(5):
                with engine.connect() as conn:
                    start = time.perf_counter()
                    events.claim(conn, 200)
                    times.append((time.perf_counter() - start) * 1000)
                    conn.rollback()
            with engine.connect() as conn:  # due by the database's clock, as the claim's
                due = sa.and_(outbox.status == "pending", outbox.available_at <= db.now(conn))
            query = (
                sa.select(outbox.id)
                .where(due)
                .order_by(outbox.id)
                .limit(200)
                .with_for_update(skip_locked=True)
            )
            rows.append(
                [
                    backlog,
                    "analyzed" if analyzed else "never analyzed",
                    median(times),
                    plan_shape(engine, query),
                ]
            )
    return rows


def bench_backend(
    backend: str, n_events: int, runs: int
) -> tuple[list[list[object]], list[list[object]]]:
    modes = [("drain", 50), ("drain", 200), ("drain", 1000), ("worker --burst", 200)]
    seconds: dict[tuple[str, int], list[float]] = {m: [] for m in modes}
    notified: dict[tuple[str, int], int] = {}
    fills: list[float] = []
    with temp_database(backend) as url:
        engine = migrated(url)
        build_school(engine)
        for rnd in range(runs):
            for mode in modes:
                reset(engine)
                start = time.perf_counter()
                platform_writes(engine, n_events, seed=rnd)
                fills.append(n_events / (time.perf_counter() - start))
                if mode[0] == "drain":
                    start = time.perf_counter()
                    result = pipeline.drain(engine, mode[1])
                    elapsed, processed = time.perf_counter() - start, result.processed
                else:
                    elapsed, processed = burst_cli(url, mode[1])
                if processed != n_events or count(engine, "hg_events"):
                    raise RuntimeError(f"{mode}: processed {processed} of {n_events} events")
                notified[mode] = count(engine, "notifications")
                seconds[mode].append(elapsed)
                print(
                    f"  {backend} round {rnd + 1} {mode[0]} batch {mode[1]}: {elapsed:.2f} s",
                    flush=True,
                )
        claims = claim_costs(engine) if backend == "postgres" else []
        reset(engine)
        startup = []
        for _ in range(runs):  # the process's own cost: --burst on an empty outbox
            startup.append(burst_cli(url, 200)[0])
        engine.dispose()
    rows: list[list[object]] = []
    for mode in modes:
        s = median(seconds[mode])
        rows.append(
            [
                backend,
                mode[0],
                mode[1],
                n_events,
                notified[mode],
                s,
                n_events / s,
                notified[mode] / s,
            ]
        )
    rows.append([backend, "worker --burst, empty outbox", 200, 0, 0, median(startup), "-", "-"])
    rows.append(
        [
            backend,
            "platform fill (with triggers)",
            "-",
            n_events,
            "-",
            n_events / median(fills),
            f"{median(fills):,.0f} rows/s",
            "-",
        ]
    )
    return rows, claims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--json-summary", metavar="PATH", help="write the headline figures here")
    args = parser.parse_args()
    rows, claims = bench_backend(args.backend, args.events, args.runs)
    burst = next(r for r in rows if r[1] == "worker --burst")
    per_event = burst[4] / burst[3]
    write_summary(
        args.json_summary,
        [
            goal(
                f"`worker --burst`, {args.events:,} events ({per_event:.1f} notifications each, "
                f"{args.backend}, start-up included)",
                "≥ 10,000 events/s",
                f"{burst[6]:,.0f} events/s",
                burst[6] >= 10_000,
            )
        ],
        rows=[[str(c) for c in r] for r in rows],
    )
    print(f"\nburst throughput, median of {args.runs} runs, {args.events:,} events per run")
    table(
        [
            "backend",
            "mode",
            "batch",
            "events",
            "notifications",
            "seconds",
            "events/s",
            "notifications/s",
        ],
        rows,
    )
    if claims:
        print("one claim of 200 (events.claim, rolled back), ms, median of 5")
        table(["due backlog", "outbox statistics", "ms", "plan"], claims)


if __name__ == "__main__":
    main()
