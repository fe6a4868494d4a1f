"""Scheduled maintenance inside the workers (issue 9): ticks claimed once, runs leased.

`hg_maintenance_runs` becomes both the record of what ran and the claim of a tick:
- `scheduled_for`: the tick a scheduled run is for (NULL for a cleanup started by hand);
  unique with `task`, so a tick is claimed once however many workers and beats look at it
  (`INSERT … ON CONFLICT DO NOTHING`, in the database that holds the truth);
- `finished_at`: NULL while the run is going; `lease_until`/`owner`: who runs it, and until
  when that claim holds unless renewed. A worker killed mid-run stops renewing; once the lease
  has run out another worker takes the run over and runs it again (its deletes are batches of
  idempotent deletes: what the first run deleted stays deleted).
`ran_at` is when the run started; rows from before this revision count as finished.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from humanglue_cli.core.migrate import note

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TABLE = "hg_maintenance_runs"
STAMPS = ("scheduled_for", "finished_at", "lease_until")


def _stamp(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True).with_variant(sa.Text(), "sqlite"), nullable=True
    )


def upgrade() -> None:
    for name in STAMPS:
        op.add_column(TABLE, _stamp(name))
        note("column", f"{TABLE}.{name}")
    op.add_column(TABLE, sa.Column("owner", sa.Text, nullable=True))
    note("column", f"{TABLE}.owner")
    op.execute(f"UPDATE {TABLE} SET finished_at = ran_at WHERE finished_at IS NULL")
    op.create_index("ux_hg_maintenance_runs_tick", TABLE, ["task", "scheduled_for"], unique=True)
    op.create_index("ix_hg_maintenance_runs_running", TABLE, ["task", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_hg_maintenance_runs_running", TABLE)
    op.drop_index("ux_hg_maintenance_runs_tick", TABLE)
    with op.batch_alter_table(TABLE) as batch:
        for name in (*STAMPS, "owner"):
            batch.drop_column(name)
