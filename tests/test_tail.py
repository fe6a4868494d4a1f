"""`humanglue notifications tail` as a real process: backlog, live, late commits, signals,
outages (through a TCP proxy the test controls, never by stopping the shared server)."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from humanglue_cli.core import pipeline
from tests.helpers import CLI, Site, TcpProxy, email, new_id, wait_until


class Tail:
    """A running `humanglue notifications tail --json …`; its lines arrive in a queue."""

    COMMAND: tuple[str, ...] = ("notifications", "tail", "--json")

    def __init__(
        self, site: Site, running: list[Tail], *args: str, user: str = "ada", **env: str
    ) -> None:
        self.proc = subprocess.Popen(
            [CLI, *self.COMMAND, *args],
            env=site.env(email(user), **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        self.pumps = [
            threading.Thread(target=self._pump, args=args, daemon=True)
            for args in ((self.proc.stdout, self.lines.put), (self.proc.stderr, self.errors.append))
        ]
        for pump in self.pumps:
            pump.start()
        running.append(self)  # killed after the test whatever happens

    def ready(self) -> Tail:
        """Wait until it has read its start: from then on every arrival is delivered."""
        wait_until(lambda: self.said("following"), timeout=20)
        return self

    @staticmethod
    def _pump(stream: Any, put: Any) -> None:
        for line in stream:
            put(line)

    def next(self, timeout: float = 20) -> dict[str, Any]:
        try:
            return json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s; stderr: {self.errors}") from None

    def nothing_more(self, within: float) -> None:
        with pytest.raises(queue.Empty):
            extra = self.lines.get(timeout=within)
            raise AssertionError(f"unexpected line: {extra}")

    def said(self, text: str) -> bool:
        return any(text in line for line in self.errors)

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"tail did not stop on signal {sig}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pump in self.pumps:
            pump.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for t in started:
        t.close()


def notify_ada(site: Site, count: int = 1) -> None:
    for _ in range(count):
        site.enroll()
    pipeline.drain(site.engine)


class Reads:
    """Runtime.read's way, counted: a read-only transaction in one snapshot (REPEATABLE READ
    on PostgreSQL)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.count = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[sa.Connection]:
        self.count += 1
        with self.site.engine.connect() as conn:
            if self.site.backend == "postgres":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn


def ada_ids(site: Site) -> list[str]:
    """Ada's notification ids, oldest first."""
    rows = site.sql(
        "SELECT id FROM notifications WHERE user_id = :u ORDER BY created_at, id",
        u=site.people["ada"],
    )
    return [str(r.id) for r in rows]


def insert_late(site: Site, seconds: int) -> str:
    """A row written with a created_at in the past, as a transaction committing late leaves."""
    ident = new_id()
    stamp = (
        f"now() - interval '{seconds} seconds'"
        if site.backend == "postgres"
        else f"datetime('now', '-{seconds} seconds')"
    )
    site.sql(
        "INSERT INTO notifications (id, user_id, type, title, message, created_at) "
        f"VALUES (:i, :u, 'review', 'late', 'm', {stamp})",
        i=ident,
        u=site.people["ada"],
    )
    return ident


def test_backlog_oldest_first_then_live(site: Site, tails: list[Tail]) -> None:
    notify_ada(site, 5)
    tail = Tail(site, tails, "-n", "3")
    backlog = [tail.next()["id"] for _ in range(3)]
    assert backlog == ada_ids(site)[-3:]  # the newest three, oldest first; the rest are not
    notify_ada(site)  # arrives while it runs
    live = tail.next()
    assert live["id"] == ada_ids(site)[-1] and live["type"] == "enrollment"
    assert set(live) >= {"id", "user_id", "type", "title", "message", "data", "read"}
    tail.nothing_more(within=0.6)
    assert tail.stop() == 0
    assert tail.said("Ctrl-C") and not tail.said("Traceback")


