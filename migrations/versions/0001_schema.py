"""The domain tables (CONTRACT §5) where the platform lacks them, and our own internals.

On a database whose platform tables already exist, those are left as they are: the columns the
rules read are checked, and the keys must be UUIDs. Every problem is named in one refusal, made
before anything is created.

Revision ID: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from humanglue_cli.core.migrate import note, under_lock_timeout
from migrations._platform import check_adoptable, existing_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SQLITE_UUID4 = (
    "(lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || "
    "substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || "
    "substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))"
)


def _uuid() -> sa.types.TypeEngine[str]:
    return sa.Uuid(as_uuid=False).with_variant(sa.String(36), "sqlite")


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _bigint() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = True, default: bool = False) -> sa.Column[object]:
    # SQLite keeps timestamps as UTC text in CURRENT_TIMESTAMP's form (CONTRACT §5).
    kind = sa.DateTime(timezone=True).with_variant(sa.Text(), "sqlite")
    return sa.Column(
        name,
        kind,
        nullable=nullable,
        server_default=sa.text("CURRENT_TIMESTAMP") if default else None,
    )


def _id(name: str = "id") -> sa.Column[str]:
    return sa.Column(name, _uuid(), primary_key=True)


def _ref(name: str, target: str, nullable: bool = True, **kw: object) -> sa.Column[str]:
    return sa.Column(name, _uuid(), sa.ForeignKey(target, **kw), nullable=nullable)


def _platform_tables() -> list[tuple[str, list[sa.SchemaItem], list[tuple[str, list[str]]]]]:
    uuid_default = (
        "gen_random_uuid()" if op.get_bind().dialect.name == "postgresql" else (_SQLITE_UUID4)
    )
    return [
        (
            "profiles",
            [
                _id(),
                sa.Column("email", sa.Text, nullable=False, unique=True),
                sa.Column("full_name", sa.Text),
                sa.Column("role", sa.Text, nullable=False),
                _ts("created_at", default=True),
            ],
            [],
        ),
        (
            "courses",
            [
                _id(),
                _ref("instructor_id", "profiles.id", nullable=False),
                sa.Column("title", sa.Text, nullable=False),
                _ref("updated_by", "profiles.id"),
                _ts("created_at", default=True),
                _ts("updated_at", default=True),
            ],
            [],
        ),
        (
            "course_instructors",
            [
                sa.Column(
                    "course_id",
                    _uuid(),
                    sa.ForeignKey("courses.id", ondelete="CASCADE"),
                    primary_key=True,
                ),
                sa.Column(
                    "user_id",
                    _uuid(),
                    sa.ForeignKey("profiles.id", ondelete="CASCADE"),
                    primary_key=True,
                ),
            ],
            [],
        ),
        (
            "enrollments",
            [
                _id(),
                _ref("course_id", "courses.id", nullable=False),
                _ref("student_id", "profiles.id", nullable=False),
                sa.Column("status", sa.Text, nullable=False, server_default="active"),
                sa.Column("progress", sa.Integer, nullable=False, server_default="0"),
                _ts("enrolled_at", default=True),
                _ts("completed_at"),
            ],
            [],
        ),
        (
            "workshops",
            [
                _id(),
                _ref("instructor_id", "profiles.id", nullable=False),
                sa.Column("title", sa.Text, nullable=False),
                _ref("course_id", "courses.id"),
                _ts("starts_at"),
                sa.Column("capacity", sa.Integer),
            ],
            [],
        ),
        (
            "workshop_registrations",
            [
                _id(),
                _ref("workshop_id", "workshops.id", nullable=False),
                _ref("user_id", "profiles.id", nullable=False),
                sa.Column("status", sa.Text, nullable=False, server_default="registered"),
                _ts("registered_at", default=True),
                _ts("checked_in_at"),
            ],
            [],
        ),
        (
            "course_reviews",
            [
                _id(),
                _ref("course_id", "courses.id", nullable=False),
                _ref("student_id", "profiles.id", nullable=False),
                sa.Column("rating", sa.Integer, nullable=False),
                sa.Column("comment", sa.Text),
                _ts("created_at", default=True),
            ],
            [],
        ),
        (
            "payments",
            [
                _id(),
                _ref("user_id", "profiles.id", nullable=False),
                _ref("course_id", "courses.id"),
                _ref("workshop_id", "workshops.id"),
                sa.Column("amount_cents", sa.Integer, nullable=False),
                sa.Column("currency", sa.Text, nullable=False, server_default="USD"),
                sa.Column("status", sa.Text, nullable=False),
                _ts("created_at", default=True),
                _ts("updated_at", default=True),
            ],
            [],
        ),
        (
            "course_questions",
            [
                _id(),
                _ref("course_id", "courses.id", nullable=False),
                _ref("student_id", "profiles.id", nullable=False),
                sa.Column("body", sa.Text, nullable=False),
                _ts("created_at", default=True),
            ],
            [],
        ),
        (
            "student_activity",
            [
                _id(),
                _ref("student_id", "profiles.id", nullable=False),
                _ref("course_id", "courses.id", nullable=False),
                sa.Column("activity_type", sa.Text, nullable=False),
                sa.Column("details", _json()),
                _ts("created_at", default=True),
            ],
            [("ix_student_activity_course_created", ["course_id", "created_at"])],
        ),
        (
            "notifications",
            [
                sa.Column("id", _uuid(), primary_key=True, server_default=sa.text(uuid_default)),
                sa.Column(
                    "user_id",
                    _uuid(),
                    sa.ForeignKey("profiles.id", ondelete="CASCADE"),
                    nullable=False,
                ),
                sa.Column("type", sa.Text, nullable=False),
                sa.Column("title", sa.Text, nullable=False),
                sa.Column("message", sa.Text, nullable=False),
                sa.Column("data", _json(), nullable=False, server_default="{}"),
                sa.Column("link", sa.Text),
                sa.Column("priority", sa.Text, nullable=False, server_default="normal"),
                _ts("read_at"),
                _ts("created_at", nullable=False, default=True),
            ],
            [
                ("ix_notifications_user_created", ["user_id", "created_at", "id"]),
                ("ix_notifications_created", ["created_at"]),
            ],
        ),
        (
            "student_presence",
            [
                sa.Column(
                    "user_id",
                    _uuid(),
                    sa.ForeignKey("profiles.id", ondelete="CASCADE"),
                    primary_key=True,
                ),
                sa.Column("scope", sa.Text, primary_key=True, server_default=""),
                sa.Column("device_id", sa.Text, primary_key=True, server_default=""),
                sa.Column("course_id", _uuid(), sa.ForeignKey("courses.id", ondelete="CASCADE")),
                sa.Column(
                    "workshop_id", _uuid(), sa.ForeignKey("workshops.id", ondelete="CASCADE")
                ),
                sa.Column("status", sa.Text, nullable=False, server_default="online"),
                _ts("last_seen_at", nullable=False, default=True),
            ],
            [("ix_student_presence_last_seen", ["last_seen_at"])],
        ),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    # Everything is checked before anything is created: a refusal names every problem at once.
    existing = existing_tables(bind)
    check_adoptable(existing, bind.dialect.name)
    for name, columns, indexes in _platform_tables():
        if name in existing:
            note("adopted", name)
            continue
        referenced = sorted(
            {
                key.target_fullname.split(".")[0]
                for column in columns
                if isinstance(column, sa.Column)
                for key in column.foreign_keys
            }
            & existing.keys()
        )
        with under_lock_timeout(*referenced):  # a foreign key locks the table it references
            _create_table(name, *columns)
        for index, cols in indexes:
            op.create_index(index, name, cols)

    _create_table(
        "hg_events",
        sa.Column("id", _bigint(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("entity_id", sa.Text, nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        _ts("created_at", nullable=False, default=True),
        _ts("available_at", nullable=False, default=True),
        _ts("failed_at"),
        # Never reuse the id of a processed (deleted) event: some ledger keys name it.
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_hg_events_due",
        "hg_events",
        ["id"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    _create_table(
        "hg_ledger",
        sa.Column("rule", sa.Text, primary_key=True),
        sa.Column("entity_id", sa.Text, primary_key=True),
        sa.Column("event_id", _bigint(), nullable=False),
        sa.Column("recipients", sa.Integer, nullable=False),
        _ts("created_at", nullable=False, default=True),
    )
    _create_table(
        "hg_workers",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        _ts("started_at", nullable=False, default=True),
        _ts("last_seen_at", nullable=False, default=True),
        sa.Column("processed", sa.BigInteger, nullable=False, server_default="0"),
    )
    _create_table(
        "hg_maintenance_runs",
        sa.Column("id", _bigint(), primary_key=True, autoincrement=True),
        sa.Column("task", sa.Text, nullable=False),
        _ts("ran_at", nullable=False, default=True),
        sa.Column("result", _json(), nullable=False),
        sqlite_autoincrement=True,
    )


def _create_table(name: str, *columns: sa.SchemaItem, **kw: object) -> None:
    op.create_table(name, *columns, **kw)
    note("created", name)


def downgrade() -> None:
    for name in ("hg_maintenance_runs", "hg_workers", "hg_ledger", "hg_events"):
        op.drop_table(name)
