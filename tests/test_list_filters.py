"""`notifications list` with its filters combined: the right rows on both backends, and on
PostgreSQL the course's index (migration 0012) serves the people's role.

The course filter and `ix_notifications_user_course` are one expression (`models.course_of`);
under row-level security PostgreSQL uses it as an index condition only because its function
is LEAKPROOF. Before, `list --unread --type review --course` walked the person's rows.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from humanglue_cli.core import access, migrate
from humanglue_cli.core.db import create_engine, get_engine
from humanglue_cli.core.store import notifications as inbox
from tests.helpers import Site, email, new_id

POSTGRES = pytest.mark.parametrize("empty_db", ["postgres"], indirect=True)


@pytest.fixture
def site(site: Site) -> Iterator[Site]:
    """The school; afterwards the CLI's pooled connections to it are closed."""
    yield site
    get_engine(site.url).dispose()


def fill(site: Site) -> list[dict[str, Any]]:
    """Ada's notifications in every combination of type, course and read state, one second
    apart, and a few whose `data` holds no course (none, null, a number, not an object)."""
    course, other = site.people["course"], site.people["other_course"]
    datas: list[Any] = [
        {"course_id": course},
        {"course_id": other},
        {},
        {"course_id": None},
        {"course_id": 7},
        [course],
    ]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = []
    for n, (kind, data, read) in enumerate(
        itertools.product(("review", "payment", "enrollment"), datas, (False, True))
    ):
        for copy in range(2):
            created = start + timedelta(seconds=2 * n + copy)
            rows.append(
                {
                    "id": new_id(),
                    "user_id": site.people["ada"],
                    "type": kind,
                    "title": f"{kind} {n}.{copy}",
                    "message": "m",
                    "data": data,
                    "read_at": created + timedelta(hours=1) if read else None,
                    "created_at": created,
                }
            )
    rows.append({**rows[0], "id": new_id(), "user_id": site.people["bob"], "title": "bob's"})
    with site.engine.begin() as conn:
        conn.execute(sa.insert(inbox.notifications), rows)
    return [r for r in rows if r["user_id"] == site.people["ada"]]


def expected(rows: list[dict[str, Any]], f: inbox.Filters) -> list[str]:
    """The titles `f` selects, newest first, by Python's reading of the rows."""
    chosen = [
        r
        for r in rows
        if (f.read is None or (r["read_at"] is not None) == f.read)
        and (not f.types or r["type"] in f.types)
        and (
            not f.course_id
            or (isinstance(r["data"], dict) and r["data"].get("course_id") == f.course_id)
        )
    ]
    return [r["title"] for r in sorted(chosen, key=lambda r: r["created_at"], reverse=True)]


def test_every_combination_of_filters_selects_the_right_rows(site: Site) -> None:
    # Given ada's notifications of three types, two courses and none, read and unread
    rows = fill(site)
    ada = site.people["ada"]
    for read, types, course in itertools.product(
        (None, False, True),
        ((), ("review",), ("review", "payment")),
        (None, site.people["course"], site.people["other_course"]),
    ):
        f = inbox.Filters(read=read, types=types, course_id=course)
        want = expected(rows, f)
        # When they are listed three at a time, through the cursors, and counted
        got: list[str] = []
        cursor = None
        with site.engine.connect() as conn:
            while True:
                page = inbox.list_page(conn, ada, f, 3, cursor)
                got += [n.title for n in page.items]
                if not (cursor := page.next_cursor):
                    break
            counted = inbox.count_matching(conn, ada, f)
        # Then each combination gives exactly its rows, newest first
        assert got == want, f
        assert counted == len(want), f
    # And through the CLI, as ada (on PostgreSQL her role, under row-level security)
    args = ["--unread", "--type", "review", "--course", site.people["course"], "--json"]
    out = json.loads(site.hg("notifications", "list", *args, user=email("ada")).stdout)
    combined = inbox.Filters(read=False, types=("review",), course_id=site.people["course"])
    assert [n["title"] for n in out["items"]] == expected(rows, combined)
    assert len(out["items"]) == 2


def plan(url: str, person: str, filters: inbox.Filters) -> str:
    """EXPLAIN of the statement `list_page` sends, run as the people's role acting as
    `person`, with the parameters it binds: what the CLI's query costs the database."""
    seen: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            roles = access.roles(conn)
            assert roles is not None
            conn.rollback()
            sa.event.listen(conn, "before_cursor_execute", capture)
            with conn.begin():
                access.enter(conn, roles.people, person)
                inbox.list_page(conn, person, filters, 20)
            sa.event.remove(conn, "before_cursor_execute", capture)
            statement, parameters = seen[-1]
            with conn.begin():
                access.enter(conn, roles.people, person)
                lines = conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars()
                return "\n".join(lines)
    finally:
        engine.dispose()


@POSTGRES
def test_the_course_filter_reads_the_course_index_as_the_people_role(empty_db: str) -> None:
    # Given one instructor's 200,000 notifications about 100 courses, over a year
    engine = create_engine(empty_db, create=True)
    migrate.upgrade(engine)
    teacher = "00000001-0000-4000-8000-000000000001"
    course = "00000003-0000-4000-8000-000000000051"
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))  # no triggers
        conn.execute(
            sa.text(
                "INSERT INTO profiles (id, email, full_name, role) "
                "VALUES (:t, 'teacher1@example.edu', 'Teacher', 'instructor')"
            ),
            {"t": teacher},
        )
        conn.execute(
            sa.text(
                "INSERT INTO notifications (user_id, type, title, message, data, read_at, "
                "created_at) SELECT :t, (ARRAY['review', 'payment', 'enrollment'])[g % 3 + 1], "
                "'n', 'm', jsonb_build_object('course_id', "
                "'00000003-0000-4000-8000-0000000000' || lpad((g % 100)::text, 2, '0')), "
                "CASE WHEN g % 10 >= 3 THEN now() END, "
                "now() - (200000 - g) * interval '150 seconds' "
                "FROM generate_series(1, 200000) g"
            ),
            {"t": teacher},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE notifications"))
    engine.dispose()
    # When the CLI's statements for --course, alone and with --unread --type, are explained
    alone = plan(empty_db, teacher, inbox.Filters(course_id=course))
    combined = plan(
        empty_db, teacher, inbox.Filters(read=False, types=("review",), course_id=course)
    )
    # Then both walk the person's rows of that course in the index, newest first
    for explained in (alone, combined):
        assert "Index Scan Backward using ix_notifications_user_course" in explained, explained
        assert "hg_jsonb_text(data, 'course_id'::text) =" in explained.split("Index Cond:")[1]
        assert "Seq Scan" not in explained and "Sort" not in explained, explained
