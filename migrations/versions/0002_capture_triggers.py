"""Change capture: triggers that write one outbox row per domain event (CONTRACT §6).

The event row commits in the same transaction as the platform's own write, so plain-SQL
writes are covered and nothing is lost between the write and the worker. The triggers do
not NOTIFY: a NOTIFY per platform row takes PostgreSQL's commit lock and halves the
platform's write throughput (ENGINEERING.md); workers poll the outbox's due index instead
(bench/capture_overhead.py and bench/wakeup.py measure both).

Each CREATE TRIGGER runs under the upgrade's short lock_timeout (`under_lock_timeout`): if the
platform holds a table busy, we say so and try again rather than queue behind it and stall its
writes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from typing import NamedTuple

from alembic import op

from humanglue_cli.core.domain import EventKind
from humanglue_cli.core.migrate import note, under_lock_timeout
from migrations._platform import columns as table_columns

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


class Capture(NamedTuple):
    """One trigger: on `operation` of `table`, when `condition`, record a `kind` event."""

    name: str
    table: str
    operation: str  # "INSERT" or "UPDATE OF col" / "UPDATE"
    kind: str
    columns: tuple[str, ...]
    condition: str | None = None  # uses IS DISTINCT FROM; rewritten to IS NOT on SQLite


_COMPLETED = "NEW.status = 'completed'"
_SUCCEEDED = "NEW.status = 'succeeded'"
_ENROLLMENT = ("course_id", "student_id", "status")
_PAYMENT = ("user_id", "course_id", "workshop_id", "amount_cents", "currency")

CAPTURES = (
    Capture(
        "hg_enrollment_created", "enrollments", "INSERT", EventKind.ENROLLMENT_CREATED, _ENROLLMENT
    ),
    Capture(
        "hg_enrollment_completed_ins",
        "enrollments",
        "INSERT",
        EventKind.ENROLLMENT_COMPLETED,
        _ENROLLMENT,
        _COMPLETED,
    ),
    Capture(
        "hg_enrollment_completed_upd",
        "enrollments",
        "UPDATE OF status",
        EventKind.ENROLLMENT_COMPLETED,
        _ENROLLMENT,
        f"{_COMPLETED} AND OLD.status IS DISTINCT FROM 'completed'",
    ),
    Capture(
        "hg_workshop_registration_created",
        "workshop_registrations",
        "INSERT",
        EventKind.WORKSHOP_REGISTRATION_CREATED,
        ("workshop_id", "user_id"),
    ),
    Capture(
        "hg_review_created",
        "course_reviews",
        "INSERT",
        EventKind.REVIEW_CREATED,
        ("course_id", "student_id", "rating", "comment"),
    ),
    Capture(
        "hg_question_created",
        "course_questions",
        "INSERT",
        EventKind.QUESTION_CREATED,
        ("course_id", "student_id", "body"),
    ),
    Capture(
        "hg_payment_succeeded_ins",
        "payments",
        "INSERT",
        EventKind.PAYMENT_SUCCEEDED,
        _PAYMENT,
        _SUCCEEDED,
    ),
    Capture(
        "hg_payment_succeeded_upd",
        "payments",
        "UPDATE OF status",
        EventKind.PAYMENT_SUCCEEDED,
        _PAYMENT,
        f"{_SUCCEEDED} AND OLD.status IS DISTINCT FROM 'succeeded'",
    ),
)
# Course edits: any column but updated_at/updated_by changed, with updated_by set.
COURSE_UPDATE = "hg_course_updated"
_BOOKKEEPING = ("updated_at", "updated_by")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgres()
    else:
        _upgrade_sqlite()
    for table in dict.fromkeys([c.table for c in CAPTURES] + ["courses"]):
        note("triggers", table)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table in [(c.name, c.table) for c in CAPTURES] + [(COURSE_UPDATE, "courses")]:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS {name}_fn()")


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg_payload(columns: tuple[str, ...]) -> str:
    return "jsonb_build_object(" + ", ".join(f"'{c}', NEW.{c}" for c in columns) + ")"


def pg_functions(schema: str | None = None) -> list[str]:
    """The capture functions' DDL. With `schema`, as migration 0004 re-creates them: SECURITY
    DEFINER with a fixed search_path, so that they write the outbox whatever role writes the
    platform's table (that role needs no right on `hg_events`)."""
    target = "hg_events" if schema is None else f'"{schema}".hg_events'
    header = "" if schema is None else "SECURITY DEFINER SET search_path = pg_catalog, pg_temp "
    functions = []
    for c in CAPTURES:
        functions.append(
            f"CREATE OR REPLACE FUNCTION {_qualified(schema, c.name)}_fn() RETURNS trigger "
            f"LANGUAGE plpgsql {header}AS $$\n"
            "BEGIN\n"
            f"  INSERT INTO {target} (kind, entity_id, payload)\n"
            f"  VALUES ('{c.kind}', NEW.id::text, {_pg_payload(c.columns)});\n"
            "  RETURN NULL;\n"
            "END $$"
        )
    skip = " - ".join(f"'{c}'" for c in _BOOKKEEPING)
    functions.append(
        f"CREATE OR REPLACE FUNCTION {_qualified(schema, COURSE_UPDATE)}_fn() RETURNS trigger "
        f"LANGUAGE plpgsql {header}AS $$\n"
        "DECLARE changed jsonb;\n"
        "BEGIN\n"
        f"  IF NEW.updated_by IS NULL OR (to_jsonb(NEW) - {skip}) = (to_jsonb(OLD) - {skip}) THEN\n"
        "    RETURN NULL;\n"
        "  END IF;\n"
        "  SELECT coalesce(jsonb_agg(n.key ORDER BY n.key), '[]'::jsonb) INTO changed\n"
        "    FROM jsonb_each(to_jsonb(NEW) - " + skip + ") AS n\n"
        "   WHERE n.value IS DISTINCT FROM to_jsonb(OLD) -> n.key;\n"
        f"  INSERT INTO {target} (kind, entity_id, payload)\n"
        f"  VALUES ('{EventKind.COURSE_UPDATED}', NEW.id::text,\n"
        "          jsonb_build_object('updated_by', NEW.updated_by, 'changed', changed));\n"
        "  RETURN NULL;\n"
        "END $$"
    )
    return functions


