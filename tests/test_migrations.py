"""The migrations create exactly the declared models, and respect an existing platform.

`db upgrade` checks everything before it changes anything, names every problem in one
refusal, says what it creates and adopts, plans without changing anything (`--sql`), and waits
for a busy platform table without holding up the platform's writes.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import threading
import time
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.schema import CreateIndex

from humanglue_cli.core import migrate
from humanglue_cli.core.db import create_engine, sqlite_path
from humanglue_cli.core.errors import SchemaError
from humanglue_cli.core.models import PLATFORM_TABLES, metadata
from tests.conftest import BACKENDS
from tests.helpers import CLI

POSTGRES = pytest.mark.parametrize("empty_db", ["postgres"], indirect=True)


def hg(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`humanglue --database-url URL ARGS`, as an operator runs it."""
    return subprocess.run(
        [CLI, "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def schema(url: str) -> dict[str, object]:
    """Every table with its columns, every trigger, and the schema's revision."""
    engine = create_engine(url)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        tables = {
            t: [c["name"] for c in inspector.get_columns(t)] for t in inspector.get_table_names()
        }
        if conn.dialect.name == "postgresql":
            query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"
        else:
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY 1"
        triggers = conn.execute(sa.text(query)).scalars().all()
    revision = migrate.current_revision(engine)
    engine.dispose()
    return {"tables": tables, "triggers": triggers, "revision": revision}


def compare_with_models(url: str) -> list[object]:
    """What differs between the database's schema and the declared models."""
    engine = create_engine(url)
    with engine.connect() as conn, warnings.catch_warnings():
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # SQLAlchemy cannot reflect them there, so alembic skips them: see below
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expr")
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = [
            d
            for d in compare_metadata(ctx, metadata)
            if not (d[0] == "remove_table" and d[1].name == migrate.VERSION_TABLE)
        ]
        if sqlite:
            diff += sqlite_expression_indexes(conn)
    engine.dispose()
    return diff


def sqlite_expression_indexes(conn: sa.Connection) -> list[object]:
    """The declared indexes on expressions that SQLite lacks or holds otherwise: its own text
    of each (`sqlite_master`) against the declared DDL, from the column list on."""

    def columns(ddl: str | None) -> str | None:
        text = re.sub(r"\s+", " ", ddl or "").replace('"', "")
        return text.split(" ON ", 1)[1].split(" (", 1)[1] if " ON " in text else None

    diff: list[object] = []
    for table in metadata.tables.values():
        for index in table.indexes:
            if all(isinstance(e, sa.Column) for e in index.expressions):
                continue
            declared = columns(str(CreateIndex(index).compile(dialect=conn.dialect)))
            found = conn.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"),
                {"n": index.name},
            ).scalar()
            if columns(found) != declared:
                diff.append(("expression index", index.name, declared, columns(found)))
    return diff


def platform(url: str, *ddl: str) -> None:
    """The platform's own tables, made by the platform itself."""
    engine = create_engine(url, create=True)
    with engine.begin() as conn:
        for statement in ddl:
            conn.execute(sa.text(statement))
    engine.dispose()


@BACKENDS
def test_migrations_equal_the_declared_models(empty_db: str) -> None:
    engine = create_engine(empty_db, create=True)
    migrate.upgrade(engine)
    engine.dispose()
    assert compare_with_models(empty_db) == []


@BACKENDS
def test_upgrade_twice_changes_nothing(empty_db: str) -> None:
    engine = create_engine(empty_db, create=True)
    assert migrate.upgrade(engine) == (None, migrate.head_revision())
    with engine.connect() as conn:
        before = sorted(sa.inspect(conn).get_table_names())
    assert migrate.upgrade(engine) == (migrate.head_revision(), migrate.head_revision())
    with engine.connect() as conn:
        assert sorted(sa.inspect(conn).get_table_names()) == before
    engine.dispose()


def platform_ddl(uuid: str) -> list[str]:
    """The platform's own tables, as it made them, with columns of its own we must keep."""
    return [
        f"CREATE TABLE profiles (id {uuid} PRIMARY KEY, email TEXT NOT NULL UNIQUE, "
        "full_name TEXT, role TEXT NOT NULL, avatar_url TEXT)",
        f"CREATE TABLE courses (id {uuid} PRIMARY KEY, instructor_id {uuid} NOT NULL, "
        f"title TEXT NOT NULL, updated_by {uuid}, price_cents INTEGER, "
        "created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP)",
    ]


@BACKENDS
def test_existing_platform_tables_are_left_alone(empty_db: str) -> None:
    engine = create_engine(empty_db, create=True)
    with engine.begin() as conn:
        for ddl in platform_ddl("UUID" if conn.dialect.name == "postgresql" else "VARCHAR(36)"):
            conn.execute(sa.text(ddl))
        conn.execute(
            sa.text(
                "INSERT INTO profiles (id, email, role, avatar_url) VALUES "
                "('11111111-1111-4111-8111-111111111111', 'a@x.edu', "
                "'instructor', 'pic.png')"
            )
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        cols = {c["name"] for c in sa.inspect(conn).get_columns("profiles")}
        assert "avatar_url" in cols  # not recreated
        assert conn.execute(sa.text("SELECT avatar_url FROM profiles")).scalar() == "pic.png"
        assert sa.inspect(conn).has_table("hg_events")
    # A plain-SQL course edit of the platform's own extra column still fires rule 8.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO courses (id, instructor_id, title) VALUES ("
                "'22222222-2222-4222-8222-222222222222', "
                "'11111111-1111-4111-8111-111111111111', 'C')"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE courses SET price_cents = 100, "
                "updated_by = '11111111-1111-4111-8111-111111111111'"
            )
        )
        kinds = conn.execute(sa.text("SELECT kind, payload FROM hg_events")).all()
    assert [k.kind for k in kinds] == ["course.updated"]
    assert "price_cents" in str(kinds[0].payload)
    engine.dispose()


