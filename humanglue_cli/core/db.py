"""Engines, the database's clock, and what a driver error means.

Every decision about a database error — wait for the database, set the work aside, retry at
once, or count a failed attempt — is made by `classify`, from the SQLSTATE (PostgreSQL), the
SQLite result code, and the driver's exception type; never from the words of a message.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import re
import socket
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event, exc

from humanglue_cli.core import private
from humanglue_cli.core.errors import (
    Forbidden,
    HumanGlueError,
    SchemaError,
    Unavailable,
    first_line,
)
from humanglue_cli.core.urls import describe

if TYPE_CHECKING:
    import sqlite3

_ENGINES: dict[str, sa.Engine] = {}
SQLITE_BUSY_TIMEOUT_MS = 30000


class Fault(enum.Enum):
    """What a failure means for the work that met it."""

    OUTAGE = "outage"  # the database cannot be reached: wait for it; the work is not at fault
    SCHEMA = "schema"  # no HumanGlue schema, or an outdated one
    LOCKED = "locked"  # someone else holds a lock the work needs: set it aside, try again soon
    CONFLICT = "conflict"  # deadlock or serialization failure: try again at once
    TIMEOUT = "timeout"  # outlasted statement_timeout: a failed attempt, costly to meet again
    WORK = "work"  # the work itself failed (any other error): counts as a failed attempt


# PostgreSQL SQLSTATEs (Appendix A of its manual), by class or by exact code.
_PG_OUTAGE_CLASSES = ("08",)  # connection exception
_PG_OUTAGE = {
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up, recovering)
    "3D000",  # invalid_catalog_name: the database does not exist
    "28000",  # invalid_authorization_specification
    "28P01",  # invalid_password
    "53100",  # disk_full
    "53300",  # too_many_connections
    "53400",  # configuration_limit_exceeded
    "58030",  # io_error
}
_PG_LOCKED = {"55P03", "55006"}  # lock_not_available (lock_timeout), object_in_use
_PG_CONFLICT = {"40P01", "40001"}  # deadlock_detected, serialization_failure
_PG_TIMEOUT = {"57014"}  # query_canceled: statement_timeout (or a cancel request)
_PG_DENIED = "42501"  # insufficient_privilege: a role's rights, or a policy, refused it
_PG_SCHEMA = {"42P01", "42703", "3F000", "42883"}  # undefined table/column/schema/function
# SQLite result codes (primary code names, as sqlite3 reports them in `sqlite_errorname`).
_SQLITE_OUTAGE = (
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_NOTADB",
    "SQLITE_CORRUPT",
    "SQLITE_READONLY",
    "SQLITE_PERM",
    "SQLITE_AUTH",
)
_SQLITE_LOCKED = ("SQLITE_BUSY", "SQLITE_LOCKED")


def classify(error: BaseException) -> Fault:
    """What `error` means: see Fault. Anything not recognised is the work's fault."""
    if isinstance(error, Unavailable):
        return Fault.OUTAGE
    if isinstance(error, SchemaError):
        return Fault.SCHEMA
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return Fault.OUTAGE
    orig = getattr(error, "orig", None) or error
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return _pg_fault(sqlstate)
    sqlite = sys.modules.get("sqlite3")  # not imported: no SQLite error (the CLI on PostgreSQL)
    if sqlite is not None and isinstance(orig, sqlite.Error):
        return _sqlite_fault(orig)
    if isinstance(error, exc.InterfaceError | exc.OperationalError):
        return Fault.OUTAGE  # a driver error without a SQLSTATE: the connection itself failed
    return Fault.WORK


def _sqlstate(error: BaseException) -> str | None:
    orig = getattr(error, "orig", None) or error
    sqlstate = getattr(orig, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) else None


