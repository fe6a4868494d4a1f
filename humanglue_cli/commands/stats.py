"""`humanglue stats`: live figures of the courses and workshops one teaches (CONTRACT §8).

On a terminal: a table per kind, with sparklines of the last 14 days (enrollments,
completions and revenue a day); into a pipe or with NO_COLOR: one plain line per item.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Sequence
from datetime import tzinfo
from typing import TYPE_CHECKING, Annotated, Any

import typer

from humanglue_cli.commands.runtime import Runtime, is_terminal, runtime, status

if TYPE_CHECKING:
    from humanglue_cli.core.statsfeed import Chosen, Snapshot, Target

SPARKS = "▁▂▃▄▅▆▇█"


def stats(
    ctx: typer.Context,
    course: Annotated[
        str | None, typer.Option("--course", help="only this course you teach: id or title")
    ] = None,
    workshop: Annotated[
        str | None, typer.Option("--workshop", help="only this workshop you teach: id or title")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("-f", "--follow", help="redraw as figures change (4 times a second at most)"),
    ] = False,
    max_count: Annotated[
        int | None, typer.Option("--max-count", help="with --follow: exit 0 after this many draws")
    ] = None,
    idle_timeout: Annotated[
        str | None,
        typer.Option("--idle-timeout", help="with --follow: exit 0 after this long unchanged"),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help='{"items": […]}; with --follow, one such line a draw')
    ] = False,
) -> None:
    """Enrollments, completion, ratings, revenue and who is online, per course and workshop
    you teach (an admin: all); --follow keeps it live.

    Example: humanglue -u ada@example.edu stats --course "Intro to Rust" --follow
    """
    from humanglue_cli.commands.notifications import _stopped_by_signals
    from humanglue_cli.core import statsfeed
    from humanglue_cli.core.errors import BadInput, check_range, check_utf8
    from humanglue_cli.core.timeutil import parse_duration
    from humanglue_cli.core.wakeup import ACTIVITY_CHANNEL, Listener

    if course is not None and workshop is not None:
        raise BadInput("--course and --workshop exclude each other")
    for value, name in ((course, "--course"), (workshop, "--workshop")):
        if value is not None:
            check_utf8(value, name)
    if max_count is not None:
        check_range(max_count, 1, 2**31 - 1, "--max-count")
    idle = parse_duration(idle_timeout, "--idle-timeout") if idle_timeout else None
    if idle_timeout is not None and not idle:
        raise BadInput("--idle-timeout must be longer than 0s")
    rt = runtime(ctx)
    target = statsfeed.Target(course, workshop)
    terminal = is_terminal() and not json_out
    tz = rt.tz
    if not follow:
        _print(_read(rt, target, tz, terminal), tz, terminal, json_out)
        return
    stop = threading.Event()
    with _stopped_by_signals(stop), contextlib.ExitStack() as stack:
        listener = Listener(rt.engine, stop, ACTIVITY_CHANNEL)
        stack.callback(listener.close)
        read = functools.partial(_read, rt, target, tz, terminal)
        poll = statsfeed.POLL.get(rt.engine.dialect.name, 1.0)
        draws = statsfeed.follow(
            read,
            stop,
            poll=poll,
            listener=listener,
            idle_timeout=idle.total_seconds() if idle else None,
            on_status=status,
        )
        live = stack.enter_context(_live()) if terminal else None
        for count, shot in enumerate(draws, start=1):
            if count == 1:
                status("following the stats; Ctrl-C stops")
            if live is not None:
                live.update(_tables(shot), refresh=True)
            else:
                _print(shot, tz, False, json_out, flush=True)
            if max_count is not None and count >= max_count:
                break


def _read(rt: Runtime, target: Target, tz: tzinfo, history: bool) -> Snapshot:
    from humanglue_cli.core import statsfeed

    with rt.read(snapshot=True) as conn:
        chosen: Chosen = statsfeed.choose(conn, rt.acting_user(conn), target)
        return statsfeed.snapshot(conn, chosen, tz, history)


def _live() -> Any:
    from rich.live import Live

    from humanglue_cli.commands.render import _console

    return Live(console=_console(), auto_refresh=False, transient=False)


def _print(shot: Snapshot, tz: tzinfo, terminal: bool, json_out: bool, flush: bool = False) -> None:
    if json_out:
        typer.echo(json.dumps({"items": shot.items}))
    elif terminal:
        from humanglue_cli.commands.render import _console

        _console().print(_tables(shot))
    else:
        if not shot.items:
            status("no courses or workshops to show")
        for item in shot.items:
            typer.echo(plain_line(item))
    if flush:
        import sys

        sys.stdout.flush()


def plain_line(item: dict[str, Any]) -> str:
    """One item, space-separated `name value` pairs after its id and title (grep, awk)."""
    from humanglue_cli.core.text import one_line, printable

    key = "course_id" if "course_id" in item else "workshop_id"
    title = printable(one_line(item["title"]), newlines=False)
    figures = " ".join(f"{k} {_plain(v)}" for k, v in item.items() if k not in (key, "title"))
    return f"{key.removesuffix('_id')} {item[key]} {title!r} {figures}"


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def spark(values: Sequence[int]) -> str:
    """A sparkline: one block a day, scaled to the highest (all lowest when all are 0)."""
    top = max(values, default=0)
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[(v * (len(SPARKS) - 1) + top - 1) // top] for v in values)


def _money(cents: int) -> str:
    return f"{cents / 100:,.2f}"


def _tables(shot: Snapshot) -> Any:
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from humanglue_cli.core.text import one_line, printable

    def title(item: dict[str, Any]) -> Text:  # the platform's text: shown, never markup
        return Text(printable(one_line(item["title"]), newlines=False))

    courses = [i for i in shot.items if "course_id" in i]
    workshops = [i for i in shot.items if "workshop_id" in i]
    parts: list[Any] = []
    if courses:
        table = Table(box=box.SIMPLE_HEAD, title="courses (last 14 days: ▁▂▃▄▅▆▇█ a day)")
        for name in ("course", "active", "completed", "rate", "rating", "revenue", "online"):
            table.add_column(name, justify="left" if name == "course" else "right")
        for name in ("enrollments/day", "completions/day", "revenue/day"):
            table.add_column(name, style="cyan")
        for i in courses:
            days = shot.days.get(i["course_id"], {})
            rating = "—" if i["rating_avg"] is None else f"{i['rating_avg']:.2f}"
            table.add_row(
                title(i),
                str(i["enrollments_active"]),
                str(i["enrollments_completed"]),
                f"{i['completion_rate']:.0%}",
                f"{rating} ({i['rating_count']})",
                _money(i["revenue_cents"]),
                f"[bold green]{i['online_now']}[/]" if i["online_now"] else "0",
                *(spark(days.get(w, [0] * 14)) for w in ("enrollment", "completion", "revenue")),
            )
        parts.append(table)
    if workshops:
        table = Table(box=box.SIMPLE_HEAD, title="workshops")
        for name in ("workshop", "registered", "checked in", "online", "revenue"):
            table.add_column(name, justify="left" if name == "workshop" else "right")
        table.add_column("revenue/day", style="cyan")
        for i in workshops:
            days = shot.days.get(i["workshop_id"], {})
            table.add_row(
                title(i),
                str(i["registrations"]),
                str(i["checked_in"]),
                f"[bold green]{i['online_now']}[/]" if i["online_now"] else "0",
                _money(i["revenue_cents"]),
                spark(days.get("revenue", [0] * 14)),
            )
        parts.append(table)
    if not parts:
        parts.append(Text("no courses or workshops to show", style="dim"))
    return Group(*parts)
