"""What every command shares: settings, the database, the acting user, error reporting."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from humanglue_cli.core.errors import HumanGlueError, NoActingUser
from humanglue_cli.core.settings import Settings, load_settings

if TYPE_CHECKING:
    import sqlalchemy as sa

    from humanglue_cli.core.rules import Person


def fail(message: str) -> None:
    """One line on stderr, never a traceback (CONTRACT §3)."""
    typer.echo(f"humanglue: {message}", err=True)


class Group(TyperGroup):
    """Maps the project's errors to their exit codes, in one place."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HumanGlueError as error:
            fail(str(error))
            ctx.exit(error.exit_code)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except KeyboardInterrupt:
            ctx.exit(130)
        except Exception as error:  # the last resort: still one line, exit 1
            if os.environ.get("HUMANGLUE_DEBUG"):
                traceback.print_exc()
            fail(f"unexpected error: {type(error).__name__}: {error}".splitlines()[0])
            ctx.exit(1)


@dataclass
class Runtime:
    """Built by the global options; settings and the engine are resolved on first use."""

    flags: dict[str, str | None] = field(default_factory=dict)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(**self.flags)
        return self._settings

    @property
    def engine(self) -> sa.Engine:
        from humanglue_cli.core.db import get_engine

        return get_engine(self.settings.database_url)

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read-only connection (never blocks a writer on SQLite)."""
        from humanglue_cli.core.db import wrap_errors

        with wrap_errors(self.engine), self.engine.connect() as conn:
            conn = conn.execution_options(readonly=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A connection in a transaction, committed if the block succeeds."""
        from humanglue_cli.core.db import wrap_errors

        with wrap_errors(self.engine), self.engine.begin() as conn:
            yield conn

    def acting_user(self, conn: sa.Connection) -> Person:
        """The person the command acts as (CONTRACT §2): exit 2 if none, 3 if unknown."""
        from humanglue_cli.core.directory import find_person

        if not self.settings.user:
            raise NoActingUser("no acting user: pass --user EMAIL or set HUMANGLUE_USER")
        return find_person(conn, self.settings.user)


def runtime(ctx: typer.Context) -> Runtime:
    obj = ctx.find_object(Runtime)
    if obj is None:  # a sub-app invoked on its own (tests)
        obj = ctx.ensure_object(Runtime)
    return obj


def is_terminal() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
