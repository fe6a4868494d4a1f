"""What a database error means (core/db.classify), decided from real errors of real servers:
the SQLSTATE on PostgreSQL, the result code on SQLite, never the words of a message."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from humanglue_cli.core import db
from humanglue_cli.core.db import Fault, classify, create_engine
from humanglue_cli.core.errors import SchemaError, Unavailable
from tests.helpers import Site, free_port


def error_of(work: Callable[[], object]) -> BaseException:
    try:
        work()
    except Exception as error:
        return error
    raise AssertionError("no error")


def run(engine: sa.Engine, *statements: str) -> Callable[[], object]:
    def work() -> None:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    return work


def test_postgres_faults(pg_site: Site) -> None:
    engine = pg_site.engine
    refused = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    missing_db = create_engine(
        sa.make_url(pg_site.url).set(database="no_such_db_hg").render_as_string()
    )
    assert classify(error_of(refused.connect)) is Fault.OUTAGE
    assert classify(error_of(missing_db.connect)) is Fault.OUTAGE
    assert classify(error_of(run(engine, "SELECT * FROM no_such_table"))) is Fault.SCHEMA
    assert classify(error_of(run(engine, "SELECT no_such_column FROM profiles"))) is Fault.SCHEMA
    timeout = run(engine, "SET LOCAL statement_timeout = '50ms'", "SELECT pg_sleep(1)")
    assert classify(error_of(timeout)) is Fault.TIMEOUT
    duplicate = "INSERT INTO profiles (id, email, role) SELECT id, email, role FROM profiles"
    assert classify(error_of(run(engine, duplicate))) is Fault.WORK
    with engine.connect() as holder:
        holder.exec_driver_sql("LOCK TABLE courses IN ACCESS EXCLUSIVE MODE")
        waits = run(engine, "SET LOCAL lock_timeout = '50ms'", "SELECT * FROM courses")
        assert classify(error_of(waits)) is Fault.LOCKED
        holder.rollback()


def test_a_real_deadlock_is_a_conflict(pg_site: Site) -> None:
    engine = pg_site.engine
    a, b = pg_site.people["ada"], pg_site.people["bob"]
    first_locked, second_locked = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def take(mine: str, theirs: str, mine_done: threading.Event, wait: threading.Event) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.text("SELECT 1 FROM profiles WHERE id = :i FOR UPDATE"), {"i": mine}
                )
                mine_done.set()
                wait.wait(5)
                conn.execute(
                    sa.text("SELECT 1 FROM profiles WHERE id = :i FOR UPDATE"), {"i": theirs}
                )
        except Exception as error:
            errors.append(error)

    threads = [
        threading.Thread(target=take, args=(a, b, first_locked, second_locked)),
        threading.Thread(target=take, args=(b, a, second_locked, first_locked)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(errors) == 1 and classify(errors[0]) is Fault.CONFLICT


def test_sqlite_faults(tmp_path: Path) -> None:
    path = tmp_path / "hg.db"
    engine = create_engine(f"sqlite:///{path}", create=True)
    run(engine, "CREATE TABLE t (id INTEGER PRIMARY KEY)")()
    assert classify(error_of(run(engine, "SELECT * FROM nowhere"))) is Fault.SCHEMA
    assert (
        classify(error_of(run(engine, "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)")))
        is Fault.WORK
    )
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        impatient = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
        busy = error_of(run(impatient, "INSERT INTO t VALUES (2)"))
        assert classify(busy) is Fault.LOCKED
        impatient.dispose()
    finally:
        holder.rollback()
        holder.close()
    (tmp_path / "a-directory.db").mkdir()
    cannot_open = sa.create_engine(f"sqlite:///{tmp_path / 'a-directory.db'}")
    assert classify(error_of(cannot_open.connect)) is Fault.OUTAGE
    engine.dispose()


def test_our_own_errors_and_anything_else() -> None:
    assert classify(Unavailable("x")) is Fault.OUTAGE
    assert classify(SchemaError("x")) is Fault.SCHEMA
    assert classify(ValueError("connection refused")) is Fault.WORK  # words decide nothing
    assert classify(KeyError("x")) is Fault.WORK


def test_a_missing_sqlite_file_is_never_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "typo.db"
    with pytest.raises(SchemaError, match="no database at"):
        create_engine(f"sqlite:///{path}")
    assert not path.parent.exists()


def test_a_stall_cuts_off_the_engine_until_the_server_answers(pg_site: Site) -> None:
    """`sever` (a watchdog noticed a stall) fails a statement in flight and every new
    connection at once, saying why, until the server answers again."""
    engine = create_engine(pg_site.url)
    try:
        with engine.connect() as conn:
            in_flight = threading.Timer(0.3, db.sever, args=(engine,))
            in_flight.start()
            began = time.monotonic()
            with pytest.raises(sa.exc.OperationalError) as cut:
                conn.exec_driver_sql("SELECT pg_sleep(5)")
            assert time.monotonic() - began < 2 and classify(cut.value) is Fault.OUTAGE
        assert db.stalled(engine)
        with pytest.raises(Unavailable, match=db.STALLED), db.wrap_errors(engine):
            run(engine, "SELECT 1")()  # no new connection, and no wait for one
        db.answered(engine)
        run(engine, "SELECT 1")()
    finally:
        engine.dispose()
