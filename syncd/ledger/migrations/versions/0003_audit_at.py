"""An index on ``audit_log.at``: the operator console charts writes per connector and hour over the
last 24 hours, a range scan on the time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_audit_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_at", table_name="audit_log")
