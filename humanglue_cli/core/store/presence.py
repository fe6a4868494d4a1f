"""Presence (`student_presence`, `hg_presence_peaks`): who is online where, and each day's peak.

A row is one user × scope × device; scope is 'course:<id>' or 'workshop:<id>'. A row is
online iff `status IN ('online', 'away') AND last_seen_at > now - timeout` (the database's
clock); a person is online in a scope if any of their rows is, and counted once.

Writers: `beat`/`beat_many`/`leave` (the public API in humanglue_cli/presence.py wraps them),
`sweep` (stale rows → offline), the retention (`expire_offline`, `expire_peaks`). Readers:
`online` (`presence list`), `stats` (`presence stats`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core.db import now, now_plus
from humanglue_cli.core.models import (
    UTCDateTime,
    courses,
    presence_peaks,
    profiles,
    student_presence,
    workshop_registrations,
    workshops,
)

S = student_presence.c
K = presence_peaks.c
ONLINE = ("online", "away")
STATUSES = ("online", "away")
CHECKED_IN = "checked_in"  # a workshop's registrant checked in today, with no device online


def scope_of(course_id: str | None = None, workshop_id: str | None = None) -> str:
    """'course:<id>' or 'workshop:<id>'; exactly one of the two must be given."""
    if (course_id is None) == (workshop_id is None):
        raise ValueError("give exactly one of course_id or workshop_id")
    return f"course:{course_id}" if course_id is not None else f"workshop:{workshop_id}"


@dataclass(frozen=True)
class Beat:
    """One heartbeat: a user's device, in a course or a workshop."""

    user_id: str
    course_id: str | None = None
    workshop_id: str | None = None
    device: str = ""
    status: str = "online"

    def row(self) -> dict[str, Any]:
        if self.status not in STATUSES:
            raise ValueError(f"status must be online or away, not {self.status!r}")
        return {
            "user_id": str(self.user_id),
            "scope": scope_of(self.course_id, self.workshop_id),
            "device_id": self.device or "",
            "course_id": None if self.course_id is None else str(self.course_id),
            "workshop_id": None if self.workshop_id is None else str(self.workshop_id),
            "status": self.status,
        }


# The single-row beat, as the platform may write it (README.md, "Presence"). `joined_at` moves
# only when the device comes back (offline, or silent past the timeout): since when it is on.
_JOINED = (
    "CASE WHEN p.status = 'offline' OR p.joined_at IS NULL OR p.last_seen_at <= {cutoff} "
    "THEN excluded.joined_at ELSE p.joined_at END"
)
_UPSERT = (
    "INSERT INTO student_presence AS p\n"
    "  (user_id, scope, device_id, course_id, workshop_id, status, last_seen_at, joined_at)\n"
    "{rows}\n"
    "ON CONFLICT (user_id, scope, device_id) DO UPDATE SET status = excluded.status,\n"
    "  last_seen_at = excluded.last_seen_at, course_id = excluded.course_id,\n"
    "  workshop_id = excluded.workshop_id,\n"
    f"  joined_at = {_JOINED}"
)
_PG_CUTOFF = "excluded.last_seen_at - make_interval(secs => :timeout_s)"
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
_SQLITE_CUTOFF = "strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || :timeout_s || ' seconds')"
_ONE_ROW = "VALUES (:user_id, :scope, :device_id, :course_id, :workshop_id, :status, {n}, {n})"
_PG_MANY = (
    "SELECT b.u, b.s, b.d, b.c, b.w, b.st, now(), now()\n"
    "FROM unnest(CAST(:users AS uuid[]), CAST(:scopes AS text[]), CAST(:devices AS text[]),\n"
    "            CAST(:courses AS uuid[]), CAST(:workshops AS uuid[]),\n"
    "            CAST(:statuses AS text[])) AS b(u, s, d, c, w, st)"
)
BEAT_ONE = {
    "postgresql": sa.text(
        _UPSERT.format(rows=_ONE_ROW.format(n="now()"), cutoff=_PG_CUTOFF)
        .replace(":course_id", "CAST(:course_id AS uuid)")
        .replace(":workshop_id", "CAST(:workshop_id AS uuid)")
        .replace(":user_id", "CAST(:user_id AS uuid)")
    ),
    "sqlite": sa.text(_UPSERT.format(rows=_ONE_ROW.format(n=_SQLITE_NOW), cutoff=_SQLITE_CUTOFF)),
}
BEAT_MANY_PG = sa.text(_UPSERT.format(rows=_PG_MANY, cutoff=_PG_CUTOFF))


