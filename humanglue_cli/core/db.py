"""Engines and connections: SQLite tuned for a worker beside writers, driver errors wrapped."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc

from humanglue_cli.core.errors import SchemaError, Unavailable

_ENGINES: dict[str, sa.Engine] = {}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL + busy_timeout: a worker, a tailer and the platform's writers side by side
    # without "database is locked" (ENGINEERING.md, the embedded default).
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Writers take the lock up front: no deadlock-prone upgrade from a read lock.
    # Reads opt out with `conn.execution_options(readonly=True)` and never block a writer.
    readonly = conn.get_execution_options().get("readonly")
    conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    """A new engine for `url`; SQLite files get their directory created and WAL settings."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(
        parsed, connect_args={"connect_timeout": 5, "application_name": "humanglue"}, **kwargs
    )


def get_engine(url: str) -> sa.Engine:
    """The process-wide engine for `url` (one pool per process and URL)."""
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = create_engine(url)
    return engine


def dispose_engines(close: bool = True) -> None:
    """Drop every engine; after a fork pass close=False (the parent still owns the sockets)."""
    for engine in _ENGINES.values():
        engine.dispose(close=close)
    _ENGINES.clear()


def describe(url: str | sa.URL) -> str:
    """The URL without its password, for messages."""
    return sa.make_url(url).render_as_string(hide_password=True)


@contextlib.contextmanager
def wrap_errors(engine: sa.Engine) -> Iterator[None]:
    """Turn driver errors into the project's own (STYLE.md, errors at the boundary)."""
    try:
        yield
    except exc.OperationalError as error:
        text = str(error.orig or error).lower()
        if "no such table" in text or "no such column" in text:
            raise SchemaError(_schema_hint(engine)) from None
        if any(s in text for s in ("connect", "unable to open", "could not translate", "refused")):
            raise Unavailable(
                f"cannot reach the database at {describe(engine.url)}: {_first_line(error)}"
            ) from None
        raise
    except exc.ProgrammingError as error:
        if "does not exist" in str(error.orig or error) and "relation" in str(error.orig):
            raise SchemaError(_schema_hint(engine)) from None
        raise
    except exc.InterfaceError as error:
        raise Unavailable(
            f"cannot reach the database at {describe(engine.url)}: {_first_line(error)}"
        ) from None


def _schema_hint(engine: sa.Engine) -> str:
    where = describe(engine.url)
    return f"the database {where} has no HumanGlue schema: run `humanglue db upgrade`"


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
