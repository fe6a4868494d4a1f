"""`humanglue demo`: the embedded-default tour, on a database file of its own."""

from __future__ import annotations

import contextlib
import functools
import shlex
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from humanglue_cli.commands.runtime import is_terminal, status
from humanglue_cli.core.text import one_line

if TYPE_CHECKING:
    import sqlalchemy as sa

    from humanglue_cli.core.demo import Cast
    from humanglue_cli.core.domain import Notification

PACE = 2.0  # seconds between two platform changes at --speed 1
LOOK_BACK = timedelta(seconds=5)  # the last look re-reads this far back before the start


def demo(
    ctx: typer.Context,
    seconds: Annotated[
        float, typer.Option("--seconds", help="how long the simulated activity lasts")
    ] = 60.0,
    speed: Annotated[
        float, typer.Option("--speed", help="changes per 2 seconds (2 = twice as busy)")
    ] = 1.0,
) -> None:
    """Tour the tool: a sample platform, simulated activity, notifications live.

    Runs on a new SQLite file of its own (never your configured database) and ends by
    itself; Ctrl-C ends it early. Example: humanglue demo --seconds 30 --speed 2
    """
    from humanglue_cli.core import demo as sample
    from humanglue_cli.core import migrate
    from humanglue_cli.core.db import create_engine
    from humanglue_cli.core.errors import BadInput

    if not 0 < seconds <= 86400 or not 0.1 <= speed <= 100:
        raise BadInput("--seconds must be above 0 (up to 86400), --speed from 0.1 to 100")
    path = sample.new_database_path()
    _say(f"demo database: {path} (your configured database is not touched)")
    stop = threading.Event()
    handlers = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    engine = create_engine(f"sqlite:///{path}", create=True)
    try:
        migrate.upgrade(engine)
        cast = sample.build_platform(engine)
        shown = _run(engine, cast, seconds, PACE / speed, stop)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        engine.dispose()
    _closing(path, cast, shown, interrupted=stop.is_set())


def _say(text: str) -> None:
    status(text)


def _run(
    engine: sa.Engine, cast: Cast, seconds: float, interval: float, stop: threading.Event
) -> int:
    """The platform in one thread, the worker in another; the owner's inbox followed here."""
    from humanglue_cli.core import runner, tail
    from humanglue_cli.core.domain import Broadcast
    from humanglue_cli.core.store import notifications as inbox

    courses = " and ".join(title for title, _ in cast.courses.values())
    _say(
        f"sample platform: {cast.owner.name} teaches {courses} (co-instructor "
        f"{cast.co_instructor.name}); {len(cast.students)} students"
    )
    worker_stop, feed_stop = threading.Event(), threading.Event()
    worker = threading.Thread(
        target=runner.run, args=(engine, worker_stop), name="humanglue-demo-worker", daemon=True
    )
    worker.start()
    _say(f"embedded worker started; {seconds:g}s of platform activity, Ctrl-C ends it early")
    _say(f"{cast.owner.name}'s notifications, as they arrive:")
    printer = _Printer()
    platform = _Platform(engine, cast, seconds, interval, stop, feed_stop)
    read = functools.partial(_read, engine)
    try:
        platform.start()
        # A backlog larger than the demo ever makes: whatever came before the first look is
        # shown too, so no notification is taken for "already there".
        arrivals = tail.follow(
            read,
            cast.owner.id,
            inbox.Filters(),
            feed_stop,
            start=tail.Start(last=1000),
            on_status=_say,
        )
        for n, _ in arrivals:
            if not isinstance(n, Broadcast):  # (none asked for)
                printer.show(n)
        platform.join()
        with read() as conn:  # the last look, after the worker has settled
            for n in inbox.created_since(
                conn, cast.owner.id, inbox.Filters(), printer.started - LOOK_BACK
            ):
                printer.show(n)
    finally:
        feed_stop.set()
        platform.join()
        worker_stop.set()
        worker.join(timeout=10)
    if platform.error is not None:
        raise platform.error
    return len(printer.seen)


@contextlib.contextmanager
def _read(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A read-only connection in a short transaction (never blocks a writer on SQLite)."""
    from humanglue_cli.core.db import reading

    with reading(engine) as conn:
        yield conn


class _Platform(threading.Thread):
    """Makes a change every `interval` until the time is up (or Ctrl-C), then lets the
    worker settle and ends the follow."""

    def __init__(
        self,
        engine: sa.Engine,
        cast: Cast,
        seconds: float,
        interval: float,
        stop: threading.Event,
        done: threading.Event,
    ) -> None:
        from humanglue_cli.core import demo as sample

        super().__init__(name="humanglue-demo-platform", daemon=True)
        self.engine, self.seconds, self.interval = engine, seconds, interval
        self.stop, self.done = stop, done
        self.simulation = sample.Simulation(engine, cast)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + self.seconds
            next_change = time.monotonic()
            while not (self.stop.is_set() or self.done.is_set()):
                now = time.monotonic()
                if now >= deadline:
                    break
                if now >= next_change:
                    typer.echo(f"  platform: {self.simulation.step()}", err=True)
                    next_change += self.interval
                self.stop.wait(max(min(next_change, deadline) - time.monotonic(), 0))
            _settle(self.engine)
        except BaseException as error:  # re-raised by the main thread
            self.error = error
        finally:
            self.done.set()


def _settle(engine: sa.Engine, timeout: float = 5.0) -> None:
    """Give the worker the moment it needs for the last changes (nothing due, or timeout)."""
    from humanglue_cli.core import runner

    deadline = time.monotonic() + timeout
    while runner.first_due(engine) is not None and time.monotonic() < deadline:
        time.sleep(0.02)


class _Printer:
    """Prints each notification once, as `+m:ss  id  type  title`."""

    def __init__(self) -> None:
        self.started = datetime.now(UTC)
        self.seen: set[str] = set()
        self.colour = is_terminal()

    def show(self, n: Notification) -> None:
        if n.id in self.seen:
            return
        self.seen.add(n.id)
        elapsed = max(int((n.created_at - self.started).total_seconds()), 0)
        kind = f"{n.type:<22}"
        if self.colour:
            kind = typer.style(kind, fg="cyan")
        typer.echo(f"+{elapsed // 60}:{elapsed % 60:02d}  {n.id[:8]}  {kind} {one_line(n.title)}")


def _closing(path: Path, cast: Cast, shown: int, interrupted: bool) -> None:
    from humanglue_cli.core import demo as sample

    url = shlex.quote(f"sqlite:///{path}")
    how = "stopped early" if interrupted else "over"
    _say(f"the demo is {how}: {shown} notifications for {cast.owner.name}, kept in {path}")
    owner = f"humanglue --database-url {url} --user {sample.OWNER_EMAIL}"
    lines = [
        "Go on with that database:",
        f"  {owner} notifications list",
        f"  {owner} notifications tail",
        f"  {owner} notifications read ID      (ID: from the list, or its first 8 characters)",
        f"  {owner} notifications count",
        f"  humanglue --database-url {url} --user {sample.CO_INSTRUCTOR_EMAIL} notifications list",
        f"  humanglue --database-url {url} worker     (turns new platform writes into "
        "notifications)",
        f"  humanglue --database-url {url} status",
        f"Or once for the shell: export HUMANGLUE_DATABASE_URL={url} "
        f"HUMANGLUE_USER={sample.OWNER_EMAIL}",
    ]
    typer.echo("\n".join(lines), err=True)
