"""`humanglue activity` (the instructors' live feed) and `humanglue broadcast`."""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from humanglue_cli.commands.runtime import Runtime, runtime, status

if TYPE_CHECKING:
    import sqlalchemy as sa

    from humanglue_cli.core.activity import Scope
    from humanglue_cli.core.domain import Person

WHEN_HELP = "a duration back from now (90s, 15m, 24h, 30d) or an ISO-8601 time"


def activity(
    ctx: typer.Context,
    course: Annotated[
        str | None,
        typer.Option("--course", help="only this course you teach: its id (8+ chars) or title"),
    ] = None,
    workshop: Annotated[
        str | None,
        typer.Option("--workshop", help="only this workshop you teach: its id or title"),
    ] = None,
    lines: Annotated[
        int, typer.Option("-n", "--lines", help="how many recent items to show first, 0-1000")
    ] = 20,
    since: Annotated[
        str | None, typer.Option("--since", help=f"show those from then on: {WHEN_HELP}")
    ] = None,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="then print each new item as it happens")
    ] = False,
    max_count: Annotated[
        int | None, typer.Option("--max-count", help="exit 0 after printing this many")
    ] = None,
    idle_timeout: Annotated[
        str | None,
        typer.Option("--idle-timeout", help="with --follow: exit 0 after this long quiet"),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option("--json", help='{"items": […]}; with --follow, JSON Lines'),
    ] = False,
) -> None:
    """What your students do in the courses and workshops you teach: enrollments,
    completions, registrations and check-ins, reviews, questions, payments, lessons and
    quizzes — oldest first, then live with --follow.

    Example: humanglue -u ada@example.edu activity --course "Intro to Rust" --follow
    """
    from humanglue_cli.commands import render
    from humanglue_cli.commands.notifications import _stopped_by_signals
    from humanglue_cli.core import tail as following
    from humanglue_cli.core.errors import BadInput, check_range
    from humanglue_cli.core.timeutil import exact, parse_duration, parse_when
    from humanglue_cli.core.wakeup import ACTIVITY_CHANNEL, Listener

    check_range(lines, 0, 1000, "-n")
    if max_count is not None:
        check_range(max_count, 1, 2**31 - 1, "--max-count")
    _check_names(course, workshop)
    if course is not None and workshop is not None:
        raise BadInput("--course and --workshop exclude each other")
    idle_delta = parse_duration(idle_timeout, "--idle-timeout") if idle_timeout else None
    if idle_timeout is not None and not idle_delta:
        raise BadInput("--idle-timeout must be longer than 0s")
    rt = runtime(ctx)
    since_at = parse_when(since, rt.tz, what="--since") if since is not None else None
    stop = threading.Event()
    with _stopped_by_signals(stop), contextlib.ExitStack() as stack:
        listener = Listener(rt.engine, stop, ACTIVITY_CHANNEL)
        stack.callback(listener.close)
        if follow:  # before the first read: its heartbeat notices a start that stalls, too
            listener.start()
        start = functools.partial(_scope, rt, course, workshop)
        begun = following.patiently(start, stop, status) if follow else start()
        if begun is None:
            return
        person, scope, where = begun
        waiting = f"; exits after {exact(idle_delta)} quiet" if idle_delta else ""
        ready = functools.partial(
            status, f"following the activity of {where} ({person.name}){waiting}; Ctrl-C stops"
        )
        items = following.follow_activity(
            functools.partial(rt.read, snapshot=True),
            scope,
            stop,
            last=lines,
            since=since_at,
            live=follow,
            idle_timeout=idle_delta.total_seconds() if idle_delta else None,
            on_status=status,
            on_ready=ready if follow else None,
            listener=listener,
            session=rt.session if follow and rt.engine.dialect.name == "postgresql" else None,
        )
        if not follow:  # printed as read: a --since far back is read a page at a time
            found = itertools.islice(items, max_count)
            if json_out:  # {"items": […]}, written piece by piece
                typer.echo('{"items": [', nl=False)
                for n, item in enumerate(found):
                    typer.echo(", " * (n > 0) + json.dumps(item.to_json()), nl=False)
                typer.echo("]}")
                return
            show = render.activity_printer(rt.tz)
            shown = 0
            for shown, item in enumerate(found, start=1):  # noqa: B007 - counted
                show(item)
            if not shown:
                status(f"no activity in {where} yet")
            return
        show = render.activity_printer(rt.tz, json_out)
        for printed, item in enumerate(items, start=1):
            show(item)
            if max_count is not None and printed >= max_count:
                break


