"""The core schema: contents, the tracks that hold them, and the analysis queue.

Analyses are keyed by content, not by track: a moved file keeps them, duplicated files share
them, and a file whose content changed gets new ones while keeping its track id.

Revision ID: 0001_library
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_library"
down_revision = None
branch_labels = ("core",)
depends_on = None

NOW = sa.func.now()


def upgrade() -> None:
    op.create_table(
        "contents",
        sa.Column("id", sa.Text, primary_key=True),  # the content fingerprint
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "tracks",
        sa.Column("id", sa.Text, primary_key=True),
        # exact bytes of the path relative to the music dir (file names need not be UTF-8)
        sa.Column("raw_path", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("path", sa.Text, nullable=False),  # the same path, readable
        sa.Column("content_id", sa.Text, sa.ForeignKey("contents.id"), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime", sa.Float, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("artist", sa.Text),
        sa.Column("album", sa.Text),
        sa.Column("duration", sa.Float),
        sa.Column("missing_since", sa.DateTime(timezone=True)),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index("tracks_content", "tracks", ["content_id"])
    op.create_index("tracks_path", "tracks", ["path"])
    op.create_table(
        "analysis_jobs",
        sa.Column(
            "content_id",
            sa.Text,
            sa.ForeignKey("contents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("analyzer", sa.Text, primary_key=True),
        sa.Column("version", sa.Text, nullable=False),
        # pending -> running -> done | (pending again, after a back-off) | failed
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "analysis_jobs_ready",
        "analysis_jobs",
        ["analyzer", sa.text("priority DESC"), "created_at"],
        postgresql_where=sa.text("state IN ('pending', 'running')"),
    )


def downgrade() -> None:
    op.drop_table("analysis_jobs")
    op.drop_table("tracks")
    op.drop_table("contents")
