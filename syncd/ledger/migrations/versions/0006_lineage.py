"""Appointment lineage: an append-only history of reads, merges, writes, conflicts, dead letters and
operator actions per canonical appointment, with per-field sources and rules (``syncd explain``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syncd.ledger.models import JSONType, UTCDateTime

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "lineage",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("canonical_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("connector", sa.String(length=32), nullable=True),
        sa.Column("fields", JSONType, nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.String(length=16), nullable=True),
        sa.Column("detail", sa.String(length=255), nullable=True),
        sa.Column("sources", JSONType, nullable=False),
    )
    op.create_index("ix_lineage_canonical", "lineage", ["canonical_id", "at"])
    op.create_index("ix_lineage_at", "lineage", ["at"])


def downgrade() -> None:
    op.drop_index("ix_lineage_at", table_name="lineage")
    op.drop_index("ix_lineage_canonical", table_name="lineage")
    op.drop_table("lineage")
