"""A tail whose database is gone for a minute comes back by itself and prints all it missed,
once each (issue 8) — whether the way to it is cut (connections reset, new ones refused) or
turns into a blackhole (connections kept open, not a byte answered: a stall only a heartbeat
notices, as the peer's kernel still acknowledges keepalives).

Two `tail --json` processes, each through a TCP proxy the test controls, follow a private
PostgreSQL server (tests/test_tail_restart.py: never the machine's shared one); one proxy is
cut and the other blackholed for the same minute while writers keep committing through a
direct connection — enrollments a worker turns into notifications, the platform's own plain-SQL
inserts, and a transaction that began before the outage and commits in its middle.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from humanglue_cli.core.wakeup import HEARTBEAT, STALL
from tests import test_tail, test_tail_restart
from tests.helpers import Site, TcpProxy, new_id, wait_until
from tests.test_tail import Tail, ada_ids, insert_late, notify_ada
from tests.test_tail_restart import PrivateServer

tails = test_tail.tails  # fixtures: tails killed after the test, a private server
server = test_tail_restart.server

OUTAGE = 60.0  # seconds: "a tail whose database is gone for a minute"
NOTICED_WITHIN = 15.0  # seconds from the cut to "database unavailable" on stderr
BACK_WITHIN = 10.0  # seconds from the restore to "reachable again"
EVERY = 0.5  # seconds between two writers' commits
CAUGHT_UP = re.compile(r"caught up: (\d+) notifications? arrived meanwhile")


class Writers:
    """Commits for ada through a direct connection until stopped: enrollments (turned into
    notifications by a worker's drain) and notifications inserted with plain SQL."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.stopped = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            turn = 0
            while not self.stopped.wait(EVERY):
                if turn % 2:
                    insert_late(self.site, 0)
                else:
                    notify_ada(self.site)
                turn += 1
        except BaseException as error:  # surfaced by stop()
            self.failure = error

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "a writer hung"
        if self.failure is not None:
            raise AssertionError(f"a writer failed: {self.failure!r}") from self.failure


@pytest.fixture
def proxies(server: PrivateServer) -> Iterator[dict[str, TcpProxy]]:
    made = {how: TcpProxy("127.0.0.1", server.port) for how in ("cut", "blackhole")}
    for proxy in made.values():
        proxy.start()
    try:
        yield made
    finally:
        for proxy in made.values():
            proxy.restore()
            proxy.cut()


def through(site: Site, proxy: TcpProxy) -> str:
    return sa.make_url(site.url).set(port=proxy.port).render_as_string(hide_password=False)


def said_within(
    following: dict[str, Tail], text: str, since: float, within: float
) -> dict[str, float]:
    """How long after `since` each tail said `text` on stderr; fails after `within` s."""
    when: dict[str, float] = {}
    while len(when) < len(following) and time.monotonic() < since + within:
        for how, tail in following.items():
            if how not in when and tail.said(text):
                when[how] = round(time.monotonic() - since, 1)
        time.sleep(0.05)
    late = {how: tail.errors for how, tail in following.items() if how not in when}
    assert not late, f"not said {text!r} within {within}s: {late}"
    return when


def listening(site: Site) -> int:
    rows = site.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN hg_notifications'"
        " AND client_port IS NOT NULL AND backend_type = 'client backend'"
    )
    return int(rows[0][0])


@pytest.mark.slow
def test_a_minute_without_the_database_is_caught_up_once(
    server: PrivateServer,
    proxies: dict[str, TcpProxy],
    tmp_path: Path,
    tails: list[Tail],
) -> None:
    site = Site.create(server.url, tmp_path, "postgres")
    try:
        following = {
            how: Tail(site, tails, "-n", "0", HUMANGLUE_DATABASE_URL=through(site, proxy)).ready()
            for how, proxy in proxies.items()
        }
        seen: dict[str, list[str]] = {how: [] for how in following}

        def take(count: int, timeout: float) -> None:
            for how, tail in following.items():
                seen[how] += [tail.next(timeout=timeout)["id"] for _ in range(count)]

        notify_ada(site, 2)
        take(2, timeout=10)
        wait_until(lambda: listening(site) == 2, timeout=10)  # both are pushed to, idle
        time.sleep(1.0)

        writers = Writers(site)
        # A transaction that stamps its row before the outage and commits in its middle.
        slow = site.engine.connect()
        slow_tx = slow.begin()
        slow_id = new_id()
        slow.execute(
            sa.text(
                "INSERT INTO notifications (id, user_id, type, title, message) "
                "VALUES (:i, :u, 'review', 'begun before the outage', 'm')"
            ),
            {"i": slow_id, "u": site.people["ada"]},
        )
        time.sleep(2 * EVERY)
        before = set(ada_ids(site))
        cut_at = time.monotonic()
        proxies["cut"].cut()
        proxies["blackhole"].blackhole()

        noticed = said_within(following, "database unavailable", cut_at, NOTICED_WITHIN)

        printed = {how: tail.lines.qsize() for how, tail in following.items()}
        time.sleep(OUTAGE / 2 - (time.monotonic() - cut_at))
        slow_tx.commit()  # while neither tail can read
        slow.close()
        time.sleep(OUTAGE - (time.monotonic() - cut_at))
        meanwhile = set(ada_ids(site)) - before
        for how, tail in following.items():
            assert tail.proc.poll() is None, f"{how}: it waits for the database, not exits"
            assert tail.lines.qsize() == printed[how], f"{how}: printed while unreachable"
        proxies["cut"].start()
        proxies["blackhole"].restore()
        restored_at = time.monotonic()
        back = said_within(following, "reachable again", restored_at, BACK_WITHIN)
        time.sleep(max(0.0, restored_at + 3.0 - time.monotonic()))  # commits go on meanwhile
        writers.stop()

        expected = ada_ids(site)
        assert slow_id in meanwhile and len(meanwhile) > OUTAGE / EVERY / 2
        for how, tail in following.items():
            missing = len(expected) - len(seen[how])
            seen[how] += [tail.next(timeout=30)["id"] for _ in range(missing)]
            tail.nothing_more(within=1.0)
            assert len(seen[how]) == len(set(seen[how])), f"{how}: a duplicate"
            assert sorted(seen[how]) == sorted(expected), f"{how}: a gap"
            assert tail.said("reachable again"), tail.errors
            caught_up = [int(m.group(1)) for e in tail.errors if (m := CAUGHT_UP.search(e))]
            assert len(caught_up) == 1 and caught_up[0] >= len(meanwhile), tail.errors
            assert not tail.said("Traceback"), tail.errors
            outage_lines = [e for e in tail.errors if "unavailable" in e]
            assert 1 <= len(outage_lines) <= 3, tail.errors  # one line, a reminder: no flood

        # Following again, pushed to: a commit reaches both at once, listening again.
        wait_until(lambda: listening(site) == 2, timeout=20)
        for _ in range(2):
            begun = time.monotonic()
            ident = insert_late(site, 0)
            for tail in following.values():
                assert tail.next(timeout=10)["id"] == ident
            assert time.monotonic() - begun < 2.0
        for how, tail in following.items():
            assert tail.stop() == 0, f"{how}: {tail.errors}"
            assert not tail.said("Traceback"), tail.errors
        print(f"\nunavailable said after {noticed} s; reachable again after {back} s")
        for how, tail in following.items():
            print(how, "".join(tail.errors), sep=":\n")
    finally:
        site.close()


