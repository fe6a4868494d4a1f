"""How results look to people: relative times, plain lines for pipes, the terminal table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from humanglue_cli.commands import render
from humanglue_cli.core import timeutil
from humanglue_cli.core.domain import Notification
from humanglue_cli.core.errors import BadInput

NOW = datetime(2024, 5, 10, 15, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def note(
    title: str = "New enrollment in Deep Listening",
    *,
    read: bool = False,
    message: str = "Stu enrolled in Deep Listening.",
    ago: timedelta = timedelta(0),
    type_: str = "enrollment",
) -> Notification:
    return Notification(
        id="3f2a9c1e-0000-4000-8000-000000000001",
        user_id="u",
        type=type_,
        title=title,
        message=message,
        data={"course_id": "c"},
        link=None,
        priority="normal",
        read_at=NOW if read else None,
        created_at=NOW - ago,
    )


@pytest.mark.parametrize(
    ("ago", "expected"),
    [
        (timedelta(seconds=5), "just now"),
        (timedelta(seconds=-20), "just now"),  # a clock a little ahead of ours
        (timedelta(minutes=3, seconds=59), "3 min ago"),
        (timedelta(hours=2, minutes=30), "2 h ago"),
        (timedelta(hours=23, minutes=59), "23 h ago"),
        (timedelta(hours=30), "yesterday"),
        (timedelta(days=4), "4 days ago"),
        (timedelta(days=40), "Mar 31"),
        (timedelta(days=400), "2023-04-06"),
        (timedelta(hours=-2), "2024-05-10 19:00"),  # far in the future: the time itself
    ],
)
def test_relative_times(ago: timedelta, expected: str) -> None:
    assert render.relative(NOW - ago, NOW, BERLIN) == expected


def test_yesterday_follows_the_display_time_zone() -> None:
    # 25 h before 00:30 Berlin time is 23:30 two days before in Berlin: not "yesterday".
    now = datetime(2024, 5, 10, 22, 30, tzinfo=UTC)  # 00:30 on the 11th in Berlin
    when = now - timedelta(hours=25)  # 23:30 on the 9th in Berlin, the 9th in UTC too
    assert render.relative(when, now, BERLIN) == "2 days ago"
    assert render.relative(when, now, UTC) == "yesterday"


def test_zone_by_name_and_unknown_name_is_bad_input() -> None:
    assert timeutil.zone("Asia/Tokyo") == ZoneInfo("Asia/Tokyo")
    assert timeutil.zone(None).utcoffset(NOW) is not None
    with pytest.raises(BadInput, match="unknown time zone"):
        timeutil.zone("Mars/Olympus_Mons")


def test_plain_line_is_one_line_with_fields_split_by_spaces() -> None:
    n = note(title="Tabs\tand\nnewlines", message="a  [bold]b[/bold]\n c")
    line = render.plain_line(n, BERLIN)
    assert "\n" not in line and "\t" not in line and "\x1b" not in line
    fields = line.split()
    assert fields[:4] == [n.id, "unread", "2024-05-10T17:00:00+02:00", "enrollment"]
    assert line.endswith("Tabs and newlines — a [bold]b[/bold] c")
    assert render.plain_line(note(read=True), UTC).split()[1] == "read"


def test_table_into_a_pipe_is_plain(capsys: pytest.CaptureFixture[str]) -> None:
    items = [note(ago=timedelta(minutes=3)), note(read=True, type_="review")]
    render.notification_table(items, UTC)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "─" not in out and "●" not in out
    assert len(out.splitlines()) == 2


def test_table_on_a_terminal_has_colour_short_ids_and_relative_times(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(render, "is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "150")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    age = datetime.now(UTC) - NOW  # the table is relative to the real clock
    items = [note(ago=timedelta(minutes=3) - age), note(read=True, ago=timedelta(hours=2) - age)]
    render.notification_table(items, UTC)
    out = capsys.readouterr().out
    assert "\x1b[" in out and "●" in out
    assert "3f2a9c1e" in out and items[0].id not in out
    assert "min ago" in out and "2 h ago" in out


def test_detail_shows_every_field_and_data_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    render.notification_detail(note(ago=timedelta(hours=3)), ZoneInfo("Asia/Tokyo"))
    out = capsys.readouterr().out
    assert "2024-05-10 21:00:00 JST" in out
    for label in (
        "id:",
        "type:",
        "priority:",
        "created:",
        "read:",
        "title:",
        "message:",
        "link:",
        "user:",
        "data:",
    ):
        assert label in out
    assert '"course_id": "c"' in out and "\x1b" not in out


def test_cleanup_report_names_cutoffs_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    result = {
        "dry_run": True,
        "cutoffs": {
            "notifications": "2024-04-10T15:00:00+00:00",
            "presence": "2024-05-09T15:00:00+00:00",
        },
        "deleted": {"notifications": 2, "presence": 1},
    }
    render.cleanup_report(result, UTC, {"notifications": "30d", "presence": "24h"})
    out, err = capsys.readouterr()
    assert (
        "notifications: would delete 2 notifications created before 2024-04-10 15:00:00 UTC" in out
    )
    assert "presence: would delete 1" in out and "(retention 24h)" in out
    assert "dry run" in err
