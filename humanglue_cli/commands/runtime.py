"""What every command shares: settings, the database, the acting user, and how it ends.

Every way a command can end is decided here, once: a project error is one line and its exit
code (CONTRACT §3); a usage error of the parser is one line and exit 2; a closed pipe or
stdout ends quietly with exit 0 (`humanglue notifications list | head -n 1`); Ctrl-C is 130;
anything else is "unexpected error", one line, exit 1 (HUMANGLUE_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from typer import _click
from typer.core import TyperGroup

from humanglue_cli.core.errors import HumanGlueError, NoActingUser, exit_code_for
from humanglue_cli.core.text import cut, printable

if TYPE_CHECKING:
    import sqlalchemy as sa

    from humanglue_cli.core.domain import Person
    from humanglue_cli.core.settings import Settings

MESSAGE_LIMIT = 300
# Errors of writing stdout: a reader gone, a full disk, a failing device. (The files commands
# write themselves — a cursor file, a login URL — report their own errors.)
OUTPUT_ERRORS = (errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EDQUOT)


def fail(message: str) -> None:
    """One line on stderr, never a traceback (CONTRACT §3); what it quotes is made inert."""
    typer.echo(f"humanglue: {cut(printable(message, newlines=False), MESSAGE_LIMIT)}", err=True)


def ensure_streams() -> None:
    """Give a closed stdout or stderr (`humanglue … >&-`) somewhere harmless to write."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            open_already = getattr(sys, name) is not None
        except OSError:
            open_already = False
        if not open_already:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, os.fdopen(fd, "w", encoding="utf-8", errors="replace"))


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())


def _reader_gone() -> NoReturn:
    """The reader of our output went away (`| head`): stop quietly, as coreutils do."""
    _discard_stdout()
    raise SystemExit(0)


def output_failed(error: OSError) -> int:
    """stdout cannot be written (`> /dev/full`, a closed pipe): exit 0 for a reader gone,
    else one line and exit 1 — never a traceback."""
    if error.errno == errno.EPIPE:
        _reader_gone()
    _discard_stdout()
    fail(f"cannot write the output: {error.strerror or error}")
    return 1


