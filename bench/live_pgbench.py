"""The platform's write throughput with and without the live machinery running (issue 8).

pgbench inserts enrollments in plain SQL (one per transaction, several clients), alternating
round by round between:

    quiet    nothing of ours runs (the capture triggers still fill the outbox)
    worker   an embedded `humanglue worker` turns them into notifications, with the tails'
             wake-up trigger dropped for the round: no NOTIFY, no tail
    live     the worker (each batch's transaction signals `hg_notifications` once), and three
             `notifications tail` processes of instructors LISTEN and read what wakes them

The outbox is emptied before every round, so that no round inherits another's backlog. On this
2-core machine "live" also takes CPU from the server: the ratio is the whole cost of running
the worker and three tails beside the platform, not of NOTIFY alone.

    python bench/live_pgbench.py [--seconds 10] [--rounds 3] [--clients 8] [--jobs 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from _common import CLI, build_school, median, migrated, pgbench, table, temp_database
from capture_overhead import COURSES, STUDENTS, write_scripts

TRIGGER = {  # the tails' wake-up (migration 0005): on, or off for the "worker" round
    True: "CREATE OR REPLACE TRIGGER hg_notifications_inserted AFTER INSERT ON notifications "
    "FOR EACH STATEMENT EXECUTE FUNCTION hg_notifications_inserted()",
    False: "DROP TRIGGER IF EXISTS hg_notifications_inserted ON notifications",
}


@contextlib.contextmanager
def live_machinery(url: str, emails: list[str], home: Path, tails: bool = True) -> Iterator[None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUMANGLUE_")} | {
        "HUMANGLUE_DATABASE_URL": url,
        "XDG_DATA_HOME": str(home),
        "NO_COLOR": "1",
    }
    procs = [
        subprocess.Popen(
            [CLI, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    ]
    for email in emails if tails else []:
        procs.append(
            subprocess.Popen(
                [CLI, "-u", email, "notifications", "tail", "--json", "-n", "0"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(2.0)  # started and listening
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    configs = ["quiet", "worker", "live"]
    tps: dict[str, list[float]] = {c: [] for c in configs}
    notified: list[int] = []
    with temp_database("postgres") as url, tempfile.TemporaryDirectory() as tmp:
        engine = migrated(url)
        build_school(engine, COURSES, STUDENTS)
        with engine.connect() as conn:
            emails = list(
                conn.execute(
                    sa.text(
                        "SELECT p.email FROM profiles p JOIN courses c ON c.instructor_id = p.id "
                        "GROUP BY p.email ORDER BY p.email LIMIT 3"
                    )
                ).scalars()
            )
        scripts = write_scripts(Path(tmp), "enroll")
        try:
            for rnd in range(args.rounds):
                order = configs[rnd % 3 :] + configs[: rnd % 3]
                for config in order:
                    with engine.begin() as conn:
                        conn.execute(sa.text("DELETE FROM hg_events"))
                        before = conn.execute(sa.text("SELECT count(*) FROM notifications"))
                        start_count = int(before.scalar_one())
                    machinery = (
                        live_machinery(url, emails, Path(tmp), tails=config == "live")
                        if config != "quiet"
                        else contextlib.nullcontext()
                    )
                    with engine.begin() as conn:
                        conn.execute(sa.text(TRIGGER[config != "worker"]))
                    with machinery:
                        value = pgbench(url, scripts, args.clients, args.jobs, args.seconds)
                    tps[config].append(value)
                    with engine.connect() as conn:
                        made = int(
                            conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar_one()
                        )
                    extra = ""
                    if config != "quiet":
                        notified.append(made - start_count)
                        extra = f" ({made - start_count:,} notifications made meanwhile)"
                    print(f"  round {rnd + 1} {config}: {value:,.0f} tps{extra}", flush=True)
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text(TRIGGER[True]))
            engine.dispose()
    quiet = median(tps["quiet"])

    def paired(config: str) -> float:
        return median([b / a for a, b in zip(tps["quiet"], tps[config], strict=True)])

    print(
        f"\nplatform enrollments, pgbench -c {args.clients} -j {args.jobs}, "
        f"{args.seconds:g} s x {args.rounds} rounds, median tps"
    )
    table(
        ["config", "tps", "ratio", "paired ratio"],
        [
            ["quiet (nothing of ours runs)", f"{quiet:,.0f}", "1.00", "1.00"],
            *[
                [
                    label,
                    f"{median(tps[c]):,.0f}",
                    f"{median(tps[c]) / quiet:.2f}",
                    f"{paired(c):.2f}",
                ]
                for c, label in (
                    ("worker", "worker, no NOTIFY, no tail"),
                    ("live", "live (worker + NOTIFY + 3 tails)"),
                )
            ],
        ],
    )


if __name__ == "__main__":
    main()