@BACKENDS
def test_every_schema_problem_is_named_in_one_error(empty_db: str) -> None:
    # Given a platform lacking columns the rules read in two tables, and with one integer key
    uuid, integer = ("uuid", "bigint") if empty_db.startswith("postgresql") else ("TEXT", "INTEGER")
    platform(
        empty_db,
        f"CREATE TABLE profiles (id {uuid} PRIMARY KEY, email TEXT)",
        f"CREATE TABLE courses (id {integer} PRIMARY KEY, instructor_id {uuid})",
    )
    engine = create_engine(empty_db)
    # When the schema is upgraded
    with pytest.raises(SchemaError) as refused:
        migrate.upgrade(engine)
    engine.dispose()
    # Then one error names every missing column of every table, and the key
    message = str(refused.value)
    assert "profiles lacks full_name, role; courses lacks title, updated_by" in message
    assert f"; courses.id is {integer} (HumanGlue needs" in message
    assert message.endswith("nothing was changed")
    assert not [t for t in schema(empty_db)["tables"] if t.startswith("hg_")]


@BACKENDS
def test_a_platform_whose_keys_are_not_uuids_is_refused_before_anything_is_made(
    empty_db: str,
) -> None:
    # Given a platform whose keys are integers (PostgreSQL bigint, SQLite INTEGER)
    postgres = empty_db.startswith("postgresql")
    integer = "bigint" if postgres else "INTEGER"
    platform(
        empty_db,
        f"CREATE TABLE profiles (id {integer} PRIMARY KEY, email TEXT NOT NULL, "
        "full_name TEXT, role TEXT NOT NULL)",
        f"CREATE TABLE courses (id {integer} PRIMARY KEY, instructor_id {integer} NOT NULL "
        f"REFERENCES profiles (id), title TEXT NOT NULL, updated_by {integer})",
        f"CREATE TABLE enrollments (id {integer} PRIMARY KEY, course_id {integer} NOT NULL, "
        f"student_id {integer} NOT NULL, status TEXT NOT NULL DEFAULT 'active')",
    )
    before = schema(empty_db)
    # When the schema is upgraded
    proc = hg(empty_db, "db", "upgrade")
    # Then it is refused in one line naming each table, column and type, and nothing was made
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    needs = "uuid keys" if postgres else "UUID keys, as text on SQLite"
    assert proc.stderr == (
        f"humanglue: cannot adopt the platform's schema: profiles.id is {integer}, "
        f"courses.id is {integer}, courses.instructor_id is {integer}, "
        f"courses.updated_by is {integer}, enrollments.id is {integer}, "
        f"enrollments.course_id is {integer}, enrollments.student_id is {integer} "
        f"(HumanGlue needs {needs}, CONTRACT §5); nothing was changed\n"
    )  # whole, though longer than the usual one-line error: it names every key
    after = schema(empty_db)
    assert after == before and after["triggers"] == [] and after["revision"] is None
    assert sorted(after["tables"]) == ["courses", "enrollments", "profiles"]  # type: ignore[call-overload]


