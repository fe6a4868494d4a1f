"""Worker heartbeats (`hg_workers`): each running worker says every few seconds that it lives.

A worker that stops on a signal says so (`stopped_at`); one that is killed just goes silent.
Either way `status` sees no live worker once its last beat is older than a few intervals.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from humanglue_cli.core import db
from humanglue_cli.core.models import workers

W = workers.c


def beat(
    conn: sa.Connection, worker_id: str, kind: str, hostname: str, pid: int, processed: int
) -> None:
    """Insert or refresh this worker's row, stamped with the database's clock."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    now = db.now(conn)
    stmt = insert(workers).values(
        id=worker_id,
        kind=kind,
        hostname=hostname,
        pid=pid,
        started_at=now,
        last_seen_at=now,
        processed=processed,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={"last_seen_at": now, "processed": processed},
        )
    )


def stopped(conn: sa.Connection, worker_id: str) -> None:
    now = db.now(conn)
    conn.execute(
        sa.update(workers).where(W.id == worker_id).values(stopped_at=now, last_seen_at=now)
    )


def seen_since(conn: sa.Connection, since: datetime) -> list[sa.Row[Any]]:
    """Workers whose last beat is at or after `since`, the most recent first."""
    query = sa.select(workers).where(W.last_seen_at >= since).order_by(W.last_seen_at.desc())
    return list(conn.execute(query))


def forgotten(before: datetime) -> sa.ColumnElement[bool]:
    """Rows of workers last seen before `before`."""
    return W.last_seen_at < before
