"""The inbox commands through the CLI (typer's CliRunner) on both backends, real databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from humanglue_cli.commands.app import app
from humanglue_cli.core import pipeline
from humanglue_cli.core.db import get_engine
from humanglue_cli.core.store import notifications as inbox
from tests.helpers import Site, email, new_id

runner = CliRunner()


@pytest.fixture
def site(site: Site) -> Iterator[Site]:
    """The school; afterwards the CLI's pooled connections to it are closed (not just dropped)."""
    yield site
    get_engine(site.url).dispose()


def hg(site: Site, *args: str, user: str | None = "ada", code: int = 0, **env: str) -> Result:
    environ = {"HUMANGLUE_DATABASE_URL": site.url, **env}
    if user:
        environ["HUMANGLUE_USER"] = email(user)
    result = runner.invoke(app, list(args), env=environ)
    assert result.exit_code == code, (args, result.exit_code, result.output)
    if code:
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    return result


def hg_json(site: Site, *args: str, user: str = "ada") -> Any:
    return json.loads(hg(site, *args, "--json", user=user).stdout)


def inbox_of(site: Site, user: str = "ada") -> list[dict[str, Any]]:
    return hg_json(site, "notifications", "list", "--limit", "1000", user=user)["items"]


def enrollments(site: Site, count: int) -> list[str]:
    """`count` notifications each for ada and bob (owner and co-instructor); ada's ids."""
    for _ in range(count):
        site.enroll()
    pipeline.drain(site.engine)
    return [n["id"] for n in inbox_of(site)]


def insert(site: Site, user: str, ident: str | None = None, ago: str = "0 seconds") -> str:
    ident = ident or new_id()
    stamp = (
        f"now() - interval '{ago}'" if site.backend == "postgres" else f"datetime('now', '-{ago}')"
    )
    site.sql(
        "INSERT INTO notifications (id, user_id, type, title, message, created_at) "
        f"VALUES (:i, :u, 'review', 't', 'm', {stamp})",
        i=ident,
        u=site.people[user],
    )
    return ident


def test_show_by_id_and_by_prefix(site: Site) -> None:
    (ident,) = enrollments(site, 1)
    by_id = hg_json(site, "notifications", "show", ident)
    assert by_id == inbox_of(site)[0]
    assert hg_json(site, "notifications", "show", ident[:8].upper()) == by_id
    text = hg(site, "--tz", "Asia/Tokyo", "notifications", "show", ident[:8]).stdout
    assert ident in text and "New enrollment in Deep Listening" in text and "JST" in text
    assert f'"course_id": "{site.people["course"]}"' in text  # data, pretty-printed


def test_read_unread_delete_by_id_and_prefix(site: Site) -> None:
    first, second, third = enrollments(site, 3)
    assert hg_json(site, "notifications", "read", first[:8], second) == {"updated": 2}
    assert hg_json(site, "notifications", "read", first) == {"updated": 0}  # already read
    assert {n["id"] for n in inbox_of(site) if n["read"]} == {first, second}
    assert hg_json(site, "notifications", "unread", second[:10]) == {"updated": 1}
    assert hg_json(site, "notifications", "delete", third[:8], third) == {"deleted": 1}
    assert [n["id"] for n in inbox_of(site)] == [first, second]
    said = hg(site, "notifications", "read", second).stdout
    assert said.strip() == "marked read 1 of 1 notification"


def test_ambiguous_prefix_is_exit_2_naming_the_candidates(site: Site) -> None:
    one, two = (
        insert(site, "ada", "abcdef12-0000-4000-8000-000000000001"),
        insert(site, "ada", "abcdef12-1111-4000-8000-000000000002"),
    )
    result = hg(site, "notifications", "read", "abcdef12", code=2)
    assert "ambiguous" in result.stderr and one in result.stderr and two in result.stderr
    assert site.count("read_at IS NOT NULL") == 0
    assert hg_json(site, "notifications", "read", "abcdef12-1") == {"updated": 1}


@pytest.mark.parametrize("verb", ["read", "unread", "delete", "show"])
def test_malformed_ids_are_exit_2_before_connecting(site: Site, verb: str) -> None:
    for bad in ("abc", "not-hex!", "0" * 40, "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"):
        hg(
            site,
            "notifications",
            verb,
            bad,
            code=2,
            HUMANGLUE_DATABASE_URL="postgresql://postgres@127.0.0.1:1/none",
        )


def test_someone_elses_or_unknown_id_is_exit_3_and_nothing_changes(site: Site) -> None:
    mine = enrollments(site, 2)
    theirs = [n["id"] for n in inbox_of(site, "bob")][0]
    for verb in ("read", "delete"):
        hg(site, "notifications", verb, mine[0], theirs, code=3)
        hg(site, "notifications", verb, mine[0], new_id(), code=3)
        hg(site, "notifications", verb, theirs[:8], code=3)
    hg(site, "notifications", "show", theirs, code=3)
    hg(site, "notifications", "read", *mine)
    hg(site, "notifications", "unread", mine[0], theirs, code=3)
    assert all(n["read"] for n in inbox_of(site))  # the unread did not half-happen
    assert len(inbox_of(site)) == 2 and not any(n["read"] for n in inbox_of(site, "bob"))


