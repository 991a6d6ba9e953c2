"""Ledger tables (SQLModel on SQLAlchemy), shared by SQLite and PostgreSQL.

The ledger holds what the merge needs and nothing more: ids, versions, fingerprints, the last merged
canonical snapshot (the merge base), cursors, queues and audit metadata. Patient data appears only
inside ``appointments.snapshot`` (the canonical record itself, with references as canonical keys),
``links.seen`` (each member's last known version of it, same shape) and in transit in
``inbox.body`` / ``outbox.payload``; conflicts and the audit trail hold field names,
fingerprints and redacted values only.

Every timestamp is stored timezone-aware and read back as an aware UTC ``datetime`` on both databases
(:class:`UTCDateTime`). The schema itself is created by alembic (``migrations/``), never by
``metadata.create_all``; a test checks that the migrations and these models agree.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

__all__ = [
    "AppointmentRow",
    "AuditEntry",
    "ConflictRow",
    "ConnectorStateRow",
    "CrosswalkEntry",
    "CursorRow",
    "DeadLetter",
    "InboxItem",
    "Lease",
    "LineageEntry",
    "Link",
    "OutboxItem",
    "UTCDateTime",
    "metadata",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware DateTime: aware UTC in, aware UTC out, on SQLite as on PostgreSQL.

    Naive datetimes are refused rather than guessed.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError("the ledger stores timezone-aware datetimes only")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _dt(nullable: bool = False, **kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, nullable=nullable, **kw)



class _Row(SQLModel):
    """Base of the ledger's table models: a plain, fast ``__init__``.

    A table model is never validated on ``__init__`` (SQLModel skips validation for ``table=True``);
    its own ``__init__`` still sets every field through SQLAlchemy's instrumentation, one attribute at
    a time, which costs more than the rest of the engine's work on a record unchanged since the last
    pass. This one fills the instance's ``__dict__`` directly: the given values, each other field's
    default (a fresh one from its ``default_factory``). SQLAlchemy's instrumentation still wraps it,
    so the instance state exists as before. As with SQLModel's own, a name that is no field is ignored
    and a required field left out reads as None."""

    def __init__(self, **data: Any) -> None:
        fields = type(self).model_fields
        values: dict[str, Any] = {}
        for name, info in fields.items():
            if name in data:
                values[name] = data[name]
            elif info.default_factory is not None:
                values[name] = info.default_factory()  # type: ignore[call-arg]
            elif not info.is_required():
                default = info.default
                values[name] = copy.copy(default) if isinstance(default, (dict, list, set)) else default
            else:
                values[name] = None
        self.__dict__.update(values)
        object.__setattr__(self, "__pydantic_fields_set__", set(data))
        object.__setattr__(self, "__pydantic_extra__", None)
        object.__setattr__(self, "__pydantic_private__", None)


class AppointmentRow(_Row, table=True):
    """The last merged canonical appointment (the merge base) and its per-record claim.

    ``snapshot`` is ``Appointment.to_json()`` with references as canonical keys, or None for a row
    that exists only to carry a claim or links (never merged yet).
    """

    __tablename__ = "appointments"
    __table_args__ = (sa.Index("ix_appointments_slot", "sync_group", "slot_key"),)

    canonical_id: str = Field(primary_key=True, max_length=64)
    sync_group: str = Field(default="", max_length=128, index=True)
    snapshot: dict[str, Any] | None = Field(default=None, sa_type=JSONType, nullable=True)
    fingerprint: str | None = Field(default=None, max_length=64)
    slot_key: str | None = Field(default=None, max_length=64)
    """:func:`syncd.model.slot_key` of the snapshot (patient, practitioner, start): onboarding finds the
    appointment a record without syncd's reference stands for by it. Kept by ``save_appointments``."""
    updated_at: datetime = _dt(default_factory=utcnow)
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_until: datetime | None = _dt(nullable=True, default=None)