def _qualified(schema: str | None, name: str) -> str:
    return name if schema is None else f'"{schema}".{name}'


def _upgrade_postgres() -> None:
    for ddl in pg_functions():
        op.execute(ddl)
    for c in CAPTURES:
        when = f" WHEN ({c.condition})" if c.condition else ""
        _pg_create_trigger(
            c.table,
            f"CREATE TRIGGER {c.name} AFTER {c.operation} ON {c.table} FOR EACH ROW{when} "
            f"EXECUTE FUNCTION {c.name}_fn()",
        )
    _pg_create_trigger(
        "courses",
        f"CREATE TRIGGER {COURSE_UPDATE} AFTER UPDATE ON courses FOR EACH ROW "
        f"WHEN (NEW.updated_by IS NOT NULL) EXECUTE FUNCTION {COURSE_UPDATE}_fn()",
    )


def _pg_create_trigger(table: str, ddl: str) -> None:
    with under_lock_timeout(table):  # CREATE TRIGGER takes a SHARE ROW EXCLUSIVE lock
        op.execute(ddl)


# --- SQLite -----------------------------------------------------------------------------------


def _sqlite_condition(condition: str) -> str:
    return condition.replace("IS DISTINCT FROM", "IS NOT")


def _sqlite_payload(columns: tuple[str, ...]) -> str:
    return "json_object(" + ", ".join(f"'{c}', NEW.{c}" for c in columns) + ")"


def _upgrade_sqlite() -> None:
    for c in CAPTURES:
        when = f" WHEN {_sqlite_condition(c.condition)}" if c.condition else ""
        op.execute(
            f"CREATE TRIGGER IF NOT EXISTS {c.name} AFTER {c.operation} ON {c.table}{when}\n"
            "BEGIN\n"
            "  INSERT INTO hg_events (kind, entity_id, payload)\n"
            f"  VALUES ('{c.kind}', NEW.id, {_sqlite_payload(c.columns)});\n"
            "END"
        )
    # SQLite has no row-to-JSON: the columns are those the platform's table has today.
    columns = [c for c in table_columns(op.get_bind(), "courses") if c not in _BOOKKEEPING]
    differs = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in columns)
    changed = " UNION ALL ".join(f"SELECT '{c}' AS c WHERE NEW.{c} IS NOT OLD.{c}" for c in columns)
    op.execute(
        f"CREATE TRIGGER IF NOT EXISTS {COURSE_UPDATE} AFTER UPDATE ON courses\n"
        f"WHEN NEW.updated_by IS NOT NULL AND ({differs})\n"
        "BEGIN\n"
        "  INSERT INTO hg_events (kind, entity_id, payload)\n"
        f"  VALUES ('{EventKind.COURSE_UPDATED}', NEW.id, "
        "json_object('updated_by', NEW.updated_by,\n"
        f"          'changed', json((SELECT json_group_array(c) FROM ({changed})))));\n"
        "END"
    )
