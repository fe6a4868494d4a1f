"""`humanglue demo`, run as a real process: its own database, live notifications, exit 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from humanglue_cli.core import demo as sample
from tests.helpers import CLI

LINE = re.compile(r"^\+\d+:\d\d  (?P<id>[0-9a-f]{8})  (?P<type>[a-z_]+) +(?P<title>\S.*)$")
PATH = re.compile(r"demo database: (?P<path>\S+\.db)")


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUMANGLUE_")}
    env.update(
        HUMANGLUE_DATABASE_URL=f"sqlite:///{tmp_path / 'configured.db'}",
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        NO_COLOR="1",
    )
    return env


def owner_notifications(path: Path) -> list[tuple[str, str, str]]:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT n.id, n.type, n.title FROM notifications n JOIN profiles p "
                    "ON p.id = n.user_id WHERE p.email = :e"
                ),
                {"e": sample.OWNER_EMAIL},
            ).all()
    finally:
        engine.dispose()
    return [(r[0], r[1], r[2]) for r in rows]


def test_demo_runs_on_a_database_of_its_own_and_shows_every_notification_once(
    tmp_path: Path,
) -> None:
    # When the demo runs briefly, busier than by default
    proc = subprocess.run(
        [CLI, "demo", "--seconds", "3", "--speed", "4"],
        env=demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    # Then it ends by itself, successfully, on a new file under the data dir
    assert proc.returncode == 0, proc.stderr
    found = PATH.search(proc.stderr)
    assert found, proc.stderr
    path = Path(found["path"])
    assert path.parent == tmp_path / "data" / "humanglue" and path.exists()
    assert not (tmp_path / "configured.db").exists()  # the configured database is untouched
    # and stdout holds only notification lines, of several types
    lines = proc.stdout.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert lines and all(parsed), proc.stdout
    assert len({m["type"] for m in parsed if m}) >= 4, proc.stdout
    # and every notification of the owner in its database was printed exactly once
    stored = owner_notifications(path)
    printed = Counter(m["id"] for m in parsed if m)
    assert printed == Counter(n_id[:8] for n_id, _, _ in stored)
    assert sorted((m["id"], m["type"], m["title"]) for m in parsed if m) == sorted(
        (n_id[:8], kind, title) for n_id, kind, title in stored
    )
    # and it says how to go on with that database
    go_on = f"--database-url sqlite:///{path} --user {sample.OWNER_EMAIL} notifications"
    for command in ("list", "tail", "read ID"):
        assert f"{go_on} {command}" in proc.stderr


def test_ctrl_c_ends_the_demo_early_with_the_same_closing_text(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [CLI, "demo", "--seconds", "120"],
        env=demo_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        first = proc.stdout.readline() if proc.stdout else ""  # the first notification
        assert LINE.match(first.rstrip("\n")), first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped early" in err
    assert f"--user {sample.OWNER_EMAIL} notifications list" in err
    assert "Traceback" not in err
    path = Path(PATH.search(err)["path"])  # type: ignore[index]
    printed = [first.rstrip("\n"), *out.splitlines()]
    assert len(printed) == len(owner_notifications(path))


@pytest.mark.parametrize("args", [["--seconds", "0"], ["--speed", "0"], ["--seconds", "x"]])
def test_demo_refuses_bad_options_before_doing_anything(tmp_path: Path, args: list[str]) -> None:
    proc = subprocess.run(
        [CLI, "demo", *args],
        env=demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2, proc.stderr
    assert not (tmp_path / "data" / "humanglue").exists()


def test_each_demo_gets_a_new_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    first = sample.new_database_path()
    first.parent.mkdir(parents=True)
    first.touch()
    second = sample.new_database_path()
    assert second != first and not second.exists()
    assert second.parent == tmp_path / "humanglue"
