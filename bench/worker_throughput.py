"""Events → notifications through the worker, with the live machinery on (issue 10's first goal).

A throwaway PostgreSQL database (`db upgrade`, so the roles, row-level security, the capture
triggers and the NOTIFY of every batch are all there), the school of bench/_common.py, and
three `humanglue notifications tail --json -n 0` processes following the busiest instructors
from pipes. The outbox is filled with N mixed plain-SQL platform rows (~2.5 recipients each),
then drained by the whole worker process:

- `humanglue worker --burst -c 1` and `-c 2` (one thread, or two draining side by side);
- `humanglue worker` as it runs for real: Celery on Redis (2 threads, its own Redis db, flushed
  before and after), timed from its start until the outbox is empty.

Each mode runs `--runs` times, alternating; events/s is N over the wall time, start-up
included; the median is printed. The CPU of the worker process(es), of the database's server
processes, of the tails and of the rest of the machine is measured over each run, in % of one
core and in µs per event: on this two-core machine PostgreSQL and the worker share the cores,
so their CPU per event says where the ceiling is. Every tail must print every notification of
its user: the run fails otherwise.

    python bench/worker_throughput.py [--events 100000] [--runs 3] [--modes burst1,burst2,celery]
        [--redis-url redis://127.0.0.1:6379/13] [--json-summary PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
import sqlalchemy as sa
from _common import (
    CLI,
    build_school,
    cli_env,
    goal,
    libpq,
    median,
    platform_writes,
    table,
    uid,
    write_summary,
)
from live_latency import CpuMeter, Tail, fresh_database, stop_process

from humanglue_cli.core.db import dispose_engines

INSTRUCTOR = 1
TAILED = (51, 52, 53)  # co-instructors of 5 courses each: the busiest tails
MODES = {
    "burst1": "worker --burst -c 1",
    "burst2": "worker --burst -c 2",
    "celery": "Celery worker",
}


def scalar(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def pending(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        query = "SELECT EXISTS (SELECT 1 FROM hg_events WHERE status = 'pending')"
        return bool(conn.execute(sa.text(query)).scalar_one())


def start_tails(url: str, count: int) -> list[Tail]:
    tails = []
    for n in TAILED[:count]:
        tails.append(Tail.start(url, f"teacher{n}@example.edu"))
    deadline = time.monotonic() + 30
    for tail in tails:
        if not tail.ready.wait(max(0.1, deadline - time.monotonic())):
            raise RuntimeError(f"a tail did not start: {tail.errors[-3:]}")
    return tails


class ServerCpu:
    """CPU of the database's server processes over a run, sampled every 50 ms: a --burst's
    connections come and go within the run, so a look at its start and end would miss them."""

    def __init__(self, url: str) -> None:
        self.url, self.seen, self.first = url, dict[int, float](), dict[int, float]()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(libpq(self.url), autocommit=True) as conn:
            me = conn.info.backend_pid
            started = False  # backends there at the start count from then, later ones whole
            while True:
                rows = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                ).fetchall()
                for (pid,) in rows:
                    if pid != me and (used := CpuMeter._of(pid)):
                        self.first.setdefault(pid, 0.0 if started else used)
                        self.seen[pid] = used
                started = True
                if self.stop.wait(0.05):
                    return

    def __enter__(self) -> ServerCpu:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()
        self.used = sum(self.seen[p] - self.first[p] for p in self.seen)


def run_mode(
    mode: str, url: str, engine: sa.Engine, tails: list[Tail], redis_url: str, log: Path
) -> dict[str, Any]:
    events = scalar(engine, "SELECT count(*) FROM hg_events")
    expected = [
        scalar(engine, f"SELECT count(*) FROM notifications WHERE user_id = '{uid(INSTRUCTOR, n)}'")
        for n in TAILED
    ]
    lines_before = [len(t.lines) for t in tails]
    procs: dict[str, list[int]] = {"tails": [t.proc.pid for t in tails], "worker": []}
    with CpuMeter(url, procs) as cpu, ServerCpu(url) as server:
        start = time.perf_counter()
        if mode.startswith("burst"):
            threads = mode.removeprefix("burst")
            proc = subprocess.Popen(
                [CLI, "worker", "--burst", "--json", "-c", threads],
                env=cli_env(url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs["worker"].append(proc.pid)
            out, err = proc.communicate(timeout=900)
            if proc.returncode:
                raise RuntimeError(f"worker --burst exited {proc.returncode}: {err[-2000:]}")
            processed = int(json.loads(out)["processed"])
        else:
            with log.open("w") as out_log:
                proc = subprocess.Popen(
                    [CLI, "worker"],
                    env=cli_env(url, HUMANGLUE_BROKER_URL=redis_url),
                    stdin=subprocess.DEVNULL,
                    stdout=out_log,
                    stderr=out_log,
                    start_new_session=True,
                )
            procs["worker"].append(proc.pid)
            # Until the outbox is empty: a probe of the due index every 20 ms (a count(*) here
            # scanned the whole outbox each time: a busy core of the server's, not the worker's).
            while pending(engine) and proc.poll() is None:
                time.sleep(0.02)
            processed = events
        elapsed = time.perf_counter() - start  # (a --burst's CPU: from its rusage, in main)
    if mode == "celery":
        stop_process(proc)
        if scalar(engine, "SELECT count(*) FROM hg_events"):
            raise RuntimeError(f"the Celery worker stopped early: see {log}")
    # every tail must print every one of its user's notifications
    deadline = time.monotonic() + 60
    for tail, before, n in zip(tails, lines_before, TAILED[: len(tails)], strict=True):
        want = expected[TAILED.index(n)]
        got_total = scalar(
            engine, f"SELECT count(*) FROM notifications WHERE user_id = '{uid(INSTRUCTOR, n)}'"
        )
        while len(tail.lines) - before < got_total - want and time.monotonic() < deadline:
            time.sleep(0.05)
        if len(tail.lines) - before != got_total - want:
            raise RuntimeError(
                f"tail of teacher{n} printed {len(tail.lines) - before} of {got_total - want}"
            )
    if processed != events:
        raise RuntimeError(f"{mode}: processed {processed} of {events}")
    cpu.used["postgres"] = server.used / elapsed * 100
    return {"seconds": elapsed, "cpu": cpu.used, "machine": cpu.machine}


def children_cpu() -> float:
    """CPU seconds of this process's children that have ended (a --burst run's, once done)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(mode: str, rnd: int, args: argparse.Namespace, log: Path) -> tuple[dict[str, Any], int]:
    """One sample of `mode` in a new database: the school, the tails, the platform's rows, the
    worker draining them; and how many notifications it made."""
    with fresh_database("postgres") as url:
        subprocess.run([CLI, "db", "upgrade"], env=cli_env(url), check=True, capture_output=True)
        engine = sa.create_engine(url)
        build_school(engine)
        tails = start_tails(url, args.tails)
        try:
            platform_writes(engine, args.events, seed=rnd)
            before = children_cpu()
            sample = run_mode(mode, url, engine, tails, args.redis_url, log)
            if mode.startswith("burst"):  # its CPU, from the children's rusage
                used = children_cpu() - before
                sample["cpu"]["worker"] = used / sample["seconds"] * 100
            return sample, scalar(engine, "SELECT count(*) FROM notifications")
        finally:
            for tail in tails:
                stop_process(tail.proc)
            engine.dispose()
            dispose_engines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="burst1,burst2,celery")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--tails", type=int, choices=range(len(TAILED) + 1), default=len(TAILED))
    parser.add_argument("--json-summary", help="write the goal row there, for bench/all.py")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(unknown)}; choose from {', '.join(MODES)}")
    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    notifications: dict[str, int] = {}
    if "celery" in modes:
        redis.Redis.from_url(args.redis_url).flushdb()
    # Each sample in a database of its own: one drained before in the same database (TRUNCATEd,
    # but with this server's autovacuum off) made the next mode 10-25% slower, whichever it was.
    log = Path(f"/tmp/hgbench_worker_{time.time_ns()}.log")
    try:
        for rnd in range(args.runs):
            for mode in modes:
                sample, made = measure(mode, rnd, args, log)
                samples[mode].append(sample)
                notifications[mode] = made
                rate = args.events / sample["seconds"]
                print(
                    f"  round {rnd + 1} {MODES[mode]}: {sample['seconds']:.2f} s, "
                    f"{rate:,.0f} events/s",
                    flush=True,
                )
    finally:
        if "celery" in modes:
            redis.Redis.from_url(args.redis_url).flushdb()
    rows, summary = [], {}
    for mode in modes:
        seconds = median([s["seconds"] for s in samples[mode]])
        rate = args.events / seconds

        def cpu(key: str, mode: str = mode) -> float:
            return median([s["cpu"].get(key, 0.0) for s in samples[mode]])

        def per_event(key: str, seconds: float = seconds) -> float:
            return cpu(key) / 100 * seconds / args.events * 1e6

        others = median([max(0.0, s["machine"] - sum(s["cpu"].values())) for s in samples[mode]])
        rows.append(
            [
                MODES[mode],
                args.events,
                notifications[mode],
                seconds,
                f"{rate:,.0f}",
                f"{cpu('worker'):.0f}% / {per_event('worker'):.0f}",
                f"{cpu('postgres'):.0f}% / {per_event('postgres'):.0f}",
                f"{cpu('tails'):.0f}%",
                f"{others:.0f}%",
            ]
        )
        summary[mode] = {
            "events_per_s": rate,
            "seconds": seconds,
            "worker_us_per_event": per_event("worker"),
            "postgres_us_per_event": per_event("postgres"),
        }
    print(
        f"\nworker throughput, PostgreSQL, {args.tails} tails following, median of {args.runs} runs"
    )
    table(
        [
            "mode",
            "events",
            "notifications",
            "seconds",
            "events/s",
            "worker CPU / µs per event",
            "postgres CPU / µs per event",
            "tails CPU",
            "rest of machine",
        ],
        rows,
    )
    best = max(summary.values(), key=lambda m: m["events_per_s"])
    measured = ", ".join(f"{MODES[m]} {v['events_per_s']:,.0f}" for m, v in summary.items())
    write_summary(
        args.json_summary,
        [
            goal(
                f"events → notifications through the worker, {args.events:,} events, "
                f"{args.tails} tails on",
                "≥ 10,000 events/s",
                f"{measured} events/s",
                best["events_per_s"] >= 10_000,
            )
        ],
        **summary,
    )


if __name__ == "__main__":
    main()
