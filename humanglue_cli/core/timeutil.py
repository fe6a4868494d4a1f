"""Durations, points in time, and the display time zone.

Durations are `90s`, `15m`, `24h`, `30d`, `2w`, at most a century: anything longer is a typo
and is refused (exit 2) rather than overflowing a date. A timestamp without an offset is read
in the display zone — the zone every time on screen is shown in — so that a time copied from
the screen selects what the screen showed.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta, tzinfo

from humanglue_cli.core.errors import BadInput
from humanglue_cli.core.text import shown

_DURATION = re.compile(r"^\s*([0-9]{1,30})\s*([smhdw])\s*$")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_DURATION = timedelta(days=36500)


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """`90s`, `15m`, `24h`, `30d` or `2w` as a timedelta.

    Raises:
        BadInput: not such a duration, or longer than a century.
    """
    match = _DURATION.match(text or "")
    if not match:
        raise BadInput(f"{what}: not a duration: {shown(text)} (use e.g. 90s, 15m, 24h, 30d)")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DURATION.total_seconds():
        raise BadInput(f"{what}: {shown(text)} is too long (at most {exact(MAX_DURATION)})")
    return timedelta(seconds=seconds)


def is_duration(text: str) -> bool:
    return bool(_DURATION.match(text or ""))


def exact(delta: timedelta) -> str:
    """A duration in the largest unit that divides it: `30d`, `36h`, `90s`."""
    seconds = int(delta.total_seconds())
    for unit, size in _UNIT_SECONDS.items():
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def approximate(delta: timedelta) -> str:
    """A duration in its largest whole unit, rounded down: `3d`, `5h`, `12m`, `40s`."""
    seconds = max(int(delta.total_seconds()), 0)
    for unit in ("d", "h", "m"):
        if seconds >= _UNIT_SECONDS[unit]:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def zone(name: str | None) -> tzinfo:
    """The display time zone: a tz database name (`--tz`, `HUMANGLUE_TZ`), else the system's.

    Raises:
        BadInput: an unknown zone name.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name:
        try:
            return ZoneInfo(name)
        except (OSError, ValueError, ZoneInfoNotFoundError):
            raise BadInput(
                f"unknown time zone {shown(name)} (use e.g. UTC or Europe/Berlin)"
            ) from None
    try:
        tz_env = os.environ.get("TZ", "").lstrip(":")
        if tz_env:
            return ZoneInfo(tz_env)
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return datetime.now().astimezone().tzinfo or UTC


def parse_when(text: str, tz: tzinfo, now: datetime | None = None, what: str = "time") -> datetime:
    """A point in time: a duration ago (`1h`) or an ISO-8601 date or timestamp.

    A timestamp without an offset is in `tz`, the display zone.

    Raises:
        BadInput: neither, or out of range.
    """
    now = now or datetime.now(UTC)
    if is_duration(text):
        return now - parse_duration(text, what)
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=tz)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadInput(
            f"{what}: not a time: {shown(text)} (use a duration such as 1h or 7d, or ISO-8601 "
            "such as 2026-11-24T09:30, read in the display zone)"
        ) from None
