"""Entry point of the `humanglue` console script."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"] and sys.stdout is not None:  # needs no command tree
        from humanglue_cli import __version__

        try:
            sys.stdout.write(f"humanglue {__version__}\n")
            sys.stdout.flush()
        except OSError as error:
            from humanglue_cli.commands.runtime import output_failed

            sys.exit(output_failed(error))
        return
    from humanglue_cli.commands.runtime import ensure_streams

    ensure_streams()
    from humanglue_cli.commands.app import app

    app()


if __name__ == "__main__":
    main()
