"""Alembic environment: runs on the connection the host hands over, under an advisory lock
so a host and its workers starting together migrate once."""

from alembic import context
from sqlalchemy import text

MIGRATION_LOCK_ID = 0x50A5D5  # any constant shared by every soundspan process

connection = context.config.attributes["connection"]
connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
context.configure(connection=connection, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
