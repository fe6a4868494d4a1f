"""Notifications: a person's inbox, the worker's inserts and fan-out, and retention.

Every read and change of a person's inbox names the acting user's id, so each is one that
row-level security can check as well (the security issue).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import db
from humanglue_cli.core.domain import NOTIFICATION_TYPES, Audience, Draft, Notification
from humanglue_cli.core.errors import BadInput, NotFound, check_range
from humanglue_cli.core.ids import canonical, references
from humanglue_cli.core.models import course_of, notifications, profiles, unread_counts
from humanglue_cli.core.text import shown

N = notifications.c
U = unread_counts.c
PAGE_LIMIT = (1, 1000)


def row_to_notification(row: Any) -> Notification:
    data = row.data if not isinstance(row.data, str) else json.loads(row.data)
    return Notification(
        str(row.id),
        str(row.user_id),
        row.type,
        row.title,
        row.message,
        data if isinstance(data, dict) else {},
        row.link,
        row.priority,
        row.read_at,
        row.created_at,
    )


@dataclass(frozen=True)
class Filters:
    """What `notifications list/tail/read-all/delete` narrow to."""

    read: bool | None = None  # True: only read; False: only unread
    types: tuple[str, ...] = ()
    course_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in NOTIFICATION_TYPES]
        if unknown:
            raise BadInput(
                f"unknown notification type {shown(unknown[0])} "
                f"(one of: {', '.join(NOTIFICATION_TYPES)})"
            )

    @property
    def narrows(self) -> bool:
        """True if any filter is set."""
        return bool(
            self.read is not None or self.types or self.course_id or self.since or self.until
        )

    def where(self, user_id: str) -> list[sa.ColumnElement[bool]]:
        conds: list[sa.ColumnElement[bool]] = [N.user_id == user_id]
        if self.read is not None:
            conds.append(N.read_at.is_not(None) if self.read else N.read_at.is_(None))
        if self.types:
            conds.append(N.type.in_(self.types))
        if self.course_id:
            conds.append(course_of(N.data) == self.course_id)
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


# --- cursors: opaque to people, validated on the way back in ---------------------------------


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
        ident = canonical(str(data["i"]))  # bound to a uuid column on PostgreSQL
        fingerprint = data["f"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeError, OverflowError):
        raise BadInput(f"not a valid cursor: {shown(cursor, 40)}") from None
    if fingerprint != filters.fingerprint():
        raise BadInput("this cursor belongs to a listing with other filters")
    return stamp, ident


@dataclass
class Page:
    items: list[Notification] = field(default_factory=list)
    next_cursor: str | None = None


def _key_bound(key: tuple[datetime, str]) -> sa.Tuple:
    return sa.tuple_(
        sa.bindparam(None, key[0], type_=N.created_at.type),
        sa.bindparam(None, key[1], type_=N.id.type),
    )


# Row comparisons on (created_at, id), which the (user_id, created_at, id) index takes as its
# bound: a page deep in the past costs what the first does (an OR of the two would be a filter).
def before_key(key: tuple[datetime, str]) -> sa.ColumnElement[bool]:
    return sa.tuple_(N.created_at, N.id) < _key_bound(key)


def after_key(key: tuple[datetime, str]) -> sa.ColumnElement[bool]:
    return sa.tuple_(N.created_at, N.id) > _key_bound(key)


def check_limit(limit: int, name: str = "--limit") -> int:
    return check_range(limit, *PAGE_LIMIT, name)


def list_page(
    conn: sa.Connection, user_id: str, filters: Filters, limit: int, cursor: str | None = None
) -> Page:
    """Newest first, keyset-paged on (created_at, id): any depth costs the same."""
    check_limit(limit)
    conds = filters.where(user_id)
    if cursor:
        conds.append(before_key(decode_cursor(cursor, filters)))
    query = sa.select(notifications).where(*conds).order_by(N.created_at.desc(), N.id.desc())
    rows = conn.execute(query.limit(limit + 1)).all()
    items = [row_to_notification(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(items, encode_cursor(items[-1], filters) if more else None)


def latest(conn: sa.Connection, user_id: str, filters: Filters, count: int) -> list[Notification]:
    """The last `count`, oldest first (the start of a tail)."""
    query = sa.select(notifications).where(*filters.where(user_id))
    rows = conn.execute(query.order_by(N.created_at.desc(), N.id.desc()).limit(count)).all()
    return [row_to_notification(r) for r in reversed(rows)]


def created_since(
    conn: sa.Connection, user_id: str, filters: Filters, since: datetime
) -> list[Notification]:
    """Everything from `since` on, oldest first."""
    query = sa.select(notifications).where(*filters.where(user_id), N.created_at >= since)
    return [row_to_notification(r) for r in conn.execute(query.order_by(N.created_at, N.id))]


def keys_since(
    conn: sa.Connection, user_id: str, filters: Filters, since: datetime
) -> list[tuple[str, datetime]]:
    """(id, created_at) of everything from `since` on: a tail's cheap probe of its look-back."""
    query = sa.select(N.id, N.created_at).where(*filters.where(user_id), N.created_at >= since)
    return [(str(r.id), r.created_at) for r in conn.execute(query)]


