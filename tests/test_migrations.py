"""The migrations create exactly the declared models, and respect an existing platform."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from humanglue_cli.core import migrate
from humanglue_cli.core.db import create_engine
from humanglue_cli.core.errors import SchemaError
from humanglue_cli.core.models import metadata
from tests.conftest import BACKENDS


@BACKENDS
def test_migrations_equal_the_declared_models(empty_db: str) -> None:
    engine = create_engine(empty_db, create=True)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = [
            d
            for d in compare_metadata(ctx, metadata)
            if not (d[0] == "remove_table" and d[1].name == migrate.VERSION_TABLE)
        ]
    engine.dispose()
    assert diff == []


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
def test_a_platform_table_missing_a_rule_column_is_named(empty_db: str) -> None:
    engine = create_engine(empty_db, create=True)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE profiles (id VARCHAR(36) PRIMARY KEY, email TEXT)"))
    with pytest.raises(SchemaError, match=r"profiles lacks .*full_name, role"):
        migrate.upgrade(engine)
    with engine.connect() as conn:  # nothing of ours was left half-made
        assert not sa.inspect(conn).has_table("hg_events")
    engine.dispose()


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