@BACKENDS
def test_upgrade_names_each_table_it_creates_and_adopts(empty_db: str) -> None:
    # Given a platform that has profiles and courses of its own
    uuid = "UUID" if empty_db.startswith("postgresql") else "VARCHAR(36)"
    platform(empty_db, *platform_ddl(uuid))
    # When the schema is upgraded, twice
    first, second = hg(empty_db, "db", "upgrade"), hg(empty_db, "db", "upgrade")
    # Then the first run says, one line each, what it created and what it adopted
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert "humanglue: adopted the platform's table profiles (columns checked)" in lines
    assert (
        "humanglue: adopted the platform's table courses (columns checked, triggers added)" in lines
    )
    for table in ("enrollments", "payments", "notifications", "hg_events", "hg_alembic_version"):
        assert f"humanglue: created table {table}" in lines
    assert not [line for line in lines if "profiles" in line and "created" in line]
    assert lines[-1].endswith(f"upgraded from nothing to {migrate.head_revision()}")
    assert first.stdout == ""
    # And the second changes nothing, and says only that
    assert second.returncode == 0 and len(second.stderr.splitlines()) == 1, second.stderr
    assert "is current" in second.stderr


@BACKENDS
def test_sql_prints_the_ddl_and_creates_nothing(empty_db: str, tmp_path: Path) -> None:
    # Given a database with nothing in it (on SQLite: no file, not even its directory)
    url = f"sqlite:///{tmp_path / 'new' / 'hg.db'}" if empty_db.startswith("sqlite") else empty_db
    before = None if sqlite_path(url) else schema(url)
    # When the upgrade is planned
    proc = hg(url, "db", "upgrade", "--sql")
    # Then the DDL is on stdout, each statement ending in `;`, and nothing was made
    assert proc.returncode == 0, proc.stderr
    statements = [s.strip() for s in proc.stdout.split(";\n\n") if s.strip()]
    assert proc.stdout.endswith(";\n\n") and len(statements) > 20
    assert "CREATE TABLE profiles (" in proc.stdout and "CREATE TABLE hg_events (" in proc.stdout
    assert "CREATE TRIGGER hg_enrollment_created" in proc.stdout.replace("IF NOT EXISTS ", "")
    assert not [s for s in statements if s.split()[0] in ("SELECT", "PRAGMA", "SAVEPOINT", "SET")]
    assert "would create table profiles" in proc.stderr and "nothing was changed" in proc.stderr
    if sqlite_path(url):
        assert not (tmp_path / "new").exists()
    else:
        assert schema(url) == before == {"tables": {}, "triggers": [], "revision": None}


@BACKENDS
def test_the_printed_ddl_builds_the_declared_schema(empty_db: str, tmp_path: Path) -> None:
    # Given the plan for an empty database
    plan = hg(empty_db, "db", "upgrade", "--sql")
    assert plan.returncode == 0, plan.stderr
    # When a DBA applies it by hand
    path = sqlite_path(empty_db)
    if path:
        with sqlite3.connect(path) as conn:
            conn.executescript(plan.stdout)
        conn.close()
    else:
        engine = create_engine(empty_db)
        with engine.begin() as conn:
            conn.exec_driver_sql(plan.stdout)
        engine.dispose()
    # Then it is the schema that `db upgrade` makes, and `db upgrade` has nothing left to do
    assert compare_with_models(empty_db) == []
    ours = (  # not captures
        "hg_login_gone",
        "hg_notification_seq",
        "hg_notifications_inserted",
        "hg_activity_inserted",
        "hg_presence_joined",  # SQLite (migration 0007): the peaks
        "hg_presence_rejoined",
        "hg_presence_inserted",  # PostgreSQL
        "hg_presence_updated",
        "hg_unread_insert",  # PostgreSQL (migration 0010): the unread counts
        "hg_unread_update",
        "hg_unread_delete",
        "hg_unread_truncate",
    )
    captures = [t for t in schema(empty_db)["triggers"] if t not in ours]  # type: ignore[union-attr]
    assert len(captures) == 11
    again = hg(empty_db, "db", "upgrade")
    assert again.returncode == 0 and "is current" in again.stderr, again.stderr