def beat(conn: sa.Connection, beats: Sequence[Beat], timeout: timedelta) -> int:
    """Upsert `beats` (one statement on PostgreSQL, one prepared statement run for each on
    SQLite); a later beat of the same device wins. Returns how many rows were written."""
    rows = {}
    for b in beats:
        row = b.row()
        rows[(row["user_id"], row["scope"], row["device_id"])] = row
    if not rows:
        return 0
    seconds = timeout.total_seconds()
    if conn.dialect.name == "postgresql" and len(rows) > 1:
        values = list(rows.values())
        params: dict[str, Any] = {
            name: [r[key] for r in values]
            for name, key in (
                ("users", "user_id"),
                ("scopes", "scope"),
                ("devices", "device_id"),
                ("courses", "course_id"),
                ("workshops", "workshop_id"),
                ("statuses", "status"),
            )
        }
        conn.execute(BEAT_MANY_PG, {**params, "timeout_s": seconds})
        return len(values)
    statement = BEAT_ONE[conn.dialect.name]
    conn.execute(statement, [{**r, "timeout_s": seconds} for r in rows.values()])
    return len(rows)


def leave(
    conn: sa.Connection, user_id: str, scope: str, device: str | None, timeout: timedelta
) -> bool:
    """Mark the device (None: every device) offline; True while another device is online."""
    where = [S.user_id == user_id, S.scope == scope, S.status.in_(ONLINE)]
    if device is not None:
        where.append(S.device_id == device)
    conn.execute(
        sa.update(student_presence).where(*where).values(status="offline", last_seen_at=now(conn))
    )
    still = sa.select(sa.func.count()).where(
        S.user_id == user_id, S.scope == scope, *_online(conn, timeout)
    )
    return bool(conn.execute(still).scalar_one())


def _online(conn: sa.Connection, timeout: timedelta) -> list[sa.ColumnElement[bool]]:
    """A row is online: online or away, and beat within the timeout (the database's clock)."""
    return [S.status.in_(ONLINE), S.last_seen_at > now_plus(conn, -timeout)]


def sweep(conn: sa.Connection, now: datetime, timeout: timedelta) -> int:
    """Mark rows online or away that have not beaten since `now - timeout` offline (their
    `last_seen_at`, the last beat, is kept: the leave happened after it). Returns how many."""
    stale = sa.and_(S.status.in_(ONLINE), S.last_seen_at <= now - timeout)
    return conn.execute(sa.update(student_presence).where(stale).values(status="offline")).rowcount


def offline_before(before: datetime) -> sa.ColumnElement[bool]:
    """Rows offline since before `before` (the presence retention), for batched deletes."""
    return sa.and_(S.status == "offline", S.last_seen_at < before)


def expire_offline(conn: sa.Connection, before: datetime, dry_run: bool = False) -> int:
    """Delete (or count) rows offline since before `before` (the presence retention)."""
    old = sa.and_(S.status == "offline", S.last_seen_at < before)
    if dry_run:
        query = sa.select(sa.func.count()).select_from(student_presence).where(old)
        return int(conn.execute(query).scalar_one())
    return conn.execute(sa.delete(student_presence).where(old)).rowcount


def _day(conn: sa.Connection, when: datetime) -> Any:
    day = when.astimezone(UTC).date()
    return day.isoformat() if conn.dialect.name == "sqlite" else day


