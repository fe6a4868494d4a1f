"""Database and broker URLs: checked before use, and described without their passwords.

A password is never shown, whether it is a URL's `user:password@` or a `password=` in its
query (libpq and redis-py take both), and whether the URL is well-formed or not: an error
quoting a malformed URL masks it first.

A database URL is a SQLAlchemy URL: `sqlite:///PATH` or `postgresql://[USER@][HOST][:PORT]/DB`
(psycopg 3). A PostgreSQL URL must name its database: without one, libpq would quietly pick a
default (the user's name, `PGDATABASE`) — another database than the operator meant. Without a
host libpq uses `PGHOST` or its local socket; messages then say which, so a person always sees
the server and database a command tried.
"""

from __future__ import annotations

import functools
import os
import re
from urllib.parse import urlsplit

from humanglue_cli.core.errors import BadInput
from humanglue_cli.core.text import shown

BROKER_SCHEMES = ("redis", "rediss")
_LIBPQ_SOCKET = "/var/run/postgresql"
# Up to the last "@": a password with an unencoded "@" is masked whole (too much is harmless).
_USERINFO_PASSWORD = re.compile(r"(?<=//)([^:/@]*):.*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def database_url(raw: str, what: str = "database URL") -> str:
    """`raw` as the SQLAlchemy URL we connect with (`postgresql://` → psycopg 3).

    Raises:
        BadInput: not a URL, a scheme we do not support, or a PostgreSQL URL naming no database.
    """
    import sqlalchemy as sa

    text = raw.strip()
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg://"):
        if text.startswith(prefix):
            text = "postgresql+psycopg://" + text[len(prefix) :]
            break
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError):
        raise BadInput(
            f"{what}: not a database URL: {shown(masked(raw))} "
            "(use postgresql://HOST/DBNAME or sqlite:///PATH)"
        ) from None
    if url.drivername == "sqlite":
        if not url.database or url.database == ":memory:":
            raise BadInput(
                f"{what}: a SQLite URL names a file: sqlite:///PATH, not {shown(masked(raw))}"
            )
        return url.render_as_string(hide_password=False)
    if url.drivername != "postgresql+psycopg":
        raise BadInput(
            f"{what}: unsupported database {shown(url.drivername)} "
            "(use postgresql://HOST/DBNAME or sqlite:///PATH)"
        )
    if not url.database:
        raise BadInput(
            f"{what}: {shown(describe(url))} names no database; libpq would pick one of its "
            "defaults: add it, as in postgresql://HOST/DBNAME"
        )
    if url.port is not None and not 0 < url.port < 65536:
        raise BadInput(f"{what}: port {url.port} of {shown(describe(url))} is not 1 to 65535")
    unknown = sorted(set(url.query) - _libpq_options())
    if unknown:
        raise BadInput(
            f"{what}: {shown(describe(url))} has an option libpq does not know: "
            f"{shown(unknown[0])} (see libpq's connection parameters)"
        )
    return url.render_as_string(hide_password=False)


@functools.cache
def _libpq_options() -> frozenset[str]:
    """The keywords the installed libpq takes in a connection string (`?sslmode=…`)."""
    from psycopg import pq

    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def broker_url(raw: str, what: str = "broker URL") -> str:
    """`raw` if it is a Redis URL (`redis://` or `rediss://` for TLS).

    Raises:
        BadInput: anything else.
    """
    try:
        parts = urlsplit(raw.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise BadInput(f"{what}: not a URL: {shown(masked(raw))}") from None
    if parts.scheme not in BROKER_SCHEMES:
        raise BadInput(
            f"{what}: unsupported broker {shown(parts.scheme or masked(raw))} "
            "(use redis://HOST:6379/0, or rediss:// for TLS)"
        )
    number = parts.path.removeprefix("/")
    if number and not (number.isascii() and number.isdigit()):
        raise BadInput(
            f"{what}: a Redis database is a number, as in redis://HOST:6379/0, "
            f"not {shown(parts.path)}"
        )
    return raw.strip()


def describe(url: object) -> str:
    """A URL for messages: its password hidden and, for PostgreSQL, where libpq really goes."""
    import sqlalchemy as sa

    if isinstance(url, str) and not url.startswith(("sqlite", "postgres")):
        return masked(url)
    try:
        parsed = sa.make_url(url)  # type: ignore[arg-type]
    except (sa.exc.ArgumentError, ValueError):
        return masked(str(url))
    if parsed.get_backend_name() != "postgresql":
        return _hide_query_password(parsed.render_as_string(hide_password=True))
    query_host = parsed.query.get("host")
    shown_url = parsed.set(drivername="postgresql").render_as_string(hide_password=True)
    shown_url = _hide_query_password(shown_url)
    if parsed.host or query_host:
        return shown_url
    host = os.environ.get("PGHOST") or _LIBPQ_SOCKET
    port = os.environ.get("PGPORT") or "5432"
    where = f"local socket {host}" if host.startswith("/") else f"PGHOST {host}"
    return f"{shown_url} ({where}, port {port})"


def masked(url: str) -> str:
    """`url` with its password, if any, shown as `***`; `url` may be malformed."""
    return _hide_query_password(_USERINFO_PASSWORD.sub(r"\1:***@", url))


def _hide_query_password(url: str) -> str:
    return _QUERY_PASSWORD.sub(r"\1***", url)
