"""`humanglue notifications …`: the acting user's inbox."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from humanglue_cli.commands.runtime import Group, Runtime, runtime

if TYPE_CHECKING:
    from humanglue_cli.core.rules import Person

app = typer.Typer(cls=Group, no_args_is_help=True, help="Your notifications.")

TypeOpt = Annotated[
    list[str] | None,
    typer.Option("--type", "-t", help="only this type (repeatable)", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON (CONTRACT §3)")]


def _filters(
    unread: bool = False,
    read: bool = False,
    types: list[str] | None = None,
    course: str | None = None,
    since: str | None = None,
    until: str | None = None,
):  # type: ignore[no-untyped-def]
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
    course: Annotated[
        str | None, typer.Option("--course", help="only about this course id")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="created at or after: a duration ago (1h, 7d) or ISO-8601"),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="created before: a duration ago or ISO-8601")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="page size, 1-1000")] = 20,
    cursor: Annotated[
        str | None,
        typer.Option("--cursor", help="continue after a previous page (its next_cursor)"),
    ] = None,
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
    tz = render.zone(rt.settings.tz)
    with rt.read() as conn:
        user = rt.acting_user(conn)
        page = inbox.list_page(conn, user.id, filters, limit, cursor)
    if json_out:
        typer.echo(
            json.dumps(
                {"items": [n.to_json() for n in page.items], "next_cursor": page.next_cursor}
            )
        )
        return
    render.notification_table(page.items, tz)
    if page.next_cursor:
        typer.echo(f"more: --cursor {page.next_cursor}", err=True)


@app.command()
def send(
    ctx: typer.Context,
    to: Annotated[
        list[str] | None, typer.Option("--to", help="recipient email (repeatable)")
    ] = None,
    role: Annotated[
        str | None,
        typer.Option("--role", help="everyone with this role: student, instructor, admin"),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="everyone")] = False,
    title: Annotated[str, typer.Option("--title", help="the announcement's title")] = "",
    message: Annotated[str, typer.Option("--message", help="its text")] = "",
    link: Annotated[str | None, typer.Option("--link", help="a URL to open")] = None,
    priority: Annotated[
        str, typer.Option("--priority", help="low, normal, high or urgent")
    ] = "normal",
    json_out: JsonOpt = False,
) -> None:
    """Send a system announcement (admins only).

    Example: humanglue -u root@example.edu notifications send --role instructor
    --title Maintenance --message "Saturday 02:00 UTC"
    """
    from humanglue_cli.core import announcements

    rt = runtime(ctx)
    request = announcements.Request(
        to=tuple(to or ()),
        role=role,
        everyone=all_,
        title=title,
        message=message,
        link=link,
        priority=priority,
    )
    with rt.write() as conn:
        event_id = announcements.send(conn, rt.acting_user(conn), request)
    if json_out:
        typer.echo(json.dumps({"event_id": str(event_id)}))
    else:
        typer.echo(f"announcement queued as event {event_id}", err=True)


IdsArg = Annotated[
    list[str],
    typer.Argument(
        help="notification ids, or unique prefixes of at least 8 characters", show_default=False
    ),
]


@app.command()
def show(
    ctx: typer.Context,
    ref: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="a notification id or a unique prefix of it (8+ characters)"
        ),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Show one notification in full, its data included.

    Example: humanglue -u ada@example.edu notifications show 3f2a9c1e
    """
    from humanglue_cli.commands import render
    from humanglue_cli.core import inbox

    (ref,) = inbox.check_refs([ref])
    rt = runtime(ctx)
    tz = render.zone(rt.settings.tz)
    with rt.read() as conn:
        n = inbox.get(conn, rt.acting_user(conn).id, ref)
    if json_out:
        typer.echo(json.dumps(n.to_json()))
    else:
        render.notification_detail(n, tz)


def _change(ctx: typer.Context, refs: list[str], verb: str, json_out: bool) -> None:
    """read / unread / delete: all or nothing, in one transaction."""
    from humanglue_cli.core import inbox
    from humanglue_cli.core.models import utcnow

    refs = inbox.check_refs(refs)
    rt = runtime(ctx)
    with rt.write() as conn:
        user = rt.acting_user(conn)
        ids = inbox.resolve_ids(conn, user.id, refs)
        if verb == "delete":
            count = inbox.delete(conn, user.id, ids)
        else:
            count = inbox.set_read(conn, user.id, ids, verb == "read", utcnow())
    key = "deleted" if verb == "delete" else "updated"
    if json_out:
        typer.echo(json.dumps({key: count}))
    else:
        done = "deleted" if verb == "delete" else f"marked {verb}"
        typer.echo(f"{done} {count} of {len(ids)} notification{'s' * (len(ids) != 1)}")


