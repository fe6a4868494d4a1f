"""Meta-tests (sqlite-utils' habit): every command has help with an example, and the README
names every command."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from humanglue_cli.commands.app import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands() -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, (*path, name))
        else:
            found.append(path)

    walk(typer.main.get_command(app), ())
    return sorted(found)


COMMANDS = _commands()


def test_every_contract_command_exists() -> None:
    for path in [
        ("db", "upgrade"),
        ("worker",),
        ("demo",),
        ("status",),
        ("maintenance", "cleanup"),
        ("events", "failed"),
        ("events", "retry"),
    ] + [
        ("notifications", c)
        for c in ("list", "show", "tail", "read", "unread", "delete", "read-all", "count", "send")
    ]:
        assert path in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output and "humanglue" in result.output.split("Example:")[1]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_readme_names_the_command(path: tuple[str, ...]) -> None:
    assert path[-1] in README, f"README.md does not mention `{' '.join(path)}`"


def test_the_root_lists_each_command_as_its_own_help_says() -> None:
    """`humanglue --help` lists the commands from app.COMMANDS without building them: each
    line must be what the command itself would show."""
    from typer._click.utils import make_default_short_help

    from humanglue_cli.commands.app import COMMANDS, load_command

    root = typer.main.get_command(app)
    assert list(root.commands) == list(COMMANDS)  # nothing more, nothing less, in order
    for name, (_, _, summary) in COMMANDS.items():
        command = load_command(name)
        for width in (20, 45, 74, 200):
            assert make_default_short_help(summary, width) == command.get_short_help_str(width)
    listed = CliRunner().invoke(app, ["--help"]).output
    assert all(f"  {name} " in listed for name in COMMANDS)
