"""`humanglue presence beat|leave|list|stats` (CONTRACT §8)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from humanglue_cli.commands.runtime import Group, Runtime, runtime, status

if TYPE_CHECKING:
    import sqlalchemy as sa

    from humanglue_cli.core.domain import Person
    from humanglue_cli.core.store.presence import Present

app = typer.Typer(cls=Group, no_args_is_help=True, help="Who is online in courses and workshops.")

CourseOpt = Annotated[
    str | None, typer.Option("--course", help="the course: its id (8+ chars) or title")
]
WorkshopOpt = Annotated[
    str | None, typer.Option("--workshop", help="the workshop: its id (8+ chars) or title")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON (CONTRACT §8)")]


def _one_scope(course: str | None, workshop: str | None) -> None:
    from humanglue_cli.core.errors import BadInput, check_utf8

    if (course is None) == (workshop is None):
        raise BadInput("give one of --course ID or --workshop ID")
    for value, name in ((course, "--course"), (workshop, "--workshop")):
        if value is not None:
            check_utf8(value, name)


def _target(
    conn: sa.Connection, person: Person, course: str | None, workshop: str | None
) -> tuple[str | None, str | None, str]:
    """(course_id, workshop_id, title) as the acting person sees it (else exit 3)."""
    from humanglue_cli.core.store import people

    if course is not None:
        course_id, title = people.find_course(conn, course, seen_by=person)
        return course_id, None, title
    assert workshop is not None
    workshop_id, title = people.find_workshop(conn, workshop, seen_by=person)
    return None, workshop_id, title


def _member(conn: sa.Connection, person: Person, course_id: str | None, ws_id: str | None) -> bool:
    """Is the person enrolled in, registered for, or teaching it (admins included)?"""
    import sqlalchemy as sa

    from humanglue_cli.core.models import enrollments, workshop_registrations
    from humanglue_cli.core.store import activity

    if conn.dialect.name == "postgresql":  # people may not read enrollments: ask the database
        fn = "hg_visible_courses" if course_id is not None else "hg_visible_workshops"
        query = sa.text(f"SELECT CAST(:id AS uuid) = ANY ({fn}())")
        return bool(conn.execute(query, {"id": course_id or ws_id}).scalar_one())
    taught = activity.taught(conn, person.id)
    if course_id is not None:
        e = enrollments.c
        taken = sa.select(e.id).where(e.course_id == course_id, e.student_id == person.id)
        return course_id in taught.course_ids or conn.execute(taken.limit(1)).first() is not None
    r = workshop_registrations.c
    registered = sa.select(r.id).where(r.workshop_id == ws_id, r.user_id == person.id)
    return ws_id in taught.workshop_ids or conn.execute(registered.limit(1)).first() is not None


def _teaches(conn: sa.Connection, person: Person, course_id: str | None, ws_id: str | None) -> bool:
    from humanglue_cli.core.store import activity

    if person.role == "admin":
        return True
    taught = activity.taught(conn, person.id)
    return course_id in taught.course_ids if course_id else ws_id in taught.workshop_ids


def _not_member(title: str, course_id: str | None) -> Exception:
    from humanglue_cli.core.errors import NotFound
    from humanglue_cli.core.text import shown

    what = "course" if course_id else "workshop"
    return NotFound(f"{what} {shown(title)}: not one you are enrolled in, registered for or teach")


def _not_taught(title: str, course_id: str | None) -> Exception:
    from humanglue_cli.core.errors import NotFound
    from humanglue_cli.core.text import shown

    what = "course" if course_id else "workshop"
    return NotFound(f"{what} {shown(title)}: only its instructors and admins see its presence")


@app.command()
def beat(
    ctx: typer.Context,
    course: CourseOpt = None,
    workshop: WorkshopOpt = None,
    device: Annotated[str, typer.Option("--device", help="which device (default: none)")] = "",
    status_: Annotated[str, typer.Option("--status", help="online or away")] = "online",
    json_out: JsonOpt = False,
) -> None:
    """A heartbeat of the acting user in a course or workshop they take, attend or teach
    (for scripts and tests; the platform calls the Python API or writes the SQL).

    Example: humanglue -u stu@example.edu presence beat --course "Intro to Rust" --device phone
    """
    from humanglue_cli.core.errors import BadInput
    from humanglue_cli.core.store import presence

    _one_scope(course, workshop)
    _check_device(device)
    if status_ not in presence.STATUSES:
        raise BadInput(f"--status must be online or away, not {status_!r}")
    rt = runtime(ctx)
    timeout = rt.settings.presence_timeout
    with rt.write() as conn:
        person = rt.acting_user(conn)
        course_id, ws_id, title = _target(conn, person, course, workshop)
        if not _member(conn, person, course_id, ws_id):
            raise _not_member(title, course_id)
        presence.beat(conn, [presence.Beat(person.id, course_id, ws_id, device, status_)], timeout)
    if json_out:
        typer.echo(json.dumps({"online": True}))
    else:
        typer.echo(f"{status_} in {_shown(title)}")


@app.command()
def leave(
    ctx: typer.Context,
    course: CourseOpt = None,
    workshop: WorkshopOpt = None,
    device: Annotated[str, typer.Option("--device", help="which device (default: none)")] = "",
    json_out: JsonOpt = False,
) -> None:
    """The acting user's device leaves a course or workshop; they stay online while another
    device of theirs is there.

    Example: humanglue -u stu@example.edu presence leave --course "Intro to Rust" --device phone
    """
    from humanglue_cli.core.store import presence

    _one_scope(course, workshop)
    _check_device(device)
    rt = runtime(ctx)
    timeout = rt.settings.presence_timeout
    with rt.write() as conn:
        person = rt.acting_user(conn)
        course_id, ws_id, title = _target(conn, person, course, workshop)
        if not _member(conn, person, course_id, ws_id):
            raise _not_member(title, course_id)
        still = presence.leave(
            conn, person.id, presence.scope_of(course_id, ws_id), device, timeout
        )
    if json_out:
        typer.echo(json.dumps({"online": still}))
    else:
        typer.echo(f"{'still online' if still else 'left'} {_shown(title)}")


def _shown(title: str) -> str:
    from humanglue_cli.core.text import one_line, printable

    return printable(one_line(title), newlines=False)


@app.command("list")
def list_(
    ctx: typer.Context,
    course: CourseOpt = None,
    workshop: WorkshopOpt = None,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="then show joins and leaves as they happen")
    ] = False,
    max_count: Annotated[
        int | None, typer.Option("--max-count", help="with --follow: exit 0 after this many")
    ] = None,
    idle_timeout: Annotated[
        str | None,
        typer.Option("--idle-timeout", help="with --follow: exit 0 after this long quiet"),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Who is online in a course or workshop you teach: since when, on how many devices. In a
    workshop, those who checked in today are there too (status checked_in).

    Example: humanglue -u ada@example.edu presence list --course "Intro to Rust" --follow
    """
    from humanglue_cli.core.errors import BadInput, check_range
    from humanglue_cli.core.store import presence
    from humanglue_cli.core.timeutil import parse_duration

    _one_scope(course, workshop)
    if max_count is not None:
        check_range(max_count, 1, 2**31 - 1, "--max-count")
    idle = parse_duration(idle_timeout, "--idle-timeout") if idle_timeout else None
    if idle_timeout is not None and not idle:
        raise BadInput("--idle-timeout must be longer than 0s")
    rt = runtime(ctx)
    timeout = rt.settings.presence_timeout
    with rt.read() as conn:
        person = rt.acting_user(conn)
        course_id, ws_id, title = _target(conn, person, course, workshop)
        if not _teaches(conn, person, course_id, ws_id):
            raise _not_taught(title, course_id)
        if not follow:
            found = presence.online(conn, course_id, ws_id, timeout)
    if not follow:
        if json_out:
            typer.echo(json.dumps({"items": [p.to_json() for p in found]}))
        else:
            _print_present(found, rt, title)
        return
    _follow(rt, course_id, ws_id, title, json_out, max_count, idle)


