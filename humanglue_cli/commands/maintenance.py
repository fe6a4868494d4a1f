"""`humanglue maintenance …`."""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from humanglue_cli.commands.runtime import Group, runtime, status

app = typer.Typer(cls=Group, no_args_is_help=True, help="Scheduled maintenance (cron runs it).")


@app.command()
def cleanup(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would be deleted, delete nothing")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON (CONTRACT §3)")] = False,
) -> None:
    """Delete what is past its retention: notifications, offline presence, our own records.

    Example: HUMANGLUE_NOTIFICATION_RETENTION=90d humanglue maintenance cleanup --dry-run
    """
    from humanglue_cli.commands import render
    from humanglue_cli.core import maintenance
    from humanglue_cli.core.timeutil import exact

    rt = runtime(ctx)
    settings = rt.settings
    retention = {
        "notifications": exact(settings.notification_retention),
        "presence": exact(settings.presence_retention),
    }
    tz = rt.tz if not json_out else None
    bar = _Bar() if sys.stderr.isatty() and not json_out and not dry_run else None
    try:
        with bar or contextlib.nullcontext():
            result = maintenance.cleanup(rt.engine, settings, dry_run, bar.update if bar else None)
    except maintenance.Busy:
        status("another cleanup is running; this one does nothing")
        return
    if json_out or tz is None:
        typer.echo(json.dumps(result))
        return
    render.cleanup_report(result, tz, retention)


class _Bar:
    """A rich progress bar on stderr, one line per table (a terminal only)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self.progress = Progress(console=Console(stderr=True), transient=True)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def update(self, name: str, done: int, total: int) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total)
        self.progress.update(self.tasks[name], completed=done, total=total)


@app.command()
def schedule(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON (CONTRACT §8)")] = False,
) -> None:
    """Show each scheduled job, its cron expression and its next three runs.

    Example: HUMANGLUE_CLEANUP_SCHEDULE='0 4 * * *' humanglue maintenance schedule
    """
    from humanglue_cli.core import schedule as jobs_of

    rt = runtime(ctx)
    jobs = jobs_of.jobs(rt.settings)
    now = datetime.now(UTC)
    if json_out:
        items = [
            {
                "name": job.name,
                "schedule": job.expression,
                "next_runs": [t.astimezone(UTC).isoformat() for t in job.next_runs(now, 3)],
            }
            for job in jobs
        ]
        typer.echo(json.dumps({"jobs": items}))
        return
    tz = rt.tz
    for job in jobs:
        runs = ", ".join(
            t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z") for t in job.next_runs(now, 3)
        )
        typer.echo(f"{job.name:<15} {job.expression:<15} ({job.zone.key})  next: {runs}")


@app.command()
def runs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="how many")] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON (CONTRACT §8)")] = False,
) -> None:
    """List maintenance runs, newest first: job, tick, start, end, what was deleted.

    Example: humanglue maintenance runs --limit 5 --json
    """
    from humanglue_cli.core.db import wrap_errors
    from humanglue_cli.core.store import runs as store

    rt = runtime(ctx)
    with wrap_errors(rt.engine), rt.engine.connect() as conn:
        rows = store.recent(conn, limit)
    items = [
        {
            "job": row.task,
            "scheduled_for": _iso(row.scheduled_for),
            "started_at": _iso(row.ran_at),
            "finished_at": _iso(row.finished_at),
            "deleted": (row.result or {}).get("deleted", {}),
        }
        for row in rows
    ]
    if json_out:
        typer.echo(json.dumps({"items": items}))
        return
    if not items:
        status("no maintenance runs yet: the workers run the schedule (`maintenance schedule`)")
    tz = rt.tz
    for item, row in zip(items, rows, strict=True):
        tick = (
            row.scheduled_for.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
            if row.scheduled_for
            else "by hand"
        )
        if row.finished_at:
            took = f"{(row.finished_at - row.ran_at).total_seconds():.2f}s"
        else:  # a run whose lease ran out was cut short: the next run deletes the rest
            took = "running" if row.lease_until > datetime.now(UTC) else "cut short"
        deleted = ", ".join(f"{v} {k}" for k, v in item["deleted"].items() if v) or "nothing"
        swept = (row.result or {}).get("swept")
        extra = f", swept {swept} offline" if swept else ""
        typer.echo(f"{row.task:<15} {tick:<19} took {took:<9} deleted {deleted}{extra}")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
