"""`notifications list --course`, alone or combined, reads one course's rows of the person.

No index held the course (`data`'s `course_id`), so `list --unread --type review --course` at
a million rows walked the person's rows newest first until a page matched: 300–900 ms. This
adds `ix_notifications_user_course` on (user_id, course, created_at, id): the rows of one
course newest first, the other filters checked on those (~20 rows read per match here). Only
rows about a course are in it: `send --all`'s announcements (about none) skip it, which kept
its fan-out to 100,000 people from paying ~20% more (measured: see bench/README.md).

The course is `hg_jsonb_text(data, 'course_id')` on PostgreSQL, not `data ->> 'course_id'`:
the people's role reads notifications under row-level security, and PostgreSQL uses a
condition of a query as an index condition below a policy only if its functions are LEAKPROOF
(else it must run after the policy's check, on every row). `->>` is not marked so, though its
C function, `jsonb_object_field_text`, never raises an error whatever the value (a non-object
or a missing key gives NULL): so `hg_jsonb_text` is that same C function, declared LEAKPROOF —
which only a superuser may do (and LANGUAGE internal too). Run by a role with CREATEROLE that
is not a superuser, the upgrade makes it a plain SQL function instead (same results, the index
still serves operators' URLs, but the people's listings keep walking their rows), and says so;
a superuser can replace it later with the statement printed. SQLite: `json_extract(data,
'$.course_id')`, indexed alike. Each index on notifications costs every insert (see
bench/README.md, `send --all`).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from humanglue_cli.core.migrate import note, under_lock_timeout

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

INDEX = "ix_notifications_user_course"
# As migrations 0008 and 0010: a table this big is not indexed inside the upgrade (it would
# hold off the worker's inserts for the whole build); `db upgrade` names the statement to run.
LARGE_TABLE = 64 * 1024 * 1024  # bytes (pg_relation_size)
SIGNATURE = "hg_jsonb_text(jsonb, text)"
FAST = (
    f"CREATE OR REPLACE FUNCTION {{s}}.{SIGNATURE} RETURNS text LANGUAGE internal IMMUTABLE "
    "STRICT PARALLEL SAFE LEAKPROOF AS 'jsonb_object_field_text'"
)
PLAIN = (
    f"CREATE OR REPLACE FUNCTION {{s}}.{SIGNATURE} RETURNS text LANGUAGE sql IMMUTABLE "
    "STRICT PARALLEL SAFE AS 'SELECT $1 ->> $2'"
)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def upgrade() -> None:
    bind = op.get_bind()
    course = "json_extract(data, '$.course_id')"  # models.course_of, as each dialect has it
    if bind.dialect.name == "postgresql":
        course = "hg_jsonb_text(data, 'course_id')"
        schema, superuser, size = bind.execute(
            sa.text(
                "SELECT current_schema(), rolsuper, "
                "pg_relation_size(to_regclass('notifications')) "
                "FROM pg_roles WHERE rolname = current_user"
            )
        ).one()
        op.execute((FAST if superuser else PLAIN).format(s=_ident(schema)))
        if not superuser:
            note("function-plain", FAST.format(s=_ident(schema)))
        if size and int(size) >= LARGE_TABLE:
            note(
                "index-deferred",
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON notifications "
                f"(user_id, {course}, created_at, id) WHERE {course} IS NOT NULL",
            )
            return
    with under_lock_timeout("notifications"):  # CREATE INDEX holds off its writers
        columns = ["user_id", sa.text(course), "created_at", "id"]
        where = sa.text(f"{course} IS NOT NULL")
        op.create_index(
            INDEX,
            "notifications",
            columns,
            if_not_exists=True,
            postgresql_where=where,
            sqlite_where=where,
        )


def downgrade() -> None:
    op.drop_index(INDEX, "notifications", if_exists=True)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
