"""`humanglue worker`: turn domain events into notifications."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Annotated

import typer

from humanglue_cli.commands.runtime import runtime
from humanglue_cli.core.errors import SomeEventsFailed


def worker(
    ctx: typer.Context,
    burst: Annotated[bool, typer.Option(
        "--burst", help="process everything due, then exit (1 if some event failed)")] = False,
    concurrency: Annotated[int, typer.Option(
        "--concurrency", "-c", min=1, max=64, help="Celery worker threads")] = 2,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, max=5000, help="events claimed per transaction")] = 200,
    json_out: Annotated[bool, typer.Option("--json", help="print the --burst result as JSON")]
    = False,
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


def _burst(engine: object, batch_size: int, json_out: bool) -> None:
    from humanglue_cli.core import pipeline
    from humanglue_cli.core.db import wrap_errors

    with wrap_errors(engine):  # type: ignore[arg-type]
        result = pipeline.drain(engine, batch_size)  # type: ignore[arg-type]
    if json_out:
        typer.echo(json.dumps({"processed": result.processed, "failed": result.failed}))
    else:
        typer.echo(f"processed {result.processed} events, {result.notified} notifications, "
                   f"{result.failed} failed", err=True)
    if result.failed:
        raise SomeEventsFailed(
            f"{result.failed} event(s) failed and are kept for retry: "
            "see `humanglue events failed`")


def _exec_celery(database_url: str, broker_url: str, concurrency: int) -> None:
    """Become a Celery worker (the CLI never imports the `worker` package itself)."""
    env = dict(os.environ, HUMANGLUE_DATABASE_URL=database_url, HUMANGLUE_BROKER_URL=broker_url)
    argv = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "threads",
            "--concurrency", str(concurrency), "--loglevel", "INFO", "-Q", "humanglue",
            "--without-gossip", "--without-mingle"]
    typer.echo(f"humanglue: starting a Celery worker on {_safe(broker_url)}", err=True)
    sys.stdout.flush()
    os.execvpe(sys.executable, argv, env)


def _safe(url: str) -> str:
    from humanglue_cli.core.db import describe

    return describe(url)


def _embedded(engine: object, batch_size: int) -> None:
    import logging

    from humanglue_cli.core import embedded
    from humanglue_cli.core.db import describe

    logging.basicConfig(format="humanglue: %(message)s", level=logging.INFO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    typer.echo(f"humanglue: embedded worker on {describe(engine.url)} "  # type: ignore[attr-defined]
               "(no broker configured); Ctrl-C stops it", err=True)
    embedded.run(engine, stop, batch_size=batch_size,  # type: ignore[arg-type]
                 on_batch=lambda r: logging.getLogger("humanglue.worker").info(
                     "processed %d events, %d notifications, %d failed",
                     r.processed, r.notified, r.failed))
