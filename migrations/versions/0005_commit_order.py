"""Each notification records when it became visible, so that a tail reads by commit, not by time.

`created_at` is stamped before a row's transaction commits: a worker held up by a lock, a big
fan-out or a pause commits rows older than rows a tail has already shown. So every row gets
`commit_seq`, and a tail asks "what became visible since my last read" (core/tail.py):

- PostgreSQL: the id of the transaction that wrote the row (`pg_current_xact_id()`, a
  64-bit id that never wraps, as bigint). What became visible since a snapshot is what has an
  id at or above that snapshot's `xmax`, or among its in-progress ids. Nothing waits for a
  transaction left open elsewhere: it is one more id in the list.
- SQLite: one writer at a time, so commit order is the order of a counter (in `hg_settings`),
  advanced by a trigger for every row inserted, whoever inserts it.

Rows that existed before this revision keep NULL: they are the past, never "new".

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from humanglue_cli.core.migrate import note, under_lock_timeout
from migrations._platform import columns

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SEQ_SETTING = "notification_seq"
CHANNEL = "hg_notifications"
PG_DEFAULT = "(pg_current_xact_id()::text)::bigint"


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    with under_lock_timeout("notifications"):
        if "commit_seq" not in columns(bind, "notifications"):  # made from our models: there
            # No default in ADD COLUMN: a volatile one would rewrite the platform's whole table.
            op.add_column("notifications", sa.Column("commit_seq", sa.BigInteger(), nullable=True))
            note("column", "notifications.commit_seq")
        if postgres:
            op.execute(
                f"ALTER TABLE notifications ALTER COLUMN commit_seq SET DEFAULT {PG_DEFAULT}"
            )
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_notifications_user_commit "
            "ON notifications (user_id, commit_seq)"
        )
    if postgres:
        # The wake-up of tails (core/tail.py): one signal per transaction that inserts
        # notifications (a worker's batch, a platform's statement), with no content at all —
        # any role may LISTEN to any channel. NOTIFY's commit-time lock is paid by those
        # transactions only, never by the platform's writes of its own tables.
        op.execute(
            "CREATE OR REPLACE FUNCTION hg_notifications_inserted() RETURNS trigger "
            "LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            f"  PERFORM pg_notify('{CHANNEL}', '');\n"
            "  RETURN NULL;\n"
            "END $$"
        )
        op.execute(
            "CREATE TRIGGER hg_notifications_inserted AFTER INSERT ON notifications "
            "FOR EACH STATEMENT EXECUTE FUNCTION hg_notifications_inserted()"
        )
        note("triggers", "notifications")
        return
    op.execute(f"INSERT INTO hg_settings (name, value) VALUES ('{SEQ_SETTING}', '0')")
    op.execute(
        "CREATE TRIGGER hg_notification_seq AFTER INSERT ON notifications\n"
        "BEGIN\n"
        "  UPDATE hg_settings SET value = CAST(value AS INTEGER) + 1\n"
        f"   WHERE name = '{SEQ_SETTING}';\n"
        "  UPDATE notifications SET commit_seq =\n"
        f"    (SELECT CAST(value AS INTEGER) FROM hg_settings WHERE name = '{SEQ_SETTING}')\n"
        "   WHERE rowid = NEW.rowid;\n"
        "END"
    )
    note("triggers", "notifications")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS hg_notifications_inserted ON notifications")
        op.execute("DROP FUNCTION IF EXISTS hg_notifications_inserted()")
    else:
        op.execute("DROP TRIGGER IF EXISTS hg_notification_seq")
        op.execute(f"DELETE FROM hg_settings WHERE name = '{SEQ_SETTING}'")
    op.drop_index("ix_notifications_user_commit", "notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("commit_seq")
