"""Each merged appointment keeps its slot key (patient, practitioner and start in UTC, digested), so that
onboarding finds the appointment a record without syncd's reference stands for with one indexed lookup
per page; and a connector that already has a cursor counts as read once (its creates are not held).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

WINDOW_READ_KEY = "engine.window_read"


def _slot_key(snapshot: Any) -> str | None:
    # the same digest as syncd.model.slot_key, frozen here: a migration never changes with the code
    if isinstance(snapshot, str):
        snapshot = json.loads(snapshot)
    if not isinstance(snapshot, dict):
        return None
    patient, practitioner, start = snapshot.get("patient"), snapshot.get("practitioner"), snapshot.get("start")
    if not patient or not practitioner or not start:
        return None
    payload = json.dumps([str(patient), str(practitioner), str(start)], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def upgrade() -> None:
    with op.batch_alter_table("appointments") as batch:
        batch.add_column(sa.Column("slot_key", sa.String(length=64), nullable=True))
        batch.create_index("ix_appointments_slot", ["sync_group", "slot_key"])
    conn = op.get_bind()
    appointments = sa.table("appointments", sa.column("canonical_id", sa.String), sa.column("snapshot", sa.JSON),
                            sa.column("slot_key", sa.String))
    rows = conn.execute(sa.select(appointments.c.canonical_id, appointments.c.snapshot)
                        .where(appointments.c.snapshot.is_not(None))).all()
    updates = [{"b_id": cid, "b_key": key} for cid, snapshot in rows if (key := _slot_key(snapshot)) is not None]
    if updates:
        conn.execute(sa.update(appointments).where(appointments.c.canonical_id == sa.bindparam("b_id"))
                     .values(slot_key=sa.bindparam("b_key")), updates)
    # a ledger that already polled a connector has read its window: creates into it are not held back
    cursors = sa.table("cursors", sa.column("connector", sa.String), sa.column("updated_at", sa.DateTime))
    state = sa.table("connector_state", sa.column("connector", sa.String), sa.column("key", sa.String),
                     sa.column("value", sa.Text), sa.column("updated_at", sa.DateTime))
    known = conn.execute(sa.select(cursors.c.connector, cursors.c.updated_at)).all()
    if known:
        conn.execute(sa.insert(state), [{"connector": name, "key": WINDOW_READ_KEY,
                                         "value": "before-0003", "updated_at": at} for name, at in known])


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(sa.text("DELETE FROM connector_state WHERE key = :key"), {"key": WINDOW_READ_KEY})
    with op.batch_alter_table("appointments") as batch:
        batch.drop_index("ix_appointments_slot")
        batch.drop_column("slot_key")
