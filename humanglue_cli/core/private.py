"""Files and directories readable by their owner only: the embedded default's privacy.

What we create is private — a directory 0700, a database file 0600, whatever the umask; SQLite
creates its side files (-wal, -shm, -journal) with the database file's permissions. What
exists already is the user's: it is never changed, only, for the default database, warned
about (`exposure`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_dirs(folder: Path) -> None:
    """Create `folder` (and its missing parents) if it does not exist; the folder itself 0700.

    Parents are created as `mkdir -p` would; a folder that exists already is left as it is.
    """
    if folder.is_dir():
        return
    os.makedirs(folder, mode=DIR_MODE, exist_ok=True)
    os.chmod(folder, DIR_MODE)  # the umask may have taken bits away (0o200 would leave 0500)


def create_file(path: Path) -> None:
    """Create `path` empty and 0600 if it does not exist; one that exists is left as it is.

    An empty file is a valid, empty SQLite database: SQLite then writes into it, and creates
    its side files with its permissions.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask took away
    finally:
        os.close(fd)


def exposure(path: Path) -> str | None:
    """Why the database at `path` may be read by other users, or None if it may not.

    Only the file and its directory are judged: those are what this version makes private.
    """
    with contextlib.suppress(OSError):
        file_mode = stat.S_IMODE(path.stat().st_mode)
        dir_mode = stat.S_IMODE(path.parent.stat().st_mode)
        if file_mode & 0o044 and dir_mode & 0o011:
            import shlex

            fix = f"chmod 600 {shlex.quote(str(path))}"
            return (
                f"{path} may be read by other users of this machine (mode {file_mode:04o}, "
                f"its directory {dir_mode:04o}): `{fix}` keeps it to you"
            )
    return None
