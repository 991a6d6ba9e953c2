"""Salesforce Health Cloud updates and cancels (docs/vendors/salesforce_health.md §4, §5, §8): the
pre-write re-read, the Connect PUT / PATCH and the sObject PATCHes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from connectors.salesforce_health.client import NotFound
from connectors.salesforce_health.mapfuncs import SCHEDULING_FIELDS, connect_body, http_date, native_status_for
from connectors.salesforce_health.reads import SalesforceReads, _parse_iso
from syncd.connector import VendorRecord, WriteKind, WriteOutcome, WriteRequest
from syncd.errors import Conflict, MappingError, Rejected
from syncd.model import SYNC_FIELDS, Appointment, InvalidAppointment, Status

log = structlog.get_logger(__name__)

_CANCELLED = (Status.CANCELLED, Status.ENTERED_IN_ERROR)


class SalesforceWrites(SalesforceReads):
    """Writes one record per call, after one batched re-read of the targets."""

    # -- writes ----------------------------------------------------------------------------------
    def _resources_of(self, appointment: Appointment | None) -> list[str]:
        if appointment is None or appointment.practitioner is None:
            return []
        extra = appointment.extra.get("resources")
        others = [str(r) for r in extra[1:]] if isinstance(extra, list) else []
        return [appointment.practitioner, *[r for r in others if r != appointment.practitioner]]

    async def _read_back(self, external_id: str, resources: Sequence[str]) -> VendorRecord:
        row = await self.client.get_one(external_id, self.fields)
        if row is None:
            return self._deleted(external_id)
        return self._record(external_id, row, resources)

    def _merged(self, current: Appointment, desired: Appointment, changed: set[str]) -> Appointment:
        values: dict[str, Any] = {name: getattr(desired if name in changed else current, name) for name in SYNC_FIELDS}
        if values["status"] not in _CANCELLED:
            values["cancellation_reason"] = None
        extra = dict(current.extra)
        extra.update({k: v for k, v in desired.extra.items() if k not in extra})
        try:
            return Appointment(**values, native_status=current.native_status, extra=extra)
        except InvalidAppointment as exc:
            raise MappingError(f"{self.mapping.vendor}: {exc}", field="start") from None

    def _cancel_reason(self, desired: Appointment) -> str:
        if desired.status is Status.ENTERED_IN_ERROR:
            return str(self.mapping.defaults.get("entered_in_error_reason", "Entered in error"))
        return desired.cancellation_reason or str(self.mapping.defaults.get("sync_cancel_reason", "Other"))

    async def _update(
        self, request: WriteRequest, fresh: tuple[dict[str, Any] | None, list[str] | None] | None
    ) -> WriteOutcome:
        assert request.external_id is not None
        ext = request.external_id
        row, res = fresh if fresh is not None else (None, None)
        if row is None:
            return WriteOutcome(
                request, error=Conflict("the record was deleted", code="ENTITY_IS_DELETED"), record=self._deleted(ext)
            )
        current_appt = request.current.appointment if request.current is not None else None
        resources = res if res is not None else self._resources_of(current_appt)
        record = self._record(ext, row, resources)
        if request.current is not None:
            stale = record.version != request.current.version
            # the fingerprint only against a ``current`` the vendor answered: the engine's carries its
            # merge base (the version already holds a digest of the content)
            if not stale and request.current_is_read and record.appointment is not None and current_appt is not None:
                stale = record.appointment.fingerprint() != current_appt.fingerprint()
            if stale:
                return WriteOutcome(
                    request, error=Conflict("the record changed since it was read", code="STALE_VERSION"), record=record
                )
        if record.appointment is None:
            assert record.error is not None
            return WriteOutcome(request, error=record.error)
        current = record.appointment
        desired = request.desired
        changed = set(request.changed) or set(current.diff(desired))
        if request.kind is WriteKind.CANCEL:
            changed.add("status")
            if desired.status not in _CANCELLED:
                desired = desired.with_changes(status=Status.CANCELLED)
        changed = {name for name in changed if name in SYNC_FIELDS}
        target = self._merged(current, desired, changed)
        changed = {name for name in changed if getattr(target, name) != getattr(current, name)}
        category = row.get("StatusCategory") if isinstance(row.get("StatusCategory"), str) else None
        merged_from = current_appt.status if current_appt is not None else current.status
        try:
            wrote = await self._apply(ext, row, category, current, target, changed)
        except Conflict as exc:
            again = await self._read_back(ext, resources)
            same = again.appointment is not None and again.appointment.status is merged_from
            if exc.code == "INVALID_STATE" and same:
                return WriteOutcome(request, error=Rejected(exc.message, code=exc.code, status=exc.status))
            return WriteOutcome(request, error=exc, record=again)
        except NotFound as exc:
            return WriteOutcome(
                request, error=Conflict(exc.message, code=exc.code, status=exc.status), record=self._deleted(ext)
            )
        if not wrote:  # it holds all of it already (another write carried it): nothing was sent
            return WriteOutcome(request, record=record, sent=False)
        return WriteOutcome(request, record=await self._read_back(ext, self._resources_of(target)))

    async def _apply(
        self,
        ext: str,
        row: Mapping[str, Any],
        category: str | None,
        current: Appointment,
        target: Appointment,
        changed: set[str],
    ) -> bool:
        """Send what still differs; True when a write was made."""
        locked = set(self.settings.put_locked_categories)
        modified = _parse_iso(row.get(self.mapping.fields["modified"]))
        ius = http_date(modified) if modified is not None else None
        if "status" in changed and target.status in _CANCELLED:
            return await self._apply_cancel(ext, category, target, changed, ius)
        status_value = native_status_for(self.mapping, target.status, category) if "status" in changed else None
        put_needed = bool(changed & SCHEDULING_FIELDS)
        put_possible = category not in locked
        if "notes" in changed and put_possible:
            put_needed = True
        patch = self._text_patch(target, changed, put_possible=put_needed)
        if status_value is not None:
            patch["Status"] = status_value
        put_body = None
        if put_needed:
            # docs/vendors/salesforce_health.md §8: the Connect PUT has no version input and ignores
            # If-Unmodified-Since, so a window stays open between the pre-write GET and the PUT. The body
            # is built from that GET (``current``) plus the fields being changed, never from the ledger;
            # a PATCH that goes with it is sent first, conditional, unless its status would lock the PUT.
            # A change another user makes meanwhile to a field the PUT does not carry survives it, and the
            # read-back (then not our echo) carries it to the other members; one to a field the PUT
            # carries (times, participants, work type, channel, comment) is replaced by the PUT.
            put_body = connect_body(
                target, external_id=ext, timezone=self.config.timezone, channel_id=self._channel(target, current)
            )
        if not patch and put_body is None:
            return False
        new_locks = status_value is not None and self.mapping.status_in.get(
            self._category_of(status_value), Status.BOOKED
        ) not in (Status.BOOKED, Status.PENDING, Status.PROPOSED)
        if put_body is not None and (new_locks or not patch):
            await self.client.connect("update", "PUT", ext, put_body)
            if patch:  # our PUT moved LastModifiedDate: no stale date for the follow-up PATCH
                await self.client.sobject_patch("update_fields", ext, patch, None)
            return True
        await self.client.sobject_patch("update_fields", ext, patch, ius)
        if put_body is not None:
            await self.client.connect("update", "PUT", ext, put_body)
        return True

    async def _apply_cancel(
        self, ext: str, category: str | None, target: Appointment, changed: set[str], ius: str | None
    ) -> bool:
        """A cancel: the Connect PATCH (with the notes as its comment) unless it is cancelled already,
        then the text fields by sObject PATCH; True when a write was made."""
        wrote = False
        if category != "Canceled":
            body: dict[str, Any] = {
                "id": ext,
                "status": str(self.mapping.defaults.get("cancel_status", "Canceled")),
                "cancellationReason": self._cancel_reason(target),
            }
            if "notes" in changed and target.notes is not None:
                body["comment"] = target.notes
                changed.discard("notes")
            await self.client.connect("cancel", "PATCH", ext, body)
            wrote, ius = True, None
        patch = self._text_patch(target, changed, put_possible=False)
        if patch:
            await self.client.sobject_patch("update_fields", ext, patch, ius)
            wrote = True
        return wrote

    def _category_of(self, status_value: str) -> str:
        return self.settings.category_of.get(status_value, status_value)

    @staticmethod
    def _channel(target: Appointment, current: Appointment | None) -> str | None:
        channel = target.extra.get("channel_id")
        if channel is None and current is not None:
            channel = current.extra.get("channel_id")
        return str(channel) if channel else None

    def _text_patch(self, target: Appointment, changed: set[str], *, put_possible: bool) -> dict[str, Any]:
        f = self.mapping.fields
        patch: dict[str, Any] = {}
        if "description" in changed:
            patch[f["description"]] = target.description
        if "notes" in changed and not put_possible:
            patch[f["notes"]] = target.notes
        return patch
