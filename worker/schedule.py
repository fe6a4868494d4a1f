"""The maintenance schedule in Celery: a worker bootstep, and beat's entries.

Every worker runs the schedule itself (core/schedule.py), in a thread of its own; beat is
optional. If beat runs, its entries send `humanglue.scheduled` at each tick, and the task
claims the tick like the workers do: whoever claims first runs it, once.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from celery import bootsteps, schedules

from humanglue_cli.core import schedule


class ScheduleStep(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        from worker.engine import engine, settings

        self._thread = schedule.Scheduler(engine(), settings()).start(self._stop)

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class CronTick(schedules.BaseSchedule):
    """A beat schedule from a job's cron expression (seconds included), in its zone."""

    def __init__(self, job: schedule.Job, app: Any = None) -> None:
        super().__init__(app=app)
        self.job = job

    def remaining_estimate(self, last_run_at: datetime) -> float:
        return self._until_next(datetime.now(UTC))

    def _until_next(self, now: datetime) -> float:
        return max(0.0, (self.job.next_runs(now, 1)[0] - now).total_seconds())

    def is_due(self, last_run_at: datetime) -> schedules.schedstate:
        # One reading of the clock for both answers: with two, a tick falling between them was
        # neither due nor waited for — skipped, and the next one sent twice.
        now = datetime.now(UTC)
        last = last_run_at if last_run_at.tzinfo else last_run_at.replace(tzinfo=UTC)
        due = self.job.latest(now) > last
        return schedules.schedstate(due, self._until_next(now))

    def __repr__(self) -> str:
        return f"<CronTick {self.job.name}: {self.job.expression} {self.job.zone.key}>"


def beat_entries(jobs: list[schedule.Job]) -> dict[str, dict[str, Any]]:
    """Beat's schedule: one entry per job, each sending `humanglue.scheduled`."""
    return {
        job.name: {"task": "humanglue.scheduled", "schedule": CronTick(job), "args": [job.name]}
        for job in jobs
    }
