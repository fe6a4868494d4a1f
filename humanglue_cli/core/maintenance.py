"""Maintenance: retention of notifications and presence, and of our own records.

One cleanup deletes, in one transaction, against the database's clock:
- notifications older than the notification retention;
- presence rows offline for longer than the presence retention;
- ledger rows that can no longer prevent a repeat (store/ledger.py): those of entities gone
  from the platform, and those keyed by an event id older than the notification retention;
- rows of workers not seen for a week.
Failed events stay until retried (CONTRACT §6).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import db
from humanglue_cli.core.settings import Settings
from humanglue_cli.core.store import ledger, notifications, presence, runs, workers

WORKER_RECORDS = timedelta(days=7)


def cleanup(engine: sa.Engine, settings: Settings, dry_run: bool) -> dict[str, Any]:
    """Delete (or count, if `dry_run`) what is past its retention; the CONTRACT §3 JSON."""
    keep_notifications = settings.notification_retention  # validated before anything is done
    keep_presence = settings.presence_retention
    with db.wrap_errors(engine), engine.begin() as conn:
        now = db.current_time(conn)
        cutoffs = {"notifications": now - keep_notifications, "presence": now - keep_presence}
        deleted = {
            "notifications": notifications.expire(conn, cutoffs["notifications"], dry_run),
            "presence": presence.expire_offline(conn, cutoffs["presence"], dry_run),
            "ledger": ledger.prune(conn, cutoffs["notifications"], dry_run),
            "workers": workers.forget_before(conn, now - WORKER_RECORDS, dry_run),
        }
        result = {
            "dry_run": dry_run,
            "cutoffs": {k: v.isoformat() for k, v in cutoffs.items()},
            "deleted": deleted,
        }
        if not dry_run:
            runs.record(conn, "cleanup", result)
    return result
