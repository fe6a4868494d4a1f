"""System announcements (CONTRACT §6 rule 7): validated here, fanned out by the worker."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from humanglue_cli.core import directory, outbox
from humanglue_cli.core.errors import BadInput, Forbidden
from humanglue_cli.core.models import PRIORITIES, ROLES
from humanglue_cli.core.rules import Person


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
            raise BadInput(f"unknown role {self.role!r} (one of: {', '.join(ROLES)})")
        if self.priority not in PRIORITIES:
            raise BadInput(f"unknown priority {self.priority!r} (one of: {', '.join(PRIORITIES)})")
        if not self.title.strip() or not self.message.strip():
            raise BadInput("an announcement needs --title and --message")


def send(conn: sa.Connection, sender: Person, request: Request) -> int:
    """Queue an announcement; the worker fans it out in one statement. Returns the event id."""
    request.validate()
    if sender.role != "admin":
        raise Forbidden("only admins send announcements")
    recipients = [p.id for p in directory.find_people(conn, request.to)] if request.to else []
    payload = {
        "title": request.title,
        "message": request.message,
        "link": request.link,
        "priority": request.priority,
        "to": recipients,
        "role": request.role,
        "all": request.everyone,
        "sender_id": sender.id,
    }
    return outbox.enqueue(conn, "announcement.sent", sender.id, payload)
