"""The live stats views (migration 0008) and the presence timeout they read.

Every figure is the views' own: the CLI only chooses which courses and workshops to read —
those the reader teaches, named on both backends (on PostgreSQL the views are
`security_invoker`, so row-level security also applies).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core.models import (
    UUID,
    enrollments,
    payments,
    settings,
)

TIMEOUT_SETTING = "presence_timeout_seconds"  # read by the views; 60 when absent

course_view = sa.table(
    "live_course_stats",
    sa.column("course_id", UUID),
    sa.column("title", sa.Text),
    sa.column("enrollments_active", sa.Integer),
    sa.column("enrollments_completed", sa.Integer),
    sa.column("completion_rate", sa.Float),
    sa.column("rating_avg", sa.Float),
    sa.column("rating_count", sa.Integer),
    sa.column("revenue_cents", sa.BigInteger),
    sa.column("online_now", sa.Integer),
)
workshop_view = sa.table(
    "live_workshop_stats",
    sa.column("workshop_id", UUID),
    sa.column("title", sa.Text),
    sa.column("registrations", sa.Integer),
    sa.column("checked_in", sa.Integer),
    sa.column("online_now", sa.Integer),
    sa.column("revenue_cents", sa.BigInteger),
)
COURSE_FIGURES = (
    "enrollments_active",
    "enrollments_completed",
    "completion_rate",
    "rating_avg",
    "rating_count",
    "revenue_cents",
    "online_now",
)
WORKSHOP_FIGURES = ("registrations", "checked_in", "online_now", "revenue_cents")


def set_presence_timeout(conn: sa.Connection, timeout: timedelta) -> bool:
    """Record the timeout the views count `online_now` with (a no-op when unchanged); False
    if the schema is older than the views (migration 0008)."""
    seconds = max(timeout.total_seconds(), 1.0)
    if conn.dialect.name == "postgresql":  # the worker may not write hg_settings itself
        setter = "hg_set_presence_timeout(double precision)"
        if conn.execute(sa.text("SELECT to_regprocedure(:f)"), {"f": setter}).scalar() is None:
            return False
        conn.execute(sa.text("SELECT hg_set_presence_timeout(:s)"), {"s": seconds})
        return True
    value = f"{seconds:g}"
    current = conn.execute(
        sa.select(settings.c.value).where(settings.c.name == TIMEOUT_SETTING)
    ).scalar()
    if current == value:
        return True
    if current is None:
        conn.execute(sa.insert(settings).values(name=TIMEOUT_SETTING, value=value))
    else:
        conn.execute(
            sa.update(settings).where(settings.c.name == TIMEOUT_SETTING).values(value=value)
        )
    return True


def courses(conn: sa.Connection, ids: Sequence[str] | None) -> list[dict[str, Any]]:
    """The stats of the courses `ids` (None: every course the transaction may see), by title."""
    return _read(conn, course_view, "course_id", COURSE_FIGURES, ids)


def workshops(conn: sa.Connection, ids: Sequence[str] | None) -> list[dict[str, Any]]:
    """The stats of the workshops `ids` (None: every one the transaction may see), by title."""
    return _read(conn, workshop_view, "workshop_id", WORKSHOP_FIGURES, ids)


def _read(
    conn: sa.Connection,
    view: sa.TableClause,
    key: str,
    figures: tuple[str, ...],
    ids: Sequence[str] | None,
) -> list[dict[str, Any]]:
    if ids is not None and not ids:
        return []
    query = sa.select(view).order_by(view.c.title, view.c[key])
    if ids is not None:
        query = query.where(view.c[key].in_(list(ids)))
    items = []
    for row in conn.execute(query).mappings():
        item: dict[str, Any] = {key: str(row[key]), "title": row["title"]}
        for name in figures:
            value = row[name]
            if name in ("completion_rate", "rating_avg"):
                item[name] = None if value is None else float(value)
            else:
                item[name] = int(value or 0)
        items.append(item)
    return items


# --- the last days, for the sparklines -------------------------------------------------------

E, P = enrollments.c, payments.c


def history(
    conn: sa.Connection, course_ids: Sequence[str], workshop_ids: Sequence[str], since: datetime
) -> dict[str, list[tuple[str, datetime, int]]]:
    """What happened from `since`, per course or workshop id: (what, when, amount) with what
    `enrollment` (amount 1), `completion` (1) or `revenue` (cents of a succeeded payment, when
    it last changed)."""
    out: dict[str, list[tuple[str, datetime, int]]] = {}
    queries: list[sa.Select[Any]] = []
    if course_ids:
        ids = list(course_ids)
        queries += [
            sa.select(
                E.course_id.label("key"),
                sa.literal("enrollment").label("what"),
                E.enrolled_at.label("at"),
                sa.literal(1).label("amount"),
            ).where(E.course_id.in_(ids), E.enrolled_at >= since),
            sa.select(E.course_id, sa.literal("completion"), E.completed_at, sa.literal(1)).where(
                E.course_id.in_(ids), E.status == "completed", E.completed_at >= since
            ),
            sa.select(P.course_id, sa.literal("revenue"), P.updated_at, P.amount_cents).where(
                P.course_id.in_(ids), P.status == "succeeded", P.updated_at >= since
            ),
        ]
    if workshop_ids:
        queries.append(
            sa.select(P.workshop_id, sa.literal("revenue"), P.updated_at, P.amount_cents).where(
                P.workshop_id.in_(list(workshop_ids)),
                P.status == "succeeded",
                P.updated_at >= since,
            )
        )
    for query in queries:
        for key, what, at, amount in conn.execute(query):
            if at is not None:
                out.setdefault(str(key), []).append((what, at, int(amount or 0)))
    return out
