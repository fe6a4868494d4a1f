"""What became visible since a reader last looked: commit order, not `created_at` order.

A `Mark` is a snapshot of what was visible (migration 0005): on PostgreSQL the snapshot's
`xmax` and in-progress ids, every row carrying its writer's transaction id; on SQLite the
insert counter + 1 (one writer at a time). A row became visible after a mark when its
`commit_seq` is at or above the mark's `xmax` or among its in-progress ids — and it is
visible now. Read in one snapshot (REPEATABLE READ on PostgreSQL; a SQLite read transaction),
the next mark taken in the same snapshot, each row is found exactly once, however late its
transaction commits and whoever wrote it; an open transaction holds back nothing.

A `Position` is where a reader stands, resumable across restarts (`tail --cursor-file`):
either "rows visible at `mark` whose (created_at, id) comes after `key`, then what became
visible since `mark`" (a start in the past: `--since`, `--after`, `-n`), or "what became
visible since `mark`", less the ids `done` of it already delivered.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, overload

import sqlalchemy as sa

from humanglue_cli.core import db
from humanglue_cli.core.domain import Notification
from humanglue_cli.core.errors import BadInput
from humanglue_cli.core.ids import canonical
from humanglue_cli.core.models import notifications, settings
from humanglue_cli.core.store.notifications import Filters, after_key, row_to_notification
from humanglue_cli.core.text import shown

N = notifications.c
SEQ_SETTING = "notification_seq"
PAGE = 1000  # rows of a start in the past read at a time (`backlog`, `older`)
_PG_MARK = sa.text(
    "SELECT pg_snapshot_xmax(s)::text::bigint AS xmax,"
    " ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x ORDER BY 1) AS xip"
    " FROM pg_current_snapshot() AS s"
)


@dataclass(frozen=True)
class Mark:
    xmax: int
    xip: tuple[int, ...] = ()


class Delivered(Sequence[str]):
    """The ids a position has delivered of what became visible since its mark: the first
    `size` of a list that only ever grows. Delivering one more from the newest position appends
    (O(1)) instead of copying a tuple — a tail that printed a batch of N new rows made N tuples
    of up to N ids, quadratic: 20,000 rows in one read cost ~4 s (bench/memory.py)."""

    __slots__ = ("_ids", "_size")

    def __init__(self, ids: list[str], size: int) -> None:
        self._ids = ids
        self._size = size

    def plus(self, ident: str) -> Delivered:
        if len(self._ids) == self._size:  # the newest: the list is ours to grow
            self._ids.append(ident)
            return Delivered(self._ids, self._size + 1)
        return Delivered([*self._ids[: self._size], ident], self._size + 1)

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._ids[: self._size][index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids[: self._size])


@dataclass(frozen=True)
class Position:
    """Where a reader stands. Still to deliver: the rows visible at `mark` whose (created_at,
    id) comes after `key` (a start in the past; none if `key` is None), and every row that
    became visible since `mark` but those in `done`."""

    mark: Mark
    key: tuple[datetime, str] | None = None
    done: Sequence[str] = ()

    def after_delivering(self, n: Notification, new: bool) -> Position:
        """This position once `n` is delivered (`new`: it became visible since the mark)."""
        if new:
            done = self.done
            if not isinstance(done, Delivered):
                done = Delivered(list(done), len(done))
            return replace(self, done=done.plus(n.id))
        return replace(self, key=(n.created_at, n.id))

    def encode(self) -> str:
        doc: dict[str, object] = {"v": 1, "x": self.mark.xmax, "p": list(self.mark.xip)}
        if self.key is not None:
            doc["k"] = [self.key[0].isoformat(), self.key[1]]
        if self.done:
            doc["d"] = list(self.done)
        raw = json.dumps(doc, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Position:
        cursor = text.strip()
        try:
            doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            if doc.get("v") != 1:
                raise ValueError("version")
            mark = Mark(_int(doc["x"]), tuple(_int(x) for x in doc.get("p", [])))
            key = None
            if "k" in doc:
                stamp, ident = doc["k"]
                key = (datetime.fromisoformat(stamp).astimezone(UTC), canonical(str(ident)))
            done = tuple(canonical(str(i)) for i in doc.get("d", []))
        except (binascii.Error, ValueError, KeyError, TypeError, UnicodeError, OverflowError):
            raise BadInput(f"not a valid tail cursor: {shown(cursor, 40)}") from None
        return cls(mark, key, done)


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValueError("not a transaction id")
    return value


def mark_now(conn: sa.Connection) -> Mark:
    """What is visible to `conn`'s transaction, as a mark (take it in the reading snapshot)."""
    if conn.dialect.name == "postgresql":
        row = conn.execute(_PG_MARK).one()
        return Mark(int(row.xmax), tuple(int(x) for x in row.xip))
    seq = conn.execute(
        sa.select(settings.c.value).where(settings.c.name == SEQ_SETTING)
    ).scalar_one()
    return Mark(int(seq) + 1)


