"""The embedded worker: no broker, the database alone (the default with nothing configured).

It polls the outbox's due index — a probe that costs well under a millisecond — every
`poll_interval`, and drains everything due when there is work. Several embedded workers may
run side by side: claims never overlap (SKIP LOCKED; SQLite's single writer). The Celery
worker's poller (worker/poller.py) reuses the probe, the heartbeat and the outage handling.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa

from humanglue_cli.core import outbox, pipeline
from humanglue_cli.core.db import wrap_errors
from humanglue_cli.core.errors import HumanGlueError, Unavailable

log = logging.getLogger("humanglue.worker")

HEARTBEAT_EVERY = 5.0
RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # backoff while the database is unreachable


def default_poll_interval(engine: sa.Engine) -> float:
    """50 ms on PostgreSQL, 20 ms on SQLite (ENGINEERING.md; bench/wakeup.py measures it)."""
    return 0.02 if engine.dialect.name == "sqlite" else 0.05


class Heartbeat:
    """Says in `hg_workers` that this worker is alive, every few seconds."""

    def __init__(self, engine: sa.Engine, kind: str) -> None:
        self.engine = engine
        self.kind = kind
        self.id = f"{kind}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.processed = 0
        self._last = 0.0

    def beat(self, force: bool = False) -> None:
        """Upsert this worker's row if it is time; database errors propagate to the caller."""
        now = time.monotonic()
        if not force and now - self._last < HEARTBEAT_EVERY:
            return
        with self.engine.begin() as conn:
            outbox.heartbeat(
                conn, self.id, self.kind, socket.gethostname(), os.getpid(), self.processed
            )
        self._last = now

    def stop(self) -> None:
        try:
            with self.engine.begin() as conn:
                outbox.forget_worker(conn, self.id)
        except sa.exc.DBAPIError:
            pass


def first_due(engine: sa.Engine) -> int | None:
    """The oldest due event's id, read without blocking writers."""
    with engine.connect() as conn:
        conn = conn.execution_options(readonly=True)
        with conn.begin():
            return outbox.first_due(conn)


class Outage:
    """Backoff and stderr messages while a service (the database, the broker) is unreachable.

    Says so at each failed attempt, with the delay before the next, and once when it is over.
    """

    def __init__(self, what: str = "database", max_delay: float = RETRY_MAX) -> None:
        self.what = what
        self.max_delay = max_delay
        self.delay = RETRY_FIRST
        self.since: float | None = None

    def failed(self, error: BaseException) -> float:
        """Record a failure; returns how long to wait before the next attempt."""
        if self.since is None:
            self.since = time.monotonic()
        delay, self.delay = self.delay, min(self.delay * 2, self.max_delay)
        said = (
            str(error)
            if isinstance(error, HumanGlueError)
            else (f"{self.what} unavailable ({_reason(error)})")
        )
        log.warning("%s; retrying in %.1fs", said, delay)
        return delay

    def ok(self) -> None:
        if self.since is not None:
            log.info("%s reachable again after %.1fs", self.what, time.monotonic() - self.since)
        self.since, self.delay = None, RETRY_FIRST


def _reason(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def run(
    engine: sa.Engine,
    stop: threading.Event,
    *,
    poll_interval: float | None = None,
    batch_size: int = pipeline.BATCH_SIZE,
    on_batch: Callable[[pipeline.BatchResult], None] | None = None,
) -> None:
    """Process events until `stop` is set; database outages are waited out with backoff.

    Raises:
        SchemaError: the database has no (or an outdated) HumanGlue schema.
    """
    interval = poll_interval if poll_interval is not None else default_poll_interval(engine)
    heartbeat = Heartbeat(engine, "embedded")
    outage = Outage()
    try:
        while not stop.is_set():
            try:
                with wrap_errors(engine):
                    heartbeat.beat()
                    due = first_due(engine)
                    result = (
                        pipeline.drain(engine, batch_size, should_stop=stop.is_set)
                        if due is not None
                        else None
                    )
            except (Unavailable, sa.exc.OperationalError, sa.exc.InterfaceError) as error:
                stop.wait(outage.failed(error))
                continue
            outage.ok()
            if result is not None and result.claimed:
                heartbeat.processed += result.processed
                if on_batch:
                    on_batch(result)
                continue  # more may have arrived meanwhile: probe again at once
            # Nothing due — or all of it locked by another worker (SKIP LOCKED): wait a tick.
            stop.wait(interval)
    finally:
        heartbeat.stop()
