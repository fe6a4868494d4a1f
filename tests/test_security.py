"""Each person sees and changes only their own — refused by PostgreSQL itself (issue 7).

The logins here are real PostgreSQL roles made by `humanglue access grant`; superusers bypass
row-level security, so every check of isolation runs on such a plain login — through the CLI
and with raw SQL on the same login. The machine's `trust` authentication does not check
passwords (test_security_passwords.py does, on a private server with scram-sha-256).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import _drop_postgres, _new_postgres
from tests.helpers import Site, email, new_id, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")


def notify(site: Site, who: str, title: str, kind: str = "enrollment") -> str:
    nid = new_id()
    site.sql(
        "INSERT INTO notifications (id, user_id, type, title, message, data) "
        "VALUES (:i, :u, :k, :t, 'm', CAST(:d AS jsonb))",
        i=nid,
        u=site.people[who],
        k=kind,
        t=title,
        d=json.dumps({"course_id": site.people["course"]}),
    )
    return nid


def grant(site: Site, who: str) -> str:
    out = site.hg("access", "grant", email(who), "--json").stdout
    doc = json.loads(out)
    assert doc["user_id"] == site.people[who]
    return str(doc["database_url"])


@pytest.fixture
def school(pg_site: Site) -> Iterator[Site]:
    """ada (Deep Listening, with co-instructor bob) and cy (Pottery); stu takes both."""
    pg_site.enroll("stu")
    pg_site.enroll("sam", pg_site.people["other_course"])
    pg_site.people["ada_n"] = notify(pg_site, "ada", "for ada")
    pg_site.people["bob_n"] = notify(pg_site, "bob", "for bob")
    pg_site.people["cy_n"] = notify(pg_site, "cy", "for cy", kind="review")
    for who, course in (("stu", "course"), ("sam", "other_course")):
        pg_site.sql(
            "INSERT INTO student_presence (user_id, scope, course_id) VALUES (:u, :s, :c)",
            u=pg_site.people[who],
            s=f"course:{pg_site.people[course]}",
            c=pg_site.people[course],
        )
    yield pg_site


def on_login(
    site: Site, url: str, *args: str, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    return site.hg(*args, user=user, check=False, HUMANGLUE_DATABASE_URL=url)


def raw(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def refused(conn: sa.Connection, statement: str, **params: object) -> str:
    """The SQLSTATE of a statement that must fail."""
    try:
        conn.execute(sa.text(statement), params)
    except sa.exc.DBAPIError as error:
        return str(getattr(error.orig, "sqlstate", ""))
    raise AssertionError(f"not refused: {statement}")


def test_a_personal_login_acts_as_its_person_only(school: Site) -> None:
    url = grant(school, "ada")
    listed = on_login(school, url, "notifications", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [n["title"] for n in json.loads(listed.stdout)["items"]] == ["for ada"]
    # Naming oneself is fine; naming anyone else is exit 4, known or not.
    assert on_login(school, url, "notifications", "count", user=email("ada")).returncode == 0
    for other in (email("bob"), school.people["bob"], "nobody@example.edu"):
        proc = on_login(school, url, "notifications", "list", user=other)
        assert proc.returncode == 4, proc.stderr
        assert "acts as ada@example.edu only" in proc.stderr
    # Someone else's notification is unknown to it (exit 3), and stays as it was.
    bob_n = school.people["bob_n"]
    for verb in ("show", "read", "delete"):
        proc = on_login(school, url, "notifications", verb, bob_n)
        assert proc.returncode == 3, (verb, proc.stderr)
    assert on_login(school, url, "notifications", "read-all").returncode == 0
    (bob_row,) = school.sql("SELECT read_at, title FROM notifications WHERE id = :i", i=bob_n)
    assert bob_row == (None, "for bob")
    (ada_row,) = school.sql(
        "SELECT read_at FROM notifications WHERE id = :i", i=school.people["ada_n"]
    )
    assert ada_row[0] is not None  # its own were marked
    # Operator commands are not for a person's login.
    for command in (
        ("access", "list"),
        ("events", "failed"),
        ("maintenance", "cleanup"),
        ("status",),
    ):
        proc = on_login(school, url, *command)
        assert proc.returncode == 4, (command, proc.stdout, proc.stderr)
    # Nor announcements, for a person who is no admin: the database checks it.
    proc = on_login(school, url, "notifications", "send", "--all", "--title", "t", "--message", "m")
    assert proc.returncode == 4, proc.stderr


def test_raw_sql_on_a_personal_login_is_refused_or_sees_nothing(school: Site) -> None:
    url = grant(school, "ada")
    ada, bob = school.people["ada"], school.people["bob"]
    ada_n, bob_n = school.people["ada_n"], school.people["bob_n"]
    before = school.sql("SELECT id, user_id, read_at, title FROM notifications ORDER BY id")
    engine = raw(url)
    try:
        with engine.connect() as conn:
            visible = conn.execute(sa.text("SELECT user_id FROM notifications")).scalars()
            assert {str(u) for u in visible} == {ada}
            # Change, delete, take over someone else's: nothing there to change.
            for statement in (
                "UPDATE notifications SET read_at = now() WHERE id = :bob_n",
                "DELETE FROM notifications WHERE id = :bob_n",
                "DELETE FROM notifications WHERE user_id <> :ada",
            ):
                result = conn.execute(sa.text(statement), {"bob_n": bob_n, "ada": ada})
                assert result.rowcount == 0, statement
            # Give one's own away, rewrite it, insert one: refused by the grants.
            assert refused(conn, "UPDATE notifications SET user_id = :b", b=bob) == "42501"
            assert refused(conn, "UPDATE notifications SET title = 'x'") == "42501"
            assert (
                refused(
                    conn,
                    "INSERT INTO notifications (user_id, type, title, message) "
                    "VALUES (:b, 'enrollment', 'spoof', 'm')",
                    b=bob,
                )
                == "42501"
            )
            # Only read_at changes, and only on its own.
            changed = conn.execute(
                sa.text("UPDATE notifications SET read_at = now() WHERE id = :i"), {"i": ada_n}
            )
            assert changed.rowcount == 1
            # The internals: no access at all; the schema version stays readable.
            for table in (
                "hg_events",
                "hg_ledger",
                "hg_workers",
                "hg_maintenance_runs",
                "hg_logins",
                "hg_settings",
            ):
                assert refused(conn, f"SELECT * FROM {table}") == "42501", table
            assert conn.execute(sa.text("SELECT version_num FROM hg_alembic_version")).scalar()
            for function in ("hg_grant_login(:u, 'x')", "hg_revoke_login(:u)"):
                assert refused(conn, f"SELECT {function}", u=bob) == "42501"
            # No session setting and no role it can take widens what it sees.
            conn.execute(
                sa.text("SELECT set_config('humanglue.acting_user', :b, false)"), {"b": bob}
            )
            assert conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar() == 1
            prefix = school.sql("SELECT value FROM hg_settings WHERE name = 'role_prefix'")[0][0]
            conn.execute(sa.text(f'SET ROLE "{prefix}_people"'))
            assert conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar() == 1
            conn.execute(sa.text("RESET ROLE"))
            for role in (f"{prefix}_operator", f"{prefix}_worker", f"{prefix}_admin", "postgres"):
                assert refused(conn, f'SET ROLE "{role}"') == "42501", role
            # Presence: the students of its own courses only.
            seen = conn.execute(sa.text("SELECT user_id FROM student_presence")).scalars()
            assert {str(u) for u in seen} == {school.people["stu"]}
            # Profiles and courses: itself, its students and co-instructors, its courses.
            names = conn.execute(sa.text("SELECT email FROM profiles")).scalars()
            assert set(names) == {email("ada"), email("bob"), email("stu")}
            titles = conn.execute(sa.text("SELECT title FROM courses")).scalars()
            assert set(titles) == {"Deep Listening"}
            # Enrollments (migration 0008, for the live stats): those of its courses only;
            # questions and the students' own activity stay closed.
            enrolled = conn.execute(sa.text("SELECT student_id FROM enrollments")).scalars()
            assert {str(s) for s in enrolled} == {school.people["stu"]}
            assert refused(conn, "SELECT * FROM course_questions") == "42501"
            assert refused(conn, "SELECT * FROM student_activity") == "42501"
    finally:
        engine.dispose()
    after = school.sql("SELECT id, user_id, read_at, title FROM notifications ORDER BY id")
    assert [r for r in after if str(r[0]) != ada_n] == [r for r in before if str(r[0]) != ada_n]


def test_an_operators_user_passes_the_same_policies(school: Site) -> None:
    """Acting --user someone takes their role and identity: a policy that (by a bug) hid the
    person's reviews hides them from the operator's --user read too."""
    shown = school.hg("notifications", "list", "--json", user=email("cy")).stdout
    assert [n["type"] for n in json.loads(shown)["items"]] == ["review"]
    school.sql(
        "ALTER POLICY hg_people_own ON notifications "
        "USING (user_id = (SELECT hg_current_person()) AND type <> 'review')"
    )
    shown = school.hg("notifications", "list", "--json", user=email("cy")).stdout
    assert json.loads(shown)["items"] == []
    proc = school.hg("notifications", "read", school.people["cy_n"], user=email("cy"), check=False)
    assert proc.returncode == 3
    assert school.sql(
        "SELECT read_at FROM notifications WHERE id = :i", i=school.people["cy_n"]
    ) == [(None,)]


def test_a_revoked_login_is_refused_and_its_sessions_end(school: Site) -> None:
    url = grant(school, "stu")
    engine = raw(url)
    session = engine.connect()
    try:
        assert session.execute(sa.text("SELECT 1")).scalar() == 1
        # A temporary table of the session's own must not keep its role from being dropped.
        session.execute(sa.text("CREATE TEMPORARY TABLE mine (x int)"))
        listed = json.loads(school.hg("access", "list", "--json").stdout)["items"]
        assert [i["email"] for i in listed] == [email("stu")]
        revoked = json.loads(school.hg("access", "revoke", email("stu"), "--json").stdout)
        assert revoked == {"user_id": school.people["stu"], "revoked": True, "sessions_ended": 1}
        with pytest.raises(sa.exc.OperationalError):
            session.execute(sa.text("SELECT 1"))
    finally:
        session.close()
        engine.dispose()
    proc = on_login(school, url, "notifications", "list")
    assert proc.returncode == 5 and "does not exist" in proc.stderr, proc.stderr
    assert json.loads(school.hg("access", "list", "--json").stdout)["items"] == []
    again = json.loads(school.hg("access", "revoke", email("stu"), "--json").stdout)
    assert again["revoked"] is False


def test_grant_writes_the_url_once_to_a_private_file(school: Site, tmp_path: Path) -> None:
    target = tmp_path / "ada.url"
    target.write_text("old\n")
    os.chmod(target, 0o644)
    proc = school.hg("access", "grant", email("ada"), "--output", str(target))
    assert proc.stdout == ""  # the URL is in the file only
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    url = target.read_text().strip()
    assert url.startswith("postgresql+psycopg://hg_") and "@127.0.0.1:5432/" in url
    assert url.split("//")[1].split(":")[1].split("@")[0] not in proc.stderr  # the password
    assert on_login(school, url, "notifications", "count", "--json").returncode == 0
    # Granting again gives a new password; the role stays the same.
    second = json.loads(school.hg("access", "grant", email("ada"), "--json").stdout)
    assert second["role"] == url.split("//")[1].split(":")[0]
    assert second["database_url"] != url
    # Unknown people and unwritable files change nothing.
    assert school.hg("access", "grant", "nobody@example.edu", check=False).returncode == 3
    proc = school.hg("access", "grant", email("bob"), "--output", "/nonexistent/x", check=False)
    assert proc.returncode == 2, proc.stderr
    assert len(json.loads(school.hg("access", "list", "--json").stdout)["items"]) == 1


def test_access_needs_postgresql(site: Site) -> None:
    if site.backend != "sqlite":
        pytest.skip("the SQLite answer")
    proc = site.hg("access", "grant", email("ada"), check=False)
    assert proc.returncode == 2 and "need PostgreSQL" in proc.stderr, proc.stderr


@dataclass
class Legacy:
    """A database at revision 0003 (before roles), with ada, stu, a course, and a login role
    of the platform's own (`role`) with no rights yet."""

    site: Site
    engine: sa.Engine
    url: str
    role: str

    def as_role(self, name: str | None = None) -> str:
        user = name or self.role
        return sa.make_url(self.url).set(username=user).render_as_string(hide_password=False)