def test_a_late_committed_row_is_delivered_exactly_once(site: Site, tails: list[Tail]) -> None:
    tail = Tail(site, tails, "-n", "0").ready()
    notify_ada(site)
    first = tail.next()  # it is polling now
    late = insert_late(site, 5)  # older than what it has already delivered
    assert tail.next()["id"] == late
    notify_ada(site)
    assert tail.next()["id"] == ada_ids(site)[-1]
    tail.nothing_more(within=1.0)  # several polls, each re-reading the look-back window
    assert tail.stop(signal.SIGTERM) == 0
    assert first["id"] != late


def test_a_transaction_that_commits_late_is_not_skipped(pg_site: Site, tails: list[Tail]) -> None:
    """PostgreSQL's created_at is its transaction's start: commit order is not created_at order."""
    site = pg_site
    tail = Tail(site, tails, "-n", "0").ready()
    notify_ada(site)
    tail.next()
    slow_id = new_id()
    with site.engine.connect() as slow:
        with slow.begin():
            slow.execute(
                sa.text(
                    "INSERT INTO notifications (id, user_id, type, title, message) "
                    "VALUES (:i, :u, 'review', 'slow', 'm')"
                ),
                {"i": slow_id, "u": site.people["ada"]},
            )
            time.sleep(0.3)
            notify_ada(site)  # commits first, with a later created_at
            quick = tail.next()
        assert tail.next()["id"] == slow_id
    assert quick["id"] != slow_id
    tail.nothing_more(within=0.8)
    assert tail.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_end_it_with_exit_0(site: Site, tails: list[Tail], sig: int) -> None:
    notify_ada(site, 2)
    tail = Tail(site, tails)
    tail.next()
    tail.next()
    assert tail.stop(sig) == 0


def test_no_follow_exits_after_the_backlog(site: Site) -> None:
    notify_ada(site, 3)
    proc = site.hg("notifications", "tail", "-n", "2", "--no-follow", "--json", user=email("ada"))
    ids = [json.loads(line)["id"] for line in proc.stdout.splitlines()]
    assert ids == ada_ids(site)[-2:]
    plain = site.hg("notifications", "tail", "--no-follow", "--type", "review", user=email("ada"))
    assert plain.stdout == "" and plain.returncode == 0


def test_plain_lines_into_a_pipe(site: Site) -> None:
    notify_ada(site, 2)
    proc = site.hg("notifications", "tail", "--no-follow", user=email("ada"))
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ada_ids(site)
    assert "\x1b" not in proc.stdout and "following" not in proc.stdout


def test_outage_is_waited_out_and_caught_up(pg_site: Site, tails: list[Tail]) -> None:
    site = pg_site
    proxy = TcpProxy("127.0.0.1", sa.make_url(site.url).port or 5432)
    proxy.start()
    try:
        url = sa.make_url(site.url).set(host="127.0.0.1", port=proxy.port)
        tail = Tail(
            site, tails, "-n", "0", HUMANGLUE_DATABASE_URL=url.render_as_string(False)
        ).ready()
        notify_ada(site)
        tail.next()
        proxy.cut()
        wait_until(lambda: tail.said("database unavailable"), timeout=20)
        notify_ada(site, 2)  # while it cannot read
        assert tail.proc.poll() is None, "it retries rather than exiting"
        proxy.start()
        caught_up = [tail.next(timeout=30)["id"] for _ in range(2)]
        assert caught_up == ada_ids(site)[-2:]
        tail.nothing_more(within=0.6)
        assert tail.said("reachable again")
        assert tail.said("caught up: 2 notifications arrived meanwhile")
        assert tail.stop() == 0
    finally:
        proxy.cut()


