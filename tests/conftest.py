"""Fixtures: a fresh database per test on SQLite and PostgreSQL, real Redis, a private Redis.

A missing service skips its tests on a laptop, and fails them when CI=true (dramatiq's rule).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import Site, free_port

PG_ADMIN_URL = os.environ.get(
    "HUMANGLUE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("HUMANGLUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Warnings are errors in this project's tests (STYLE.md habits)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.filterwarnings("error"), append=False)


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is not reachable, and CI=true: services must be up in CI")
    pytest.skip(f"{what} is not reachable")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's own config or database (llm's habit)."""
    for key in list(os.environ):
        if key.startswith("HUMANGLUE_") and not key.startswith("HUMANGLUE_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _new_postgres() -> tuple[str, str]:
    url = sa.make_url(PG_ADMIN_URL)
    if not _port_open(url.host or "127.0.0.1", url.port or 5432):
        _missing("PostgreSQL")
    name = f"hgtest_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False), name


def _drop_postgres(name: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        drop_orphan_roles(conn)
    admin.dispose()


def drop_orphan_roles(conn: sa.Connection) -> None:
    """Drop the roles `db upgrade` made for databases that no longer exist (roles are
    cluster-wide: a dropped test database leaves its roles behind). Logins before groups."""
    orphans = conn.execute(
        sa.text(
            "SELECT r.rolname FROM pg_roles r "
            "JOIN pg_shdescription d ON d.objoid = r.oid "
            "AND d.classoid = 'pg_authid'::regclass "
            "WHERE d.description ~ '^humanglue: .*[(]database oid [0-9]+[)]' "
            "AND NOT EXISTS (SELECT 1 FROM pg_database b WHERE b.oid::text = "
            "substring(d.description from '[(]database oid ([0-9]+)[)]')) "
            "ORDER BY r.rolcanlogin DESC, r.rolname"
        )
    ).scalars()
    for role in orphans:
        with contextlib.suppress(sa.exc.DBAPIError):  # still in use: a later run drops it
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Roles left by databases that the contract suite created and dropped."""
    url = sa.make_url(PG_ADMIN_URL)
    if not _port_open(url.host or "127.0.0.1", url.port or 5432):
        return
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            drop_orphan_roles(conn)
    finally:
        admin.dispose()


@pytest.fixture
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a new, empty database of the backend named by `request.param`."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'hg.db'}"
        return
    url, name = _new_postgres()
    try:
        yield url
    finally:
        from humanglue_cli.core.db import dispose_engines

        dispose_engines()
        _drop_postgres(name)


BACKENDS = pytest.mark.parametrize("empty_db", ["sqlite", "postgres"], indirect=True)


@pytest.fixture(params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    """A migrated database with a small school in it, on each backend."""
    request.param  # noqa: B018
    if request.param == "sqlite":
        url, name = f"sqlite:///{tmp_path / 'hg.db'}", None
    else:
        url, name = _new_postgres()
    s = Site.create(url, tmp_path, request.param)
    try:
        yield s
    finally:
        s.close()
        if name:
            from humanglue_cli.core.db import dispose_engines

            dispose_engines()
            _drop_postgres(name)


@pytest.fixture
def pg_site(tmp_path: Path) -> Iterator[Site]:
    """The school on PostgreSQL only (Celery-path tests)."""
    url, name = _new_postgres()
    s = Site.create(url, tmp_path, "postgres")
    try:
        yield s
    finally:
        s.close()
        from humanglue_cli.core.db import dispose_engines

        dispose_engines()
        _drop_postgres(name)


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis (a fresh logical database is not needed: queues are per test)."""
    host, port = "127.0.0.1", 6379
    if not _port_open(host, port):
        _missing("Redis")
    return REDIS_URL


class PrivateRedis:
    """A redis-server of the test's own, which it may stop and start (never the shared one)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """A hard stop: every queued message is gone (no persistence)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        _missing("redis-server")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
