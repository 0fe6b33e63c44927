"""Contents found by their audio payload, so that a retag never re-analyzes a file.

A content's id stays what it was when first recorded (analyses are keyed on it); `payload_id`
is the hash of its audio packets, which tags do not change. Rows from before this revision
have none: the next read of their file finds them by the old byte fingerprint and fills it
in, so the upgrade itself analyzes nothing again.

Revision ID: 0003_payload_identity
Revises: 0002_track_tags
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_payload_identity"
down_revision = "0002_track_tags"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("contents", sa.Column("payload_id", sa.Text))
    op.create_index("contents_payload", "contents", ["payload_id"], unique=True)


def downgrade() -> None:
    op.drop_index("contents_payload", "contents")
    op.drop_column("contents", "payload_id")