@BACKENDS
@pytest.mark.parametrize("revision", ["0001", "head"])
def test_sql_on_a_migrated_database_changes_nothing(empty_db: str, revision: str) -> None:
    # Given a database migrated to an older revision, or to the newest
    engine = create_engine(empty_db, create=True)
    migrate.upgrade(engine, revision)
    engine.dispose()
    before = schema(empty_db)
    path = sqlite_path(empty_db)
    file_before = path.read_bytes() if path else None
    # When the upgrade is planned
    proc = hg(empty_db, "db", "upgrade", "--sql")
    # Then it prints what is left to do, and nothing changed
    assert proc.returncode == 0, proc.stderr
    assert schema(empty_db) == before
    assert (path.read_bytes() if path else None) == file_before
    if revision == "head":
        assert proc.stdout == "" and "is current" in proc.stderr
    else:
        assert "CREATE TRIGGER" in proc.stdout and "ALTER TABLE hg_workers ADD" in proc.stdout
        # No table but those of migrations 0004, 0006, 0007 and 0010 is created again.
        created = re.findall(r"CREATE TABLE (?:\"?\w+\"?\.)?(\w+)", proc.stdout)
        assert sorted(created) == [
            "hg_activity",
            "hg_broadcasts",
            "hg_logins",
            "hg_presence_peaks",
            "hg_settings",
            "hg_unread_counts",
        ]
        views = re.findall(r"CREATE VIEW (?:\"?\w+\"?\.)?(\w+)", proc.stdout)
        assert sorted(views) == [  # migration 0008's live stats
            "instructor_recent_activity",
            "live_course_stats",
            "live_workshop_stats",
            "user_unread_notifications",
        ]
        assert "would create view live_course_stats" in proc.stderr
        assert "would add column hg_workers.stopped_at" in proc.stderr
        # Migration 0009: the tick claims and leases of maintenance runs
        for column in ("scheduled_for", "finished_at", "lease_until", "owner"):
            assert f"would add column hg_maintenance_runs.{column}" in proc.stderr
        assert "CREATE UNIQUE INDEX ux_hg_maintenance_runs_tick" in proc.stdout


@POSTGRES
def test_upgrade_waits_for_a_table_the_platform_holds_exclusively(empty_db: str) -> None:
    # Given the platform's tables, and a platform transaction holding enrollments exclusively
    engine = create_engine(empty_db, create=True)
    metadata.create_all(engine, tables=list(PLATFORM_TABLES))
    holder = engine.connect()
    holder.execute(sa.text("LOCK TABLE enrollments IN ACCESS EXCLUSIVE MODE"))
    release = threading.Timer(4.5, holder.rollback)  # past the first 2 s lock_timeout
    release.start()
    try:
        # When the schema is upgraded meanwhile
        started = time.monotonic()
        proc = hg(empty_db, "db", "upgrade")
        took = time.monotonic() - started
    finally:
        release.join()
        holder.close()
        engine.dispose()
    # Then it says it waits, and succeeds once the lock is released
    assert proc.returncode == 0, proc.stderr
    assert "humanglue: waiting for a lock on table enrollments" in proc.stderr
    assert took >= 4.0
    after = schema(empty_db)
    assert after["revision"] == migrate.head_revision()
    assert "hg_enrollment_created" in after["triggers"]  # type: ignore[operator]


@POSTGRES
def test_while_it_waits_it_holds_up_the_platform_no_longer_than_the_lock_timeout(
    empty_db: str,
) -> None:
    # Given the platform's tables, and payments held by a long platform transaction (its
    # triggers come after those of enrollments)
    engine = create_engine(empty_db, create=True)
    metadata.create_all(engine, tables=list(PLATFORM_TABLES))
    ada, course = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO profiles (id, email, role) VALUES (:p, 'a@x.edu', 'student')"),
            {"p": ada},
        )
        conn.execute(
            sa.text("INSERT INTO courses (id, instructor_id, title) VALUES (:c, :p, 'C')"),
            {"c": course, "p": ada},
        )
    holder = engine.connect()
    holder.execute(sa.text("LOCK TABLE payments IN SHARE MODE"))
    release = threading.Timer(6.0, holder.rollback)
    release.start()
    try:
        upgrade = subprocess.Popen(
            [CLI, "--database-url", empty_db, "db", "upgrade"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        # When the platform enrolls a student while the upgrade waits for payments
        started = time.monotonic()
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO enrollments (id, course_id, student_id) VALUES "
                    "('33333333-3333-4333-8333-333333333333', :c, :p)"
                ),
                {"c": course, "p": ada},
            )
        waited = time.monotonic() - started
        _, stderr = upgrade.communicate(timeout=60)
    finally:
        release.join()
        holder.close()
        engine.dispose()
    # Then the enrollment waited at most about one lock_timeout, not until payments was free
    assert upgrade.returncode == 0, stderr
    assert "waiting for a lock on table payments" in stderr
    assert waited < 3.0


