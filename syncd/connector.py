"""The connector contract: the only way syncd's core talks to a vendor.

A connector translates one vendor's dialect into canonical appointments and back. Inside a
connector, references (patient, practitioner, location, service_type) are the *vendor's own ids*;
the engine translates them to and from canonical keys through the crosswalk. The core decides what
to do from :class:`Capabilities` and the error kind (:mod:`syncd.errors`), never from a vendor name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from syncd.errors import MappingError, VendorError
from syncd.http import HttpClient
from syncd.mapping import VendorMapping
from syncd.model import Appointment

__all__ = [
    "Capabilities",
    "ChangePage",
    "Check",
    "CheckStatus",
    "Connector",
    "Remedy",
    "StateStore",
    "VendorRecord",
    "WebhookDelivery",
    "WebhookEvent",
    "WriteKind",
    "WriteOutcome",
    "WriteRequest",
    "with_remedy",
]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a vendor can do; the engine plans from these, never from the vendor's name."""

    webhooks: bool
    """The vendor pushes change notifications to ``/webhooks/<name>``."""
    batch_read_size: int = 1
    """Most ids one read call takes (1 = single reads only)."""
    batch_write_size: int = 1
    """Most records one write call takes (1 = one by one)."""
    patient_change: bool = True
    """The patient of an existing appointment can be changed in place. False: the engine carries a
    patient change by the replace flow (create new, cancel old with ``replace_reason``, link both)."""
    subscription: bool = False
    """The vendor needs a subscription for webhooks (created and renewed by :meth:`Connector.maintain`)."""
    replace_reason: str | None = None
    """Cancellation reason written on the old record of a replace flow (e.g. "Booked in error")."""
    replace_cancel_first_when: frozenset[str] = frozenset()
    """A replace whose changed references all lie in this set cancels the old record *before* creating
    the new one (e.g. a patient-only change in a system whose old record still holds the slot)."""
    not_stored: frozenset[str] = frozenset()
    """Canonical fields the system does not store at all (e.g. ``location``). Never read, never
    compared, never written: what it reads for them is no news, the merge base stands in for them."""
    read_only: frozenset[str] = frozenset()
    """Canonical fields the system stores but syncd may not write: only its own users set them (a
    specialty) or the vendor derives them (an end time). Read, mapped through the crosswalk and
    merged as that system's value; never sent, so a change made elsewhere causes no write there and no
    conflict (a derived ``end`` follows the start: the merged duration is kept)."""
    required_on_create: frozenset[str] = frozenset()
    """Canonical fields a create in this system cannot do without. A create whose appointment lacks one
    is dead-lettered by the engine before anything is sent, naming the field and how to supply it."""


@dataclass(frozen=True, slots=True)
class VendorRecord:
    """One appointment as read from a vendor, already in canonical form (vendor-id references)."""

    external_id: str
    version: str | None
    """The vendor's version: modified time or version number, as an opaque string."""
    appointment: Appointment | None
    """None when the record is deleted, or when it could not be mapped (then ``error`` is set)."""
    deleted: bool = False
    """The vendor deleted it (the engine then cancels it elsewhere; never hard-deletes)."""
    error: MappingError | None = None
    """Set when the vendor's record cannot be expressed canonically: the engine dead-letters it."""
    modified_at: datetime | None = None
    """When the vendor last changed it (UTC); drives the "most recent change wins" policy."""
    syncd_id: str | None = None
    """The canonical id found in the vendor's idempotency field, if any."""
    replaces: str | None = None
    """For a record made by a replace flow: the old external id its marker names."""
    not_stored: frozenset[str] = frozenset()
    """Canonical fields this record does not store (its connector's :attr:`Capabilities.not_stored`, plus
    any that depend on the record)."""
    read_only: frozenset[str] = frozenset()
    """Canonical fields this record holds but syncd may not write (:attr:`Capabilities.read_only`, plus any
    that depend on the record, e.g. a status only the vendor itself sets; docs/vendors/README.md rule 15)."""

    @property
    def unexpressible(self) -> frozenset[str]:
        """Every field syncd cannot write to this record: :attr:`not_stored` | :attr:`read_only`."""
        return self.not_stored | self.read_only


@dataclass(frozen=True, slots=True)
class ChangePage:
    """A page of changes and the cursor to store once they are committed to the ledger."""

    records: Sequence[VendorRecord]
    cursor: str | None
    deleted_ids: Sequence[str] = ()
    """Ids the vendor reports deleted without a readable record (deletion feeds)."""


class WriteKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One planned write, in the vendor's id space."""

    kind: WriteKind
    canonical_id: str
    desired: Appointment
    """The whole appointment as it should be after the write."""
    external_id: str | None = None
    """The target record (update, cancel)."""
    current: VendorRecord | None = None
    """The target as last read (the base for partial updates and conditional headers)."""
    changed: frozenset[str] = frozenset()
    """Canonical fields to change (update); the connector may send more where its vendor needs it."""
    replaces: str | None = None
    """Create in a replace flow: the old external id (written to the vendor's marker where it has one)."""
    current_is_read: bool = True
    """True when ``current`` is what the vendor answered to a read. The engine passes False: its
    ``current`` carries the version the ledger holds and the merge base in the vendor's ids, so a
    connector compares versions, not fingerprints, with it."""


@dataclass(slots=True)
class WriteOutcome:
    """What happened to one :class:`WriteRequest`. Exactly one of ``record`` / ``error`` is set."""

    request: WriteRequest
    record: VendorRecord | None = None
    """The record as the vendor holds it after the write (at least external id and version)."""
    error: VendorError | MappingError | None = None
    sent: bool = True
    """False when nothing still differed after the pre-write re-read, so no write request was sent
    (counted as unchanged, not as a write)."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    external_id: str
    deleted: bool = False
    """The delivery says the record was deleted: a claim only. The inbox drain re-reads the id and cancels
    nothing unless the vendor's read confirms the deletion."""
    record: VendorRecord | None = None
    """The record when the delivery carries it whole; None means "re-read this id"."""


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    events: Sequence[WebhookEvent]
    dedup_key: str | None = None
    """The vendor's event id where it has one; else the receiver uses sha256(timestamp + body)."""
    signed_timestamp: str | None = None


class CheckStatus(StrEnum):
    """The outcome of one :class:`Check` of ``syncd doctor``."""

    OK = "ok"
    FAILED = "failed"
    """Something syncd needs is missing or wrong (``doctor`` exits 1)."""
    UNREACHABLE = "unreachable"
    """The vendor cannot be reached or refuses the credentials: nothing else can run (exit 3)."""
    WARNING = "warning"
    """Works, but worth a look (a nearly spent quota, webhooks off)."""
    SKIPPED = "skipped"
    """Cannot be checked from here (no API for it, or an earlier check failed); ``detail`` says why."""


@dataclass(frozen=True, slots=True)
class Check:
    """One check of ``syncd doctor``: what was checked, what was found, and what to change where."""

    name: str
    """Short, stable: ``reach``, ``authenticate``, ``field Syncd_Id__c``, ``read``, ``webhooks`` ..."""
    status: CheckStatus
    detail: str
    """What was found (ids, counts, codes; never patient data or secrets)."""
    fix: str | None = None
    """For a check that did not pass: what to change, and where (vendor setting or config)."""
    config_key: str | None = None
    """The config key to change, ``connectors.<name>.<key>``, where one applies."""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": str(self.status), "detail": self.detail, "fix": self.fix,
                "config_key": self.config_key}


@dataclass(frozen=True, slots=True)
class Remedy:
    """Where to look for a vendor failure: the config key and/or the vendor setting to change."""

    config_key: str | None = None
    hint: str | None = None


