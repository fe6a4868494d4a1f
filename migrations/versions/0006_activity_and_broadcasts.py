"""The instructors' activity feed and broadcasts (the live issue).

- `hg_activity`: one row per platform event that is activity — enrollments, completions,
  registrations and check-ins, reviews, questions, payments, and `student_activity` rows —
  written by the worker in the transaction that processes the event (exactly once, like its
  notifications), read by commit order (`commit_seq`, as notifications: migration 0005). Each
  transaction that writes it signals `hg_activity` once, without content: a worker's batch,
  never a platform's row.
- Two more capture triggers, for what notifies no one but belongs in the feed: a
  `student_activity` row inserted, and a registration's `checked_in_at` set.
- `hg_broadcasts`: ephemeral messages to a course's or workshop's instructors, kept a minute.
  On PostgreSQL they are sent through `hg_broadcast(…)` (SECURITY DEFINER: checks that the
  sender teaches it or is an admin, applies the per-sender rate, deletes expired ones, wakes
  the tails) — a NOTIFY payload would not do: any role may LISTEN to any channel.
- Row-level security on both tables: people read the rows of the courses and workshops they
  teach (broadcasts: only those younger than a minute); the worker and operators all. The
  role names come from `hg_settings` at run time, so the printed DDL (`db upgrade --sql`) is
  the same statements.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from humanglue_cli.core.domain import EventKind
from humanglue_cli.core.migrate import note, under_lock_timeout

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PG_DEFAULT = "(pg_current_xact_id()::text)::bigint"
ACTIVITY_CHANNEL = "hg_activity"
TAILS_CHANNEL = "hg_notifications"  # migration 0005: a broadcast wakes the tails
BROADCAST_TTL = "1 minute"
DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"

SEND = "hg_broadcast(uuid, uuid, text, integer)"
STUDENT_ACTIVITY = "hg_student_activity_created"
CHECK_IN = "hg_workshop_checked_in"


def _id() -> sa.Column[int]:
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def _uuid(name: str, nullable: bool = True) -> sa.Column[str]:
    return sa.Column(
        name, sa.Uuid(as_uuid=False).with_variant(sa.String(36), "sqlite"), nullable=nullable
    )


def _stamp(name: str) -> sa.Column[object]:
    return sa.Column(
        name,
        sa.DateTime(timezone=True).with_variant(sa.Text(), "sqlite"),
        nullable=False,
        server_default=sa.text("CURRENT_TIMESTAMP"),
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    seq_default = sa.text(PG_DEFAULT) if postgres else None
    op.create_table(
        "hg_activity",
        _id(),
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        _uuid("course_id"),
        _uuid("workshop_id"),
        _uuid("student_id"),
        sa.Column(
            "data",
            sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        _stamp("at"),
        sa.Column("commit_seq", sa.BigInteger, server_default=seq_default),
        sqlite_autoincrement=True,
    )
    op.create_index("ux_hg_activity_event", "hg_activity", ["event_id"], unique=True)
    op.create_index("ix_hg_activity_course_at", "hg_activity", ["course_id", "at"])
    op.create_index("ix_hg_activity_workshop_at", "hg_activity", ["workshop_id", "at"])
    op.create_index("ix_hg_activity_commit", "hg_activity", ["commit_seq"])
    note("created", "hg_activity")
    op.create_table(
        "hg_broadcasts",
        _id(),
        _uuid("course_id"),
        _uuid("workshop_id"),
        _uuid("sender_id", nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        _stamp("created_at"),
        sa.Column("commit_seq", sa.BigInteger, server_default=seq_default),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_hg_broadcasts_created", "hg_broadcasts", ["created_at"])
    op.create_index("ix_hg_broadcasts_commit", "hg_broadcasts", ["commit_seq"])
    note("created", "hg_broadcasts")
    if postgres:
        _upgrade_postgres()
    else:
        _upgrade_sqlite()
    note("triggers", "student_activity")
    note("triggers", "workshop_registrations")


# --- the two captures ------------------------------------------------------------------------

_CHECK_IN_WHEN = (
    "NEW.checked_in_at IS NOT NULL AND OLD.checked_in_at IS DISTINCT FROM NEW.checked_in_at"
)


def _upgrade_sqlite() -> None:
    # A `details` that is not valid JSON is kept as its text: a capture never fails the
    # platform's own write.
    op.execute(
        f"CREATE TRIGGER IF NOT EXISTS {STUDENT_ACTIVITY} AFTER INSERT ON student_activity\n"
        "BEGIN\n"
        "  INSERT INTO hg_events (kind, entity_id, payload)\n"
        f"  VALUES ('{EventKind.STUDENT_ACTIVITY}', NEW.id, json_object(\n"
        "    'student_id', NEW.student_id, 'course_id', NEW.course_id,\n"
        "    'activity_type', NEW.activity_type,\n"
        "    'details', CASE WHEN json_valid(NEW.details) THEN json(NEW.details)\n"
        "                    ELSE NEW.details END));\n"
        "END"
    )
    when = _CHECK_IN_WHEN.replace("IS DISTINCT FROM", "IS NOT")
    op.execute(
        f"CREATE TRIGGER IF NOT EXISTS {CHECK_IN} AFTER UPDATE OF checked_in_at "
        f"ON workshop_registrations WHEN {when}\n"
        "BEGIN\n"
        "  INSERT INTO hg_events (kind, entity_id, payload)\n"
        f"  VALUES ('{EventKind.CHECKED_IN}', NEW.id, json_object(\n"
        "    'workshop_id', NEW.workshop_id, 'user_id', NEW.user_id,\n"
        "    'checked_in_at', NEW.checked_in_at));\n"
        "END"
    )


def _upgrade_postgres() -> None:
    s = '"' + op.get_bind().execute(sa.text("SELECT current_schema()")).scalar_one() + '"'
    captures = (
        (
            STUDENT_ACTIVITY,
            "student_activity",
            "INSERT",
            "",
            EventKind.STUDENT_ACTIVITY,
            "'student_id', NEW.student_id, 'course_id', NEW.course_id, "
            "'activity_type', NEW.activity_type, 'details', NEW.details",
        ),
        (
            CHECK_IN,
            "workshop_registrations",
            "UPDATE OF checked_in_at",
            f" WHEN ({_CHECK_IN_WHEN})",
            EventKind.CHECKED_IN,
            "'workshop_id', NEW.workshop_id, 'user_id', NEW.user_id, "
            "'checked_in_at', NEW.checked_in_at",
        ),
    )
    for name, table, operation, when, kind, payload in captures:
        # As migration 0004 re-made the others: SECURITY DEFINER, so whatever role writes the
        # platform's table needs no right on hg_events.
        op.execute(
            f"CREATE OR REPLACE FUNCTION {s}.{name}_fn() RETURNS trigger "
            f"LANGUAGE plpgsql {DEFINER} AS $$\n"
            "BEGIN\n"
            f"  INSERT INTO {s}.hg_events (kind, entity_id, payload)\n"
            f"  VALUES ('{kind}', NEW.id::text, jsonb_build_object({payload}));\n"
            "  RETURN NULL;\n"
            "END $$"
        )
        with under_lock_timeout(table):  # CREATE TRIGGER takes a SHARE ROW EXCLUSIVE lock
            op.execute(
                f"CREATE TRIGGER {name} AFTER {operation} ON {table} FOR EACH ROW{when} "
                f"EXECUTE FUNCTION {s}.{name}_fn()"
            )
    op.execute(
        "CREATE OR REPLACE FUNCTION hg_activity_inserted() RETURNS trigger "
        "LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        f"  PERFORM pg_notify('{ACTIVITY_CHANNEL}', '');\n"
        "  RETURN NULL;\n"
        "END $$"
    )
    op.execute(
        "CREATE TRIGGER hg_activity_inserted AFTER INSERT ON hg_activity "
        "FOR EACH STATEMENT EXECUTE FUNCTION hg_activity_inserted()"
    )
    taught = f"ANY ((SELECT {s}.hg_taught_courses())::uuid[])"
    taught_ws = f"ANY ((SELECT {s}.hg_taught_workshops())::uuid[])"
    # Returns 0 once sent, or the seconds until the sender may send again.
    op.execute(
        f"CREATE FUNCTION {s}.hg_broadcast(course uuid, workshop uuid, body text, "
        f"per_minute integer) RETURNS double precision LANGUAGE plpgsql {DEFINER} AS $fn$\n"
        f"DECLARE me uuid := {s}.hg_current_person(); recent integer; oldest timestamptz;\n"
        "BEGIN\n"
        "  IF me IS NULL THEN\n"
        "    RAISE EXCEPTION 'a broadcast is sent by a person' USING ERRCODE = '42501';\n"
        "  END IF;\n"
        f"  IF NOT ({s}.hg_is_admin() OR course = {taught} OR workshop = {taught_ws}) THEN\n"
        "    RAISE EXCEPTION 'only its instructors or an admin may broadcast to it'\n"
        "      USING ERRCODE = '42501';\n"
        "  END IF;\n"
        "  PERFORM pg_advisory_xact_lock(hashtextextended('hg_broadcast ' || me::text, 0));\n"
        f"  DELETE FROM {s}.hg_broadcasts\n"
        f"   WHERE created_at < statement_timestamp() - interval '{BROADCAST_TTL}';\n"
        f"  SELECT count(*), min(created_at) INTO recent, oldest FROM {s}.hg_broadcasts\n"
        "   WHERE sender_id = me;\n"
        "  IF recent >= per_minute THEN\n"
        f"    RETURN greatest(extract(epoch FROM oldest + interval '{BROADCAST_TTL}'\n"
        "                            - statement_timestamp()), 0.001);\n"
        "  END IF;\n"
        f"  INSERT INTO {s}.hg_broadcasts\n"
        "    (course_id, workshop_id, sender_id, message, created_at)\n"
        "  VALUES (course, workshop, me, body, statement_timestamp());\n"
        f"  PERFORM pg_notify('{TAILS_CHANNEL}', '');\n"
        "  RETURN 0;\n"
        "END\n$fn$"
    )
    # Role names are this database's (hg_settings): looked up when the statements run.
    op.execute(
        "DO $do$\n"
        "DECLARE p text := (SELECT value FROM hg_settings WHERE name = 'role_prefix');\n"
        "  people text := p || '_people'; staff text;\n"
        "BEGIN\n"
        "  staff := format('%I, %I', p || '_worker', p || '_operator');\n"
        "  EXECUTE 'REVOKE ALL ON hg_activity, hg_broadcasts FROM PUBLIC';\n"
        "  EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON hg_activity, hg_broadcasts TO '\n"
        "    || staff;\n"
        "  EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s, %s TO %s',\n"
        "    pg_get_serial_sequence('hg_activity', 'id'),\n"
        "    pg_get_serial_sequence('hg_broadcasts', 'id'), staff);\n"
        "  EXECUTE format('GRANT SELECT ON hg_activity, hg_broadcasts TO %I', people);\n"
        f"  EXECUTE 'REVOKE ALL ON FUNCTION {s}.{SEND} FROM PUBLIC';\n"
        f"  EXECUTE format('GRANT EXECUTE ON FUNCTION {s}.{SEND} TO %I, %s', people, staff);\n"
        "  EXECUTE 'ALTER TABLE hg_activity ENABLE ROW LEVEL SECURITY';\n"
        "  EXECUTE 'ALTER TABLE hg_broadcasts ENABLE ROW LEVEL SECURITY';\n"
        "  EXECUTE 'CREATE POLICY hg_staff ON hg_activity FOR ALL TO ' || staff\n"
        "    || ' USING (true) WITH CHECK (true)';\n"
        "  EXECUTE 'CREATE POLICY hg_staff ON hg_broadcasts FOR ALL TO ' || staff\n"
        "    || ' USING (true) WITH CHECK (true)';\n"
        "  EXECUTE format('CREATE POLICY hg_audience ON hg_activity FOR SELECT TO %I USING (%s)',\n"
        f"    people, {_literal(f'course_id = {taught} OR workshop_id = {taught_ws}')});\n"
        "  EXECUTE format('CREATE POLICY hg_audience ON hg_broadcasts FOR SELECT TO %I '\n"
        "    || 'USING (%s)', people, "
        + _literal(
            f"(course_id = {taught} OR workshop_id = {taught_ws})"
            f" AND created_at > statement_timestamp() - interval '{BROADCAST_TTL}'"
        )
        + ");\n"
        "END\n$do$"
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table in (
        (STUDENT_ACTIVITY, "student_activity"),
        (CHECK_IN, "workshop_registrations"),
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS {name}_fn()")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS hg_broadcast(uuid, uuid, text, integer)")
        op.execute("DROP TABLE IF EXISTS hg_activity, hg_broadcasts")
        op.execute("DROP FUNCTION IF EXISTS hg_activity_inserted()")
        return
    op.drop_table("hg_broadcasts")
    op.drop_table("hg_activity")
