"""System announcements (CONTRACT §6 rule 7): validated here, fanned out by the worker."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

import sqlalchemy as sa

from humanglue_cli.core.domain import PRIORITIES, ROLES, EventKind, Person
from humanglue_cli.core.errors import BadInput, Forbidden, check_utf8
from humanglue_cli.core.store import events, people
from humanglue_cli.core.text import shown

MAX_TITLE, MAX_MESSAGE, MAX_LINK = 200, 10_000, 2_000


def check_link(link: str) -> str:
    """An `http:`/`https:` URL with a host, or a path on the platform (`/courses/42`).

    Raises:
        BadInput: anything else (`javascript:`, `file:`, a bare word…).
    """
    text = link.strip()
    if len(text) > MAX_LINK:
        raise BadInput(f"--link is longer than {MAX_LINK} characters")
    refused = BadInput(
        f"--link must be an http(s) URL or a path such as /courses/42, not {shown(link)}"
    )
    # Browsers drop tabs and newlines from a URL and read a backslash as "/": "/(backslash)evil"
    # would be "//evil", another site. A link has no backslash, space or control character.
    if "\\" in text or any(c.isspace() or not c.isprintable() for c in text):
        raise refused
    if text.startswith("/") and not text.startswith("//"):
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise refused
    return text


@dataclass(frozen=True)
class Request:
    to: tuple[str, ...] = ()
    role: str | None = None
    everyone: bool = False
    title: str = ""
    message: str = ""
    link: str | None = None
    priority: str = "normal"

    def validate(self) -> None:
        chosen = sum([bool(self.to), self.role is not None, self.everyone])
        if chosen != 1:
            raise BadInput("choose the recipients with exactly one of --to, --role, --all")
        if self.role is not None and self.role not in ROLES:
            raise BadInput(f"unknown role {shown(self.role)} (one of: {', '.join(ROLES)})")
        if self.priority not in PRIORITIES:
            raise BadInput(
                f"unknown priority {shown(self.priority)} (one of: {', '.join(PRIORITIES)})"
            )
        if not self.title.strip() or not self.message.strip():
            raise BadInput("an announcement needs --title and --message")
        if len(self.title) > MAX_TITLE or len(self.message) > MAX_MESSAGE:
            raise BadInput(f"--title is at most {MAX_TITLE} characters, --message {MAX_MESSAGE}")
        for name, text in [("--title", self.title), ("--message", self.message)]:
            check_utf8(text, name)
        for email in self.to:
            check_utf8(email, "--to")
        if self.link is not None:
            check_link(check_utf8(self.link, "--link"))


def send(conn: sa.Connection, sender: Person, request: Request) -> int:
    """Queue an announcement; the worker fans it out in one statement. Returns the event id."""
    request.validate()
    if sender.role != "admin":
        raise Forbidden("only admins send announcements")
    recipients = [p.id for p in people.find_people(conn, request.to)] if request.to else []
    payload = {
        "title": request.title,
        "message": request.message,
        "link": request.link.strip() if request.link else None,
        "priority": request.priority,
        "to": recipients,
        "role": request.role,
        "all": request.everyone,
        "sender_id": sender.id,
    }
    if conn.dialect.name == "postgresql":
        # Queued by the database on the sender's behalf: it checks that whom this transaction
        # acts as is an admin (a person's login has no right to the outbox itself).
        return int(
            conn.execute(
                sa.text(
                    "SELECT hg_send_announcement(CAST(:sender AS uuid), CAST(:payload AS jsonb))"
                ),
                {"sender": sender.id, "payload": json.dumps(payload)},
            ).scalar_one()
        )
    return events.enqueue(conn, EventKind.ANNOUNCEMENT_SENT, sender.id, payload)