def _scope(rt: Runtime, course: str | None, workshop: str | None) -> tuple[Person, Scope, str]:
    """The acting person, the courses and workshops whose feed they read, and its name."""
    from humanglue_cli.core.activity import Scope
    from humanglue_cli.core.store import activity

    with rt.read() as conn:
        person = rt.acting_user(conn)
        if course is None and workshop is None:
            return person, Scope(teacher=person.id), "the courses and workshops you teach"
        taught = activity.taught(conn, person.id)
        course_id, title = _target(conn, person, course, workshop)
        if course is not None:
            _check_teaches(course_id in taught.course_ids, "course", "see its activity")
            return person, Scope((course_id,)), title
        _check_teaches(course_id in taught.workshop_ids, "workshop", "see its activity")
        return person, Scope((), (course_id,)), title


def _target(
    conn: sa.Connection, person: Person, course: str | None, workshop: str | None
) -> tuple[str, str]:
    from humanglue_cli.core.errors import check_utf8
    from humanglue_cli.core.store import people

    if course is not None:
        return people.find_course(conn, check_utf8(course, "--course"), seen_by=person)
    assert workshop is not None
    return people.find_workshop(conn, check_utf8(workshop, "--workshop"), seen_by=person)


def _check_names(course: str | None, workshop: str | None) -> None:
    from humanglue_cli.core.errors import check_utf8

    for value, name in ((course, "--course"), (workshop, "--workshop")):
        if value is not None:
            check_utf8(value, name)


def _check_teaches(teaches: bool, what: str, to: str) -> None:
    from humanglue_cli.core.errors import Forbidden

    if not teaches:
        raise Forbidden(f"only the {what}'s instructors may {to}")


def broadcast(
    ctx: typer.Context,
    message: Annotated[str, typer.Argument(help="the message (one line is best)")],
    course: Annotated[
        str | None, typer.Option("--course", help="to this course's instructors: id or title")
    ] = None,
    workshop: Annotated[
        str | None,
        typer.Option("--workshop", help="to this workshop's instructors: id or title"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help='print {"sent": true, …}')] = False,
) -> None:
    """Send an ephemeral message to the instructors of a course or workshop: it shows in
    their running tails at once, is never a notification, and is gone after a minute.
    For its instructors and admins; at most HUMANGLUE_BROADCAST_RATE a minute (default 30).

    Example: humanglue -u ada@example.edu broadcast --course "Intro to Rust" "Live Q&A in 5 min"
    """
    from humanglue_cli.core.activity import Scope
    from humanglue_cli.core.errors import BadInput, Forbidden, check_utf8
    from humanglue_cli.core.store import activity, broadcasts
    from humanglue_cli.core.text import one_line, printable

    if (course is None) == (workshop is None):
        raise BadInput("give one of --course ID or --workshop ID")
    _check_names(course, workshop)
    check_utf8(message, "MESSAGE")
    text = message.strip()
    if not text:
        raise BadInput("MESSAGE is empty")
    if len(text) > broadcasts.LIMIT:
        raise BadInput(f"MESSAGE is {len(text):,} characters; at most {broadcasts.LIMIT:,}")
    rt = runtime(ctx)
    rate = rt.settings.broadcast_rate  # validated before anything is sent
    with rt.write() as conn:
        sender = rt.acting_user(conn)
        target, title = _target(conn, sender, course, workshop)
        scope = Scope((target,)) if course is not None else Scope((), (target,))
        broadcasts.check_sender(conn, sender, scope, activity.taught(conn, sender.id))
        wait = broadcasts.send(conn, sender, scope, text, rate)
    if wait > 0:
        raise Forbidden(
            f"rate limit: {rate} broadcast{'s' * (rate != 1)} a minute; "
            f"the next may go in {max(1, round(wait))}s"
        )
    if json_out:
        typer.echo(json.dumps({"sent": True, **scope_json(scope), "sender_id": sender.id}))
    else:
        typer.echo(f"sent to the instructors of {printable(one_line(title), newlines=False)}")


def scope_json(scope: Scope) -> dict[str, str]:
    if scope.course_ids:
        return {"course_id": scope.course_ids[0]}
    return {"workshop_id": scope.workshop_ids[0]}