def _pg_fault(sqlstate: str) -> Fault:
    if sqlstate[:2] in _PG_OUTAGE_CLASSES or sqlstate in _PG_OUTAGE:
        return Fault.OUTAGE
    if sqlstate in _PG_LOCKED:
        return Fault.LOCKED
    if sqlstate in _PG_CONFLICT:
        return Fault.CONFLICT
    if sqlstate in _PG_TIMEOUT:
        return Fault.TIMEOUT
    if sqlstate in _PG_SCHEMA:
        return Fault.SCHEMA
    return Fault.WORK


def _sqlite_fault(error: sqlite3.Error) -> Fault:
    name = getattr(error, "sqlite_errorname", "") or ""
    if name.startswith(_SQLITE_OUTAGE):
        return Fault.OUTAGE
    if name.startswith(_SQLITE_LOCKED):
        return Fault.LOCKED
    if name == "SQLITE_ERROR" and str(error).startswith(("no such table", "no such column")):
        return Fault.SCHEMA  # SQLite gives these no code of their own
    return Fault.WORK


@contextlib.contextmanager
def wrap_errors(engine: sa.Engine) -> Iterator[None]:
    """Turn an outage or a missing schema into the project's own errors (exit 5, exit 1)."""
    try:
        yield
    except HumanGlueError:
        raise
    except Exception as error:
        if _sqlstate(error) == _PG_DENIED:  # a personal login at an operator's command…
            raise Forbidden(f"permission denied: {first_line(error)}") from None
        fault = classify(error)
        if fault is Fault.OUTAGE:
            if stalled(engine):  # the driver's words would blame the server
                error = ConnectionError(STALLED)
            raise unavailable(engine.url, error) from None
        if fault is Fault.SCHEMA:
            raise SchemaError(no_schema(engine.url)) from None
        raise


def unavailable(url: object, error: BaseException) -> Unavailable:
    return Unavailable(f"cannot reach the database {describe(url)}: {first_line(error)}")


def no_schema(url: object) -> str:
    return f"the database {describe(url)} has no HumanGlue schema: run `humanglue db upgrade`"


