"""Being woken when notifications commit: PostgreSQL's LISTEN, or a short sleep elsewhere.

Every transaction that inserts notifications signals the channel once (migration 0005's
statement trigger; NOTIFY folds repeats within a transaction), with no content: a listener
learns only that something committed, and reads what it may see under its own rights. The
signal is a wake-up, never the truth: a reader that missed one (its connection broke) finds
the rows on its next read all the same, and reads on a timer meanwhile.

The listening connection is kept by a thread of its own, which also watches the way to the
server: after HEARTBEAT seconds without a word from it, it asks for one (LISTEN again, a no-op
that shows in pg_stat_activity as the listening it is). No answer within STALL seconds means
the way is stalled — which keepalives miss when the peer still acknowledges (a proxy or a
balancer whose backend vanished) — and then every connection of the engine is cut off
(core/db.sever): a read blocked on one fails at once and is retried by its caller as for any
outage, instead of waiting forever (workers have a `db.Watchdog` of their own for this). The
listener reconnects by itself, and its first answer ends the stall (`db.answered`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import db

CHANNEL = "hg_notifications"  # notifications inserted, or a broadcast sent (0005, 0006)
ACTIVITY_CHANNEL = "hg_activity"  # activity journaled (migration 0006)
SLICE = 0.25  # seconds between looks at `stop` while waiting
RETRY = 1.0  # seconds between attempts to listen again after the connection broke
HEARTBEAT = db.HEARTBEAT  # seconds of silence from the server before it is asked to answer
STALL = db.STALL  # seconds an answer may take before the way to the server is deemed stalled


class Listener:
    """`wait(timeout)` returns early when a notification commits (PostgreSQL), when its
    listening connection is lost or back (a reader should look then), or when `stop` is set.

    `armed` says whether a commit wakes it now; while it is not (SQLite; a broken connection
    not yet replaced), a reader should poll more often.
    """

    def __init__(self, engine: sa.Engine, stop: threading.Event, channel: str = CHANNEL) -> None:
        self.engine = engine
        self.channel = channel
        self.stop = stop
        self.supported = engine.dialect.name == "postgresql"
        self._conn: Any = None  # the thread's, once started
        self._woken = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def armed(self) -> bool:
        return self._conn is not None

    def start(self) -> bool:
        """Listen now, and keep listening in the background; False if it cannot now (it
        keeps trying; the reads will say why, if it matters)."""
        if not self.supported:
            return False
        if self._thread is None:
            self._listen()  # before the caller's first read: what commits after it wakes us
            self._thread = threading.Thread(target=self._keep, name="hg-listener", daemon=True)
            self._thread.start()
        return self.armed

    def wait(self, timeout: float) -> None:
        if self._thread is None:
            self.stop.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._woken.wait(min(SLICE, left)):
                self._woken.clear()
                return

    def close(self) -> None:
        self._closing.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=4 * SLICE)  # one stuck in a connect ends by itself, unseen
        else:
            self._drop()

    # --- the listening thread ---------------------------------------------------------------

    def _listen(self) -> bool:
        conn: Any = None
        try:
            conn = db.connect_directly(self.engine)  # not pooled: it stays listening
            conn.autocommit = True
            with db.deadline(conn, STALL):
                conn.execute(f"LISTEN {self.channel}")
        except Exception:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            return False
        db.answered(self.engine)
        self._conn = conn
        return True

    def _keep(self) -> None:
        heard = time.monotonic()
        while not (self.stop.is_set() or self._closing.is_set()):
            conn = self._conn
            if conn is None:
                if self._closing.wait(RETRY):
                    break
                if self._listen():
                    heard = time.monotonic()
                    self._woken.set()  # let the reader look for what committed meanwhile
                continue
            expired = threading.Event()
            try:
                if any(True for _ in conn.notifies(timeout=SLICE, stop_after=1)):
                    for _ in conn.notifies(timeout=0):  # fold the ones queued behind it
                        pass
                    heard = time.monotonic()
                    self._woken.set()
                elif time.monotonic() - heard >= HEARTBEAT:
                    with db.deadline(conn, STALL) as expired:
                        conn.execute(f"LISTEN {self.channel}")
                    heard = time.monotonic()
                    db.answered(self.engine)
            except Exception:  # the connection broke, or stalled and was cut off
                self._drop()
                if expired.is_set():
                    db.sever(self.engine)  # the reader's connections go the same way
                self._woken.set()  # let the reader look: it meets the outage, or nothing
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