@pytest.fixture
def legacy(tmp_path: Path) -> Iterator[Legacy]:
    from humanglue_cli.core import migrate
    from humanglue_cli.core.db import create_engine, dispose_engines

    url, name = _new_postgres()
    role = f"platform_{new_id()[:8]}"
    engine = create_engine(url)
    try:
        migrate.upgrade(engine, "0003")
        site = Site(url, tmp_path, "postgres", engine)
        for who, kind in (("ada", "instructor"), ("stu", "student")):
            site.person(who, kind)
        site.people["course"] = site.course("ada", "Deep Listening")
        site.sql(f'CREATE ROLE "{role}" LOGIN')
        yield Legacy(site, engine, url, role)
    finally:
        engine.dispose()
        dispose_engines()
        _drop_postgres(name)
        _drop_role(role)


def test_the_platform_keeps_every_right_it_had(legacy: Legacy) -> None:
    """A platform role's privileges and the rows it sees are the same after `db upgrade`; its
    writes still fire the capture triggers though it has no right on `hg_events`."""
    from humanglue_cli.core import migrate

    site, role = legacy.site, legacy.role
    notify(site, "ada", "one")
    notify(site, "stu", "two")
    site.sql(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON profiles, courses, enrollments, "
        f'notifications, student_presence TO "{role}"'
    )

    def rights() -> list[tuple[str, str]]:
        rows = site.sql(
            "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = :r ORDER BY 1, 2",
            r=role,
        )
        return [tuple(r) for r in rows]

    before = rights()
    migrate.upgrade(legacy.engine)
    assert rights() == before
    platform = raw(legacy.as_role())
    try:
        with platform.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar() == 2
            assert conn.execute(sa.text("SELECT count(*) FROM profiles")).scalar() == 2
            assert refused(conn, "SELECT * FROM hg_events") == "42501"
            conn.execute(sa.text("UPDATE notifications SET title = 'edited', user_id = user_id"))
            conn.execute(
                sa.text("INSERT INTO enrollments (id, course_id, student_id) VALUES (:i, :c, :s)"),
                {"i": new_id(), "c": site.people["course"], "s": site.people["stu"]},
            )
    finally:
        platform.dispose()
    assert site.pending() == 1  # the trigger wrote the outbox on the platform's behalf
    assert site.count("title = 'edited'") == 2


