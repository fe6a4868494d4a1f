"""A person's notifications: list, page, change, count, and the retention cleanup.

Every read and write here names the acting user's id, so each is one that row-level security
could check (ROADMAP.md, security).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core.errors import BadInput, NotFound
from humanglue_cli.core.models import (
    NOTIFICATION_TYPES,
    UTCDateTime,
    notifications,
    student_presence,
)

MIN_PREFIX = 8
_HEX = frozenset("0123456789abcdef-")
N = notifications.c


@dataclass(frozen=True)
class Notification:
    id: str
    user_id: str
    type: str
    title: str
    message: str
    data: dict[str, Any]
    link: str | None
    priority: str
    read_at: datetime | None
    created_at: datetime

    @property
    def read(self) -> bool:
        return self.read_at is not None

    def to_json(self) -> dict[str, Any]:
        """The NOTIFICATION object of CONTRACT §3."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "type": self.type,
            "title": self.title,
            "message": self.message,
            "data": self.data,
            "link": self.link,
            "priority": self.priority,
            "read": self.read,
            "read_at": self.read_at.isoformat() if self.read_at else None,
            "created_at": self.created_at.isoformat(),
        }


def _row(row: Any) -> Notification:
    data = row.data if not isinstance(row.data, str) else json.loads(row.data)
    return Notification(
        str(row.id),
        str(row.user_id),
        row.type,
        row.title,
        row.message,
        data or {},
        row.link,
        row.priority,
        row.read_at,
        row.created_at,
    )


@dataclass(frozen=True)
class Filters:
    """What `notifications list/tail/read-all` narrow to."""

    read: bool | None = None  # True: only read; False: only unread
    types: tuple[str, ...] = ()
    course_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in NOTIFICATION_TYPES]
        if unknown:
            raise BadInput(
                f"unknown notification type {unknown[0]!r} "
                f"(one of: {', '.join(NOTIFICATION_TYPES)})"
            )

    def where(self, user_id: str) -> list[sa.ColumnElement[bool]]:
        conds: list[sa.ColumnElement[bool]] = [N.user_id == user_id]
        if self.read is not None:
            conds.append(N.read_at.is_not(None) if self.read else N.read_at.is_(None))
        if self.types:
            conds.append(N.type.in_(self.types))
        if self.course_id:
            conds.append(N.data["course_id"].as_string() == self.course_id)
        if self.since:
            conds.append(N.created_at >= self.since)
        if self.until:
            conds.append(N.created_at < self.until)
        return conds

    def fingerprint(self) -> str:
        key = json.dumps(
            [
                self.read,
                sorted(self.types),
                self.course_id,
                self.since and self.since.isoformat(),
                self.until and self.until.isoformat(),
            ]
        )
        return hashlib.sha256(key.encode()).hexdigest()[:8]


# --- cursors: opaque to users, validated on the way back in ------------------------------------


