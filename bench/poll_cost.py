"""What the workers' wake-up poll costs: the `first_due` probe, and its effect on the platform.

1. Time per probe as the embedded worker makes it (`runner.first_due`: pool checkout with
   pre-ping, BEGIN — a reader's on SQLite —, the query, COMMIT), with the CPU it costs the
   worker and the server, and the query alone (`events.first_due` on an open connection); on
   an empty outbox and on one holding 100k failed events — on PostgreSQL before and after
   ANALYZE and VACUUM (this server runs with autovacuum off) — and on SQLite. Due-ness is the
   database's clock (`db.now`), as in the worker.
2. pgbench tps of plain-SQL enrollments (our triggers on) with and without a poller thread
   probing every 50 ms, and with the workers' watch (core/watch.py) looking every 2 ms,
   alternating round by round; ratios are the median of each round's.

    python bench/poll_cost.py [--probes 1000] [--seconds 6] [--rounds 5] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from _common import (
    ENROLL_SQL,
    build_school,
    median,
    migrated,
    pct,
    pgbench,
    plan_shape,
    table,
    temp_database,
)

from humanglue_cli.core import db, models, runner
from humanglue_cli.core.store import events
from humanglue_cli.core.watch import FAST, Watch

FAILED_PG = (
    "INSERT INTO hg_events (kind, entity_id, payload, status, attempts, last_error, "
    "failed_at) SELECT 'enrollment.created', g::text, '{}', 'failed', 5, 'bench', now() "
    "FROM generate_series(1, :n) g"
)
BACKLOG = (
    "INSERT INTO hg_events (kind, entity_id, payload) "
    "SELECT 'enrollment.created', g::text, '{}' FROM generate_series(1, :n) g"
)
FAILED_SQLITE = (
    "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < :n) "
    "INSERT INTO hg_events (kind, entity_id, payload, status, attempts, last_error, "
    "failed_at) SELECT 'enrollment.created', x, '{}', 'failed', 5, 'bench', "
    "CURRENT_TIMESTAMP FROM g"
)


def timed(call: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def plan(engine: sa.Engine) -> str:
    outbox = models.events.c
    with engine.connect() as conn:  # due by the database's clock, as the probe's
        due = sa.and_(outbox.status == "pending", outbox.available_at <= db.now(conn))
    return plan_shape(engine, sa.select(outbox.id).where(due).order_by(outbox.id).limit(1))


PLANS: list[str] = []


def server_cpu(engine: sa.Engine) -> Callable[[], float]:
    """CPU seconds used so far by the server process behind the engine's pooled connection
    (PostgreSQL on this host; 0 for SQLite, whose work is all in this process)."""
    if engine.dialect.name != "postgresql":
        return lambda: 0.0
    with engine.connect() as conn:
        stat = Path(f"/proc/{conn.exec_driver_sql('SELECT pg_backend_pid()').scalar()}/stat")

    def read() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return read


def probe_rows(engine: sa.Engine, label: str, n: int) -> list[list[object]]:
    server = server_cpu(engine)
    cpu, srv = time.process_time(), server()
    full = timed(lambda: runner.first_due(engine), n)
    cpu, srv = (time.process_time() - cpu) / n * 1e6, (server() - srv) / n * 1e6
    with engine.connect() as conn:
        alone = timed(lambda: events.first_due(conn), n)
        conn.rollback()
    backend = engine.dialect.name
    PLANS.append(f"  {backend}, {label}: {plan(engine)}")
    return [
        [
            backend,
            label,
            pct(full, 50),
            pct(full, 95),
            pct(full, 99),
            round(cpu),
            round(srv),
            pct(alone, 50),
            pct(alone, 95),
            pct(alone, 99),
        ]
    ]


def probe_costs(n: int) -> list[list[object]]:
    rows: list[list[object]] = []
    for backend in ("postgres", "sqlite"):
        with temp_database(backend) as url:
            engine = migrated(url)
            rows += probe_rows(engine, "empty outbox", n)
            with engine.begin() as conn:
                conn.execute(
                    sa.text(FAILED_PG if backend == "postgres" else FAILED_SQLITE), {"n": 100_000}
                )
            rows += probe_rows(engine, "100k failed", n)
            if backend == "postgres":
                auto = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                auto.exec_driver_sql("ANALYZE hg_events")
                rows += probe_rows(engine, "100k failed, analyzed", n)
                auto.exec_driver_sql("VACUUM hg_events")
                auto.close()
                rows += probe_rows(engine, "100k failed, vacuumed", n)
            engine.dispose()
    return rows


def poller_effect(args: argparse.Namespace) -> list[list[object]]:
    watching = f"watch every {FAST * 1000:g} ms"
    tps: dict[str, list[float]] = {"no poller": [], "poller every 50 ms": [], watching: []}
    probes: list[float] = []
    looks: list[float] = []
    with temp_database("postgres") as url, tempfile.TemporaryDirectory() as tmp:
        engine = migrated(url)
        build_school(engine)
        script = Path(tmp) / "enroll.sql"
        script.write_text(ENROLL_SQL.format(courses=50, students=2000))
        # Statistics as autovacuum leaves them after any earlier backlog (they outlive the
        # TRUNCATEs below): the probe then stops at the first due row however long the
        # backlog grows here, as it would for a worker that keeps the outbox drained.
        with engine.begin() as conn:
            conn.execute(sa.text(BACKLOG), {"n": 30_000})
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                sa.text("ANALYZE hg_events")
            )
        for rnd in range(args.rounds):
            order = list(tps)[rnd % 3 :] + list(tps)[: rnd % 3]
            for config in order:
                with engine.begin() as conn:
                    conn.execute(sa.text("TRUNCATE enrollments, hg_events"))
                stop = threading.Event()

                def poll(stop: threading.Event = stop) -> None:
                    while not stop.is_set():
                        probes.extend(timed(lambda: runner.first_due(engine), 1))
                        stop.wait(0.05)

                def watch(stop: threading.Event = stop) -> None:
                    watcher = Watch(engine)
                    while not stop.is_set():
                        looks.extend(timed(watcher.look, 1))
                        stop.wait(FAST)
                    watcher.close()

                thread = threading.Thread(target=watch if config == watching else poll, daemon=True)
                if config != "no poller":
                    thread.start()
                value = pgbench(url, [(script, 1)], args.clients, args.jobs, args.seconds)
                stop.set()
                if thread.is_alive():
                    thread.join()
                tps[config].append(value)
                print(f"  round {rnd + 1} {config}: {value:,.0f} tps", flush=True)
        engine.dispose()

    def ratio(config: str) -> float:
        return median([a / b for a, b in zip(tps[config], tps["no poller"], strict=True)])

    latency = {"no poller": [0.0], "poller every 50 ms": probes, watching: looks}
    return [
        [
            c,
            median(v),
            " / ".join(f"{x:,.0f}" for x in v),
            ratio(c),
            f"{pct(latency[c], 50):.2f} / {pct(latency[c], 95):.2f}" if c != "no poller" else "-",
        ]
        for c, v in tps.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    costs = probe_costs(args.probes)
    effect = poller_effect(args)
    print(f"\nfirst_due probe, ms per call ({args.probes} calls each)")
    table(
        [
            "backend",
            "outbox",
            "first_due p50",
            "p95",
            "p99",
            "worker CPU µs",
            "server CPU µs",
            "query alone p50",
            "p95",
            "p99",
        ],
        costs,
    )
    print("plans of the probe query:\n" + "\n".join(PLANS) + "\n")
    print(
        f"platform tps (pgbench, one enrollment per transaction, our triggers, -c "
        f"{args.clients} -j {args.jobs}, {args.seconds:.0f} s), median of {args.rounds}; the "
        "outbox fills (not drained); its statistics are analyzed"
    )
    table(
        [
            "configuration",
            "tps (median)",
            "runs",
            "vs no poller (paired median)",
            "probe latency ms p50 / p95",
        ],
        effect,
    )


if __name__ == "__main__":
    main()
