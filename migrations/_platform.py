"""The platform's tables as the catalog describes them, and whether HumanGlue can adopt them.

The catalog is read without locking the platform's tables: SQLAlchemy's reflection deparses
column defaults with `pg_get_expr`, which waits behind a table held `ACCESS EXCLUSIVE`. Each read
still runs under the upgrade's lock_timeout (`under_lock_timeout`), like every statement that
touches a platform table.
"""

from __future__ import annotations

import sqlalchemy as sa

from humanglue_cli.core.errors import SchemaError
from humanglue_cli.core.migrate import under_lock_timeout
from humanglue_cli.core.models import REQUIRED_COLUMNS

# Types as the database names them; domains are read as the type they are based on.
_PG_COLUMNS = """
SELECT a.attname,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
            ELSE format_type(a.atttypid, a.atttypmod) END
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid = to_regclass(quote_ident(current_schema()) || '.' || quote_ident(:table))
   AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""


def columns(bind: sa.Connection, table: str) -> dict[str, str]:
    """The columns of `table`, in order, each with its type as the database names it."""
    with under_lock_timeout(table):
        if bind.dialect.name == "postgresql":
            rows = bind.execute(sa.text(_PG_COLUMNS), {"table": table}).all()
            return {name: kind for name, kind in rows}
        rows = bind.exec_driver_sql(f'PRAGMA table_info("{table}")').all()
        return {row[1]: row[2] or "untyped" for row in rows}


def existing_tables(bind: sa.Connection) -> dict[str, dict[str, str]]:
    """The platform's tables (CONTRACT §5) that exist already, with their columns."""
    with under_lock_timeout():
        names = set(sa.inspect(bind).get_table_names())
    return {table: columns(bind, table) for table in REQUIRED_COLUMNS if table in names}


def check_adoptable(existing: dict[str, dict[str, str]], dialect: str) -> None:
    """Refuse, naming every problem at once, tables whose columns the rules cannot use.

    Raises:
        SchemaError: a column the rules read is missing, or a key is not a UUID type.
    """
    missing: list[str] = []
    wrong: list[str] = []
    for table, present in existing.items():
        lacking = [c for c in REQUIRED_COLUMNS[table] if c not in present]
        if lacking:
            missing.append(f"{table} lacks {', '.join(lacking)}")
        for column in REQUIRED_COLUMNS[table]:
            if _is_key(column) and column in present and not _uuid_type(present[column], dialect):
                wrong.append(f"{table}.{column} is {present[column]}")
    problems = []
    if missing:
        problems.append("; ".join(missing) + " (columns the rules read)")
    if wrong:
        needs = "uuid keys" if dialect == "postgresql" else "UUID keys, as text on SQLite"
        problems.append(", ".join(wrong) + f" (HumanGlue needs {needs}, CONTRACT §5)")
    if problems:
        raise SchemaError(
            "cannot adopt the platform's schema: " + "; ".join(problems) + "; nothing was changed"
        )


def _is_key(column: str) -> bool:
    return column == "id" or column.endswith("_id") or column == "updated_by"


def _uuid_type(kind: str, dialect: str) -> bool:
    if dialect == "postgresql":
        return kind == "uuid"
    # SQLite's type affinity: a declared type naming CHAR, CLOB or TEXT keeps text as text.
    # UUID (numeric affinity) does too, in practice: no UUID's text reads as a number.
    declared = kind.upper()
    return any(word in declared for word in ("CHAR", "CLOB", "TEXT", "UUID"))
