"""The `humanglue` command: global options (CONTRACT §2) and its sub-commands."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any

import typer

from humanglue_cli import __version__
from humanglue_cli.commands.runtime import Group, Runtime

# Every command: its module and attribute (a function, or a Typer of subcommands), and the
# first sentence of its help. `humanglue --help` lists them from here, and a command's module
# is imported — and its options built — only when that command runs: typer builds a command
# by evaluating every parameter's annotations, which cost more than the rest of a start-up
# (issue 10). tests/test_docs.py checks this table against the commands themselves.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "worker": (
        "worker",
        "worker",
        "Process domain events into notifications (Celery on the broker, or embedded).",
    ),
    "beat": (
        "worker",
        "beat",
        "Run Celery beat (optional: every worker runs the schedule; a tick still runs once).",
    ),
    "status": (
        "status",
        "status",
        "Report database, broker, schema, backlog and workers; exit 1 if anything is unhealthy.",
    ),
    "activity": (
        "live",
        "activity",
        (
            "What your students do in the courses and workshops you teach: enrollments, "
            "completions, registrations and check-ins, reviews, questions, payments, lessons and "
            "quizzes — oldest first, then live with --follow."
        ),
    ),
    "broadcast": (
        "live",
        "broadcast",
        (
            "Send an ephemeral message to the instructors of a course or workshop: it shows in "
            "their running tails at once, is never a notification, and is gone after a minute. "
            "For its instructors and admins; at most HUMANGLUE_BROADCAST_RATE a minute (default "
            "30)."
        ),
    ),
    "stats": (
        "stats",
        "stats",
        (
            "Enrollments, completion, ratings, revenue and who is online, per course and workshop"
            " you teach (an admin: all); --follow keeps it live."
        ),
    ),
    "demo": (
        "demo",
        "demo",
        "Tour the tool: a sample platform, simulated activity, notifications live.",
    ),
    "db": ("db", "app", "The database schema."),
    "notifications": ("notifications", "app", "Your notifications."),
    "maintenance": ("maintenance", "app", "Scheduled maintenance (cron runs it)."),
    "events": ("events", "app", "The event outbox: failed events and their retry."),
    "access": ("access", "app", "Personal database logins (PostgreSQL; operators)."),
    "presence": ("presence", "app", "Who is online in courses and workshops."),
}


def load_command(name: str) -> typer.core.TyperCommand | typer.core.TyperGroup:
    """The click command `name` of COMMANDS, built as `add_typer`/`command` would."""
    import importlib

    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(f"humanglue_cli.commands.{module}"), attribute)
    holder = typer.Typer(cls=Group, rich_markup_mode=None, add_completion=False)
    holder.callback()(_nothing)  # a group, whatever it holds
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    command = typer.main.get_group(holder).commands[name]
    assert isinstance(command, (typer.core.TyperCommand, typer.core.TyperGroup))
    return command


def _nothing() -> None:
    pass


class _Lazy(MutableMapping[str, Any]):
    """The root's commands by name: each built on first use (see COMMANDS)."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            if name not in COMMANDS:
                raise KeyError(name)
            self._built[name] = load_command(name)
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(COMMANDS), **self._built})

    def __len__(self) -> int:
        return len({**dict.fromkeys(COMMANDS), **self._built})


class Root(Group):
    """`humanglue`: its subcommands built only when used, its help listed from COMMANDS."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _Lazy()

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:
        from typer._click.utils import make_default_short_help

        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [
            (name, make_default_short_help(help, limit)) for name, (_, _, help) in COMMANDS.items()
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    cls=Root,
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
