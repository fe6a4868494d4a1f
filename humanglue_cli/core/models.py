"""The declared schema: the platform's domain tables (CONTRACT §5) and our own internals.

The migrations in `migrations/` create exactly this (tests/test_migrations.py compares them).
Our own tables are prefixed `hg_` so that they never collide with the platform's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles

metadata = sa.MetaData()

# Ids are UUIDs: native on PostgreSQL, canonical lower-case text on SQLite (CONTRACT §5).
UUID = sa.Uuid(as_uuid=False).with_variant(sa.String(36), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes; on SQLite the `CURRENT_TIMESTAMP` text form, read back as UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        # SQLite: bind and read the text ourselves (sqlite_timestamp), not through DateTime.
        return dialect.type_descriptor(sa.Text() if dialect.name == "sqlite" else self.impl)

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        if dialect.name == "sqlite":
            return sqlite_timestamp(value)
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        stamp: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def sqlite_timestamp(value: datetime) -> str:
    """The text SQLite keeps: `CURRENT_TIMESTAMP`'s form, with `.ffffff` only when non-zero.

    Whole seconds are written without a fraction so that a value read back and bound again
    (a cursor) compares equal to the same row written by the platform's plain SQL.
    """
    value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f" if value.microsecond else "%Y-%m-%d %H:%M:%S")


def _now() -> sa.TextClause:
    return sa.text("CURRENT_TIMESTAMP")


def _ts(name: str, nullable: bool = True, default: bool = False) -> sa.Column[datetime]:
    return sa.Column(
        name, UTCDateTime(), nullable=nullable, server_default=_now() if default else None
    )


# --- the platform's tables (CONTRACT §5) ----------------------------------------------------

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("email", sa.Text, nullable=False, unique=True),
    sa.Column("full_name", sa.Text),
    sa.Column("role", sa.Text, nullable=False),
    _ts("created_at", default=True),
)

courses = sa.Table(
    "courses",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("instructor_id", UUID, sa.ForeignKey("profiles.id"), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("updated_by", UUID, sa.ForeignKey("profiles.id")),
    _ts("created_at", default=True),
    _ts("updated_at", default=True),
)

course_instructors = sa.Table(
    "course_instructors",
    metadata,
    sa.Column("course_id", UUID, sa.ForeignKey("courses.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", UUID, sa.ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True),
)

enrollments = sa.Table(
    "enrollments",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("course_id", UUID, sa.ForeignKey("courses.id"), nullable=False),
    sa.Column("student_id", UUID, sa.ForeignKey("profiles.id"), nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="active"),
    sa.Column("progress", sa.Integer, nullable=False, server_default="0"),
    _ts("enrolled_at", default=True),
    _ts("completed_at"),
    # The live stats' figures, one index range each (migration 0008).
    sa.Index("ix_enrollments_course_status", "course_id", "status"),
    sa.Index("ix_enrollments_student", "student_id"),
)

workshops = sa.Table(
    "workshops",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("instructor_id", UUID, sa.ForeignKey("profiles.id"), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("course_id", UUID, sa.ForeignKey("courses.id")),
    _ts("starts_at"),
    sa.Column("capacity", sa.Integer),
)

workshop_registrations = sa.Table(
    "workshop_registrations",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("workshop_id", UUID, sa.ForeignKey("workshops.id"), nullable=False),
    sa.Column("user_id", UUID, sa.ForeignKey("profiles.id"), nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="registered"),
    _ts("registered_at", default=True),
    _ts("checked_in_at"),
    sa.Index("ix_workshop_registrations_workshop", "workshop_id", "status"),
    sa.Index("ix_workshop_registrations_user", "user_id"),
)

course_reviews = sa.Table(
    "course_reviews",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("course_id", UUID, sa.ForeignKey("courses.id"), nullable=False),
    sa.Column("student_id", UUID, sa.ForeignKey("profiles.id"), nullable=False),
    sa.Column("rating", sa.Integer, nullable=False),
    sa.Column("comment", sa.Text),
    _ts("created_at", default=True),
    sa.Index("ix_course_reviews_course", "course_id", "rating"),
)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("user_id", UUID, sa.ForeignKey("profiles.id"), nullable=False),
    sa.Column("course_id", UUID, sa.ForeignKey("courses.id")),
    sa.Column("workshop_id", UUID, sa.ForeignKey("workshops.id")),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("currency", sa.Text, nullable=False, server_default="USD"),
    sa.Column("status", sa.Text, nullable=False),
    _ts("created_at", default=True),
    _ts("updated_at", default=True),
    sa.Index("ix_payments_course_status", "course_id", "status"),
    sa.Index("ix_payments_workshop_status", "workshop_id", "status"),
)

course_questions = sa.Table(
    "course_questions",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("course_id", UUID, sa.ForeignKey("courses.id"), nullable=False),
    sa.Column("student_id", UUID, sa.ForeignKey("profiles.id"), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    _ts("created_at", default=True),
)

student_activity = sa.Table(
    "student_activity",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("student_id", UUID, sa.ForeignKey("profiles.id"), nullable=False),
    sa.Column("course_id", UUID, sa.ForeignKey("courses.id"), nullable=False),
    sa.Column("activity_type", sa.Text, nullable=False),
    sa.Column("details", JSON),
    _ts("created_at", default=True),
    sa.Index("ix_student_activity_course_created", "course_id", "created_at"),
)

notifications = sa.Table(
    "notifications",
    metadata,
    # Generated by the database (gen_random_uuid() / a v4 expression on SQLite: see migrations).
    sa.Column("id", UUID, primary_key=True, server_default=sa.FetchedValue()),
    sa.Column("user_id", UUID, sa.ForeignKey("profiles.id", ondelete="CASCADE"), nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", JSON, nullable=False, server_default="{}"),
    sa.Column("link", sa.Text),
    sa.Column("priority", sa.Text, nullable=False, server_default="normal"),
    _ts("read_at"),
    _ts("created_at", nullable=False, default=True),
    # When it became visible (migration 0005): PostgreSQL's id of the writing transaction,
    # SQLite's insert counter. NULL for rows older than that revision.
    sa.Column("commit_seq", sa.BigInteger),
    sa.Index("ix_notifications_user_created", "user_id", "created_at", "id"),
    sa.Index("ix_notifications_created", "created_at"),
    sa.Index("ix_notifications_user_commit", "user_id", "commit_seq"),
    # What `notifications list` narrows by (migration 0010).
    sa.Index("ix_notifications_user_type", "user_id", "type", "created_at", "id"),
    sa.Index(
        "ix_notifications_user_unread",
        "user_id",
        "created_at",
        "id",
        postgresql_where=sa.text("read_at IS NULL"),
        sqlite_where=sa.text("read_at IS NULL"),
    ),
)


class course_of(sa.sql.functions.FunctionElement[str]):  # noqa: N801 (used as a function)
    """The course a notification is about: `data`'s `course_id`, as text (NULL for none).

    `notifications list --course` filters by it and `ix_notifications_user_course` indexes it:
    one expression for both, its key spelled out, because PostgreSQL uses an expression index
    only for a query expression equal to it (`data ->> $1`, the key bound as a parameter, is
    not). PostgreSQL: `hg_jsonb_text(data, 'course_id')`, the `->>` operator's own function
    declared LEAKPROOF (migration 0012), which row-level security needs to let the index serve
    the people's role; SQLite: `json_extract(data, '$.course_id')`.
    """

    type = sa.Text()
    name = "course_of"
    inherit_cache = True


@compiles(course_of, "postgresql")
def _course_of_postgresql(
    element: course_of, compiler: sa.sql.compiler.SQLCompiler, **kw: Any
) -> str:
    return f"hg_jsonb_text({compiler.process(element.clauses, **kw)}, 'course_id')"


@compiles(course_of)
def _course_of(element: course_of, compiler: sa.sql.compiler.SQLCompiler, **kw: Any) -> str:
    return f"json_extract({compiler.process(element.clauses, **kw)}, '$.course_id')"


# What `course_of` calls on PostgreSQL: `->>`'s own C function, declared LEAKPROOF (migration
# 0012 says why; `metadata.create_all` makes it too, before the index that uses it).
JSONB_TEXT = (
    "CREATE OR REPLACE FUNCTION hg_jsonb_text(jsonb, text) RETURNS text LANGUAGE internal "
    "IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'jsonb_object_field_text'"
)
_jsonb_text = sa.DDL(JSONB_TEXT)  # type: ignore[no-untyped-call]
sa.event.listen(notifications, "before_create", _jsonb_text.execute_if(dialect="postgresql"))

# `notifications list --course`, alone or with other filters (migration 0012): the person's rows
# of one course newest first; the other filters are checked on those rows. Only rows about a
# course: `send --all`'s announcements (about none) do not pay for it.
_has_course = course_of(notifications.c.data).is_not(None)
sa.Index(
    "ix_notifications_user_course",
    notifications.c.user_id,
    course_of(notifications.c.data),
    notifications.c.created_at,
    notifications.c.id,
    postgresql_where=_has_course,
    sqlite_where=_has_course,
)

student_presence = sa.Table(
    "student_presence",
    metadata,
    sa.Column("user_id", UUID, sa.ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True),
    # '' rather than NULL for "not in a course/workshop", so that the key stays a primary key.
    sa.Column("scope", sa.Text, primary_key=True, server_default=""),
    sa.Column("device_id", sa.Text, primary_key=True, server_default=""),
    sa.Column("course_id", UUID, sa.ForeignKey("courses.id", ondelete="CASCADE")),
    sa.Column("workshop_id", UUID, sa.ForeignKey("workshops.id", ondelete="CASCADE")),
    sa.Column("status", sa.Text, nullable=False, server_default="online"),
    _ts("last_seen_at", nullable=False, default=True),
    # Since when this device is online: set by a beat that finds it offline or timed out
    # (migration 0007; NULL on rows written before it).
    _ts("joined_at"),
    sa.Index("ix_student_presence_last_seen", "last_seen_at"),
    sa.Index("ix_student_presence_scope", "scope", "user_id", "status"),
)

PLATFORM_TABLES = (
    profiles,
    courses,
    course_instructors,
    enrollments,
    workshops,
    workshop_registrations,
    course_reviews,
    payments,
    course_questions,
    student_activity,
    notifications,
    student_presence,
)

# The columns the rules read: `db upgrade` on an existing platform checks that they are there.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "profiles": ("id", "email", "full_name", "role"),
    "courses": ("id", "instructor_id", "title", "updated_by"),
    "course_instructors": ("course_id", "user_id"),
    "enrollments": ("id", "course_id", "student_id", "status"),
    "workshops": ("id", "instructor_id", "title"),
    "workshop_registrations": ("id", "workshop_id", "user_id"),
    "course_reviews": ("id", "course_id", "student_id", "rating", "comment"),
    "payments": ("id", "user_id", "course_id", "workshop_id", "amount_cents", "currency", "status"),
    "course_questions": ("id", "course_id", "student_id", "body"),
    "student_activity": ("id", "student_id", "course_id", "activity_type", "created_at"),
    "notifications": (
        "id",
        "user_id",
        "type",
        "title",
        "message",
        "data",
        "link",
        "priority",
        "read_at",
        "created_at",
    ),
    "student_presence": ("user_id", "status", "last_seen_at"),
}

# --- our own internals ------------------------------------------------------------------------

# The transactional outbox: triggers on the platform's tables write one row per domain event
# in the same transaction as the change. Rows are deleted once processed; failed ones stay.
events = sa.Table(
    "hg_events",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("entity_id", sa.Text, nullable=False),
    sa.Column("payload", JSON, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    _ts("created_at", nullable=False, default=True),
    _ts("available_at", nullable=False, default=True),
    _ts("failed_at"),
    # The claim and the workers' wake-up probe walk this in id order and stop at the first due
    # rows: an index probe whatever the statistics say, however many events have failed.
    sa.Index(
        "ix_hg_events_due",
        "id",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    ),
    # Never reuse the id of a processed (deleted) event: some ledger keys name it.
    sqlite_autoincrement=True,
)

# "Once per entity": one row per (rule, entity) that has notified, kept after the notifications
# themselves are read, deleted or cleaned up.
ledger = sa.Table(
    "hg_ledger",
    metadata,
    sa.Column("rule", sa.Text, primary_key=True),
    sa.Column("entity_id", sa.Text, primary_key=True),
    sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
    sa.Column("recipients", sa.Integer, nullable=False),
    _ts("created_at", nullable=False, default=True),
)

# Workers say they are alive here (for `humanglue status`).
workers = sa.Table(
    "hg_workers",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("hostname", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    _ts("started_at", nullable=False, default=True),
    _ts("last_seen_at", nullable=False, default=True),
    sa.Column("processed", sa.BigInteger, nullable=False, server_default="0"),
    _ts("stopped_at"),  # set when it stopped on a signal; a killed worker just goes silent
)

# One row per maintenance run (for `humanglue status` and the audit trail).
maintenance_runs = sa.Table(
    "hg_maintenance_runs",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("task", sa.Text, nullable=False),  # the job: cleanup, presence_sweep
    _ts("ran_at", nullable=False, default=True),  # when it started
    sa.Column("result", JSON, nullable=False),
    # Migration 0009: the tick a scheduled run is for (NULL: started by hand), claimed once;
    # a run is going while `finished_at` is NULL, held by `owner` until `lease_until`.
    _ts("scheduled_for"),
    _ts("finished_at"),
    _ts("lease_until"),
    sa.Column("owner", sa.Text),
    sa.Index("ux_hg_maintenance_runs_tick", "task", "scheduled_for", unique=True),
    sa.Index("ix_hg_maintenance_runs_running", "task", "finished_at"),
    sqlite_autoincrement=True,
)

# Settings of this database's own, such as the prefix of its PostgreSQL roles (migration 0004).
settings = sa.Table(
    "hg_settings",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# Personal PostgreSQL logins (`humanglue access grant`): which login is whose. Empty on SQLite.
logins = sa.Table(
    "hg_logins",
    metadata,
    sa.Column("user_id", UUID, sa.ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role_name", sa.Text, nullable=False, unique=True),
    _ts("created_at", nullable=False, default=True),
)

# The instructors' activity feed (`humanglue activity`, migration 0006): one row per platform
# event that is activity, written by the worker in the transaction that processes the event
# (so exactly once), read by commit order like notifications. Kept as long as notifications.
activity = sa.Table(
    "hg_activity",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("course_id", UUID),
    sa.Column("workshop_id", UUID),
    sa.Column("student_id", UUID),
    sa.Column("data", JSON, nullable=False),
    _ts("at", nullable=False, default=True),
    # PostgreSQL: the writing transaction's id (as notifications.commit_seq); SQLite: unused,
    # the id is the commit order there (one writer at a time, AUTOINCREMENT).
    sa.Column("commit_seq", sa.BigInteger),
    sa.Index("ux_hg_activity_event", "event_id", unique=True),
    sa.Index("ix_hg_activity_course_at", "course_id", "at"),
    sa.Index("ix_hg_activity_workshop_at", "workshop_id", "at"),
    sa.Index("ix_hg_activity_commit", "commit_seq"),
    sqlite_autoincrement=True,
)

# Broadcasts (`humanglue broadcast`): ephemeral messages to the instructors of a course or
# workshop, read live by their tails; deleted after BROADCAST_TTL, never shown older.
broadcasts = sa.Table(
    "hg_broadcasts",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("course_id", UUID),
    sa.Column("workshop_id", UUID),
    sa.Column("sender_id", UUID, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    _ts("created_at", nullable=False, default=True),
    sa.Column("commit_seq", sa.BigInteger),
    sa.Index("ix_hg_broadcasts_created", "created_at"),
    sa.Index("ix_hg_broadcasts_commit", "commit_seq"),
    sqlite_autoincrement=True,
)

# Presence peaks (migration 0007): per scope ('course:<id>' / 'workshop:<id>') and UTC day,
# the most people online at once; raised by a trigger on student_presence whenever a device
# joins, read by `presence stats`, expired by `store.presence.expire_peaks`.
presence_peaks = sa.Table(
    "hg_presence_peaks",
    metadata,
    sa.Column("scope", sa.Text, primary_key=True),
    sa.Column("day", sa.Date().with_variant(sa.Text(), "sqlite"), primary_key=True),
    sa.Column("course_id", UUID),
    sa.Column("workshop_id", UUID),
    sa.Column("peak", sa.Integer, nullable=False),
    _ts("peak_at", nullable=False),
    sa.Index("ix_hg_presence_peaks_day", "day"),
)

# Unread notifications per person and type, as deltas (migration 0010): on PostgreSQL every
# statement that inserts, updates or deletes notifications — the worker's, the CLI's, the
# platform's plain SQL — adds one row per (person, type) it changed, in its own transaction;
# `count` sums a person's rows, and maintenance folds them together. No row is ever updated, so
# no two writers wait for each other here. Empty on SQLite, where `count` reads notifications.
unread_counts = sa.Table(
    "hg_unread_counts",
    metadata,
    sa.Column("user_id", UUID, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("n", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
    sa.Index("ix_hg_unread_counts_user", "user_id"),
)

OWN_TABLES = (
    events,
    ledger,
    workers,
    maintenance_runs,
    activity,
    broadcasts,
    presence_peaks,
    unread_counts,
)
