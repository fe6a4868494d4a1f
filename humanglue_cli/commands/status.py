"""`humanglue status`: is everything healthy?"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from humanglue_cli.commands.runtime import is_terminal, runtime, warn_if_exposed
from humanglue_cli.core.text import printable

if TYPE_CHECKING:
    from humanglue_cli.core.health import Check

PROBE_TIMEOUT = 2.0  # seconds: a broker that takes longer to answer PING is not healthy
MARKS = {
    "ok": ("ok", "green"),
    "warn": ("warn", "yellow"),
    "fail": ("FAIL", "red"),
    "skip": ("-", None),
}


def status(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Report database, broker, schema, backlog and workers; exit 1 if anything is unhealthy.

    Example: humanglue status --json
    """
    from humanglue_cli.core import health

    settings = runtime(ctx).settings
    checks = health.database_checks(settings.database_url)
    warn_if_exposed(settings)
    checks.insert(1, broker_check(settings.broker_url))  # both validated: bad ones are exit 2
    report = health.Report(checks)
    if json_out:
        typer.echo(json.dumps(report.to_json()))
    else:
        colour = is_terminal()
        for check in report.checks:
            mark, fg = MARKS[check.state]
            shown = typer.style(f"{mark:<4}", fg=fg, bold=True) if colour and fg else f"{mark:<4}"
            message = printable(check.message, newlines=False)
            typer.echo(f"{shown}  {check.name.replace('_', ' '):<14} {message}")
        typer.echo(_verdict(report.checks))
    if not report.healthy:
        raise typer.Exit(1)


def _verdict(checks: list[Check]) -> str:
    failing = [c.name.replace("_", " ") for c in checks if c.state == "fail"]
    warnings = sum(c.state == "warn" for c in checks)
    if failing:
        return f"UNHEALTHY: {', '.join(failing)}"
    return f"healthy ({warnings} warning{'s' * (warnings != 1)})" if warnings else "healthy"


def broker_check(url: str | None) -> Check:
    """Redis answers PING within PROBE_TIMEOUT."""
    from humanglue_cli.core.errors import first_line
    from humanglue_cli.core.health import Check
    from humanglue_cli.core.urls import describe

    if not url:
        return Check(
            "broker",
            "ok",
            "none configured: the embedded worker",
            {"configured": False, "url": None},
        )
    shown = describe(url)
    data = {"configured": True, "url": shown}
    try:
        _probe(url)
    except Exception as error:  # any failure to answer means: unreachable
        return Check("broker", "fail", f"cannot reach {shown}: {first_line(error)}", data)
    return Check("broker", "ok", f"{shown} reachable", data)


def _probe(url: str) -> None:
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT
    )
    try:
        client.ping()
    finally:
        client.close()
