"""Onlive writes (docs/vendors/onlive.md §4, §5, §8): create, partial update, cancel, each after a
re-read; the replace flow's old record."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import structlog

from connectors.onlive.mapfuncs import onlive_time_to_utc
from connectors.onlive.reads import OnliveReads
from syncd.connector import VendorRecord, WriteKind, WriteOutcome, WriteRequest
from syncd.errors import AmbiguousReference, AuthFailure, Conflict, MappingError, RateLimited, Rejected, VendorError
from syncd.model import SYNC_FIELDS, Appointment, Status

log = structlog.get_logger(__name__)

_VENDOR_ONLY_STATUSES = frozenset({Status.FULFILLED, Status.NOSHOW})


class OnliveWrites(OnliveReads):
    """Writes one appointment per call (Onlive has no batch writes and no concurrency token)."""

    # -- writes (part 4) -------------------------------------------------------------------------
    async def write(self, requests: Sequence[WriteRequest]) -> list[WriteOutcome]:
        started = time.perf_counter()
        outcomes: list[WriteOutcome] = []
        stop: RateLimited | None = None
        for request in requests:
            if stop is not None:
                outcomes.append(WriteOutcome(request, error=stop))
                continue
            try:
                outcome = await self._write_one(request)
            except AuthFailure:
                raise
            except RateLimited as exc:
                stop = exc
                outcome = WriteOutcome(request, error=exc)
            except (VendorError, MappingError) as exc:
                outcome = WriteOutcome(request, error=exc)
            if outcome.error is not None:
                log.info(
                    "write_failed",
                    connector=self.name,
                    external_id=request.external_id,
                    op=request.kind.value,
                    code=getattr(outcome.error, "code", None) or type(outcome.error).__name__,
                )
            outcomes.append(outcome)
        duration = round(time.perf_counter() - started, 3)
        log.info("write_done", connector=self.name, op="write", count=len(requests), duration_s=duration)
        return outcomes

    async def _write_one(self, request: WriteRequest) -> WriteOutcome:
        if request.kind is WriteKind.CREATE:
            return await self._create(request)
        if not request.external_id:
            return WriteOutcome(request, error=MappingError("onlive: no target external id", field="external_id"))
        return await self._modify(request)

    def _is_past_or_closed(self, raw: Mapping[str, Any]) -> bool:
        if self.mapper.native_status(raw) in self.mapper.closed:
            return True
        try:
            end = onlive_time_to_utc(raw.get(self.mapping.fields["end"]), "endAt")
        except MappingError:
            return False
        return end is not None and end <= self._now()

    async def _create(self, request: WriteRequest) -> WriteOutcome:
        try:
            body = self.mapper.create_body(request.desired, request.canonical_id, replaces=request.replaces)
        except MappingError as exc:
            return WriteOutcome(request, error=exc)
        exclude = [request.replaces] if request.replaces else []
        if request.replaces:
            old = await self._get(request.replaces)
            if old is not None and not self.mapper.is_deleted(old) and self._is_past_or_closed(old):
                # part 4: the old one cannot be cancelled, so nothing is recreated
                return WriteOutcome(
                    request,
                    error=Rejected(
                        "the appointment to replace is past or closed: nothing is recreated",
                        code="REPLACE_TARGET_CLOSED",
                        connector=self.name,
                        operation="create",
                    ),
                )
        since = self._now() - timedelta(seconds=self.settings.reference_search_lag_s)

        async def create() -> VendorRecord:
            return self._record(await self.client.create(body))

        async def search() -> VendorRecord | None:
            found = self._live(await self._search(request.canonical_id, exclude=exclude, updated_since=since))
            if len(found) > 1:
                raise AmbiguousReference(
                    "several Onlive records hold this appointment's reference",
                    external_ids=tuple(r.external_id for r in found),
                )
            if found:
                log.info(
                    "create_found_by_reference", connector=self.name, external_id=found[0].external_id, op="create"
                )
            return found[0] if found else None

        record: VendorRecord = await self.client.http.create_idempotently(create, search)
        if request.replaces:
            self._replaced_by[request.replaces] = record.external_id
        log.info("created", connector=self.name, external_id=record.external_id, op="create")
        return WriteOutcome(request, record=self._mark(record, request.desired))

    @staticmethod
    def _mark(record: VendorRecord, desired: Appointment) -> VendorRecord:
        """Completed and no-show are set by Onlive only (docs/vendors/onlive.md §9, docs/vendors/README.md
        rule 15): for such an appointment the status is read-only there."""
        if desired.status in _VENDOR_ONLY_STATUSES:
            return dataclasses.replace(record, read_only=record.read_only | {"status"})
        return record

    async def _fresh_or_error(
        self, request: WriteRequest, rid: str
    ) -> tuple[dict[str, Any], VendorRecord] | WriteOutcome:
        """Part 8 step 1: GET the record and compare its ``updatedAt`` with the one merged from."""
        raw = await self._get(rid)
        if raw is None or self.mapper.is_deleted(raw):
            gone = self._record(raw) if raw is not None else self._deleted(rid)
            return WriteOutcome(
                request,
                error=Conflict("the appointment was deleted in Onlive", code="NOT_FOUND", connector=self.name),
                record=gone,
            )
        fresh = self._record(raw)
        if fresh.error is not None:
            return WriteOutcome(request, error=fresh.error)
        if self._changed_since_read(request, fresh):
            log.info("stale_write_refused", connector=self.name, external_id=rid, op=request.kind.value)
            return WriteOutcome(
                request,
                error=Conflict(
                    "the appointment changed in Onlive since it was read", code="STALE", connector=self.name
                ),
                record=fresh,
            )
        return raw, fresh

    async def _after_refusal(self, request: WriteRequest, rid: str, exc: VendorError) -> WriteOutcome:
        """A write Onlive refused: 404 → deleted; APPOINTMENT_CLOSED → conflict with the fresh record."""
        if isinstance(exc, Rejected) and exc.status == 404:
            return WriteOutcome(
                request,
                error=Conflict(
                    "the appointment was deleted in Onlive", code="NOT_FOUND", status=404, connector=self.name
                ),
                record=self._deleted(rid),
            )
        if isinstance(exc, Conflict):
            raw = await self._get(rid)
            fresh = self._record(raw) if raw is not None else self._deleted(rid)
            return WriteOutcome(request, error=exc, record=fresh)
        return WriteOutcome(request, error=exc)

    async def _modify(self, request: WriteRequest) -> WriteOutcome:
        rid = str(request.external_id)
        got = await self._fresh_or_error(request, rid)
        if isinstance(got, WriteOutcome):
            return got
        raw, fresh = got
        base = fresh.appointment
        assert base is not None
        desired = request.desired
        cancel = request.kind is WriteKind.CANCEL or self.mapper.is_cancel(desired)
        names = set(request.changed) if request.changed else set(SYNC_FIELDS)
        if cancel:
            names |= {"status", "cancellation_reason"}
        if not cancel:
            immutable = self._immutable(names, base, desired)
            if immutable is not None:
                return WriteOutcome(request, error=immutable)
        native = self.mapper.native_status(raw)
        plain = names - {"status", "cancellation_reason"} if cancel else names
        if "status" in plain and desired.status == base.status:
            plain = plain - {"status"}
        try:
            body = self.mapper.update_body(raw, base, desired, plain)
        except MappingError as exc:
            return WriteOutcome(request, error=exc)
        if native in self.mapper.closed:
            if cancel and native == "cancelled" and not body:
                return WriteOutcome(request, record=fresh, sent=False)  # already cancelled: nothing left to do
            if body or cancel:
                return WriteOutcome(
                    request,
                    error=Conflict(
                        f"the Onlive appointment is {native} and cannot be modified",
                        code="APPOINTMENT_CLOSED",
                        connector=self.name,
                    ),
                    record=fresh,
                )
            return WriteOutcome(request, record=self._mark(fresh, desired))
        record = fresh
        if body:
            try:
                record = self._record(await self.client.update(rid, body))
            except (Rejected, Conflict) as exc:
                return await self._after_refusal(request, rid, exc)
            log.info("updated", connector=self.name, external_id=rid, op="update", count=len(body))
        if not cancel:
            return WriteOutcome(request, record=self._mark(record, desired))
        return await self._cancel(request, rid, record)

    def _immutable(self, names: set[str], base: Appointment, desired: Appointment) -> Rejected | None:
        """Part 4: ``calendarIds`` and ``serviceId`` cannot be updated in place."""
        if "practitioner" in names and desired.practitioner != base.practitioner:
            return Rejected(
                "calendarIds cannot be updated: a practitioner change needs the replace flow",
                code="PRACTITIONER_IMMUTABLE",
                connector=self.name,
                operation="update",
            )
        if "service_type" in names and desired.service_type != base.service_type:
            return Rejected("serviceId immutable", code="SERVICE_IMMUTABLE", connector=self.name, operation="update")
        return None

    async def _cancel(self, request: WriteRequest, rid: str, fresh: VendorRecord) -> WriteOutcome:
        desired = request.desired
        new_id = self._replaced_by.get(rid)
        replace = new_id is not None or desired.cancellation_reason == self.capabilities.replace_reason
        sub_status: str | None = None
        if replace:
            if new_id is None:
                found = await self.find_by_reference(request.canonical_id, exclude=[rid])
                new_id = found[-1].external_id if found else None
            reason = (
                str(self.defaults["replace_reason_template"]).format(new_id=new_id)
                if new_id
                else str(self.defaults["replace_reason"])
            )
            sub_status = str(self.defaults["replace_sub_status"])
        else:
            reason = desired.cancellation_reason or str(self.defaults["sync_cancel_reason"])
        try:
            body = self.mapper.cancel_body(desired, reason=reason, sub_status=sub_status)
        except MappingError as exc:
            return WriteOutcome(request, error=exc)
        try:
            answer = await self.client.cancel(rid, body)
        except Rejected as exc:
            if exc.code == "ALREADY_CANCELLED":
                # a repeat after a lost answer, or someone else cancelled: success after a re-read
                raw = await self._get(rid)
                return WriteOutcome(request, record=self._record(raw) if raw is not None else self._deleted(rid))
            return await self._after_refusal(request, rid, exc)
        except Conflict as exc:
            return await self._after_refusal(request, rid, exc)
        if replace:
            self._replaced_by.pop(rid, None)
        log.info("cancelled", connector=self.name, external_id=rid, op="cancel")
        return WriteOutcome(request, record=self._record(answer))
