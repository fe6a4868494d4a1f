"""Maintenance: retention of notifications, activity and presence, and of our own records.

A cleanup deletes, against the database's clock (the cut-offs fixed when it starts):
- notifications and activity entries older than the notification retention;
- presence rows offline for longer than the presence retention, and the daily presence peaks
  of days before that;
- ledger rows that can no longer prevent a repeat (store/ledger.py): those of entities gone
  from the platform, and those keyed by an event id older than the notification retention;
- rows of workers not seen for a week, and finished runs older than a week.
Failed events stay until retried (CONTRACT §6).

It deletes in batches of BATCH rows, each its own short transaction (store/expiry.py), so the
platform's inserts never wait for more than one batch — on SQLite too, where a writer holds
the whole database: there it pauses after each batch as long as the batch took, since a
writer that waits for SQLite's lock sleeps between its tries (up to 100 ms) and would
otherwise find the next batch holding it each time it wakes. Runs of the job never overlap:
each claims its run first (store/runs.py) and renews the claim's lease after every batch. A
run cut short (a killed worker) has deleted some batches and left the rest; they are
idempotent, so whoever runs next — a takeover once the lease runs out, or the next tick —
deletes what is still there.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import db
from humanglue_cli.core.models import (
    activity,
    ledger,
    maintenance_runs,
    notifications,
    presence_peaks,
    student_presence,
    workers,
)
from humanglue_cli.core.settings import Settings
from humanglue_cli.core.store import activity as activity_store
from humanglue_cli.core.store import expiry, presence, runs
from humanglue_cli.core.store import ledger as ledger_store
from humanglue_cli.core.store import notifications as notification_store
from humanglue_cli.core.store import workers as worker_store

WORKER_RECORDS = timedelta(days=7)
RUN_RECORDS = timedelta(days=7)
LEASE = timedelta(seconds=60)  # renewed after every batch; a dead runner's run is retaken after
BATCH = {"postgresql": 10_000, "sqlite": 2_000}

Progress = Callable[[str, int, int], None]  # (what, deleted so far, total)


class Busy(Exception):
    """Another run of the job is going."""


class LostClaim(Exception):
    """The run was taken over by another runner (this one's lease ran out)."""


def owner_id() -> str:
    """Who claims runs: this host and process, uniquely."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _targets(
    conn: sa.Connection, cutoffs: dict[str, datetime], now: datetime
) -> dict[str, tuple[sa.Table, sa.ColumnElement[bool]]]:
    old_notifications = cutoffs["notifications"]
    return {
        "notifications": (notifications, notification_store.expired(old_notifications)),
        "activity": (activity, activity_store.expired(old_notifications)),
        "presence": (student_presence, presence.offline_before(cutoffs["presence"])),
        "peaks": (presence_peaks, presence.peaks_before(conn, cutoffs["presence"])),
        "ledger": (ledger, ledger_store.prunable(conn, old_notifications)),
        "workers": (workers, worker_store.forgotten(now - WORKER_RECORDS)),
        "runs": (maintenance_runs, runs.forgotten(conn, now - RUN_RECORDS)),
    }


def _cutoffs(engine: sa.Engine, settings: Settings) -> tuple[datetime, dict[str, datetime]]:
    keep_notifications = settings.notification_retention  # validated before anything is done
    keep_presence = settings.presence_retention
    with db.reading(engine) as conn:
        now = db.current_time(conn)
    return now, {"notifications": now - keep_notifications, "presence": now - keep_presence}


def _result(dry_run: bool, cutoffs: dict[str, datetime], deleted: dict[str, int]) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "cutoffs": {k: v.isoformat() for k, v in cutoffs.items()},
        "deleted": deleted,
    }


def cleanup(
    engine: sa.Engine,
    settings: Settings,
    dry_run: bool,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """A cleanup started by hand: delete (or count, if `dry_run`) what is past its retention;
    the CONTRACT §3 JSON.

    Raises:
        Busy: another cleanup is running.
    """
    now, cutoffs = _cutoffs(engine, settings)
    if dry_run:
        with db.wrap_errors(engine), db.reading(engine) as conn:
            targets = _targets(conn, cutoffs, now)
            counted = {k: expiry.count(conn, t, where) for k, (t, where) in targets.items()}
        return _result(True, cutoffs, counted)
    owner = owner_id()
    with db.wrap_errors(engine), engine.begin() as conn:
        run_id = runs.claim(conn, "cleanup", None, owner, LEASE)
    if run_id is None:
        raise Busy("another cleanup is running")
    return run_claimed(engine, settings, run_id, owner, on_progress)


def run_claimed(
    engine: sa.Engine,
    settings: Settings,
    run_id: int,
    owner: str,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the cleanup claimed as `run_id`, in batches, renewing the lease as it goes.

    Raises:
        LostClaim: another runner took the run over (this one was too slow to renew).
    """
    now, cutoffs = _cutoffs(engine, settings)
    limit = BATCH.get(engine.dialect.name, 5_000)
    pace = engine.dialect.name == "sqlite"  # one writer: the platform's wait for the lock
    deleted: dict[str, int] = {}
    with db.wrap_errors(engine):
        with db.reading(engine) as conn:
            targets = _targets(conn, cutoffs, now)
            totals = (
                {k: expiry.count(conn, t, where) for k, (t, where) in targets.items()}
                if on_progress
                else {}
            )
        for name, (table, where) in targets.items():
            deleted[name] = 0
            while True:
                started = time.monotonic()
                with engine.begin() as conn:
                    if not runs.renew(conn, run_id, owner, LEASE):
                        raise LostClaim(f"cleanup run {run_id} was taken over")
                    batch = expiry.delete_batch(conn, table, where, limit)
                deleted[name] += batch
                if pace and batch == limit:  # let the writers that waited in first
                    time.sleep(time.monotonic() - started)
                if on_progress:
                    on_progress(name, deleted[name], max(totals.get(name, 0), deleted[name]))
                if batch < limit:
                    break
        result = _result(False, cutoffs, deleted)
        with engine.begin() as conn:
            notification_store.fold_unread_counts(conn)  # and what the deletes added to them
            if not runs.finish(conn, run_id, owner, result):
                raise LostClaim(f"cleanup run {run_id} was taken over")
    return result
