"""Presence (issue 9): heartbeats, joins and leaves, and each day's peak.

- `student_presence.joined_at`: since when the device has been online (set by a beat that
  finds the row offline or timed out; see humanglue_cli/presence.py), and an index on
  (scope, user_id, status) for the readers (`presence list`, `stats`: grouped by person) and
  the peak's count (covering: an index-only count of who is there).
- `hg_presence_peaks`: per scope ('course:<id>' / 'workshop:<id>') and UTC day, the most
  people online at once, raised by a trigger whenever a device joins — whoever writes the row
  (the Python API, the platform's own SQL, the CLI). It counts the people whose rows are not
  offline: rows a vanished device left online count until the sweep (every minute by default)
  marks them offline.
- PostgreSQL: the people's group may write its own presence rows, in the courses it is
  enrolled in or teaches and the workshops it is registered for or teaches (the restrictive
  policy of migration 0004 re-made with a check); it reads its own rows and those of what it
  teaches, an admin all; `hg_workshop_check_ins(workshop, since)` gives a workshop's
  check-ins to its instructors and admins (people may not read registrations), and
  `hg_presence_online(scope, timeout)` who is online in what they teach (one check per
  statement, where the profiles' policy would cost one function call per person). The peak
  trigger is SECURITY DEFINER (people need no right on the peaks); people read the peaks of
  what they teach, an admin all.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from humanglue_cli.core.migrate import note, under_lock_timeout
from migrations._platform import columns

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
ONLINE = "('online', 'away')"
CHECK_INS = "hg_workshop_check_ins(workshop uuid, since timestamptz)"
CHECK_INS_SIG = "hg_workshop_check_ins(uuid, timestamptz)"
ONLINE_FN = "hg_presence_online(target text, timeout_s double precision)"
ONLINE_SIG = "hg_presence_online(text, double precision)"


def _ts(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True).with_variant(sa.Text(), "sqlite"), nullable=nullable
    )


def _uuid(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.Uuid(as_uuid=False).with_variant(sa.String(36), "sqlite"))


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    with under_lock_timeout("student_presence"):
        if "joined_at" not in columns(bind, "student_presence"):  # made from our models: there
            op.add_column("student_presence", _ts("joined_at"))
            note("column", "student_presence.joined_at")
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_student_presence_scope "
            "ON student_presence (scope, user_id, status)"
        )
    op.create_table(
        "hg_presence_peaks",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("day", sa.Date().with_variant(sa.Text(), "sqlite"), primary_key=True),
        _uuid("course_id"),
        _uuid("workshop_id"),
        sa.Column("peak", sa.Integer, nullable=False),
        _ts("peak_at", nullable=False),
    )
    op.create_index("ix_hg_presence_peaks_day", "hg_presence_peaks", ["day"])
    note("created", "hg_presence_peaks")
    if postgres:
        _upgrade_postgres()
    else:
        _upgrade_sqlite()
    note("triggers", "student_presence")


def _sqlite_peak(new: str) -> str:
    return (
        "  INSERT INTO hg_presence_peaks (scope, day, course_id, workshop_id, peak, peak_at)\n"
        f"  VALUES ({new}.scope, substr({new}.last_seen_at, 1, 10), {new}.course_id,\n"
        f"    {new}.workshop_id, (SELECT count(DISTINCT user_id) FROM student_presence\n"
        f"      WHERE scope = {new}.scope AND status IN {ONLINE}), {new}.last_seen_at)\n"
        "  ON CONFLICT (scope, day) DO UPDATE SET peak = excluded.peak,\n"
        "    peak_at = excluded.peak_at WHERE excluded.peak > hg_presence_peaks.peak;\n"
    )


# SQLite counts once per row: only when the count can have grown — the row came from offline
# (or is new) and its person had no other device there — and by an index-only scan.
_SQLITE_FIRST = (
    "  AND NOT EXISTS (SELECT 1 FROM student_presence o WHERE o.user_id = NEW.user_id\n"
    f"    AND o.scope = NEW.scope AND o.device_id <> NEW.device_id AND o.status IN {ONLINE})\n"
)


def _upgrade_sqlite() -> None:
    op.execute(
        "CREATE TRIGGER IF NOT EXISTS hg_presence_joined AFTER INSERT ON student_presence\n"
        f"WHEN NEW.status IN {ONLINE} AND NEW.scope <> ''\n{_SQLITE_FIRST}"
        f"BEGIN\n{_sqlite_peak('NEW')}END"
    )
    op.execute(
        "CREATE TRIGGER IF NOT EXISTS hg_presence_rejoined AFTER UPDATE OF status "
        "ON student_presence\n"
        f"WHEN NEW.status IN {ONLINE} AND NEW.scope <> ''\n"
        f"  AND OLD.status NOT IN {ONLINE}\n{_SQLITE_FIRST}"
        f"BEGIN\n{_sqlite_peak('NEW')}END"
    )


def _upgrade_postgres() -> None:
    s = '"' + op.get_bind().execute(sa.text("SELECT current_schema()")).scalar_one() + '"'
    # Once per statement (a beat_many of 10,000 rows counts each scope once): the rows that
    # joined in it are those whose joined_at is their last_seen_at (one now() for both).
    op.execute(
        f"CREATE FUNCTION {s}.hg_presence_joined() RETURNS trigger LANGUAGE plpgsql "
        f"{DEFINER} AS $fn$\n"
        "BEGIN\n"
        f"  INSERT INTO {s}.hg_presence_peaks AS k\n"
        "    (scope, day, course_id, workshop_id, peak, peak_at)\n"
        "  SELECT j.scope, (j.at AT TIME ZONE 'UTC')::date, j.course_id, j.workshop_id,\n"
        f"    (SELECT count(DISTINCT p.user_id) FROM {s}.student_presence p\n"
        f"      WHERE p.scope = j.scope AND p.status IN {ONLINE}), j.at\n"
        "  FROM (SELECT DISTINCT ON (scope) scope, course_id, workshop_id, last_seen_at AS at\n"
        "        FROM joined WHERE joined_at = last_seen_at AND scope <> ''\n"
        f"          AND status IN {ONLINE}\n"
        "        ORDER BY scope, last_seen_at DESC) AS j\n"
        "  ON CONFLICT (scope, day) DO UPDATE SET peak = EXCLUDED.peak,\n"
        "    peak_at = EXCLUDED.peak_at WHERE k.peak < EXCLUDED.peak;\n"
        "  RETURN NULL;\n"
        "END\n$fn$"
    )
    with under_lock_timeout("student_presence"):
        for event, name in (("INSERT", "hg_presence_inserted"), ("UPDATE", "hg_presence_updated")):
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} "
                "ON student_presence REFERENCING NEW TABLE AS joined "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.hg_presence_joined()"
            )
    # People may not read registrations: a workshop's check-ins, for its instructors and admins.
    op.execute(
        f"CREATE FUNCTION {s}.{CHECK_INS} RETURNS TABLE (user_id uuid, checked_in_at "
        f"timestamptz) LANGUAGE sql STABLE {DEFINER} AS $fn$\n"
        f"SELECT r.user_id, min(r.checked_in_at) FROM {s}.workshop_registrations r\n"
        "WHERE r.workshop_id = workshop AND r.checked_in_at >= since\n"
        f"  AND (workshop = ANY ({s}.hg_taught_workshops()) OR {s}.hg_is_admin())\n"
        "GROUP BY r.user_id\n$fn$"
    )
    # `presence list` for an instructor: the profiles' policy costs a function call per row
    # (hg_may_see_person), 1 s for 1,000 people; this checks the scope once instead.
    op.execute(
        f"CREATE FUNCTION {s}.{ONLINE_FN} RETURNS TABLE (user_id uuid, full_name text, "
        "online boolean, devices bigint, since timestamptz, last_seen_at timestamptz) "
        f"LANGUAGE sql STABLE {DEFINER} AS $fn$\n"
        "SELECT p.user_id, pr.full_name, bool_or(p.status = 'online'), count(*),\n"
        "  min(coalesce(p.joined_at, p.last_seen_at)), max(p.last_seen_at)\n"
        f"FROM {s}.student_presence p JOIN {s}.profiles pr ON pr.id = p.user_id\n"
        f"WHERE p.scope = target AND p.status IN {ONLINE}\n"
        "  AND p.last_seen_at > now() - make_interval(secs => timeout_s)\n"
        f"  AND ((SELECT {s}.hg_is_admin())\n"
        f"    OR p.course_id = ANY ((SELECT {s}.hg_taught_courses())::uuid[])\n"
        f"    OR p.workshop_id = ANY ((SELECT {s}.hg_taught_workshops())::uuid[]))\n"
        "GROUP BY p.user_id, pr.full_name\n$fn$"
    )
    _access_functions(s, f"(SELECT {s}.hg_current_person())")
    me = f"(SELECT {s}.hg_current_person())"
    taught = (
        f"course_id = ANY ((SELECT {s}.hg_taught_courses())::uuid[])"
        f" OR workshop_id = ANY ((SELECT {s}.hg_taught_workshops())::uuid[])"
        f" OR (SELECT {s}.hg_is_admin())"
    )
    sees = f"user_id = {me} OR {taught}"
    writes = (
        f"user_id = {me} AND (course_id = ANY ((SELECT {s}.hg_visible_courses())::uuid[])"
        " AND workshop_id IS NULL AND scope = 'course:' || course_id::text"
        f" OR workshop_id = ANY ((SELECT {s}.hg_visible_workshops())::uuid[])"
        " AND course_id IS NULL AND scope = 'workshop:' || workshop_id::text)"
    )
    with under_lock_timeout("student_presence"):
        op.execute(
            "DO $do$\n"
            "DECLARE p text := (SELECT value FROM hg_settings WHERE name = 'role_prefix');\n"
            "  people text := p || '_people'; staff text;\n"
            "BEGIN\n"
            "  staff := format('%I, %I', p || '_worker', p || '_operator');\n"
            "  EXECUTE format('GRANT INSERT, UPDATE, DELETE ON student_presence TO %I', people);\n"
            "  EXECUTE 'DROP POLICY hg_people_own ON student_presence';\n"
            "  EXECUTE format('CREATE POLICY hg_people_own ON student_presence AS RESTRICTIVE '\n"
            "    || 'FOR ALL TO %I USING (%s) WITH CHECK (%s)', people, "
            f"{_literal(sees)}, {_literal(writes)});\n"
            "  EXECUTE 'REVOKE ALL ON hg_presence_peaks FROM PUBLIC';\n"
            f"  EXECUTE 'REVOKE ALL ON FUNCTION {s}.{ONLINE_SIG} FROM PUBLIC';\n"
            f"  EXECUTE format('GRANT EXECUTE ON FUNCTION {s}.{ONLINE_SIG} TO %I, %s',\n"
            "    people, staff);\n"
            f"  EXECUTE 'REVOKE ALL ON FUNCTION {s}.{CHECK_INS_SIG} FROM PUBLIC';\n"
            f"  EXECUTE format('GRANT EXECUTE ON FUNCTION {s}.{CHECK_INS_SIG} TO %I, %s',\n"
            "    people, staff);\n"
            "  EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON hg_presence_peaks TO ' || staff;\n"
            "  EXECUTE format('GRANT SELECT ON hg_presence_peaks TO %I', people);\n"
            "  EXECUTE 'ALTER TABLE hg_presence_peaks ENABLE ROW LEVEL SECURITY';\n"
            "  EXECUTE 'CREATE POLICY hg_staff ON hg_presence_peaks FOR ALL TO ' || staff\n"
            "    || ' USING (true) WITH CHECK (true)';\n"
            "  EXECUTE format('CREATE POLICY hg_audience ON hg_presence_peaks FOR SELECT '\n"
            f"    || 'TO %I USING (%s)', people, {_literal(taught)});\n"
            "END\n$do$"
        )
    note("policies", "student_presence")


def _access_functions(s: str, me: str) -> None:
    """Migration 0004's helpers, with whom the transaction acts as looked up once per call
    (`(SELECT hg_current_person())`, an init plan) rather than once per row: with 100,000
    enrollments, hg_visible_courses() took 500-600 ms and now a scan (bench/presence.py).
    The downgrade puts 0004's text back (`me` unwrapped)."""
    bodies = {
        "hg_taught_courses()": (
            f"SELECT coalesce(array_agg(id), '{{}}') FROM (\n"
            f"  SELECT id FROM {s}.courses WHERE instructor_id = {me}\n"
            f"  UNION SELECT course_id FROM {s}.course_instructors WHERE user_id = {me}) AS t"
        ),
        "hg_taught_workshops()": (
            f"SELECT coalesce(array_agg(id), '{{}}') FROM (\n"
            f"  SELECT id FROM {s}.workshops WHERE instructor_id = {me}\n"
            f"   OR course_id = ANY ((SELECT {s}.hg_taught_courses())::uuid[])) AS t"
        ),
        "hg_visible_courses()": (
            f"SELECT coalesce(array_agg(id), '{{}}') FROM (\n"
            f"  SELECT unnest({s}.hg_taught_courses()) AS id\n"
            f"  UNION SELECT course_id FROM {s}.enrollments WHERE student_id = {me}) AS t"
        ),
        "hg_visible_workshops()": (
            f"SELECT coalesce(array_agg(id), '{{}}') FROM (\n"
            f"  SELECT unnest({s}.hg_taught_workshops()) AS id\n"
            f"  UNION SELECT workshop_id FROM {s}.workshop_registrations WHERE user_id = {me}) AS t"
        ),
    }
    for signature, body in bodies.items():
        op.execute(
            f"CREATE OR REPLACE FUNCTION {s}.{signature} RETURNS uuid[] LANGUAGE sql "
            f"STABLE PARALLEL RESTRICTED {DEFINER} AS $fn$\n{body}\n$fn$"
        )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def downgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    if postgres:
        s = '"' + bind.execute(sa.text("SELECT current_schema()")).scalar_one() + '"'
        me = f"(SELECT {s}.hg_current_person())"
        sees = (
            f"user_id = {me} OR course_id = ANY ((SELECT {s}.hg_taught_courses())::uuid[])"
            f" OR workshop_id = ANY ((SELECT {s}.hg_taught_workshops())::uuid[])"
        )
        op.execute(
            "DO $do$\n"
            "DECLARE people text := (SELECT value FROM hg_settings\n"
            "  WHERE name = 'role_prefix') || '_people';\n"
            "BEGIN\n"
            "  EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON student_presence FROM %I',\n"
            "    people);\n"
            "  EXECUTE 'DROP POLICY hg_people_own ON student_presence';\n"
            "  EXECUTE format('CREATE POLICY hg_people_own ON student_presence AS RESTRICTIVE '\n"
            "    || 'FOR ALL TO %I USING (%s) WITH CHECK (%s)', people, "
            f"{_literal(sees)}, {_literal(f'user_id = {me}')});\n"
            "END\n$do$"
        )
        _access_functions(s, f"{s}.hg_current_person()")
        op.execute("DROP TRIGGER IF EXISTS hg_presence_inserted ON student_presence")
        op.execute("DROP TRIGGER IF EXISTS hg_presence_updated ON student_presence")
        op.execute("DROP FUNCTION IF EXISTS hg_presence_joined()")
        op.execute(f"DROP FUNCTION IF EXISTS {CHECK_INS_SIG}")
        op.execute(f"DROP FUNCTION IF EXISTS {ONLINE_SIG}")
    else:
        op.execute("DROP TRIGGER IF EXISTS hg_presence_joined")
        op.execute("DROP TRIGGER IF EXISTS hg_presence_rejoined")
    op.drop_table("hg_presence_peaks")
    op.drop_index("ix_student_presence_scope", "student_presence")
    with op.batch_alter_table("student_presence") as batch:
        batch.drop_column("joined_at")
