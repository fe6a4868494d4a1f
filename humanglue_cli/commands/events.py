"""`humanglue events …`: the outbox's failed events, and putting them back (operators)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer

from humanglue_cli.commands.runtime import Group, runtime

app = typer.Typer(
    cls=Group, no_args_is_help=True, help="The event outbox: failed events and their retry."
)

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]
MAX_EVENT_ID = 2**63 - 1


@app.command()
def failed(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", help="at most this many, 1-1000")] = 100,
    json_out: JsonOpt = False,
) -> None:
    """List failed events, oldest first, with their last error.

    Example: humanglue events failed --json
    """
    from humanglue_cli.core import outbox
    from humanglue_cli.core.errors import BadInput

    if not 1 <= limit <= 1000:
        raise BadInput(f"--limit must be between 1 and 1000, not {limit}")
    rt = runtime(ctx)
    with rt.read() as conn:
        rows = outbox.failed_events(conn, limit + 1)
        total = outbox.backlog(conn).failed if len(rows) > limit else len(rows)
    items = [_event_json(r) for r in rows[:limit]]
    if json_out:
        typer.echo(json.dumps({"items": items, "total": total}))
        return
    if not items:
        typer.echo("no failed events", err=True)
        return
    typer.echo(f"{'ID':>8}  {'FAILED AT':<19}  {'KIND':<30}  {'ENTITY':<36}  TRIES  LAST ERROR")
    for r in rows[:limit]:
        typer.echo(
            f"{r.id:>8}  {_local(r.failed_at, rt.settings.tz):<19}  {r.kind:<30}  "
            f"{r.entity_id:<36}  {r.attempts:>5}  {_one_line(r.last_error)}"
        )
    if total > limit:
        typer.echo(f"{total - limit} more: raise --limit (up to 1000)", err=True)


@app.command()
def retry(
    ctx: typer.Context,
    ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ID",
            show_default=False,
            help="ids of failed events (see `humanglue events failed`)",
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="every failed event")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Put failed events back in the queue (all or nothing).

    Example: humanglue events retry 41 42, or humanglue events retry --all
    """
    from humanglue_cli.core import outbox

    event_ids = _parse_ids(ids or [], all_)
    rt = runtime(ctx)
    with rt.write() as conn:
        count = outbox.retry_failed(conn, event_ids)
    if json_out:
        typer.echo(json.dumps({"retried": count}))
    else:
        typer.echo(f"retried {count} event{'s' * (count != 1)}: back in the queue")


def _parse_ids(ids: list[str], all_: bool) -> list[int] | None:
    from humanglue_cli.core.errors import BadInput

    if all_ and ids:
        raise BadInput("give event ids or --all, not both")
    if not all_ and not ids:
        raise BadInput("give the ids of failed events (see `humanglue events failed`), or --all")
    if all_:
        return None
    parsed: list[int] = []
    for text in ids:
        stripped = text.strip()
        if not stripped.isdigit() or not 1 <= int(stripped) <= MAX_EVENT_ID:
            raise BadInput(f"not an event id: {text!r} (event ids are whole numbers)")
        parsed.append(int(stripped))
    return list(dict.fromkeys(parsed))


def _event_json(row: Any) -> dict[str, Any]:
    payload = json.loads(row.payload) if isinstance(row.payload, str) else row.payload
    return {
        "id": str(row.id),
        "kind": row.kind,
        "entity_id": row.entity_id,
        "attempts": row.attempts,
        "created_at": _iso(row.created_at),
        "failed_at": _iso(row.failed_at),
        "last_error": row.last_error,
        "payload": payload,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _local(value: datetime | None, tz: str | None) -> str:
    if value is None:
        return "-"
    if tz:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from humanglue_cli.core.errors import BadInput

        try:
            return f"{value.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M:%S}"
        except (ZoneInfoNotFoundError, ValueError):
            raise BadInput(f"unknown time zone: {tz!r}") from None
    return f"{value.astimezone():%Y-%m-%d %H:%M:%S}"


def _one_line(text: str | None, limit: int = 120) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
