"""The Celery edge: `celery -A worker worker` and `celery -A worker beat`.

Kept thin over `humanglue_cli.core`: tasks deserialize, call the core, declare retries.
"""

from worker.celery_app import app

__all__ = ["app"]
