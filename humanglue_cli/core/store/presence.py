"""Presence (`student_presence`): who is online where. Today: its retention."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from humanglue_cli.core.models import student_presence

S = student_presence.c


def expire_offline(conn: sa.Connection, before: datetime, dry_run: bool = False) -> int:
    """Delete (or count) rows offline since before `before` (the presence retention)."""
    old = sa.and_(S.status == "offline", S.last_seen_at < before)
    if dry_run:
        query = sa.select(sa.func.count()).select_from(student_presence).where(old)
        return int(conn.execute(query).scalar_one())
    return conn.execute(sa.delete(student_presence).where(old)).rowcount


def offline_before(before: datetime) -> sa.ColumnElement[bool]:
    """Rows offline since before `before` (the presence retention), for batched deletes."""
    return sa.and_(S.status == "offline", S.last_seen_at < before)


def sweep(conn: sa.Connection, now: datetime, timeout: timedelta) -> int:
    """Mark offline the online or away rows that have not beat within `timeout` of `now`."""
    stale = sa.and_(S.status.in_(("online", "away")), S.last_seen_at <= now - timeout)
    return conn.execute(sa.update(student_presence).where(stale).values(status="offline")).rowcount
