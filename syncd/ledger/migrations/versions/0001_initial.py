"""Initial ledger schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syncd.ledger.models import JSONType, UTCDateTime

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    _sync_state()
    _queues()
    _problems()
    _records()


def _sync_state() -> None:
    """The merged appointments, each member's links and each connector's cursor."""
    op.create_table(
        "appointments",
        sa.Column("canonical_id", sa.String(64), primary_key=True),
        sa.Column("sync_group", sa.String(128), nullable=False),
        sa.Column("snapshot", JSONType, nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_appointments_sync_group", "appointments", ["sync_group"])

    op.create_table(
        "links",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("canonical_id", sa.String(64), nullable=False),
        sa.Column("connector", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("version", sa.String(255), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("written_fingerprint", sa.String(64), nullable=True),
        sa.Column("written_version", sa.String(255), nullable=True),
        sa.Column("modified_at", UTCDateTime(), nullable=True),
        sa.Column("retired", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("connector", "external_id", name="uq_links_connector_external"),
    )
    op.create_index("ix_links_canonical_id", "links", ["canonical_id"])

    op.create_table(
        "cursors",
        sa.Column("connector", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
    )


def _queues() -> None:
    """Webhook deliveries waiting to be drained, and planned writes."""
    op.create_table(
        "inbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("connector", sa.String(32), nullable=False),
        sa.Column("dedup_key", sa.String(255), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.UniqueConstraint("connector", "dedup_key", name="uq_inbox_connector_dedup"),
    )
    op.create_index("ix_inbox_pending", "inbox", ["processed_at", "id"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("canonical_id", sa.String(64), nullable=False),
        sa.Column("connector", sa.String(32), nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.UniqueConstraint("idempotency_key", name="uq_outbox_idempotency"),
    )
    op.create_index("ix_outbox_state", "outbox", ["state", "connector", "id"])
    op.create_index("ix_outbox_canonical_id", "outbox", ["canonical_id"])


def _problems() -> None:
    """What could not be synced: dead letters and open conflicts."""
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("connector", sa.String(32), nullable=False),
        sa.Column("canonical_id", sa.String(64), nullable=True),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retriable", sa.Boolean(), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.Column("last_tried", UTCDateTime(), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_dead_letters_open", "dead_letters", ["resolved", "connector"])

    op.create_table(
        "conflicts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("canonical_id", sa.String(64), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("values", JSONType, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("opened", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("resolution", sa.String(255), nullable=True),
    )
    op.create_index("ix_conflicts_open", "conflicts", ["resolved_at", "canonical_id"])


def _records() -> None:
    """The crosswalk, the audit trail, connector state and leases."""
    op.create_table(
        "crosswalk",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("connector", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("kind", "connector", "external_id", name="uq_crosswalk_external"),
        sa.UniqueConstraint("kind", "key", "connector", name="uq_crosswalk_key"),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("canonical_id", sa.String(64), nullable=False),
        sa.Column("connector", sa.String(32), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("fields", JSONType, nullable=False),
        sa.Column("fingerprint_before", sa.String(64), nullable=True),
        sa.Column("fingerprint_after", sa.String(64), nullable=True),
        sa.Column("detail", sa.String(255), nullable=True),
    )
    op.create_index("ix_audit_canonical", "audit_log", ["canonical_id", "id"])

    op.create_table(
        "connector_state",
        sa.Column("connector", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )

    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "leases",
        "connector_state",
        "audit_log",
        "crosswalk",
        "conflicts",
        "dead_letters",
        "outbox",
        "inbox",
        "cursors",
        "links",
        "appointments",
    ):
        op.drop_table(table)
