"""The embedded default is private: what humanglue creates is its owner's only (0600/0700),
whatever the umask; what exists already is left as it is, and an exposed default is named."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from humanglue_cli.core.db import create_engine
from tests.helpers import CLI, new_id

DEMO_PATH = re.compile(r"demo database: (?P<path>\S+\.db)")
EXPOSED = "may be read by other users"


@pytest.fixture(autouse=True)
def _umask_022() -> Iterator[None]:
    """The usual umask, which alone would leave files 0644 and directories 0755."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def hg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`humanglue ARGS` with the test's data dir and no database URL: the default location."""
    env = {**os.environ, "NO_COLOR": "1", "XDG_STATE_HOME": str(tmp_path / "state")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    return subprocess.run(
        [CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_db_upgrade_creates_the_default_database_private(tmp_path: Path) -> None:
    # When `db upgrade` creates the default database under umask 022
    proc = hg(tmp_path, "db", "upgrade")
    assert proc.returncode == 0, proc.stderr
    # Then its directory is 0700 and the file 0600; the parent it had to make is a plain one
    folder = tmp_path / "data" / "humanglue"
    db_file = folder / "humanglue.db"
    assert (mode(folder), mode(db_file)) == (0o700, 0o600)
    assert mode(tmp_path / "data") == 0o755
    assert EXPOSED not in proc.stderr
    # and the side files of a write are no more open than the file
    engine = create_engine(f"sqlite:///{db_file}")
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO profiles (id, email, role) VALUES (:i, 'a@example.edu', 'student')"
                ),
                {"i": new_id()},
            )
        # the pool keeps the connection open, and with it the -wal and -shm files
        assert mode(Path(f"{db_file}-wal")) == 0o600
        assert mode(Path(f"{db_file}-shm")) == 0o600
    finally:
        engine.dispose()
    assert EXPOSED not in hg(tmp_path, "status").stderr


def test_a_rollback_journal_takes_the_file_mode_too(tmp_path: Path) -> None:
    db_file = tmp_path / "new" / "hg.db"
    create_engine(f"sqlite:///{db_file}", create=True).connect().close()
    assert (mode(db_file.parent), mode(db_file)) == (0o700, 0o600)
    conn = sqlite3.connect(db_file, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=PERSIST")  # the journal stays after the commit
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert mode(Path(f"{db_file}-journal")) == 0o600
    finally:
        conn.close()


def test_the_demo_database_is_private(tmp_path: Path) -> None:
    proc = hg(tmp_path, "demo", "--seconds", "1", "--speed", "4")
    assert proc.returncode == 0, proc.stderr
    found = DEMO_PATH.search(proc.stderr)
    assert found, proc.stderr
    path = Path(found["path"])
    assert path.parent == tmp_path / "data" / "humanglue"
    assert (mode(path.parent), mode(path)) == (0o700, 0o600)


def test_the_celery_app_writes_nothing_to_disk(tmp_path: Path) -> None:
    # Beat's schedule is in memory and what ran is claimed in the database (core/schedule.py).
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    subprocess.run(
        [sys.executable, "-c", "import worker.celery_app"],
        env=env,
        check=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert list(tmp_path.iterdir()) == []


def test_what_exists_is_left_as_it_is_and_a_given_url_is_not_warned_about(
    tmp_path: Path,
) -> None:
    # Given a directory of the user's, and a database file in it that is readable by all
    shared = tmp_path / "shared"
    shared.mkdir()
    old = shared / "old.db"
    sqlite3.connect(old).close()
    assert (mode(shared), mode(old)) == (0o755, 0o644)
    # When `db upgrade` runs on it, and on a new file beside it
    for db_file in (old, shared / "new.db"):
        proc = hg(tmp_path, "--database-url", f"sqlite:///{db_file}", "db", "upgrade")
        assert proc.returncode == 0, proc.stderr
        assert EXPOSED not in proc.stderr  # where a URL points is its owner's choice
    # Then the directory and the old file keep their modes; only the new file is private
    assert (mode(shared), mode(old), mode(shared / "new.db")) == (0o755, 0o644, 0o600)


def test_an_exposed_default_database_is_named_but_not_changed(tmp_path: Path) -> None:
    # Given a default database made before this version: readable by all, in an open directory
    assert hg(tmp_path, "db", "upgrade").returncode == 0
    db_file = tmp_path / "data" / "humanglue" / "humanglue.db"
    db_file.chmod(0o644)
    db_file.parent.chmod(0o755)
    # When `status` and `db upgrade` run on it
    for args in (["status"], ["db", "upgrade"], ["status", "--json"]):
        proc = hg(tmp_path, *args)
        # Then each says so in one line on stderr, naming the fix, and changes nothing
        warnings = [line for line in proc.stderr.splitlines() if EXPOSED in line]
        assert len(warnings) == 1, proc.stderr
        assert warnings[0].startswith(f"humanglue: warning: {db_file} {EXPOSED}")
        assert "(mode 0644, its directory 0755)" in warnings[0]
        assert f"`chmod 600 {db_file}`" in warnings[0]
        assert EXPOSED not in proc.stdout
    assert (mode(db_file), mode(db_file.parent)) == (0o644, 0o755)
    # and once the file is the owner's only, nothing is said
    db_file.chmod(0o600)
    assert EXPOSED not in hg(tmp_path, "status").stderr
