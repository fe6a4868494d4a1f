"""`humanglue status`: is everything healthy?"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from humanglue_cli.commands.runtime import is_terminal, runtime

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
    checks.insert(1, broker_check(settings.broker_url))
    report = health.Report(checks)
    if json_out:
        typer.echo(json.dumps(report.to_json()))
    else:
        colour = is_terminal()
        for check in report.checks:
            mark, fg = MARKS[check.state]
            shown = typer.style(f"{mark:<4}", fg=fg, bold=True) if colour and fg else f"{mark:<4}"
            typer.echo(f"{shown}  {check.name.replace('_', ' '):<14} {check.message}")
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
    """Redis answers PING (other brokers: their port accepts a connection)."""
    from humanglue_cli.core.health import Check

    if not url:
        return Check(
            "broker",
            "ok",
            "none configured: the embedded worker",
            {"configured": False, "url": None},
        )
    shown = _hide_password(url)
    data = {"configured": True, "url": shown}
    try:
        _probe(url)
    except Exception as error:  # any failure to answer means: unreachable
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return Check("broker", "fail", f"cannot reach {shown}: {reason}", data)
    return Check("broker", "ok", f"{shown} reachable", data)


def _probe(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        import redis

        client = redis.Redis.from_url(
            url, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT
        )
        try:
            client.ping()
        finally:
            client.close()
        return
    default_port = {"amqp": 5672, "amqps": 5671}.get(parts.scheme)
    port = parts.port or default_port
    if not parts.hostname or not port:
        raise ValueError(f"cannot probe a {parts.scheme or 'schemeless'} broker URL")
    socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT).close()


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
