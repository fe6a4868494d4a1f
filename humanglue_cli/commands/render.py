"""How results look to people; JSON is printed by the commands themselves.

On a terminal: rich tables, colour by type, relative times. Into a pipe or with NO_COLOR set:
plain, colourless text, one notification per line, columns split by spaces (no box-drawing),
so that grep and awk work on it. rich is imported only when a terminal gets it.

Every string that came from the platform is shown, never obeyed: `printable` escapes control
characters (a name full of ANSI or OSC sequences reaches the terminal as inert text), on a
terminal and in plain output alike.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any

import typer

from humanglue_cli.commands.runtime import is_terminal
from humanglue_cli.core.domain import Broadcast
from humanglue_cli.core.text import one_line, printable

if TYPE_CHECKING:
    from rich.text import Text

    from humanglue_cli.core.activity import Item
    from humanglue_cli.core.domain import Notification

TYPE_STYLES = {
    "enrollment": "green",
    "workshop_registration": "cyan",
    "course_completion": "bold green",
    "review": "yellow",
    "student_question": "magenta",
    "payment": "bold yellow",
    "system_announcement": "bold red",
    "co_instructor_update": "blue",
}
PRIORITY_STYLES = {"urgent": "bold red", "high": "red"}


def relative(when: datetime, now: datetime, tz: tzinfo) -> str:
    """`just now`, `3 min ago`, `2 h ago`, `yesterday`, `4 days ago`, then the date."""
    seconds = (now - when).total_seconds()
    local, today = when.astimezone(tz), now.astimezone(tz).date()
    if seconds < -60:  # a clock ahead of ours: say when, not "in the future"
        return f"{local:%Y-%m-%d %H:%M}"
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = (today - local.date()).days
    if days <= 1:
        return "yesterday"
    if days < 7:
        return f"{days} days ago"
    if local.year == today.year:
        return f"{local:%b} {local.day}"
    return f"{local:%Y-%m-%d}"


def absolute(when: datetime, tz: tzinfo) -> str:
    local = when.astimezone(tz)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or local.strftime('%z')}"


def plain_line(n: Notification, tz: tzinfo) -> str:
    """One notification on one line: id, state, time (ISO-8601), type, then title — message."""
    state = "read" if n.read else "unread"
    stamp = n.created_at.astimezone(tz).isoformat(timespec="seconds")
    return (
        f"{n.id}  {state:<6}  {stamp}  {one_line(n.type):<21}  "
        f"{one_line(n.title)} — {one_line(n.message)}"
    )


def _cut(text: str, style: str = "") -> Text:
    from rich.text import Text

    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def notification_table(
    items: Sequence[Notification], tz: tzinfo, courses: Mapping[str, str] | None = None
) -> None:
    """The page as a table on a terminal (with a COURSE column), or plain lines into a pipe."""
    if not items:
        typer.echo("no notifications", err=True)
        return
    if not is_terminal():
        for n in items:
            typer.echo(plain_line(n, tz))
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    courses = courses or {}
    now = datetime.now(UTC)
    whens = [relative(n.created_at, now, tz) for n in items]
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="bold",
        padding=(0, 1),
        collapse_padding=True,
    )
    table.add_column("", width=1, no_wrap=True)
    table.add_column("ID", width=8, style="dim", no_wrap=True)
    table.add_column("WHEN", width=max(map(len, whens)), no_wrap=True, justify="right")
    table.add_column("TYPE", width=max(len(one_line(n.type)) for n in items), no_wrap=True)
    # Only these give way to a narrow terminal, cut with an ellipsis: one line per row.
    show_courses = any(n.course_id in courses for n in items)
    if show_courses:
        table.add_column("COURSE", ratio=1, min_width=8, no_wrap=True)
    table.add_column("TITLE", ratio=2, min_width=12)
    table.add_column("MESSAGE", ratio=3, min_width=8, style="dim")
    for n, when in zip(items, whens, strict=True):
        unread = Text("●", style=PRIORITY_STYLES.get(n.priority, "bold cyan"))
        cells: list[Any] = [
            unread if not n.read else "",
            n.id[:8],
            when,
            Text(one_line(n.type), style=TYPE_STYLES.get(n.type, "")),
        ]
        if show_courses:
            cells.append(_cut(one_line(courses.get(n.course_id or "", ""))))
        cells += [_cut(one_line(n.title), "bold" if not n.read else ""), _cut(one_line(n.message))]
        table.add_row(*cells)
    _console().print(table)


def _emit(text: Text, console: Any = None) -> None:
    if console is not None:
        console.print(text)
    else:
        typer.echo(text.plain)


def notification_detail(n: Notification, tz: tzinfo, course: str | None = None) -> None:
    """Every field, the data as pretty JSON."""
    from rich.text import Text

    now = datetime.now(UTC)
    read = f"{absolute(n.read_at, tz)} ({relative(n.read_at, now, tz)})" if n.read_at else None
    fields = [
        ("id", Text(n.id)),
        ("type", Text(one_line(n.type), style=TYPE_STYLES.get(n.type, ""))),
        ("priority", Text(one_line(n.priority), style=PRIORITY_STYLES.get(n.priority, ""))),
        ("created", Text(f"{absolute(n.created_at, tz)} ({relative(n.created_at, now, tz)})")),
        ("read", Text(read or "no (unread)")),
        ("course", Text(f"{one_line(course)} ({n.course_id})" if course else n.course_id or "-")),
        ("title", Text(one_line(n.title), style="bold")),
        ("message", Text(printable(n.message))),
        ("link", Text(one_line(n.link) if n.link else "-")),
        ("user", Text(n.user_id)),
    ]
    console = _console() if is_terminal() else None
    for label, value in fields:
        _emit(Text.assemble((f"{label + ':':<10}", "bold"), value), console)
    data = printable(json.dumps(dict(n.data), indent=2, sort_keys=True, ensure_ascii=False))
    _emit(Text.assemble(("data:", "bold"), "\n", Text(data, style="cyan")), console)


def _stamp(at: datetime, tz: tzinfo) -> str:
    local = at.astimezone(tz)
    return (
        f"{local:%H:%M:%S}" if local.date() == datetime.now(tz).date() else f"{local:%b %d %H:%M}"
    )


def broadcast_plain(b: Broadcast, tz: tzinfo) -> str:
    """A broadcast on one line, into a pipe: time, `broadcast`, where to, who — message."""
    stamp = b.at.astimezone(tz).isoformat(timespec="seconds")
    where = one_line(b.title or b.course_id or b.workshop_id or "")
    sender = one_line(b.sender_name or b.sender_id)
    return f"{stamp}  broadcast  {where}  {sender}: {one_line(b.message)}"


def tail_printer(
    tz: tzinfo,
    as_json: bool = False,
    *,
    bell: bool = False,
    course_title: Callable[[str], str | None] = lambda _id: None,
) -> Callable[[Notification | Broadcast], None]:
    """Prints one line per notification or broadcast as it arrives (flushed, also into a
    pipe). On a terminal: time, type in its colour, course, title, and the link, clickable
    (OSC 8) where the terminal supports it. `bell` rings (on stderr) for high and urgent ones,
    and for broadcasts."""

    def ring(n: Notification | Broadcast) -> None:
        if bell and (isinstance(n, Broadcast) or n.priority in ("high", "urgent")):
            sys.stderr.write("\a")
            sys.stderr.flush()

    if as_json:

        def json_line(n: Notification | Broadcast) -> None:
            typer.echo(json.dumps(n.to_json()))  # echo flushes every line
            ring(n)

        return json_line
    if not is_terminal():

        def plain(n: Notification | Broadcast) -> None:
            typer.echo(broadcast_plain(n, tz) if isinstance(n, Broadcast) else plain_line(n, tz))
            ring(n)

        return plain
    from rich.style import Style
    from rich.text import Text

    console = _console()

    def line(n: Notification | Broadcast) -> None:
        if isinstance(n, Broadcast):
            text = Text.assemble(
                (f"{_stamp(n.at, tz):>12} ", "dim"),
                ("» ", "bold magenta"),
                (f"{'broadcast':<21} ", "bold magenta"),
                (f"{one_line(n.title or '')[:24]}  ", "italic"),
                (one_line(n.sender_name or n.sender_id) + ": ", "bold"),
                one_line(n.message),
            )
        else:
            course = course_title(n.course_id) if n.course_id else None
            link = n.link if n.link and n.link.startswith(("http://", "https://")) else None
            title_style = Style(bold=True, link=link) if link else Style(bold=True)
            text = Text.assemble(
                (f"{_stamp(n.created_at, tz):>12} ", "dim"),
                ("● " if not n.read else "  ", "bold cyan"),
                (f"{one_line(n.type):<21} ", TYPE_STYLES.get(n.type, "")),
                (f"{one_line(course)[:24]}  " if course else "", "italic"),
                (one_line(n.title), title_style),
                "  ",
                (one_line(n.message), "dim"),
            )
        console.print(text, no_wrap=True, overflow="ellipsis")
        ring(n)

    return line


ACTIVITY_STYLES = {
    "enrollment": "green",
    "completion": "bold green",
    "workshop_registration": "blue",
    "check_in": "bold blue",
    "review": "yellow",
    "question": "magenta",
    "payment": "bold yellow",
}


def activity_summary(item: Item) -> str:
    """What happened, in words (the item's own fields; made inert by the caller)."""
    d = item.data
    match item.kind:
        case "enrollment":
            return "enrolled"
        case "completion":
            return "completed the course"
        case "workshop_registration":
            return "registered"
        case "check_in":
            return "checked in"
        case "review":
            comment = f": “{d['comment']}”" if d.get("comment") else ""
            return f"rated it {d.get('rating')}/5{comment}"
        case "question":
            return f"asked: “{d.get('body') or ''}”"
        case "payment":
            cents = d.get("amount_cents")
            amount = f"{cents / 100:,.2f}" if isinstance(cents, int) else str(cents)
            return f"paid {amount} {d.get('currency') or ''}".rstrip()
    details = d.get("details")
    return item.kind.replace("_", " ") + (f" {json.dumps(details)}" if details else "")


def activity_plain(item: Item, tz: tzinfo) -> str:
    stamp = item.at.astimezone(tz).isoformat(timespec="seconds")
    who = item.student_name or item.student_id or "someone"
    return (
        f"{stamp}  {one_line(item.kind):<21}  {one_line(item.title or '')}  "
        f"{one_line(who)} {one_line(activity_summary(item))}"
    )


def activity_printer(tz: tzinfo, as_json: bool = False) -> Callable[[Item], None]:
    """One line per feed entry (flushed, also into a pipe); JSON Lines with `as_json`."""
    if as_json:
        return lambda item: typer.echo(json.dumps(item.to_json()))
    if not is_terminal():
        return lambda item: typer.echo(activity_plain(item, tz))
    from rich.text import Text

    console = _console()

    def line(item: Item) -> None:
        who = item.student_name or item.student_id or "someone"
        console.print(
            Text.assemble(
                (f"{_stamp(item.at, tz):>12} ", "dim"),
                (f"{one_line(item.kind):<21} ", ACTIVITY_STYLES.get(item.kind, "cyan")),
                (f"{one_line(item.title or '')[:24]}  ", "italic"),
                (one_line(who) + " ", "bold"),
                one_line(activity_summary(item)),
            ),
            no_wrap=True,
            overflow="ellipsis",
        )

    return line


def stop_when_reader_leaves(stop: threading.Event) -> None:
    """Set `stop` when the reader of our stdout pipe closes it: `tail | head -n 3` ends when head
    does, not at the next write (as coreutils' tail does)."""
    import select
    import stat

    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode) or not hasattr(select, "poll"):
            return
    except (OSError, ValueError):  # no real stdout (a test runner's buffer)
        return
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR / POLLHUP only: the write end's reader has closed

    def watch() -> None:
        while not stop.is_set():
            if poller.poll(250):
                stop.set()

    threading.Thread(target=watch, name="pipe-reader", daemon=True).start()


