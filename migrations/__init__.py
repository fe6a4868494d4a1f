"""Alembic migrations of the HumanGlue schema (run by `humanglue db upgrade`)."""
