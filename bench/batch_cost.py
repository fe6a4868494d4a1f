"""What one small worker batch costs: the live case, where each batch holds 1-3 events.

At 500 events/s a worker commits ~180 batches a second and every tail wakes on each, so what a
batch costs apart from its rows — statements, round trips, the worker's CPU — is most of the
live latency (bench/live_latency.py) and of the worker's share of the two cores. In-process:
plain-SQL enrollments (the capture trigger on), then `pipeline.process_batch` on 1, 2 or 3 of
them at a time (seeded, the same sequence every run); prints the wall time and the worker's CPU
per batch (medians) and how many statements one batch issues.

    python bench/batch_cost.py [--batches 600] [--runs 3] [--backend postgres|sqlite]
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from typing import Any

import sqlalchemy as sa
from _common import COURSE, STUDENT, build_school, median, migrated, table, temp_database, uid
from sqlalchemy import event

from humanglue_cli.core import pipeline

ENROLL = "INSERT INTO enrollments (id, course_id, student_id) VALUES (:i, :c, :s)"


def run(url: str, batches: int) -> tuple[float, float, int]:
    engine = migrated(url)
    build_school(engine, courses=20, students=500)
    statements = 0

    def counted(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(engine, "after_cursor_execute", counted)
    rng = random.Random(7)

    def enroll(count: int) -> None:
        with engine.begin() as conn:  # the platform: one enrollment per transaction
            for _ in range(count):
                conn.execute(
                    sa.text(ENROLL),
                    {
                        "i": str(uuid.uuid4()),
                        "c": uid(COURSE, rng.randint(1, 20)),
                        "s": uid(STUDENT, rng.randint(1, 500)),
                    },
                )

    for _ in range(5):  # warm: statements prepared, caches filled
        enroll(1)
        pipeline.process_batch(engine)
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(batches):
        enroll(rng.choice((1, 2, 3)))
        statements = 0
        began, used = time.perf_counter(), time.process_time()
        pipeline.process_batch(engine)
        wall.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - used) * 1000)
    last = statements
    engine.dispose()
    return median(wall), median(cpu), last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", default="postgres", choices=("postgres", "sqlite"))
    args = parser.parse_args()
    rows = []
    for n in range(1, args.runs + 1):
        with temp_database(args.backend) as url:
            wall, cpu, statements = run(url, args.batches)
        rows.append([f"run {n}", round(wall, 3), round(cpu, 3), statements])
    rows.append(["median", median([r[1] for r in rows]), median([r[2] for r in rows]), rows[-1][3]])
    print(f"\nworker batches of 1-3 enrollments, {args.backend}, {args.batches} per run")
    table(["", "wall ms (p50)", "worker CPU ms (p50)", "statements per batch"], rows)


if __name__ == "__main__":
    main()
