"""The Salesforce Health Cloud connector (docs/vendors/salesforce_health.md §1-§9).

Reads ``ServiceAppointment`` rows through the REST API (composite batch read of 200 + one
AssignedResource query per batch for the practitioner), detects changes with the ``updated/`` and
``deleted/`` replication feeds (window reconciliation by SOQL when there is no usable cursor), and
writes through the IAM Connect API (POST create, PUT update, PATCH cancel) plus small sObject
PATCHes for ``Status``, ``Comments``, ``Description`` and ``Syncd_Id__c``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from connectors.salesforce_health.client import NotFound, ReplicationDateError, SalesforceClient
from connectors.salesforce_health.mapfuncs import (
    PARTICIPANT_FIELDS,
    SCHEDULING_FIELDS,
    connect_body,
    http_date,
    native_status_for,
    record_to_appointment,
    sf_datetime_in,
    utc_z_out,
)
from connectors.salesforce_health.rules import write_refusal
from connectors.salesforce_health.webhook import parse as parse_delivery
from syncd.config import ConnectorConfig
from syncd.connector import (
    Capabilities,
    ChangePage,
    Check,
    Remedy,
    StateStore,
    VendorRecord,
    WebhookDelivery,
    WriteKind,
    WriteOutcome,
    WriteRequest,
)
from syncd.doctor import Diagnosis
from syncd.errors import (
    AmbiguousReference,
    AuthFailure,
    Conflict,
    MappingError,
    RateLimited,
    Rejected,
    Retriable,
    UnknownOutcome,
    VendorError,
)
from syncd.http import HttpClient
from syncd.mapping import VendorMapping
from syncd.model import SYNC_FIELDS, Appointment, InvalidAppointment, Status

__all__ = ["SalesforceHealthConnector"]

_REQUIRED_ON_CREATE = frozenset({"start", "end", "patient", "practitioner", "location", "service_type"})

log = structlog.get_logger(__name__)

_SF_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_CANONICAL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CANCELLED = (Status.CANCELLED, Status.ENTERED_IN_ERROR)


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _minute(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(second=0, microsecond=0)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return sf_datetime_in(value, "cursor")
    except MappingError:
        return None


class SalesforceHealthConnector:
    """One Salesforce Health Cloud org, as syncd's core sees it."""

    def __init__(
        self,
        config: ConnectorConfig,
        mapping: VendorMapping,
        *,
        state: StateStore | None = None,
        max_rate_limit_wait: float | None = None,
        session: Any = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.mapping = mapping
        self.options = dict(mapping.options)
        self.state = state
        self.client = SalesforceClient(
            config, state=state, max_rate_limit_wait=max_rate_limit_wait, session=session, options=self.options
        )
        self.fields: list[str] = list(self.options["api_fields"])
        self.batch = int(self.options.get("batch_read_size", 200))
        self.now: Callable[[], datetime] = now or (lambda: datetime.now(UTC))
        self._unstamped: set[str] = set()
        """Ids this connector has just created and is stamping with ``Syncd_Id__c``: not orphans."""
        self.capabilities = Capabilities(
            webhooks=True,
            batch_read_size=self.batch,
            batch_write_size=1,
            optimistic_concurrency=False,
            patient_change=True,
            notification_switch=False,
            subscription=False,
            replace_reason=None,
            # every canonical field has a field syncd writes (docs/vendors/salesforce_health.md §9), so
            # nothing is declared not stored or read-only. A create needs a Patient, a Facility and a
            # Practitioner participant and a workTypeId, besides its times (§4)
            required_on_create=_REQUIRED_ON_CREATE,
        )

    # -- records ---------------------------------------------------------------------------------
    def _record(self, external_id: str, row: Mapping[str, Any], resources: Sequence[str]) -> VendorRecord:
        f = self.mapping.fields
        version = row.get(f["version"])
        version_s = f"{version}#{self._content_digest(row, resources)}" if version is not None else None
        modified = _parse_iso(row.get(f["modified"])) or _parse_iso(version)
        syncd_id = row.get(f["reference"])
        syncd_id_s = syncd_id if isinstance(syncd_id, str) and syncd_id else None
        try:
            appointment = record_to_appointment(self.mapping, row, resources)
        except MappingError as exc:
            log.warning("record_unmappable", connector=self.name, external_id=external_id, code=exc.field)
            return VendorRecord(external_id, version_s, None, error=exc, modified_at=modified, syncd_id=syncd_id_s)
        return VendorRecord(external_id, version_s, appointment, modified_at=modified, syncd_id=syncd_id_s)

    def _content_digest(self, row: Mapping[str, Any], resources: Sequence[str]) -> str:
        """A short digest of the record's content: ``SystemModstamp`` has one-second precision, so
        two changes in one second share it (§8); the version carries this digest as well."""
        skip = {"attributes", self.mapping.fields["version"], self.mapping.fields["modified"], "AppointmentNumber"}
        content = {k: row.get(k) for k in self.fields if k not in skip}
        content["_resources"] = sorted(resources)
        payload = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @staticmethod
    def _deleted(external_id: str) -> VendorRecord:
        return VendorRecord(external_id, None, None, deleted=True)

    async def _resources(self, ids: Sequence[str]) -> dict[str, list[str]]:
        """AssignedResource ``ServiceResourceId`` per appointment id (one query per batch, §3)."""
        out: dict[str, list[str]] = {}
        if not ids:
            return out
        quoted = ",".join(f"'{i}'" for i in ids)
        rows = await self.client.query(
            "SELECT ServiceAppointmentId, ServiceResourceId FROM AssignedResource "
            f"WHERE ServiceAppointmentId IN ({quoted})",
            op="read_resources",
        )
        for row in rows:
            sa, sr = row.get("ServiceAppointmentId"), row.get("ServiceResourceId")
            if isinstance(sa, str) and isinstance(sr, str):
                out.setdefault(sa, []).append(sr)
                if len(sa) == 18:
                    out.setdefault(sa[:15], out[sa])
        return out

    async def _read_rows(
        self, ids: Sequence[str], *, with_resources: bool = True
    ) -> dict[str, tuple[dict[str, Any] | None, list[str] | None]]:
        """Raw rows by id (None = deleted/unknown) and their resources (None when not queried)."""
        out: dict[str, tuple[dict[str, Any] | None, list[str] | None]] = {}
        wanted = [i for i in dict.fromkeys(ids)]
        for bad in [i for i in wanted if not _SF_ID_RE.match(i)]:
            out[bad] = (None, None)
        valid = [i for i in wanted if _SF_ID_RE.match(i)]
        for chunk in _chunks(valid, self.batch):
            rows = await self.client.composite(chunk, self.fields)
            found: dict[str, dict[str, Any]] = {}
            missing: list[str] = []
            for asked, row in zip(chunk, rows, strict=True):
                if isinstance(row, dict):
                    found[asked] = row
                else:
                    missing.append(asked)
            for asked in missing:  # a null is confirmed by a single GET (404 -> deleted)
                single = await self.client.get_one(asked, self.fields)
                if single is not None:
                    found[asked] = single
                else:
                    out[asked] = (None, None)
            resources = await self._resources(list(found)) if with_resources else None
            for asked, row in found.items():
                res = None
                if resources is not None:
                    rid = row.get("Id") if isinstance(row.get("Id"), str) else asked
                    res = resources.get(str(rid), resources.get(asked, []))
                out[asked] = (row, res)
        return out

    async def read(self, external_ids: Sequence[str]) -> Mapping[str, VendorRecord]:
        rows = await self._read_rows(external_ids)
        out: dict[str, VendorRecord] = {}
        for asked in external_ids:
            row, res = rows[asked]
            out[asked] = self._deleted(asked) if row is None else self._record(asked, row, res or [])
        log.info("read", connector=self.name, count=len(out))
        return out

    # -- changes ---------------------------------------------------------------------------------
    @staticmethod
    def _decode(cursor: str | None) -> dict[str, Any]:
        if not cursor:
            return {}
        try:
            data = json.loads(cursor)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _encode(data: Mapping[str, Any]) -> str:
        return json.dumps({k: v for k, v in data.items() if v is not None}, sort_keys=True, separators=(",", ":"))

    def window_bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """Local midnight today - ``window_past_days`` .. local midnight today + future + 1 day (UTC)."""
        tz = ZoneInfo(self.config.timezone)
        today = now.astimezone(tz).date()
        lo_day = today - timedelta(days=self.config.window_past_days)
        hi_day = today + timedelta(days=self.config.window_future_days + 1)
        lo = datetime.combine(lo_day, dtime(0), tzinfo=tz).astimezone(UTC)
        hi = datetime.combine(hi_day, dtime(0), tzinfo=tz).astimezone(UTC)
        return lo, hi

    async def changes(self, cursor: str | None, *, since: datetime | None = None) -> AsyncIterator[ChangePage]:
        state = self._decode(cursor)
        now = self.now()
        if since is not None:
            since_utc = since.astimezone(UTC)
            state = {"u": _iso(since_utc), "d": _iso(since_utc)}
        elif cursor is not None and self.client.usage_ratio > float(self.options.get("pause_polling_above", 0.9)):
            log.warning("polling_paused", connector=self.name, code="api_usage_above_limit")
            yield ChangePage([], cursor)
            return
        if state.get("win") or not state.get("u") or not state.get("d"):
            async for page in self._window(state, now):
                yield page
            return
        updated_from = _parse_iso(state["u"])
        deleted_from = _parse_iso(state["d"])
        max_age = timedelta(days=int(self.options.get("replication_max_age_days", 30)))
        if updated_from is None or deleted_from is None or now - min(updated_from, deleted_from) > max_age:
            async for page in self._window({}, now):
                yield page
            return
        try:
            async for page in self._incremental(state, updated_from, deleted_from, now):
                yield page
        except ReplicationDateError as exc:
            log.warning("replication_window_exceeded", connector=self.name, code=exc.code)
            async for page in self._window({}, now):
                yield page

    async def _incremental(
        self, state: dict[str, Any], updated_from: datetime, deleted_from: datetime, now: datetime
    ) -> AsyncIterator[ChangePage]:
        old_cursor = self._encode(state)
        end = _minute(now)
        new_u, new_d = updated_from, deleted_from
        updated_ids: list[str] = []
        deleted_ids: list[str] = []
        # both feeds are asked first: a breach of either runs the window reconciliation (§2 b)
        if end > updated_from:
            body = await self.client.replication("updated", updated_from, end)
            updated_ids = [i for i in body.get("ids", []) if isinstance(i, str)]
            new_u = _parse_iso(body.get("latestDateCovered")) or updated_from
        if end > deleted_from:
            body = await self.client.replication("deleted", deleted_from, end)
            for item in body.get("deletedRecords", []) or []:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    deleted_ids.append(item["id"])
            new_d = _parse_iso(body.get("latestDateCovered")) or deleted_from
        new_cursor = self._encode({"u": _iso(max(new_u, updated_from)), "d": _iso(max(new_d, deleted_from))})
        gone = set(deleted_ids)
        to_read = [i for i in dict.fromkeys(updated_ids) if i not in gone]
        chunks = _chunks(to_read, self.batch)
        log.info("poll", connector=self.name, op="changes", count=len(to_read) + len(gone))
        for index, chunk in enumerate(chunks):
            records = list((await self.read(chunk)).values())
            last = index == len(chunks) - 1
            # the cursors are stored only after all of the pass's reads are done (§2 b)
            yield ChangePage(records, new_cursor if last else old_cursor, deleted_ids=list(gone) if last else ())
        if not chunks:
            yield ChangePage([], new_cursor, deleted_ids=list(dict.fromkeys(deleted_ids)))

    async def _window(self, state: dict[str, Any], now: datetime) -> AsyncIterator[ChangePage]:
        """§2 (c): every record whose start is in the window, read in batches of 200."""
        win = state.get("win") if isinstance(state.get("win"), dict) else None
        if win is not None:
            lo_s, hi_s, reset_s = str(win.get("lo")), str(win.get("hi")), str(win.get("reset"))
            after = win.get("after") if isinstance(win.get("after"), str) else None
        else:
            lo, hi = self.window_bounds(now)
            lo_s, hi_s = _iso(lo), _iso(hi)
            reset_s = _iso(_minute(now) - timedelta(minutes=1))
            after = None
        soql = (
            f"SELECT Id, SystemModstamp FROM ServiceAppointment WHERE SchedStartTime >= {lo_s} "
            f"AND SchedStartTime < {hi_s} ORDER BY Id"
        )
        log.info("window_reconciliation", connector=self.name, op="window")
        passed_after = after is None
        buffer: list[str] = []
        total = 0

        async def flush(ids: list[str], final: bool) -> ChangePage:
            records = list((await self.read(ids)).values()) if ids else []
            cur: dict[str, Any]
            if final:
                cur = {"u": reset_s, "d": reset_s}
            else:
                cur = {"u": reset_s, "d": reset_s, "win": {"lo": lo_s, "hi": hi_s, "reset": reset_s, "after": ids[-1]}}
            return ChangePage(records, self._encode(cur))

        async for page in self.client.query_pages(soql, op="window"):
            for row in page:
                rid = row.get("Id")
                if not isinstance(rid, str):
                    continue
                if not passed_after:
                    assert after is not None
                    if rid == after or rid < after:
                        passed_after = passed_after or rid == after
                        continue
                    passed_after = True
                buffer.append(rid)
                if len(buffer) >= self.batch:
                    total += len(buffer)
                    yield await flush(buffer, final=False)
                    buffer = []
        total += len(buffer)
        log.info("window_done", connector=self.name, op="window", count=total)
        yield await flush(buffer, final=True)

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
                "write", connector=self.name, op=request.kind.value, external_id=request.external_id
                or (outcome.record.external_id if outcome.record else None),
                code=getattr(outcome.error, "code", None) if outcome.error else None,
                duration_s=round(time.perf_counter() - started, 3),
            )
            outcomes.append(outcome)
        return outcomes

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
            return WriteOutcome(request, error=Conflict("the record was deleted", code="ENTITY_IS_DELETED"),
                                record=self._deleted(ext))
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
                return WriteOutcome(request, error=Conflict("the record changed since it was read",
                                                            code="STALE_VERSION"), record=record)
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
            return WriteOutcome(request, error=Conflict(exc.message, code=exc.code, status=exc.status),
                                record=self._deleted(ext))
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
        locked = set(self.options.get("put_locked_categories", []))
        modified = _parse_iso(row.get(self.mapping.fields["modified"]))
        ius = http_date(modified) if modified is not None else None
        if "status" in changed and target.status in _CANCELLED:
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
        status_value = (
            native_status_for(self.mapping, target.status, category) if "status" in changed else None
        )
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
            put_body = connect_body(target, external_id=ext, timezone=self.config.timezone,
                                    channel_id=self._channel(target, current))
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

    def _category_of(self, status_value: str) -> str:
        return str(dict(self.options.get("category_of", {})).get(status_value, status_value))

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

    # -- create ----------------------------------------------------------------------------------
    async def _create(self, request: WriteRequest) -> WriteOutcome:
        desired = request.desired
        canonical_id = request.canonical_id
        if not _CANONICAL_ID_RE.match(canonical_id):
            raise MappingError("canonical id holds characters SOQL would need escaped", field="id")
        self.mapping.to_native(desired.status)  # waitlist: no native value fits -> MappingError
        body = connect_body(desired, external_id=None, timezone=self.config.timezone,
                            channel_id=self._channel(desired, None))
        reference_patch = self._reference_patch(canonical_id, desired)
        # a new record is Scheduled: the status it must take instead (proposed, pending) goes with the
        # stamp, in the same sObject PATCH (one call, and no window in which it is stamped but still
        # Scheduled); refused there, the stamp is sent alone and the status PATCH follows as before
        initial_status = (native_status_for(self.mapping, desired.status, "Scheduled")
                          if desired.status not in _CANCELLED else None)
        status_sent: set[str] = set()
        created: dict[str, bool] = {}
        exclude = [request.replaces] if request.replaces else []

        async def set_reference(new_id: str) -> None:
            try:
                if initial_status is not None:
                    try:
                        await self.client.sobject_patch("set_reference", new_id,
                                                        {**reference_patch, "Status": initial_status})
                        status_sent.add(new_id)
                        return
                    except Rejected as exc:
                        if exc.code == "DUPLICATE_VALUE":
                            raise
                        log.info("status_with_stamp_refused", connector=self.name, external_id=new_id,
                                 code=exc.code)
                await self.client.sobject_patch("set_reference", new_id, reference_patch)
            except Rejected as exc:
                if exc.code == "DUPLICATE_VALUE":
                    found = await self.find_by_reference(canonical_id, exclude=[*exclude, new_id])
                    if found:
                        # an earlier create already holds the reference: retire the duplicate
                        await self.client.connect("cancel", "PATCH", new_id, {
                            "id": new_id, "status": str(self.mapping.defaults.get("cancel_status", "Canceled")),
                            "cancellationReason": str(self.mapping.defaults.get("entered_in_error_reason")),
                        })
                        created["adopted:" + found[0].external_id] = True
                        return
                raise
            except Retriable as exc:
                if isinstance(exc, UnknownOutcome):
                    raise
                raise UnknownOutcome(exc.message, code=exc.code, status=exc.status) from exc

        async def do_create() -> str:
            new_id = await self.client.connect("create", "POST", None, body)
            created[new_id] = True
            # a concurrent create's orphan search must not take this record for its own lost POST
            # (two appointments of one patient at one start: one per practitioner)
            self._unstamped.add(new_id)
            try:
                await set_reference(new_id)
            finally:
                self._unstamped.discard(new_id)
            for key in created:
                if key.startswith("adopted:"):
                    return key.removeprefix("adopted:")
            return new_id

        async def search() -> str | None:
            found = await self.find_by_reference(canonical_id, exclude=exclude, desired=desired)
            if len(found) > 1:
                raise AmbiguousReference("several Salesforce records hold this appointment's reference",
                                         external_ids=tuple(r.external_id for r in found))
            return found[0].external_id if found else None

        ext = await self.client.http.create_idempotently(do_create, search)
        resources = self._resources_of(desired)
        fresh_create = created.get(ext, False)
        category = "Scheduled" if fresh_create else None
        row: dict[str, Any] | None = None
        if not fresh_create:
            row = await self.client.get_one(ext, self.fields)
            category = row.get("StatusCategory") if row is not None else None
        wrote = False
        if desired.status in _CANCELLED:
            if category != "Canceled":
                await self.client.connect("cancel", "PATCH", ext, {
                    "id": ext, "status": str(self.mapping.defaults.get("cancel_status", "Canceled")),
                    "cancellationReason": self._cancel_reason(desired),
                })
                wrote = True
        elif not (fresh_create and ext in status_sent):
            status_value = native_status_for(self.mapping, desired.status, category)
            if status_value is not None:
                await self.client.sobject_patch("update_fields", ext, {"Status": status_value})
                wrote = True
        if row is not None and not wrote:
            return WriteOutcome(request, record=self._record(ext, row, resources))
        return WriteOutcome(request, record=await self._read_back(ext, resources))

    def _reference_patch(self, canonical_id: str, desired: Appointment) -> dict[str, Any]:
        """The sObject PATCH that stamps a new record (``docs/vendors/salesforce_health.md §4``):
        ``Syncd_Id__c`` and the description the Connect body cannot carry."""
        patch: dict[str, Any] = {self.mapping.fields["reference"]: canonical_id}
        if desired.description is not None:
            patch[self.mapping.fields["description"]] = desired.description
        return patch

    async def _find_orphan(self, desired: Appointment, canonical_id: str, exclude: Sequence[str]) -> str | None:
        """``docs/vendors/salesforce_health.md §9``: a POST that landed without its ``Syncd_Id__c`` PATCH (a
        lost answer, or a process killed between the two calls): the one unstamped record of this patient at
        this start, stamped now. Several are narrowed by the practitioner (AssignedResource); still several
        is :class:`AmbiguousReference`, never a guess."""
        if desired.patient is None or desired.start is None or not _SF_ID_RE.match(desired.patient):
            return None
        rows = await self.client.query(
            f"SELECT Id, Syncd_Id__c FROM ServiceAppointment WHERE ParentRecordId = '{desired.patient}' "
            f"AND SchedStartTime = {utc_z_out(desired.start)} AND Syncd_Id__c = null",
            op="find_reference",
        )
        ids = sorted(r["Id"] for r in rows
                     if isinstance(r.get("Id"), str) and r["Id"] not in exclude and r["Id"] not in self._unstamped)
        if len(ids) > 1 and desired.practitioner is not None:
            resources = await self._resources(ids)
            ids = [i for i in ids if desired.practitioner in resources.get(i, [])] or ids
        if not ids:
            return None
        if len(ids) > 1:
            raise AmbiguousReference("several Salesforce records without a reference match this create",
                                     external_ids=tuple(ids))
        await self.client.sobject_patch("set_reference", ids[0], self._reference_patch(canonical_id, desired))
        log.info("create_found_unstamped", connector=self.name, external_id=ids[0], op="find_reference")
        return str(ids[0])

    async def find_by_reference(
        self, canonical_id: str, *, exclude: Sequence[str] = (), desired: Appointment | None = None
    ) -> list[VendorRecord]:
        """``docs/vendors/salesforce_health.md §9``: the records whose ``Syncd_Id__c`` holds ``canonical_id``
        (unique in the org: at most one unless the field lost its uniqueness), read in full, deleted ones
        left out. With ``desired`` (a create whose outcome is unknown) and none found, the unstamped search
        of §9 runs as well, and the record it finds is stamped before it is returned."""
        if not _CANONICAL_ID_RE.match(canonical_id):
            return []
        skip = set(exclude)
        rows = await self.client.query(
            f"SELECT Id FROM ServiceAppointment WHERE {self.mapping.fields['reference']} = '{canonical_id}'",
            op="find_reference",
        )
        ids = sorted({r["Id"] for r in rows if isinstance(r.get("Id"), str) and r["Id"] not in skip})
        if not ids and desired is not None:
            orphan = await self._find_orphan(desired, canonical_id, list(skip))
            ids = [orphan] if orphan is not None else []
        if not ids:
            return []
        records = await self.read(ids)
        return [records[i] for i in ids if not records[i].deleted]

    # -- the rest --------------------------------------------------------------------------------
    def needs_replace(self, current: Appointment, desired: Appointment) -> str | None:
        # every change can be made in place (the patient too: ParentRecordId follows the PUT)
        return None

    def write_refusal(self, current: Appointment, desired: Appointment, *, now: datetime) -> str | None:
        return write_refusal(self.mapping, current, desired)

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
        secret = self.config.webhook_secret.reveal() if self.config.webhook_secret is not None else None
        return parse_delivery(secret, headers, body, now=now)

    async def maintain(self, public_url: str | None) -> Mapping[str, Any]:
        usage = self.client.api_usage
        return {
            "subscription": "not needed",
            "webhooks": "org Flow callout, generic signature" if self.config.webhook_secret else "disabled",
            "api_usage": f"{usage[0]}/{usage[1]}" if usage else None,
            **self.client.http.stats(),
        }

    @property
    def http(self) -> HttpClient:
        """The connector's HTTP client (call counters for ``api_calls``)."""
        return self.client.http

    async def close(self) -> None:
        await self.client.close()

    # -- operator help: remedies and ``syncd doctor`` (docs/vendors/salesforce_health.md §1, §3, §6, §7) ---
    def remedy(self, error: VendorError) -> Remedy | None:
        key = f"connectors.{self.name}"
        token_url = self.config.auth_value("token_url")
        if error.url is not None and error.url.startswith(token_url.split("?")[0]) and error.status is None:
            return Remedy(f"{key}.token_url")
        if not isinstance(error, AuthFailure):
            return None
        field = self.mapping.fields["reference"]
        by_code = {
            "invalid_grant": Remedy(f"{key}.refresh_token", "the refresh token is revoked or expired: authorise "
                                    "the connected app again and put the new refresh token in the config"),
            "invalid_client_id": Remedy(f"{key}.client_id", "Salesforce does not know this connected app's "
                                        "consumer key"),
            "invalid_client": Remedy(f"{key}.client_secret", "the consumer secret does not match the connected app"),
            "INVALID_SESSION_ID": Remedy(f"{key}.refresh_token", "a fresh access token was refused too: check the "
                                         "connected app's OAuth policies and the integration user"),
            "INSUFFICIENT_ACCESS": Remedy(None, "the integration user lacks a permission or the Health Cloud "
                                          "licence (permission set for Intelligent Appointment Management)"),
            "FUNCTIONALITY_NOT_ENABLED": Remedy(None, "Health Cloud appointment management is not enabled in "
                                                "this org"),
            "INVALID_FIELD": Remedy(None, f"create the custom field {field} on ServiceAppointment (Text 64, "
                                    "External ID, Unique) and give the integration user read and edit access "
                                    "to it (field-level security)"),
        }
        return by_code.get(error.code or "", Remedy(f"{key}.refresh_token"))

    async def diagnose(self, public_url: str | None) -> list[Check]:
        """Token refresh, the ``Syncd_Id__c`` field (a query that names it), read access to
        ServiceAppointment and AssignedResource, the API version, the daily API usage, and the org-side
        webhook (a Flow or Apex callout syncd cannot see). No write."""
        d = Diagnosis(self)
        key = f"connectors.{self.name}"
        version = self.client.api_version
        try:
            major = float(version)
        except ValueError:
            major = 0.0
        if major < 65.0:
            d.fail("api version", f"api_version {version!r}: the appointment-management resources need 65.0 or "
                   "later", f"set {key}.api_version = \"65.0\"", f"{key}.api_version")

        async def token() -> bool:
            await self.client.auth.ensure()
            return True

        if await d.attempt("authenticate", token()) is None:
            d.skip_blocked("field " + self.mapping.fields["reference"], "read", "permissions", "api usage")
        else:
            instance = self.client.auth.instance_url or self.config.base_url
            d.ok("authenticate", f"the token endpoint issued an access token for {instance}")
            if instance.rstrip("/") != self.config.base_url.rstrip("/"):
                d.warn("instance url", f"the token's instance_url {instance} differs from base_url; syncd uses "
                       "instance_url", f"set {key}.base_url to the org's My Domain URL", f"{key}.base_url")
            field = self.mapping.fields["reference"]
            probe = f"SELECT Id FROM ServiceAppointment WHERE {field} = 'syncd_doctor_probe'"
            if await d.attempt(f"field {field}", self.client.get_json("doctor", "query", {"q": probe}),
                               missing=True) is not None:
                d.ok(f"field {field}", f"ServiceAppointment.{field} exists and the integration user can query it")
            lo, hi = self.window_bounds(datetime.now(UTC))
            window = (f"SELECT Id, SystemModstamp FROM ServiceAppointment WHERE SchedStartTime >= {_iso(lo)} "
                      f"AND SchedStartTime < {_iso(hi)} ORDER BY Id")
            page = await d.attempt("read", self.client.get_json("doctor", "query", {"q": window}))
            if page is not None:
                total = page.get("totalSize", "?") if isinstance(page, dict) else "?"
                d.ok("read", f"read one page of the window: {total} appointments between {_iso(lo)[:10]} and "
                     f"{_iso(hi)[:10]}")
            resources = ("SELECT ServiceAppointmentId, ServiceResourceId FROM AssignedResource "
                         "WHERE ServiceAppointmentId IN ('08p000000000000AAA')")
            if await d.attempt("permissions", self.client.get_json("doctor", "query", {"q": resources}),
                               missing=True) is not None:
                d.ok("permissions", "the integration user can read AssignedResource (the practitioner of each "
                     "appointment)")
            usage = self.client.api_usage
            if usage is None:
                d.skip("api usage", "the answers carried no Sforce-Limit-Info header")
            elif usage[1] and usage[0] / usage[1] >= float(self.options.get("pause_polling_above", 0.9)):
                d.warn("api usage", f"{usage[0]} of {usage[1]} daily API requests used: syncd pauses polling "
                       "above 90 %", "check which integrations spend the org's allocation")
            else:
                d.ok("api usage", f"{usage[0]} of {usage[1]} daily API requests used (org-wide)")
        hook = f"{(public_url or '<public URL>').rstrip('/')}/webhooks/{self.name}"
        if self.config.webhook_secret is None:
            d.warn("webhooks", f"webhooks are off: changes arrive by polling every {self.config.poll_interval:g}s",
                   f"set {key}.webhook_secret and add the signed Flow or Apex callout to {hook}",
                   f"{key}.webhook_secret")
        else:
            d.skip("webhooks", "the callout is a Flow or Apex trigger in the org, which syncd cannot see",
                   f"check that it posts the changed ids to {hook}, signed with {key}.webhook_secret")
        return d.checks