class Link(_Row, table=True):
    """Canonical id <-> one connector's external id, with what we last saw and wrote there."""

    __tablename__ = "links"
    __table_args__ = (sa.UniqueConstraint("connector", "external_id", name="uq_links_connector_external"),)

    id: int | None = Field(default=None, primary_key=True)
    canonical_id: str = Field(max_length=64, index=True)
    connector: str = Field(max_length=32)
    external_id: str = Field(max_length=255)
    version: str | None = Field(default=None, max_length=255)
    """Last version seen or written there (opaque)."""
    fingerprint: str | None = Field(default=None, max_length=64)
    """Fingerprint of what we last saw or wrote there."""
    written_fingerprint: str | None = Field(default=None, max_length=64)
    """Fingerprint of our own last write (echo suppression)."""
    written_version: str | None = Field(default=None, max_length=255)
    modified_at: datetime | None = _dt(nullable=True, default=None)
    seen: dict[str, Any] | None = Field(default=None, sa_type=JSONType, nullable=True)
    """What this member holds as far as syncd knows (its last read, or our last write there), as a
    canonical ``Appointment.to_json()``: the member's own merge base. A record that differs from the
    canonical snapshot only where it equals ``seen`` lags behind a write still on its way; it does
    not undo that write. None until the first read or write (the canonical snapshot stands in)."""
    retired: bool = Field(default=False)
    """Old id of a replace flow: kept for the audit trail and ``find_by_reference`` excludes."""
    created_at: datetime = _dt(default_factory=utcnow)
    updated_at: datetime = _dt(default_factory=utcnow)


class CursorRow(_Row, table=True):
    """A connector's change cursor, saved in the transaction that commits the records it covers."""

    __tablename__ = "cursors"

    connector: str = Field(primary_key=True, max_length=32)
    value: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    updated_at: datetime = _dt(default_factory=utcnow)
    last_success_at: datetime | None = _dt(nullable=True, default=None)
    last_error: str | None = Field(default=None, max_length=500)


