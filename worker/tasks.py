"""Celery tasks: each a docstring and a call into the core."""

from __future__ import annotations

import time
from typing import Any

from humanglue_cli.core import embedded, maintenance, pipeline
from worker.celery_app import app
from worker.engine import engine

TIME_BUDGET = 2.0  # seconds a task drains before it leaves the rest to the next wake-up


@app.task(name="humanglue.process_events", acks_late=True)
def process_events(batch_size: int = pipeline.BATCH_SIZE) -> dict[str, int]:
    """Drain due events from the outbox, in batches, for up to TIME_BUDGET seconds."""
    deadline = time.monotonic() + TIME_BUDGET
    result = pipeline.drain(engine(), batch_size, should_stop=lambda: time.monotonic() > deadline)
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