def _print_present(found: list[Present], rt: Runtime, title: str) -> None:
    from humanglue_cli.commands import render

    if not found:
        status(f"nobody is online in {_shown(title)}")
        return
    render.presence_table(found, rt.tz)


def _follow(
    rt: Runtime,
    course_id: str | None,
    ws_id: str | None,
    title: str,
    json_out: bool,
    max_count: int | None,
    idle: Any,
) -> None:
    import threading

    from humanglue_cli.commands import render
    from humanglue_cli.commands.notifications import _stopped_by_signals
    from humanglue_cli.commands.runtime import is_terminal
    from humanglue_cli.core import refresh
    from humanglue_cli.core.db import current_time
    from humanglue_cli.core.store import presence

    timeout = rt.settings.presence_timeout
    key = {"course_id": course_id} if course_id else {"workshop_id": ws_id}
    State = tuple[datetime, dict[str, presence.Present]]

    def poll() -> State:
        with rt.read() as conn:
            at = current_time(conn)
            return at, {p.user_id: p for p in presence.online(conn, course_id, ws_id, timeout)}

    def changes(before: State | None, after: State) -> list[dict[str, Any]]:
        at, now = after
        old = before[1] if before else {}
        events = []
        for uid, p in now.items():
            if uid not in old:
                events.append(_event("join", p, key, p.since))
            elif old[uid].status != p.status:
                events.append(_event("status", p, key, p.last_seen_at))
        for uid, p in old.items():
            if uid not in now:
                gone = p.last_seen_at + timeout if p.status != presence.CHECKED_IN else at
                left = presence.Present(uid, p.full_name, "offline", 0, p.since, p.last_seen_at)
                events.append(_event("leave", left, key, min(at, gone)))
        return sorted(events, key=lambda e: (e["at"], e["user_id"]))

    live = is_terminal() and not json_out
    recent: list[str] = []

    def emit(event: dict[str, Any]) -> None:
        if live:
            recent.append(render.presence_event_line(event, rt.tz))
            del recent[:-10]
        else:
            typer.echo(json.dumps(event) if json_out else render.presence_event_line(event, rt.tz))

    def redraw(state: State) -> None:
        render.presence_live(_shown(title), list(state[1].values()), recent, rt.tz)

    stop = threading.Event()
    with _stopped_by_signals(stop):
        refresh.run(
            poll,
            changes,
            stop,
            emit=emit,
            redraw=redraw if live else None,
            idle_timeout=idle.total_seconds() if idle else None,
            max_count=max_count,
            on_ready=lambda: status(f"following presence in {_shown(title)}; Ctrl-C stops"),
        )


