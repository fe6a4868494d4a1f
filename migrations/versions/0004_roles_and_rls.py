"""Roles and row-level security on PostgreSQL: each person sees and changes only their own.

What this adds (see humanglue_cli/core/access.py for the design, docs/security.md for the
threat model):

- four group roles named `<prefix>_people|operator|worker|admin`, the prefix unique to this
  database and kept in `hg_settings`; `hg_logins` maps personal logins to profiles;
- grants: the worker reads the platform and writes notifications, presence and `hg_`; the
  operator the same, plus the access functions; people SELECT, DELETE and UPDATE (read_at) on
  notifications, SELECT on the presence, profiles, courses, course_instructors and workshops
  they may see; nobody but those two groups touches `hg_` (its schema version excepted);
- on notifications, student_presence, profiles, courses, course_instructors and workshops: row
  level security, with a restrictive policy for the people's group alone. Every other role's
  access is left exactly as it was: where the table had no row-level security, a permissive
  `USING (true)` policy for PUBLIC; where it had its own policies, they are untouched and a
  permissive policy lets the people's group through to ours;
- SECURITY DEFINER functions with a fixed search_path: `hg_login_person`,
  `hg_current_person` (whom a transaction acts as), the helpers the policies call once per
  statement, `hg_grant_login`/`hg_revoke_login`/`hg_end_sessions` (owned by the admin role,
  executable by operators only), `hg_send_announcement` (admins only, checked inside);
- the capture triggers' functions re-created SECURITY DEFINER, so that whatever role writes
  the platform's tables needs no right on `hg_events`.

SQLite has no roles: the embedded default is protected by its file's permissions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

from humanglue_cli.core.access import ACTING_SETTING, Roles, prefix_for
from humanglue_cli.core.domain import EventKind
from humanglue_cli.core.errors import SchemaError
from humanglue_cli.core.migrate import note, under_lock_timeout

# The capture functions are 0002's; a revision file's name is no module name.
_0002 = importlib.import_module("migrations.versions.0002_capture_triggers")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PLATFORM_READ = (
    "profiles",
    "courses",
    "course_instructors",
    "enrollments",
    "workshops",
    "workshop_registrations",
    "course_reviews",
    "payments",
    "course_questions",
    "student_activity",
    "notifications",
    "student_presence",
)
OWN = ("hg_events", "hg_ledger", "hg_workers", "hg_maintenance_runs")
SEQUENCES = (("hg_events", "id"), ("hg_maintenance_runs", "id"))
SECURED = (
    "notifications",
    "student_presence",
    "profiles",
    "courses",
    "course_instructors",
    "workshops",
)
DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    bind = op.get_bind()
    # On both backends, so that the schema is one: SQLite's hg_logins stays empty.
    op.create_table(
        "hg_settings",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    note("created", "hg_settings")
    with under_lock_timeout("profiles"):  # its foreign key locks profiles
        op.create_table(
            "hg_logins",
            sa.Column(
                "user_id",
                sa.Uuid(as_uuid=False).with_variant(sa.String(36), "sqlite"),
                sa.ForeignKey("profiles.id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("role_name", sa.Text, nullable=False, unique=True),
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True).with_variant(sa.Text(), "sqlite"),
                nullable=False,
                server_default=sa.text("CURRENT_TIMESTAMP"),
            ),
        )
    note("created", "hg_logins")
    if bind.dialect.name != "postgresql":
        return
    schema, database, superuser, createrole = bind.execute(
        sa.text(
            "SELECT current_schema(), current_database(), rolsuper, rolcreaterole "
            "FROM pg_roles WHERE rolname = current_user"
        )
    ).one()
    if not (superuser or createrole):
        raise SchemaError(
            "`db upgrade` creates HumanGlue's roles on PostgreSQL: run it as a superuser or as "
            "a role with CREATEROLE that owns the platform's tables; nothing was changed"
        )
    taken = {
        str(r).removesuffix("_people")
        for r in bind.execute(
            sa.text(r"SELECT rolname FROM pg_roles WHERE rolname LIKE 'hg\_%\_people'")
        ).scalars()
    }
    roles = Roles(prefix_for(database, taken))
    s = _ident(schema)
    oid = bind.execute(sa.text("SELECT oid FROM pg_database WHERE datname = current_database()"))
    database_oid = oid.scalar_one()

    op.execute(
        f"INSERT INTO {s}.hg_settings (name, value) VALUES "
        f"('role_prefix', {_literal(roles.prefix)})"
    )
    _create_roles(roles, database, database_oid, superuser, bind)
    _grant(roles, s)
    _functions(roles, s)
    rls_before = _secure(roles, s, bind)
    op.execute(
        f"INSERT INTO {s}.hg_settings (name, value) VALUES "
        f"('rls_enabled_by_humanglue', {_literal(','.join(rls_before))})"
    )
    # The capture triggers write the outbox whatever role writes the platform's tables.
    for ddl in _0002.pg_functions(schema):
        op.execute(ddl)
    for table in SECURED:
        note("policies", table)
    note("roles", roles.prefix)


def _create_roles(
    roles: Roles, database: str, database_oid: int, superuser: bool, bind: sa.Connection
) -> None:
    about = f"of database {database} (database oid {database_oid})"
    attributes = {
        roles.people: "NOLOGIN INHERIT",
        # NOINHERIT: an operator may SET ROLE to the people's group (acting --user someone)
        # without its own sessions falling under the people's policies.
        roles.operator: "NOLOGIN NOINHERIT",
        roles.worker: "NOLOGIN INHERIT",
        roles.admin: "NOLOGIN INHERIT CREATEROLE",
    }
    for role, attrs in attributes.items():
        op.execute(f"CREATE ROLE {_ident(role)} {attrs}")
        op.execute(f"COMMENT ON ROLE {_ident(role)} IS {_literal(f'humanglue: {role} {about}')}")
    op.execute(f"GRANT {_ident(roles.people)} TO {_ident(roles.operator)}")
    op.execute(f"GRANT pg_signal_backend TO {_ident(roles.admin)}")
    version = int(bind.execute(sa.text("SHOW server_version_num")).scalar_one())
    if version >= 160000:  # CREATEROLE needs ADMIN OPTION on a role to grant it from 16 on
        op.execute(
            f"GRANT {_ident(roles.people)} TO {_ident(roles.admin)} "
            "WITH ADMIN TRUE, INHERIT FALSE, SET FALSE"
        )
    if not superuser:  # to hand functions over to the admin role, we must be a member of it
        op.execute(f"GRANT {_ident(roles.admin)} TO CURRENT_USER")


def _grant(roles: Roles, s: str) -> None:
    people, operator = _ident(roles.people), _ident(roles.operator)
    worker, admin = _ident(roles.worker), _ident(roles.admin)
    staff = f"{worker}, {operator}"
    op.execute(f"GRANT USAGE ON SCHEMA {s} TO {people}, {staff}, {admin}")
    tables = ", ".join(f"{s}.{t}" for t in PLATFORM_READ)
    op.execute(f"GRANT SELECT ON {tables} TO {staff}")
    op.execute(
        f"GRANT INSERT, UPDATE, DELETE ON {s}.notifications, {s}.student_presence TO {staff}"
    )
    own = ", ".join(f"{s}.{t}" for t in OWN)
    op.execute(f"REVOKE ALL ON {own}, {s}.hg_settings, {s}.hg_logins FROM PUBLIC")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {own} TO {staff}")
    for table, column in SEQUENCES:
        sequence = (
            op.get_bind()
            .execute(
                sa.text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": f"{s}.{table}", "column": column},
            )
            .scalar_one()
        )
        op.execute(f"GRANT USAGE, SELECT ON SEQUENCE {sequence} TO {staff}")
    op.execute(f"GRANT SELECT ON {s}.hg_settings TO {staff}")
    op.execute(f"GRANT SELECT ON {s}.hg_logins TO {operator}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {s}.hg_logins TO {admin}")
    op.execute(f"GRANT SELECT ON {s}.hg_alembic_version TO {people}, {staff}")
    # People: their own notifications (read, mark, delete; the policy says which are theirs).
    op.execute(f"GRANT SELECT, DELETE ON {s}.notifications TO {people}")
    op.execute(f"GRANT UPDATE (read_at) ON {s}.notifications TO {people}")
    visible = ", ".join(
        f"{s}.{t}"
        for t in ("student_presence", "profiles", "courses", "course_instructors", "workshops")
    )
    op.execute(f"GRANT SELECT ON {visible} TO {people}")


def _functions(roles: Roles, s: str) -> None:
    people, operator = _ident(roles.people), _ident(roles.operator)
    worker, admin = _ident(roles.worker), _ident(roles.admin)
    me = f"{s}.hg_current_person()"
    created: list[tuple[str, str]] = []  # (signature, who may execute)

    def function(signature: str, returns: str, body: str, language: str = "sql") -> None:
        # PARALLEL RESTRICTED: a policy that calls them keeps parallel plans (run in the
        # leader, where the session's identity is); the default, UNSAFE, would forbid them.
        volatility = "STABLE PARALLEL RESTRICTED " if language == "sql" else ""
        language = language.removesuffix("_volatile")
        op.execute(
            f"CREATE FUNCTION {s}.{signature} RETURNS {returns} LANGUAGE {language} "
            f"{volatility}{DEFINER} AS $fn$\n{body}\n$fn$"
        )

    function(
        "hg_login_person()",
        "uuid",
        f"SELECT user_id FROM {s}.hg_logins WHERE role_name = session_user::text",
    )
    created.append(("hg_login_person()", f"{people}, {operator}, {worker}"))
    # For a personal login: its person, whatever is set. For an operator's session: the person
    # the CLI set for this transaction. For anyone else (the platform's roles): nobody.
    function(
        "hg_current_person()",
        "uuid",
        f"SELECT CASE\n"
        f"  WHEN l.user_id IS NOT NULL THEN l.user_id\n"
        f"  WHEN pg_has_role(session_user, {_literal(roles.operator)}, 'MEMBER')\n"
        f"    THEN nullif(current_setting({_literal(ACTING_SETTING)}, true), '')::uuid\n"
        f"END FROM (SELECT (SELECT user_id FROM {s}.hg_logins\n"
        f"                  WHERE role_name = session_user::text) AS user_id) AS l",
    )
    created.append(("hg_current_person()", f"{people}, {operator}, {worker}"))
    function(
        "hg_is_admin()",
        "boolean",
        f"SELECT EXISTS (SELECT 1 FROM {s}.profiles WHERE id = {me} AND role = 'admin')",
    )
    taught_courses = (
        f"SELECT id FROM {s}.courses WHERE instructor_id = {me}\n"
        f"UNION SELECT course_id FROM {s}.course_instructors WHERE user_id = {me}"
    )
    function(
        "hg_taught_courses()",
        "uuid[]",
        f"SELECT coalesce(array_agg(id), '{{}}') FROM ({taught_courses}) AS t",
    )
    taught_workshops = (
        f"SELECT id FROM {s}.workshops WHERE instructor_id = {me}\n"
        f"   OR course_id = ANY ((SELECT {s}.hg_taught_courses())::uuid[])"
    )
    function(
        "hg_taught_workshops()",
        "uuid[]",
        f"SELECT coalesce(array_agg(id), '{{}}') FROM ({taught_workshops}) AS t",
    )
    function(
        "hg_visible_courses()",
        "uuid[]",
        f"SELECT coalesce(array_agg(id), '{{}}') FROM (\n"
        f"  SELECT unnest({s}.hg_taught_courses()) AS id\n"
        f"  UNION SELECT course_id FROM {s}.enrollments WHERE student_id = {me}) AS t",
    )
    function(
        "hg_visible_workshops()",
        "uuid[]",
        f"SELECT coalesce(array_agg(id), '{{}}') FROM (\n"
        f"  SELECT unnest({s}.hg_taught_workshops()) AS id\n"
        f"  UNION SELECT workshop_id FROM {s}.workshop_registrations WHERE user_id = {me}) AS t",
    )

    # Oneself; one's students; the instructors of what one takes. A check of one profile, not
    # a list of all: reading a profile (the CLI finds its person) costs one index probe per
    # table, however many students one has.
    def taught(fn: str) -> str:
        return f"ANY ((SELECT {s}.{fn}())::uuid[])"

    function(
        "hg_may_see_person(person uuid)",
        "boolean",
        f"SELECT person = {me}\n"
        f"  OR EXISTS (SELECT 1 FROM {s}.enrollments WHERE student_id = person\n"
        f"             AND course_id = {taught('hg_taught_courses')})\n"
        f"  OR EXISTS (SELECT 1 FROM {s}.workshop_registrations WHERE user_id = person\n"
        f"             AND workshop_id = {taught('hg_taught_workshops')})\n"
        f"  OR EXISTS (SELECT 1 FROM {s}.courses WHERE instructor_id = person\n"
        f"             AND id = {taught('hg_visible_courses')})\n"
        f"  OR EXISTS (SELECT 1 FROM {s}.course_instructors WHERE user_id = person\n"
        f"             AND course_id = {taught('hg_visible_courses')})\n"
        f"  OR EXISTS (SELECT 1 FROM {s}.workshops WHERE instructor_id = person\n"
        f"             AND id = {taught('hg_visible_workshops')})",
    )
    # The worker locks recipients' profiles FOR KEY SHARE (store/people.lock_recipients): a row
    # lock would need an UPDATE right on profiles, which the worker is not given.
    function(
        "hg_lock_profiles(ids uuid[])",
        "SETOF uuid",
        f"SELECT id FROM {s}.profiles WHERE id = ANY (ids) ORDER BY id\nFOR KEY SHARE SKIP LOCKED",
        language="sql_volatile",
    )
    created.append(("hg_lock_profiles(uuid[])", f"{worker}, {operator}"))
    for helper in (
        "hg_is_admin()",
        "hg_taught_courses()",
        "hg_taught_workshops()",
        "hg_visible_courses()",
        "hg_visible_workshops()",
        "hg_may_see_person(uuid)",
    ):
        created.append((helper, f"{people}, {operator}"))

    # An announcement is queued by an admin only, checked here: a transaction that acts as
    # someone (a personal login, an operator's --user) sends as that person and no other; an
    # operator's session that acts as no one names the sender (operators are trusted).
    function(
        "hg_send_announcement(sender uuid, payload jsonb)",
        "bigint",
        f"DECLARE acting uuid := {me}; queued bigint;\n"
        "BEGIN\n"
        "  IF acting IS NULL AND NOT pg_has_role(session_user,\n"
        f"      {_literal(roles.operator)}, 'MEMBER') OR acting IS DISTINCT FROM sender\n"
        "      AND acting IS NOT NULL THEN\n"
        "    RAISE EXCEPTION 'an announcement is sent by whom the transaction acts as'\n"
        "      USING ERRCODE = '42501';\n"
        "  END IF;\n"
        f"  IF NOT EXISTS (SELECT 1 FROM {s}.profiles WHERE id = sender AND role = 'admin') THEN\n"
        "    RAISE EXCEPTION 'only admins send announcements' USING ERRCODE = '42501';\n"
        "  END IF;\n"
        f"  INSERT INTO {s}.hg_events (kind, entity_id, payload)\n"
        f"  VALUES ({_literal(EventKind.ANNOUNCEMENT_SENT)}, sender::text,\n"
        "          payload || jsonb_build_object('sender_id', sender))\n"
        "  RETURNING id INTO queued;\n"
        "  RETURN queued;\n"
        "END",
        language="plpgsql",
    )
    created.append(("hg_send_announcement(uuid, jsonb)", f"{people}, {operator}"))

    # A login's name says nothing of its person (catalogs such as pg_roles and
    # pg_stat_activity are readable by every role): a random name, kept across re-grants.
    random_name = f"{_literal(roles.prefix + '_u_')} || substr(md5(gen_random_uuid()::text), 1, 16)"
    function(
        "hg_grant_login(person uuid, verifier text)",
        "text",
        f"DECLARE login text := coalesce(\n"
        f"  (SELECT role_name FROM {s}.hg_logins WHERE user_id = person), {random_name});\n"
        "BEGIN\n"
        "  IF verifier IS NULL OR verifier !~\n"
        "      '^SCRAM-SHA-256\\$[0-9]+:[A-Za-z0-9+/=]+\\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$' THEN\n"
        "    RAISE EXCEPTION 'a SCRAM-SHA-256 verifier is required, never a password'\n"
        "      USING ERRCODE = '22023';\n"
        "  END IF;\n"
        "  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = login) THEN\n"
        "    EXECUTE format('ALTER ROLE %I WITH LOGIN PASSWORD %L', login, verifier);\n"
        "  ELSE\n"
        "    EXECUTE format('CREATE ROLE %I LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE '\n"
        "                   'NOREPLICATION NOBYPASSRLS PASSWORD %L IN ROLE %I',\n"
        f"                   login, verifier, {_literal(roles.people)});\n"
        "    EXECUTE format('COMMENT ON ROLE %I IS %L', login, format(\n"
        "      'humanglue: personal login (database oid %s)',\n"
        "      (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())));\n"
        "  END IF;\n"
        f"  INSERT INTO {s}.hg_logins (user_id, role_name) VALUES (person, login)\n"
        "  ON CONFLICT (user_id) DO UPDATE SET role_name = EXCLUDED.role_name;\n"
        "  RETURN login;\n"
        "END",
        language="plpgsql",
    )
    # Returns the sessions ended, or NULL if the person had no login. The role is dropped in
    # the caller's transaction; `hg_end_sessions` after commit ends any session that logged in
    # again in between.
    function(
        "hg_revoke_login(person uuid)",
        "integer",
        "DECLARE login text; ended integer := 0;\n"
        "BEGIN\n"
        f"  SELECT role_name INTO login FROM {s}.hg_logins WHERE user_id = person FOR UPDATE;\n"
        "  IF login IS NULL THEN\n"
        "    RETURN NULL;\n"
        "  END IF;\n"
        "  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = login) THEN\n"
        "    EXECUTE format('ALTER ROLE %I NOLOGIN', login);\n"
        "    SELECT count(*) INTO ended FROM (SELECT pid FROM pg_catalog.pg_stat_activity\n"
        "     WHERE usename = login OFFSET 0) AS mine  -- OFFSET 0: filter first, then end\n"
        "     WHERE pg_catalog.pg_terminate_backend(mine.pid, 5000);\n"
        "    -- (waiting up to 5 s for each to exit: its temporary tables would block the drop)\n"
        "    EXECUTE format('DROP ROLE %I', login);\n"
        "  END IF;\n"
        f"  DELETE FROM {s}.hg_logins WHERE user_id = person;  -- its role gone: hg_login_gone\n"
        "  RETURN ended;\n"
        "END",
        language="plpgsql",
    )
    # Sessions whose role no longer exists (dropped by hg_revoke_login): nothing else.
    function(
        "hg_end_sessions()",
        "integer",
        "DECLARE ended integer;\n"
        "BEGIN\n"
        "  SELECT count(*) INTO ended FROM (SELECT a.pid FROM pg_catalog.pg_stat_activity a\n"
        "   WHERE a.backend_type = 'client backend' AND a.usesysid IS NOT NULL\n"
        "     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = a.usesysid)\n"
        "   OFFSET 0) AS orphan WHERE pg_catalog.pg_terminate_backend(orphan.pid);\n"
        "  RETURN ended;\n"
        "END",
        language="plpgsql",
    )
    # A login whose mapping goes (its profile deleted by the platform: the foreign key
    # cascades) can no longer log in, and its sessions end, in the deleting transaction.
    function(
        "hg_login_gone()",
        "trigger",
        "BEGIN\n"
        "  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = OLD.role_name) THEN\n"
        "    EXECUTE format('ALTER ROLE %I NOLOGIN', OLD.role_name);\n"
        "    PERFORM pg_catalog.pg_terminate_backend(gone.pid) FROM (\n"
        "      SELECT pid FROM pg_catalog.pg_stat_activity WHERE usename = OLD.role_name\n"
        "      OFFSET 0) AS gone;\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END",
        language="plpgsql",
    )
    op.execute(
        f"CREATE TRIGGER hg_login_gone AFTER DELETE ON {s}.hg_logins FOR EACH ROW "
        f"EXECUTE FUNCTION {s}.hg_login_gone()"
    )
    for signature in (
        "hg_grant_login(uuid, text)",
        "hg_revoke_login(uuid)",
        "hg_end_sessions()",
        "hg_login_gone()",
    ):
        op.execute(f"ALTER FUNCTION {s}.{signature} OWNER TO {admin}")
        created.append((signature, operator))
    for signature, who in created:
        op.execute(f"REVOKE ALL ON FUNCTION {s}.{signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {s}.{signature} TO {who}")


def _secure(roles: Roles, s: str, bind: sa.Connection) -> list[str]:
    """Row-level security on the tables that hold people's rows; returns those that had none."""
    people = _ident(roles.people)
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
    own = f"user_id = {me}"
    restrict = {
        "notifications": (own, own),
        "student_presence": (
            f"{own} OR course_id = ANY ((SELECT {s}.hg_taught_courses())::uuid[])"
            f" OR workshop_id = ANY ((SELECT {s}.hg_taught_workshops())::uuid[])",
            own,
        ),
        "profiles": (f"id = {me} OR {admin} OR {s}.hg_may_see_person(id)", "false"),
        "courses": (f"id = ANY ((SELECT {s}.hg_visible_courses())::uuid[]) OR {admin}", "false"),
        "course_instructors": (
            f"course_id = ANY ((SELECT {s}.hg_visible_courses())::uuid[]) OR {admin}",
            "false",
        ),
        "workshops": (
            f"id = ANY ((SELECT {s}.hg_visible_workshops())::uuid[]) OR {admin}",
            "false",
        ),
    }
    enabled_by_us = []
    for table in SECURED:
        using, check = restrict[table]
        with under_lock_timeout(table):  # ALTER TABLE and CREATE POLICY lock the table
            if had.get(table):
                # Its own policies already decide for every other role: let HumanGlue's groups
                # through (the people's to its restrictive policy below), and change nothing
                # for anyone else.
                op.execute(
                    f"CREATE POLICY hg_humanglue_base ON {s}.{table} AS PERMISSIVE FOR ALL "
                    f"TO {people}, {_ident(roles.worker)}, {_ident(roles.operator)} "
                    "USING (true) WITH CHECK (true)"
                )
            else:
                # Everyone who could see every row still can: row-level security changes
                # nothing but for the people's group.
                op.execute(
                    f"CREATE POLICY hg_everyone ON {s}.{table} AS PERMISSIVE FOR ALL "
                    "TO PUBLIC USING (true) WITH CHECK (true)"
                )
                op.execute(f"ALTER TABLE {s}.{table} ENABLE ROW LEVEL SECURITY")
                enabled_by_us.append(table)
            op.execute(
                f"CREATE POLICY hg_people_own ON {s}.{table} AS RESTRICTIVE FOR ALL "
                f"TO {people} USING ({using}) WITH CHECK ({check})"
            )
    return enabled_by_us


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        op.drop_table("hg_logins")
        op.drop_table("hg_settings")
        return
    prefix = bind.execute(
        sa.text("SELECT value FROM hg_settings WHERE name = 'role_prefix'")
    ).scalar_one()
    enabled = bind.execute(
        sa.text("SELECT value FROM hg_settings WHERE name = 'rls_enabled_by_humanglue'")
    ).scalar_one()
    roles = Roles(prefix)
    for table in SECURED:
        op.execute(f"DROP POLICY IF EXISTS hg_people_own ON {table}")
        op.execute(f"DROP POLICY IF EXISTS hg_humanglue_base ON {table}")
        op.execute(f"DROP POLICY IF EXISTS hg_everyone ON {table}")
    for table in filter(None, enabled.split(",")):
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    for login in bind.execute(sa.text("SELECT role_name FROM hg_logins")).scalars():
        op.execute(f"DROP ROLE IF EXISTS {_ident(login)}")
    for ddl in _0002.pg_functions():  # as 0002 made them: SECURITY INVOKER
        op.execute(ddl)
    op.execute("DROP TABLE hg_logins")  # and its trigger, before its function goes
    for group in (roles.admin, roles.operator, roles.worker, roles.people):
        op.execute(f"DROP OWNED BY {_ident(group)}")  # its privileges here, and what it owns
    op.execute("DROP TABLE hg_settings")
    for signature in (
        "hg_login_gone()",
        "hg_send_announcement(uuid, jsonb)",
        "hg_lock_profiles(uuid[])",
        "hg_may_see_person(uuid)",
        "hg_visible_workshops()",
        "hg_visible_courses()",
        "hg_taught_workshops()",
        "hg_taught_courses()",
        "hg_is_admin()",
        "hg_current_person()",
        "hg_login_person()",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    for group in (roles.admin, roles.operator, roles.worker, roles.people):
        op.execute(f"DROP ROLE {_ident(group)}")
