"""Running a worker: its heartbeat, the wake-up probe, and the embedded worker's loop.

The embedded worker — the default with no broker — polls the outbox's due index (a probe
that costs well under a millisecond) every `poll_interval`, and drains everything due when
there is work; between two probes a `Watch` (core/watch.py) looks every 2 ms, on a connection
of its own, for new events that are due, and drains them at once. Several may run side by
side: claims never overlap (SKIP LOCKED; SQLite's single writer). The Celery worker's poller
(worker/poller.py) uses the same heartbeat, probe and watch.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from humanglue_cli.core import pipeline
from humanglue_cli.core.backoff import Backoff
from humanglue_cli.core.db import Fault, Watchdog, classify, reading, wrap_errors
from humanglue_cli.core.errors import SchemaError, first_line
from humanglue_cli.core.store import broadcasts, events, workers
from humanglue_cli.core.watch import Watch

log = logging.getLogger("humanglue.worker")

HEARTBEAT_EVERY = 5.0  # seconds; `status` calls a worker dead after three missed beats


def default_poll_interval(engine: sa.Engine) -> float:
    """50 ms on PostgreSQL, 20 ms on SQLite (ENGINEERING.md; bench/wakeup.py measures it)."""
    return 0.02 if engine.dialect.name == "sqlite" else 0.05


def first_due(engine: sa.Engine) -> int | None:
    """The oldest due event's id, read without blocking writers."""
    with reading(engine) as conn:
        return events.first_due(conn)


class Heartbeat:
    """Says in `hg_workers` every HEARTBEAT_EVERY seconds that this worker lives, from a thread
    of its own, so that a long batch does not look like a dead worker. While it beats, a
    `Watchdog` (core/db.py) cuts off the engine's connections if the way to the server stalls:
    the worker's statements then fail as in an outage instead of waiting forever."""

    def __init__(self, engine: sa.Engine, kind: str) -> None:
        self.engine = engine
        self.kind = kind
        self.id = f"{kind}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.processed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.watchdog = Watchdog(engine)

    @property
    def started(self) -> bool:
        return self._thread is not None

    def beat(self) -> None:
        """One beat now; database errors propagate."""
        with self.engine.begin() as conn:
            workers.beat(
                conn, self.id, self.kind, socket.gethostname(), os.getpid(), self.processed
            )
            broadcasts.purge(conn, timedelta(seconds=HEARTBEAT_EVERY))

    def start(self) -> None:
        """Beat once (errors propagate: the database must be there), then in the background."""
        self.watchdog.start()  # first: the first beat may stall too
        self.beat()
        self._thread = threading.Thread(target=self._run, name="humanglue-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            try:
                self.beat()
            except Exception as error:  # the worker's own loop reports outages
                log.debug("heartbeat failed: %s", first_line(error))

    def stop(self) -> None:
        """Stop beating and record that this worker stopped (best effort; a no-op if it never
        started)."""
        if self._thread is None:
            self.watchdog.stop()
            return
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            with self.engine.begin() as conn:
                workers.stopped(conn, self.id)
        except Exception as error:
            log.debug("could not record the stop: %s", first_line(error))
        finally:
            self.watchdog.stop()  # last: the record of the stop may stall too


def run(
    engine: sa.Engine,
    stop: threading.Event,
    *,
    poll_interval: float | None = None,
    batch_size: int = pipeline.BATCH_SIZE,
    on_batch: Callable[[pipeline.BatchResult], None] | None = None,
) -> None:
    """Process events until `stop` is set; outages are waited out, errors reported and survived.

    Raises:
        SchemaError: the database has no (or an outdated) HumanGlue schema.
    """
    interval = poll_interval if poll_interval is not None else default_poll_interval(engine)
    heartbeat = Heartbeat(engine, "embedded")
    backoff = Backoff("database")
    watch = Watch(engine)
    woken = False  # the watch saw new work due

    def probe() -> int | None:
        if not heartbeat.started:
            heartbeat.start()
        due = first_due(engine)
        backoff.ok()  # the database answers: say so now, not after the catching up
        return due

    next_probe = 0.0  # when the regular probe is due again (monotonic)
    try:
        while not stop.is_set():
            result = None
            try:
                with wrap_errors(engine):
                    if woken:  # new work: no need to probe first
                        result = pipeline.drain(
                            engine, batch_size, should_stop=stop.is_set, watched=True
                        )
                    elif time.monotonic() >= next_probe:
                        next_probe = time.monotonic() + interval
                        if probe() is not None:
                            result = pipeline.drain(engine, batch_size, should_stop=stop.is_set)
            except SchemaError:
                raise
            except Exception as error:
                woken = False
                stop.wait(_trouble(error, backoff))
                continue
            if result is not None and result.claimed:
                heartbeat.processed += result.processed
                if on_batch:
                    on_batch(result)
            elif woken:  # due, yet nothing to claim (held by another worker): no spinning on it
                woken = False
                stop.wait(interval)
                continue
            # Until the regular probe is due, drain new work as soon as the watch sees it.
            woken = watch_for(watch, stop, max(0.0, next_probe - time.monotonic()))
    finally:
        watch.close()
        heartbeat.stop()


def watch_for(watch: Watch, stop: threading.Event, timeout: float) -> bool:
    """`watch.wait()`, where an error only ends the wait: the regular probe reports outages."""
    started = time.monotonic()
    try:
        return watch.wait(stop, timeout)
    except Exception as error:
        log.debug("watch: %s", first_line(error))
        stop.wait(max(0.0, timeout - (time.monotonic() - started)))
        return False


def _trouble(error: BaseException, backoff: Backoff) -> float:
    """What to do about an error of the loop: returns the seconds to wait before going on."""
    fault = classify(error)
    if fault is Fault.OUTAGE:
        return backoff.failed(error)
    if fault is Fault.LOCKED:  # SQLite busy past its timeout: someone holds the whole database
        log.warning("database busy (%s); trying again", first_line(error))
        return 1.0
    # A bug, or a failure outside any event (the claim itself): say so and go on.
    log.error(
        "worker error: %s: %s; trying again",
        type(error).__name__,
        first_line(error),
        exc_info=log.isEnabledFor(logging.DEBUG),
    )
    return backoff.failed(error) if backoff.failing else 1.0