def test_unreachable_at_start_is_retried_but_no_follow_is_exit_5(
    pg_site: Site, tails: list[Tail]
) -> None:
    nowhere = "postgresql://postgres@127.0.0.1:1/none"
    tail = Tail(pg_site, tails, HUMANGLUE_DATABASE_URL=nowhere)
    wait_until(
        lambda: tail.said("database unavailable") and tail.said("retrying every"), timeout=20
    )
    assert tail.proc.poll() is None
    assert tail.stop() == 0
    once = pg_site.hg(
        "notifications",
        "tail",
        "--no-follow",
        user=email("ada"),
        check=False,
        HUMANGLUE_DATABASE_URL=nowhere,
    )
    assert once.returncode == 5 and "Traceback" not in once.stderr


# --- commit order, resuming, bounded runs (the live issue) -------------------------------------


def test_a_row_stamped_a_minute_ago_that_commits_now_is_delivered(
    pg_site: Site, tails: list[Tail]
) -> None:
    """No look-back window: a transaction whose rows carry a created_at 40 s old, committed
    while the tail has moved on, is delivered once; an open transaction elsewhere holds back
    no other row meanwhile."""
    site = pg_site
    tail = Tail(site, tails, "-n", "0").ready()
    late_id = new_id()
    with site.engine.connect() as slow:
        with slow.begin():
            slow.execute(
                sa.text(
                    "INSERT INTO notifications (id, user_id, type, title, message, created_at) "
                    "VALUES (:i, :u, 'review', 'stamped 40 s ago', 'm', now() - interval '40s')"
                ),
                {"i": late_id, "u": site.people["ada"]},
            )
            for _ in range(3):  # others commit and are delivered while it stays open
                notify_ada(site)
                assert tail.next(timeout=10)["id"] != late_id
        assert tail.next()["id"] == late_id
    tail.nothing_more(within=0.8)


def test_two_workers_committing_side_by_side_lose_and_double_nothing(
    pg_site: Site, tails: list[Tail]
) -> None:
    site = pg_site
    tail = Tail(site, tails, "-n", "0").ready()
    site.enroll_many(60)
    drains = [threading.Thread(target=pipeline.drain, args=(site.engine,)) for _ in range(2)]
    for d in drains:
        d.start()
    for d in drains:
        d.join()
    expected = set(ada_ids(site))
    got = [tail.next()["id"] for _ in range(len(expected))]
    assert len(got) == len(set(got)) and set(got) == expected
    tail.nothing_more(within=0.8)


def test_a_cursor_file_resumes_exactly_where_it_stopped(
    site: Site, tails: list[Tail], tmp_path: Any
) -> None:
    cursor = tmp_path / "tail.cursor"
    notify_ada(site, 3)
    skipped = ada_ids(site)[0]  # not in the backlog of two
    first = Tail(site, tails, "-n", "2", "--cursor-file", str(cursor), "--max-count", "3").ready()
    shown = [first.next()["id"] for _ in range(2)]  # the backlog
    assert shown == ada_ids(site)[-2:]
    notify_ada(site)
    shown.append(first.next()["id"])
    assert first.proc.wait(timeout=20) == 0  # --max-count reached
    assert cursor.stat().st_mode & 0o077 == 0
    notify_ada(site, 2)  # while no tail runs
    insert_late(site, 30)  # and one whose created_at is older than everything shown
    again = Tail(site, tails, "-n", "5", "--cursor-file", str(cursor)).ready()
    resumed = {again.next()["id"] for _ in range(3)}
    assert resumed == set(ada_ids(site)) - set(shown) - {skipped}
    again.nothing_more(within=0.8)  # -n is ignored when resuming
    notify_ada(site)
    assert again.next()["id"] == ada_ids(site)[-1]
    assert again.stop() == 0
    # A third run finds nothing it has not printed.
    third = site.hg(
        "notifications",
        "tail",
        "--json",
        "--no-follow",
        "--cursor-file",
        str(cursor),
        user=email("ada"),
    )
    assert third.stdout == ""


