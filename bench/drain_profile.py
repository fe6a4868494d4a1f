"""Where a drain's time goes: `pipeline.drain` of N events under cProfile (issue 10's first step).

Builds the school of bench/_common.py in a throwaway database, writes N mixed platform rows
(their capture triggers fill the outbox), then drains them in process under cProfile and
prints events/s and the functions with the most cumulative time. Profiling slows the drain;
compare shares, not the rate, with burst_throughput.py.

    python bench/drain_profile.py [--events 20000] [--batch 500] [--top 40]
        [--backend postgres|sqlite] [--sort cumulative|tottime]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from _common import build_school, migrated, platform_writes, temp_database

from humanglue_cli.core import pipeline
from humanglue_cli.core.db import dispose_engines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=pipeline.BATCH_SIZE)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", choices=("cumulative", "tottime"), default="cumulative")
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    args = parser.parse_args()
    with temp_database(args.backend) as url:
        engine = migrated(url)
        build_school(engine)
        platform_writes(engine, args.events)
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        result = pipeline.drain(engine, args.batch)
        profile.disable()
        elapsed = time.perf_counter() - start
        print(
            f"{result.processed:,} events, {result.notified:,} notifications in {elapsed:.2f} s "
            f"under cProfile: {result.processed / elapsed:,.0f} events/s\n"
        )
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)
        dispose_engines()


if __name__ == "__main__":
    main()
