"""`humanglue notifications …`: the acting user's inbox."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from humanglue_cli.commands.runtime import Group, runtime

app = typer.Typer(cls=Group, no_args_is_help=True, help="Your notifications.")

TypeOpt = Annotated[list[str] | None, typer.Option(
    "--type", "-t", help="only this type (repeatable)", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON (CONTRACT §3)")]


def _filters(unread: bool = False, read: bool = False, types: list[str] | None = None,
             course: str | None = None, since: str | None = None, until: str | None = None):  # type: ignore[no-untyped-def]
    from humanglue_cli.core.errors import BadInput
    from humanglue_cli.core.inbox import Filters
    from humanglue_cli.core.settings import parse_when

    if unread and read:
        raise BadInput("--unread and --read exclude each other")
    return Filters(
        read=True if read else (False if unread else None),
        types=tuple(dict.fromkeys(types or ())),
        course_id=course,
        since=parse_when(since) if since else None,
        until=parse_when(until) if until else None,
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    unread: Annotated[bool, typer.Option("--unread", help="only unread")] = False,
    read: Annotated[bool, typer.Option("--read", help="only read")] = False,
    type_: TypeOpt = None,
    course: Annotated[str | None, typer.Option("--course", help="only about this course id")]
    = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="created at or after: a duration ago (1h, 7d) or ISO-8601")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="created before: a duration ago or ISO-8601")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="page size, 1-1000")] = 20,
    cursor: Annotated[str | None, typer.Option(
        "--cursor", help="continue after a previous page (its next_cursor)")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List your notifications, newest first, a page at a time.

    Example: humanglue -u ada@example.edu notifications list --unread --type review
    """
    from humanglue_cli.commands import render
    from humanglue_cli.core import inbox

    filters = _filters(unread, read, type_, course, since, until)
    if not 1 <= limit <= 1000:
        from humanglue_cli.core.errors import BadInput

        raise BadInput(f"--limit must be between 1 and 1000, not {limit}")
    rt = runtime(ctx)
    with rt.read() as conn:
        user = rt.acting_user(conn)
        page = inbox.list_page(conn, user.id, filters, limit, cursor)
    if json_out:
        typer.echo(json.dumps({"items": [n.to_json() for n in page.items],
                               "next_cursor": page.next_cursor}))
        return
    render.notification_table(page.items, rt.settings.tz)
    if page.next_cursor:
        typer.echo(f"more: --cursor {page.next_cursor}", err=True)


@app.command()
def send(
    ctx: typer.Context,
    to: Annotated[list[str] | None, typer.Option("--to", help="recipient email (repeatable)")]
    = None,
    role: Annotated[str | None, typer.Option(
        "--role", help="everyone with this role: student, instructor, admin")] = None,
    all_: Annotated[bool, typer.Option("--all", help="everyone")] = False,
    title: Annotated[str, typer.Option("--title", help="the announcement's title")] = "",
    message: Annotated[str, typer.Option("--message", help="its text")] = "",
    link: Annotated[str | None, typer.Option("--link", help="a URL to open")] = None,
    priority: Annotated[str, typer.Option(
        "--priority", help="low, normal, high or urgent")] = "normal",
    json_out: JsonOpt = False,
) -> None:
    """Send a system announcement (admins only).

    Example: humanglue -u root@example.edu notifications send --role instructor
    --title Maintenance --message "Saturday 02:00 UTC"
    """
    from humanglue_cli.core import announcements

    rt = runtime(ctx)
    request = announcements.Request(to=tuple(to or ()), role=role, everyone=all_, title=title,
                                    message=message, link=link, priority=priority)
    with rt.write() as conn:
        event_id = announcements.send(conn, rt.acting_user(conn), request)
    if json_out:
        typer.echo(json.dumps({"event_id": str(event_id)}))
    else:
        typer.echo(f"announcement queued as event {event_id}", err=True)
