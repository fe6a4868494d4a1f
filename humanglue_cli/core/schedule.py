"""The maintenance schedule, run inside every worker: each tick exactly once.

Jobs (CONTRACT §8): `cleanup` (core/maintenance.py) and `presence_sweep` (stale presence
marked offline), each on a cron expression of the settings, read in `schedule_tz`. Every
worker — and beat, if one runs — looks at the schedule; at each look a job's due tick is the
latest one at or before the database's clock, and the run of that tick is claimed in the
database (store/runs.py): one claimant runs it, the others see it taken. A tick missed while
everything was down is therefore run once on return (the latest missed one), never once per
missed tick. Schedules may carry a sixth field, seconds (croniter's), which tests use.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from humanglue_cli.core import db, maintenance
from humanglue_cli.core.errors import BadInput, first_line
from humanglue_cli.core.settings import Settings
from humanglue_cli.core.store import presence, runs
from humanglue_cli.core.text import shown

log = logging.getLogger("humanglue.worker")

JOBS = {"cleanup": "cleanup_schedule", "presence_sweep": "presence_sweep_schedule"}
LONGEST_WAIT = 30.0  # seconds between looks at most (a changed clock, a takeover)
SWEEP_LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class Job:
    name: str
    expression: str
    zone: ZoneInfo

    def latest(self, now: datetime) -> datetime:
        """The latest tick at or before `now`, in UTC."""
        from croniter import croniter

        local = now.astimezone(self.zone).replace(microsecond=0)
        if len(self.expression.split()) == 5:  # minutes: a tick is the minute's start
            local = local.replace(second=0)
        if croniter.match(self.expression, local):
            return _utc(local)
        return _utc(croniter(self.expression, local).get_prev(datetime))

    def next_runs(self, now: datetime, count: int) -> list[datetime]:
        """The next `count` ticks after `now`, in the schedule's zone."""
        from croniter import croniter

        ticks = croniter(self.expression, now.astimezone(self.zone))
        return [ticks.get_next(datetime) for _ in range(count)]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def zone(settings: Settings) -> ZoneInfo:
    """The schedules' time zone.

    Raises:
        BadInput: not a zone name.
    """
    given = settings.schedule_setting("schedule_tz")
    try:
        return ZoneInfo(given.text)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(f"{given.source}: unknown time zone {shown(given.text)}") from None


def jobs(settings: Settings) -> list[Job]:
    """The jobs with their schedules, checked.

    Raises:
        BadInput: a schedule that is not a cron expression, or an unknown zone.
    """
    from croniter import croniter

    tz = zone(settings)
    found = []
    for name, setting in JOBS.items():
        given = settings.schedule_setting(setting)
        fields = given.text.split()
        if not 5 <= len(fields) <= 6 or not croniter.is_valid(given.text):
            raise BadInput(
                f"{given.source}: not a cron expression: {shown(given.text)} "
                "(five fields, e.g. '17 3 * * *'; a sixth is seconds)"
            )
        found.append(Job(name, " ".join(fields), tz))
    return found


def _sweep(engine: sa.Engine, settings: Settings, run_id: int, owner: str) -> dict[str, Any]:
    with engine.begin() as conn:
        swept = presence.sweep(conn, db.current_time(conn), settings.presence_timeout)
        result = {"swept": swept, "deleted": {}}
        runs.finish(conn, run_id, owner, result)
    return result


def run_tick(
    engine: sa.Engine, settings: Settings, job: Job, owner: str, now: datetime | None = None
) -> dict[str, Any] | None:
    """Claim and run `job`'s due tick; its result, or None if the tick was not ours to run."""
    with db.wrap_errors(engine), engine.begin() as conn:
        tick = job.latest(now or db.current_time(conn))
        lease = maintenance.LEASE if job.name == "cleanup" else SWEEP_LEASE
        run_id = runs.claim(conn, job.name, tick, owner, lease)
    if run_id is None:
        return None
    if job.name == "cleanup":
        result = maintenance.run_claimed(engine, settings, run_id, owner)
        deleted = ", ".join(f"{n} {what}" for what, n in result["deleted"].items() if n)
        log.info("cleanup ran for %s: deleted %s", tick.isoformat(), deleted or "nothing")
        return result
    result = _sweep(engine, settings, run_id, owner)
    # Every minute: said only when it changed something.
    level = logging.INFO if result["swept"] else logging.DEBUG
    log.log(level, "presence_sweep ran for %s: %d offline", tick.isoformat(), result["swept"])
    return result


class Scheduler:
    """Looks at the schedule when a tick is due, and runs what it claims (a thread's body)."""

    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.jobs = jobs(settings)  # a bad schedule fails here, at start
        self.owner = maintenance.owner_id()

    def look(self) -> float:
        """Run every due tick not yet run; the seconds until the next tick."""
        with db.reading(self.engine) as conn:
            now = db.current_time(conn)
        for job in self.jobs:
            try:
                run_tick(self.engine, self.settings, job, self.owner, now)
            except Exception as error:  # the next look tries again
                log.warning("%s: %s", job.name, first_line(error))
        soonest = min(job.next_runs(now, 1)[0] for job in self.jobs)
        return min(LONGEST_WAIT, max(0.05, (soonest - now).total_seconds()))

    def run(self, stop: threading.Event, on_error: Callable[[BaseException], float]) -> None:
        """Look until `stop` is set; `on_error` says how long to wait after a failed look."""
        while not stop.is_set():
            try:
                wait = self.look()
            except Exception as error:
                wait = on_error(error)
            stop.wait(wait)

    def start(self, stop: threading.Event) -> threading.Thread:
        """Run in a daemon thread of its own."""

        def quietly(error: BaseException) -> float:
            log.debug("schedule: %s", first_line(error))
            return 5.0

        thread = threading.Thread(
            target=self.run, args=(stop, quietly), name="humanglue-schedule", daemon=True
        )
        thread.start()
        return thread
