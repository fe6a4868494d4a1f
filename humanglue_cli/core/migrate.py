"""Run the Alembic migrations in `migrations/` against a database (`humanglue db upgrade`).

Every pending migration runs in one transaction, committed at the end — or rolled back when
planning (`db upgrade --sql`). PostgreSQL and SQLite both have transactional DDL, so a refused
or failed upgrade leaves nothing half-done, and a plan is the statements the real migrations run.

On PostgreSQL that transaction runs under a short `lock_timeout`. A statement that needs a table
the platform holds busy gives up after 2 s instead of queueing — and stalling the platform's
writers queued behind it; the whole transaction is then rolled back, releasing every lock it
took, and tried again a little later, saying so on stderr (`waiting for a lock on table …`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event

from humanglue_cli.core.db import SQLITE_BUSY_TIMEOUT_MS, create_engine, sqlite_path, wrap_errors
from humanglue_cli.core.errors import SchemaError

VERSION_TABLE = "hg_alembic_version"
LOCK_TIMEOUT = "2s"
LOCK_ATTEMPTS = 15
_LOCK_NOT_AVAILABLE = "55P03"
# What a plan leaves out: reads (of the catalog, of the version), session and transaction control.
_READS = frozenset({"SELECT", "WITH", "PRAGMA", "SHOW"})
_NOT_DDL = _READS | {"SET", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"}

log = logging.getLogger("humanglue.migrate")

# What a migration did, for `db upgrade` to report: ("created", table), ("adopted", table) — a
# platform table that existed and was checked —, ("triggers", table), ("column", "table.column"),
# ("policies", table) — row-level security —, ("roles", prefix), ("view", name),
# ("index-deferred", the CREATE INDEX CONCURRENTLY statement an operator is to run),
# ("function-plain", the statement a superuser is to run: migration 0012).
NoteKind = Literal[
    "created",
    "adopted",
    "triggers",
    "column",
    "policies",
    "roles",
    "view",
    "index-deferred",
    "function-plain",
]
Note = tuple[NoteKind, str]


@dataclass
class Outcome:
    """What an upgrade did, or when planned would do (then nothing was changed)."""

    before: str | None
    after: str | None
    notes: list[Note] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)  # a plan's DDL, in order


class TableBusy(Exception):
    """A statement could not lock the platform's `table` within the lock_timeout."""

    def __init__(self, table: str | None) -> None:
        super().__init__(f"table {table or '(unknown)'} is busy")
        self.table = table


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
        return _revision(conn)


def _revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: sa.Engine, target: str = "head") -> tuple[str | None, str | None]:
    """Bring the schema to `target` (the newest revision); returns (before, after)."""
    outcome = run(engine, target)
    return outcome.before, outcome.after


def run(engine: sa.Engine, target: str = "head", *, plan: bool = False) -> Outcome:
    """Bring the schema to `target` or, with `plan`, only find the statements that would.

    Raises:
        SchemaError: the platform's tables cannot be adopted (nothing was changed), or a table
            stayed busy through every attempt.
    """
    busy_one = "one of the platform's tables"
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            return _attempt(engine, target, plan)
        except TableBusy as busy:
            busy_one = f"table {busy.table}" if busy.table else "one of the platform's tables"
            log.warning(
                "waiting for a lock on %s (another session holds it; lock_timeout %s, "
                "attempt %d of %d)",
                busy_one,
                LOCK_TIMEOUT,
                attempt,
                LOCK_ATTEMPTS,
            )
            time.sleep(min(0.2 * attempt, 2.0))
    raise SchemaError(
        f"could not lock {busy_one} after {LOCK_ATTEMPTS} attempts; nothing was changed: "
        "run `humanglue db upgrade` again when platform traffic is lighter"
    )


def _attempt(engine: sa.Engine, target: str, plan: bool) -> Outcome:
    from alembic import command

    with wrap_errors(engine), engine.connect() as conn, conn.begin() as transaction:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        had_versions = sa.inspect(conn).has_table(VERSION_TABLE)
        before = _revision(conn)
        config = _config(conn)  # alembic runs in our transaction: it commits nothing itself
        with _capturing(conn, plan) as statements, under_lock_timeout():
            command.upgrade(config, target)
        notes: list[Note] = config.attributes.get("notes", [])
        if not had_versions and sa.inspect(conn).has_table(VERSION_TABLE):
            notes.insert(0, ("created", VERSION_TABLE))
        outcome = Outcome(before, _revision(conn), notes, statements)
        if plan:
            transaction.rollback()
    return outcome


@contextlib.contextmanager
def under_lock_timeout(*tables: str) -> Iterator[None]:
    """Statements that lock (or read the catalog of) the platform's `tables`.

    They run under the upgrade's short lock_timeout; if the platform holds one of the tables
    busy, the upgrade is rolled back and tried again, naming the table (see `run`).
    """
    try:
        yield
    except sa.exc.OperationalError as error:
        if getattr(error.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        raise TableBusy(" or ".join(tables) or None) from error


def note(what: NoteKind, name: str) -> None:
    """Record, for `db upgrade`'s report, what a migration did to a table (see `Note`)."""
    from alembic import op

    config = op.get_context().config
    if config is not None:  # None under a bare `alembic` command line
        config.attributes.setdefault("notes", []).append((what, name))


@contextlib.contextmanager
def _capturing(conn: sa.Connection, plan: bool) -> Iterator[list[str]]:
    """The statements that change the schema, as they are sent to the database (if `plan`)."""
    statements: list[str] = []

    def capture(*args: Any) -> None:
        statement = "\n".join(line.rstrip() for line in str(args[2]).strip().splitlines())
        if statement and statement.split(None, 1)[0].upper() not in _NOT_DDL:
            statements.append(statement)

    if not plan:
        yield statements
        return
    event.listen(conn, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(conn, "before_cursor_execute", capture)


def planning_engine(url: str) -> sa.Engine:
    """An engine to plan an upgrade on that creates nothing, not even a SQLite file.

    A SQLite file that does not exist is planned against an empty in-memory database; one that
    exists is opened as it is (its journal mode left alone). Other databases: `create_engine`.
    """
    path = sqlite_path(url)
    if path is None:
        return create_engine(url)
    target = f"file:{quote(str(path))}?mode=rw" if path.exists() else ":memory:"
    engine = sa.create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(
            target, uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, check_same_thread=False
        ),
    )
    # We issue BEGIN ourselves: without it, pysqlite would run DDL outside the transaction
    # that the plan rolls back.
    event.listen(engine, "connect", lambda dbapi_conn, _record: _no_autobegin(dbapi_conn))
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return engine


def _no_autobegin(dbapi_conn: sqlite3.Connection) -> None:
    dbapi_conn.isolation_level = None