def unread_counts(by_type: Mapping[str, int]) -> None:
    """The total, then one line per type (most first)."""
    typer.echo(f"{sum(by_type.values())} unread")
    for kind, count in sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0])):
        typer.echo(f"  {one_line(kind):<21} {count}")


CLEANED = {
    "notifications": "notifications created before {cutoff}{keep}",
    "presence": "presence rows offline since before {cutoff}{keep}",
    "ledger": "ledger rows that can no longer prevent a repeat",
    "workers": "records of workers gone for a week",
    "activity": "activity entries from before {cutoff}{keep}",
    "runs": "records of maintenance runs older than a week",
    "peaks": "daily presence peaks of days before {cutoff}{keep}",
}


def cleanup_report(result: Mapping[str, Any], tz: tzinfo, retention: Mapping[str, str]) -> None:
    """The cut-offs used and what was (or, dry, would be) deleted."""
    verb = "would delete" if result["dry_run"] else "deleted"
    for key, count in result["deleted"].items():
        kept_as = {"activity": "notifications", "peaks": "presence"}.get(key, key)  # as long
        cutoff = result["cutoffs"].get(kept_as)
        stamp = absolute(datetime.fromisoformat(cutoff), tz) if cutoff else ""
        keep = f" (retention {retention[kept_as]})" if kept_as in retention else ""
        what = CLEANED.get(key, key).format(cutoff=stamp, keep=keep)
        typer.echo(f"{key}: {verb} {count} {what}")
    if result["dry_run"]:
        typer.echo("dry run: nothing was deleted", err=True)


