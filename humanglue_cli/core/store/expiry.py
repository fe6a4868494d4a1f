"""Retention in batches: delete what matches, a bounded number of rows per statement.

Each call deletes at most `limit` rows by their physical address (PostgreSQL's `ctid`, found
through the condition's index, then a TID scan; SQLite's `rowid`), so that a caller that
commits after each call never holds a table's locks — or SQLite's single write lock — for
longer than one batch. A batch is idempotent: re-running it after a crash deletes only what
is still there and still matches.
"""

from __future__ import annotations

import sqlalchemy as sa


def delete_batch(
    conn: sa.Connection, table: sa.Table, where: sa.ColumnElement[bool], limit: int
) -> int:
    """Delete up to `limit` rows of `table` matching `where`; returns how many."""
    key: sa.ColumnElement[object] = sa.literal_column(
        "ctid" if conn.dialect.name == "postgresql" else "rowid"
    )
    chosen = sa.select(key).select_from(table).where(where).limit(limit)
    if conn.dialect.name == "postgresql":
        matches = key == sa.any_(sa.func.array(chosen.scalar_subquery()))
    else:
        matches = key.in_(chosen)
    return conn.execute(sa.delete(table).where(matches)).rowcount


def count(conn: sa.Connection, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    """How many rows of `table` match `where`."""
    return int(
        conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one()
    )