@runtime_checkable
class StateStore(Protocol):
    """Small durable key/value store a connector keeps its own state in (e.g. a watch channel id)."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str | None) -> None: ...


@runtime_checkable
class Connector(Protocol):
    """One vendor, as the core sees it.

    Lifecycle: built by ``connectors.create_connector``; ``await close()`` releases its HTTP session.
    Every method raises only :class:`syncd.errors.VendorError` subclasses or
    :class:`syncd.errors.MappingError` (the latter per record, inside outcomes or records).
    """

    name: str
    capabilities: Capabilities
    mapping: VendorMapping
    """The vendor's declarative mapping (``mappings/<type>.toml``); the engine reads its status table to
    know which canonical statuses one native status stands for (a lossy read is no change)."""

    @property
    def http(self) -> HttpClient:
        """The connector's one HTTP client (call counters for ``api_calls`` and metrics)."""
        ...

    def changes(self, cursor: str | None, *, since: datetime | None = None) -> AsyncIterator[ChangePage]:
        """Changes after ``cursor`` (None: a full window reconciliation), page by page.

        ``since`` overrides the cursor: everything changed since that instant. The cursor of each
        page is opaque to the core and is stored only after the page is committed to the ledger.
        """
        ...

    async def read(self, external_ids: Sequence[str]) -> Mapping[str, VendorRecord]:
        """Read records by id, batched where the vendor can (no N+1). Every asked id is in the
        answer: a deleted or unknown id maps to a record with ``deleted=True``; one that cannot be
        mapped to a record with ``error`` set."""
        ...

    async def write(self, requests: Sequence[WriteRequest]) -> list[WriteOutcome]:
        """Create, update and cancel, in the vendor's dialect, batched where it can.
        One outcome per request, in order. Never notifies patients where the vendor can avoid it."""
        ...

    async def find_by_reference(
        self, canonical_id: str, *, exclude: Sequence[str] = (), desired: Appointment | None = None
    ) -> list[VendorRecord]:
        """Every live record holding ``canonical_id`` in the vendor's idempotency field, oldest first,
        ignoring the external ids in ``exclude`` (retired ids of a replace flow). Used before re-trying
        a create whose outcome is unknown; the engine decides between several (`docs/vendors/README.md` rule 10:
        the crosswalk's id wins, else an open conflict), never the connector.

        ``desired`` is the create in question (the vendor's ids). A vendor that writes its reference in
        a second call (its idempotency field after the create) uses it to find the
        record the first call made when the second never ran, stamps it, and returns it."""
        ...

    def needs_replace(self, current: Appointment, desired: Appointment) -> str | None:
        """If the vendor forbids changing ``current`` into ``desired`` in place and recommends a
        replace (create new + cancel old), the reason; else None. Pure, no I/O."""
        ...

    def write_refusal(self, current: Appointment, desired: Appointment, *, now: datetime) -> str | None:
        """Why the vendor cannot take ``desired`` over ``current``; None when it can. Pure, no I/O.

        ``current`` is the record as just read (the vendor's own ids, ``native_status`` set) and
        ``desired`` the same record with the change applied; the caller leaves the fields the vendor
        cannot hold as ``current`` holds them. The answer follows the vendor's own rules: its state
        machine and edit locks (part 5 of ``docs/vendors/<type>.md``), terminal records, and the
        replace flow :meth:`needs_replace` names (which has to cancel the old record). A change the
        vendor cannot express but that is no refusal (``docs/vendors/README.md`` rule 15) answers
        None. The reason is a phrase for an operator, naming the native status and the fields, e.g.
        "holds the appointment Cancelled, which takes no change to notes". ``syncd conflicts
        resolve`` asks this before it writes anything, so that a choice the vendor would refuse is
        refused up front instead of reopening the conflict.
        """
        ...

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
        """Verify and parse one delivery; raise :class:`syncd.errors.WebhookError` (401/400)."""
        ...

    async def maintain(self, public_url: str | None) -> Mapping[str, Any]:
        """Periodic upkeep (subscriptions that expire); returns a status for ``syncd status``."""
        ...

    def remedy(self, error: VendorError) -> Remedy | None:
        """Which of this connector's config keys (or which vendor setting) explains ``error``: a
        refused credential names its key, a refused token endpoint its URL key. Pure, no I/O."""
        ...

    async def diagnose(self, public_url: str | None) -> list[Check]:
        """``syncd doctor``: reach the vendor, authenticate, check the fields, permissions and
        webhook set-up syncd needs, read one page. Never writes to the vendor. A failure is a
        :class:`Check` (with what to fix), not an exception; a check that cannot run after an earlier
        failure is SKIPPED."""
        ...

    async def close(self) -> None: ...


class MemoryStateStore:
    """A :class:`StateStore` in memory (tests, dry runs)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def set(self, key: str, value: str | None) -> None:
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value


def with_remedy(connector: Connector | None, error: VendorError) -> VendorError:
    """``error`` with the config key and hint its connector gives for it (the connector's remedy wins
    over the HTTP layer's generic ``base_url``); the same object, annotated in place."""
    if connector is None:
        return error
    remedy = connector.remedy(error)
    if remedy is not None:
        if remedy.config_key is not None:
            error.config_key = remedy.config_key
        if remedy.hint is not None:
            error.hint = remedy.hint
    if error.connector is None:
        error.connector = connector.name
    return error
