"""A tail across a restart of its PostgreSQL server — a private one this test starts and stops
(never the machine's): it says it is reconnecting, comes back by itself, and prints everything
once, including what committed while it was away (issue 8)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_tail
from tests.helpers import Site, free_port, wait_until
from tests.test_tail import Tail, ada_ids, notify_ada

tails = test_tail.tails  # the fixture: tails started by a test are killed after it


class PrivateServer:
    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        initdb = Path(found[-1]) if found else None
        if initdb is None and shutil.which("initdb"):
            initdb = Path(shutil.which("initdb") or "")
        if initdb is None:
            if os.environ.get("CI") == "true":
                pytest.fail("initdb not found: PostgreSQL's server binaries are needed in CI")
            pytest.skip("initdb not found")
        self.bindir = initdb.parent
        self.base = Path(tempfile.mkdtemp(prefix="hg-restart-"))  # reachable by its user
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.base, "postgres")
        self.data = self.base / "data"
        self.port = free_port()
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-w",
            "-l",
            str(self.base / "log"),
            "start",
        )

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    s = PrivateServer()
    try:
        yield s
    finally:
        from humanglue_cli.core.db import dispose_engines

        dispose_engines()
        s.close()


def test_a_tail_comes_back_after_its_server_restarts(
    server: PrivateServer, tmp_path: Path, tails: list[Tail]
) -> None:
    site = Site.create(server.url, tmp_path, "postgres")
    try:
        tail = Tail(site, tails, "-n", "0").ready()
        notify_ada(site)
        first = tail.next()["id"]
        site.engine.dispose()
        server.stop()
        wait_until(lambda: tail.said("database unavailable"), timeout=30)
        assert tail.proc.poll() is None, "it waits for the database rather than exiting"
        server.start()
        notify_ada(site, 3)  # as soon as it is back: a tail may still be backing off
        got = [tail.next(timeout=30)["id"] for _ in range(3)]
        assert [first, *got] == ada_ids(site)
        tail.nothing_more(within=1.0)
        assert tail.said("reachable again")
        notify_ada(site)  # and it is woken by commits again, not only by its timer
        assert tail.next(timeout=10)["id"] == ada_ids(site)[-1]
        assert tail.stop() == 0
    finally:
        site.close()


def test_an_activity_feed_comes_back_after_its_server_restarts(
    server: PrivateServer, tmp_path: Path, tails: list[Tail]
) -> None:
    """`activity --follow` reads each wake-up in one statement on a connection of its own
    (as a tail does); when its server restarts, that connection is replaced, and what happened
    meanwhile arrives once."""
    from humanglue_cli.core import pipeline
    from tests.test_live import Activity, happen

    site = Site.create(server.url, tmp_path, "postgres")
    try:
        follower = Activity(site, tails, "-n", "0").ready()
        happen(site)
        pipeline.drain(site.engine)
        first = sorted(follower.next()["kind"] for _ in range(6))
        polls = site.sql(
            "SELECT state, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query LIKE '%pg_current_snapshot() AS s%'"
        )
        assert [(r.state, "hg_activity" in r.query and "LATERAL" in r.query) for r in polls] == [
            ("idle", True)
        ]
        site.engine.dispose()
        server.stop()
        wait_until(lambda: follower.said("database unavailable"), timeout=30)
        assert follower.proc.poll() is None, "it waits for the database rather than exiting"
        server.start()
        happen(site, "sam")
        pipeline.drain(site.engine)
        assert sorted(follower.next(timeout=30)["kind"] for _ in range(6)) == first
        follower.nothing_more(within=1.0)
        assert follower.said("reachable again") and follower.said("of activity meanwhile")
        assert follower.stop() == 0 and not follower.said("Traceback"), follower.errors
    finally:
        site.close()
