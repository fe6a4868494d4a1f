"""Workers record when they stop on a signal (`status` tells a stopped worker from a killed one).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from humanglue_cli.core.migrate import note

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    kind = sa.DateTime(timezone=True).with_variant(sa.Text(), "sqlite")
    op.add_column("hg_workers", sa.Column("stopped_at", kind, nullable=True))
    note("column", "hg_workers.stopped_at")


def downgrade() -> None:
    with op.batch_alter_table("hg_workers") as batch:
        batch.drop_column("stopped_at")