def peaks_before(conn: sa.Connection, before: datetime) -> sa.ColumnElement[bool]:
    """The daily peaks of UTC days before `before`'s (the presence retention), for batched
    deletes."""
    old: sa.ColumnElement[bool] = K.day < _day(conn, before)
    return old


def expire_peaks(conn: sa.Connection, before: datetime, dry_run: bool = False) -> int:
    """Delete (or count) the daily peaks of UTC days before `before`'s."""
    old = K.day < _day(conn, before)
    if dry_run:
        query = sa.select(sa.func.count()).select_from(presence_peaks).where(old)
        return int(conn.execute(query).scalar_one())
    return conn.execute(sa.delete(presence_peaks).where(old)).rowcount


# --- readers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Present:
    """A person present in a scope: online or away on some device, or (workshops) checked in."""

    user_id: str
    full_name: str
    status: str  # online (any device online), away (all away), checked_in
    devices: int
    since: datetime
    last_seen_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "full_name": self.full_name,
            "status": self.status,
            "devices": self.devices,
            "since": self.since.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
        }


def online(
    conn: sa.Connection, course_id: str | None, workshop_id: str | None, timeout: timedelta
) -> list[Present]:
    """Who is online in the course or workshop, oldest arrival first; in a workshop, also who
    checked in today (UTC) and has no device online (status `checked_in`)."""
    scope = scope_of(course_id, workshop_id)
    if conn.dialect.name == "postgresql" and conn.execute(_ACTING).scalar() is not None:
        # A person's view: one check of the scope (migration 0007), not the profiles' policy
        # once per person.
        params = {"scope": scope, "timeout_s": timeout.total_seconds()}
        found = [
            Present(str(u), name or "", "online" if on else "away", int(n), since, last)
            for u, name, on, n, since, last in conn.execute(_ONLINE_PG, params)
        ]
    else:
        found = _online_rows(conn, scope, timeout)
    if workshop_id is not None:
        here = {p.user_id for p in found}
        found += [p for p in checked_in_today(conn, workshop_id) if p.user_id not in here]
    return sorted(found, key=lambda p: (p.since, p.user_id))


_ACTING = sa.text("SELECT hg_current_person()")
_ONLINE_PG = sa.text(
    "SELECT user_id, full_name, online, devices, since, last_seen_at "
    "FROM hg_presence_online(:scope, :timeout_s)"
).columns(
    sa.column("user_id", sa.Text),
    sa.column("full_name"),
    sa.column("online"),
    sa.column("devices"),
    sa.column("since", UTCDateTime()),
    sa.column("last_seen_at", UTCDateTime()),
)


def _online_rows(conn: sa.Connection, scope: str, timeout: timedelta) -> list[Present]:
    rows = (
        sa.select(
            S.user_id,
            sa.func.max(sa.case((S.status == "online", 1), else_=0)).label("on"),
            sa.func.count().label("devices"),
            sa.func.min(sa.func.coalesce(S.joined_at, S.last_seen_at)).label("since"),
            sa.func.max(S.last_seen_at).label("last"),
        )
        .where(S.scope == scope, *_online(conn, timeout))
        .group_by(S.user_id)
        .subquery()
    )
    query = sa.select(
        rows.c.user_id,
        profiles.c.full_name,
        rows.c.on,
        rows.c.devices,
        sa.type_coerce(rows.c.since, UTCDateTime()),
        sa.type_coerce(rows.c["last"], UTCDateTime()),
    ).join(profiles, profiles.c.id == rows.c.user_id)
    return [
        Present(str(u), name or "", "online" if on else "away", int(n), since, last)
        for u, name, on, n, since, last in conn.execute(query)
    ]


def _today_start(conn: sa.Connection) -> datetime:
    from humanglue_cli.core.db import current_time

    return current_time(conn).replace(hour=0, minute=0, second=0, microsecond=0)


