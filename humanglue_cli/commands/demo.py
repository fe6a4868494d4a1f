"""`humanglue demo`: the embedded-default tour."""

from __future__ import annotations

import typer


def demo(ctx: typer.Context) -> None:
    """Tour the tool on a sample platform of its own."""
    raise NotImplementedError