class InboxItem(_Row, table=True):
    """A webhook delivery stored durably before it is acknowledged (dedup per connector)."""

    __tablename__ = "inbox"
    __table_args__ = (
        sa.UniqueConstraint("connector", "dedup_key", name="uq_inbox_connector_dedup"),
        sa.Index("ix_inbox_pending", "processed_at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    connector: str = Field(max_length=32)
    dedup_key: str = Field(max_length=255)
    received_at: datetime = _dt(default_factory=utcnow)
    body: bytes = Field(sa_type=sa.LargeBinary, nullable=False)
    processed_at: datetime | None = _dt(nullable=True, default=None)
    attempts: int = Field(default=0)
    error: str | None = Field(default=None, max_length=500)
    claimed_by: str | None = Field(default=None, max_length=128)
    """PostgreSQL replicas: the one processing this delivery (:meth:`syncd.ledger.store.Tx.inbox_claim`)."""
    claimed_until: datetime | None = _dt(nullable=True, default=None)


class OutboxItem(_Row, table=True):
    """A planned write; ``idempotency_key`` makes planning the same write twice a no-op."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.UniqueConstraint("idempotency_key", name="uq_outbox_idempotency"),
        sa.Index("ix_outbox_state", "state", "connector", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=255)
    canonical_id: str = Field(max_length=64, index=True)
    connector: str = Field(max_length=32)
    op: str = Field(max_length=16)
    """create / update / cancel"""
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType, nullable=False)
    state: str = Field(default="pending", max_length=16)
    """pending / sending / done / failed"""
    attempts: int = Field(default=0)
    created_at: datetime = _dt(default_factory=utcnow)
    updated_at: datetime = _dt(default_factory=utcnow)
    last_error: str | None = Field(default=None, max_length=500)
    claimed_by: str | None = Field(default=None, max_length=128)
    """PostgreSQL replicas: the one sending this write (:meth:`syncd.ledger.store.Tx.outbox_claim`)."""
    claimed_until: datetime | None = _dt(nullable=True, default=None)


class DeadLetter(_Row, table=True):
    """A record that could not be synced, with what is needed to retry it."""

    __tablename__ = "dead_letters"
    __table_args__ = (sa.Index("ix_dead_letters_open", "resolved", "connector"),)

    id: int | None = Field(default=None, primary_key=True)
    connector: str = Field(max_length=32)
    canonical_id: str | None = Field(default=None, max_length=64)
    external_id: str | None = Field(default=None, max_length=255)
    kind: str = Field(max_length=32)
    """mapping, rejected, missing_reference, auth, ..."""
    reason: str = Field(sa_type=sa.Text)
    """PHI-free, or a vendor message with contacts masked (see ``syncd.logging.mask_contact``)."""
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType, nullable=False)
    attempts: int = Field(default=1)
    retriable: bool = Field(default=True)
    first_seen: datetime = _dt(default_factory=utcnow)
    last_tried: datetime = _dt(default_factory=utcnow)
    resolved: bool = Field(default=False)


class ConflictRow(_Row, table=True):
    """A conflict the merge could not settle by policy; ``values`` is PHI-redacted."""

    __tablename__ = "conflicts"
    __table_args__ = (sa.Index("ix_conflicts_open", "resolved_at", "canonical_id"),)

    id: int | None = Field(default=None, primary_key=True)
    canonical_id: str = Field(max_length=64)
    field: str = Field(max_length=64)
    values: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType, nullable=False)
    """connector -> redacted value (times, statuses, canonical keys; free text as length + digest)."""
    reason: str = Field(sa_type=sa.Text)
    opened: datetime = _dt(default_factory=utcnow)
    resolved_at: datetime | None = _dt(nullable=True, default=None)
    resolution: str | None = Field(default=None, max_length=255)
    connector: str | None = Field(default=None, max_length=32)
    """The one connector the conflict belongs to (the member whose change could not be settled, or the
    target that could not take it); None on rows older than revision 0003."""


class CrosswalkEntry(_Row, table=True):
    """A reference id (patient, practitioner, location, service) across systems."""

    __tablename__ = "crosswalk"
    __table_args__ = (
        sa.UniqueConstraint("kind", "connector", "external_id", name="uq_crosswalk_external"),
        sa.UniqueConstraint("kind", "key", "connector", name="uq_crosswalk_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    key: str = Field(max_length=64)
    connector: str = Field(max_length=32)
    external_id: str = Field(max_length=255)
    created_at: datetime = _dt(default_factory=utcnow)


class AuditEntry(_Row, table=True):
    """Which fields changed when and from which connector: names and fingerprints, no values."""

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_canonical", "canonical_id", "id"), sa.Index("ix_audit_at", "at"))

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _dt(default_factory=utcnow)
    canonical_id: str = Field(max_length=64)
    connector: str | None = Field(default=None, max_length=32)
    action: str = Field(max_length=32)
    fields: list[str] = Field(default_factory=list, sa_type=JSONType, nullable=False)
    fingerprint_before: str | None = Field(default=None, max_length=64)
    fingerprint_after: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=255)


class LineageEntry(SQLModel, table=True):
    """One step of an appointment's lineage (append-only; pruned by age, ``[ledger] history_days``).

    ``kind`` is read, merge, write, conflict, dead_letter, resolve, retry or discard; ``sources`` maps
    each field whose value this step set to ``{"source", "changed_at", "rule"}`` (which system's change
    set it, when it changed there, which rule chose it). Ids, field names, statuses and times only:
    ``detail`` never carries patient data or free text. Written by :mod:`syncd.lineage` in the
    transactions the engine already uses.
    """

    __tablename__ = "lineage"
    __table_args__ = (sa.Index("ix_lineage_canonical", "canonical_id", "at"), sa.Index("ix_lineage_at", "at"))

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _dt(default_factory=utcnow)
    canonical_id: str = Field(max_length=64)
    kind: str = Field(max_length=16)
    action: str = Field(default="", max_length=32)
    """What the engine did, finer than ``kind`` (seen-new, merged, create, update, cancel, replaced, ...)."""
    connector: str | None = Field(default=None, max_length=32)
    fields: list[str] = Field(default_factory=list, sa_type=JSONType, nullable=False)
    outcome: str = Field(default="", max_length=32)
    rule: str | None = Field(default=None, max_length=16)
    detail: str | None = Field(default=None, max_length=255)
    sources: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType, nullable=False)


class ConnectorStateRow(_Row, table=True):
    """Backs :class:`syncd.connector.StateStore` (a connector's own small durable values)."""

    __tablename__ = "connector_state"

    connector: str = Field(primary_key=True, max_length=32)
    key: str = Field(primary_key=True, max_length=128)
    value: str = Field(sa_type=sa.Text)
    updated_at: datetime = _dt(default_factory=utcnow)


class Lease(_Row, table=True):
    """A named, expiring lock (e.g. refuse a second ``run`` on one SQLite ledger)."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    expires_at: datetime = _dt()


metadata = SQLModel.metadata
