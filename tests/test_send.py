"""`notifications send`: admins only, recipients validated before anything is queued."""

from __future__ import annotations

import pytest

from humanglue_cli.core import pipeline
from tests.helpers import Site
from tests.test_cli_inbox import hg, hg_json, site  # noqa: F401  (the fixture that closes pools)


def queued(site: Site) -> int:  # noqa: F811
    return int(site.sql("SELECT count(*) FROM hg_events")[0][0])


def test_send_to_emails_reaches_exactly_them(site: Site) -> None:  # noqa: F811
    out = hg_json(
        site,
        "notifications",
        "send",
        "--to",
        "stu@example.edu",
        "--to",
        "SAM@example.edu",
        "--title",
        "Office hours",
        "--message",
        "Thu 3pm",
        "--priority",
        "high",
        "--link",
        "https://example.edu/oh",
        user="root",
    )
    assert set(out) == {"event_id"} and isinstance(out["event_id"], str)
    assert pipeline.drain(site.engine).notified == 2
    for name in ("stu", "sam"):
        (n,) = hg_json(site, "notifications", "list", user=name)["items"]
        assert (n["type"], n["title"], n["priority"], n["link"]) == (
            "system_announcement",
            "Office hours",
            "high",
            "https://example.edu/oh",
        )
    assert hg_json(site, "notifications", "list", user="ada")["items"] == []


def test_send_to_everyone(site: Site) -> None:  # noqa: F811
    hg(site, "notifications", "send", "--all", "--title", "Hi", "--message", "m", user="root")
    assert pipeline.drain(site.engine).notified == len(
        [p for p in site.people if p not in ("course", "other_course")]
    )


def test_send_to_a_role_reaches_exactly_its_people(site: Site) -> None:  # noqa: F811
    # Given the site's people, some of them instructors
    instructors = {str(u) for (u,) in site.sql("SELECT id FROM profiles WHERE role = 'instructor'")}
    assert instructors
    # When an announcement goes to the instructors
    hg(
        site,
        "notifications",
        "send",
        "--role",
        "instructor",
        "--title",
        "T",
        "--message",
        "m",
        user="root",
    )
    # Then each of them has it, once, and no one else
    assert pipeline.drain(site.engine).notified == len(instructors)
    got = site.sql("SELECT user_id FROM notifications WHERE type = 'system_announcement'")
    assert sorted(str(u) for (u,) in got) == sorted(instructors)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--to", "nobody@example.edu"], 3),
        (["--to", "stu@example.edu", "--to", "nobody@example.edu"], 3),  # all or nothing
        (["--role", "dean"], 2),
        (["--role", "student", "--all"], 2),
        ([], 2),
        (["--all", "--priority", "shouting"], 2),
    ],
)
def test_rejected_sends_queue_nothing(site: Site, args: list[str], code: int) -> None:  # noqa: F811
    hg(
        site,
        "notifications",
        "send",
        *args,
        "--title",
        "t",
        "--message",
        "m",
        user="root",
        code=code,
    )
    assert queued(site) == 0


def test_only_admins_send(site: Site) -> None:  # noqa: F811
    hg(site, "notifications", "send", "--all", "--title", "t", "--message", "m", user="ada", code=4)
    hg(site, "notifications", "send", "--all", "--title", "t", "--message", "m", user=None, code=2)
    assert queued(site) == 0