def encode_cursor(last: Notification, filters: Filters) -> str:
    raw = json.dumps(
        {"t": last.created_at.isoformat(), "i": last.id, "f": filters.fingerprint()},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, filters: Filters) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        stamp = datetime.fromisoformat(data["t"]).astimezone(UTC)
        ident = str(data["i"])
        fingerprint = data["f"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BadInput(f"not a valid cursor: {cursor[:40]!r}") from None
    if fingerprint != filters.fingerprint():
        raise BadInput("this cursor belongs to a listing with other filters")
    return stamp, ident


@dataclass
class Page:
    items: list[Notification] = field(default_factory=list)
    next_cursor: str | None = None


def list_page(
    conn: sa.Connection, user_id: str, filters: Filters, limit: int, cursor: str | None = None
) -> Page:
    """Newest first, keyset-paged on (created_at, id): any depth costs the same."""
    if not 1 <= limit <= 1000:
        raise BadInput(f"--limit must be between 1 and 1000, not {limit}")
    conds = filters.where(user_id)
    if cursor:
        stamp, ident = decode_cursor(cursor, filters)
        conds.append(sa.or_(N.created_at < stamp, sa.and_(N.created_at == stamp, N.id < ident)))
    rows = conn.execute(
        sa.select(notifications)
        .where(*conds)
        .order_by(N.created_at.desc(), N.id.desc())
        .limit(limit + 1)
    ).all()
    items = [_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(items, encode_cursor(items[-1], filters) if more else None)


def latest(conn: sa.Connection, user_id: str, filters: Filters, count: int) -> list[Notification]:
    """The last `count`, oldest first (the start of a tail)."""
    rows = conn.execute(
        sa.select(notifications)
        .where(*filters.where(user_id))
        .order_by(N.created_at.desc(), N.id.desc())
        .limit(count)
    ).all()
    return [_row(r) for r in reversed(rows)]


def created_since(
    conn: sa.Connection, user_id: str, filters: Filters, since: datetime
) -> list[Notification]:
    """Everything from `since` on, oldest first."""
    rows = conn.execute(
        sa.select(notifications)
        .where(*filters.where(user_id), N.created_at >= since)
        .order_by(N.created_at, N.id)
    ).all()
    return [_row(r) for r in rows]


def keys_since(
    conn: sa.Connection, user_id: str, filters: Filters, since: datetime
) -> list[tuple[str, datetime]]:
    """(id, created_at) of everything from `since` on: a tail's cheap probe of its look-back."""
    rows = conn.execute(
        sa.select(N.id, N.created_at).where(*filters.where(user_id), N.created_at >= since)
    ).all()
    return [(str(r.id), r.created_at) for r in rows]


def get_many(conn: sa.Connection, user_id: str, ids: Sequence[str]) -> list[Notification]:
    """The user's notifications with these full ids, oldest first (unknown ids are skipped)."""
    found: list[Notification] = []
    for start in range(0, len(ids), 500):
        rows = conn.execute(
            sa.select(notifications).where(
                N.user_id == user_id, N.id.in_(list(ids[start : start + 500]))
            )
        ).all()
        found.extend(_row(r) for r in rows)
    return sorted(found, key=lambda n: (n.created_at, n.id))


def database_now(conn: sa.Connection) -> datetime:
    """The database's clock (what `created_at` defaults to), as an aware UTC datetime."""
    now: datetime = conn.execute(
        sa.select(sa.func.current_timestamp(type_=UTCDateTime()))
    ).scalar_one()
    return now


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def check_refs(refs: Sequence[str]) -> list[str]:
    """Normalized id references; BadInput for one that is no id or prefix of one (before any
    database is touched)."""
    checked = []
    for ref in refs:
        ref = ref.strip().lower()
        if (
            not MIN_PREFIX <= len(ref) <= 36
            or any(c not in _HEX for c in ref)
            or (len(ref) == 36 and not _is_uuid(ref))
        ):
            raise BadInput(
                f"not a notification id: {ref!r} (give the id or at least its first "
                f"{MIN_PREFIX} characters)"
            )
        checked.append(ref)
    if not checked:
        raise BadInput("give at least one notification id")
    return checked


def resolve_ids(conn: sa.Connection, user_id: str, refs: Sequence[str]) -> list[str]:
    """Full ids for ids or unique prefixes (≥ 8 characters) of the user's notifications.

    All or nothing: BadInput for a malformed or ambiguous one (candidates named), NotFound
    for one that is unknown or someone else's — the two are indistinguishable.
    """
    resolved: list[str] = []
    for ref in check_refs(refs):
        whole = len(ref) == 36
        cond = N.id == ref if whole else sa.cast(N.id, sa.String).like(ref + "%")
        found = (
            conn.execute(sa.select(N.id).where(N.user_id == user_id, cond).order_by(N.id).limit(6))
            .scalars()
            .all()
        )
        if not found:
            raise NotFound(f"no notification {ref}")
        if len(found) > 1:
            shown = ", ".join(str(f) for f in found[:5])
            raise BadInput(f"id prefix {ref} is ambiguous: {shown}{' …' if len(found) > 5 else ''}")
        resolved.append(str(found[0]))
    return list(dict.fromkeys(resolved))


def get(conn: sa.Connection, user_id: str, ref: str) -> Notification:
    (full,) = resolve_ids(conn, user_id, [ref])
    return _row(conn.execute(sa.select(notifications).where(N.id == full)).one())


def set_read(
    conn: sa.Connection, user_id: str, ids: Sequence[str], read: bool, now: datetime
) -> int:
    stmt = sa.update(notifications).where(N.user_id == user_id, N.id.in_(list(ids)))
    stmt = (
        stmt.where(N.read_at.is_(None)).values(read_at=now)
        if read
        else stmt.where(N.read_at.is_not(None)).values(read_at=None)
    )
    return conn.execute(stmt).rowcount


def delete(conn: sa.Connection, user_id: str, ids: Sequence[str]) -> int:
    return conn.execute(
        sa.delete(notifications).where(N.user_id == user_id, N.id.in_(list(ids)))
    ).rowcount


def read_all(
    conn: sa.Connection, user_id: str, filters: Filters, up_to: datetime, now: datetime
) -> int:
    """Mark read what existed at `up_to` — one arriving meanwhile stays unread (GitHub's
    last_read_at)."""
    unread = Filters(
        read=False,
        types=filters.types,
        course_id=filters.course_id,
        since=filters.since,
        until=filters.until,
    )
    return conn.execute(
        sa.update(notifications)
        .where(*unread.where(user_id), N.created_at <= up_to)
        .values(read_at=now)
    ).rowcount


def count_unread(conn: sa.Connection, user_id: str) -> dict[str, int]:
    rows = conn.execute(
        sa.select(N.type, sa.func.count())
        .where(N.user_id == user_id, N.read_at.is_(None))
        .group_by(N.type)
        .order_by(N.type)
    ).all()
    return {r[0]: int(r[1]) for r in rows}


def cleanup(
    conn: sa.Connection, notifications_before: datetime, presence_before: datetime, dry_run: bool
) -> dict[str, int]:
    """Delete (or, dry, count) notifications older than a cut-off and presence offline past one."""
    expired_n = N.created_at < notifications_before
    expired_p = sa.and_(
        student_presence.c.status == "offline", student_presence.c.last_seen_at < presence_before
    )
    if dry_run:
        return {
            "notifications": conn.execute(
                sa.select(sa.func.count()).select_from(notifications).where(expired_n)
            ).scalar_one(),
            "presence": conn.execute(
                sa.select(sa.func.count()).select_from(student_presence).where(expired_p)
            ).scalar_one(),
        }
    return {
        "notifications": conn.execute(sa.delete(notifications).where(expired_n)).rowcount,
        "presence": conn.execute(sa.delete(student_presence).where(expired_p)).rowcount,
    }
