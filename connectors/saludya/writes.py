"""SaludYa writes (docs/vendors/saludya.md §4, §5, §8, §9): POST creates with their ``[syncd:<id>]``
marker, PUT updates after a re-read, the marker search."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from connectors.saludya.reads import SaludYaReads
from syncd.connector import VendorRecord, WriteKind, WriteOutcome, WriteRequest
from syncd.errors import (
    AmbiguousReference,
    AuthFailure,
    Conflict,
    MappingError,
    NotWritable,
    RateLimited,
    Rejected,
    VendorError,
)
from syncd.http import Priority
from syncd.model import SYNC_FIELDS, Appointment

log = structlog.get_logger(__name__)

_DELETED = "the appointment was deleted in SaludYa"


class SaludYaWrites(SaludYaReads):
    """Writes one appointment per call (SaludYa has no batch writes and no concurrency token)."""

    replace_reason: str
    _hints: dict[str, tuple[str, str]]
    """canonical id -> (date, doctor id) its create sent: the narrow search of part 9."""

    # -- writes (part 4) ------------------------------------------------------------------------
    async def write(self, requests: Sequence[WriteRequest]) -> list[WriteOutcome]:
        outcomes: list[WriteOutcome] = []
        for request in requests:
            try:
                if request.kind is WriteKind.CREATE:
                    outcome = await self._create(request)
                else:
                    outcome = await self._update(request)
            except MappingError as exc:
                outcome = WriteOutcome(request, error=exc)
            except (AuthFailure, RateLimited):
                raise
            except VendorError as exc:
                outcome = WriteOutcome(request, error=exc)
            if outcome.error is not None:
                code = getattr(outcome.error, "code", None) or getattr(outcome.error, "field", None)
                log.info(
                    "write_refused",
                    connector=self.name,
                    external_id=request.external_id,
                    op=request.kind.value,
                    code=code,
                )
            outcomes.append(outcome)
        return outcomes

    async def _create(self, request: WriteRequest) -> WriteOutcome:
        body = self.mapper.create_body(request.desired, request.canonical_id)
        self._hints[request.canonical_id] = (str(body["date"]), str(body["doctor_id"]))
        exclude = [request.replaces] if request.replaces else []
        adopted = False

        async def create() -> dict[str, Any]:
            return await self.client.create(body)

        async def search() -> dict[str, Any] | None:
            nonlocal adopted
            found = await self._search(request.canonical_id, exclude)
            if len(found) > 1:
                raise AmbiguousReference(
                    "several SaludYa appointments hold this appointment's reference",
                    external_ids=tuple(str(r["id"]) for r in found),
                )
            adopted = bool(found)
            return found[0] if found else None

        raw = await self.http.create_idempotently(create, search)
        rid = str(raw["id"])
        log.info("created" if not adopted else "create_adopted", connector=self.name, external_id=rid, op="create")
        # part 4: a booked appointment is confirmed straight away; an adopted one gets whatever still differs
        try:
            payload = self._payload(raw, request.desired, frozenset(SYNC_FIELDS), request.canonical_id)
        except MappingError:
            payload = {}
        if payload:
            payload["send_notification"] = False
            try:
                raw = await self.client.update(rid, payload, op="confirm")
            except (AuthFailure, RateLimited):
                raise
            except VendorError as exc:  # the create stands; the next pass brings the rest
                log.warning(
                    "create_follow_up_failed",
                    connector=self.name,
                    external_id=rid,
                    op="confirm",
                    code=exc.code,
                    http_status=exc.status,
                )
        return WriteOutcome(request, record=self._record(raw))

    async def _after_conflict(
        self, request: WriteRequest, rid: str, fresh: VendorRecord, exc: Conflict
    ) -> WriteOutcome:
        """Part 6: a 422 re-reads once; a record that moved since the merge is a conflict, else the
        refusal stands (rejected)."""
        again = await self.client.get_one(rid, op="reread", priority=Priority.WRITE)
        if again is None:
            return self._gone(request, rid, _DELETED, code="RESOURCE_NOT_FOUND", status=404)
        now = self._record(again)
        base = request.current.version if request.current is not None else fresh.version
        if now.version != base:
            return WriteOutcome(request, error=exc, record=now)
        return WriteOutcome(request, error=Rejected(exc.message, code=exc.code, status=exc.status))

    async def _update(self, request: WriteRequest) -> WriteOutcome:
        rid = request.external_id
        if not rid:
            raise MappingError("saludya: update or cancel without a target external id", field="external_id")
        # part 8: no concurrency token, so re-read right before the PUT
        raw = await self.client.get_one(rid, op="reread", priority=Priority.WRITE)
        if raw is None:
            return self._gone(request, rid, _DELETED, code="RESOURCE_NOT_FOUND", status=404)
        fresh = self._record(raw)
        if request.current is not None and self._stale(request, fresh):
            log.info("stale_write_refused", connector=self.name, external_id=rid, op=request.kind.value)
            return WriteOutcome(
                request,
                error=Conflict("the appointment changed in SaludYa since it was read", code="STALE"),
                record=fresh,
            )
        if fresh.error is not None:
            return WriteOutcome(request, error=fresh.error)
        fields = frozenset(request.changed) or frozenset(SYNC_FIELDS)
        replacing = False
        if request.kind is WriteKind.CANCEL:
            fields |= {"status", "cancellation_reason"}
            replacing = request.desired.cancellation_reason == self.replace_reason
        payload = self._payload(raw, request.desired, fields, request.canonical_id, replacing=replacing)
        if not payload:
            return WriteOutcome(request, record=fresh, sent=False)  # nothing SaludYa can hold still differs
        native = str(raw.get("status"))
        if native in self.mapper.terminal:
            # syncd decides not to write a terminal record: an open conflict (docs/vendors/README.md rule 10)
            return WriteOutcome(
                request,
                error=NotWritable(
                    f"the SaludYa appointment is {native} (terminal): it cannot be edited", code="TERMINAL"
                ),
                record=fresh,
            )
        payload["send_notification"] = False
        try:
            written = await self.client.update(rid, payload, op=request.kind.value)
        except Conflict as exc:  # 422: re-read once; moved since the merge -> conflict, else rejected
            return await self._after_conflict(request, rid, fresh, exc)
        except Rejected as exc:
            if exc.status == 404:
                return self._gone(request, rid, _DELETED, code=exc.code, status=404)
            raise
        log.info("updated", connector=self.name, external_id=rid, op=request.kind.value, count=len(payload) - 1)
        return WriteOutcome(request, record=self._record(written))

    @staticmethod
    def _stale(request: WriteRequest, fresh: VendorRecord) -> bool:
        """Part 8: ``updated_at`` (whole seconds) and the fingerprint. The fingerprint is compared only
        with a ``current`` the vendor answered (``current_is_read``); the engine's ``current`` carries
        its merge base, which a lossy mapping would always make look stale."""
        current = request.current
        assert current is not None
        if current.version != fresh.version:
            return True
        if request.current_is_read and current.appointment is not None and fresh.appointment is not None:
            return current.appointment.fingerprint() != fresh.appointment.fingerprint()
        return False

    def _payload(
        self,
        raw: Mapping[str, Any],
        desired: Appointment,
        fields: frozenset[str],
        canonical_id: str,
        *,
        replacing: bool = False,
    ) -> dict[str, Any]:
        """The PUT body (without ``send_notification``): only what still differs (part 4 is partial)."""
        f = self.mapping.fields
        m = self.mapper
        out: dict[str, Any] = {}
        native_now = raw.get(f["status"])
        if "patient" in fields and desired.patient and desired.patient != raw.get(f["patient"]):
            raise MappingError("saludya: patient_id is immutable (a replace is needed)", field="patient")
        if "practitioner" in fields and desired.practitioner and desired.practitioner != raw.get(f["practitioner"]):
            raise MappingError("saludya: doctor_id is immutable (a replace is needed)", field="practitioner")
        if fields & {"status", "cancellation_reason"}:
            target = m.native_status(desired)
            if target in m.never_written:
                # docs/vendors/README.md rule 15: completed needs a diagnosis only the doctor gives; nothing is written
                pass
            elif target == "cancelled":
                if native_now != "cancelled":
                    out[f["status"]] = target
                    out[f["cancellation_reason"]] = m.cancellation_reason(desired)
            elif target != native_now:
                out[f["status"]] = target
        if fields & {"start", "end"}:
            for name, value in m.schedule(desired).items():
                if raw.get(name) != value:
                    out[name] = value
        if "description" in fields:
            reason = m.reason_value(desired)
            if (raw.get(f["description"]) or None) != reason:
                out[f["description"]] = reason
        if "notes" in fields or replacing:
            split = m.split(raw)
            reference = split.reference or split.replaced or canonical_id
            text = split.notes if replacing else desired.notes
            notes = m.notes_value(text, reference, replaced=replacing)
            if raw.get(f["notes"]) != notes:
                out[f["notes"]] = notes
        return out

    # -- idempotency (part 9) -------------------------------------------------------------------
    async def _search(self, canonical_id: str, exclude: Sequence[str]) -> list[dict[str, Any]]:
        hint = self._hints.get(canonical_id)
        if hint is not None:
            params = {"date_from": hint[0], "date_to": hint[0], "doctor_id": hint[1]}
        else:
            lo, hi = self._window("full", self._today())
            params = {"date_from": lo, "date_to": hi}
        skip = set(exclude)
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            body = await self.client.list_page(params, page, op="search", priority=Priority.WRITE)
            items = [i for i in body["data"] if isinstance(i, dict) and i.get("id")]
            for item in items:
                if str(item["id"]) in skip or item.get("status") == "cancelled":
                    continue
                raw = (
                    item
                    if "notes" in item
                    else await self.client.get_one(str(item["id"]), op="search", priority=Priority.WRITE)
                )
                if raw is None:
                    continue
                if self.mapper.split(raw).reference == canonical_id:
                    found.append(dict(raw))
            pagination = body.get("pagination") if isinstance(body.get("pagination"), dict) else {}
            total_pages = int(pagination.get("total_pages") or 0) if isinstance(pagination, dict) else 0
            if not items or page >= total_pages:
                break
            page += 1
        if len(found) > 1:
            log.warning("reference_held_twice", connector=self.name, op="search", count=len(found))
        return sorted(found, key=lambda r: (str(r.get("created_at") or ""), str(r["id"])))

    async def find_by_reference(
        self, canonical_id: str, *, exclude: Sequence[str] = (), desired: Appointment | None = None
    ) -> list[VendorRecord]:
        """``docs/vendors/saludya.md §9``: the records (not cancelled) whose ``notes`` end with
        ``[syncd:<id>]``, oldest first (the engine decides between several, head rule 10). The list call is
        narrowed to the date and doctor of this process's create attempt, or of ``desired`` (a create whose
        outcome a crashed process left unknown); else it scans the full window."""
        if canonical_id not in self._hints and desired is not None:
            try:
                body = self.mapper.create_body(desired, canonical_id)
            except MappingError:
                body = {}
            if body.get("date") and body.get("doctor_id"):
                self._hints[canonical_id] = (str(body["date"]), str(body["doctor_id"]))
        return [self._record(raw) for raw in await self._search(canonical_id, exclude)]
