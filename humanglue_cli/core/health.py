"""`humanglue status`: the database's side of the health checks.

Each check is ok, warn (worth a look, not unhealthy), fail (unhealthy) or skip (could not be
judged because an earlier check failed). The broker is probed by the CLI (the core never
imports redis) and added to the same report.

Why absent workers only warn: events are durable in the outbox, so a worker that is down
loses nothing — the harm is a backlog that waits, and the backlog check fails for that as
soon as a due event has waited STUCK_AFTER. A quiet system whose worker runs from cron
(`worker --burst`) must not page anyone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import migrate, outbox
from humanglue_cli.core.db import describe, get_engine, wrap_errors
from humanglue_cli.core.errors import HumanGlueError
from humanglue_cli.core.models import utcnow

STUCK_AFTER = timedelta(seconds=60)  # a due event waiting longer: the backlog is stuck
WORKER_WINDOW = timedelta(seconds=60)  # heartbeats come every 5 s
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
        return {
            "healthy": self.healthy,
            "checks": {
                c.name: {"status": c.state, "message": c.message, **c.data} for c in self.checks
            },
        }


def _seconds(delta: timedelta) -> float:
    return round(max(delta.total_seconds(), 0.0), 3)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _skipped(reason: str) -> list[Check]:
    """The checks that need the schema, when they cannot run (same keys as when they do)."""
    return [
        Check(
            "backlog",
            "skip",
            reason,
            {
                "pending": None,
                "due": None,
                "oldest_due_age_seconds": None,
                "longest_due_wait_seconds": None,
            },
        ),
        Check("failed_events", "skip", reason, {"count": None}),
        Check("workers", "skip", reason, {"window_seconds": _seconds(WORKER_WINDOW), "seen": []}),
        Check("cleanup", "skip", reason, {"last_run_at": None, "result": None}),
    ]


def database_checks(url: str, now: datetime | None = None) -> list[Check]:
    """Database reachable, schema current, backlog, failed events, workers, last cleanup."""
    now = now or utcnow()
    where = describe(url)
    base = {"url": where, "backend": sa.make_url(url).get_backend_name()}
    head = migrate.head_revision()
    parsed = sa.make_url(url)
    if (
        base["backend"] == "sqlite"
        and parsed.database not in (None, "", ":memory:")
        and not Path(parsed.database).expanduser().exists()
    ):
        # Never create the file by looking at it.
        return [
            Check("database", "fail", f"no database file at {parsed.database}", base),
            Check("schema", "skip", "no database", {"current": None, "head": head}),
            *_skipped("no database"),
        ]
    engine = get_engine(url)
    try:
        with wrap_errors(engine), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        current = migrate.current_revision(engine)
    except (HumanGlueError, sa.exc.DBAPIError) as error:
        reason = _first_line(error)
        return [
            Check("database", "fail", reason, base),
            Check("schema", "skip", "database unreachable", {"current": None, "head": head}),
            *_skipped("database unreachable"),
        ]
    checks = [Check("database", "ok", f"{where} reachable", base), _schema(current, head)]
    if current != head:
        return checks + _skipped("schema not current")
    with wrap_errors(engine), engine.connect() as conn:
        conn = conn.execution_options(readonly=True)
        with conn.begin():
            checks += [*_backlog(conn, now), _workers(conn, now), _cleanup(conn, now)]
    return checks


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


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
    b = outbox.backlog(conn)
    waiting_since = outbox.longest_due_wait_since(conn)
    wait = now - waiting_since if waiting_since else None
    data = {
        "pending": b.pending,
        "due": b.due,
        "oldest_due_age_seconds": _seconds(now - b.oldest_due_at) if b.oldest_due_at else None,
        "longest_due_wait_seconds": _seconds(wait) if wait is not None else None,
    }
    later = b.pending - b.due
    text = f"{b.pending} event{'s' * (b.pending != 1)} waiting" + (
        f" ({later} backing off)" if later else ""
    )
    if wait is not None and wait > STUCK_AFTER:
        backlog = Check(
            "backlog",
            "fail",
            f"{text}; one has been due for {_span(wait)}: is a worker running?",
            data,
        )
    elif wait is not None:
        backlog = Check("backlog", "ok", f"{text}; the longest due for {_span(wait)}", data)
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
    rows = outbox.workers_seen_since(conn, now - WORKER_WINDOW)
    seen = [
        {
            "id": r.id,
            "kind": r.kind,
            "hostname": r.hostname,
            "pid": r.pid,
            "last_seen_at": r.last_seen_at.isoformat(),
            "processed": int(r.processed),
        }
        for r in rows
    ]
    data = {"window_seconds": _seconds(WORKER_WINDOW), "seen": seen}
    window = int(WORKER_WINDOW.total_seconds())
    if not seen:
        return Check(
            "workers",
            "warn",
            f"none seen in the last {window}s (start one: `humanglue worker`)",
            data,
        )
    kinds = ", ".join(sorted({f"{w['kind']}@{w['hostname']}" for w in seen}))
    return Check("workers", "ok", f"{len(seen)} seen in the last {window}s ({kinds})", data)


def _cleanup(conn: sa.Connection, now: datetime) -> Check:
    run = outbox.last_maintenance(conn, "cleanup")
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
    text = f"last run {_span(now - run.ran_at)} ago, deleted {counts}"
    state = "warn" if now - run.ran_at > CLEANUP_STALE_AFTER else "ok"
    return Check("cleanup", state, text, data)
