"""A worker claims a batch in one statement of its own (PostgreSQL): `hg_claim`.

A claim was a transaction of five round trips — BEGIN, its settings, the pick (FOR UPDATE SKIP
LOCKED), the update that counts an attempt and leases, COMMIT — on every batch: at 500 events/s
a worker commits ~180 batches a second, and each round trip wakes the worker and a server
process on the same two cores. `hg_claim` does the pick and the update in one call, run in
autocommit (store/events.claim_at_once); its settings are the function's own: no bitmap scan
(as `claim` sets: the pick walks the due index in id order and stops at the limit, whatever
stale statistics say), and an asynchronous commit (a claim lost in a server crash only gives
its events one more try than counted).

It claims only when none of the due events it picks is a suspect (claimed twice already, to go
alone) or spent: then it returns one row of NULLs, and the worker's full `claim` decides.
SECURITY INVOKER: it can do nothing its caller could not (the workers and operators may update
the outbox; no one else may).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

SIGNATURE = "hg_claim(integer, integer, interval)"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    s = _ident(bind.execute(sa.text("SELECT current_schema()")).scalar_one())
    op.execute(
        f"CREATE FUNCTION {s}.hg_claim(lim integer, suspect integer, lease interval)\n"
        "RETURNS TABLE (id bigint, kind text, entity_id text, raw text, attempts integer,\n"
        "               created_at timestamptz)\n"
        "LANGUAGE plpgsql VOLATILE SET enable_bitmapscan = off\n"
        "SET search_path = pg_catalog, pg_temp AS $fn$\n"
        "DECLARE picked bigint[]; fresh boolean;\n"
        "BEGIN\n"
        "  PERFORM set_config('synchronous_commit', 'off', true);\n"
        "  SELECT array_agg(p.id ORDER BY p.id), bool_and(p.attempts + 1 < suspect)\n"
        "    INTO picked, fresh\n"
        f"    FROM (SELECT e.id, e.attempts FROM {s}.hg_events AS e\n"
        "          WHERE e.status = 'pending' AND e.available_at <= now()\n"
        "          ORDER BY e.id LIMIT lim FOR UPDATE SKIP LOCKED) AS p;\n"
        "  IF picked IS NULL THEN\n"
        "    RETURN;\n"
        "  END IF;\n"
        "  IF NOT fresh THEN  -- a suspect or a spent one among them: the full claim decides\n"
        "    RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::text,\n"
        "      NULL::integer, NULL::timestamptz;\n"
        "    RETURN;\n"
        "  END IF;\n"
        "  RETURN QUERY\n"
        "    WITH claimed AS (\n"
        f"      UPDATE {s}.hg_events AS e\n"
        "      SET attempts = e.attempts + 1, available_at = now() + lease\n"
        "      WHERE e.id = ANY (picked)\n"
        "      RETURNING e.id, e.kind, e.entity_id, e.payload::text, e.attempts, e.created_at)\n"
        "    SELECT * FROM claimed;\n"
        "END $fn$"
    )
    prefix = bind.execute(
        sa.text(f"SELECT value FROM {s}.hg_settings WHERE name = 'role_prefix'")
    ).scalar_one()
    worker, operator = (_ident(f"{prefix}_{g}") for g in ("worker", "operator"))
    op.execute(f"REVOKE ALL ON FUNCTION {s}.{SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {s}.{SIGNATURE} TO {worker}, {operator}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
