"""Being woken when notifications commit: PostgreSQL's LISTEN, or a short sleep elsewhere.

Every transaction that inserts notifications signals the channel once (migration 0005's
statement trigger; NOTIFY folds repeats within a transaction), with no content: a listener
learns only that something committed, and reads what it may see under its own rights. The
signal is a wake-up, never the truth: a reader that missed one (its connection broke) finds
the rows on its next read all the same, and reads on a timer meanwhile.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import sqlalchemy as sa

CHANNEL = "hg_notifications"  # notifications inserted, or a broadcast sent (0005, 0006)
ACTIVITY_CHANNEL = "hg_activity"  # activity journaled (migration 0006)
SLICE = 0.25  # seconds between looks at `stop` while waiting
RETRY = 1.0  # seconds between attempts to listen again after the connection broke


class Listener:
    """`wait(timeout)` returns early when a notification commits (PostgreSQL) or `stop` is set.

    `armed` says whether a commit wakes it now; while it is not (SQLite; a broken connection
    not yet replaced), a reader should poll more often.
    """

    def __init__(self, engine: sa.Engine, stop: threading.Event, channel: str = CHANNEL) -> None:
        self.engine = engine
        self.channel = channel
        self.stop = stop
        self._conn: Any = None
        self._retry_at = 0.0
        self.supported = engine.dialect.name == "postgresql"

    @property
    def armed(self) -> bool:
        return self._conn is not None

    def start(self) -> bool:
        """Listen (again); False if it cannot now (the reads will say why, if it matters)."""
        if not self.supported or self._conn is not None:
            return self.armed
        self._retry_at = time.monotonic() + RETRY
        try:
            raw = self.engine.raw_connection()
            conn: Any = raw.driver_connection
            raw.detach()  # its own connection, never back to the pool still listening
            conn.autocommit = True
            conn.execute(f"LISTEN {self.channel}")
        except Exception:
            return False
        self._conn = conn
        return True

    def wait(self, timeout: float) -> None:
        if self._conn is None:
            if self.supported and time.monotonic() >= self._retry_at:
                self.start()
            if self._conn is None:
                self.stop.wait(timeout)
                return
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                woken = any(
                    True for _ in self._conn.notifies(timeout=min(SLICE, left), stop_after=1)
                )
                if woken:
                    for _ in self._conn.notifies(timeout=0):  # fold the ones queued behind it
                        pass
                    return
            except Exception:  # the connection broke: poll until it is replaced
                self.close()
                return

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
