"""Finding the acting user by email: an exact email never reads every profile.

Every command names its user (`-u EMAIL`). Matching that email ignoring case needs
`lower(email)`, which no index of the platform's profiles holds: a scan of all of them, 20–70 ms
at 100,000 people, in each command's start (bench/send_all.py's `process`). The exact email is
looked up first, through the unique index on `email`; case is ignored only for what that did
not find (tests/test_cli_edges.py checks the answers: exact first, else unique ignoring case).
"""

from __future__ import annotations

import sqlalchemy as sa

from humanglue_cli.core.store import people
from tests.helpers import Site
from tests.test_cli_inbox import site  # noqa: F401  (the fixture that closes pools)


def plans_of_lookup(site: Site, email: str) -> list[str]:  # noqa: F811
    """The plans of the statements `find_person(email)` runs."""
    seen: list[tuple[str, object]] = []

    def capture(_c: object, _cur: object, statement: str, params: object, *_: object) -> None:
        seen.append((statement, params))

    plans = []
    with site.engine.connect() as conn:
        sa.event.listen(conn, "before_cursor_execute", capture)
        people.find_person(conn, email)
        sa.event.remove(conn, "before_cursor_execute", capture)
        raw = conn.connection.dbapi_connection
        assert raw is not None
        for statement, params in seen:
            rows = raw.cursor().execute("EXPLAIN " + statement, params)  # type: ignore[arg-type]
            plans.append("\n".join(r[0] for r in rows))
        conn.rollback()
    return plans


def test_an_exact_email_is_found_through_the_index(pg_site: Site) -> None:
    # Given 20,000 people
    pg_site.sql(
        "INSERT INTO profiles (id, email, full_name, role) SELECT gen_random_uuid(), "
        "'p' || g || '@example.edu', 'P ' || g, 'student' FROM generate_series(1, 20000) g"
    )
    pg_site.sql("ANALYZE profiles")
    # When a person is looked up by their exact email, none of the statements scans them all
    plans = plans_of_lookup(pg_site, "p123@example.edu")
    assert plans and not [p for p in plans if "Seq Scan on profiles" in p], plans
    # And another spelling of it is still found, ignoring case (that one has to read them all)
    with pg_site.engine.connect() as conn:
        assert people.find_person(conn, "P123@Example.EDU").name == "P 123"
