"""Each conflict names the one connector it belongs to (``conflicts.connector``): the member whose
change the merge could not settle, or the target that could not take the change, so that ``syncd
status`` counts it once, on that connector, instead of on every member the appointment is linked to.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("conflicts") as batch:
        batch.add_column(sa.Column("connector", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conflicts") as batch:
        batch.drop_column("connector")
