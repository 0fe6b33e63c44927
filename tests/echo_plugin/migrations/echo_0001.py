"""The echo plugin's table.

Revision ID: echo_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "echo_0001"
down_revision = None
branch_labels = ("echo",)
depends_on = "0001_library"


def upgrade() -> None:
    op.create_table("echo_starts", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("echo_starts")
