"""Celery tasks: each a docstring and a call into the core."""

from __future__ import annotations

import threading
import time
from typing import Any

from humanglue_cli.core import embedded, maintenance, pipeline
from worker.celery_app import app
from worker.engine import engine

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


def drain(budget: float, batch_size: int = pipeline.BATCH_SIZE) -> pipeline.BatchResult:
    """Process due events in batches for up to `budget` seconds (tasks and the poller)."""
    deadline = time.monotonic() + budget
    result = pipeline.drain(engine(), batch_size, should_stop=lambda: time.monotonic() > deadline)
    processed.add(result.processed)
    return result


@app.task(name="humanglue.process_events")
def process_events(batch_size: int = pipeline.BATCH_SIZE) -> dict[str, int]:
    """Drain due events from the outbox, in batches, for up to TIME_BUDGET seconds."""
    result = drain(TIME_BUDGET, batch_size)
    return {"processed": result.processed, "failed": result.failed}


@app.task(name="humanglue.sweep")
def sweep() -> bool:
    """Re-dispatch stranded events: wake a worker if anything is due."""
    if embedded.first_due(engine()) is not None:
        process_events.delay()
        return True
    return False


@app.task(name="humanglue.cleanup")
def cleanup() -> dict[str, Any]:
    """Delete expired notifications and stale presence (the retention settings)."""
    return maintenance.cleanup(engine(), dry_run=False)