_CHECK_INS_PG = sa.text(
    "SELECT c.user_id, p.full_name, c.checked_in_at "
    "FROM hg_workshop_check_ins(CAST(:workshop AS uuid), :since) AS c "
    "JOIN profiles AS p ON p.id = c.user_id"
).columns(sa.column("user_id", sa.Text), sa.column("full_name"), sa.column("at", UTCDateTime()))


def checked_in_today(conn: sa.Connection, workshop_id: str) -> list[Present]:
    """The workshop's registrants who checked in since the start of today (UTC). On
    PostgreSQL through `hg_workshop_check_ins` (migration 0007): for its instructors and
    admins only, since people may not read registrations."""
    since = _today_start(conn)
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_CHECK_INS_PG, {"workshop": workshop_id, "since": since}).all()
    else:
        R = workshop_registrations.c
        query = (
            sa.select(R.user_id, profiles.c.full_name, sa.func.min(R.checked_in_at))
            .join(profiles, profiles.c.id == R.user_id)
            .where(R.workshop_id == workshop_id, R.checked_in_at >= since)
            .group_by(R.user_id, profiles.c.full_name)
        )
        rows = conn.execute(query).all()
    return [Present(str(u), name or "", CHECKED_IN, 0, at, at) for u, name, at in rows]


@dataclass(frozen=True)
class ScopeStats:
    course_id: str | None
    workshop_id: str | None
    title: str
    online: int
    peak_today: int

    def to_json(self) -> dict[str, Any]:
        key = {"course_id": self.course_id} if self.course_id else {"workshop_id": self.workshop_id}
        return {**key, "title": self.title, "online": self.online, "peak_today": self.peak_today}


def stats(
    conn: sa.Connection,
    course_ids: Iterable[str] | None,
    workshop_ids: Iterable[str] | None,
    timeout: timedelta,
) -> list[ScopeStats]:
    """Online now and today's peak for each course and workshop given (None: all of them).

    A workshop's figures count its check-ins of today as attendance: `online` stays the people
    with a device online (as `stats`' online_now), `peak_today` is at least the people present
    now, online or checked in.
    """
    course_q = sa.select(courses.c.id, courses.c.title)
    workshop_q = sa.select(workshops.c.id, workshops.c.title)
    if course_ids is not None:
        course_q = course_q.where(courses.c.id.in_(list(course_ids)))
    if workshop_ids is not None:
        workshop_q = workshop_q.where(workshops.c.id.in_(list(workshop_ids)))
    titled = [("course", str(i), t) for i, t in conn.execute(course_q)] + [
        ("workshop", str(i), t) for i, t in conn.execute(workshop_q)
    ]
    if not titled:
        return []
    scopes = [f"{kind}:{i}" for kind, i, _ in titled]
    counts_q = (
        sa.select(S.scope, sa.func.count(sa.distinct(S.user_id)))
        .where(*_online(conn, timeout))
        .group_by(S.scope)
    )
    peaks_q = sa.select(K.scope, K.peak).where(K.day == _day(conn, _today_start(conn)))
    if course_ids is not None or workshop_ids is not None:
        counts_q = counts_q.where(S.scope.in_(scopes))
        peaks_q = peaks_q.where(K.scope.in_(scopes))
    counts = {s: int(n) for s, n in conn.execute(counts_q)}
    peaks = {s: int(n) for s, n in conn.execute(peaks_q)}
    items = []
    for kind, ident, title in sorted(titled, key=lambda t: (t[2], t[1])):
        scope = f"{kind}:{ident}"
        now_online = counts.get(scope, 0)
        present = now_online
        if kind == "workshop":
            present = len(online(conn, None, ident, timeout))
        peak = max(peaks.get(scope, 0), now_online, present)
        course, workshop = (ident, None) if kind == "course" else (None, ident)
        items.append(ScopeStats(course, workshop, title, now_online, peak))
    return items
