"""`humanglue notifications …`: the acting user's inbox."""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from humanglue_cli.commands.runtime import Group, Runtime, runtime, status

if TYPE_CHECKING:
    import sqlalchemy as sa

    from humanglue_cli.core.domain import Notification, Person
    from humanglue_cli.core.store.notifications import Filters

app = typer.Typer(cls=Group, no_args_is_help=True, help="Your notifications.")

WHEN_HELP = (
    "a duration ago (1h, 7d) or an ISO-8601 date or time; "
    "without an offset it is in the display zone (--tz)"
)
TypeOpt = Annotated[
    list[str] | None,
    typer.Option("--type", "-t", help="only this type (repeatable)", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON (CONTRACT §3)")]
UnreadOpt = Annotated[bool, typer.Option("--unread", help="only unread")]
ReadOpt = Annotated[bool, typer.Option("--read", help="only read")]
CourseOpt = Annotated[
    str | None,
    typer.Option("--course", help="only about this course: its id (8+ characters) or title"),
]
SinceOpt = Annotated[str | None, typer.Option("--since", help=f"created at or after: {WHEN_HELP}")]
UntilOpt = Annotated[str | None, typer.Option("--until", help=f"created before: {WHEN_HELP}")]


@dataclass(frozen=True)
class Narrowing:
    """The filter options as given; `resolve` turns them into `Filters` (the course needs the
    database, everything else is checked before connecting)."""

    filters: Filters
    course: str | None = None

    def resolve(self, conn: sa.Connection, user: Person) -> Filters:
        if self.course is None:
            return self.filters
        from humanglue_cli.core.store import people

        course_id, _ = people.find_course(conn, self.course, seen_by=user)
        return replace(self.filters, course_id=course_id)


def _narrowing(
    rt: Runtime,
    unread: bool = False,
    read: bool = False,
    types: list[str] | None = None,
    course: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Narrowing:
    from humanglue_cli.core.errors import BadInput, check_utf8
    from humanglue_cli.core.store.notifications import Filters
    from humanglue_cli.core.timeutil import parse_when

    if unread and read:
        raise BadInput("--unread and --read exclude each other")
    if course is not None and not check_utf8(course, "--course").strip():
        raise BadInput("--course: give a course id (8+ characters of it) or its exact title")
    tz = rt.tz if since or until else UTC  # the display zone reads naive times
    filters = Filters(
        read=True if read else (False if unread else None),
        types=tuple(dict.fromkeys(types or ())),
        since=parse_when(since, tz, what="--since") if since else None,
        until=parse_when(until, tz, what="--until") if until else None,
    )
    return Narrowing(filters, course)


@app.command("list")
def list_(
    ctx: typer.Context,
    unread: UnreadOpt = False,
    read: ReadOpt = False,
    type_: TypeOpt = None,
    course: CourseOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="page size, 1-1000")] = 20,
    cursor: Annotated[
        str | None,
        typer.Option("--cursor", help="continue after a previous page (its next_cursor)"),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List your notifications, newest first, a page at a time.

    Example: humanglue -u ada@example.edu notifications list --unread --since 2026-11-24T09:00
    """
    from humanglue_cli.core.store import notifications

    rt = runtime(ctx)
    narrowing = _narrowing(rt, unread, read, type_, course, since, until)
    notifications.check_limit(limit)
    with rt.read() as conn:
        user = rt.acting_user(conn)
        filters = narrowing.resolve(conn, user)
        page = notifications.list_page(conn, user.id, filters, limit, cursor)
        if not json_out:
            from humanglue_cli.core.store import people

            titles = people.course_titles(conn, _course_ids(page.items))
    if json_out:
        items = [n.to_json() for n in page.items]
        typer.echo(json.dumps({"items": items, "next_cursor": page.next_cursor}))
        return
    from humanglue_cli.commands import render  # a table: not needed for --json

    render.notification_table(page.items, rt.tz, titles)
    if page.next_cursor:
        status(f"more: --cursor {page.next_cursor}")


def _course_ids(items: Sequence[Notification]) -> set[str]:
    return {n.course_id for n in items if n.course_id}


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
    link: Annotated[
        str | None, typer.Option("--link", help="an http(s) URL, or a path such as /courses/42")
    ] = None,
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
    request.validate()
    with rt.write() as conn:
        event_id = announcements.send(conn, rt.acting_user(conn), request)
    if json_out:
        typer.echo(json.dumps({"event_id": str(event_id)}))
    else:
        status(f"announcement queued as event {event_id}")


IdsArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="notification ids, or unique prefixes of at least 8 characters", show_default=False
    ),
]


@app.command()
def show(
    ctx: typer.Context,
    ref: Annotated[
        str, typer.Argument(metavar="ID", help="a notification id or a unique prefix of it (8+)")
    ],
    json_out: JsonOpt = False,
) -> None:
    """Show one notification in full, its course and data included.

    Example: humanglue -u ada@example.edu notifications show 3f2a9c1e
    """
    from humanglue_cli.commands import render
    from humanglue_cli.core.ids import references
    from humanglue_cli.core.store import notifications, people

    (ref,) = references([ref])
    rt = runtime(ctx)
    with rt.read() as conn:
        n = notifications.get(conn, rt.acting_user(conn).id, ref)
        titles = people.course_titles(conn, _course_ids([n]))
    if json_out:
        typer.echo(json.dumps(n.to_json()))
    else:
        render.notification_detail(n, rt.tz, titles.get(n.course_id or ""))


def _change(ctx: typer.Context, refs: list[str], verb: str, json_out: bool) -> None:
    """read / unread / delete by id: all or nothing, in one transaction."""
    from humanglue_cli.core.ids import references
    from humanglue_cli.core.store import notifications

    refs = references(refs)
    rt = runtime(ctx)
    with rt.write() as conn:
        user = rt.acting_user(conn)
        ids = notifications.resolve(conn, user.id, refs)
        if verb == "delete":
            count = notifications.delete(conn, user.id, ids)
        else:
            count = notifications.mark(conn, user.id, ids, verb == "read")
    key = "deleted" if verb == "delete" else "updated"
    if json_out:
        typer.echo(json.dumps({key: count}))
    else:
        done = "deleted" if verb == "delete" else f"marked {verb}"
        typer.echo(f"{done} {count} of {len(ids)} notification{'s' * (len(ids) != 1)}")


@app.command("read")
def read_(ctx: typer.Context, refs: IdsArg = None, json_out: JsonOpt = False) -> None:
    """Mark notifications read (all or nothing).

    Example: humanglue -u ada@example.edu notifications read 3f2a9c1e 77b0d4e2
    """
    _change(ctx, refs or [], "read", json_out)


@app.command()
def unread(ctx: typer.Context, refs: IdsArg = None, json_out: JsonOpt = False) -> None:
    """Mark notifications unread again (all or nothing).

    Example: humanglue -u ada@example.edu notifications unread 3f2a9c1e
    """
    _change(ctx, refs or [], "unread", json_out)


@app.command()
def delete(
    ctx: typer.Context,
    refs: IdsArg = None,
    read: ReadOpt = False,
    unread: UnreadOpt = False,
    type_: TypeOpt = None,
    course: CourseOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="every notification of yours")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="do not ask (needed off a terminal)")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Delete notifications by id (all or nothing), or all that match filters.

    With filters (or --all) it counts them and asks first on a terminal; elsewhere it needs
    --yes. Example: humanglue -u ada@example.edu notifications delete --read --until 30d --yes
    """
    from humanglue_cli.core.errors import BadInput

    rt = runtime(ctx)
    narrowing = _narrowing(rt, unread, read, type_, course, since, until)
    by_filter = narrowing.filters.narrows or course is not None
    if refs and (by_filter or all_):
        raise BadInput("give notification ids, or filters, not both")
    if refs:
        _change(ctx, refs, "delete", json_out)
        return
    if not by_filter and not all_:
        raise BadInput(
            "give notification ids, or filters (--read, --unread, --type, --course, --since, "
            "--until), or --all"
        )
    count = _delete_matching(rt, narrowing, yes)
    if json_out:
        typer.echo(json.dumps({"deleted": count}))
    else:
        typer.echo(f"deleted {count} notification{'s' * (count != 1)}")


def _delete_matching(rt: Runtime, narrowing: Narrowing, yes: bool) -> int:
    """Count what matches, ask (or insist on --yes), then delete no more than what was counted."""
    from datetime import timedelta

    from humanglue_cli.core import db
    from humanglue_cli.core.errors import BadInput
    from humanglue_cli.core.store import notifications

    with rt.read() as conn:
        user = rt.acting_user(conn)
        filters = narrowing.resolve(conn, user)
        # Only what exists now: what arrives while a person reads the question is kept.
        counted_at = db.current_time(conn) + timedelta(microseconds=1)
        filters = replace(filters, until=min(filters.until or counted_at, counted_at))
        count = notifications.count_matching(conn, user.id, filters)
    if count == 0:
        return 0
    if not yes:
        many = f"{count} notification{'s' * (count != 1)}"
        if not sys.stdin.isatty():
            raise BadInput(f"this would delete {many}: add --yes to confirm")
        if not typer.confirm(f"Delete {many}?", err=True):
            status("nothing deleted")
            return 0
    with rt.write() as conn:
        return notifications.delete_matching(conn, user.id, filters)


@app.command("read-all")
def read_all(ctx: typer.Context, type_: TypeOpt = None, json_out: JsonOpt = False) -> None:
    """Mark all read, or all of the types; what arrives meanwhile stays unread.

    Example: humanglue -u ada@example.edu notifications read-all --type review
    """
    from humanglue_cli.core.store import notifications

    rt = runtime(ctx)
    filters = _narrowing(rt, types=type_).filters
    with rt.write() as conn:
        count = notifications.mark_all_read(conn, rt.acting_user(conn).id, filters)
    if json_out:
        typer.echo(json.dumps({"updated": count}))
    else:
        typer.echo(f"marked {count} notification{'s' * (count != 1)} read")


@app.command()
def count(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Count your unread notifications, in all and by type.

    Example: humanglue -u ada@example.edu notifications count --json
    """
    from humanglue_cli.core.store import notifications

    rt = runtime(ctx)
    with rt.read() as conn:
        by_type = notifications.count_unread(conn, rt.acting_user(conn).id)
    if json_out:
        typer.echo(json.dumps({"unread": sum(by_type.values()), "by_type": by_type}))
    else:
        from humanglue_cli.commands import render

        render.unread_counts(by_type)


@app.command()
def tail(
    ctx: typer.Context,
    lines: Annotated[
        int, typer.Option("-n", "--lines", help="how many to show first, 0-1000")
    ] = 10,
    type_: TypeOpt = None,
    unread: UnreadOpt = False,
    course: CourseOpt = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help=f"start with those created at or after: {WHEN_HELP}"),
    ] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="start right after this notification (id)")
    ] = None,
    cursor_file: Annotated[
        Path | None,
        typer.Option(
            "--cursor-file",
            help="resume right after the cursor this file holds (if it exists), and keep it "
            "updated to the last line printed",
            dir_okay=False,
        ),
    ] = None,
    max_count: Annotated[
        int | None, typer.Option("--max-count", help="exit 0 after printing this many")
    ] = None,
    idle_timeout: Annotated[
        str | None,
        typer.Option("--idle-timeout", help="exit 0 after this long with nothing new (90s, 5m)"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON Lines")] = False,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="keep following (the default)")
    ] = True,
    no_follow: Annotated[
        bool, typer.Option("--no-follow", help="print what there is, then exit")
    ] = False,
    bell: Annotated[
        bool, typer.Option("--bell", help="ring the terminal's bell for high and urgent ones")
    ] = False,
) -> None:
    """Print your latest notifications, then each new one as it arrives — none twice, none
    skipped, however late its transaction commits. While following, broadcasts to the courses
    and workshops you teach show up too (not with --type).

    Example: humanglue -u ada@example.edu notifications tail --cursor-file ~/.hg-cursor --json
    """
    from humanglue_cli.commands import render
    from humanglue_cli.core import tail as following
    from humanglue_cli.core.domain import Broadcast
    from humanglue_cli.core.errors import BadInput, check_range
    from humanglue_cli.core.store.visibility import Position
    from humanglue_cli.core.timeutil import exact, parse_duration

    check_range(lines, 0, 1000, "-n")
    if max_count is not None:
        check_range(max_count, 1, 2**31 - 1, "--max-count")
    idle_delta = parse_duration(idle_timeout, "--idle-timeout") if idle_timeout else None
    idle = idle_delta.total_seconds() if idle_delta is not None else None
    if idle_timeout is not None and not idle:
        raise BadInput("--idle-timeout must be longer than 0s")
    if since is not None and after is not None:
        raise BadInput("--since and --after exclude each other")
    rt = runtime(ctx)
    narrowing = _narrowing(rt, unread=unread, types=type_, course=course, since=None)
    started_at = _parse_since(rt, since) if since is not None else None
    resume = _read_cursor_file(cursor_file) if cursor_file is not None else None
    start = following.Start(
        last=lines,
        since=started_at,
        after=after,
        position=Position.decode(resume) if resume is not None else None,
    )
    titles: dict[str, str | None] = {}

    def course_title(course_id: str) -> str | None:
        from humanglue_cli.core.store import people

        if course_id not in titles:
            with rt.read() as conn:  # under the reader's own rights
                titles[course_id] = people.course_titles(conn, [course_id]).get(course_id)
        return titles[course_id]

    show = render.tail_printer(rt.tz, json_out, bell=bell, course_title=course_title)
    stop = threading.Event()
    live = follow and not no_follow
    with _stopped_by_signals(stop), contextlib.ExitStack() as stack:
        from humanglue_cli.core.wakeup import Listener

        listener = Listener(rt.engine, stop)
        stack.callback(listener.close)
        if live:  # before the first read: its heartbeat notices a start that stalls, too
            listener.start()
        user = _acting(rt) if not live else following.patiently(lambda: _acting(rt), stop, status)
        if user is None:
            return
        filters = narrowing.filters
        if narrowing.course is not None:
            with rt.read() as conn:
                filters = narrowing.resolve(conn, rt.acting_user(conn))
        audience = None  # broadcasts come along, live, unless notification types are asked for
        if live and not type_:
            from humanglue_cli.core.activity import Scope
            from humanglue_cli.core.store import activity

            audience = Scope(teacher=user.id)
            if filters.course_id is not None:
                with rt.read() as conn:
                    taught = activity.taught(conn, user.id).course_ids
                audience = Scope(tuple(c for c in taught if c == filters.course_id))
        waiting = f"; exits after {exact(idle_delta)} with nothing new" if idle_delta else ""
        ready = (
            functools.partial(
                status, f"following the notifications of {user.name}{waiting}; Ctrl-C stops"
            )
            if live
            else None
        )
        arrivals = following.follow(
            functools.partial(rt.read, snapshot=True),
            user.id,
            filters,
            stop,
            start=start,
            live=live,
            idle_timeout=idle,
            on_status=status,
            on_ready=ready,
            listener=listener,
            broadcasts=audience,
            session=rt.session if rt.engine.dialect.name == "postgresql" else None,
        )
        for printed, (n, position) in enumerate(arrivals, start=1):
            show(n)
            if cursor_file is not None and not isinstance(n, Broadcast):
                _write_cursor_file(cursor_file, position.encode())
            if max_count is not None and printed >= max_count:
                break


def _parse_since(rt: Runtime, text: str) -> datetime:
    from humanglue_cli.core.timeutil import parse_when

    return parse_when(text, rt.tz, what="--since")


def _read_cursor_file(path: Path) -> str | None:
    """The cursor the file holds, None if there is none yet; exit 2 (before anything is
    printed) if the file could not be kept up to date where it is."""
    import os

    from humanglue_cli.core.errors import BadInput

    directory = path.parent
    if not directory.is_dir():
        raise BadInput(f"--cursor-file {path}: no such directory {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BadInput(f"--cursor-file {path}: cannot write in {directory}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeError) as error:
        raise BadInput(
            f"--cursor-file {path}: {getattr(error, 'strerror', None) or error}"
        ) from None
    if not text.strip():
        return None  # an empty file: as if there were none
    return text


def _write_cursor_file(path: Path, cursor: str) -> None:
    """Replace the file's content at once (a reader never sees half a cursor; a crash leaves
    the old one or the new one), readable by its owner only."""
    import os
    import tempfile

    from humanglue_cli.core.errors import HumanGlueError

    directory = path.parent
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as error:  # the directory went away, the disk is full…
        raise HumanGlueError(f"cannot update --cursor-file {path}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(cursor + "\n")
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise HumanGlueError(f"cannot update --cursor-file {path}: {error.strerror}") from None
        raise


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
