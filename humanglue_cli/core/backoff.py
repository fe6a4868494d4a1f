"""Waiting out a service that is down: capped exponential backoff with jitter, said once.

Used by every long-running loop — the embedded worker, the Celery worker's poller, `tail` — so
that each is back within a second or two of the service's return (the cap), several of them do
not reconnect in lockstep (the jitter), and an outage is one line when it starts, a reminder
now and then, and one line when it ends — never a line per attempt, never a traceback.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from humanglue_cli.core.errors import HumanGlueError, first_line

log = logging.getLogger("humanglue.worker")

FIRST, CAP = 0.25, 2.0
REMIND_EVERY = 60.0


def _log(message: str) -> None:
    log.warning("%s", message)


class Backoff:
    """Delays between attempts to reach `what`, and what to say about it."""

    def __init__(
        self,
        what: str = "database",
        *,
        first: float = FIRST,
        cap: float = CAP,
        say: Callable[[str], None] = _log,
    ) -> None:
        self.what, self.first, self.cap, self.say = what, first, cap, say
        self.failures = 0
        self.since: float | None = None
        self._reminded = 0.0

    @property
    def failing(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException) -> float:
        """Record a failed attempt; returns the seconds to wait before the next one."""
        now = time.monotonic()
        ceiling = min(self.cap, self.first * 2**self.failures)
        delay: float = ceiling / 2 + random.uniform(0, ceiling / 2)  # "equal jitter"
        self.failures += 1
        reason = str(error) if isinstance(error, HumanGlueError) else first_line(error)
        if self.since is None:
            self.since = self._reminded = now
            self.say(f"{self.what} unavailable ({reason}); retrying every {self.cap:g}s at most")
        elif now - self._reminded >= REMIND_EVERY:
            self._reminded = now
            self.say(f"{self.what} still unavailable after {now - self.since:.0f}s ({reason})")
        return delay

    def ok(self) -> None:
        """The service answered: say so if it had not, and start over."""
        if self.since is not None:
            self.say(f"{self.what} reachable again after {time.monotonic() - self.since:.1f}s")
        self.since, self.failures = None, 0
