"""Why each job was queued, and which workers take jobs from the queue with which model.

`queued_because` lets the status say why the queue is long (new files, a model update, a
retry); rows from before this revision, and every job the catalog queues for new or changed
files, read 'new or changed audio'. `analysis_workers` lets the host name a remote worker left
on an old model: such a worker takes no jobs, so without it a stalled queue would not say why.

Revision ID: 0004_job_reasons
Revises: 0003_payload_identity
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_job_reasons"
down_revision = "0003_payload_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "analysis_jobs",
        sa.Column("queued_because", sa.Text, nullable=False, server_default="new or changed audio"),
    )
    op.create_table(
        "analysis_workers",
        sa.Column("owner", sa.Text, primary_key=True),  # the queue's lease owner
        sa.Column("analyzer", sa.Text, primary_key=True),  # a host runs several analyzers
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("analysis_workers")
    op.drop_column("analysis_jobs", "queued_because")
