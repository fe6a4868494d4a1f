"""Maintenance runs (`hg_maintenance_runs`): what each cleanup did, for `status` and audit."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import db
from humanglue_cli.core.models import maintenance_runs

R = maintenance_runs.c


def record(conn: sa.Connection, task: str, result: dict[str, Any]) -> None:
    conn.execute(sa.insert(maintenance_runs).values(task=task, ran_at=db.now(conn), result=result))


def last(conn: sa.Connection, task: str) -> sa.Row[Any] | None:
    query = sa.select(maintenance_runs).where(R.task == task).order_by(R.id.desc()).limit(1)
    return conn.execute(query).first()
