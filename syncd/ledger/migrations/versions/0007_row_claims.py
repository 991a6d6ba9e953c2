"""Replicas on PostgreSQL claim outbox and inbox rows (``SELECT ... FOR UPDATE SKIP LOCKED`` plus an
expiry): who holds each row and until when, so that two replicas never take one queued write or one
stored delivery, and a dead replica's rows go to another once its claim expires.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syncd.ledger.models import UTCDateTime

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

TABLES = ("outbox", "inbox")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("claimed_by", sa.String(length=128), nullable=True))
            batch.add_column(sa.Column("claimed_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("claimed_until")
            batch.drop_column("claimed_by")
