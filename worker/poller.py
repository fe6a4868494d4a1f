"""A worker bootstep that turns plain-SQL writes into wake-ups, with no beat and no NOTIFY.

Every `interval` it probes the outbox's due index. When there is work it publishes a
`process_events` message — again whenever the oldest due event changes (progress, or new
work after idle) and at least every REDISPATCH seconds while work is waiting, which is the
sweep that re-dispatches what the broker lost (a Redis restart, a killed worker's message).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import bootsteps

from humanglue_cli.core import embedded

log = logging.getLogger("humanglue.worker")

REDISPATCH = 1.0


class OutboxPoller(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        self._thread = threading.Thread(target=self._run, args=(parent.app,),
                                        name="humanglue-poller", daemon=True)
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, app: Any) -> None:
        from worker.engine import engine

        db = engine()
        interval = embedded.default_poll_interval(db)
        heartbeat = embedded.Heartbeat(db, "celery")
        last_due: int | None = None
        last_sent = 0.0
        while not self._stop.is_set():
            try:
                heartbeat.beat()
                due = embedded.first_due(db)
                now = time.monotonic()
                if due is not None and (due != last_due or now - last_sent > REDISPATCH):
                    app.send_task("humanglue.process_events", retry=False)
                    last_due, last_sent = due, now
                elif due is None:
                    last_due = None
            except Exception as error:  # broker or database down: say so, keep polling
                log.warning("poller: %s: %s", type(error).__name__, str(error).splitlines()[0])
                self._stop.wait(0.5)
            self._stop.wait(interval)
        heartbeat.stop()
