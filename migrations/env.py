"""Alembic environment: run with a connection handed over by `humanglue_cli.core.migrate`."""

from __future__ import annotations

from alembic import context

from humanglue_cli.core.models import metadata

VERSION_TABLE = "hg_alembic_version"  # never the platform's own alembic_version


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:  # plain `alembic` command line: sqlalchemy.url from alembic.ini
        from humanglue_cli.core.db import create_engine

        engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
        with engine.connect() as connection:
            _migrate(connection)
        return
    _migrate(connection)


def _migrate(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
