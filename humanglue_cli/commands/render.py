"""How results look to people (tables); JSON is printed by the commands themselves."""

from __future__ import annotations

from collections.abc import Sequence

import typer

from humanglue_cli.core.inbox import Notification


def notification_table(items: Sequence[Notification], tz: str | None) -> None:
    if not items:
        typer.echo("no notifications", err=True)
        return
    for n in items:
        mark = "●" if not n.read else " "
        typer.echo(f"{mark} {n.id[:8]}  {n.created_at:%Y-%m-%d %H:%M}  {n.type:<22} {n.title}")
