"""The unread counts' triggers add their rows in the order of the person's id (PostgreSQL).

Migration 0010's statement triggers add one row to `hg_unread_counts` per (person, type) that a
statement changed: a `send --all` to 100,000 people adds 100,000. Their grouping hashes, so the
rows came out in hash order and each went to a random leaf of the counts' index on `user_id`,
and with the default `work_mem` (4 MB) the grouping spilled to disk in five batches. Sorted by
`user_id` before they are inserted, consecutive rows fall on the same leaf; with 64 MB for the
function alone the grouping and the sort stay in memory. Same 100,000-row fan-out, interleaved
on one database (`bench/send_all.py`'s statement, 5 rounds, the fan-out itself sorted too):
the statement 1.22 → 1.14 s, the trigger 0.33 s → ~0.1 s.

Only the functions change (CREATE OR REPLACE): the triggers that call them, and the counts
already there, stay as they are. What a statement adds is the same rows as before.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TABLE = "hg_unread_counts"
DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
WORK_MEM = "64MB"  # the function's own: a 100,000-row statement's grouping and sort in memory
# event → the signed rows that become deltas (as migration 0010)
DELTAS = {
    "INSERT": "SELECT user_id, type, 1 AS n FROM added WHERE read_at IS NULL",
    "UPDATE": (
        "SELECT user_id, type, 1 AS n FROM after WHERE read_at IS NULL\n"
        "  UNION ALL SELECT user_id, type, -1 FROM before WHERE read_at IS NULL"
    ),
    "DELETE": "SELECT user_id, type, -1 AS n FROM removed WHERE read_at IS NULL",
}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _functions(sorted_: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    s = _ident(bind.execute(sa.text("SELECT current_schema()")).scalar_one())
    settings = f"{DEFINER} SET work_mem = '{WORK_MEM}'" if sorted_ else DEFINER
    order = " ORDER BY user_id" if sorted_ else ""
    for event, deltas in DELTAS.items():
        # Replaced in place: the owner, the grants (none to PUBLIC) and the triggers stay.
        op.execute(
            f"CREATE OR REPLACE FUNCTION {s}.hg_unread_{event.lower()}() RETURNS trigger "
            f"LANGUAGE plpgsql {settings} AS $fn$\n"
            "BEGIN\n"
            f"  INSERT INTO {s}.{TABLE} (user_id, type, n)\n"
            f"  SELECT user_id, type, sum(n) FROM ({deltas}) AS d\n"
            f"  GROUP BY user_id, type HAVING sum(n) <> 0{order};\n"
            "  RETURN NULL;\n"
            "END $fn$"
        )


def upgrade() -> None:
    _functions(sorted_=True)


def downgrade() -> None:
    _functions(sorted_=False)