def test_since_after_idle_timeout_and_follow_flags(site: Site, tails: list[Tail]) -> None:
    notify_ada(site, 3)
    ids = ada_ids(site)
    after = site.hg(
        "notifications", "tail", "--json", "--no-follow", "--after", ids[0][:8], user=email("ada")
    )
    assert [json.loads(line)["id"] for line in after.stdout.splitlines()] == ids[1:]
    since = site.hg(
        "notifications",
        "tail",
        "--json",
        "-f",
        "--since",
        "1h",
        "--idle-timeout",
        "1s",
        user=email("ada"),
    )
    assert [json.loads(line)["id"] for line in since.stdout.splitlines()] == ids
    assert "following" in since.stderr
    for bad in (
        ["--max-count", "0"],
        ["--idle-timeout", "0s"],
        ["--since", "1h", "--after", ids[0]],
    ):
        proc = site.hg("notifications", "tail", *bad, user=email("ada"), check=False)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    unknown = site.hg(
        "notifications", "tail", "--after", new_id(), "--no-follow", user=email("ada"), check=False
    )
    assert unknown.returncode == 3


def test_a_cursor_file_where_none_can_be_written_is_exit_2_before_printing(site: Site) -> None:
    notify_ada(site)
    proc = site.hg(
        "notifications",
        "tail",
        "--no-follow",
        "--cursor-file",
        "/nonexistent/hg/tail.cursor",
        user=email("ada"),
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("humanglue: --cursor-file") and len(proc.stderr.splitlines()) == 1


def test_a_cursor_file_that_is_no_cursor_is_exit_2(site: Site, tmp_path: Any) -> None:
    cursor = tmp_path / "bad.cursor"
    cursor.write_text("not a cursor\n")
    proc = site.hg(
        "notifications",
        "tail",
        "--no-follow",
        "--cursor-file",
        str(cursor),
        user=email("ada"),
        check=False,
    )
    assert proc.returncode == 2 and "not a valid tail cursor" in proc.stderr
    assert cursor.read_text() == "not a cursor\n"


def test_on_postgresql_a_commit_wakes_the_tail(pg_site: Site, tails: list[Tail]) -> None:
    """Pushed, not polled: the tail listens (a signal with no content), and each plain-SQL
    insert reaches it well before its fallback timer (5 s) would have read it."""
    site = pg_site
    tail = Tail(site, tails, "-n", "0").ready()
    listening = site.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND query = 'LISTEN hg_notifications'"
    )
    assert listening[0][0] == 1
    for _ in range(3):
        tail.nothing_more(within=0.3)
        begun = time.monotonic()
        ident = insert_late(site, 0)
        assert tail.next(timeout=10)["id"] == ident
        assert time.monotonic() - begun < 2.0
    # Each wake-up is one statement, in autocommit, on a connection of the tail's own (mark
    # and rows in one snapshot): not a transaction of five round trips on a pooled one.
    polls = site.sql(
        "SELECT state, query FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND query LIKE '%pg_current_snapshot() AS s%'"
    )
    assert [(r.state, "LATERAL" in r.query) for r in polls] == [("idle", True)]


def test_bell_rings_for_high_priority_only(site: Site, tails: list[Tail]) -> None:
    tail = Tail(site, tails, "-n", "0", "--bell").ready()
    for priority in ("normal", "high"):
        site.sql(
            "INSERT INTO notifications (id, user_id, type, title, message, priority) "
            "VALUES (:i, :u, 'system_announcement', :p, 'm', :p)",
            i=new_id(),
            u=site.people["ada"],
            p=priority,
        )
        assert tail.next()["priority"] == priority
    assert tail.stop() == 0  # its stderr ends: a bell is no line of its own
    for pump in tail.pumps:
        pump.join(timeout=10)
    assert sum(line.count("\a") for line in tail.errors) == 1