def _drop_role(role: str) -> None:
    from tests.conftest import PG_ADMIN_URL

    admin = raw(PG_ADMIN_URL)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
    finally:
        admin.dispose()


def test_least_privilege_logins_for_the_worker_and_the_operator(school: Site) -> None:
    """A worker's login in the worker group processes events; an operator's runs the operator
    commands and acts --user someone."""
    prefix = school.sql("SELECT value FROM hg_settings WHERE name = 'role_prefix'")[0][0]
    worker, operator = f"w_{new_id()[:8]}", f"o_{new_id()[:8]}"
    school.sql(f'CREATE ROLE "{worker}" LOGIN IN ROLE "{prefix}_worker"')
    school.sql(f'CREATE ROLE "{operator}" LOGIN IN ROLE "{prefix}_operator"')
    base = sa.make_url(school.url)
    as_worker = base.set(username=worker).render_as_string(hide_password=False)
    as_operator = base.set(username=operator).render_as_string(hide_password=False)
    try:
        school.enroll("sam")
        proc = on_login(school, as_worker, "worker", "--burst", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["processed"] >= 1
        wait_until(lambda: school.pending() == 0)
        for command in (
            ("status",),
            ("maintenance", "cleanup", "--dry-run"),
            ("access", "list"),
        ):
            proc = on_login(school, as_operator, *command)
            assert proc.returncode == 0, (command, proc.stderr)
        proc = on_login(school, as_operator, "notifications", "list", "--json", user=email("bob"))
        assert proc.returncode == 0, proc.stderr
        titles = [n["title"] for n in json.loads(proc.stdout)["items"]]
        assert "for bob" in titles and "for ada" not in titles
        url = json.loads(
            on_login(school, as_operator, "access", "grant", email("cy"), "--json").stdout
        )["database_url"]
        assert on_login(school, url, "notifications", "count").returncode == 0
        # A worker's login is no operator, and cannot act as anyone.
        assert on_login(school, as_worker, "access", "list").returncode == 4
    finally:
        school.sql(f'DROP ROLE "{worker}"')
        school.sql(f'DROP ROLE "{operator}"')


def test_a_tail_on_a_personal_login_prints_its_own_only(school: Site) -> None:
    url = grant(school, "ada")
    tail = school.spawn("notifications", "tail", "--json", "-n", "0", HUMANGLUE_DATABASE_URL=url)
    (log,) = school.home.glob("proc-*.log")
    try:
        wait_until(lambda: "following" in log.read_text(), timeout=30)
        notify(school, "bob", "bob's secret")
        notify(school, "ada", "ada's news")
        wait_until(lambda: "ada's news" in log.read_text(), timeout=30)
        notify(school, "cy", "cy's secret")
        notify(school, "ada", "ada's second")
        wait_until(lambda: "ada's second" in log.read_text(), timeout=30)
        assert "secret" not in log.read_text()
    finally:
        tail.terminate()
        tail.wait(timeout=30)


def test_a_login_is_nobody_in_another_database(school: Site, tmp_path: Path) -> None:
    """Logins are cluster-wide roles: one granted here has no rights in another HumanGlue
    database on the same server, and no identity there."""
    url = sa.make_url(grant(school, "ada"))
    other_url, name = _new_postgres()
    other = Site.create(other_url, tmp_path / "other", "postgres")
    try:
        notify(other, "ada", "elsewhere")  # the same email, another database
        there = url.set(database=sa.make_url(other_url).database)
        engine = raw(there.render_as_string(hide_password=False))
        try:
            with engine.connect() as conn:
                assert refused(conn, "SELECT * FROM notifications") == "42501"
                assert refused(conn, "SELECT hg_current_person()") == "42501"
        finally:
            engine.dispose()
        proc = on_login(
            school, there.render_as_string(hide_password=False), "notifications", "list"
        )
        assert proc.returncode == 4, proc.stderr
    finally:
        other.close()
        from humanglue_cli.core.db import dispose_engines

        dispose_engines()
        _drop_postgres(name)


def test_a_deleted_persons_login_can_no_longer_log_in(school: Site) -> None:
    url = grant(school, "sam")
    engine = raw(url)
    session = engine.connect()
    try:
        assert session.execute(sa.text("SELECT 1")).scalar() == 1
        with school.engine.begin() as conn:  # the platform deletes the profile, as it may
            for table, column in (("enrollments", "student_id"), ("student_presence", "user_id")):
                conn.execute(
                    sa.text(f"DELETE FROM {table} WHERE {column} = :u"), {"u": school.people["sam"]}
                )
            conn.execute(sa.text("DELETE FROM profiles WHERE id = :u"), {"u": school.people["sam"]})
        with pytest.raises(sa.exc.OperationalError):
            session.execute(sa.text("SELECT 1"))
    finally:
        session.close()
        engine.dispose()
    proc = on_login(school, url, "notifications", "list")
    assert proc.returncode == 5 and "not permitted to log in" in proc.stderr, proc.stderr


def test_a_table_with_its_own_row_level_security_keeps_its_policies(legacy: Legacy) -> None:
    """Where the platform had row-level security already, its policies still decide for its
    roles; HumanGlue's groups get through to theirs (the worker writes, a person sees own)."""
    from humanglue_cli.core import migrate

    site, role = legacy.site, legacy.role
    notify(site, "ada", "seen", kind="enrollment")
    notify(site, "ada", "hidden from the platform role", kind="payment")
    site.sql(f'GRANT SELECT, INSERT ON notifications TO "{role}"')
    site.sql("ALTER TABLE notifications ENABLE ROW LEVEL SECURITY")
    site.sql(f"CREATE POLICY platform_own ON notifications TO \"{role}\" USING (type <> 'payment')")

    def platform_sees() -> int:
        platform = raw(legacy.as_role())
        try:
            with platform.connect() as conn:
                return int(conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar_one())
        finally:
            platform.dispose()

    assert platform_sees() == 1
    migrate.upgrade(legacy.engine)
    assert platform_sees() == 1  # its own policy, unchanged
    prefix = site.sql("SELECT value FROM hg_settings WHERE name = 'role_prefix'")[0][0]
    worker = f"w_{new_id()[:8]}"
    site.sql(f'CREATE ROLE "{worker}" LOGIN IN ROLE "{prefix}_worker"')
    try:
        site.enroll("stu")
        proc = site.hg("worker", "--burst", "--json", HUMANGLUE_DATABASE_URL=legacy.as_role(worker))
        assert json.loads(proc.stdout) == {"processed": 1, "failed": 0}
        assert site.count("type = 'enrollment'") == 2
        assert platform_sees() == 2
        personal = grant(site, "ada")
        listed = site.hg("notifications", "list", "--json", HUMANGLUE_DATABASE_URL=personal)
        assert len(json.loads(listed.stdout)["items"]) == 3  # all hers, payments too
    finally:
        site.sql(f'DROP ROLE "{worker}"')


def test_a_granted_url_never_carries_the_operators_credentials() -> None:
    from humanglue_cli.core.access import personal_url

    url = personal_url(
        "postgresql+psycopg://op:opsecret@db.example:5433/platform"
        "?sslmode=verify-full&password=opsecret&user=op&passfile=/home/op/.pgpass",
        "hg_platform_u_0123456789abcdef",
        "s3cret",
    )
    parsed = sa.make_url(url)
    assert "opsecret" not in url and "/home/op" not in url and "op@" not in url
    assert parsed.username == "hg_platform_u_0123456789abcdef" and parsed.password == "s3cret"
    assert (parsed.host, parsed.port, parsed.database) == ("db.example", 5433, "platform")
    assert parsed.query == {"sslmode": "verify-full"}
