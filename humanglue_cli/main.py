"""Entry point of the `humanglue` console script."""

from __future__ import annotations


def main() -> None:
    from humanglue_cli.commands.runtime import ensure_streams

    ensure_streams()
    from humanglue_cli.commands.app import app

    app()


if __name__ == "__main__":
    main()
