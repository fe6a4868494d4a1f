"""`humanglue worker`: turn domain events into notifications."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from humanglue_cli.commands.runtime import runtime
from humanglue_cli.core.errors import SomeEventsFailed

if TYPE_CHECKING:
    import sqlalchemy as sa


def worker(
    ctx: typer.Context,
    burst: Annotated[
        bool,
        typer.Option("--burst", help="process everything due, then exit (1 if some event failed)"),
    ] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=64, help="Celery worker threads")
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
    if burst:
        _burst(rt.engine, batch_size, json_out)
    elif settings.broker_url:
        _exec_celery(settings.database_url, settings.broker_url, concurrency)
    else:
        _embedded(rt.engine, batch_size)


def _burst(engine: sa.Engine, batch_size: int, json_out: bool) -> None:
    import logging

    from humanglue_cli.core import pipeline
    from humanglue_cli.core.db import wrap_errors

    logging.basicConfig(format="humanglue: %(message)s", level=logging.WARNING)  # failed events
    with wrap_errors(engine):
        result = pipeline.drain(engine, batch_size)
    if json_out:
        typer.echo(json.dumps({"processed": result.processed, "failed": result.failed}))
    else:
        typer.echo(
            f"processed {result.processed} events, {result.notified} notifications, "
            f"{result.failed} failed",
            err=True,
        )
    if result.failed:
        raise SomeEventsFailed(
            f"{result.failed} event(s) failed and are kept for retry: see `humanglue events failed`"
        )


def _exec_celery(database_url: str, broker_url: str, concurrency: int) -> None:
    """Become a Celery worker (the CLI never imports the `worker` package itself)."""
    from humanglue_cli.core.db import describe

    env = dict(os.environ, HUMANGLUE_DATABASE_URL=database_url, HUMANGLUE_BROKER_URL=broker_url)
    # A node name per process: several workers on one host must not share one (pidbox).
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
        "-Q",
        "humanglue",
        "--hostname",
        f"humanglue-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    typer.echo(f"humanglue: starting a Celery worker on {describe(broker_url)}", err=True)
    sys.stdout.flush()
    # A worker prints no results: its banner and logs belong on stderr (CONTRACT §3).
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    os.execvpe(sys.executable, argv, env)


def _embedded(engine: sa.Engine, batch_size: int) -> None:
    import logging

    from humanglue_cli.core import embedded
    from humanglue_cli.core.db import describe

    logging.basicConfig(format="humanglue: %(message)s", level=logging.INFO)
    log = logging.getLogger("humanglue.worker")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    typer.echo(
        f"humanglue: embedded worker on {describe(engine.url)} "
        "(no broker configured); Ctrl-C stops it",
        err=True,
    )
    embedded.run(
        engine,
        stop,
        batch_size=batch_size,
        on_batch=lambda r: log.info(
            "processed %d events, %d notifications, %d failed", r.processed, r.notified, r.failed
        ),
    )
    typer.echo("humanglue: worker stopped", err=True)