class Group(TyperGroup):
    """The one place where a command's end becomes an exit code (see the module docstring)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _click.exceptions.NoArgsIsHelpError as error:
            typer.echo(error.ctx.get_help() if error.ctx else str(error), err=True)
            code = error.exit_code
        except _click.exceptions.UsageError as error:
            hint = f" (see `{error.ctx.command_path} --help`)" if error.ctx else ""
            fail(f"{error.format_message()}{hint}")
            code = error.exit_code
        except _click.exceptions.ClickException as error:
            fail(error.format_message())
            code = error.exit_code
        except typer.Abort:
            fail("aborted")
            code = 1
        except OSError as error:  # writing the output (--help, --version, an echo)
            code = output_failed(error)
        if not standalone_mode:
            return code
        raise SystemExit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HumanGlueError as error:
            fail(str(error))
            ctx.exit(exit_code_for(error))
        except (typer.Exit, typer.Abort, _click.exceptions.ClickException):
            raise
        except KeyboardInterrupt as error:
            ctx.exit(exit_code_for(error))
        except OSError as error:
            if error.errno in OUTPUT_ERRORS:  # what escapes a command is its output's
                ctx.exit(output_failed(error))
            _unexpected(ctx, error)
        except Exception as error:  # the last resort: still one line, exit 1
            _unexpected(ctx, error)


def _unexpected(ctx: typer.Context, error: Exception) -> NoReturn:
    if os.environ.get("HUMANGLUE_DEBUG"):
        traceback.print_exc()
    fail(f"unexpected error: {type(error).__name__}: {error}".splitlines()[0])
    ctx.exit(exit_code_for(error))


@dataclass
class Runtime:
    """Built by the global options; settings and the engine are resolved on first use.

    Once the acting user is known, every transaction the command opens (`read`, `write`) takes
    that person's identity and, on PostgreSQL, the people's role (see `core/access.py`): what
    the command reads and changes then passes the database's row-level security.
    """

    flags: dict[str, str | None] = field(default_factory=dict)
    _settings: Settings | None = None
    _person: Person | None = None
    _people_role: str | None = None  # on PostgreSQL, when an operator acts as _person

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from humanglue_cli.core.settings import load_settings

            self._settings = load_settings(**self.flags)
        return self._settings

    @property
    def tz(self) -> tzinfo:
        """The display time zone (validated when first needed)."""
        from humanglue_cli.core.timeutil import zone

        return zone(self.settings.tz)

    @property
    def engine(self) -> sa.Engine:
        from humanglue_cli.core.db import get_engine

        return get_engine(self.settings.database_url)

    @contextlib.contextmanager
    def read(self, snapshot: bool = False) -> Iterator[sa.Connection]:
        """A read-only connection (never blocks a writer on SQLite); `snapshot`: see
        `core.db.reading`."""
        from humanglue_cli.core.db import reading, wrap_errors

        engine = self.engine
        with wrap_errors(engine), reading(engine, snapshot) as conn:
            self._enter(conn)
            yield conn

    def session(self) -> sa.Connection:
        """PostgreSQL: a read-only connection of the caller's own — out of the pool, in
        autocommit, acting as the command's person for as long as it is open — for a follower
        that reads in one statement per poll (core/tail.py). The caller closes it."""
        from humanglue_cli.core import access
        from humanglue_cli.core.db import wrap_errors

        engine = self.engine
        with wrap_errors(engine):
            conn = engine.connect()
            try:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.detach()  # its session settings must never reach another pool user
                conn.exec_driver_sql("SET default_transaction_read_only = on")
                if self._person is not None and self._people_role is not None:
                    access.enter(conn, self._people_role, self._person.id, session=True)
            except BaseException:
                conn.close()
                raise
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A connection in a transaction, committed if the block succeeds."""
        from humanglue_cli.core.db import wrap_errors

        engine = self.engine
        with wrap_errors(engine), engine.begin() as conn:
            self._enter(conn)
            yield conn

    def acting_user(self, conn: sa.Connection) -> Person:
        """The person the command acts as (CONTRACT §2), whose rights the rest of `conn`'s
        transaction has: exit 2 if none is named, 3 if unknown, 4 if a personal login names
        someone else."""
        if self._person is None:
            self._person, self._people_role = self._resolve(conn)
        self._enter(conn)
        return self._person

    def _resolve(self, conn: sa.Connection) -> tuple[Person, str | None]:
        from humanglue_cli.core import access
        from humanglue_cli.core.errors import Forbidden
        from humanglue_cli.core.store.people import find_person
        from humanglue_cli.core.text import shown

        named = self.settings.user
        own = access.login_person(conn)
        if own is not None:  # a personal login: the person is the login, whatever is named
            person = find_person(conn, own)
            if named and not _same_person(person, named):
                raise Forbidden(f"this login acts as {person.email} only, not as {shown(named)}")
            return person, None
        if not named:
            raise NoActingUser("no acting user: pass --user EMAIL or set HUMANGLUE_USER")
        person = find_person(conn, named)
        roles = access.roles(conn)
        return person, roles.people if roles is not None else None

    def _enter(self, conn: sa.Connection) -> None:
        if self._person is not None and self._people_role is not None:
            from humanglue_cli.core import access

            access.enter(conn, self._people_role, self._person.id)


def _same_person(person: Person, named: str) -> bool:
    text = named.strip().lower()
    return text in (person.email.lower(), person.id.lower())


def runtime(ctx: typer.Context) -> Runtime:
    obj = ctx.find_object(Runtime)
    if obj is None:  # a sub-app invoked on its own (tests)
        obj = ctx.ensure_object(Runtime)
    return obj


def is_terminal() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def status(message: str) -> None:
    """A progress or status line on stderr (CONTRACT §3)."""
    typer.echo(f"humanglue: {printable(message, newlines=False)}", err=True)


def warn_if_exposed(settings: Settings) -> None:
    """One line on stderr if the default database may be read by other users.

    Only the default location: a database given by URL is where its owner chose to put it.
    The file is never changed (core/private).
    """
    from humanglue_cli.core import private
    from humanglue_cli.core.settings import default_database_path, default_database_url

    if settings.database_url == default_database_url():
        reason = private.exposure(default_database_path())
        if reason:
            status(f"warning: {reason}")
