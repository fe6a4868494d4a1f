"""The `humanglue` command: global options (CONTRACT §2) and its sub-commands."""

from __future__ import annotations

from typing import Annotated

import typer

from humanglue_cli import __version__
from humanglue_cli.commands import (
    access,
    db,
    demo,
    events,
    live,
    maintenance,
    notifications,
    presence,
    stats,
    status,
    worker,
)
from humanglue_cli.commands.runtime import Group, Runtime

app = typer.Typer(
    cls=Group,
    name="humanglue",
    help="Real-time notifications for the HumanGlue course platform.\n\n"
    "Example: humanglue --user ada@example.edu notifications list --unread",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"humanglue {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="SQLAlchemy URL [env HUMANGLUE_DATABASE_URL; default: SQLite "
            "in the user data dir]",
            show_default=False,
        ),
    ] = None,
    broker_url: Annotated[
        str | None,
        typer.Option(
            "--broker-url",
            help="Celery broker, e.g. redis://localhost:6379/0 "
            "[env HUMANGLUE_BROKER_URL; default: none, the embedded worker]",
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--user", "-u", help="acting user, email or id [env HUMANGLUE_USER]"),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="config file [env HUMANGLUE_CONFIG; default: "
            "$XDG_CONFIG_HOME/humanglue/config.toml]",
        ),
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option("--tz", help="display time zone [env HUMANGLUE_TZ; default: the system's]"),
    ] = None,
    presence_timeout: Annotated[
        str | None,
        typer.Option(
            "--presence-timeout",
            help="a device is online while it beat within this [env HUMANGLUE_PRESENCE_TIMEOUT; "
            "default: 60s]",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Real-time notifications for the HumanGlue course platform."""
    ctx.obj = Runtime(
        flags={
            "database_url": database_url,
            "broker_url": broker_url,
            "user": user,
            "config": config,
            "tz": tz,
            "presence_timeout": presence_timeout,
        }
    )


app.add_typer(db.app, name="db")
app.add_typer(notifications.app, name="notifications")
app.add_typer(maintenance.app, name="maintenance")
app.add_typer(events.app, name="events")
app.add_typer(access.app, name="access")
app.add_typer(presence.app, name="presence")
app.command("worker")(worker.worker)
app.command("beat")(worker.beat)
app.command("status")(status.status)
app.command("activity")(live.activity)
app.command("broadcast")(live.broadcast)
app.command("stats")(stats.stats)
app.command("demo")(demo.demo)
