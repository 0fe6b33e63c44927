"""Alembic environment: runs on the connection the host hands over (which holds the
migration lock, see upgrade_to_head)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