def changed_since(conn: sa.Connection, mark: Mark) -> bool:
    """SQLite's cheap probe: has anyone's notification been inserted since `mark`?"""
    return mark_now(conn).xmax != mark.xmax


def _since(conn: sa.Connection, mark: Mark) -> sa.ColumnElement[bool]:
    return _new(conn, N.commit_seq, mark)


def _new(conn: sa.Connection, seq: sa.ColumnElement[int], mark: Mark) -> sa.ColumnElement[bool]:
    new = seq >= mark.xmax
    if mark.xip:
        new = sa.or_(new, db.one_of(conn, seq, mark.xip))
    return new


# --- our own journals (the activity feed, broadcasts): the same reading, by AUTOINCREMENT id
# on SQLite, where one writer at a time makes the id the commit order.


def journal_mark(conn: sa.Connection, table: sa.Table) -> Mark:
    """What of `table` is visible to `conn`'s transaction, as a mark."""
    if conn.dialect.name == "postgresql":
        return mark_now(conn)
    # The AUTOINCREMENT high-water mark: unlike max(id), it never goes back when rows go.
    seq = conn.execute(
        sa.text("SELECT seq FROM sqlite_sequence WHERE name = :table"), {"table": table.name}
    ).scalar()
    return Mark(int(seq or 0) + 1)


def journal_new(conn: sa.Connection, table: sa.Table, mark: Mark) -> sa.ColumnElement[bool]:
    """The rows of `table` that became visible since `mark`."""
    postgres = conn.dialect.name == "postgresql"
    return _new(conn, table.c.commit_seq if postgres else table.c.id, mark)


def older(
    conn: sa.Connection, user_id: str, filters: Filters, position: Position, page: int = PAGE
) -> list[Notification]:
    """The next `page` rows of a start in the past: visible at `position`'s mark (those that
    became visible since come after, as new), after its key, oldest first."""
    assert position.key is not None, "only a start in the past has older rows"
    query = (
        sa.select(notifications)
        .where(
            *filters.where(user_id),
            after_key(position.key),
            sa.or_(N.commit_seq.is_(None), sa.not_(_since(conn, position.mark))),
        )
        .order_by(N.created_at, N.id)
        .limit(page)
    )
    return [row_to_notification(r) for r in conn.execute(query)]


def visible_since(
    conn: sa.Connection, user_id: str, filters: Filters, position: Position
) -> tuple[list[Notification], set[str]]:
    """The user's notifications (as filtered) that `position` has still to deliver, oldest
    first, and which of them became visible since its mark."""
    since = _since(conn, position.mark)
    query = sa.select(notifications).where(*filters.where(user_id), since)
    fresh = [row_to_notification(r) for r in conn.execute(query)]
    done = set(position.done)
    found = [n for n in fresh if n.id not in done]
    if position.key is not None:  # what was visible at the mark, after the key
        older = sa.select(notifications).where(
            *filters.where(user_id),
            after_key(position.key),
            sa.or_(N.commit_seq.is_(None), sa.not_(since)),
        )
        found += [row_to_notification(r) for r in conn.execute(older)]
    return sorted(found, key=lambda n: (n.created_at, n.id)), {n.id for n in fresh}


def backlog(
    conn: sa.Connection,
    user_id: str,
    filters: Filters,
    *,
    last: int = 0,
    since: datetime | None = None,
    after: Notification | None = None,
    page: int = PAGE,
) -> tuple[Position, list[Notification]]:
    """Where a tail starts: the rows it shows first (the `last` ones, those from `since`, or
    those after `after`), oldest first, all visible now, and the position before the first.
    Of those from `since` or after `after`, the first `page` only: `older` reads the rest, a
    page at a time, so that a start years back costs neither the memory of all its rows nor
    the wait for them before the first line."""
    mark = mark_now(conn)
    query = sa.select(notifications).where(*filters.where(user_id))
    if after is not None:
        key = (after.created_at, after.id)
        ordered = query.where(after_key(key)).order_by(N.created_at, N.id).limit(page)
        return Position(mark, key=key), [row_to_notification(r) for r in conn.execute(ordered)]
    if since is not None:
        ordered = query.where(N.created_at >= since).order_by(N.created_at, N.id).limit(page)
        found = [row_to_notification(r) for r in conn.execute(ordered)]
    elif last:
        newest = query.order_by(N.created_at.desc(), N.id.desc()).limit(last)
        found = [row_to_notification(r) for r in reversed(conn.execute(newest).all())]
    else:
        return Position(mark), []
    if not found:
        return Position(mark), []
    return Position(mark, key=_just_before(found[0])), found


_NIL = "00000000-0000-0000-0000-000000000000"