def test_read_all_leaves_unread_what_commits_while_it_runs(pg_site: Site) -> None:
    # PostgreSQL only: SQLite has one writer, so nothing can commit while read-all runs.
    site = pg_site
    enrollments(site, 2)
    with site.engine.connect() as platform:
        late = platform.execute(  # a notification whose transaction commits after read-all's
            sa.text(
                "INSERT INTO notifications (user_id, type, title, message) "
                "VALUES (:u, 'review', 't', 'm') RETURNING id"
            ),
            {"u": site.people["ada"]},
        ).scalar_one()
        with site.engine.begin() as conn:
            marked = inbox.mark_all_read(conn, site.people["ada"], inbox.Filters())
        platform.commit()
    assert marked == 2
    assert [n["id"] for n in inbox_of(site) if not n["read"]] == [str(late)]


def test_read_all_by_type_and_count(site: Site) -> None:
    enrollments(site, 3)
    insert(site, "ada")
    assert hg_json(site, "notifications", "count") == {
        "unread": 4,
        "by_type": {"enrollment": 3, "review": 1},
    }
    assert hg_json(site, "notifications", "read-all", "--type", "review") == {"updated": 1}
    assert hg_json(site, "notifications", "count") == {"unread": 3, "by_type": {"enrollment": 3}}
    assert hg(site, "notifications", "count").stdout.splitlines()[0] == "3 unread"
    assert hg(site, "notifications", "read-all").stdout.strip() == "marked 3 notifications read"
    assert hg_json(site, "notifications", "count") == {"unread": 0, "by_type": {}}
    assert hg_json(site, "notifications", "count", user="bob")["unread"] == 3
    hg(site, "notifications", "read-all", "--type", "nope", code=2)


def presence(site: Site, user: str, status: str, ago: str) -> None:
    stamp = (
        f"now() - interval '{ago}'" if site.backend == "postgres" else f"datetime('now', '-{ago}')"
    )
    site.sql(
        "INSERT INTO student_presence (user_id, device_id, status, last_seen_at) "
        f"VALUES (:u, :d, :s, {stamp})",
        u=site.people[user],
        d=new_id(),
        s=status,
    )


def test_cleanup_dry_run_changes_nothing_and_the_run_deletes_only_expired(site: Site) -> None:
    for days in (40, 31, 29, 0):
        insert(site, "ada", ago=f"{days * 24 + 1} hours")
    presence(site, "stu", "offline", "30 hours")  # expired
    presence(site, "sam", "offline", "2 hours")
    presence(site, "stu", "online", "30 hours")  # still online: kept whatever its age
    for day in ("2000-01-01", "2999-01-01"):  # a peak of a day long gone, and one to come
        site.sql(
            "INSERT INTO hg_presence_peaks (scope, day, peak, peak_at) "
            "VALUES (:s, :d, 3, CURRENT_TIMESTAMP)",
            s=f"course:{day}",
            d=day,
        )
    dry = json.loads(hg(site, "maintenance", "cleanup", "--dry-run", "--json", user=None).stdout)
    assert dry["dry_run"] is True
    assert dry["deleted"] == {
        "notifications": 2,
        "activity": 0,
        "presence": 1,
        "ledger": 0,
        "workers": 0,
        "runs": 0,
        "peaks": 1,
    }
    assert set(dry["cutoffs"]) == {"notifications", "presence"}
    assert site.count() == 4
    assert len(site.sql("SELECT * FROM student_presence")) == 3
    text = hg(site, "maintenance", "cleanup", user=None).stdout
    assert "notifications: deleted 2 notifications created before" in text
    assert "(retention 30d)" in text
    assert site.count() == 2 and len(site.sql("SELECT * FROM student_presence")) == 2
    assert "peaks: deleted 1 daily presence peaks of days before" in text
    assert [str(r.day) for r in site.sql("SELECT day FROM hg_presence_peaks")] == ["2999-01-01"]
    again = json.loads(hg(site, "maintenance", "cleanup", "--json", user=None).stdout)
    assert again["dry_run"] is False and set(again["deleted"].values()) == {0}
    hg(site, "maintenance", "cleanup", user=None, code=2, HUMANGLUE_NOTIFICATION_RETENTION="12h")


def test_people_get_plain_text_in_a_pipe(site: Site) -> None:
    ids = enrollments(site, 3)
    hg(site, "notifications", "read", ids[0])
    for env in ({"NO_COLOR": "1"}, {"COLUMNS": "80"}):
        out = hg(site, "notifications", "list", **env).stdout
        assert "\x1b" not in out and "─" not in out and "│" not in out
        lines = out.splitlines()
        assert [line.split()[0] for line in lines] == ids
        assert [line.split()[1] for line in lines] == ["read", "unread", "unread"]
    assert json.loads(hg(site, "notifications", "list", "--json").stdout)["next_cursor"] is None
    tail = hg(site, "notifications", "tail", "--no-follow", "-n", "2").stdout.splitlines()
    assert [line.split()[0] for line in tail] == list(reversed(ids[:2]))  # oldest first


def test_bad_time_zone_is_exit_2(site: Site) -> None:
    enrollments(site, 1)
    hg(site, "--tz", "Nowhere/Special", "notifications", "list", code=2)
    hg(site, "notifications", "tail", "-n", "-1", code=2)
    hg(site, "notifications", "tail", "--type", "nope", code=2)


def test_every_command_has_help_ending_in_an_example() -> None:
    for args in (
        ["notifications", name]
        for name in ("show", "read", "unread", "delete", "read-all", "count", "tail")
    ):
        out = runner.invoke(app, [*args, "--help"]).stdout
        assert "Example: humanglue" in out, args
    assert "Example: " in runner.invoke(app, ["maintenance", "cleanup", "--help"]).stdout
