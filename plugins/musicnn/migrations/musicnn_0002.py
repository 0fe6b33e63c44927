"""MusiCNN results say how the audio was read: which decoder, how much of it, and whether the
analyzer's cap on a track's audio cut it short. Results stored before say nothing (NULL).

Revision ID: musicnn_0002
Revises: musicnn_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "musicnn_0002"
down_revision = "musicnn_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("musicnn_results", sa.Column("decoder", sa.Text))
    op.add_column("musicnn_results", sa.Column("analyzed_seconds", sa.Float))
    op.add_column("musicnn_results", sa.Column("capped", sa.Boolean))


def downgrade() -> None:
    for column in ("capped", "analyzed_seconds", "decoder"):
        op.drop_column("musicnn_results", column)
