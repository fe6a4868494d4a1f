"""Test helpers: a school on a real database, written to with plain SQL as the platform would."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import migrate
from humanglue_cli.core.db import create_engine

CLI = shutil.which("humanglue") or str(Path(sys.executable).parent / "humanglue")


def new_id() -> str:
    return str(uuid.uuid4())


def wait_until(check: Callable[[], Any], timeout: float = 10.0, every: float = 0.02) -> Any:
    """Poll `check` until it returns something truthy; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(every)


@dataclass
class Site:
    """A migrated database with a school: ada owns "Deep Listening" with co-instructor bob; cy
    owns "Pottery"; students stu and sam; admin root."""

    url: str
    home: Path
    backend: str
    engine: sa.Engine
    people: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, url: str, home: Path, backend: str) -> Site:
        engine = create_engine(url, create=True)
        migrate.upgrade(engine)
        site = cls(url, home, backend, engine)
        for name, role in [
            ("ada", "instructor"),
            ("bob", "instructor"),
            ("cy", "instructor"),
            ("stu", "student"),
            ("sam", "student"),
            ("root", "admin"),
        ]:
            site.person(name, role)
        site.people["course"] = site.course("ada", "Deep Listening", co=("bob",))
        site.people["other_course"] = site.course("cy", "Pottery")
        return site

    def close(self) -> None:
        self.engine.dispose()

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result) if result.returns_rows else []

    def person(self, name: str, role: str) -> str:
        pid = new_id()
        self.sql(
            "INSERT INTO profiles (id, email, full_name, role) VALUES (:i, :e, :n, :r)",
            i=pid,
            e=f"{name}@example.edu",
            n=name.title(),
            r=role,
        )
        self.people[name] = pid
        return pid

    def course(self, owner: str, title: str, co: tuple[str, ...] = ()) -> str:
        cid = new_id()
        self.sql(
            "INSERT INTO courses (id, instructor_id, title) VALUES (:i, :o, :t)",
            i=cid,
            o=self.people[owner],
            t=title,
        )
        for name in co:
            self.sql(
                "INSERT INTO course_instructors (course_id, user_id) VALUES (:c, :u)",
                c=cid,
                u=self.people[name],
            )
        return cid

    def enroll(self, student: str = "stu", course: str | None = None) -> str:
        eid = new_id()
        self.sql(
            "INSERT INTO enrollments (id, course_id, student_id) VALUES (:i, :c, :s)",
            i=eid,
            c=course or self.people["course"],
            s=self.people[student],
        )
        return eid

    def enroll_many(self, count: int, student: str = "stu") -> list[str]:
        ids = [new_id() for _ in range(count)]
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO enrollments (id, course_id, student_id) VALUES (:i, :c, :s)"),
                [{"i": i, "c": self.people["course"], "s": self.people[student]} for i in ids],
            )
        return ids

    def count(self, where: str = "1=1", **params: Any) -> int:
        return int(self.sql(f"SELECT count(*) FROM notifications WHERE {where}", **params)[0][0])

    def pending(self) -> int:
        return int(self.sql("SELECT count(*) FROM hg_events WHERE status = 'pending'")[0][0])

    def env(self, user: str | None = None, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("HUMANGLUE_") or k.startswith("HUMANGLUE_TEST_")
        }
        env.update(
            HUMANGLUE_DATABASE_URL=self.url,
            XDG_DATA_HOME=str(self.home / "data"),
            XDG_CONFIG_HOME=str(self.home / "config"),
            NO_COLOR="1",
        )
        if user:
            env["HUMANGLUE_USER"] = user
        env.update(extra)
        return env

    def hg(
        self, *args: str, user: str | None = None, check: bool = True, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [CLI, *args],
            env=self.env(user, **extra),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"humanglue {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}"
            )
        return proc

    def spawn(self, *args: str, user: str | None = None, **extra: str) -> subprocess.Popen[str]:
        """Start `humanglue ARGS` in the background (its output in files under home)."""
        log = self.home / f"proc-{uuid.uuid4().hex[:6]}.log"
        with log.open("w") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(
                [CLI, *args],
                env=self.env(user, **extra),
                text=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )


def email(name: str) -> str:
    return f"{name}@example.edu"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TcpProxy:
    """A TCP proxy the test can cut — every connection dropped, new ones refused — or turn into
    a blackhole — every connection kept open and new ones accepted, but not a byte (nor a close)
    forwarded, as a load balancer whose backend vanished, or a peer behind a silent network
    partition whose kernel still answers keepalives — and restore."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.server: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.flowing = threading.Event()  # cleared: a blackhole
        self.flowing.set()

    def start(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def blackhole(self) -> None:
        """Forward nothing from now on; what arrives is held, not lost."""
        self.flowing.clear()

    def restore(self) -> None:
        """Forward again, what was held first (a healed partition)."""
        self.flowing.set()

    def cut(self) -> None:
        if self.server is not None:
            with contextlib.suppress(OSError):
                self.server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
            self.server.close()
            self.server = None
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            if server is not self.server:  # cut meanwhile
                client.close()
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # as if the server had refused it
                continue
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self.flowing.wait()  # a blackhole does not pass on a close either
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
