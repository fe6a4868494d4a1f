"""Celery tasks: each a docstring and a call into the core."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from humanglue_cli.core import maintenance, pipeline, schedule
from humanglue_cli.core.db import Fault, classify
from humanglue_cli.core.errors import first_line
from worker.celery_app import app
from worker.engine import engine, settings

log = logging.getLogger("humanglue.worker")

TIME_BUDGET = 2.0  # seconds a task drains before it leaves the rest to the next wake-up


class Tally:
    """Events processed by this worker process (its `hg_workers` row shows it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


processed = Tally()


def drain(
    budget: float,
    batch_size: int = pipeline.BATCH_SIZE,
    stop: threading.Event | None = None,
    watched: bool = False,
) -> pipeline.BatchResult:
    """Process due events in batches for up to `budget` seconds, or until `stop` is set
    (tasks, the poller and its watch: `watched`, see pipeline.drain)."""
    deadline = time.monotonic() + budget

    def should_stop() -> bool:
        return time.monotonic() > deadline or (stop is not None and stop.is_set())

    result = pipeline.drain(engine(), batch_size, should_stop=should_stop, watched=watched)
    processed.add(result.processed)
    return result


def _unfinished(task: str, error: Exception) -> dict[str, Any]:
    """One line for a task that could not run, never a traceback; none for an outage, which
    is the poller's to report (once, and when it ends) and to wait out: the work is in the
    database for the next try."""
    if classify(error) is Fault.OUTAGE:
        log.debug("%s: database unavailable (%s); the work waits", task, first_line(error))
    else:
        log.error("%s failed: %s: %s", task, type(error).__name__, first_line(error))
    return {"error": first_line(error)}


@app.task(name="humanglue.process_events")
def process_events(batch_size: int = pipeline.BATCH_SIZE) -> dict[str, Any]:
    """Drain due events from the outbox, in batches, for up to TIME_BUDGET seconds."""
    try:
        result = drain(TIME_BUDGET, batch_size)
    except Exception as error:
        return _unfinished("process_events", error)
    return {"processed": result.processed, "failed": result.failed}


@app.task(name="humanglue.cleanup")
def cleanup() -> dict[str, Any] | None:
    """Delete what is past its retention (the retention settings)."""
    try:
        return maintenance.cleanup(engine(), settings(), dry_run=False)
    except maintenance.Busy:
        return None
    except Exception as error:
        return _unfinished("cleanup", error)


@app.task(name="humanglue.scheduled")
def scheduled(job: str) -> dict[str, Any] | None:
    """Run `job`'s due tick (beat's entries), unless a worker has claimed it already."""
    try:
        found = {j.name: j for j in schedule.jobs(settings())}
        owner = maintenance.owner_id()
        return schedule.run_tick(engine(), settings(), found[job], owner)
    except Exception as error:
        return _unfinished(job, error)
