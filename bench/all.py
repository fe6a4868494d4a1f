"""Every benchmark of an issue-10 goal, then one table: goal | measured | met?

Runs each script below in turn as a process of this interpreter (its own tables are printed as
it goes), with `--json-summary PATH`: the script writes there its goal rows
(`{"goals": [{"what", "goal", "measured", "met"}], "figures": {…}}`, bench/_common.py
`write_summary`), which this script collects. A script that is not there is reported as
missing; one that does not take `--json-summary` yet is run all the same, and its figures are
to be read from its own output. `--quick` runs each at a small size (minutes, not most of an
hour): its figures are not those of the goals, which are stated for the full sizes.

    python bench/all.py [--quick] [--only burst_throughput,memory,…]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from _common import table

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Bench:
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    goals: tuple[tuple[str, str], ...]  # issue 10's rows it measures: (what, goal)


BENCHES = (
    Bench(
        "worker_throughput.py",
        ("--events", "100000", "--runs", "3"),
        ("--events", "10000", "--runs", "1"),
        (("events → notifications through the worker, 100,000 events", "≥ 10,000 events/s"),),
    ),
    Bench(
        "send_all.py",
        (),
        ("--quick",),
        (("`notifications send --all` to 100,000 people, worker running", "≤ 1.5 s"),),
    ),
    Bench(
        "list_scale.py",
        (),
        ("--quick",),
        (
            (
                "`notifications list --json` / `count --json`, 1,000,000 of 5,000,000 rows",
                "≤ 1.15 × bare imports",
            ),
        ),
    ),
    Bench(
        "cleanup.py",
        ("--rows", "1000000", "--runs", "3"),
        ("--rows", "200000", "--runs", "1"),
        (
            ("`maintenance cleanup` of 1,000,000 expired rows", "≥ 100,000 rows/s"),
            ("the worker's insert p99 during it", "≤ 50 ms"),
        ),
    ),
    Bench(
        "startup.py",
        ("--runs", "30"),
        ("--runs", "8"),
        (("`humanglue --help`", "≤ 90 ms"), ("`humanglue --version`", "≤ 60 ms")),
    ),
    Bench(
        "memory.py",
        (),
        ("--events", "20000", "--lines", "200000"),
        (
            ("worker RSS under the ingest load", "≤ 150 MiB"),
            ("`tail` RSS after 1,000,000 lines", "flat"),
        ),
    ),
    Bench(
        "presence.py",
        (),
        (
            "--students",
            "20000",
            "--big",
            "2000",
            "--rounds",
            "1",
            "--seconds",
            "2",
            "--samples",
            "5",
        ),
        (("presence heartbeats sustained", "≥ 5,000/s"),),
    ),
)


def takes_summary(path: Path) -> bool:
    out = subprocess.run(
        [sys.executable, str(path), "--help"], capture_output=True, text=True, cwd=HERE.parent
    )
    return "--json-summary" in out.stdout


def run(bench: Bench, quick: bool, tmp: Path) -> list[list[Any]]:
    """Run one script; its goal rows: what, goal, measured, met?, seconds."""
    path = HERE / bench.script
    if not path.exists():
        return [[what, target, "missing", "—", ""] for what, target in bench.goals]
    argv = [sys.executable, str(path), *(bench.quick if quick else bench.full)]
    summary = tmp / f"{path.stem}.json"
    summarized = takes_summary(path)
    if summarized:
        argv += ["--json-summary", str(summary)]
    print(f"\n=== {' '.join(['python', f'bench/{bench.script}', *argv[2:]])}", flush=True)
    started = time.monotonic()
    code = subprocess.run(argv, cwd=HERE.parent).returncode
    took = f"{time.monotonic() - started:.0f}"
    if code != 0:
        return [[what, target, f"failed (exit {code})", "—", took] for what, target in bench.goals]
    if not summarized:
        note = "no --json-summary: see its output"
        return [[what, target, note, "?", took] for what, target in bench.goals]
    goals = json.loads(summary.read_text())["goals"]
    return [[g["what"], g["goal"], g["measured"], "yes" if g["met"] else "NO", took] for g in goals]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", default="", help="comma-separated script names (no .py)")
    args = parser.parse_args()
    only = {name.removesuffix(".py") for name in args.only.split(",") if name}
    chosen = [b for b in BENCHES if not only or Path(b.script).stem in only]
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="hgbench_all_") as tmp:
        for bench in chosen:
            rows += run(bench, args.quick, Path(tmp))
    size = "QUICK sizes: not the goals' own" if args.quick else "full sizes"
    print(f"\nissue 10 goals, {date.today().isoformat()}, {size}\n")
    table(["what", "goal", "measured", "met?", "s"], rows)
    if args.quick:
        print("(--quick: each goal holds at its full size; run without --quick to judge it)")


if __name__ == "__main__":
    main()
