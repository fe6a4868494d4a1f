"""The embedded worker: no broker, the database alone (the default with nothing configured).

It polls the outbox's due index — a probe that costs well under a millisecond — every
`poll_interval`, and drains everything due when there is work. Several embedded workers may
run side by side: claims never overlap (SKIP LOCKED; SQLite's single writer).
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

log = logging.getLogger("humanglue.worker")

HEARTBEAT_EVERY = 5.0


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
        now = time.monotonic()
        if not force and now - self._last < HEARTBEAT_EVERY:
            return
        self._last = now
        try:
            with self.engine.begin() as conn:
                outbox.heartbeat(conn, self.id, self.kind, socket.gethostname(), os.getpid(),
                                 self.processed)
        except sa.exc.DBAPIError as error:
            log.warning("heartbeat failed: %s", str(error.orig or error).splitlines()[0])

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


def run(engine: sa.Engine, stop: threading.Event, *, poll_interval: float | None = None,
        batch_size: int = pipeline.BATCH_SIZE,
        on_batch: Callable[[pipeline.BatchResult], None] | None = None) -> None:
    """Process events until `stop` is set; database outages are waited out with backoff."""
    interval = poll_interval if poll_interval is not None else default_poll_interval(engine)
    heartbeat = Heartbeat(engine, "embedded")
    delay = 0.5
    try:
        while not stop.is_set():
            try:
                heartbeat.beat()
                if first_due(engine) is not None:
                    result = pipeline.drain(engine, batch_size, should_stop=stop.is_set)
                    heartbeat.processed += result.processed
                    if on_batch and result.claimed:
                        on_batch(result)
                    continue
                delay = 0.5
            except sa.exc.OperationalError as error:
                reason = str(error.orig or error).strip().splitlines()[0]
                log.warning("database unavailable (%s); retrying in %.1fs", reason, delay)
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            stop.wait(interval)
    finally:
        heartbeat.stop()
