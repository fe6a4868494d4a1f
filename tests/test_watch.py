"""The workers' fast look at the outbox (core/watch.py): committed, due, recent events only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from humanglue_cli.core import pipeline
from humanglue_cli.core.watch import WINDOW, Watch
from tests.helpers import Site, new_id


@pytest.fixture
def watch(site: Site) -> Iterator[Watch]:
    found = Watch(site.engine)
    yield found
    found.close()


@pytest.fixture
def pg_watch(pg_site: Site) -> Iterator[Watch]:
    found = Watch(pg_site.engine)
    yield found
    found.close()


def enroll_in(conn: sa.Connection, site: Site) -> None:
    conn.execute(
        sa.text("INSERT INTO enrollments (id, course_id, student_id) VALUES (:i, :c, :s)"),
        {"i": new_id(), "c": site.people["course"], "s": site.people["stu"]},
    )


def test_sees_committed_due_events_only(site: Site, watch: Watch) -> None:
    assert not watch.look()  # nothing new
    site.enroll()
    assert watch.look()
    pipeline.drain(site.engine)
    assert not watch.look()  # processed: gone
    site.enroll()
    future = "now() + interval '1 hour'"
    if site.backend == "sqlite":
        future = "strftime('%Y-%m-%d %H:%M:%f', 'now', '+1 hour')"
    site.sql(f"UPDATE hg_events SET available_at = {future}")
    assert not watch.look()  # not due (a retry backing off, a lease, one set aside)


def test_an_open_transaction_is_seen_when_it_commits(pg_site: Site, pg_watch: Watch) -> None:
    assert not pg_watch.look()
    with pg_site.engine.begin() as conn:
        enroll_in(conn, pg_site)
        assert not pg_watch.look()  # not committed: not there yet
    assert pg_watch.look()


def test_a_commit_later_than_the_window_is_left_to_the_regular_probe(
    pg_site: Site, pg_watch: Watch
) -> None:
    pg_watch.look()
    with pg_site.engine.begin() as late:
        enroll_in(late, pg_site)  # its id is taken now
        pg_site.enroll()  # a newer event commits
        assert pg_watch.look()
        pipeline.drain(pg_site.engine)
        time.sleep(WINDOW + 0.1)
        assert not pg_watch.look()  # the mark moves past the late one's id
    late_id = pg_site.sql("SELECT id FROM hg_events")[0][0]
    assert not pg_watch.look() and not pg_watch.covers(late_id)  # the regular probe's to find


def test_a_broken_connection_is_replaced_at_the_next_look(site: Site, watch: Watch) -> None:
    watch.look()
    watch._conn.close()  # as a server restart would
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver says
        watch.look()
    site.enroll()
    assert watch.look()


def test_wait_returns_when_an_event_is_due(site: Site, watch: Watch) -> None:
    watch.look()
    stop = threading.Event()
    threading.Timer(0.2, site.enroll).start()
    started = time.monotonic()
    assert watch.wait(stop, timeout=5.0)
    assert time.monotonic() - started < 2.0
    pipeline.drain(site.engine)
    assert not watch.wait(stop, timeout=0.05)
