"""Live stats: the seed's views, on both backends (the presence issue, item 2).

- `live_course_stats`: per course, enrollments active and completed, the completion rate
  (completed ÷ all enrollments, cancelled ones included; 0 without any), the average rating
  (NULL without reviews) and the number of reviews, revenue (the sum of succeeded payments'
  `amount_cents`, whatever their currency) and `online_now`. Each table is aggregated in a
  subquery of its own, correlated on the course (on PostgreSQL one LATERAL subquery per
  table; on SQLite, which has none, one scalar subquery per figure): no join of
  enrollments × reviews × payments fans out, and a filter on one course is one index range
  per subquery (the indexes below).
- `live_workshop_stats`: per workshop, registrations and check-ins (not cancelled), online
  now, revenue.
- `online_now` = people (distinct `user_id`) with a `student_presence` row of that course or
  workshop (its `scope`, 'course:<id>' or 'workshop:<id>', over 0007's index) that is
  `online` or `away` and beat within the presence timeout. The timeout is
  `hg_settings.presence_timeout_seconds` (60 when absent), written by `db upgrade` and
  every `humanglue worker` start from HUMANGLUE_PRESENCE_TIMEOUT.
- `user_unread_notifications`: per user with unread notifications, how many and the newest's
  time.
- `instructor_recent_activity`: the activity feed (`hg_activity`, migration 0006 — every
  enrollment, completion, registration, check-in, review, question, payment and
  `student_activity` row, journaled once by the worker) of the last 7 days, one row per
  instructor who teaches its course or workshop (owner, co-instructors; a workshop's own
  instructor and its course's). The journal rather than the platform's tables: one shape for
  every kind, written within a second of the platform's write.

On PostgreSQL the views are `security_invoker`: a personal login (or an operator acting as
someone) reads them under its own rights. Those rights are widened here to what the views
read: people may SELECT enrollments, course_reviews, payments and workshop_registrations,
under row-level security in the manner of migration 0004 — a student their own rows, an
instructor the rows of what they teach, an admin all; every other role as before. The timeout
is read through `hg_presence_timeout()` (SECURITY DEFINER: people cannot read hg_settings) and
written through `hg_set_presence_timeout(seconds)` (the worker may not write hg_settings).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from humanglue_cli.core.migrate import note, under_lock_timeout

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
TIMEOUT_SETTING = "presence_timeout_seconds"
TIMEOUT_DEFAULT = 60
RECENT = 7  # days of instructor_recent_activity
VIEWS = (
    "live_course_stats",
    "live_workshop_stats",
    "user_unread_notifications",
    "instructor_recent_activity",
)
SECURED = ("enrollments", "course_reviews", "payments", "workshop_registrations")
INDEXES = (
    ("ix_enrollments_course_status", "enrollments", ["course_id", "status"]),
    ("ix_course_reviews_course", "course_reviews", ["course_id", "rating"]),
    ("ix_payments_course_status", "payments", ["course_id", "status"]),
    ("ix_payments_workshop_status", "payments", ["workshop_id", "status"]),
    ("ix_workshop_registrations_workshop", "workshop_registrations", ["workshop_id", "status"]),
    # What a person takes (row-level security: hg_visible_courses/workshops, hg_may_see_person).
    ("ix_enrollments_student", "enrollments", ["student_id"]),
    ("ix_workshop_registrations_user", "workshop_registrations", ["user_id"]),
)
# An index on a platform table at least this big is not built by the upgrade: a plain CREATE
# INDEX holds off the platform's writes for the whole build (seconds to minutes at that size).
# `db upgrade` names it, with the CREATE INDEX CONCURRENTLY statement to run instead.
LARGE_TABLE = 64 * 1024 * 1024  # bytes (pg_relation_size)
RLS_SETTING = "rls_enabled_by_humanglue_0008"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _large(table: str) -> bool:
    """Whether `table` is too big to index inside the upgrade (LARGE_TABLE)."""
    size = (
        op.get_bind()
        .execute(sa.text("SELECT pg_relation_size(to_regclass(:t))"), {"t": table})
        .scalar()
    )
    return bool(size) and int(size) >= LARGE_TABLE


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --- the views' SQL, one text for both backends but for these few pieces ------------------


def _online(table: str, column: str, cutoff: str) -> str:
    # By `scope` ('course:<id>', 'workshop:<id>'), over 0007's (scope, user_id, status) index.
    kind = column.removesuffix("_id")
    return (
        f"(SELECT count(DISTINCT sp.user_id) FROM student_presence sp\n"
        f"    WHERE sp.scope = '{kind}:' || {table}.id AND sp.status IN ('online', 'away')\n"
        f"      AND sp.last_seen_at > {cutoff})"
    )


def _count(table: str, where: str, key: str, outer: str) -> str:
    also = f" AND {where}" if where else ""
    return f"(SELECT count(*) FROM {table} x WHERE x.{key} = {outer}.id{also})"


def _revenue(key: str, outer: str) -> str:
    return (
        f"(SELECT coalesce(sum(x.amount_cents), 0) FROM payments x\n"
        f"    WHERE x.{key} = {outer}.id AND x.status = 'succeeded')"
    )


def view_sql(postgres: bool, schema: str = "") -> dict[str, str]:
    """Each view's SELECT on this backend (`schema`: PostgreSQL's, quoted)."""
    if postgres:
        cutoff = f"now() - {schema}.hg_presence_timeout()"
        real, recent = "double precision", f"now() - interval '{RECENT} days'"
    else:
        seconds = (
            f"coalesce((SELECT CAST(value AS REAL) FROM hg_settings "
            f"WHERE name = '{TIMEOUT_SETTING}'), {TIMEOUT_DEFAULT})"
        )
        cutoff = f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || {seconds} || ' seconds')"
        real = "REAL"
        recent = f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-{RECENT} days')"
    total = _count("enrollments", "", "course_id", "c")
    active = _count("enrollments", "x.status = 'active'", "course_id", "c")
    completed = _count("enrollments", "x.status = 'completed'", "course_id", "c")
    registered = "x.status <> 'cancelled'"
    checked_in = f"{registered} AND x.checked_in_at IS NOT NULL"
    rating = (
        f"(SELECT CAST(avg(x.rating) AS {real}) FROM course_reviews x WHERE x.course_id = c.id)"
    )
    reviews = _count("course_reviews", "", "course_id", "c")
    joins = ""
    if postgres:  # each table read once per course: its figures from one LATERAL subquery
        active, completed, total = "e.active", "e.completed", "e.total"
        rating, reviews = "r.rating_avg", "r.rating_count"
        joins = (
            "\nCROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE x.status = 'active') AS active,\n"
            "    count(*) FILTER (WHERE x.status = 'completed') AS completed,\n"
            "    count(*) AS total FROM enrollments x WHERE x.course_id = c.id) e\n"
            "CROSS JOIN LATERAL (SELECT CAST(avg(x.rating) AS double precision) AS rating_avg,\n"
            "    count(*) AS rating_count FROM course_reviews x WHERE x.course_id = c.id) r"
        )
    live_course_stats = (
        "SELECT c.id AS course_id, c.title,\n"
        f"  {active} AS enrollments_active,\n"
        f"  {completed} AS enrollments_completed,\n"
        f"  {total} AS enrollments_total,\n"
        f"  coalesce(CAST({completed} AS {real}) / nullif({total}, 0), 0)"
        " AS completion_rate,\n"
        f"  {rating} AS rating_avg,\n"
        f"  {reviews} AS rating_count,\n"
        f"  {_revenue('course_id', 'c')} AS revenue_cents,\n"
        f"  {_online('c', 'course_id', cutoff)} AS online_now\n"
        f"FROM courses c{joins}"
    )
    live_workshop_stats = (
        "SELECT w.id AS workshop_id, w.title,\n"
        f"  {_count('workshop_registrations', registered, 'workshop_id', 'w')}"
        " AS registrations,\n"
        f"  {_count('workshop_registrations', checked_in, 'workshop_id', 'w')}"
        " AS checked_in,\n"
        f"  {_online('w', 'workshop_id', cutoff)} AS online_now,\n"
        f"  {_revenue('workshop_id', 'w')} AS revenue_cents\n"
        "FROM workshops w"
    )
    user_unread_notifications = (
        "SELECT user_id, count(*) AS unread_count, max(created_at) AS latest_at\n"
        "FROM notifications WHERE read_at IS NULL GROUP BY user_id"
    )
    course_teachers = (
        "SELECT id AS course_id, instructor_id FROM courses\n"
        "   UNION SELECT course_id, user_id FROM course_instructors"
    )
    workshop_teachers = (
        "SELECT id AS workshop_id, instructor_id FROM workshops\n"
        "   UNION SELECT w.id, c.instructor_id FROM workshops w JOIN courses c"
        " ON c.id = w.course_id\n"
        "   UNION SELECT w.id, ci.user_id FROM workshops w JOIN course_instructors ci"
        " ON ci.course_id = w.course_id"
    )
    columns = (
        "a.id AS activity_id, a.kind, a.course_id, a.workshop_id, a.student_id,\n"
        "  coalesce(p.full_name, p.email) AS student_name, a.at, a.data"
    )
    instructor_recent_activity = (
        f"SELECT t.instructor_id, {columns}\n"
        f"FROM hg_activity a JOIN ({course_teachers}) t ON t.course_id = a.course_id\n"
        f"LEFT JOIN profiles p ON p.id = a.student_id WHERE a.at > {recent}\n"
        "UNION ALL\n"
        f"SELECT t.instructor_id, {columns}\n"
        f"FROM hg_activity a JOIN ({workshop_teachers}) t ON t.workshop_id = a.workshop_id\n"
        f"LEFT JOIN profiles p ON p.id = a.student_id\n"
        f"WHERE a.course_id IS NULL AND a.at > {recent}"
    )
    return {
        "live_course_stats": live_course_stats,
        "live_workshop_stats": live_workshop_stats,
        "user_unread_notifications": user_unread_notifications,
        "instructor_recent_activity": instructor_recent_activity,
    }


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    for name, table, columns in INDEXES:
        if postgres and _large(table):
            cols = ", ".join(columns)
            note(
                "index-deferred",
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} ({cols})",
            )
            continue
        with under_lock_timeout(table):  # CREATE INDEX holds off the table's writers meanwhile
            op.create_index(name, table, columns, if_not_exists=True)
    if not postgres:
        for name, select in view_sql(False).items():
            op.execute(f"CREATE VIEW {name} AS\n{select}")
            note("view", name)
        return
    schema = bind.execute(sa.text("SELECT current_schema()")).scalar_one()
    s = _ident(schema)
    _functions(s)
    for name, select in view_sql(True, s).items():
        op.execute(f"CREATE VIEW {s}.{name} WITH (security_invoker = true) AS\n{select}")
        note("view", name)
    _grant(s)
    enabled = _secure(s, bind)
    op.execute(
        f"INSERT INTO {s}.hg_settings (name, value) VALUES "
        f"({_literal(RLS_SETTING)}, {_literal(','.join(enabled))})"
    )
    for table in SECURED:
        note("policies", table)


def _functions(s: str) -> None:
    op.execute(
        f"CREATE FUNCTION {s}.hg_presence_timeout() RETURNS interval LANGUAGE sql "
        f"STABLE PARALLEL RESTRICTED {DEFINER} AS $fn$\n"
        f"SELECT coalesce((SELECT value::double precision FROM {s}.hg_settings\n"
        f"  WHERE name = {_literal(TIMEOUT_SETTING)}), {TIMEOUT_DEFAULT})"
        " * interval '1 second'\n$fn$"
    )
    op.execute(
        f"CREATE FUNCTION {s}.hg_set_presence_timeout(seconds double precision) RETURNS void "
        f"LANGUAGE sql {DEFINER} AS $fn$\n"
        f"INSERT INTO {s}.hg_settings (name, value)\n"
        f"VALUES ({_literal(TIMEOUT_SETTING)}, greatest(seconds, 1)::text)\n"
        "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value\n"
        "  WHERE hg_settings.value IS DISTINCT FROM EXCLUDED.value\n$fn$"
    )


def _grant(s: str) -> None:
    # Role names are this database's (hg_settings): looked up when the statements run.
    views = ", ".join(f"{s}.{v}" for v in VIEWS)
    tables = ", ".join(f"{s}.{t}" for t in SECURED)
    op.execute(
        "DO $do$\n"
        f"DECLARE p text := (SELECT value FROM {s}.hg_settings WHERE name = 'role_prefix');\n"
        "  people text := quote_ident(p || '_people'); staff text;\n"
        "BEGIN\n"
        "  staff := format('%I, %I', p || '_worker', p || '_operator');\n"
        f"  EXECUTE 'REVOKE ALL ON FUNCTION {s}.hg_presence_timeout(),'\n"
        f"    || ' {s}.hg_set_presence_timeout(double precision) FROM PUBLIC';\n"
        f"  EXECUTE 'GRANT EXECUTE ON FUNCTION {s}.hg_presence_timeout() TO '\n"
        "    || people || ', ' || staff;\n"
        f"  EXECUTE 'GRANT EXECUTE ON FUNCTION {s}.hg_set_presence_timeout(double precision)'\n"
        "    || ' TO ' || staff;\n"
        f"  EXECUTE 'GRANT SELECT ON {views} TO ' || people || ', ' || staff;\n"
        f"  EXECUTE 'GRANT SELECT ON {tables} TO ' || people;\n"
        "END\n$do$"
    )


def _secure(s: str, bind: sa.Connection) -> list[str]:
    """Row-level security for the people's group, as migration 0004's `_secure`: every other
    role's access stays exactly as it was. Returns the tables that had none before."""
    prefix = bind.execute(
        sa.text(f"SELECT value FROM {s}.hg_settings WHERE name = 'role_prefix'")
    ).scalar_one()
    people, worker, operator = (_ident(f"{prefix}_{g}") for g in ("people", "worker", "operator"))
    had = dict(
        bind.execute(
            sa.text(
                "SELECT c.relname, c.relrowsecurity FROM pg_class c "
                "WHERE c.relnamespace = current_schema()::regnamespace "
                "AND c.relname = ANY(:names)"
            ),
            {"names": list(SECURED)},
        ).all()
    )
    me = f"(SELECT {s}.hg_current_person())"
    admin = f"(SELECT {s}.hg_is_admin())"
    courses = f"ANY ((SELECT {s}.hg_taught_courses())::uuid[])"
    workshops = f"ANY ((SELECT {s}.hg_taught_workshops())::uuid[])"
    using = {
        "enrollments": f"student_id = {me} OR course_id = {courses} OR {admin}",
        "course_reviews": f"student_id = {me} OR course_id = {courses} OR {admin}",
        "payments": (
            f"user_id = {me} OR course_id = {courses} OR workshop_id = {workshops} OR {admin}"
        ),
        "workshop_registrations": f"user_id = {me} OR workshop_id = {workshops} OR {admin}",
    }
    enabled = []
    for table in SECURED:
        with under_lock_timeout(table):  # ALTER TABLE and CREATE POLICY lock the table
            if had.get(table):
                op.execute(
                    f"CREATE POLICY hg_humanglue_base ON {s}.{table} AS PERMISSIVE FOR ALL "
                    f"TO {people}, {worker}, {operator} USING (true) WITH CHECK (true)"
                )
            else:
                op.execute(
                    f"CREATE POLICY hg_everyone ON {s}.{table} AS PERMISSIVE FOR ALL "
                    "TO PUBLIC USING (true) WITH CHECK (true)"
                )
                op.execute(f"ALTER TABLE {s}.{table} ENABLE ROW LEVEL SECURITY")
                enabled.append(table)
            op.execute(
                f"CREATE POLICY hg_people_own ON {s}.{table} AS RESTRICTIVE FOR ALL "
                f"TO {people} USING ({using[table]}) WITH CHECK (false)"
            )
    return enabled


def downgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name, table, _columns in INDEXES:
        op.drop_index(name, table, if_exists=True)
    op.execute(f"DELETE FROM hg_settings WHERE name = {_literal(TIMEOUT_SETTING)}")
    if not postgres:
        return
    enabled = bind.execute(
        sa.text(f"SELECT value FROM hg_settings WHERE name = {_literal(RLS_SETTING)}")
    ).scalar()
    prefix = bind.execute(
        sa.text("SELECT value FROM hg_settings WHERE name = 'role_prefix'")
    ).scalar_one()
    for table in SECURED:
        for policy in ("hg_people_own", "hg_humanglue_base", "hg_everyone"):
            op.execute(f"DROP POLICY IF EXISTS {policy} ON {table}")
    for table in filter(None, (enabled or "").split(",")):
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(f"REVOKE SELECT ON {', '.join(SECURED)} FROM {_ident(prefix + '_people')}")
    op.execute(f"DELETE FROM hg_settings WHERE name = {_literal(RLS_SETTING)}")
    op.execute("DROP FUNCTION IF EXISTS hg_set_presence_timeout(double precision)")
    op.execute("DROP FUNCTION IF EXISTS hg_presence_timeout()")
