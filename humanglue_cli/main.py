"""Entry point of the `humanglue` console script."""

from __future__ import annotations

import contextlib
import gc
import sys
import threading


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
    # Start-up allocates a few hundred thousand objects (SQLAlchemy, psycopg, typer, ours) that
    # all live until the process ends: collecting among them finds nothing, and the collections
    # at exit walk them all again (tens of ms of a `list`, more than its query). So no collection
    # while a command starts, collections as usual in one that runs on (worker, tail, --follow),
    # and none at exit; the connections are closed properly first.
    gc.disable()
    resume = threading.Timer(GC_AFTER, gc.enable)
    resume.daemon = True
    resume.start()
    try:
        from humanglue_cli.commands.runtime import ensure_streams

        ensure_streams()
        from humanglue_cli.commands.app import app

        app()
    finally:
        resume.cancel()
        _close_connections()
        gc.freeze()


GC_AFTER = 1.0  # seconds: a command still running then collects garbage as usual


def _close_connections() -> None:
    db = sys.modules.get("humanglue_cli.core.db")
    if db is not None:
        with contextlib.suppress(Exception):
            db.dispose_engines()


if __name__ == "__main__":
    main()
