"""`humanglue events …`."""

from __future__ import annotations

import typer

from humanglue_cli.commands.runtime import Group

app = typer.Typer(
    cls=Group, no_args_is_help=True, help="The event outbox: failed events and their retry."
)
