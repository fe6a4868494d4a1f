"""`humanglue access …`: personal PostgreSQL logins (operators only).

A person's login is created by the database itself (the admin role's SECURITY DEFINER
function); its password is made here, sent to the server only as a SCRAM verifier, and shown
once: written to `--output` (mode 0600) or to stdout, never to a log.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Annotated, TextIO

import typer

from humanglue_cli.commands.runtime import Group, is_terminal, runtime, status

app = typer.Typer(
    cls=Group, no_args_is_help=True, help="Personal database logins (PostgreSQL; operators)."
)

EmailArg = Annotated[str, typer.Argument(help="the person's email or user id", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


@app.command()
def grant(
    ctx: typer.Context,
    email: EmailArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="write the login's database URL to this file (mode 0600) instead of stdout",
            dir_okay=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a personal login for someone (or give theirs a new password); print its URL once.

    On that login the CLI acts as that person only, and the database shows them only their
    own notifications.

    Example: humanglue access grant ada@example.edu --output ada.url
    """
    from humanglue_cli.core import access
    from humanglue_cli.core.store.people import find_person

    rt = runtime(ctx)
    url = rt.settings.database_url
    made = output is not None and not output.exists()  # a file of ours to remove on failure
    sink = _open_private(output) if output is not None else None  # before anything is created
    try:
        with rt.write() as conn:
            access.check_operator(conn)
            person = find_person(conn, email)
            role, password = access.grant(conn, person.id)
    except BaseException:
        if sink is not None and output is not None:
            sink.close()
            if made:  # never someone's file that was there before
                with contextlib.suppress(OSError):
                    output.unlink()
        raise
    personal = access.personal_url(url, role, password)
    text = (
        json.dumps({"user_id": person.id, "role": role, "database_url": personal})
        if json_out
        else personal
    )
    if sink is None:
        typer.echo(text)
        status(f"created the login {role} for {person.email}: keep this URL secret")
        return
    with sink:
        sink.write(text + "\n")
    status(f"wrote the database URL of {person.email}'s login {role} to {output} (mode 0600)")


def _open_private(path: Path) -> TextIO:
    """`path` opened for writing, readable by its owner only, whatever the umask."""
    from humanglue_cli.core.errors import BadInput

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)  # a file that existed keeps its mode otherwise
    except OSError as error:
        raise BadInput(f"--output {path}: {error.strerror}") from None
    return os.fdopen(fd, "w", encoding="utf-8")


@app.command()
def revoke(ctx: typer.Context, email: EmailArg, json_out: JsonOpt = False) -> None:
    """Drop someone's personal login and end its open sessions.

    Example: humanglue access revoke ada@example.edu
    """
    import sqlalchemy as sa

    from humanglue_cli.core import access
    from humanglue_cli.core.store.people import find_person

    rt = runtime(ctx)
    with rt.write() as conn:
        access.check_operator(conn)
        person = find_person(conn, email)
        ended = access.revoke(conn, person.id)
    if ended is not None:  # a session that logged in again before the drop committed
        with rt.write() as conn:
            ended += int(conn.execute(sa.text("SELECT hg_end_sessions()")).scalar_one())
    if json_out:
        typer.echo(
            json.dumps(
                {"user_id": person.id, "revoked": ended is not None, "sessions_ended": ended or 0}
            )
        )
    elif ended is None:
        status(f"{person.email} has no personal login: nothing to revoke")
    else:
        status(
            f"revoked the login of {person.email}; {ended} open session{'s' * (ended != 1)} ended"
        )


@app.command("list")
def list_(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Who has a personal login.

    Example: humanglue access list --json
    """
    from humanglue_cli.core import access

    rt = runtime(ctx)
    with rt.read() as conn:
        access.check_operator(conn)
        logins = access.logins(conn)
    if json_out:
        items = [
            {
                "user_id": login.user_id,
                "email": login.email,
                "full_name": login.full_name,
                "role": login.role,
                "created_at": login.created_at.isoformat() if login.created_at else None,
            }
            for login in logins
        ]
        typer.echo(json.dumps({"items": items}))
        return
    if not logins:
        if is_terminal():
            status("no one has a personal login")
        return
    from humanglue_cli.commands.render import absolute

    for login in logins:
        when = absolute(login.created_at, rt.tz) if login.created_at else "-"
        typer.echo(f"{login.email}\t{login.role}\t{when}\t{login.full_name or ''}")
