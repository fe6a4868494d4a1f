"""`humanglue status`: the database's side of the health checks.

Each check is ok, warn (worth a look, not unhealthy), fail (unhealthy) or skip (could not be
judged because an earlier check failed). The broker is probed by the CLI (the core never
imports redis) and added to the same report.

Workers: a worker beats every 5 s, so one whose last beat is older than WORKER_ALIVE (three
beats) is gone. No live worker while one was seen in the last day is a failure — the worker
died or was stopped, and notifications have stopped with it. None seen for a day is only a
warning: a quiet system whose worker runs from cron (`worker --burst`) must not page anyone;
its backlog check fails instead as soon as a due event has waited STUCK_AFTER.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import db, migrate
from humanglue_cli.core.errors import HumanGlueError, first_line
from humanglue_cli.core.runner import HEARTBEAT_EVERY
from humanglue_cli.core.store import events, runs, workers
from humanglue_cli.core.text import one_line
from humanglue_cli.core.timeutil import approximate
from humanglue_cli.core.urls import describe

STUCK_AFTER = timedelta(seconds=30)  # a due event waiting longer: the backlog is stuck
WORKER_ALIVE = timedelta(seconds=3 * HEARTBEAT_EVERY)
WORKER_MEMORY = timedelta(hours=24)  # a worker seen within this should still be there
CLEANUP_STALE_AFTER = timedelta(days=2)  # cleanup is meant to run daily

STATES = ("ok", "warn", "fail", "skip")


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # one of STATES
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def healthy(self) -> bool:
        return not any(c.state == "fail" for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        checks = {c.name: {"status": c.state, "message": c.message, **c.data} for c in self.checks}
        return {"healthy": self.healthy, "checks": checks}


def _seconds(delta: timedelta) -> float:
    return round(max(delta.total_seconds(), 0.0), 3)


def _skipped(reason: str) -> list[Check]:
    """The checks that need the schema, when they cannot run (same keys as when they do)."""
    backlog = {"pending": None, "due": None, "longest_due_wait_seconds": None}
    return [
        Check("backlog", "skip", reason, backlog),
        Check("failed_events", "skip", reason, {"count": None}),
        Check("workers", "skip", reason, {"alive_seconds": _seconds(WORKER_ALIVE), "seen": []}),
        Check("cleanup", "skip", reason, {"last_run_at": None, "result": None}),
    ]


def database_checks(url: str) -> list[Check]:
    """Database reachable, schema current, backlog, failed events, workers, last cleanup."""
    where = describe(url)
    base = {"url": where, "backend": sa.make_url(url).get_backend_name()}
    head = migrate.head_revision()
    try:
        engine = db.get_engine(url)  # never creates a SQLite file by looking at it
        with db.wrap_errors(engine), db.reading(engine) as conn:
            now = db.current_time(conn)
        current = migrate.current_revision(engine)
    except (HumanGlueError, sa.exc.DBAPIError) as error:
        reason = one_line(str(error) if isinstance(error, HumanGlueError) else first_line(error))
        return [
            Check("database", "fail", reason, base),
            Check("schema", "skip", "database unreachable", {"current": None, "head": head}),
            *_skipped("database unreachable"),
        ]
    checks = [Check("database", "ok", f"{where} reachable", base), _schema(current, head)]
    if current != head:
        return checks + _skipped("schema not current")
    with db.wrap_errors(engine), db.reading(engine) as conn:
        checks += [*_backlog(conn, now), _workers(conn, now), _cleanup(conn, now)]
    return checks


def _schema(current: str | None, head: str) -> Check:
    data = {"current": current, "head": head}
    if current is None:
        return Check("schema", "fail", "no HumanGlue schema: run `humanglue db upgrade`", data)
    if current != head:
        return Check(
            "schema",
            "fail",
            f"at revision {current}, this humanglue has {head}: run `humanglue db upgrade`",
            data,
        )
    return Check("schema", "ok", f"revision {current} (current)", data)


def _backlog(conn: sa.Connection, now: datetime) -> list[Check]:
    b = events.backlog(conn)
    wait = now - b.longest_due_since if b.longest_due_since else None
    data = {
        "pending": b.pending,
        "due": b.due,
        "longest_due_wait_seconds": _seconds(wait) if wait is not None else None,
    }
    later = b.pending - b.due
    text = f"{b.pending} event{'s' * (b.pending != 1)} waiting" + (
        f" ({later} backing off or in progress)" if later else ""
    )
    if wait is not None and wait > STUCK_AFTER:
        backlog = Check(
            "backlog",
            "fail",
            f"{text}; one has been due for {approximate(wait)}: is a worker running?",
            data,
        )
    elif wait is not None:
        backlog = Check("backlog", "ok", f"{text}; the longest due for {approximate(wait)}", data)
    else:
        backlog = Check("backlog", "ok", text, data)
    if b.failed:
        failed = Check(
            "failed_events",
            "fail",
            f"{b.failed} failed: see `humanglue events failed`, then `humanglue events retry`",
            {"count": b.failed},
        )
    else:
        failed = Check("failed_events", "ok", "no failed events", {"count": 0})
    return [backlog, failed]


def _workers(conn: sa.Connection, now: datetime) -> Check:
    rows = workers.seen_since(conn, now - WORKER_MEMORY)
    seen = [
        {
            "id": r.id,
            "kind": r.kind,
            "hostname": r.hostname,
            "pid": r.pid,
            "last_seen_at": r.last_seen_at.isoformat(),
            "stopped_at": r.stopped_at.isoformat() if r.stopped_at else None,
            "alive": r.stopped_at is None and now - r.last_seen_at <= WORKER_ALIVE,
            "processed": int(r.processed),
        }
        for r in rows
    ]
    data = {"alive_seconds": _seconds(WORKER_ALIVE), "seen": seen}
    alive = [w for w in seen if w["alive"]]
    if alive:
        kinds = ", ".join(sorted({f"{w['kind']}@{w['hostname']}" for w in alive}))
        return Check("workers", "ok", f"{len(alive)} alive ({kinds})", data)
    if not rows:
        return Check(
            "workers", "warn", "none seen in the last day (start one: `humanglue worker`)", data
        )
    last = rows[0]
    how = "stopped" if last.stopped_at else "silent"
    ago = approximate(now - last.last_seen_at)
    return Check(
        "workers",
        "fail",
        f"no live worker: the last, {last.kind}@{last.hostname} pid "
        f"{last.pid}, {how} {ago} ago (start one: `humanglue worker`)",
        data,
    )


def _cleanup(conn: sa.Connection, now: datetime) -> Check:
    run = runs.last(conn, "cleanup")
    if run is None:
        return Check(
            "cleanup",
            "warn",
            "never run (cron: `humanglue maintenance cleanup` daily)",
            {"last_run_at": None, "result": None},
        )
    data = {"last_run_at": run.ran_at.isoformat(), "result": run.result}
    deleted = (run.result or {}).get("deleted") or {}
    counts = ", ".join(f"{v} {k}" for k, v in deleted.items()) or "nothing"
    text = f"last run {approximate(now - run.ran_at)} ago, deleted {counts}"
    state = "warn" if now - run.ran_at > CLEANUP_STALE_AFTER else "ok"
    return Check("cleanup", state, text, data)
