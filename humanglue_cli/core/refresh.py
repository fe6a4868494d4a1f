"""Follow views (`presence list --follow`): poll a state, turn its changes into events, and
redraw a live view at most four times a second however fast the events come.

The state is read again every `every` seconds (a poll reads the database's clock, so a
device that stops beating drops out once its timeout passes, with no sweep running).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

S = TypeVar("S")
E = TypeVar("E")

MAX_REDRAWS_PER_SECOND = 4.0


class Throttle:
    """At most `per_second` redraws a second: `request()` marks the view stale, `draw_if_due`
    draws it when the last redraw is old enough."""

    def __init__(
        self,
        per_second: float = MAX_REDRAWS_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gap = 1.0 / per_second
        self.clock = clock
        self.last = float("-inf")
        self.stale = False
        self.draws = 0

    def request(self) -> None:
        self.stale = True

    def due_in(self) -> float | None:
        """Seconds until a requested redraw may happen (None: none requested)."""
        if not self.stale:
            return None
        return max(0.0, self.last + self.gap - self.clock())

    def draw_if_due(self, draw: Callable[[], None]) -> bool:
        if self.due_in() != 0.0:
            return False
        draw()
        self.last, self.stale = self.clock(), False
        self.draws += 1
        return True


def run(
    poll: Callable[[], S],
    changes: Callable[[S | None, S], Sequence[E]],
    stop: threading.Event,
    *,
    emit: Callable[[E], None],
    redraw: Callable[[S], None] | None = None,
    every: float = 0.5,
    idle_timeout: float | None = None,
    max_count: int | None = None,
    on_ready: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Poll until `stop` is set, `max_count` events were emitted, or nothing happened for
    `idle_timeout` seconds; returns how many events were emitted. The first poll's changes
    (from nothing) are emitted too: who is there when the view starts."""
    throttle = Throttle(clock=clock)
    previous: S | None = None
    emitted = 0
    quiet_since = clock()
    while not stop.is_set():
        state = poll()
        events = changes(previous, state)
        if previous is None and on_ready is not None:
            on_ready()
        previous = state
        for event in events:
            emit(event)
            emitted += 1
            if max_count is not None and emitted >= max_count:
                if redraw is not None:
                    redraw(state)
                return emitted
        if events:
            quiet_since = clock()
        if redraw is not None:
            if events or throttle.draws == 0:
                throttle.request()
            throttle.draw_if_due(functools.partial(redraw, state))
        if idle_timeout is not None and clock() - quiet_since >= idle_timeout:
            return emitted
        wait = every
        due = throttle.due_in()
        if due is not None:
            wait = min(wait, due)
        if idle_timeout is not None:
            wait = min(wait, max(0.0, quiet_since + idle_timeout - clock()))
        stop.wait(wait)
    return emitted
