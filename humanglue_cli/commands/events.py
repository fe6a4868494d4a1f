"""`humanglue events …`: the outbox's failed events, and putting them back (operators)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from humanglue_cli.commands.runtime import Group, runtime, status

if TYPE_CHECKING:
    from humanglue_cli.core.store.events import Failed

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
    from humanglue_cli.commands.render import absolute
    from humanglue_cli.core.store import events
    from humanglue_cli.core.store.notifications import check_limit
    from humanglue_cli.core.text import cut, one_line

    check_limit(limit)
    rt = runtime(ctx)
    tz = rt.tz
    with rt.read() as conn:
        rows = events.failed(conn, limit + 1)
        total = events.backlog(conn).failed if len(rows) > limit else len(rows)
    items = [_event_json(r) for r in rows[:limit]]
    if json_out:
        typer.echo(json.dumps({"items": items, "total": total}))
        return
    if not items:
        status("no failed events")
        return
    typer.echo(f"{'ID':>8}  {'FAILED AT':<23}  {'KIND':<30}  {'ENTITY':<36}  TRIES  LAST ERROR")
    for r in rows[:limit]:
        when = absolute(r.failed_at, tz) if r.failed_at else "-"
        typer.echo(
            f"{r.id:>8}  {when:<23}  {cut(one_line(r.kind), 30):<30}  "
            f"{cut(one_line(r.entity_id), 36):<36}  {r.attempts:>5}  "
            f"{cut(one_line(r.last_error or ''), 120)}"
        )
    if total > limit:
        status(f"{total - limit} more: raise --limit (up to 1000)")


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
    from humanglue_cli.core.store import events

    event_ids = _parse_ids(ids or [], all_)
    rt = runtime(ctx)
    with rt.write() as conn:
        count = events.retry_failed(conn, event_ids)
    if json_out:
        typer.echo(json.dumps({"retried": count}))
    else:
        typer.echo(f"retried {count} event{'s' * (count != 1)}: back in the queue")


def _parse_ids(ids: list[str], all_: bool) -> list[int] | None:
    from humanglue_cli.core.errors import BadInput
    from humanglue_cli.core.text import shown

    if all_ and ids:
        raise BadInput("give event ids or --all, not both")
    if not all_ and not ids:
        raise BadInput("give the ids of failed events (see `humanglue events failed`), or --all")
    if all_:
        return None
    parsed: list[int] = []
    for text in ids:
        stripped = text.strip()
        if (
            not (stripped.isascii() and stripped.isdigit())
            or len(stripped) > 19
            or not 1 <= int(stripped) <= MAX_EVENT_ID
        ):
            raise BadInput(f"not an event id: {shown(text)} (event ids are whole numbers)")
        parsed.append(int(stripped))
    return list(dict.fromkeys(parsed))


def _event_json(row: Failed) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "kind": row.kind,
        "entity_id": row.entity_id,
        "attempts": row.attempts,
        "created_at": row.created_at.isoformat(),
        "failed_at": row.failed_at.isoformat() if row.failed_at else None,
        "last_error": row.last_error,
        "payload": row.payload,
    }