def get_many(conn: sa.Connection, user_id: str, ids: Sequence[str]) -> list[Notification]:
    """The user's notifications with these full ids, oldest first (unknown ids are skipped)."""
    found: list[Notification] = []
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        query = sa.select(notifications).where(N.user_id == user_id, N.id.in_(chunk))
        found.extend(row_to_notification(r) for r in conn.execute(query))
    return sorted(found, key=lambda n: (n.created_at, n.id))


def resolve(conn: sa.Connection, user_id: str, refs: Sequence[str]) -> list[str]:
    """Full ids for ids or unique prefixes (≥ 8 characters) of the user's notifications.

    All or nothing: BadInput for a malformed or ambiguous one (candidates named), NotFound for
    one that is unknown or someone else's — the two are indistinguishable.
    """
    resolved: list[str] = []
    for ref in references(refs):
        whole = len(ref) == 36
        cond = N.id == ref if whole else sa.cast(N.id, sa.String).like(ref + "%")
        query = sa.select(N.id).where(N.user_id == user_id, cond).order_by(N.id).limit(6)
        found = conn.execute(query).scalars().all()
        if not found:
            raise NotFound(f"no notification {ref}")
        if len(found) > 1:
            listed = ", ".join(str(f) for f in found[:5])
            raise BadInput(
                f"id prefix {ref} is ambiguous: {listed}{' …' if len(found) > 5 else ''}"
            )
        resolved.append(str(found[0]))
    return list(dict.fromkeys(resolved))


def get(conn: sa.Connection, user_id: str, ref: str) -> Notification:
    (full,) = resolve(conn, user_id, [ref])
    return row_to_notification(conn.execute(sa.select(notifications).where(N.id == full)).one())


def mark(conn: sa.Connection, user_id: str, ids: Sequence[str], read: bool) -> int:
    """Mark read (or unread); returns how many changed state."""
    stmt = sa.update(notifications).where(N.user_id == user_id, N.id.in_(list(ids)))
    if read:
        stmt = stmt.where(N.read_at.is_(None)).values(read_at=db.now(conn))
    else:
        stmt = stmt.where(N.read_at.is_not(None)).values(read_at=None)
    return conn.execute(stmt).rowcount


def mark_all_read(conn: sa.Connection, user_id: str, filters: Filters) -> int:
    """Mark read what the filters select and this statement sees: a notification committed
    while it runs stays unread (GitHub's last_read_at)."""
    unread = Filters(False, filters.types, filters.course_id, filters.since, filters.until)
    stmt = sa.update(notifications).where(*unread.where(user_id))
    return conn.execute(stmt.values(read_at=db.now(conn))).rowcount


def delete(conn: sa.Connection, user_id: str, ids: Sequence[str]) -> int:
    stmt = sa.delete(notifications).where(N.user_id == user_id, N.id.in_(list(ids)))
    return conn.execute(stmt).rowcount


