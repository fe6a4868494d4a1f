"""`humanglue status`: is everything healthy?"""

from __future__ import annotations

import typer


def status(ctx: typer.Context) -> None:
    """Report database, broker, schema, backlog and workers; exit 1 if anything is unhealthy."""
    raise NotImplementedError
