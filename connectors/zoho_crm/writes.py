"""Zoho CRM writes (docs/vendors/zoho_crm.md §4, §5, §8, §9): batched creates and updates, the auto-complete
preference, the outcome of each row."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from connectors.zoho_crm.client import mask
from connectors.zoho_crm.mapfuncs import utc_to_zoho_time, zoho_time_to_utc
from connectors.zoho_crm.reads import ZohoReads
from syncd.connector import VendorRecord, WriteKind, WriteOutcome, WriteRequest
from syncd.connectorkit import chunks
from syncd.errors import (
    AmbiguousReference,
    AuthFailure,
    Conflict,
    Deferred,
    MappingError,
    NotWritable,
    Rejected,
    VendorError,
)
from syncd.model import SYNC_FIELDS, Status

log = structlog.get_logger(__name__)

_PLAIN_FIELDS = ("patient", "practitioner", "location", "service_type", "description", "notes")


class ZohoWrites(ZohoReads):
    """Writes in batches of ``batch_write_size`` rows, each row's result its own outcome."""

    _prefs: dict[str, Any] | None
    _prefs_at: float

    # -- writes (part 4) -------------------------------------------------------------------------
    async def write(self, requests: Sequence[WriteRequest]) -> list[WriteOutcome]:
        started = time.perf_counter()
        outcomes: list[WriteOutcome | None] = [None] * len(requests)
        updates: list[tuple[int, WriteRequest]] = []
        for index, request in enumerate(requests):
            if request.kind is WriteKind.CREATE:
                outcomes[index] = await self._create(request)
            elif not request.external_id:
                outcomes[index] = WriteOutcome(
                    request, error=MappingError("zoho_crm: no target external id", field="external_id")
                )
            else:
                updates.append((index, request))
        for chunk in chunks(updates, self.write_batch):
            for index, outcome in zip(
                (i for i, _ in chunk), await self._update_batch([r for _, r in chunk]), strict=True
            ):
                outcomes[index] = outcome
        done = [o for o in outcomes if o is not None]
        log.info("zoho_write", connector=self.name, op="write", count=len(done),
                 duration_s=round(time.perf_counter() - started, 3))
        return done

    async def _auto_complete(self, refresh: bool = False) -> bool:
        ttl = self.settings.preferences_ttl_s
        if refresh or self._prefs is None or time.monotonic() - self._prefs_at > ttl:
            try:
                self._prefs = await self.client.preferences()
            except (Rejected, AuthFailure) as exc:
                log.warning("preferences_unreadable", connector=self.name, op="preferences", code=exc.code)
                self._prefs = {}
            self._prefs_at = time.monotonic()
        return self._prefs.get("mark_as_complete") == "auto"

    def _expected(self, raw: Mapping[str, Any], values: Mapping[str, Any], details: Mapping[str, Any]) -> VendorRecord:
        """The record as Zoho holds it after applying ``values`` (read-only fields recomputed)."""
        f = self.mapping.fields
        merged = dict(raw)
        merged.update({k: v for k, v in values.items() if k != "id"})
        if f["start"] in values:
            start = zoho_time_to_utc(values[f["start"]], "start")
            duration = merged.get(f["duration"])
            if start is not None and isinstance(duration, int):
                merged[f["end"]] = utc_to_zoho_time(start + timedelta(minutes=duration))
        for key in ("id", f["version"], f["created"]):
            if details.get(key):
                merged[key] = details[key]
        return self._record(merged)

    async def _create(self, request: WriteRequest) -> WriteOutcome:
        try:
            body = self.mapper.create_body(request.desired, request.canonical_id)
        except MappingError as exc:
            return WriteOutcome(request, error=exc)
        exclude = [request.replaces] if request.replaces else []

        async def create() -> tuple[str, Any]:
            return "result", await self.client.create(body)

        async def search() -> tuple[str, Any] | None:
            found = await self.find_by_reference(request.canonical_id, exclude=exclude)
            if not found and self.search_lag_s > 0:
                await asyncio.sleep(self.search_lag_s)  # live search may lag a create (part 9)
                found = await self.find_by_reference(request.canonical_id, exclude=exclude)
            if len(found) > 1:
                raise AmbiguousReference(
                    "several Zoho records hold this appointment's reference",
                    external_ids=tuple(r.external_id for r in found),
                )
            return ("found", found[0]) if found else None

        try:
            kind, value = await self.client.http.create_idempotently(create, search)
        except AuthFailure:
            raise  # the connector stops: no outcome of this call can be trusted
        except VendorError as exc:
            return WriteOutcome(request, error=exc)  # one outcome per request, the others still run
        if kind == "found":
            record: VendorRecord = value
            log.info("create_found_by_reference", connector=self.name, external_id=record.external_id, op="create")
        else:
            result: Mapping[str, Any] = value
            if result.get("status") != "success":
                return WriteOutcome(request, error=self._result_error(result))
            details = result.get("details") if isinstance(result.get("details"), dict) else {}
            assert isinstance(details, dict)
            raw = dict(body)
            start = request.desired.start
            end = request.desired.end
            if start is not None and end is not None:
                raw[self.mapping.fields["end"]] = utc_to_zoho_time(end)
            if request.desired.extra.get("service_name"):
                raw[self.mapping.fields["service_type"]] = {
                    "id": request.desired.service_type,
                    "name": request.desired.extra["service_name"],
                }
            record = self._expected(raw, {}, details)
        if request.replaces:
            self._replaced_by[request.replaces] = record.external_id
        log.info("created", connector=self.name, external_id=record.external_id, op="create")
        return WriteOutcome(request, record=record)

    @staticmethod
    def _result_error(result: Mapping[str, Any]) -> VendorError:
        code = str(result.get("code") or "ERROR")
        details = result.get("details") if isinstance(result.get("details"), dict) else {}
        api_name = details.get("api_name") if isinstance(details, dict) else None
        message = mask(str(result.get("message") or code))
        if api_name:
            message = f"{message} (api_name {api_name})"
        if code == "INVALID_DATA" and api_name == "Syncd_Id":
            return AuthFailure(f"the Syncd_Id custom field is missing in Zoho: {message}", code=code)
        if code in ("DEPENDENT_FIELD_UNCHANGED", "NOT_ALLOWED"):
            return Conflict(message, code=code)
        return Rejected(message, code=code)

    async def _update_values(
        self, request: WriteRequest, fresh: VendorRecord, raw: Mapping[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """The fields still to send (``id`` included) and a conflict reason when the write must not be made."""
        desired = request.desired
        base = fresh.appointment
        assert base is not None
        native = self.mapper.native_status(raw)
        names = set(request.changed) if request.changed else set(SYNC_FIELDS)
        if request.kind is WriteKind.CANCEL:
            names |= {"status", "cancellation_reason"}
        differ = {n for n in names if getattr(desired, n) != getattr(base, n)}
        if desired.status.terminal:
            # Service_Name is never updatable (docs/vendors/zoho_crm.md §4, E8) and a replace flow creates
            # no new record for an appointment that is over: it keeps the service it was booked with
            differ.discard("service_type")
        values: dict[str, Any] = {}
        status_write = False
        if differ & {"status", "cancellation_reason"}:
            auto = False
            if desired.status is Status.FULFILLED and native not in self.mapper.terminal:
                auto = await self._auto_complete()
            new_id = self._replaced_by.get(fresh.external_id)
            reason = desired.cancellation_reason or ""
            if new_id is None and reason.startswith(self.mapper.replace_prefix) and desired.status is Status.CANCELLED:
                found = await self.find_by_reference(request.canonical_id, exclude=[fresh.external_id])
                new_id = found[-1].external_id if found else None
            sw = self.mapper.status_write(native, base, desired, auto_complete=auto, new_id=new_id)
            if sw.conflict:
                return {}, sw.conflict
            values.update(sw.values)
            status_write = bool(sw.values)
        f = self.mapping.fields
        if "start" in differ and desired.start is not None and base.start is not None:
            if desired.start > base.start:
                values.update(self.mapper.reschedule(desired))
            else:
                values[f["start"]] = utc_to_zoho_time(desired.start)  # Zoho answers DEPENDENT_FIELD_UNCHANGED
        for name in _PLAIN_FIELDS:
            if name not in differ:
                continue
            if name == "description" and not desired.description:
                continue  # Appointment_Name is mandatory: an empty description is not written
            values.update(self.mapper.field_values(name, desired, raw))
        if values and native in self.mapper.terminal and not status_write:
            return {}, f"the Zoho record is {native} (terminal): it cannot be edited"
        return values, None

    async def _update_batch(self, requests: Sequence[WriteRequest]) -> list[WriteOutcome]:
        ids = [str(r.external_id) for r in requests]
        # docs/vendors/zoho_crm.md §8: Zoho has no concurrency token, so re-read (one batch GET per ≤100-record PUT)
        raws = await self._read_raw(ids)
        outcomes: list[WriteOutcome | None] = [None] * len(requests)
        pending: list[tuple[int, WriteRequest, dict[str, Any], dict[str, Any]]] = []
        for index, request in enumerate(requests):
            rid = str(request.external_id)
            raw = raws.get(rid)
            prepared = await self._prepared(request, raw)
            if isinstance(prepared, WriteOutcome):
                outcomes[index] = prepared
            else:
                assert raw is not None
                pending.append((index, request, raw, {"id": rid, **prepared}))
        if pending:
            try:
                results = await self.client.update([body for _, _, _, body in pending])
            except AuthFailure:
                raise
            except VendorError as exc:  # the whole call failed: every record in it shares the error
                for index, request, _, _ in pending:
                    outcomes[index] = WriteOutcome(request, error=exc)
            else:
                for (index, request, raw, body), result in zip(pending, results, strict=True):
                    outcomes[index] = await self._update_outcome(request, raw, body, result)
        return [self._service_kept(o) for o in outcomes if o is not None]

    async def _prepared(self, request: WriteRequest, raw: dict[str, Any] | None) -> WriteOutcome | dict[str, Any]:
        """The values one update still has to send, checked against its fresh read; or its outcome
        when nothing is to be sent (deleted, stale, deferred, terminal, unchanged)."""
        rid = str(request.external_id)
        if raw is None:
            return self._gone(request, rid, "the record was deleted in Zoho", code="DELETED")
        fresh = self._record(raw)
        if fresh.error is not None:
            return WriteOutcome(request, error=fresh.error)
        if self._changed_since_read(request, fresh):
            log.info("stale_write_refused", connector=self.name, external_id=rid, op="update")
            return WriteOutcome(
                request, error=Conflict("the record changed in Zoho since it was read", code="STALE"), record=fresh
            )
        end = fresh.appointment.end if fresh.appointment is not None else None
        if (
            request.desired.status is Status.FULFILLED
            and end is not None
            and datetime.now(UTC) < end + timedelta(seconds=1)
            and self.mapper.native_status(raw) not in self.mapper.terminal
            and not await self._auto_complete()
        ):  # with auto-completion Zoho completes it itself
            # part 6: Completed before Appointment_End_Time is refused (DEPENDENT_MISMATCH): defer it
            return WriteOutcome(
                request,
                error=Deferred(
                    "Zoho takes Completed only after the appointment's end",
                    code="DEFER_COMPLETED",
                    not_before=end + timedelta(seconds=1),
                ),
                record=fresh,
            )
        try:
            values, conflict = await self._update_values(request, fresh, raw)
        except MappingError as exc:
            return WriteOutcome(request, error=exc)
        if conflict is not None:
            # a terminal record is not written: an open conflict (docs/vendors/README.md rule 10), not a re-read
            # loop
            return WriteOutcome(request, error=NotWritable(conflict, code="TERMINAL"), record=fresh)
        if not values:
            return WriteOutcome(request, record=fresh, sent=False)  # nothing still differs
        return values

    @staticmethod
    def _service_kept(outcome: WriteOutcome) -> WriteOutcome:
        """For an appointment that is over, the service is this record's own (read-only: see
        ``_update_values``), so the engine remembers Zoho's value rather than the one it could not send."""
        if outcome.record is not None and outcome.request.desired.status.terminal:
            outcome.record = dataclasses.replace(outcome.record, read_only=outcome.record.read_only | {"service_type"})
        return outcome

    async def _update_outcome(
        self, request: WriteRequest, raw: Mapping[str, Any], body: Mapping[str, Any], result: Mapping[str, Any]
    ) -> WriteOutcome:
        rid = str(request.external_id)
        if result.get("status") == "success":
            details = result.get("details") if isinstance(result.get("details"), dict) else {}
            assert isinstance(details, dict)
            return WriteOutcome(request, record=self._expected(raw, body, details))
        error = self._result_error(result)
        code = error.code
        details = result.get("details") if isinstance(result.get("details"), dict) else {}
        api_name = details.get("api_name") if isinstance(details, dict) else None
        log.info("write_refused", connector=self.name, external_id=rid, op="update", code=code)
        if code == "INVALID_DATA" and api_name == "id":
            gone = await self.client.get_one(rid)
            if gone is None:
                return WriteOutcome(
                    request, error=Conflict("the record was deleted in Zoho", code=code), record=self._deleted(rid)
                )
            return WriteOutcome(request, error=error)
        if code in ("DEPENDENT_FIELD_UNCHANGED", "NOT_ALLOWED"):
            fresh_raw = await self.client.get_one(rid)
            fresh = self._record(fresh_raw) if fresh_raw is not None else self._deleted(rid)
            if (
                code == "NOT_ALLOWED"
                and fresh_raw is not None
                and self.mapper.native_status(fresh_raw) not in self.mapper.terminal
            ):
                await self._auto_complete(refresh=True)  # E5: the preference changed
                return WriteOutcome(request, error=Rejected(error.message, code=code, status=403))
            return WriteOutcome(request, error=error, record=fresh)
        return WriteOutcome(request, error=error)
