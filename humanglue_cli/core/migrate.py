"""Run the Alembic migrations in `migrations/` against a database (`humanglue db upgrade`)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from humanglue_cli.core.db import wrap_errors

VERSION_TABLE = "hg_alembic_version"


def _config(connection: sa.Connection | None = None):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    import migrations

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The schema revision the database is at, or None if it has none."""
    with wrap_errors(engine), engine.connect() as conn:
        conn = conn.execution_options(readonly=True)  # never blocks the platform's writers
        if not sa.inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: sa.Engine, target: str = "head") -> tuple[str | None, str | None]:
    """Bring the schema to `target` (the newest revision); returns (before, after)."""
    from alembic import command

    before = current_revision(engine)
    with wrap_errors(engine), engine.connect() as conn:
        command.upgrade(_config(conn), target)
        conn.commit()
    return before, current_revision(engine)
