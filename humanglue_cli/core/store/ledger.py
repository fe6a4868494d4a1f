"""The ledger (`hg_ledger`): one row per (rule, entity) that has notified — "once per entity".

It outlives the notifications themselves (read, deleted or cleaned up), which is what makes a
completion reopened and completed again notify once. It is kept bounded without weakening that
for any entity that still exists: a row whose entity is gone from the platform can never be
matched again, and a row keyed by an event id (course edits, announcements) guards nothing once
its event has left the outbox — it stays for the notification retention, as a record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from humanglue_cli.core.domain import EVENT_KEY_PREFIX
from humanglue_cli.core.models import (
    course_questions,
    course_reviews,
    enrollments,
    ledger,
    payments,
    workshop_registrations,
)

L = ledger.c
# rule -> the platform's table whose row is the entity (the rest are keyed by event id).
ENTITY_TABLES: dict[str, sa.Table] = {
    "enrollment": enrollments,
    "course_completion": enrollments,
    "workshop_registration": workshop_registrations,
    "review": course_reviews,
    "student_question": course_questions,
    "payment": payments,
}


def record(conn: sa.Connection, keys: Sequence[tuple[str, str, int, int]]) -> set[tuple[str, str]]:
    """Insert ledger rows (rule, entity_id, event_id, recipients); return the keys that are new.

    A key already present — notified before, by this or any worker — is skipped: that is what
    makes every rule fire once per entity, whatever redelivery or crash happened. Keys go in
    sorted, so two workers inserting overlapping keys cannot deadlock.
    """
    if not keys:
        return set()
    ordered = sorted(keys)
    if conn.dialect.name == "postgresql":
        rules, entities, events, recipients = (
            list(column) for column in zip(*ordered, strict=True)
        )
        result = conn.exec_driver_sql(
            _PG_RECORD,
            {"rule": rules, "entity_id": entities, "event_id": events, "recipients": recipients},
        )
        return {(rule, entity) for rule, entity in result}
    rows = [{"rule": r, "entity_id": e, "event_id": ev, "recipients": n} for r, e, ev, n in ordered]
    stmt = (
        sqlite.insert(ledger)
        .on_conflict_do_nothing(index_elements=["rule", "entity_id"])
        .returning(L.rule, L.entity_id)
    )
    return {(row.rule, row.entity_id) for row in conn.execute(stmt, rows)}


# PostgreSQL: the batch's keys as one binary array per column, unnested by the server in the
# arrays' order, so they are inserted sorted — one statement whose text never changes, parsed
# and planned once whatever the batch size (a multi-row VALUES of 500 rows cost 20 ms of
# parsing per batch in the driver alone).
_PG_RECORD = (
    "INSERT INTO hg_ledger (rule, entity_id, event_id, recipients)"
    " SELECT * FROM unnest(%(rule)b::text[], %(entity_id)b::text[], %(event_id)b::bigint[],"
    " %(recipients)b::integer[])"
    " ON CONFLICT (rule, entity_id) DO NOTHING RETURNING rule, entity_id"
)


def _gone(conn: sa.Connection) -> sa.ColumnElement[bool]:
    """Rows whose entity no longer exists on the platform."""
    conditions = []
    for rule, table in ENTITY_TABLES.items():
        if conn.dialect.name == "postgresql":  # compare as uuid, so the primary key is used
            uuid_text = L.entity_id.regexp_match("^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$")
            entity: sa.ColumnElement[Any] = sa.case(
                (uuid_text, sa.cast(L.entity_id, table.c.id.type)), else_=None
            )
        else:
            entity = L.entity_id
        exists = sa.select(1).where(table.c.id == entity).exists()
        conditions.append(sa.and_(L.rule == rule, ~exists))
    return sa.or_(*conditions)


def _prunable(conn: sa.Connection, before: datetime) -> sa.ColumnElement[bool]:
    by_event = sa.and_(
        L.entity_id.startswith(EVENT_KEY_PREFIX, autoescape=True), L.created_at < before
    )
    return sa.or_(by_event, _gone(conn))


def prunable(conn: sa.Connection, event_keys_before: datetime) -> sa.ColumnElement[bool]:
    """Rows that can no longer prevent a repeat; see the module docstring."""
    return _prunable(conn, event_keys_before)