def count_matching(conn: sa.Connection, user_id: str, filters: Filters) -> int:
    query = sa.select(sa.func.count()).select_from(notifications).where(*filters.where(user_id))
    return int(conn.execute(query).scalar_one())


def delete_matching(conn: sa.Connection, user_id: str, filters: Filters) -> int:
    """Delete every notification of the user that the filters select."""
    return conn.execute(sa.delete(notifications).where(*filters.where(user_id))).rowcount


def count_unread(conn: sa.Connection, user_id: str) -> dict[str, int]:
    """Unread notifications by type. PostgreSQL: the sum of the person's counts, which triggers
    keep whoever changes the rows (migration 0010) — a few rows, not a scan of a million;
    SQLite: a count of the rows."""
    if conn.dialect.name == "postgresql":
        query = (
            sa.select(U.type, sa.func.sum(U.n))
            .where(U.user_id == user_id)
            .group_by(U.type)
            .having(sa.func.sum(U.n) > 0)
            .order_by(U.type)
        )
    else:
        query = (
            sa.select(N.type, sa.func.count())
            .where(N.user_id == user_id, N.read_at.is_(None))
            .group_by(N.type)
            .order_by(N.type)
        )
    return {r[0]: int(r[1]) for r in conn.execute(query)}


def fold_unread_counts(conn: sa.Connection) -> int:
    """Fold each person's count rows of a type into one (none if it sums to 0); returns how
    many rows went. Safe beside any writer: it deletes rows and inserts their sums in one
    statement, and rows another statement adds meanwhile stay as they are. A no-op on SQLite."""
    if conn.dialect.name != "postgresql":
        return 0
    return int(conn.execute(_FOLD).scalar_one())


_FOLD = sa.text(
    "WITH split AS (SELECT user_id, type FROM hg_unread_counts GROUP BY user_id, type "
    "HAVING count(*) > 1 OR sum(n) = 0), "
    "gone AS (DELETE FROM hg_unread_counts c USING split "
    "WHERE c.user_id = split.user_id AND c.type = split.type RETURNING c.user_id, c.type, c.n), "
    "kept AS (INSERT INTO hg_unread_counts (user_id, type, n) SELECT user_id, type, sum(n) "
    "FROM gone GROUP BY user_id, type HAVING sum(n) <> 0 RETURNING 1) "
    "SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept)"
)


# --- the worker's side ---------------------------------------------------------------------------


def insert(conn: sa.Connection, drafts: Sequence[Draft], now: datetime) -> int:
    """Create one notification per draft. Distinct, increasing `created_at` within a batch keep
    "newest first" stable: `now` plus a microsecond per row."""
    if not drafts:
        return 0
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            _PG_INSERT,
            {
                "now": now,
                "user_id": [d.user_id for d in drafts],
                "type": [d.type for d in drafts],
                "title": [d.title for d in drafts],
                "message": [d.message for d in drafts],
                "data": [json.dumps(d.data, default=datetime.isoformat) for d in drafts],
                "link": [d.link for d in drafts],
                "priority": [d.priority for d in drafts],
            },
        )
        return len(drafts)
    step = timedelta(microseconds=1)
    rows = [
        {
            "user_id": d.user_id,
            "type": d.type,
            "title": d.title,
            "message": d.message,
            "data": d.data,
            "link": d.link,
            "priority": d.priority,
            "created_at": now + i * step,
        }
        for i, d in enumerate(drafts)
    ]
    conn.execute(sa.insert(notifications), rows)
    return len(rows)


# PostgreSQL: a batch's notifications as one binary array per column, unnested by the server —
# one round trip and one statement text whatever the batch size. A JSON document of the rows
# cost the server a fifth more (parsing it), measured side by side on 1,250-row batches;
# COPY is not allowed on a table with row-level security. (`%(name)b`: psycopg sends it binary.)
_PG_INSERT = (
    "INSERT INTO notifications (user_id, type, title, message, data, link, priority, created_at)"
    " SELECT u::uuid, t, ti, m, d::jsonb, l, p, %(now)b::timestamptz + (n - 1) * interval '1us'"
    " FROM unnest(%(user_id)b::text[], %(type)b::text[], %(title)b::text[], %(message)b::text[],"
    " %(data)b::text[], %(link)b::text[], %(priority)b::text[])"
    " WITH ORDINALITY AS r(u, t, ti, m, d, l, p, n)"
)


