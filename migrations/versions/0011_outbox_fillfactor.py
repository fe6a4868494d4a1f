"""The outbox leaves room on each page for a claim (PostgreSQL): fillfactor 50.

A claim updates each event it takes (an attempt counted, a lease), then the processing deletes
it. On full pages that update cannot stay on the row's page, so it adds a second entry to each
index; and a scan does not mark such rows dead in the due index as it passes them, so every
claim walked every event processed since the last vacuum: during a burst of 20,000 events the
claim grew from 1 ms to 60 ms per batch, and the worker's 2 ms watch paid it too. With half of
each page free the update stays on its page (a HOT update), and the first scan past a processed
event marks it dead for the next: 30 batches of 500 later a claim read 584 buffers instead of
29,583 (0.6 ms instead of 28 ms). The outbox holds events for milliseconds, so the space costs
nothing that lasts. `ALTER TABLE … SET (fillfactor)` takes a lock that does not block the
platform's inserts, and applies to pages filled from now on.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

FILLFACTOR = 50


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE hg_events SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE hg_events RESET (fillfactor)")
