"""Unread counts that `notifications count` reads in a millisecond, whoever changes the rows.

Counting a person's unread notifications by type scanned all of them: 150 ms at 30,000
unread, seconds at a million. So on PostgreSQL four statement-level triggers on notifications
keep `hg_unread_counts` — for INSERT, UPDATE and DELETE (their transition tables: one grouped
INSERT per statement, whatever its size) and TRUNCATE — whoever runs the statement: the
worker's batches and fan-outs, the CLI's read/unread/read-all/delete, the platform's plain SQL,
a cascade from a deleted profile, the retention's deletes. Each statement adds one row per
(person, type) whose unread count it changed, by how much; a count is the sum of a person's
rows. Rows are only ever inserted (and folded together by maintenance,
`store.notifications.fold_unread_counts`), so no two writers ever wait for each other on a
counter — a fan-out to 100,000 people holds no lock that a person's `read` would queue behind.
The counts change in the transaction that changes the rows: they commit, or roll back, with it.

The functions are SECURITY DEFINER (the people's role may not write the table); the people's
role reads its own rows only (row-level security, as on notifications). SQLite has the table,
empty: there `count` reads notifications (a file of one person's scale).

The triggers are created, and the counts filled in, in the upgrade's transaction, which holds
off writes to notifications until it commits (CREATE TRIGGER's lock): none is missed or
counted twice.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from humanglue_cli.core.migrate import note, under_lock_timeout

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLE = "hg_unread_counts"
DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
# event → (transition tables, the signed rows that become deltas)
TRIGGERS = {
    "INSERT": (
        "NEW TABLE AS added",
        "SELECT user_id, type, 1 AS n FROM added WHERE read_at IS NULL",
    ),
    "UPDATE": (
        "OLD TABLE AS before NEW TABLE AS after",
        "SELECT user_id, type, 1 AS n FROM after WHERE read_at IS NULL\n"
        "  UNION ALL SELECT user_id, type, -1 FROM before WHERE read_at IS NULL",
    ),
    "DELETE": (
        "OLD TABLE AS removed",
        "SELECT user_id, type, -1 AS n FROM removed WHERE read_at IS NULL",
    ),
}


# What `notifications list` narrows by, for a person with a million rows: each filter alone
# walks an index of its own newest first (keyset: any depth costs what the first page does),
# rather than the person's every row until a page is found — seconds when few match.
INDEXES = (
    ("ix_notifications_user_type", ["user_id", "type", "created_at", "id"], None),
    ("ix_notifications_user_unread", ["user_id", "created_at", "id"], "read_at IS NULL"),
)
# As migration 0008: an index on a table this big is not built inside the upgrade (it would hold
# off the platform's writes for the whole build); `db upgrade` names the statement to run.
LARGE_TABLE = 64 * 1024 * 1024  # bytes (pg_relation_size)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        TABLE,
        sa.Column(
            "user_id", sa.Uuid(as_uuid=False).with_variant(sa.String(36), "sqlite"), nullable=False
        ),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("n", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
    )
    op.create_index("ix_hg_unread_counts_user", TABLE, ["user_id"])
    note("created", TABLE)
    _index(bind)
    if bind.dialect.name != "postgresql":
        return
    s = _ident(bind.execute(sa.text("SELECT current_schema()")).scalar_one())
    for event, (_tables, deltas) in TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION {s}.hg_unread_{event.lower()}() RETURNS trigger "
            f"LANGUAGE plpgsql {DEFINER} AS $fn$\n"
            "BEGIN\n"
            f"  INSERT INTO {s}.{TABLE} (user_id, type, n)\n"
            f"  SELECT user_id, type, sum(n) FROM ({deltas}) AS d\n"
            "  GROUP BY user_id, type HAVING sum(n) <> 0;\n"
            "  RETURN NULL;\n"
            "END $fn$"
        )
    op.execute(
        f"CREATE FUNCTION {s}.hg_unread_truncate() RETURNS trigger "
        f"LANGUAGE plpgsql {DEFINER} AS $fn$\n"
        f"BEGIN\n  DELETE FROM {s}.{TABLE};\n  RETURN NULL;\nEND $fn$"
    )
    with under_lock_timeout("notifications"):  # CREATE TRIGGER holds off its writers
        for event, (tables, _deltas) in TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER hg_unread_{event.lower()} AFTER {event} ON {s}.notifications "
                f"REFERENCING {tables} FOR EACH STATEMENT "
                f"EXECUTE FUNCTION {s}.hg_unread_{event.lower()}()"
            )
        op.execute(
            f"CREATE TRIGGER hg_unread_truncate AFTER TRUNCATE ON {s}.notifications "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.hg_unread_truncate()"
        )
        op.execute(
            f"INSERT INTO {s}.{TABLE} (user_id, type, n) SELECT user_id, type, count(*) "
            f"FROM {s}.notifications WHERE read_at IS NULL GROUP BY user_id, type"
        )
    note("triggers", "notifications")
    _secure(s, bind)


def _index(bind: sa.Connection) -> None:
    size = (
        bind.execute(sa.text("SELECT pg_relation_size(to_regclass('notifications'))")).scalar()
        if bind.dialect.name == "postgresql"
        else 0
    )
    for name, columns, where in INDEXES:
        if size and int(size) >= LARGE_TABLE:
            partial = f" WHERE {where}" if where else ""
            note(
                "index-deferred",
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON notifications "
                f"({', '.join(columns)}){partial}",
            )
            continue
        with under_lock_timeout("notifications"):  # CREATE INDEX holds off its writers
            op.create_index(
                name,
                "notifications",
                columns,
                if_not_exists=True,
                postgresql_where=sa.text(where) if where else None,
                sqlite_where=sa.text(where) if where else None,
            )


def _secure(s: str, bind: sa.Connection) -> None:
    """The people's role reads its own counts; the workers and operators fold them."""
    prefix = bind.execute(
        sa.text(f"SELECT value FROM {s}.hg_settings WHERE name = 'role_prefix'")
    ).scalar_one()
    people, worker, operator = (_ident(f"{prefix}_{g}") for g in ("people", "worker", "operator"))
    functions = ", ".join(f"{s}.hg_unread_{event.lower()}()" for event in (*TRIGGERS, "TRUNCATE"))
    op.execute(f"REVOKE ALL ON FUNCTION {functions} FROM PUBLIC")
    op.execute(f"REVOKE ALL ON {s}.{TABLE} FROM PUBLIC")
    op.execute(f"GRANT SELECT ON {s}.{TABLE} TO {people}")
    op.execute(f"GRANT SELECT, INSERT, DELETE ON {s}.{TABLE} TO {worker}, {operator}")
    op.execute(f"ALTER TABLE {s}.{TABLE} ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY hg_everyone ON {s}.{TABLE} AS PERMISSIVE FOR ALL TO PUBLIC "
        "USING (true) WITH CHECK (true)"
    )
    op.execute(
        f"CREATE POLICY hg_people_own ON {s}.{TABLE} AS RESTRICTIVE FOR ALL TO {people} "
        f"USING (user_id = (SELECT {s}.hg_current_person())) WITH CHECK (false)"
    )
    note("policies", TABLE)


def downgrade() -> None:
    for name, _columns, _where in INDEXES:
        op.drop_index(name, "notifications", if_exists=True)
    if op.get_bind().dialect.name == "postgresql":
        for event in (*TRIGGERS, "TRUNCATE"):
            op.execute(f"DROP TRIGGER IF EXISTS hg_unread_{event.lower()} ON notifications")
            op.execute(f"DROP FUNCTION IF EXISTS hg_unread_{event.lower()}()")
    op.drop_table(TABLE)
