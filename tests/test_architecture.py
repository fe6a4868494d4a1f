"""House rules (STYLE.md): one-way imports, an import-light core, a light CLI start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EDGES = {"typer", "rich", "celery", "redis", "kombu", "click", "worker"}


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return {m.split(".")[0] for m in json.loads(out.strip().splitlines()[-1])}


CORE = ROOT / "humanglue_cli" / "core"


@pytest.mark.parametrize(
    "module",
    sorted(
        ".".join(p.relative_to(CORE).with_suffix("").parts)
        for p in CORE.rglob("*.py")
        if p.stem != "__init__"
    ),
)
def test_core_modules_import_no_edge(module: str) -> None:
    loaded = _modules_after(f"import humanglue_cli.core.{module}")
    assert not loaded & EDGES, f"core.{module} pulls in {sorted(loaded & EDGES)}"


def test_worker_tasks_do_not_load_the_cli() -> None:
    loaded = _modules_after("import worker.tasks")
    assert "celery" in loaded
    assert not loaded & {"typer", "rich"}
    full = subprocess.run(
        [
            sys.executable,
            "-c",
            "import worker.tasks, sys; "
            "print([m for m in sys.modules if m.startswith('humanglue_cli.commands')])",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.strip()
    assert full == "[]"


def test_cli_never_imports_worker() -> None:
    for path in (ROOT / "humanglue_cli").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("import worker", "from worker")), path


def test_help_loads_neither_database_nor_celery() -> None:
    code = (
        "import sys; sys.argv = ['humanglue', '--help']\n"
        "from humanglue_cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    loaded = _modules_after(code)
    assert not loaded & {"sqlalchemy", "psycopg", "celery", "redis", "alembic", "kombu"}