def test_a_position_delivering_from_an_older_one_leaves_the_newer_as_it_was() -> None:
    """Positions share the list of delivered ids (appending is O(1)); each still says only
    what it delivered, and encodes it."""
    from datetime import UTC, datetime

    from humanglue_cli.core.domain import Notification
    from humanglue_cli.core.store.visibility import Mark, Position

    def note(ident: str) -> Notification:
        now = datetime.now(UTC)
        return Notification(ident, "u", "review", "t", "m", {}, None, "normal", None, now)

    ids = [new_id() for _ in range(4)]
    start = Position(Mark(10, (7,)), done=(ids[0],))  # as decoded from a cursor
    one = start.after_delivering(note(ids[1]), new=True)
    two = one.after_delivering(note(ids[2]), new=True)
    other = one.after_delivering(note(ids[3]), new=True)  # from the older one again
    assert list(start.done) == ids[:1]
    assert list(one.done) == ids[:2]
    assert list(two.done) == ids[:3]
    assert list(other.done) == [*ids[:2], ids[3]]
    assert list(Position.decode(two.encode()).done) == ids[:3]
    assert two.done[-1] == ids[2] and len(two.done) == 3
    assert one.after_delivering(note(ids[3]), new=False).done == one.done


def test_a_start_in_the_past_is_read_a_page_at_a_time_and_misses_nothing_meanwhile(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--since` (or `--after`, or a cursor mid-way) reads its rows a page at a time, so that a
    start years back neither holds them all nor waits for all before the first line. Rows that
    commit between two pages — one stamped an hour back, before every row of the pages yet to
    come — are not in those pages (they were not visible at the start's mark): they come with
    what became visible since, after the last page, each once."""
    from humanglue_cli.core import tail as following
    from humanglue_cli.core.store.notifications import Filters

    monkeypatch.setattr(following, "PAGE", 3)
    notify_ada(site, 8)  # ada: 8 notifications, pages of 3, 3 and 2
    before = ada_ids(site)
    reads = Reads(site)
    start = following.Start(since=datetime.now(UTC) - timedelta(days=1))
    arrivals = following.follow(
        reads, site.people["ada"], Filters(), threading.Event(), start=start, live=False
    )
    got: list[str] = []
    late: list[str] = []
    for n, _position in arrivals:
        got.append(n.id)
        if len(got) == 3:  # between the first page and the second
            late += [insert_late(site, 0), insert_late(site, 3600)]
    assert got[:6] == before[:6]  # the hour-old row would have come first in any page
    assert sorted(got[6:]) == sorted(before[6:] + late) and len(got) == len(set(got)) == 10
    assert reads.count == 3  # three pages; the last, short, with what became visible since


def test_a_tail_since_long_ago_prints_thousands_once_in_order(site: Site) -> None:
    """Across the pages of a start in the past, as processes: `--since`, then a cursor file
    taken in the middle of them."""
    many = 2_500
    rows = [
        {
            "i": new_id(),
            "u": site.people["ada"],
            "t": f"n{k}",
            "s": f"2026-01-01 00:00:{k % 60:02d}",
        }
        for k in range(many)
    ]
    with site.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notifications (id, user_id, type, title, message, created_at) "
                "VALUES (:i, :u, 'review', :t, 'm', :s)"
            ),
            rows,
        )
    ids = ada_ids(site)
    assert len(ids) == many
    proc = site.hg(
        "notifications", "tail", "--json", "--no-follow", "--since", "2025-12-31",
        user=email("ada"),
    )  # fmt: skip
    assert [json.loads(line)["id"] for line in proc.stdout.splitlines()] == ids
    cursor = site.home / "tail.cursor"
    first = site.hg(
        "notifications", "tail", "--json", "--since", "2025-12-31", "--max-count", "1500",
        "--cursor-file", str(cursor), user=email("ada"),
    )  # fmt: skip
    rest = site.hg(
        "notifications", "tail", "--json", "--no-follow", "--cursor-file", str(cursor),
        user=email("ada"),
    )  # fmt: skip
    shown = [json.loads(line)["id"] for line in (first.stdout + rest.stdout).splitlines()]
    assert shown == ids
