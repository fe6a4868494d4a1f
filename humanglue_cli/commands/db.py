"""`humanglue db …`: the schema."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from humanglue_cli.commands.runtime import Group, runtime, status, warn_if_exposed

if TYPE_CHECKING:
    from humanglue_cli.core.migrate import Outcome

app = typer.Typer(cls=Group, no_args_is_help=True, help="The database schema.")


@app.command()
def upgrade(
    ctx: typer.Context,
    sql: Annotated[
        bool, typer.Option("--sql", help="print the DDL it would run, and change nothing")
    ] = False,
) -> None:
    """Create or upgrade the schema; running it again changes nothing.

    Example: humanglue --database-url postgresql://db/platform db upgrade --sql
    """
    import logging

    from humanglue_cli.core import migrate
    from humanglue_cli.core.db import create_engine, wrap_errors
    from humanglue_cli.core.errors import SchemaError, exit_code_for
    from humanglue_cli.core.store import stats
    from humanglue_cli.core.urls import describe

    logging.basicConfig(format="humanglue: %(message)s", level=logging.WARNING)
    settings = runtime(ctx).settings
    url = settings.database_url
    warn_if_exposed(settings)
    timeout = settings.presence_timeout  # a bad one is exit 2 before anything is done
    engine = migrate.planning_engine(url) if sql else create_engine(url, create=True)
    try:
        outcome = migrate.run(engine, plan=sql)
        if not sql:  # the timeout the live stats views count online people with
            with wrap_errors(engine), engine.begin() as conn:
                stats.set_presence_timeout(conn, timeout)
    except SchemaError as error:  # names every problem: shown whole, not cut to one screen
        status(str(error))
        raise typer.Exit(exit_code_for(error)) from None
    finally:
        engine.dispose()
    for statement in outcome.statements:
        typer.echo(f"{statement};\n")
    for line in _report(outcome, sql):
        status(line)
    status(_summary(outcome, describe(url), sql))


_PHRASES = {  # (done, planned)
    "created": ("created table {}", "would create table {}"),
    "adopted": (
        "adopted the platform's table {} (columns checked)",
        "would adopt the platform's table {} (columns checked)",
    ),
    "adopted+": (
        "adopted the platform's table {} (columns checked, triggers added)",
        "would adopt the platform's table {} (columns checked, triggers to add)",
    ),
    "triggers": ("added triggers to table {}", "would add triggers to table {}"),
    "column": ("added column {}", "would add column {}"),
    "view": ("created view {}", "would create view {}"),
    "index-deferred": (
        "left an index on a large platform table to you (without blocking its writes): {}",
        "would leave an index on a large platform table to you (without blocking its writes): {}",
    ),
    "function-plain": (
        "not a superuser: the people's `list --course` cannot use its index until a superuser "
        "runs: {}",
        "not a superuser: the people's `list --course` could not use its index until a "
        "superuser runs: {}",
    ),
    "policies": (
        "added row-level security for HumanGlue's people to table {}",
        "would add row-level security for HumanGlue's people to table {}",
    ),
    "roles": (
        "created roles {0}_people, {0}_operator, {0}_worker and {0}_admin",
        "would create roles {0}_people, {0}_operator, {0}_worker and {0}_admin",
    ),
}


def _report(outcome: Outcome, planned: bool) -> list[str]:
    """One line per table created or adopted, and per column or triggers added to another."""
    created = {name for kind, name in outcome.notes if kind == "created"}
    adopted = {name for kind, name in outcome.notes if kind == "adopted"}
    triggered = {name for kind, name in outcome.notes if kind == "triggers"}
    lines = []
    for kind, name in outcome.notes:
        table = name.split(".")[0]
        if kind in ("triggers", "column") and table in created | adopted:
            continue  # said already: a table created or adopted in this run
        phrase = "adopted+" if kind == "adopted" and name in triggered else kind
        lines.append(_PHRASES[phrase][planned].format(name))
    return lines


def _summary(outcome: Outcome, where: str, planned: bool) -> str:
    before, after = outcome.before or "nothing", outcome.after
    if outcome.before == outcome.after:
        return f"schema of {where} is current (revision {after})"
    if planned:
        return f"nothing was changed; the printed DDL upgrades {where} from {before} to {after}"
    return f"schema of {where} upgraded from {before} to {after}"