def _event(kind: str, p: Present, key: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "event": kind,
        "user_id": p.user_id,
        "full_name": p.full_name,
        "status": p.status,
        **key,
        "at": at.isoformat(),
    }


@app.command()
def stats(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Online now and today's peak (UTC) in each course and workshop you teach (admins: all).

    Example: humanglue -u ada@example.edu presence stats
    """
    from humanglue_cli.commands import render
    from humanglue_cli.core.store import activity, presence

    rt = runtime(ctx)
    timeout = rt.settings.presence_timeout
    with rt.read() as conn:
        person = rt.acting_user(conn)
        if person.role == "admin":
            items = presence.stats(conn, None, None, timeout)
        else:
            taught = activity.taught(conn, person.id)
            items = presence.stats(conn, taught.course_ids, taught.workshop_ids, timeout)
    if json_out:
        typer.echo(json.dumps({"items": [i.to_json() for i in items]}))
        return
    if not items:
        status("you teach no course or workshop")
        return
    render.presence_stats(items)


DEVICE_LIMIT = 200  # characters: a device's name, not its data


def _check_device(device: str) -> None:
    """A device name: UTF-8, at most DEVICE_LIMIT characters, no control characters."""
    from humanglue_cli.core.errors import BadInput, check_utf8
    from humanglue_cli.core.text import shown

    check_utf8(device, "--device")
    if len(device) > DEVICE_LIMIT:
        raise BadInput(f"--device: at most {DEVICE_LIMIT} characters, not {len(device):,}")
    if any(ord(c) < 32 or ord(c) == 127 for c in device):
        raise BadInput(f"--device: no control characters, not {shown(device)}")