# --- presence ---------------------------------------------------------------------------------

PRESENCE_STYLES = {"online": "green", "away": "yellow", "checked_in": "cyan", "offline": "dim"}


def _presence_rows(present: Sequence[Any], tz: tzinfo) -> list[tuple[str, str, str, str, str]]:
    now = datetime.now(UTC)
    return [
        (
            printable(one_line(p.full_name), newlines=False) or p.user_id[:8],
            p.status,
            str(p.devices),
            relative(p.since, now, tz),
            relative(p.last_seen_at, now, tz),
        )
        for p in present
    ]


def _presence_grid(present: Sequence[Any], tz: tzinfo) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for name, justify in (("NAME", "left"), ("STATUS", "left"), ("DEVICES", "right")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    table.add_column("SINCE", justify="right", no_wrap=True)
    table.add_column("LAST SEEN", justify="right", no_wrap=True)
    for name, state, devices, since, seen in _presence_rows(present, tz):
        table.add_row(
            _cut(name), Text(state, style=PRESENCE_STYLES.get(state, "")), devices, since, seen
        )
    return table


def presence_table(present: Sequence[Any], tz: tzinfo) -> None:
    """Who is present: a table on a terminal, one line each (tab-separated) into a pipe."""
    if not is_terminal():
        for row in _presence_rows(present, tz):
            typer.echo("\t".join(row))
        return
    _console().print(_presence_grid(present, tz))


def presence_event_line(event: Mapping[str, Any], tz: tzinfo) -> str:
    """`14:02:07  join    Ada Lovelace (online)`."""
    at = datetime.fromisoformat(event["at"]).astimezone(tz)
    name = printable(one_line(event["full_name"]), newlines=False) or event["user_id"][:8]
    return f"{at:%H:%M:%S}  {event['event']:<6}  {name} ({event['status']})"


def presence_live(title: str, present: Sequence[Any], recent: Sequence[str], tz: tzinfo) -> None:
    """The live view: cleared and drawn again (at most four times a second, core/refresh)."""
    console = _console()
    console.clear()
    online = sum(1 for p in present if p.status != "checked_in")
    console.print(f"[bold]{title}[/bold]  {online} online, {len(present)} present", markup=True)
    console.print(_presence_grid(present, tz))
    for line in recent:
        console.print(line, markup=False, highlight=False)


def presence_stats(items: Sequence[Any]) -> None:
    """Online now and today's peak per course or workshop."""
    if not is_terminal():
        for i in items:
            kind = "course" if i.course_id else "workshop"
            title = printable(one_line(i.title), newlines=False)
            typer.echo(f"{kind}\t{title}\t{i.online}\t{i.peak_today}")
        return
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("", no_wrap=True)
    table.add_column("TITLE", ratio=1, no_wrap=True)
    table.add_column("ONLINE", justify="right", no_wrap=True)
    table.add_column("PEAK TODAY", justify="right", no_wrap=True)
    for i in items:
        kind = "course" if i.course_id else "workshop"
        table.add_row(kind, _cut(one_line(i.title)), str(i.online), str(i.peak_today))
    _console().print(table)
