"""The project's errors, and the one map from error to exit code (CONTRACT §3)."""

from __future__ import annotations

from humanglue_cli.core.text import shown


class HumanGlueError(Exception):
    """Base class: an expected failure with a one-line message for the user."""

    exit_code = 1


class BadInput(HumanGlueError):
    """Malformed input or usage, found before anything was done."""

    exit_code = 2


class NoActingUser(BadInput):
    """A command needs an acting user and none was given."""


class NotFound(HumanGlueError):
    """A well-formed id or email that is unknown, or belongs to someone else."""

    exit_code = 3


class Forbidden(HumanGlueError):
    """The acting user's role may not do this."""

    exit_code = 4


class Unavailable(HumanGlueError):
    """The database or broker cannot be reached."""

    exit_code = 5


class SchemaError(HumanGlueError):
    """The database has no schema, an old one, or one that HumanGlue cannot adopt."""

    exit_code = 1


class SomeEventsFailed(HumanGlueError):
    """`worker --burst` handled events that failed (kept for retry)."""

    exit_code = 1


INTERRUPTED = 130  # Ctrl-C, as shells report it


def exit_code_for(error: BaseException) -> int:
    """The documented exit code for an error (CONTRACT §3); 1 for anything unexpected."""
    if isinstance(error, HumanGlueError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED
    return 1


def first_line(error: BaseException) -> str:
    """The first line of an error's message — the driver's own if it is wrapped — or its type."""
    orig = getattr(error, "orig", None) or error
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def check_range(value: int, low: int, high: int, name: str) -> int:
    """`value` if low <= value <= high, else BadInput naming the option (`--limit`, `-n`)."""
    if not low <= value <= high:
        raise BadInput(f"{name} must be between {low} and {high}, not {value}")
    return value


def check_utf8(text: str, name: str) -> str:
    """`text` if it is UTF-8, else BadInput naming the option (`--course`, `--title`): bytes
    that are not UTF-8 reach argv as lone surrogates, which no database can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{name}: {shown(text)} is not valid UTF-8") from None
    return text