def test_trigger_creation_waits_politely_for_a_busy_table() -> None:
    """CREATE TRIGGER under a short lock_timeout: it says it waits, and does not stall writes."""
    import subprocess
    import threading
    import time

    from tests.conftest import _drop_postgres, _new_postgres
    from tests.helpers import CLI

    url, name = _new_postgres()
    engine = create_engine(url, create=True)
    try:
        migrate.upgrade(engine, "0001")
        holder = engine.connect()
        holder.execute(sa.text("LOCK TABLE enrollments IN SHARE MODE"))  # a long platform txn
        release = threading.Timer(4.0, holder.rollback)
        release.start()
        started = time.monotonic()
        proc = subprocess.run(
            [CLI, "--database-url", url, "db", "upgrade"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        release.join()
        holder.close()
        assert proc.returncode == 0, proc.stderr
        assert "waiting for a lock on table enrollments" in proc.stderr
        assert time.monotonic() - started >= 3.5
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()
        _drop_postgres(name)


@POSTGRES
def test_a_large_platform_table_is_not_indexed_under_its_writers(empty_db: str) -> None:
    """0008's indexes on the platform's tables: built on a small table, but a plain CREATE
    INDEX on a large one would hold off the platform's writes for the whole build, so the
    upgrade leaves it out and prints the CONCURRENTLY statement to run instead."""
    engine = create_engine(empty_db, create=True)
    migrate.upgrade(engine, "0007")
    with engine.begin() as conn:  # ~80 MB of enrollments: wide rows kept in the table itself
        conn.execute(sa.text("ALTER TABLE enrollments ADD COLUMN notes text"))
        conn.execute(sa.text("ALTER TABLE enrollments ALTER COLUMN notes SET STORAGE PLAIN"))
        conn.execute(
            sa.text(
                "INSERT INTO profiles (id, email, role) VALUES "
                "('11111111-1111-4111-8111-111111111111', 'i@x.edu', 'instructor')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO courses (id, instructor_id, title) VALUES "
                "('22222222-2222-4222-8222-222222222222', "
                "'11111111-1111-4111-8111-111111111111', 'C')"
            )
        )
        conn.execute(sa.text("ALTER TABLE enrollments DISABLE TRIGGER USER"))
        conn.execute(
            sa.text(
                "INSERT INTO enrollments (id, course_id, student_id, notes) "
                "SELECT gen_random_uuid(), '22222222-2222-4222-8222-222222222222', "
                "'11111111-1111-4111-8111-111111111111', repeat('x', 7000) "
                "FROM generate_series(1, 11000)"
            )
        )
        conn.execute(sa.text("ALTER TABLE enrollments ENABLE TRIGGER USER"))
    proc = hg(empty_db, "db", "upgrade")
    assert proc.returncode == 0, proc.stderr
    statements = [
        line.split(": ", 2)[-1] for line in proc.stderr.splitlines() if "large platform" in line
    ]
    assert sorted(statements) == [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_enrollments_course_status "
        "ON enrollments (course_id, status)",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_enrollments_student ON enrollments "
        "(student_id)",
    ]
    with engine.connect() as conn:
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("enrollments")}
        assert "ix_enrollments_student" not in indexes
        assert "ix_payments_course_status" in {
            i["name"] for i in sa.inspect(conn).get_indexes("payments")
        }
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:  # what the operator runs: the statements as printed
            conn.execute(sa.text(statement))
        conn.execute(sa.text("ALTER TABLE enrollments DROP COLUMN notes"))  # the platform's
    assert compare_with_models(empty_db) == []
    engine.dispose()