# --- engines ------------------------------------------------------------------------------------


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL + busy_timeout: a worker, a tailer and the platform's writers side by side
    # without "database is locked" (ENGINEERING.md, the embedded default).
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Writers take the lock up front: no deadlock-prone upgrade from a read lock.
    # Reads opt out with `conn.execution_options(readonly=True)` and never block a writer.
    readonly = conn.get_execution_options().get("readonly")
    conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def sqlite_path(url: str | sa.URL) -> Path | None:
    """The file of a SQLite URL (None for other databases)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database).expanduser()


def create_engine(url: str, *, create: bool = False, **kwargs: Any) -> sa.Engine:
    """A new engine for `url`.

    A SQLite file is opened only if it exists, unless `create` (`db upgrade`, the demo): a
    read, or a mistyped path, never leaves an empty database behind. What `create` makes is
    private: the file 0600, a directory 0700 (core/private).

    Raises:
        SchemaError: a SQLite file that does not exist, without `create`.
    """
    parsed = sa.make_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        if create:
            private.make_dirs(path.parent)
        elif not path.exists():
            raise SchemaError(
                f"no database at {path}: create it with `humanglue db upgrade` "
                "(or check --database-url)"
            )
        target = f"file:{quote(str(path))}?mode=rw"

        import sqlite3

        def connect() -> sqlite3.Connection:
            if create:  # 0600 before SQLite opens it (core/private); SQLite says why it cannot
                with contextlib.suppress(OSError):
                    private.create_file(path)
            return sqlite3.connect(
                target, uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, check_same_thread=False
            )

        engine = sa.create_engine(parsed, creator=connect, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # The same connection again and again (LIFO): a busy worker's or tail's few connections
    # stay warm, the others time out of use; and a connection is pinged before use only when it
    # has been idle (PING_IDLE_AFTER), not on every checkout — a busy worker checks out a
    # connection twice per batch, and on this kind of machine a round trip to a server process
    # that had gone idle costs up to 0.4 ms. One that broke while in use fails its statement,
    # as any connection can mid-transaction: callers treat that as an outage.
    kwargs.setdefault("pool_use_lifo", True)
    ping_when_idle = "pool_pre_ping" not in kwargs
    if ping_when_idle:
        kwargs["pool_pre_ping"] = False
    engine = sa.create_engine(parsed, connect_args=dict(PG_CONNECT_ARGS), **kwargs)
    if ping_when_idle:
        event.listen(engine, "checkout", functools.partial(_ping_if_idle, engine.dialect))
        event.listen(engine, "checkin", _used_now)
    opened: weakref.WeakSet[Any] = weakref.WeakSet()
    _OPENED[engine] = opened

    def connected(dbapi_conn: Any, record: Any) -> None:
        with _OPENED_LOCK:
            opened.add(dbapi_conn)
        if ping_when_idle and record is not None:  # it has just answered: no ping to use it
            record.info[_USED] = time.monotonic()

    def not_while_stalled(dialect: Any, _record: Any, _cargs: Any, _cparams: Any) -> None:
        if stalled(engine):  # it would wait out its connect timeout, in vain (see `sever`)
            raise dialect.loaded_dbapi.OperationalError(STALLED)

    event.listen(engine, "connect", connected)
    event.listen(engine, "do_connect", not_while_stalled)
    return engine


PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "application_name": "humanglue",
    # A dead server or a cut network is noticed within ~15 s, not at the next TCP timeout. A
    # peer that still acknowledges but never answers (a proxy whose backend vanished) is not:
    # see `deadline` and `sever`, and core/wakeup.py's heartbeat.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
# Every PostgreSQL connection an engine of `create_engine` has opened and not yet dropped.
_OPENED: weakref.WeakKeyDictionary[sa.Engine, weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()
_OPENED_LOCK = threading.Lock()
# The engines whose way to the server is stalled: when `sever` last cut off their connections.
_STALLED: weakref.WeakKeyDictionary[sa.Engine, float] = weakref.WeakKeyDictionary()


PING_IDLE_AFTER = 1.0  # seconds a pooled PostgreSQL connection is trusted after its last use
_USED = "humanglue_used"


def _ping_if_idle(dialect: sa.Dialect, dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """`pool_pre_ping`, for a connection idle PING_IDLE_AFTER or more (one just made counts as
    used: `connected` in `create_engine`)."""
    used = record.info.get(_USED)
    if used is not None and time.monotonic() - used < PING_IDLE_AFTER:
        return
    try:
        dialect.do_ping(dbapi_conn)
    except Exception as error:  # the pool replaces it (and says so if it cannot connect)
        raise exc.DisconnectionError(first_line(error)) from error
    record.info[_USED] = time.monotonic()


def _used_now(_dbapi_conn: Any, record: Any) -> None:
    if record is not None:
        record.info[_USED] = time.monotonic()


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


# --- stalled connections ---------------------------------------------------------------------
# Keepalives notice a peer that stopped acknowledging. A peer that acknowledges but never
# answers — a proxy or balancer whose backend vanished, a server frozen in place — leaves a
# statement waiting forever: only a deadline on something that must answer soon notices it.


def connect_directly(engine: sa.Engine, **options: Any) -> Any:
    """A new DB-API connection to `engine`'s PostgreSQL database, outside its pool (a pooled one
    is pinged on checkout, and the ping itself may stall), with the engine's options and
    `options` (libpq's)."""
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    return engine.dialect.connect(*cargs, **{**cparams, **PG_CONNECT_ARGS, **options})


def cut_off(dbapi_conn: Any) -> None:
    """Shut the socket under a psycopg connection, whichever thread waits on it: that wait
    ends at once with an error (the connection is then broken, and dropped by its user)."""
    with contextlib.suppress(Exception):
        if dbapi_conn.closed:
            return
        with socket.socket(fileno=os.dup(dbapi_conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def deadline(dbapi_conn: Any, seconds: float) -> Iterator[threading.Event]:
    """Cut `dbapi_conn` off (`cut_off`) if the block has not ended within `seconds`; the
    event yielded says whether it was."""
    expired = threading.Event()
    guard = threading.Lock()
    running = True

    def expire() -> None:
        with guard:
            if running:
                expired.set()
                cut_off(dbapi_conn)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield expired
    finally:
        with guard:
            running = False
        timer.cancel()


HEARTBEAT = 2.0  # seconds between two questions to the server about the way to it
STALL = 3.0  # seconds an answer may take before the way to the server is deemed stalled
STALL_HOLDS = 10.0  # seconds a stall is assumed to last unless it is noticed again
STALLED = f"no answer within {STALL:g}s: the connection stalled"


def sever(engine: sa.Engine) -> None:
    """Cut off every connection `engine` has open, pooled or in use: the way to the server is
    stalled. A statement waiting on any of them fails now, and a pooled one fails its ping at
    once rather than hanging in it; until the server answers again (`answered`), or for
    STALL_HOLDS seconds, the engine makes no new connection either (each would wait out its
    connect timeout in vain): the work says at once that the database is unavailable."""
    with _OPENED_LOCK:
        opened = list(_OPENED.get(engine, ()))
        _STALLED[engine] = time.monotonic()
    for dbapi_conn in opened:
        cut_off(dbapi_conn)


def answered(engine: sa.Engine) -> None:
    """The server answered on the way to it: not stalled (any more)."""
    with _OPENED_LOCK:
        _STALLED.pop(engine, None)


def stalled(engine: sa.Engine) -> bool:
    """Whether the way to `engine`'s server is stalled (see `sever`)."""
    with _OPENED_LOCK:
        since = _STALLED.get(engine)
    return since is not None and time.monotonic() - since < STALL_HOLDS


class Watchdog:
    """Notices that the way to `engine`'s PostgreSQL server has stalled, and then cuts off
    every connection of the engine (`sever`): whatever waits on one fails at once, as in an
    outage, and its caller waits it out and reconnects as for any outage.

    From a thread of its own, it asks the server for an answer (`SELECT 1`) every HEARTBEAT
    seconds, on a connection of its own: one round trip every two seconds, nothing per
    statement of the work. It tells a stall from slowness by whether the server answers at
    all: a statement waiting for a lock, or a big batch, leaves this connection answered, and
    is left alone. No answer within STALL seconds — or no connection within the connect
    timeout: the way is held open, but silent — is a stall: everything is cut off (`sever`),
    and it asks again at once, and again, until the first answer ends the stall. A server
    that refuses or breaks connections is not stalled: the work meets that error by itself.
    A no-op on SQLite.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._conn: Any = None  # the thread's
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching; a no-op if it was started before."""
        if self.engine.dialect.name != "postgresql" or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="hg-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)  # one stuck in a connect ends by itself, unseen

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                if self._ask():
                    answered(self.engine)
                elif time.monotonic() - began >= STALL and not self._stop.is_set():
                    sever(self.engine)
                    continue  # ask again at once: the first answer ends the stall
                self._stop.wait(HEARTBEAT)
        finally:
            self._drop()

    def _ask(self) -> bool:
        """Whether the server answered, on a connection made for it if need be; a failure
        (the connection is then dropped) is a stall if it took STALL seconds or more."""
        try:
            if self._conn is None:
                self._conn = connect_directly(self.engine, application_name="humanglue watchdog")
                self._conn.autocommit = True
            with deadline(self._conn, STALL):
                self._conn.execute("SELECT 1")
        except Exception:  # stalled and cut off, refused, or broken: a new one next time
            self._drop()
            return False
        return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


@contextlib.contextmanager
def reading(engine: sa.Engine, snapshot: bool = False) -> Iterator[sa.Connection]:
    """A connection in a read-only transaction (on SQLite it never blocks a writer); with
    `snapshot`, every statement of it sees the same snapshot (REPEATABLE READ on PostgreSQL; a
    SQLite read transaction always does)."""
    with engine.connect() as conn:
        conn = conn.execution_options(readonly=True)
        if snapshot and conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def array_of(
    column: sa.ColumnElement[Any], values: Iterable[Any], name: str | None = None
) -> sa.BindParameter[Any]:
    """`values` as one PostgreSQL array parameter of `column`'s type."""
    from sqlalchemy.dialects.postgresql import ARRAY

    return sa.bindparam(name, list(values), type_=ARRAY(column.type))


def one_of(
    conn: sa.Connection, column: sa.ColumnElement[Any], values: Iterable[Any]
) -> sa.ColumnElement[bool]:
    """`column IN values`, as one array parameter on PostgreSQL (`= ANY(:values)`).

    The statement's text is then the same whatever the number of values, so the driver parses
    and the server plans it once, not per batch size (a batch's hot path).
    """
    values = list(values)
    if conn.dialect.name != "postgresql":
        return column.in_(values)
    from sqlalchemy.dialects.postgresql import ARRAY

    return column == sa.any_(sa.bindparam(None, values, type_=ARRAY(column.type)))


def any_of(dialect: str, column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
    """`one_of` for a statement built once per dialect (the hot path's): run it with the list
    of values under `name`. Building a statement costs the client about as much as running it."""
    if dialect != "postgresql":
        return column.in_(sa.bindparam(name, expanding=True))
    from sqlalchemy.dialects.postgresql import ARRAY

    return column == sa.any_(sa.bindparam(name, type_=ARRAY(column.type)))


# --- several statements in one round trip -----------------------------------------------------

_PARAM = re.compile(r"%\((\w+)\)([sbt])")


def _prefixed(prefix: str, match: re.Match[str]) -> str:
    return f"%({prefix}{match[1]}){match[2]}"


def together(conn: sa.Connection, statements: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """PostgreSQL: run data-modifying statements (the driver's SQL, `%(name)s` parameters) as
    one — each a WITH query of a SELECT that reads none of them — in one round trip. Each runs
    exactly once and to completion, all in one snapshot and in no set order: for statements
    that do not depend on one another's effects (different tables)."""
    parts = list(statements)
    if len(parts) == 1:
        conn.exec_driver_sql(*parts[0])
        return
    queries: list[str] = []
    params: dict[str, Any] = {}
    for i, (sql, values) in enumerate(parts):
        queries.append(f"q{i} AS ({_PARAM.sub(functools.partial(_prefixed, f'p{i}_'), sql)})")
        params.update({f"p{i}_{name}": value for name, value in values.items()})
    if queries:
        conn.exec_driver_sql(f"WITH {', '.join(queries)} SELECT", params)


# --- the database's clock -------------------------------------------------------------------------
# Due times are compared with the database's clock, never a worker's: a worker whose clock is
# behind must not deliver late. SQLite keeps UTC text; '%f' gives milliseconds.


def now(conn: sa.Connection) -> sa.ColumnElement[Any]:
    """The database's current time, as a SQL expression."""
    return now_in(conn.dialect.name)


def now_in(dialect: str) -> sa.ColumnElement[Any]:
    """`now()` by the dialect's name (for statements built once)."""
    if dialect == "sqlite":
        return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now")
    return sa.func.now()


def current_time(conn: sa.Connection) -> datetime:
    """The database's current time (what `created_at` defaults to), aware, in UTC."""
    from humanglue_cli.core.models import UTCDateTime

    query = sa.select(sa.type_coerce(now(conn), UTCDateTime()))
    value: datetime = conn.execute(query).scalar_one()
    return value


def now_plus(conn: sa.Connection, delay: timedelta) -> sa.ColumnElement[Any]:
    """The database's current time plus `delay`, as a SQL expression."""
    seconds = delay.total_seconds()
    if conn.dialect.name == "sqlite":
        return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now", f"{seconds:+.3f} seconds")
    return sa.func.now() + sa.literal(delay, sa.Interval())