# PostgreSQL: a fan-out's recipients and its new ids, both sorted, zipped by `unnest` (the two
# arrays are read in the one statement's snapshot: the same people, as many ids). `{who}` is
# one of _AUDIENCES.
_PG_FAN_OUT = (
    "INSERT INTO notifications (id, user_id, type, title, message, data, link, priority,"
    " created_at) SELECT z.id, z.user_id, :type, :title, :message, :data, :link, :priority, :now"
    " FROM unnest(ARRAY(SELECT id FROM profiles{who} ORDER BY id),"
    " ARRAY(SELECT gen_random_uuid() AS new_id FROM profiles{who} ORDER BY new_id))"
    " AS z(user_id, id)"
)
_AUDIENCES = {
    "everyone": "",
    "role": " WHERE role = :role",
    "user_ids": " WHERE id = ANY(CAST(:user_ids AS uuid[]))",
}


def fan_out(conn: sa.Connection, audience: Audience, draft: Draft, now: datetime) -> int:
    """One INSERT … SELECT for any number of recipients (never a loop in Python).

    In the order of the recipients' ids: four of the table's indexes lead with `user_id`, and
    the foreign key looks each id up in `profiles`' primary key, so sorted rows land on the
    leaf the previous row touched, where a scan of `profiles` in its heap order sent each to a
    random one. On PostgreSQL the new ids are drawn first and sorted too (still random v4
    UUIDs: only which person gets which follows the order), so the primary key is filled leaf
    by leaf as well. 100,000 recipients (bench/send_all.py's statement, interleaved): into an
    empty table 1.83 → 1.22 s; with 1,000,000 rows there, 3.55 → 2.03 s (sorted people) and
    2.63 → 2.26 s (sorted ids as well).
    """
    bound: dict[str, Any]
    if audience.user_ids:
        kind, bound = "user_ids", {"user_ids": list(audience.user_ids)}
    elif audience.role:
        kind, bound = "role", {"role": audience.role}
    elif audience.everyone:
        kind, bound = "everyone", {}
    else:
        return 0
    literals = {
        "type": draft.type,
        "title": draft.title,
        "message": draft.message,
        "data": draft.data,
        "link": draft.link,
        "priority": draft.priority,
        "now": now,
    }
    if conn.dialect.name == "postgresql":
        text = sa.text(_PG_FAN_OUT.format(who=_AUDIENCES[kind])).bindparams(
            sa.bindparam("data", type_=notifications.c.data.type),
            sa.bindparam("link", type_=sa.Text),
            sa.bindparam("now", type_=notifications.c.created_at.type),
        )
        result = conn.execute(text.execution_options(preserve_rowcount=True), literals | bound)
        return result.rowcount
    who = sa.select(profiles.c.id).order_by(profiles.c.id)
    if kind == "user_ids":
        who = who.where(profiles.c.id.in_(bound["user_ids"]))
    elif kind == "role":
        who = who.where(profiles.c.role == bound["role"])
    values = who.add_columns(
        sa.literal(draft.type),
        sa.literal(draft.title),
        sa.literal(draft.message),
        sa.literal(draft.data, notifications.c.data.type),
        sa.literal(draft.link, sa.Text),
        sa.literal(draft.priority),
        sa.literal(now, notifications.c.created_at.type),
    )
    cols = ["user_id", "type", "title", "message", "data", "link", "priority", "created_at"]
    stmt = sa.insert(notifications).from_select(cols, values)
    return conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount


def expired(before: datetime) -> sa.ColumnElement[bool]:
    """Notifications created before `before` (the retention)."""
    return N.created_at < before
