"""A worker whose way to the database stalls — connections kept open, not a byte answered, as
behind a balancer whose backend vanished or a frozen server (the kernel still acknowledges
keepalives: only a question that must be answered notices) — says so within seconds, once,
and processes everything committed meanwhile exactly once when the way is back. A statement
that only waits for a lock is slow, not stalled: it is left alone (issue 8).

Each kind of worker reaches a private PostgreSQL server (tests/test_tail_restart.py: never the
machine's) through a TcpProxy that the test blackholes while the worker's probe is on the wire.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from humanglue_cli.core.db import HEARTBEAT, STALL
from tests import test_tail_restart
from tests.helpers import Site, TcpProxy, new_id, wait_until
from tests.test_tail_outage import through, waiting_on_a_lock
from tests.test_tail_restart import PrivateServer
from tests.test_worker_embedded import RECOVERY, Worker, all_notified, assert_exactly_once

server = test_tail_restart.server  # the fixture: a private server
NOTICED_WITHIN = HEARTBEAT + STALL + 4.0  # seconds from the stall to "database unavailable"


@pytest.mark.slow
@pytest.mark.parametrize(
    "celery", [False, pytest.param(True, marks=pytest.mark.celery)], ids=["embedded", "celery"]
)
def test_a_stalled_database_is_noticed_and_caught_up_once(
    server: PrivateServer, tmp_path: Path, request: pytest.FixtureRequest, celery: bool
) -> None:
    site = Site.create(server.url, tmp_path, "postgres")
    proxy = TcpProxy("127.0.0.1", server.port)
    proxy.start()
    env = {"HUMANGLUE_DATABASE_URL": through(site, proxy)}
    if celery:
        env["HUMANGLUE_BROKER_URL"] = request.getfixturevalue("private_redis").url
    worker = Worker(site, **env)
    try:
        worker.ready(says=" ready." if celery else None).ready()
        site.enroll()
        wait_until(lambda: all_notified(site, 1), timeout=5)
        with site.engine.connect() as locker:
            tx = locker.begin()
            locker.execute(sa.text("LOCK TABLE hg_events IN ACCESS EXCLUSIVE MODE"))
            locker.execute(
                sa.text("INSERT INTO enrollments (id, course_id, student_id) VALUES (:i, :c, :s)"),
                {"i": new_id(), "c": site.people["course"], "s": site.people["stu"]},
            )
            wait_until(lambda: waiting_on_a_lock(site), timeout=10)  # the worker's probe
            time.sleep(HEARTBEAT + STALL + 1.0)
            assert "unavailable" not in worker.log  # slow: the server still answers
            stalled_at = time.monotonic()
            proxy.blackhole()  # with the probe on the wire
            tx.commit()  # its answer is held by the blackhole
        wait_until(lambda: "database unavailable" in worker.log, timeout=NOTICED_WITHIN)
        noticed = time.monotonic() - stalled_at
        for _ in range(3):  # commits go on, and the worker keeps failing: still one line
            site.enroll_many(3)
            time.sleep(1.5)
        assert worker.proc.poll() is None
        proxy.restore()
        restored_at = time.monotonic()
        wait_until(lambda: all_notified(site, 11), timeout=RECOVERY)
        caught_up = time.monotonic() - restored_at
        log = worker.log
        assert log.count("database unavailable") == 1 and "reachable again" in log, log
        assert "Traceback" not in log, log
        assert_exactly_once(site, 11)
        assert worker.stop() == 0, log[-3000:]
        print(f"\nstall noticed after {noticed:.1f}s; caught up {caught_up:.1f}s after restore")
        print(*[line for line in log.splitlines() if "database" in line], sep="\n")
    finally:
        if worker.proc.poll() is None:
            worker.kill()
        proxy.restore()
        proxy.cut()
        site.close()
