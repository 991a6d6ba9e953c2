"""Salesforce Health Cloud creates (docs/vendors/salesforce_health.md §4, §9): the Connect POST, the
``Syncd_Id__c`` stamp that follows it, and the status a new record must take instead of Scheduled."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog

from connectors.salesforce_health.mapfuncs import PARTICIPANT_FIELDS, connect_body, native_status_for
from connectors.salesforce_health.reads import _CANONICAL_ID_RE
from connectors.salesforce_health.writes import _CANCELLED, SalesforceWrites
from syncd.connector import WriteKind, WriteOutcome, WriteRequest
from syncd.errors import (
    AmbiguousReference,
    AuthFailure,
    MappingError,
    RateLimited,
    Rejected,
    Retriable,
    UnknownOutcome,
    VendorError,
)

__all__ = ["SalesforceCreate"]

log = structlog.get_logger(__name__)


class _CreateFlow:
    """One create: POST, then stamp (with the initial status where it can); what each step learned."""

    def __init__(self, connector: SalesforceCreate, request: WriteRequest) -> None:
        self.connector = connector
        self.client = connector.client
        self.request = request
        self.canonical_id = request.canonical_id
        desired = request.desired
        self.body = connect_body(
            desired, external_id=None, timezone=connector.config.timezone, channel_id=connector._channel(desired, None)
        )
        self.reference_patch = connector._reference_patch(self.canonical_id, desired)
        # a new record is Scheduled: the status it must take instead (proposed, pending) goes with the
        # stamp, in the same sObject PATCH (one call, and no window in which it is stamped but still
        # Scheduled); refused there, the stamp is sent alone and the status PATCH follows as before
        self.initial_status = (
            native_status_for(connector.mapping, desired.status, "Scheduled")
            if desired.status not in _CANCELLED
            else None
        )
        self.status_sent: set[str] = set()
        self.created: dict[str, bool] = {}
        self.exclude = [request.replaces] if request.replaces else []

    async def _stamp(self, new_id: str) -> None:
        if self.initial_status is not None:
            try:
                await self.client.sobject_patch(
                    "set_reference", new_id, {**self.reference_patch, "Status": self.initial_status}
                )
                self.status_sent.add(new_id)
                return
            except Rejected as exc:
                if exc.code == "DUPLICATE_VALUE":
                    raise
                log.info("status_with_stamp_refused", connector=self.connector.name, external_id=new_id, code=exc.code)
        await self.client.sobject_patch("set_reference", new_id, self.reference_patch)

    async def set_reference(self, new_id: str) -> None:
        defaults = self.connector.mapping.defaults
        try:
            await self._stamp(new_id)
        except Rejected as exc:
            if exc.code == "DUPLICATE_VALUE":
                found = await self.connector.find_by_reference(self.canonical_id, exclude=[*self.exclude, new_id])
                if found:
                    # an earlier create already holds the reference: retire the duplicate
                    await self.client.connect(
                        "cancel",
                        "PATCH",
                        new_id,
                        {
                            "id": new_id,
                            "status": str(defaults.get("cancel_status", "Canceled")),
                            "cancellationReason": str(defaults.get("entered_in_error_reason")),
                        },
                    )
                    self.created["adopted:" + found[0].external_id] = True
                    return
            raise
        except Retriable as exc:
            if isinstance(exc, UnknownOutcome):
                raise
            raise UnknownOutcome(exc.message, code=exc.code, status=exc.status) from exc

    async def create(self) -> str:
        new_id = await self.client.connect("create", "POST", None, self.body)
        self.created[new_id] = True
        # a concurrent create's orphan search must not take this record for its own lost POST
        # (two appointments of one patient at one start: one per practitioner)
        self.connector._unstamped.add(new_id)
        try:
            await self.set_reference(new_id)
        finally:
            self.connector._unstamped.discard(new_id)
        for key in self.created:
            if key.startswith("adopted:"):
                return key.removeprefix("adopted:")
        return new_id

    async def search(self) -> str | None:
        found = await self.connector.find_by_reference(
            self.canonical_id, exclude=self.exclude, desired=self.request.desired
        )
        if len(found) > 1:
            raise AmbiguousReference(
                "several Salesforce records hold this appointment's reference",
                external_ids=tuple(r.external_id for r in found),
            )
        return found[0].external_id if found else None


class SalesforceCreate(SalesforceWrites):
    """Creates through the Connect API, stamped with syncd's reference."""

    async def write(self, requests: Sequence[WriteRequest]) -> list[WriteOutcome]:
        outcomes: list[WriteOutcome] = []
        targets = [r.external_id for r in requests if r.kind is not WriteKind.CREATE and r.external_id]
        participants = any(
            (r.changed & PARTICIPANT_FIELDS) or r.current is None for r in requests if r.kind is not WriteKind.CREATE
        )
        fresh: dict[str, tuple[dict[str, Any] | None, list[str] | None]] = {}
        stop: VendorError | None = None
        if targets:
            try:  # the pre-write re-read (§8), batched
                fresh = await self._read_rows(targets, with_resources=participants)
            except (AuthFailure, RateLimited, Retriable) as exc:
                stop = exc
        for request in requests:
            if stop is not None:
                outcomes.append(WriteOutcome(request, error=stop))
                continue
            started = time.perf_counter()
            try:
                if request.kind is WriteKind.CREATE:
                    outcome = await self._create(request)
                else:
                    outcome = await self._update(request, fresh.get(request.external_id or ""))
            except MappingError as exc:
                outcome = WriteOutcome(request, error=exc)
            except VendorError as exc:
                outcome = WriteOutcome(request, error=exc)
                if isinstance(exc, AuthFailure | RateLimited):
                    stop = exc
            log.info(
                "write",
                connector=self.name,
                op=request.kind.value,
                external_id=request.external_id or (outcome.record.external_id if outcome.record else None),
                code=getattr(outcome.error, "code", None) if outcome.error else None,
                duration_s=round(time.perf_counter() - started, 3),
            )
            outcomes.append(outcome)
        return outcomes

    async def _create(self, request: WriteRequest) -> WriteOutcome:
        desired = request.desired
        if not _CANONICAL_ID_RE.match(request.canonical_id):
            raise MappingError("canonical id holds characters SOQL would need escaped", field="id")
        self.mapping.to_native(desired.status)  # waitlist: no native value fits -> MappingError
        flow = _CreateFlow(self, request)
        ext = await self.client.http.create_idempotently(flow.create, flow.search)
        resources = self._resources_of(desired)
        fresh_create = flow.created.get(ext, False)
        category = "Scheduled" if fresh_create else None
        row: dict[str, Any] | None = None
        if not fresh_create:
            row = await self.client.get_one(ext, self.fields)
            category = row.get("StatusCategory") if row is not None else None
        wrote = False
        if desired.status in _CANCELLED:
            if category != "Canceled":
                await self.client.connect(
                    "cancel",
                    "PATCH",
                    ext,
                    {
                        "id": ext,
                        "status": str(self.mapping.defaults.get("cancel_status", "Canceled")),
                        "cancellationReason": self._cancel_reason(desired),
                    },
                )
                wrote = True
        elif not (fresh_create and ext in flow.status_sent):
            status_value = native_status_for(self.mapping, desired.status, category)
            if status_value is not None:
                await self.client.sobject_patch("update_fields", ext, {"Status": status_value})
                wrote = True
        if row is not None and not wrote:
            return WriteOutcome(request, record=self._record(ext, row, resources))
        return WriteOutcome(request, record=await self._read_back(ext, resources))
