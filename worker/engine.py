"""The settings and database engine of this worker process (re-created after a fork)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from celery.signals import worker_process_init

from humanglue_cli.core.db import dispose_engines, get_engine
from humanglue_cli.core.settings import Settings
from worker.celery_app import settings as _settings


def settings() -> Settings:
    return _settings


def engine() -> sa.Engine:
    return get_engine(_settings.database_url)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A prefork child must not share its parent's pooled connections.
    dispose_engines(close=False)
