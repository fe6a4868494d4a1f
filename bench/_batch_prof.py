"""Scratch: profile worker batches of 1-3 enrollments."""
import sys, time, random, statistics, cProfile, pstats
sys.path.insert(0, "bench")
import live_latency as ll
from humanglue_cli.core import pipeline, db

with ll.fresh_database("postgres") as url:
    course, kids = ll.seed(url, 50)
    w = ll.Writer(url, course, kids, 1)
    engine = db.create_engine(url)
    for _ in range(5):
        w.enroll(); pipeline.process_batch(engine)
    prof = cProfile.Profile()
    totals = []; cpu = []
    for i in range(400):
        for _ in range(random.choice([1, 2, 3])):
            w.enroll()
        s = time.perf_counter(); c = time.process_time()
        prof.enable(); pipeline.process_batch(engine); prof.disable()
        totals.append((time.perf_counter() - s) * 1000); cpu.append((time.process_time() - c) * 1000)
    print("batch wall ms p50 %.3f cpu p50 %.3f (profiled)" % (statistics.median(totals), statistics.median(cpu)))
    pstats.Stats(prof).sort_stats(sys.argv[1] if len(sys.argv) > 1 else "tottime").print_stats(35)
    w.close(); engine.dispose()
