"""`humanglue maintenance …`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from humanglue_cli.commands.runtime import Group, runtime

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
    result = maintenance.cleanup(rt.engine, settings, dry_run)
    if json_out or tz is None:
        typer.echo(json.dumps(result))
        return
    render.cleanup_report(result, tz, retention)
