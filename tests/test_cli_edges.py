"""The CLI at the edges people and pipes reach (issue 6): closed pipes and stdout, times copied
from the screen in another zone, names full of escape sequences, absurd input, ambiguous
emails, courses as people see them, bulk delete. Real processes, real databases."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import subprocess
import time

import pytest

from humanglue_cli.core import pipeline
from humanglue_cli.core.store.notifications import Filters
from tests.helpers import CLI, Site, email, free_port, new_id

EVIL = "Eve \x1b[2J\x1b]0;owned\x07 \u202eevil"


def _cursor(ident: str) -> str:
    """A cursor of an unfiltered listing, as `list` makes them, naming `ident`."""
    fields = {"t": "2026-11-24T12:00:00+00:00", "i": ident, "f": Filters().fingerprint()}
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")


# Found by tests/test_properties.py: bound as they were, exit 1 on PostgreSQL (a uuid column) or
# on both (a lone surrogate, which JSON can spell), instead of exit 2.
CURSOR_OF_NO_ID = _cursor("zzz")
CURSOR_NOT_UTF8 = _cursor("\udc80")


def one_error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout[-500:], proc.stderr[-500:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "unexpected error" not in proc.stderr
    assert len(lines[0]) < 400
    return lines[0]


def notify(site: Site, count: int = 3) -> list[str]:
    for _ in range(count):
        site.enroll()
    pipeline.drain(site.engine)
    out = site.hg("notifications", "list", "--json", user=email("ada")).stdout
    return [n["id"] for n in json.loads(out)["items"]]


def in_terminal(site: Site, *args: str, user: str = "ada", columns: int = 160) -> bytes:
    """What `humanglue ARGS` writes to a terminal (a pty), colours and all."""
    main, secondary = pty.openpty()
    env = site.env(email(user), COLUMNS=str(columns), TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [CLI, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        close_fds=True,
    )
    os.close(secondary)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the other side is closed
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(10)
    os.close(main)
    assert proc.returncode == 0, out[-2000:]
    return out


# --- pipes and closed streams ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["list", "-n", "1000"], ["count"], ["show", "FIRST"], ["tail", "--no-follow", "-n", "50"]],
)
def test_a_closed_pipe_ends_quietly(site: Site, args: list[str]) -> None:
    ids = notify(site, 40)
    args = [ids[0] if a == "FIRST" else a for a in args]
    # Into a pipe whose reader has already gone: the first write fails with EPIPE
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run(
        [CLI, "notifications", *args],
        env=site.env(email("ada")),
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    os.close(write_end)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    # As a shell runs it, pipefail on
    shell = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{CLI} notifications {' '.join(args)} | head -n 1"],
        env=site.env(email("ada")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0 and shell.stderr == "", shell.stderr
    assert len(shell.stdout.splitlines()) == 1


def test_a_closed_stdout_ends_quietly(site: Site) -> None:
    notify(site, 2)
    for args in ("notifications list", "notifications count", "--help", "--version"):
        proc = subprocess.run(
            ["bash", "-c", f"{CLI} {args} >&-"],
            env=site.env(email("ada")),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0 and proc.stderr == "", (args, proc.stderr)


def test_a_full_disk_is_one_line_and_exit_1_never_a_traceback() -> None:
    for args in ("--version", "--help", "notifications --help"):
        proc = subprocess.run(
            ["bash", "-c", f"{CLI} {args} > /dev/full"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr == "humanglue: cannot write the output: No space left on device\n"


def test_version_and_a_pipe() -> None:
    from humanglue_cli import __version__

    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{CLI} --version | head -c 3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hum", "")
    whole = subprocess.run([CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert whole.stdout == f"humanglue {__version__}\n"


# --- times --------------------------------------------------------------------------------------


def test_a_naive_time_copied_from_the_screen_selects_the_right_rows(site: Site) -> None:
    # Given notifications at 11:59 and 12:01 UTC, shown to a person in Tokyo as 20:59 and 21:01
    at = {}
    for stamp in ("2026-11-24 11:59:00", "2026-11-24 12:01:00"):
        ident = new_id()
        site.sql(
            "INSERT INTO notifications (id, user_id, type, title, message, created_at) "
            "VALUES (:i, :u, 'review', 't', 'm', :c)",
            i=ident,
            u=site.people["ada"],
            c=stamp + ("+00" if site.backend == "postgres" else ""),
        )
        at[stamp] = ident
    shown = site.hg(
        "--tz", "Asia/Tokyo", "notifications", "show", at["2026-11-24 12:01:00"], user=email("ada")
    ).stdout
    assert "2026-11-24 21:01:00 JST" in shown
    # When they copy "2026-11-24 21:00" (no offset) with their zone set
    for how in (["--tz", "Asia/Tokyo"], []):
        env = {} if how else {"HUMANGLUE_TZ": "Asia/Tokyo"}
        out = site.hg(
            *how,
            "notifications",
            "list",
            "--since",
            "2026-11-24 21:00",
            "--json",
            user=email("ada"),
            **env,
        ).stdout
        # Then exactly the later one is selected
        assert [n["id"] for n in json.loads(out)["items"]] == [at["2026-11-24 12:01:00"]]
    help_text = site.hg("notifications", "list", "--help").stdout
    assert "display zone" in " ".join(help_text.split())


# --- text from the platform -----------------------------------------------------------------------


def test_a_name_full_of_escape_sequences_reaches_a_terminal_inert(site: Site) -> None:
    # Given a student whose name is a terminal attack, enrolling
    evil = site.person("eve", "student")
    site.sql("UPDATE profiles SET full_name = :n WHERE id = :i", n=EVIL, i=evil)
    site.enroll("eve")
    pipeline.drain(site.engine)
    (ident,) = [n for n in notify(site, 0)]
    for args in (
        ["notifications", "list"],
        ["notifications", "show", ident],
        ["notifications", "tail", "--no-follow"],
    ):
        # When ada looks at it on a terminal, and through a pipe
        raw = in_terminal(site, *args)
        piped = site.hg(*args, user=email("ada")).stdout.encode()
        for out in (raw, piped):
            # Then the sequences are shown as text, never sent
            assert b"\x1b[2J" not in out and b"\x1b]0;" not in out and b"\x07" not in out, args
            assert "\u202e".encode() not in out
            assert b"\\x1b[2J" in out or b"\\x1b" in out, (args, out[-600:])


# --- absurd input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["notifications", "list", "--since", "99999999d"], {}),
        (["notifications", "list", "--since", "9999999999999999999999s"], {}),
        (["notifications", "list", "--until", "99999999d"], {}),
        (["notifications", "list", "--since", "x" * 100_000], {}),
        (["notifications", "list", "--limit", "99999999999999999999999"], {}),
        (["notifications", "list", "--limit", "1e3"], {}),
        (["notifications", "list", "--cursor", "A" * 100_000], {}),
        (["notifications", "tail", "-n", "100000000000000000000"], {}),
        (["maintenance", "cleanup"], {"HUMANGLUE_NOTIFICATION_RETENTION": "99999999d"}),
        (["notifications", "count"], {"HUMANGLUE_DATABASE_URL": "garbage"}),
        (["notifications", "count"], {"HUMANGLUE_DATABASE_URL": "mysql://root@localhost/x"}),
        (["notifications", "count"], {"HUMANGLUE_DATABASE_URL": "postgresql://"}),
        (["notifications", "count"], {"HUMANGLUE_USER": "ada\udcff@example.edu"}),
        (["--tz", "Mars/Olympus", "notifications", "list"], {}),
        (["--broker-url", "foo://bar", "worker"], {}),
        (["notifications", "list", "--course", "Deep\udcffListening"], {}),  # not UTF-8
        (["notifications", "list", "--cursor", CURSOR_OF_NO_ID], {}),
        (["notifications", "list", "--cursor", CURSOR_NOT_UTF8], {}),
        (
            [
                "notifications",
                "send",
                "--to",
                "r\udcff@example.edu",
                "--title",
                "t",
                "--message",
                "m",
            ],
            {},
        ),
        (["events", "retry", "9" * 100_000], {}),
        (["notifications", "read", "f" * 100_000], {}),
        (
            [
                "notifications",
                "send",
                "--all",
                "--title",
                "t",
                "--message",
                "m",
                "--link",
                "javascript:alert(1)",
            ],
            {},
        ),
    ],
)
def test_absurd_input_is_exit_2_in_one_short_line(
    site: Site, args: list[str], env: dict[str, str]
) -> None:
    proc = site.hg(*args, user=email("root"), check=False, **env)
    one_error_line(proc, 2)


def test_an_invalid_retention_breaks_only_the_command_that_uses_it(site: Site) -> None:
    env = {"HUMANGLUE_NOTIFICATION_RETENTION": "forever"}
    assert site.hg("notifications", "count", user=email("ada"), **env).returncode == 0
    line = one_error_line(site.hg("maintenance", "cleanup", check=False, **env), 2)
    assert "HUMANGLUE_NOTIFICATION_RETENTION" in line


def test_an_unresolvable_host_is_exit_5_naming_host_and_database(site: Site) -> None:
    proc = site.hg(
        "notifications",
        "count",
        user=email("ada"),
        check=False,
        HUMANGLUE_DATABASE_URL="postgresql://postgres@no-such-host.invalid/platform",
    )
    line = one_error_line(proc, 5)
    assert "no-such-host.invalid" in line and "platform" in line


def test_a_password_in_a_url_is_never_shown(site: Site) -> None:
    closed = free_port()
    for url, code in [
        (f"postgresql://u@127.0.0.1:{closed}/db?password=hunter2", 5),
        (f"postgresql://u:hunter2@127.0.0.1:{closed}/db", 5),
        ("postgresql://u:hunter2@127.0.0.1:port/db", 2),
    ]:
        proc = site.hg(
            "notifications", "count", user=email("ada"), check=False, HUMANGLUE_DATABASE_URL=url
        )
        assert "hunter2" not in one_error_line(proc, code)
    broker = f"redis://:hunter2@127.0.0.1:{closed}/0?password=hunter2"
    proc = site.hg("--broker-url", broker, "status", check=False)
    assert proc.returncode == 1 and "hunter2" not in proc.stdout + proc.stderr
    assert f"redis://:***@127.0.0.1:{closed}/0?password=***" in proc.stdout


def test_a_nul_in_the_config_file_is_exit_2(site: Site) -> None:
    config = site.home / "nul.toml"
    config.write_text('user = "ada\\u0000@example.edu"\n')  # TOML's spelling of a NUL
    proc = site.hg("notifications", "count", check=False, HUMANGLUE_CONFIG=str(config))
    assert "contains a NUL character" in one_error_line(proc, 2)


def test_a_whole_id_in_any_spelling_is_that_id(site: Site) -> None:
    (ident,) = notify(site, 1)
    bare = ident.replace("-", "")
    for spelling in (f"urn:{bare}", bare, f"urn:{bare}".upper()):
        out = site.hg("notifications", "show", "--json", spelling, user=email("ada")).stdout
        assert json.loads(out)["id"] == ident, spelling


def test_a_read_never_creates_a_database(site: Site) -> None:
    path = site.home / "typo" / "hg.db"
    proc = site.hg(
        "notifications",
        "count",
        user=email("ada"),
        check=False,
        HUMANGLUE_DATABASE_URL=f"sqlite:///{path}",
    )
    assert "no database at" in one_error_line(proc, 1)
    assert not path.exists() and not path.parent.exists()


# --- who and what ---------------------------------------------------------------------------------


def test_user_email_matches_exactly_or_case_insensitively_only_when_unique(site: Site) -> None:
    upper = site.person("Mixed", "instructor")
    site.sql("UPDATE profiles SET email = 'Mixed@example.edu' WHERE id = :i", i=upper)
    lower = site.person("mixed", "instructor")
    whoami = "SELECT full_name FROM profiles WHERE id = :i"
    assert site.sql(whoami, i=lower)[0][0] == "Mixed"  # both are titled; ids tell them apart
    # The exact email is that person, not the other
    ids = {upper: "Mixed@example.edu", lower: "mixed@example.edu"}
    for pid, address in ids.items():
        site.sql(
            "INSERT INTO notifications (user_id, type, title, message) "
            "VALUES (:u, 'review', :t, 'm')",
            u=pid,
            t=address,
        )
        out = json.loads(site.hg("notifications", "list", "--json", user=address).stdout)
        assert [n["title"] for n in out["items"]] == [address]
    # A spelling that matches both but for case names both, exit 2
    line = one_error_line(
        site.hg("notifications", "list", user="MIXED@example.edu", check=False), 2
    )
    assert "Mixed@example.edu" in line and "mixed@example.edu" in line
    # Case-insensitive where that is unique
    assert site.hg("notifications", "count", user="ADA@EXAMPLE.EDU").returncode == 0


def test_course_by_id_prefix_or_exact_title(site: Site) -> None:
    notify(site, 2)
    site.enroll(course=site.people["other_course"])
    pipeline.drain(site.engine)
    course = site.people["course"]

    def titles(*args: str, user: str = "ada") -> list[str]:
        out = site.hg("notifications", "list", "--json", *args, user=email(user)).stdout
        return [n["data"]["course_id"] for n in json.loads(out)["items"]]

    assert titles("--course", course[:8]) == [course, course]
    assert titles("--course", course.upper()) == [course, course]
    assert titles("--course", "Deep Listening") == [course, course]
    # Someone else's course is unknown to ada, as any unknown id is (CONTRACT §3).
    one_error_line(
        site.hg("notifications", "list", "--course", "Pottery", user=email("ada"), check=False), 3
    )
    one_error_line(
        site.hg("notifications", "list", "--course", "", user=email("ada"), check=False), 2
    )
    one_error_line(
        site.hg(
            "notifications", "list", "--course", "Underwater Basket", user=email("ada"), check=False
        ),
        3,
    )
    site.course("cy", "Deep Listening")  # a course of that title that ada does not see
    assert titles("--course", "Deep Listening") == [course, course]
    site.course("cy", "Deep Listening", co=("ada",))  # and one that she co-teaches
    line = one_error_line(
        site.hg(
            "notifications", "list", "--course", "Deep Listening", user=email("ada"), check=False
        ),
        2,
    )
    assert "ambiguous" in line and course[:8] in line


def test_list_and_show_show_the_course(site: Site) -> None:
    (first, *_) = notify(site, 1)
    table = in_terminal(site, "notifications", "list").decode()
    assert "COURSE" in table and "Deep Listening" in table
    shown = site.hg("notifications", "show", first, user=email("ada")).stdout
    assert f"course:   Deep Listening ({site.people['course']})" in shown


@pytest.mark.parametrize(
    ("link", "code"),
    [
        ("javascript:alert(1)", 2),
        ("file:///etc/passwd", 2),
        ("//evil.example", 2),
        ("data:text/html,x", 2),
        ("/\\evil.example", 2),
        ("/\t/evil.example", 2),
        ("https://example.edu/\x1b[2J", 2),
        ("https://example.edu/a b", 2),
        ("https://example.edu/x", 0),
        ("http://example.edu", 0),
        ("/courses/42", 0),
    ],
)
def test_send_link_takes_only_http_urls_and_paths(site: Site, link: str, code: int) -> None:
    proc = site.hg(
        "notifications",
        "send",
        "--all",
        "--title",
        "T",
        "--message",
        "M",
        "--link",
        link,
        user=email("root"),
        check=False,
    )
    assert proc.returncode == code, proc.stderr
    queued = site.sql("SELECT count(*) FROM hg_events WHERE kind = 'announcement.sent'")[0][0]
    assert queued == (1 if code == 0 else 0)


# --- bulk delete ----------------------------------------------------------------------------------


def test_delete_by_filters_asks_or_needs_yes(site: Site) -> None:
    ids = notify(site, 4)
    ada = email("ada")
    site.hg("notifications", "read", ids[0], ids[1], user=ada)
    # Off a terminal, without --yes: refused, nothing deleted
    line = one_error_line(site.hg("notifications", "delete", "--read", user=ada, check=False), 2)
    assert "--yes" in line and "2 notifications" in line
    assert site.count("user_id = :u", u=site.people["ada"]) == 4
    # With --yes: the read ones go, and it says how many
    out = site.hg("notifications", "delete", "--read", "--yes", "--json", user=ada).stdout
    assert json.loads(out) == {"deleted": 2}
    left = json.loads(site.hg("notifications", "list", "--json", user=ada).stdout)["items"]
    assert {n["id"] for n in left} == {ids[2], ids[3]}
    site.hg("notifications", "read", ids[2], user=ada)
    proc = site.hg("notifications", "delete", "--read", user=ada, check=False)
    assert "would delete 1 notification:" in one_error_line(proc, 2)
    site.hg("notifications", "unread", ids[2], user=ada)
    said = site.hg("notifications", "delete", "--type", "enrollment", "--yes", user=ada).stdout
    assert said.strip() == "deleted 2 notifications"
    # Ids and filters together, or nothing at all, are refused
    one_error_line(site.hg("notifications", "delete", ids[0], "--read", user=ada, check=False), 2)
    one_error_line(site.hg("notifications", "delete", user=ada, check=False), 2)
    assert site.count("user_id = :u", u=site.people["bob"]) == 4  # bob's untouched


def test_an_email_that_is_not_utf8_is_bad_input(pg_site: Site) -> None:
    """Found by tests/test_properties.py: `access grant $'@\\x80'` was exit 1 (the driver could
    not encode the lone surrogate argv carries)."""
    for args in (("access", "grant", "@\udc80"), ("access", "revoke", "a@\udc80")):
        proc = pg_site.hg(*args, user=None, check=False)
        assert "is not valid UTF-8" in one_error_line(proc, 2)
