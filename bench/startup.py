"""Start-up: `humanglue --help` and `--version` as whole processes (issue 10: ≤ 90 ms / ≤ 60 ms).

Each command is run `--runs` times, interleaved round by round with two baselines measured in
the same run: `python -c pass` (the interpreter alone) and `python -c "import sqlalchemy,
psycopg, typer"` (the bare imports issue 10 compares the listing commands with). Prints the
median wall time of each and its ratio to the bare imports; a machine that is busy moves every
figure, the ratios much less. Run from the repository root with the project's virtualenv:

    python bench/startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from _common import CLI, goal, median, pct, table, write_summary

GOALS_MS = {"--help": 90.0, "--version": 60.0}


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json-summary", metavar="PATH", help="write the headline figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        # Nothing of the user's: no config file, no database, no colours.
        env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=home, NO_COLOR="1")
        for name in [k for k in env if k.startswith("HUMANGLUE_")]:
            del env[name]
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import sqlalchemy, psycopg, typer": [
                sys.executable,
                "-c",
                "import sqlalchemy, psycopg, typer",
            ],
            "humanglue --version": [CLI, "--version"],
            "humanglue --help": [CLI, "--help"],
            "humanglue notifications --help": [CLI, "notifications", "--help"],
        }
        for argv in cases.values():  # warm the page cache and the .pyc files
            timed(argv, env)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, argv in cases.items():
                samples[name].append(timed(argv, env))
    bare = median(samples["import sqlalchemy, psycopg, typer"])
    rows = []
    for name, values in samples.items():
        target = next((g for flag, g in GOALS_MS.items() if name == f"humanglue {flag}"), None)
        rows.append(
            [
                name,
                median(values),
                pct(values, 90),
                median(values) / bare,
                f"≤ {target:.0f} ms: {'met' if median(values) <= target else 'NOT met'}"
                if target
                else "",
            ]
        )
    print(f"start-up, {args.runs} runs each, interleaved (ms)\n")
    table(["process", "median", "p90", "÷ bare imports", "issue 10"], rows)
    found = {flag: median(samples[f"humanglue {flag}"]) for flag in GOALS_MS}
    write_summary(
        args.json_summary,
        [
            goal(
                f"`humanglue {flag}`",
                f"≤ {GOALS_MS[flag]:.0f} ms",
                f"{ms:.0f} ms",
                ms <= GOALS_MS[flag],
            )
            for flag, ms in found.items()
        ],
        median_ms={name: median(values) for name, values in samples.items()},
        runs=args.runs,
    )


if __name__ == "__main__":
    main()
