"""Dentally writes (docs/vendors/dentally.md §4, §5, §8): create, update, cancel, the replace flow's notes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from connectors.dentally.client import STATE_LOCK_PREFIX
from connectors.dentally.reads import DentallyReads
from syncd.connector import VendorRecord, WriteKind, WriteOutcome, WriteRequest
from syncd.errors import AmbiguousReference, Conflict, MappingError, NotWritable, Rejected
from syncd.model import SYNC_FIELDS, Status

log = structlog.get_logger(__name__)

_PLAIN_FIELDS = ("start", "end", "patient", "practitioner", "location", "service_type", "notes")


class DentallyWrites(DentallyReads):
    """Writes one appointment per call (Dentally has no batch writes), re-reading before each PUT."""

    _reasons: dict[str, int] | None

    # -- writes (part 4) -------------------------------------------------------------------------
    async def write(self, requests: Sequence[WriteRequest]) -> list[WriteOutcome]:
        outcomes: list[WriteOutcome] = []
        for request in requests:  # no batch writes: one appointment per call
            if request.kind is WriteKind.CREATE:
                outcomes.append(await self._create(request))
            elif not request.external_id:
                outcomes.append(
                    WriteOutcome(request, error=MappingError("dentally: no target external id", field="external_id"))
                )
            else:
                outcomes.append(await self._update(request))
        return outcomes

    async def _create(self, request: WriteRequest) -> WriteOutcome:
        try:
            body = self.mapper.create_body(request.desired, request.canonical_id, request.replaces)
        except MappingError as exc:
            return WriteOutcome(request, error=exc)
        self._attempts[request.canonical_id] = datetime.now(UTC)
        if request.replaces:
            self._replace_of[request.canonical_id] = request.replaces
        exclude = [request.replaces] if request.replaces else []

        async def create() -> VendorRecord:
            return self._record(await self.client.create(body))

        async def search() -> VendorRecord | None:
            found = await self.find_by_reference(request.canonical_id, exclude=exclude)
            if len(found) > 1:
                raise AmbiguousReference(
                    "several Dentally records hold this appointment's reference",
                    external_ids=tuple(r.external_id for r in found),
                )
            return found[0] if found else None

        try:
            record = await self.client.http.create_idempotently(create, search)
        except (Rejected, Conflict) as exc:
            log.info("write_refused", connector=self.name, op="create", code=exc.code, http_status=exc.status)
            return WriteOutcome(request, error=exc)
        if request.replaces:
            self._replaced_by[request.replaces] = record.external_id
        log.info("created", connector=self.name, external_id=record.external_id, op="create")
        return WriteOutcome(request, record=record)

    async def _reason_id(self, name: str) -> int:
        """The cancellation reason id for ``name`` (ignoring case), else ``Other``; the list is cached
        and fetched again when a name is not in it."""
        wanted = name.strip().lower()
        fallback = str(self.mapping.defaults["fallback_cancel_reason"]).lower()
        for attempt in range(2):
            if self._reasons is None or attempt == 1:
                items = await self.client.cancellation_reasons()
                self._reasons = {
                    str(i.get("reason", "")).strip().lower(): int(i["id"])
                    for i in items
                    if isinstance(i.get("id"), int)
                }
            if wanted in self._reasons:
                return self._reasons[wanted]
        if fallback in (self._reasons or {}):
            return (self._reasons or {})[fallback]
        raise MappingError(
            "dentally: no matching cancellation reason and no fallback reason", field="cancellation_reason"
        )

    async def _replaced_note(self, request: WriteRequest, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Part 4 step 2: the old record's notes name the new appointment."""
        old_id = str(request.external_id)
        new_id = self._replaced_by.get(old_id)
        reason = request.desired.cancellation_reason or ""
        if new_id is None and reason.strip().lower() == str(self.mapping.defaults["replace_reason"]).lower():
            found = [
                r for r in await self.find_by_reference(request.canonical_id, exclude=[old_id]) if r.replaces == old_id
            ]
            if found:
                new_id = found[-1].external_id
        if new_id is None:
            return {}
        line = str(self.mapping.defaults["replaced_note"]).format(new_id=new_id)
        notes = self.mapper.text_in(raw, "notes") or ""
        if line in notes:
            return {}
        return {self.mapping.fields["notes"]: f"{notes}\n{line}" if notes else line}

    async def _changes_for(self, request: WriteRequest, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The wire fields that still differ from ``raw`` (part 8 step 3); MappingError if unexpressible."""
        desired = request.desired
        f = self.mapping.fields
        native = self.mapper.native_status(raw)
        names = set(request.changed) if request.changed else set(SYNC_FIELDS)
        if request.kind is WriteKind.CANCEL:
            names |= {"status", "cancellation_reason"}
        values: dict[str, Any] = {}
        if names & {"status", "cancellation_reason"}:
            target = self.mapper.native_for(desired)
            if desired.status in (Status.ARRIVED, Status.CHECKED_IN) and native in self.mapper.beyond_arrived:
                pass  # Dentally is further along: Arrived is not written
            elif target == "Cancelled":
                if native != "Cancelled":
                    values[f["status"]] = target
                    values[f["cancellation_reason_id"]] = await self._reason_id(self.mapper.reason_name(desired))
            elif target != native:
                values[f["status"]] = target
        for name in _PLAIN_FIELDS:
            if name not in names:
                continue
            for key, value in self.mapper.field_values(name, desired).items():
                if value != self.mapper.wire_of(name, raw):
                    values[key] = value
        if request.kind is WriteKind.CANCEL or values.get(f["status"]) == "Cancelled":
            values.update(await self._replaced_note(request, raw))
        return values

    def _locked(self, raw: Mapping[str, Any], values: Mapping[str, Any]) -> NotWritable | None:
        """Part 5/8: outside Pending only state and notes can change. Changing a patient that is set is
        left to Dentally's own check (its answer names the rule); adding one outside Pending is locked."""
        native = self.mapper.native_status(raw)
        if native == self.mapper.open_state:
            return None
        editable = set(self.settings.always_editable)
        if raw.get(self.mapping.fields["patient"]) is not None:
            editable.add(self.mapping.fields["patient"])
        if set(values) - editable:
            # still locked after the pre-write re-read: a conflict, not a dead letter (docs/vendors/README.md rule 10)
            return NotWritable(f"locked: {native} ({STATE_LOCK_PREFIX} {native})", code="locked", status=None)
        return None

    async def _update(self, request: WriteRequest) -> WriteOutcome:
        rid = str(request.external_id)
        # part 8: Dentally has no concurrency token, so GET right before every PUT
        raw = await self.client.get_one(rid, op="reread")
        if raw is None:
            return self._gone(request, rid, "the record was deleted in Dentally", code="deleted")
        fresh = self._record(raw)
        if fresh.error is not None:
            return WriteOutcome(request, error=fresh.error)
        if request.current is not None and request.current.version != fresh.version:
            log.info("stale_write_refused", connector=self.name, external_id=rid, op="update")
            return WriteOutcome(
                request, error=Conflict("the record changed in Dentally since it was read", code="stale"), record=fresh
            )
        try:
            values = await self._changes_for(request, raw)
        except MappingError as exc:
            return WriteOutcome(request, error=exc)
        if not values:
            return WriteOutcome(request, record=fresh, sent=False)  # nothing still differs: no write
        locked = self._locked(raw, values)
        if locked is not None:
            log.info("write_refused", connector=self.name, external_id=rid, op="update", code=locked.code)
            return WriteOutcome(request, error=locked, record=fresh)
        op = "cancel" if request.kind is WriteKind.CANCEL else "update"
        try:
            answer = await self.client.update(rid, values)
        except Conflict as exc:
            # a 422 state lock: the record moved on between our GET and PUT (e.g. SMS auto-confirm)
            log.info("write_conflict", connector=self.name, external_id=rid, op=op, code=exc.code)
            again = await self.client.get_one(rid, op="reread")
            return WriteOutcome(request, error=exc, record=self._record(again) if again else self._deleted(rid))
        except Rejected as exc:
            log.info(
                "write_refused", connector=self.name, external_id=rid, op=op, code=exc.code, http_status=exc.status
            )
            return WriteOutcome(request, error=exc)
        if answer is None:
            return WriteOutcome(
                request, error=Conflict("the record was deleted in Dentally", code="deleted"), record=self._deleted(rid)
            )
        log.info("updated", connector=self.name, external_id=rid, op=op, count=len(values))
        return WriteOutcome(request, record=self._record(answer))