@app.command("read")
def read_(ctx: typer.Context, refs: IdsArg, json_out: JsonOpt = False) -> None:
    """Mark notifications read (all or nothing).

    Example: humanglue -u ada@example.edu notifications read 3f2a9c1e 77b0d4e2
    """
    _change(ctx, refs, "read", json_out)


@app.command()
def unread(ctx: typer.Context, refs: IdsArg, json_out: JsonOpt = False) -> None:
    """Mark notifications unread again (all or nothing).

    Example: humanglue -u ada@example.edu notifications unread 3f2a9c1e
    """
    _change(ctx, refs, "unread", json_out)


@app.command()
def delete(ctx: typer.Context, refs: IdsArg, json_out: JsonOpt = False) -> None:
    """Delete notifications (all or nothing; no confirmation).

    Example: humanglue -u ada@example.edu notifications delete 3f2a9c1e
    """
    _change(ctx, refs, "delete", json_out)


@app.command("read-all")
def read_all(ctx: typer.Context, type_: TypeOpt = None, json_out: JsonOpt = False) -> None:
    """Mark all read, or all of the types; what arrives meanwhile stays unread.

    Example: humanglue -u ada@example.edu notifications read-all --type review
    """
    from humanglue_cli.core import inbox
    from humanglue_cli.core.models import utcnow

    started = utcnow()  # what exists now is marked; what arrives while we connect is not
    filters = _filters(types=type_)
    rt = runtime(ctx)
    with rt.write() as conn:
        count = inbox.read_all(conn, rt.acting_user(conn).id, filters, started, utcnow())
    if json_out:
        typer.echo(json.dumps({"updated": count}))
    else:
        typer.echo(f"marked {count} notification{'s' * (count != 1)} read")


@app.command()
def count(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Count your unread notifications, in all and by type.

    Example: humanglue -u ada@example.edu notifications count --json
    """
    from humanglue_cli.commands import render
    from humanglue_cli.core import inbox

    rt = runtime(ctx)
    with rt.read() as conn:
        by_type = inbox.count_unread(conn, rt.acting_user(conn).id)
    if json_out:
        typer.echo(json.dumps({"unread": sum(by_type.values()), "by_type": by_type}))
    else:
        render.unread_counts(by_type)


@app.command()
def tail(
    ctx: typer.Context,
    lines: Annotated[
        int, typer.Option("-n", "--lines", help="how many to show first, 0-1000")
    ] = 10,
    type_: TypeOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON Lines")] = False,
    no_follow: Annotated[
        bool, typer.Option("--no-follow", help="print the last ones, then exit")
    ] = False,
) -> None:
    """Print your latest notifications, then each new one as it arrives.

    Example: humanglue -u ada@example.edu notifications tail -n 5 --json | jq -r .title
    """
    from humanglue_cli.commands import render
    from humanglue_cli.core import tail as following
    from humanglue_cli.core.errors import BadInput

    if not 0 <= lines <= 1000:
        raise BadInput(f"-n must be between 0 and 1000, not {lines}")
    filters = _filters(types=type_)
    rt = runtime(ctx)
    tz = render.zone(rt.settings.tz)
    stop = threading.Event()
    with _stopped_by_signals(stop):
        user = _acting(rt) if no_follow else following.patiently(lambda: _acting(rt), stop, _status)
        if user is None:
            return
        ready = (
            None
            if no_follow
            else functools.partial(
                _status, f"following the notifications of {user.name}; Ctrl-C stops"
            )
        )
        show = render.tail_printer(tz, json_out)
        try:
            for n in following.follow(
                rt.read,
                user.id,
                filters,
                stop,
                backlog=lines,
                live=not no_follow,
                on_status=_status,
                on_ready=ready,
            ):
                show(n)
        except BrokenPipeError:  # the reader went away (`| head -n 3`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _status(message: str) -> None:
    typer.echo(f"humanglue: {message}", err=True)


def _acting(rt: Runtime) -> Person:
    with rt.read() as conn:
        return rt.acting_user(conn)


@contextlib.contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C (SIGINT), SIGTERM, or the reader of our pipe going away set `stop`: exit 0."""
    from humanglue_cli.commands import render

    render.stop_when_reader_leaves(stop)
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
