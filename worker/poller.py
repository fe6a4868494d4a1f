"""A worker bootstep that turns plain-SQL writes into work, with no beat and no NOTIFY.

New events are processed in the worker's own process the moment they are due: a watch thread
looks every 2 ms (core/watch.py: one cheap prepared statement on a connection of its own) for
new events that are due, and drains them at once — no round trip through the broker, whose
publish, delivery, task start and second look at the outbox cost milliseconds that the live
latency goal (issue 8) does not have.

Everything else is the broker's, as before. Every `interval` the poller thread probes the
outbox's due index. When there is work it publishes a `process_events` message — at once
whenever the oldest due event changes (progress, or work the watch does not see: a retry, a
lease run out, a late commit), two intervals later for new work the watch is draining (a
burst it has not finished, so that the pool's threads and the other workers share it), and
again every REDISPATCH seconds while that event waits: this re-sends what the broker lost (a
Redis restart, the messages a killed worker had reserved).

If a wake-up cannot be published (the broker is down), or the oldest due event still waits
after STALL seconds of wake-ups (this worker's consumer has stopped consuming: kombu's Redis
transport has had such bugs, celery#8030, celery#8091, kombu#2629), the poller drains the
outbox itself — the database is the truth and the broker only a wake-up call — and says so on
stderr, until the wake-ups are answered again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import bootsteps

from humanglue_cli.core import runner
from humanglue_cli.core.backoff import Backoff
from humanglue_cli.core.db import Fault, classify, wrap_errors
from humanglue_cli.core.errors import first_line
from humanglue_cli.core.watch import Watch

log = logging.getLogger("humanglue.worker")

REDISPATCH = 1.0  # seconds between wake-ups while the same event waits
STALL = 3.0  # seconds an event may wait, wake-ups notwithstanding, before the poller drains
DRAIN_BUDGET = 2.0  # seconds the poller drains at a time (as a task does)
STALL_LOG_EVERY = 30.0


class OutboxPoller(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, parent: Any) -> None:
        loop = PollLoop(parent.app)
        self._threads = [
            threading.Thread(target=self._run, args=(loop,), name="humanglue-poller", daemon=True),
            threading.Thread(
                target=loop.watch, args=(self._stop,), name="humanglue-watch", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=DRAIN_BUDGET + 3)

    def _run(self, loop: PollLoop) -> None:
        try:
            while not self._stop.is_set():
                self._stop.wait(loop.tick())
        finally:
            loop.stop()


class PollLoop:
    """One probe of the outbox per tick; wake-ups, re-sends and the stall fallback."""

    def __init__(self, app: Any) -> None:
        from worker.engine import engine

        self.app = app
        self.db = engine()
        self.interval = runner.default_poll_interval(self.db)
        self.heartbeat = runner.Heartbeat(self.db, "celery")
        self.database = Backoff("database")
        self.broker = Backoff("broker", cap=REDISPATCH * 2)
        self.due: int | None = None  # the oldest due event, as last seen
        self.due_since = 0.0  # when it became the oldest
        self.sent = 0.0  # when a wake-up for it was last published
        self.broker_retry_at = 0.0
        self.stall_logged = -STALL_LOG_EVERY
        self.processed = 0  # this process's tally of processed events, as last seen
        self.watcher = Watch(self.db)  # the watch thread's

    def tick(self) -> float:
        """Probe, wake, maybe drain; returns the seconds to wait before the next tick."""
        from worker import tasks

        processed = tasks.processed.value
        try:
            with wrap_errors(self.db):
                if not self.heartbeat.started:
                    self.heartbeat.start()
                self.heartbeat.processed = processed
                due = runner.first_due(self.db)
        except Exception as error:  # the database is down (or has no schema): say so, retry
            self.due = None  # once it is back, the stall clock starts afresh
            return self.database.failed(error)
        self.database.ok()
        now = time.monotonic()
        # Progress, or new work: wake a consumer at once. Our own tasks' progress counts too,
        # as the oldest id looks unchanged while a long batch holds it.
        progressed, self.processed = processed != self.processed, processed
        if due != self.due or progressed:
            # New work that the watch sees is drained within milliseconds: a wake-up for it
            # goes out only if it is still due two ticks from now.
            grace = 2 * self.interval if self.watcher.covers(due) else 0.0
            self.due, self.due_since, self.sent = due, now, now - REDISPATCH + grace
        if due is None:
            return self.interval
        if self.broker.failing and now >= self.broker_retry_at:
            self._wake(now)  # it may be back: then this work is its consumers' again
        if self.broker.failing:  # no one can be woken: do the work here, try the broker later
            self._drain_here(now, tasks, "the broker does not answer")
        elif now - self.due_since >= STALL:
            waited = now - self.due_since
            self._drain_here(now, tasks, f"event {due} waited {waited:.1f}s despite wake-ups")
        if now - self.sent >= REDISPATCH and now >= self.broker_retry_at:
            self._wake(time.monotonic())
        return self.interval

    def watch(self, stop: threading.Event) -> None:
        """The watch thread: drain new work here as soon as the watch sees it due."""
        from worker import tasks

        try:
            while not stop.is_set():
                if self.database.failing:  # the poller says so, and says when it is back
                    stop.wait(self.interval)
                    continue
                if not runner.watch_for(self.watcher, stop, self.interval):
                    continue
                try:
                    result = tasks.drain(DRAIN_BUDGET, stop=stop, watched=True)
                except Exception as error:  # an outage is the poller's to report, once
                    if classify(error) is not Fault.OUTAGE:
                        log.warning("could not process new events: %s", first_line(error))
                    stop.wait(self.interval)
                    continue
                if not result.claimed:  # due, yet held by another worker: no spinning on it
                    stop.wait(self.interval)
        finally:
            self.watcher.close()

    def stop(self) -> None:
        self.heartbeat.stop()

    def _wake(self, now: float) -> None:
        try:
            self.app.send_task("humanglue.process_events", retry=False)
        except Exception as error:  # the broker is down: the stall fallback covers for it
            self.broker_retry_at = now + self.broker.failed(error)
            return
        self.broker.ok()
        self.sent = now

    def _drain_here(self, now: float, tasks: Any, why: str) -> None:
        if now - self.stall_logged >= STALL_LOG_EVERY:
            self.stall_logged = now
            log.warning("%s: processing the outbox in the poller", why)
        self.due = None  # next tick: wake at once for what is left, then wait STALL again
        try:
            result = tasks.drain(DRAIN_BUDGET)
        except Exception as error:
            log.warning("poller could not process the outbox: %s", first_line(error))
            return
        if result.claimed:
            log.info(
                "poller processed %d events, %d notifications, %d failed",
                result.processed,
                result.notified,
                result.failed,
            )
