"""Who may see what on PostgreSQL: HumanGlue's roles, personal logins, and acting as a person.

`db upgrade` (migration 0004) creates four group roles per database, named with a prefix kept
in `hg_settings` (roles are cluster-wide; several platform databases may share a server):

- `<prefix>_people`: instructors' and students' personal logins. Row-level security restricts
  this group alone: its own notifications (read, `read_at`, delete), the presence it may see,
  its own profile and those of its students, the courses it teaches or takes.
- `<prefix>_operator`: operators' logins. Everything the CLI's operator commands need, and
  membership of `_people` without inheriting it (NOINHERIT), so that acting `--user` someone
  is `SET LOCAL ROLE <prefix>_people` plus that person's id for the transaction.
- `<prefix>_worker`: the workers' logins: read the platform, write notifications and `hg_`.
- `<prefix>_admin`: owns the SECURITY DEFINER functions that create and drop personal logins;
  no one logs in as it, and operators call the functions rather than holding CREATEROLE.

Whom a transaction acts as is `hg_current_person()`: for a personal login, the person it was
granted to — whatever the session sets; for an operator's session, the id the CLI set with
`set_config('humanglue.acting_user', …, true)`; for anyone else, nobody.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core.errors import BadInput, Forbidden, SchemaError

ACTING_SETTING = "humanglue.acting_user"
SETTINGS_TABLE = "hg_settings"
LOGINS_TABLE = "hg_logins"
GROUPS = ("people", "operator", "worker", "admin")
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)


@dataclass(frozen=True)
class Roles:
    """The role names of one database."""

    prefix: str

    @property
    def people(self) -> str:
        return f"{self.prefix}_people"

    @property
    def operator(self) -> str:
        return f"{self.prefix}_operator"

    @property
    def worker(self) -> str:
        return f"{self.prefix}_worker"

    @property
    def admin(self) -> str:
        return f"{self.prefix}_admin"


def prefix_for(database: str, taken: set[str]) -> str:
    """A readable role prefix for `database` that no other database's roles use yet.

    At most 27 characters, so that a login (`<prefix>_u_` and 16 random hex digits) fits in
    PostgreSQL's 63 with room to spare.
    """
    base = "hg_" + (re.sub(r"[^a-z0-9_]+", "_", database.lower()).strip("_")[:16] or "db")
    candidate = base
    while candidate in taken:
        candidate = f"{base}_{secrets.token_hex(2)}"
    return candidate


def roles(conn: sa.Connection) -> Roles | None:
    """This database's roles; None on SQLite (no roles: the file's permissions protect it)."""
    if conn.dialect.name != "postgresql":
        return None
    try:
        prefix = conn.execute(
            sa.text(f"SELECT value FROM {SETTINGS_TABLE} WHERE name = 'role_prefix'")
        ).scalar()
    except sa.exc.ProgrammingError as error:
        if getattr(error.orig, "sqlstate", None) == "42P01":  # undefined table
            raise SchemaError(
                "the schema predates HumanGlue's roles: run `humanglue db upgrade`"
            ) from None
        raise
    if prefix is None:
        raise SchemaError("the schema has no role prefix: run `humanglue db upgrade`")
    return Roles(str(prefix))


def login_person(conn: sa.Connection) -> str | None:
    """The person whose personal login this session is, or None (an operator, the platform…)."""
    if conn.dialect.name != "postgresql":
        return None
    try:
        person = conn.execute(sa.text("SELECT hg_login_person()")).scalar()
    except sa.exc.ProgrammingError as error:
        if getattr(error.orig, "sqlstate", None) == "42883":  # undefined function
            raise SchemaError(
                "the schema predates HumanGlue's roles: run `humanglue db upgrade`"
            ) from None
        raise
    return None if person is None else str(person)


def enter(conn: sa.Connection, people_role: str, user_id: str, *, session: bool = False) -> None:
    """Take `user_id`'s identity and the people's role until the transaction ends (`session`:
    until the connection closes — for a connection of one reader's own, never pooled).

    From here every statement of the transaction passes the same row-level security policies
    as that person's own login would.
    """
    statement = _ENTER_SESSION if session else _ENTER
    conn.execute(statement, {"role": people_role, "setting": ACTING_SETTING, "user": user_id})


# Built once: every transaction of a command, and every read of a tail, runs it.
_ENTER = sa.text("SELECT set_config('role', :role, true), set_config(:setting, :user, true)")
_ENTER_SESSION = sa.text(
    "SELECT set_config('role', :role, false), set_config(:setting, :user, false)"
)


def check_operator(conn: sa.Connection) -> None:
    """Refuse an operator command on SQLite (exit 2) or on a personal login (exit 4)."""
    _need_postgres(conn)
    if login_person(conn) is not None:
        raise Forbidden("a personal login cannot run operator commands")


# --- personal logins ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    user_id: str
    email: str
    full_name: str | None
    role: str
    created_at: datetime | None


def scram_verifier(password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802, RFC 7677).

    Computed here, as `psql`'s \\password does, so that the password itself never reaches the
    server — nor its statement log.
    """
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def grant(conn: sa.Connection, user_id: str) -> tuple[str, str]:
    """Create (or give a new password to) `user_id`'s login; returns (role, password)."""
    _need_postgres(conn)
    password = secrets.token_urlsafe(24)
    role = conn.execute(
        sa.text("SELECT hg_grant_login(CAST(:user AS uuid), :verifier)"),
        {"user": user_id, "verifier": scram_verifier(password)},
    ).scalar_one()
    return str(role), password


def revoke(conn: sa.Connection, user_id: str) -> int | None:
    """Drop `user_id`'s login and end its sessions: the number ended, None if it had none."""
    _need_postgres(conn)
    ended = conn.execute(
        sa.text("SELECT hg_revoke_login(CAST(:user AS uuid))"), {"user": user_id}
    ).scalar()
    return None if ended is None else int(ended)


def logins(conn: sa.Connection) -> list[Login]:
    _need_postgres(conn)
    rows = conn.execute(
        sa.text(
            f"SELECT l.user_id, p.email, p.full_name, l.role_name, l.created_at "
            f"FROM {LOGINS_TABLE} l JOIN profiles p ON p.id = l.user_id ORDER BY p.email"
        )
    )
    return [Login(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def personal_url(operator_url: Any, role: str, password: str) -> str:
    """The operator's URL with the person's login and password instead (host, port, database,
    and options such as `sslmode` kept)."""
    url = sa.make_url(str(operator_url)) if not isinstance(operator_url, sa.URL) else operator_url
    # Never the operator's own credentials, wherever the URL carried them.
    url = url.difference_update_query(["user", "password", "passfile"])
    return url.set(username=role, password=password).render_as_string(hide_password=False)


def _need_postgres(conn: sa.Connection) -> None:
    if conn.dialect.name != "postgresql":
        raise BadInput(
            "personal logins need PostgreSQL: the embedded SQLite default is protected by "
            "its file's permissions instead"
        )