def _just_before(n: Notification) -> tuple[datetime, str]:
    """A key that sorts right before `n`: its time with the smallest id, or a microsecond
    earlier when its id is the smallest (rows with that very time and a smaller id come
    along: a start shows a little more, never less)."""
    if n.id != _NIL:
        return (n.created_at, _NIL)
    return (n.created_at - timedelta(microseconds=1), "ffffffff-ffff-ffff-ffff-ffffffffffff")


@dataclass
class Reading:
    """What one read found: the rows, which of them are new since the mark, and the position
    once all of them are delivered (None: where the reader is, as it delivers them)."""

    rows: list[Notification] = field(default_factory=list)
    new: set[str] = field(default_factory=set)
    next: Position | None = None
    more: bool = False  # a full page of a start in the past: read the rest at once (`older`)


def read_since(
    conn: sa.Connection,
    user_id: str,
    filters: Filters,
    position: Position,
    mark: Mark | None = None,
) -> Reading:
    """The rows `position` has still to deliver, and the position after them (one snapshot;
    `mark`: its mark, if the caller took it already)."""
    mark = mark_now(conn) if mark is None else mark
    rows, new = visible_since(conn, user_id, filters, position)
    return Reading(rows, new, Position(mark))


# --- a follower's poll on PostgreSQL: one statement, one round trip ---------------------------
# A statement sees one snapshot, and `pg_current_snapshot()` is that snapshot (the active one):
# the mark and the rows read together in one autocommit statement are as consistent as in a
# REPEATABLE READ transaction, without its BEGIN, identity and COMMIT round trips. A tail polls
# on every worker batch: at 500 events/s, ten round trips a poll were most of a tail's time.


def became_visible(seq: sa.ColumnElement[int]) -> sa.ColumnElement[bool]:
    """The rows whose `seq` became visible since the mark given at run time as the bind
    parameters `xmax` and `xip` (`read_marked`)."""
    from sqlalchemy.dialects.postgresql import ARRAY

    return sa.or_(
        seq >= sa.bindparam("xmax", type_=sa.BigInteger),
        seq == sa.any_(sa.bindparam("xip", type_=ARRAY(sa.BigInteger))),
    )


def marked(rows: sa.Select[Any], recent: sa.ColumnElement[bool] | None = None) -> sa.Select[Any]:
    """One statement: the snapshot's mark, whether `recent` holds in it (e.g. a broadcast
    younger than its TTL), and `rows` (which select what `became_visible`), each joined to the
    mark; none: one row of NULLs after the mark. `rows` must have an `id` that is never NULL."""
    from sqlalchemy.dialects.postgresql import ARRAY

    mark = (
        sa.select(
            sa.literal_column("pg_snapshot_xmax(s)::text::bigint", sa.BigInteger).label("xmax"),
            sa.literal_column(
                "ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x ORDER BY 1)",
                ARRAY(sa.BigInteger),
            ).label("xip"),
            (sa.false() if recent is None else recent).label("recent"),
        )
        .select_from(sa.func.pg_current_snapshot().alias("s"))
        .subquery("m")
    )
    lateral = rows.lateral("n")
    return sa.select(mark, lateral).select_from(mark.outerjoin(lateral, sa.true()))


def read_marked(
    conn: sa.Connection, query: sa.Select[Any], mark: Mark
) -> tuple[Mark, bool, Iterator[sa.Row[Any]]]:
    """Run a `marked` query on an autocommit connection for what became visible since `mark`:
    the next mark, whether its `recent` held, and the rows — streamed, not all held at once."""
    result = conn.execute(query, {"xmax": mark.xmax, "xip": list(mark.xip)})
    head = result.fetchone()  # the mark's one row, joined to the first of the rows, if any
    assert head is not None
    following = Mark(int(head.xmax), tuple(int(x) for x in head.xip))
    rows = iter(result) if head.id is None else itertools.chain((head,), result)
    return following, bool(head.recent), rows


def pushed_query(
    user_id: str, filters: Filters, recent: sa.ColumnElement[bool] | None = None
) -> sa.Select[Any]:
    """The statement of `read_pushed` for `user_id` and `filters`, built once per follower."""
    rows = sa.select(notifications).where(*filters.where(user_id), became_visible(N.commit_seq))
    return marked(rows, recent)


def read_pushed(
    conn: sa.Connection, query: sa.Select[Any], position: Position
) -> tuple[Reading, bool]:
    """`read_since` for a position without a key, in one statement on an autocommit connection
    (`pushed_query`); and whether its `recent` held."""
    assert position.key is None, "a start in the past is read by read_since"
    mark, recent, rows = read_marked(conn, query, position.mark)
    fresh = [row_to_notification(r) for r in rows]  # not all rows at once, then all again
    done = set(position.done)
    found = sorted((n for n in fresh if n.id not in done), key=lambda n: (n.created_at, n.id))
    return Reading(found, {n.id for n in fresh}, Position(mark)), recent