def waiting_on_a_lock(site: Site) -> bool:
    """Whether a statement of ours waits on a lock. At least one, not exactly one: a Celery
    worker's watch and its poller probe the outbox each on a connection of its own, and both
    may be waiting by the time we look."""
    rows = site.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'humanglue'"
        " AND wait_event_type = 'Lock'"
    )
    return int(rows[0][0]) >= 1


@pytest.mark.slow
def test_a_read_stalled_in_flight_is_cut_off_but_a_slow_one_is_not(
    server: PrivateServer, tmp_path: Path, tails: list[Tail]
) -> None:
    """The stall hits while the tail's read is on the wire, not while it idles: the heartbeat
    of its listening connection notices, and the read fails rather than waiting forever. A
    read that only waits for a lock is slow, not stalled: it is left alone."""
    site = Site.create(server.url, tmp_path, "postgres")
    proxy = TcpProxy("127.0.0.1", server.port)
    proxy.start()
    try:
        tail = Tail(site, tails, "-n", "0", HUMANGLUE_DATABASE_URL=through(site, proxy)).ready()
        notify_ada(site)
        tail.next()
        held = new_id()
        with site.engine.connect() as locker:
            tx = locker.begin()
            locker.execute(sa.text("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE"))
            locker.execute(
                sa.text(
                    "INSERT INTO notifications (id, user_id, type, title, message) "
                    "VALUES (:i, :u, 'review', 'held', 'm')"
                ),
                {"i": held, "u": site.people["ada"]},
            )
            site.sql("NOTIFY hg_notifications")  # wakes it: its read waits for the lock
            wait_until(lambda: waiting_on_a_lock(site), timeout=10)
            time.sleep(HEARTBEAT + STALL + 1.0)
            assert not tail.said("unavailable"), tail.errors  # the server still answers
            cut_at = time.monotonic()
            proxy.blackhole()  # with the read on the wire
            noticed = said_within({"in flight": tail}, "database unavailable", cut_at, 10.0)
            tx.commit()  # while it cannot read
        later = insert_late(site, 0)
        proxy.restore()
        got = [tail.next(timeout=20)["id"] for _ in range(2)]
        assert sorted(got) == sorted([held, later])
        tail.nothing_more(within=1.0)
        assert tail.said("caught up: 2 notifications arrived meanwhile"), tail.errors
        assert tail.stop() == 0 and not tail.said("Traceback"), tail.errors
        print(f"\nunavailable said after {noticed} s:\n{''.join(tail.errors)}")
    finally:
        proxy.restore()
        proxy.cut()
        site.close()


def test_a_start_stalled_in_flight_is_cut_off(
    server: PrivateServer, tmp_path: Path, tails: list[Tail]
) -> None:
    """The stall hits while the tail still learns whom it acts for: the heartbeat of its
    listening connection, started before any read, notices it, and the start is tried again."""
    site = Site.create(server.url, tmp_path, "postgres")
    proxy = TcpProxy("127.0.0.1", server.port)
    proxy.start()
    try:
        with site.engine.connect() as locker:
            tx = locker.begin()
            locker.execute(sa.text("LOCK TABLE profiles IN ACCESS EXCLUSIVE MODE"))
            tail = Tail(site, tails, "-n", "1", HUMANGLUE_DATABASE_URL=through(site, proxy))
            wait_until(lambda: waiting_on_a_lock(site), timeout=10)
            cut_at = time.monotonic()
            proxy.blackhole()  # with its first read on the wire
            tx.commit()
        noticed = said_within({"start": tail}, "database unavailable", cut_at, 10.0)
        notify_ada(site)
        proxy.restore()
        assert tail.ready().next()["id"] == ada_ids(site)[-1]
        assert tail.said("reachable again") and not tail.said("Traceback"), tail.errors
        assert tail.stop() == 0, tail.errors
        print(f"\nunavailable said after {noticed} s:\n{''.join(tail.errors)}")
    finally:
        proxy.restore()
        proxy.cut()
        site.close()
