"""`humanglue worker` and `humanglue beat`: turn domain events into notifications."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Annotated

import typer

from humanglue_cli.commands.runtime import Runtime, runtime, status
from humanglue_cli.core.errors import SomeEventsFailed

if TYPE_CHECKING:
    import sqlalchemy as sa

    from humanglue_cli.core.settings import Settings

SAY_ASIDE_EVERY = 60.0  # seconds between two lines about events waiting for a platform lock


def worker(
    ctx: typer.Context,
    burst: Annotated[
        bool, typer.Option("--burst", help="process everything due, then exit (1 if some failed)")
    ] = False,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            max=64,
            help="threads that process events at once (Celery worker, and --burst on PostgreSQL)",
        ),
    ] = 2,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            max=5000,
            help="events claimed per transaction (embedded worker and --burst)",
        ),
    ] = 500,
    json_out: Annotated[
        bool, typer.Option("--json", help="print the --burst result as JSON")
    ] = False,
) -> None:
    """Process domain events into notifications (Celery on the broker, or embedded).

    Example: HUMANGLUE_BROKER_URL=redis://localhost:6379/0 humanglue worker
    """
    rt = runtime(ctx)
    settings = rt.settings
    if not burst:
        from humanglue_cli.core import schedule

        schedule.jobs(settings)  # a bad schedule is exit 2 here, naming it
    _record_presence_timeout(rt)
    if burst:
        _burst(rt.engine, batch_size, concurrency, json_out)
    elif settings.broker_url:
        settings.database_url  # noqa: B018 - a bad one is exit 2 here, not in Celery
        _say_if_unreachable(settings.broker_url)
        _exec_celery(
            rt,
            [
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "-Q",
                "humanglue",
                # A node name per process: workers on one host must not share one.
                "--hostname",
                f"humanglue-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
        )
    else:
        _embedded(rt.engine, settings, batch_size)


def beat(ctx: typer.Context) -> None:
    """Run Celery beat (optional: every worker runs the schedule; a tick still runs once).

    Example: HUMANGLUE_BROKER_URL=redis://localhost:6379/0 humanglue beat
    """
    from humanglue_cli.core.errors import BadInput

    rt = runtime(ctx)
    if not rt.settings.broker_url:
        raise BadInput("beat schedules on a broker: set --broker-url or HUMANGLUE_BROKER_URL")
    rt.settings.database_url  # noqa: B018
    from humanglue_cli.core import schedule

    schedule.jobs(rt.settings)
    # In memory: the database's claims say what ran, so no schedule file is written anywhere.
    _exec_celery(rt, ["beat", "--loglevel", "INFO", "--scheduler", "celery.beat:Scheduler"])


def _record_presence_timeout(rt: Runtime) -> None:
    """Write the resolved HUMANGLUE_PRESENCE_TIMEOUT where the live stats views read it
    (migration 0008). A bad value is exit 2 here; a database that is not there yet (down, or
    not upgraded) is left to the worker's own start, which waits for it and says so (the
    timeout is then recorded by the next start, or by `db upgrade`)."""
    from humanglue_cli.core.db import wrap_errors
    from humanglue_cli.core.errors import Forbidden, SchemaError, Unavailable
    from humanglue_cli.core.store import stats

    timeout = rt.settings.presence_timeout
    engine = rt.engine
    try:
        with wrap_errors(engine), engine.begin() as conn:
            stats.set_presence_timeout(conn, timeout)
    except (Unavailable, SchemaError, Forbidden):
        pass  # the worker's own start says what is wrong, once


def _say_if_unreachable(broker_url: str) -> None:
    """A broker that does not answer is said at once, with the reason (Celery's own retries
    say only "trying again"); the worker starts anyway: it processes the outbox itself until
    the broker answers."""
    from humanglue_cli.commands.status import broker_check

    check = broker_check(broker_url)
    if check.state == "fail":
        status(
            f"{check.message}; starting anyway: the worker processes the outbox itself "
            "until the broker answers"
        )


def _burst(engine: sa.Engine, batch_size: int, threads: int, json_out: bool) -> None:
    import logging

    from humanglue_cli.core import pipeline
    from humanglue_cli.core.db import wrap_errors

    logging.basicConfig(format="humanglue: %(message)s", level=logging.WARNING)  # failed events
    with wrap_errors(engine):
        result = pipeline.drain_parallel(engine, threads, batch_size)
    if json_out:
        typer.echo(json.dumps({"processed": result.processed, "failed": result.failed}))
    else:
        aside = f", {result.set_aside} set aside (a lock)" if result.set_aside else ""
        status(
            f"processed {result.processed} events, {result.notified} notifications, "
            f"{result.failed} failed{aside}"
        )
    if result.failed:
        raise SomeEventsFailed(
            f"{result.failed} event(s) failed and are kept for retry: see `humanglue events failed`"
        )


def _exec_celery(rt: Runtime, args: list[str]) -> None:
    """Become `celery -A worker ARGS` with every setting of ours in its environment (the CLI
    never imports the `worker` package itself)."""
    from humanglue_cli.core.urls import describe

    env = dict(os.environ, **rt.settings.child_env())
    status(f"starting Celery {args[0]} on {describe(rt.settings.broker_url or '')}")
    sys.stdout.flush()
    # A worker prints no results: its banner and logs belong on stderr (CONTRACT §3).
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    os.execvpe(sys.executable, [sys.executable, "-m", "celery", "-A", "worker", *args], env)


def _embedded(engine: sa.Engine, settings: Settings, batch_size: int) -> None:
    import logging

    from humanglue_cli.core import pipeline, runner, schedule
    from humanglue_cli.core.urls import describe

    logging.basicConfig(format="humanglue: %(message)s", level=logging.INFO)
    log = logging.getLogger("humanglue.worker")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    status(f"embedded worker on {describe(engine.url)} (no broker configured); Ctrl-C stops it")
    schedule.Scheduler(engine, settings).start(stop)
    said_aside = -SAY_ASIDE_EVERY

    def progress(r: pipeline.BatchResult) -> None:
        # Events set aside come back every second while the platform holds its lock: that is
        # one problem, said once a minute, not once a second.
        nonlocal said_aside
        aside = ""
        if r.set_aside and time.monotonic() - said_aside >= SAY_ASIDE_EVERY:
            said_aside = time.monotonic()
            aside = f", {r.set_aside} set aside (a row they need is locked; retried each second)"
        if r.processed or r.failed or aside:
            log.info(
                "processed %d events, %d notifications, %d failed%s",
                r.processed,
                r.notified,
                r.failed,
                aside,
            )

    runner.run(engine, stop, batch_size=batch_size, on_batch=progress)
    status("worker stopped")
