"""`notifications count` stays equal to a count of the rows, whatever changes them.

On PostgreSQL `count` sums the rows that triggers add to `hg_unread_counts` (migration 0010);
these tests change notifications by every path there is — the worker, a fan-out, the CLI, the
platform's plain SQL, a cascade, a rollback, the retention, TRUNCATE — and compare `count`
with a count of the rows each time. On SQLite `count` reads the rows; the same steps run.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from humanglue_cli.core import access, pipeline
from humanglue_cli.core.db import create_engine
from humanglue_cli.core.store import notifications
from tests.helpers import Site, new_id
from tests.test_cli_inbox import hg, hg_json, inbox_of, site  # noqa: F401  (closes pools)

PEOPLE = ("ada", "bob", "cy", "stu", "sam", "root")


def truth(site: Site, name: str) -> dict[str, int]:  # noqa: F811
    rows = site.sql(
        "SELECT type, count(*) FROM notifications WHERE user_id = :u AND read_at IS NULL "
        "GROUP BY type",
        u=site.people[name],
    )
    return {t: int(n) for t, n in rows}


def agree(site: Site) -> None:  # noqa: F811
    """`count --json` of everyone equals a count of their rows."""
    for name in PEOPLE:
        out = hg_json(site, "notifications", "count", user=name)
        assert out["by_type"] == truth(site, name), name
        assert out["unread"] == sum(truth(site, name).values()), name


def plain_insert(site: Site, name: str, kind: str = "review", age_days: int = 0) -> str:  # noqa: F811
    """A notification as the platform writes one, with plain SQL, created `age_days` ago."""
    nid = new_id()
    created = (
        f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-{age_days} days')"
        if site.backend == "sqlite"
        else f"now() - interval '{age_days} days'"
    )
    site.sql(
        "INSERT INTO notifications (id, user_id, type, title, message, created_at) "
        f"VALUES (:i, :u, :t, 'From the platform', 'plain SQL', {created})",
        i=nid,
        u=site.people[name],
        t=kind,
    )
    return nid


def test_count_follows_every_path_that_changes_notifications(site: Site) -> None:  # noqa: F811
    # Given notifications from the worker (enrollments) and a fan-out to everyone
    for _ in range(3):
        site.enroll()
    hg(site, "notifications", "send", "--all", "--title", "Hi", "--message", "m", user="root")
    pipeline.drain(site.engine)
    agree(site)
    # When the CLI marks read, unread, all read of a type, and deletes by id and by filter
    ids = [n["id"] for n in inbox_of(site)]
    hg(site, "notifications", "read", ids[0], ids[1])
    agree(site)
    hg(site, "notifications", "unread", ids[1])
    agree(site)
    hg(site, "notifications", "read-all", "--type", "system_announcement", user="bob")
    agree(site)
    hg(site, "notifications", "delete", ids[2])
    agree(site)
    hg(site, "notifications", "delete", "--unread", "--type", "enrollment", "--yes", user="bob")
    agree(site)
    # And the platform writes plain SQL: insert, mark read, change the type and the owner,
    # delete
    first = plain_insert(site, "stu")
    second = plain_insert(site, "stu", "payment")
    agree(site)
    site.sql("UPDATE notifications SET read_at = CURRENT_TIMESTAMP WHERE id = :i", i=first)
    agree(site)
    site.sql("UPDATE notifications SET type = 'course_completion' WHERE id = :i", i=second)
    agree(site)
    site.sql("UPDATE notifications SET user_id = :u WHERE id = :i", u=site.people["sam"], i=second)
    agree(site)
    site.sql("UPDATE notifications SET read_at = NULL WHERE user_id = :u", u=site.people["stu"])
    agree(site)
    site.sql("DELETE FROM notifications WHERE id = :i", i=second)
    agree(site)
    # And the retention deletes what is old
    plain_insert(site, "cy", age_days=400)
    plain_insert(site, "cy", "payment", age_days=400)
    agree(site)
    hg(site, "maintenance", "cleanup", user=None)
    assert site.count("user_id = :u", u=site.people["cy"]) == 1  # the announcement is kept
    agree(site)
    # Then a profile deleted with its notifications (the foreign key's cascade) counts nothing
    gone = site.person("gone", "student")
    hg(
        site,
        "notifications",
        "send",
        "--to",
        "gone@example.edu",
        "--title",
        "T",
        "--message",
        "m",
        user="root",
    )
    pipeline.drain(site.engine)
    assert hg_json(site, "notifications", "count", user="gone")["unread"] == 1
    site.sql("DELETE FROM profiles WHERE id = :i", i=gone)
    agree(site)


@pytest.fixture
def pg(pg_site: Site) -> Site:
    """The counts are PostgreSQL's (SQLite's `count` reads the rows): these run there only,
    rather than skipping on SQLite."""
    return pg_site


def rows_of(site: Site) -> int:  # noqa: F811
    return int(site.sql("SELECT count(*) FROM hg_unread_counts")[0][0])


def test_a_rolled_back_statement_changes_no_count(pg: Site) -> None:
    plain_insert(pg, "stu")
    with pytest.raises(sa.exc.IntegrityError), pg.engine.begin() as conn:
        conn.execute(sa.text("UPDATE notifications SET read_at = now()"))
        conn.execute(  # a notification for no one: the foreign key refuses the transaction
            sa.text(
                "INSERT INTO notifications (user_id, type, title, message) "
                "VALUES (:u, 'review', 't', 'm')"
            ),
            {"u": new_id()},
        )
    agree(pg)
    assert truth(pg, "stu") == {"review": 1}


def test_truncate_empties_the_counts(pg: Site) -> None:
    plain_insert(pg, "stu")
    pg.sql("TRUNCATE notifications")
    assert rows_of(pg) == 0
    agree(pg)


def test_folding_keeps_every_sum_in_one_row_each(pg: Site) -> None:
    # Given many statements for the same people and types, some read and deleted again
    for _ in range(5):
        plain_insert(pg, "stu")
        plain_insert(pg, "stu", "payment")
        plain_insert(pg, "sam")
    pg.sql("UPDATE notifications SET read_at = now() WHERE user_id = :u", u=pg.people["sam"])
    assert rows_of(pg) > 3
    # When they are folded
    with pg.engine.begin() as conn:
        folded = notifications.fold_unread_counts(conn)
    # Then one row is left per person and type with unread ones, and the counts are the same
    assert rows_of(pg) == 2 and folded > 0
    agree(pg)
    with pg.engine.begin() as conn:
        assert notifications.fold_unread_counts(conn) == 0


def test_a_person_reads_only_their_own_counts(pg: Site) -> None:
    plain_insert(pg, "stu")
    plain_insert(pg, "sam", "payment")
    with pg.engine.begin() as conn:
        roles = access.roles(conn)
        assert roles is not None
        access.enter(conn, roles.people, pg.people["stu"])
        seen = conn.execute(sa.text("SELECT user_id, type FROM hg_unread_counts")).all()
        assert {(str(u), t) for u, t in seen} == {(pg.people["stu"], "review")}
        with pytest.raises(sa.exc.ProgrammingError), conn.begin_nested():
            conn.execute(
                sa.text("INSERT INTO hg_unread_counts (user_id, type, n) VALUES (:u, 'review', 5)"),
                {"u": pg.people["stu"]},
            )


def test_a_fan_out_adds_its_rows_in_the_order_of_the_peoples_ids(pg: Site) -> None:
    # Given 40,000 more people, whose ids do not follow the order they were stored in (a
    # statement this big is grouped by hashing in the counts' trigger: hash order, unsorted)
    more = 40_000
    pg.sql(
        "INSERT INTO profiles (id, email, full_name, role) SELECT gen_random_uuid(), "
        "'p' || g || '@example.edu', 'P ' || g, 'student' FROM generate_series(1, :n) g",
        n=more,
    )
    # When an announcement goes to everyone, fanned out by a worker's new session (the
    # trigger's plan is made for the first statement a session runs it for)
    hg(pg, "notifications", "send", "--all", "--title", "Hi", "--message", "m", user="root")
    engine = create_engine(pg.url)
    try:
        assert pipeline.drain(engine).notified == more + len(PEOPLE)
    finally:
        engine.dispose()
    # Then its notifications and the counts' rows were written sorted by person (each index
    # that leads with user_id is filled leaf by leaf: bench/send_all.py), and the counts agree
    for table in ("notifications", "hg_unread_counts"):
        stored = [
            str(u)
            for (u,) in pg.sql(
                f"SELECT user_id FROM {table} WHERE type = 'system_announcement' ORDER BY ctid"
            )
        ]
        assert len(stored) == more + len(PEOPLE), table
        assert stored == sorted(stored), table
    # And so were their new ids (the primary key's leaves too): random, distinct, sorted
    ids = [
        str(i)
        for (i,) in pg.sql(
            "SELECT id FROM notifications WHERE type = 'system_announcement' ORDER BY ctid"
        )
    ]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) == more + len(PEOPLE)
    assert {i[14] for i in ids} == {"4"} and len({i[:8] for i in ids}) > len(ids) * 0.99
    agree(pg)
