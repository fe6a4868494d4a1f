"""Scheduled maintenance: retention of notifications and presence."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from humanglue_cli.core import inbox, outbox
from humanglue_cli.core.db import wrap_errors
from humanglue_cli.core.models import utcnow
from humanglue_cli.core.settings import Settings, load_settings


def cleanup(engine: sa.Engine, dry_run: bool, settings: Settings | None = None) -> dict[str, Any]:
    """Delete (or count, if `dry_run`) what is past its retention; the CONTRACT §3 JSON."""
    settings = settings or load_settings()
    now = utcnow()
    cutoffs = {
        "notifications": now - settings.notification_retention,
        "presence": now - settings.presence_retention,
    }
    with wrap_errors(engine), engine.begin() as conn:
        deleted = inbox.cleanup(conn, cutoffs["notifications"], cutoffs["presence"], dry_run)
        result = {
            "dry_run": dry_run,
            "cutoffs": {k: v.isoformat() for k, v in cutoffs.items()},
            "deleted": deleted,
        }
        if not dry_run:
            outbox.record_maintenance(conn, "cleanup", result)
    return result
