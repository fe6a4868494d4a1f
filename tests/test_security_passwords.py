"""Passwords really are checked: a private PostgreSQL server with scram-sha-256 (issue 7).

The machine's own server trusts every local connection, so there a personal login's URL
works whatever its password says. Here a server of the test's own (never the machine's)
asks for passwords: the URL that `access grant` writes logs in, a wrong password does not,
`.pgpass` (PGPASSFILE) stands in for a password left out of the URL, PGSSLMODE is honoured,
and a revoked login is refused.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import Site, email, free_port

SUPERUSER_PASSWORD = "operator-secret-7f3a"


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def scram_url() -> Iterator[str]:
    """A private server's superuser URL (password required over TCP)."""
    bindir = _bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("initdb not found: PostgreSQL's server binaries are needed in CI")
        pytest.skip("initdb not found")
    # Not under pytest's tmp dir: the server's user must be able to reach it.
    base = Path(tempfile.mkdtemp(prefix="hg-scram-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
    data, pwfile = base / "data", base / "pw"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    if as_postgres:
        shutil.chown(pwfile, "postgres")
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_postgres, *args], check=True, capture_output=True, timeout=120)

    run(
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "--pwfile",
        str(pwfile),
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--no-sync",
    )
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-w",
        "-l",
        str(base / "log"),
        "start",
    )
    try:
        admin = f"postgresql+psycopg://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{port}"
        engine = sa.create_engine(f"{admin}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE hg"))
        engine.dispose()
        yield f"{admin}/hg"
    finally:
        from humanglue_cli.core.db import dispose_engines

        dispose_engines()
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_passwords_pgpass_and_sslmode_on_a_scram_server(scram_url: str, tmp_path: Path) -> None:
    site = Site.create(scram_url, tmp_path, "postgres")
    try:
        doc = json.loads(site.hg("access", "grant", email("ada"), "--json").stdout)
        url = sa.make_url(doc["database_url"])
        assert url.username == doc["role"] and url.password and url.port == site.engine.url.port

        def count(database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
            return site.hg(
                "notifications",
                "count",
                "--json",
                check=False,
                HUMANGLUE_DATABASE_URL=database_url,
                **env,
            )

        granted = url.render_as_string(hide_password=False)
        assert count(granted).returncode == 0, count(granted).stderr
        wrong = url.set(password="not-the-password").render_as_string(hide_password=False)
        refused = count(wrong)
        assert refused.returncode == 5 and "password authentication failed" in refused.stderr
        assert "not-the-password" not in refused.stderr
        # No password in the URL: libpq takes it from the password file.
        bare = sa.URL.create(
            url.drivername, url.username, None, url.host, url.port, url.database
        ).render_as_string(hide_password=False)
        assert url.password not in bare
        assert count(bare, PGPASSFILE=str(tmp_path / "none")).returncode == 5
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"127.0.0.1:{url.port}:hg:{url.username}:{url.password}\n")
        pgpass.chmod(0o600)
        assert count(bare, PGPASSFILE=str(pgpass)).returncode == 0
        # PGSSLMODE is honoured: this server has no TLS, so `require` cannot connect.
        tls = count(bare, PGPASSFILE=str(pgpass), PGSSLMODE="require")
        assert tls.returncode == 5 and "SSL" in tls.stderr, tls.stderr
        # The operator's own password is never printed either.
        assert SUPERUSER_PASSWORD not in site.hg("status", check=False).stderr
        site.hg("access", "revoke", email("ada"))
        assert count(granted).returncode == 5
    finally:
        site.close()
