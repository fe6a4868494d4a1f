"""`humanglue db …`: the schema."""

from __future__ import annotations

import logging

import typer

from humanglue_cli.commands.runtime import Group, runtime, status

app = typer.Typer(cls=Group, no_args_is_help=True, help="The database schema.")


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Create or upgrade the schema; running it again changes nothing.

    Example: humanglue --database-url postgresql://localhost/platform db upgrade
    """
    from humanglue_cli.core import migrate
    from humanglue_cli.core.db import create_engine
    from humanglue_cli.core.errors import SchemaError, exit_code_for
    from humanglue_cli.core.urls import describe

    logging.basicConfig(format="humanglue: %(message)s", level=logging.WARNING)
    rt = runtime(ctx)
    engine = create_engine(rt.settings.database_url, create=True)
    try:
        before, after = migrate.upgrade(engine)
    except SchemaError as error:  # names every problem: shown whole, not cut to one screen
        status(str(error))
        raise typer.Exit(exit_code_for(error)) from None
    finally:
        engine.dispose()
    where = describe(rt.settings.database_url)
    if before == after:
        typer.echo(f"schema of {where} is current (revision {after})", err=True)
    else:
        typer.echo(f"schema of {where} upgraded from {before or 'nothing'} to {after}", err=True)
