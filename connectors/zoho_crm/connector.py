"""The Zoho CRM connector (docs/vendors/zoho_crm.md): change detection, reads, writes, watch channels."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import structlog

from connectors.zoho_crm.client import ZohoClient, mask
from connectors.zoho_crm.mapfuncs import ZohoMapper, utc_to_zoho_time, zoho_time_to_utc
from connectors.zoho_crm.rules import write_refusal
from connectors.zoho_crm.webhook import parse_callback
from syncd.config import ConnectorConfig
from syncd.connector import (
    Capabilities,
    ChangePage,
    Check,
    MemoryStateStore,
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
    Deferred,
    MappingError,
    NotWritable,
    Rejected,
    VendorError,
)
from syncd.http import HttpClient, Response
from syncd.mapping import VendorMapping
from syncd.model import SYNC_FIELDS, Appointment, Status

__all__ = ["ZohoCrmConnector"]

log = structlog.get_logger(__name__)

STATE_CHANNEL = "watch_channel_id"
STATE_EXPIRY = "watch_channel_expiry"
#: the scopes the refresh token needs (docs/vendors/zoho_crm.md §1)
_NEEDED_SCOPES = ("ZohoCRM.modules.appointments.ALL", "ZohoCRM.notifications.ALL", "ZohoCRM.settings.READ")
_PLAIN_FIELDS = ("patient", "practitioner", "location", "service_type", "description", "notes")
#: "end | Appointment_End_Time | read-only (start + service Duration); a different canonical end is not
#: written" (docs/vendors/zoho_crm.md §9, §3): stored, derived by Zoho from the start
_READ_ONLY = frozenset({"end"})
#: the create column's mandatory keys syncd fills from the appointment: Appointment_For, Owner,
#: Service_Name, Appointment_Start_Time (docs/vendors/zoho_crm.md §4; Location defaults to Business Address)
_REQUIRED_ON_CREATE = frozenset({"start", "patient", "practitioner", "service_type"})


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class ZohoCrmConnector:
    """One Zoho CRM org's appointments, as the core sees them."""

    def __init__(
        self,
        config: ConnectorConfig,
        mapping: VendorMapping,
        *,
        state: StateStore | None = None,
        max_rate_limit_wait: float | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.mapping = mapping
        self.mapper = ZohoMapper(mapping)
        self.options = mapping.options
        self.state: StateStore = state if state is not None else MemoryStateStore()
        self.client = ZohoClient(config, mapping.options, state=self.state,
                                 max_rate_limit_wait=max_rate_limit_wait, session=session)
        self.read_batch = int(self.options["batch_read_size"])
        self.write_batch = int(self.options["batch_write_size"])
        self.page_size = int(self.options["page_size"])
        self.search_lag_s = float(self.options["search_lag_s"])
        self.capabilities = Capabilities(
            webhooks=True,
            batch_read_size=self.read_batch,
            batch_write_size=self.write_batch,
            optimistic_concurrency=False,
            patient_change=True,
            notification_switch=False,
            subscription=True,
            replace_reason=str(mapping.defaults["replace_reason"]),
            read_only=_READ_ONLY,
            required_on_create=_REQUIRED_ON_CREATE,
        )
        self._prefs: dict[str, Any] | None = None
        self._prefs_at = 0.0
        self._replaced_by: dict[str, str] = {}
        self._subscribed = False

    @property
    def http(self) -> HttpClient:
        """The connector's HTTP client (call counters for ``api_calls``)."""
        return self.client.http

    async def close(self) -> None:
        await self.client.close()

    # -- records -------------------------------------------------------------------------------
    def _modified(self, raw: Mapping[str, Any]) -> datetime | None:
        try:
            return zoho_time_to_utc(raw.get(self.mapping.fields["version"]), "version")
        except MappingError:
            return None

    def _record(self, raw: Mapping[str, Any]) -> VendorRecord:
        external_id = self.mapper.external_id(raw)
        modified = self._modified(raw)
        version = utc_to_zoho_time(modified) if modified is not None else None
        syncd_id = self.mapper.syncd_id(raw)
        try:
            appointment = self.mapper.to_appointment(raw)
        except MappingError as exc:
            log.warning("record_unmappable", connector=self.name, external_id=external_id, code=exc.field)
            return VendorRecord(external_id, version, None, error=exc, modified_at=modified, syncd_id=syncd_id)
        return VendorRecord(external_id, version, appointment, modified_at=modified, syncd_id=syncd_id,
                            read_only=_READ_ONLY)

    @staticmethod
    def _deleted(external_id: str) -> VendorRecord:
        return VendorRecord(external_id, None, None, deleted=True)

    # -- change detection (part 2) ---------------------------------------------------------------
    @staticmethod
    def _dump_cursor(state: Mapping[str, Any]) -> str:
        return json.dumps(state, sort_keys=True, separators=(",", ":"))

    @staticmethod
    def _load_cursor(cursor: str) -> dict[str, Any] | None:
        try:
            data = json.loads(cursor)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        for key in ("m", "d"):
            part = data.get(key)
            if not isinstance(part, dict) or not isinstance(part.get("ties", []), list):
                return None
            if part.get("t") is not None and not isinstance(part.get("t"), str):
                return None
        return {k: {"t": data[k].get("t"), "ties": list(data[k].get("ties", []))} for k in ("m", "d")}

    def changes(self, cursor: str | None, *, since: datetime | None = None) -> AsyncIterator[ChangePage]:
        if since is not None:
            mark = utc_to_zoho_time(since)
            return self._incremental({"m": {"t": mark, "ties": []}, "d": {"t": mark, "ties": []}})
        state = self._load_cursor(cursor) if cursor is not None else None
        if state is None:
            if cursor is not None:
                log.warning("cursor_unreadable", connector=self.name, op="changes")
            return self._reconcile()
        return self._incremental(state)

    async def _incremental(self, state: dict[str, Any]) -> AsyncIterator[ChangePage]:
        async def fetch_modified(mark: str | None, page: int | None, token: str | None) -> Response:
            return await self.client.list_modified(mark, page=page, page_token=token)

        async def fetch_deleted(mark: str | None, page: int | None, token: str | None) -> Response:
            return await self.client.list_deleted(mark, page=page, page_token=token)

        async for raws, part in self._keyset(state["m"], fetch_modified, self.mapping.fields["version"]):
            state["m"] = part
            yield ChangePage([self._record(r) for r in raws], self._dump_cursor(state))
        async for raws, part in self._keyset(state["d"], fetch_deleted, "deleted_time"):
            state["d"] = part
            ids = [str(r.get("id")) for r in raws if r.get("id")]
            yield ChangePage([], self._dump_cursor(state), deleted_ids=ids)

    async def _keyset(
        self,
        part: Mapping[str, Any],
        fetch: Callable[[str | None, int | None, str | None], Awaitable[Response]],
        time_key: str,
    ) -> AsyncIterator[tuple[list[dict[str, Any]], dict[str, Any]]]:
        """The keyset pass of part 2 (b): ``If-Modified-Since: T``, drop ties, advance, page on."""
        mark: str | None = part.get("t")
        ties: set[str] = set(part.get("ties", []))
        page = 1
        token: str | None = None
        limit = int(self.options["discrete_page_limit"])
        while True:
            asked = mark
            response = await fetch(asked, None if token else page, token)
            if response.status in (204, 304):
                return
            data = self.client.data_of(response)
            info = self.client.info_of(response)
            fresh: list[dict[str, Any]] = []
            stamps: set[str | None] = set()
            for raw in data:
                rid = str(raw.get("id") or "")
                try:
                    when = zoho_time_to_utc(raw.get(time_key), time_key)
                except MappingError:
                    when = None
                stamp = utc_to_zoho_time(when) if when is not None else None
                stamps.add(stamp)
                if stamp is not None and stamp == asked and rid in ties:
                    continue
                fresh.append(raw)
                if stamp is None:
                    continue
                if mark is None or stamp > mark:
                    mark, ties = stamp, {rid}
                elif stamp == mark:
                    ties.add(rid)
            yield fresh, {"t": mark, "ties": sorted(ties)}
            if not info.get("more_records"):
                return
            if mark != asked:
                # keyset: ask again from the new T. When the whole page sat at the new T, page 1 of
                # that ask is this very page (all ties, dropped): go straight to page 2, one GET fewer.
                page, token = (2 if stamps == {mark} and token is None else 1), None
                continue
            # the whole page sat at T: page on, switching to page_token past the discrete limit
            if token is not None or (page + 1) * self.page_size > limit:
                token = info.get("next_page_token") or None
                if token is None:
                    return
            else:
                page += 1

    def _window(self) -> tuple[datetime, datetime]:
        zone = ZoneInfo(self.config.timezone)
        today = datetime.now(zone).date()
        midnight = datetime(today.year, today.month, today.day, tzinfo=zone)
        low = (midnight - timedelta(days=self.config.window_past_days)).astimezone(UTC)
        high = (midnight + timedelta(days=self.config.window_future_days + 1)).astimezone(UTC)
        return low, high

    async def _reconcile(self) -> AsyncIterator[ChangePage]:
        """Part 2 (c): search the window in ≤31-day chunks; the last page carries the new cursor."""
        started = datetime.now(UTC)
        low, high = self._window()
        step = timedelta(days=int(self.options["window_chunk_days"]))
        seen: set[str] = set()
        pending: list[VendorRecord] | None = None
        at = low
        while at < high:
            end = min(high, at + step)
            async for raws in self._search_range(at, end, depth=0):
                records = []
                for raw in raws:
                    rid = self.mapper.external_id(raw)
                    if rid in seen:
                        continue
                    seen.add(rid)
                    records.append(self._record(raw))
                if pending is not None:
                    yield ChangePage(pending, None)  # not resumable mid-window: the engine keeps its cursor
                pending = records
            at = end
        mark = utc_to_zoho_time(started - timedelta(seconds=float(self.options["reconcile_cursor_lag_s"])))
        cursor = self._dump_cursor({"m": {"t": mark, "ties": []}, "d": {"t": mark, "ties": []}})
        log.info("window_reconciled", connector=self.name, op="reconcile", count=len(seen))
        yield ChangePage(pending or [], cursor)

    async def _search_range(self, low: datetime, high: datetime, *, depth: int) -> AsyncIterator[list[dict[str, Any]]]:
        criteria = f"(Appointment_Start_Time:between:{utc_to_zoho_time(low)},{utc_to_zoho_time(high)})"
        max_page = int(self.options["search_max_page"])
        page = 1
        while True:
            response = await self.client.search(criteria, page=page, op="reconcile")
            data = self.client.data_of(response)
            if data:
                yield data
            if not self.client.info_of(response).get("more_records"):
                return
            if page >= max_page:
                if depth >= 20 or high - low <= timedelta(seconds=2):
                    log.warning("window_chunk_truncated", connector=self.name, op="reconcile")
                    return
                middle = low + (high - low) / 2
                async for part in self._search_range(low, middle, depth=depth + 1):
                    yield part
                async for part in self._search_range(middle, high, depth=depth + 1):
                    yield part
                return
            page += 1

    # -- reads (part 3) --------------------------------------------------------------------------
    async def _read_raw(self, external_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        unique = list(dict.fromkeys(str(i) for i in external_ids))
        batches = await asyncio.gather(*(self.client.get_by_ids(chunk) for chunk in _chunks(unique, self.read_batch)))
        wanted = set(unique)
        found: dict[str, dict[str, Any]] = {}
        for batch in batches:
            for raw in batch:
                rid = self.mapper.external_id(raw)
                if rid in wanted:
                    found[rid] = raw
        return found

    async def read(self, external_ids: Sequence[str]) -> Mapping[str, VendorRecord]:
        if not external_ids:
            return {}
        found = await self._read_raw(external_ids)
        out: dict[str, VendorRecord] = {}
        for rid in dict.fromkeys(str(i) for i in external_ids):
            out[rid] = self._record(found[rid]) if rid in found else self._deleted(rid)
        return out

    async def find_by_reference(
        self, canonical_id: str, *, exclude: Sequence[str] = (), desired: Appointment | None = None
    ) -> list[VendorRecord]:
        """``docs/vendors/zoho_crm.md §9``: ``criteria=(Syncd_Id:equals:<id>)``, matched here as well; every
        record holding the reference, oldest first (the engine decides between several, head rule 10).
        ``desired`` is not needed: Zoho takes the reference in the create itself."""
        response = await self.client.search(f"(Syncd_Id:equals:{canonical_id})")
        skip = set(exclude)
        ref = self.mapping.fields["reference"]
        matches = [r for r in self.client.data_of(response)
                   if str(r.get(ref) or "") == canonical_id and self.mapper.external_id(r) not in skip]
        matches.sort(key=lambda r: (str(r.get(self.mapping.fields["created"]) or ""), self.mapper.external_id(r)))
        if len(matches) > 1:
            log.warning("reference_held_twice", connector=self.name, op="search", count=len(matches))
        return [self._record(r) for r in matches]

    # -- writes (part 4) -------------------------------------------------------------------------
    async def write(self, requests: Sequence[WriteRequest]) -> list[WriteOutcome]:
        started = time.perf_counter()
        outcomes: list[WriteOutcome | None] = [None] * len(requests)
        updates: list[tuple[int, WriteRequest]] = []
        for index, request in enumerate(requests):
            if request.kind is WriteKind.CREATE:
                outcomes[index] = await self._create(request)
            elif not request.external_id:
                outcomes[index] = WriteOutcome(request, error=MappingError("zoho_crm: no target external id",
                                                                           field="external_id"))
            else:
                updates.append((index, request))
        for chunk in _chunks(updates, self.write_batch):
            for index, outcome in zip((i for i, _ in chunk), await self._update_batch([r for _, r in chunk]),
                                      strict=True):
                outcomes[index] = outcome
        done = [o for o in outcomes if o is not None]
        log.info("zoho_write", connector=self.name, op="write", count=len(done),
                 duration_s=round(time.perf_counter() - started, 3))
        return done

    async def _auto_complete(self, refresh: bool = False) -> bool:
        ttl = float(self.options["preferences_ttl_s"])
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
                raise AmbiguousReference("several Zoho records hold this appointment's reference",
                                         external_ids=tuple(r.external_id for r in found))
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
                raw[self.mapping.fields["service_type"]] = {"id": request.desired.service_type,
                                                            "name": request.desired.extra["service_name"]}
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
            if new_id is None and reason.startswith(self.mapper.replace_prefix) and \
                    desired.status is Status.CANCELLED:
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
            if raw is None:
                outcomes[index] = WriteOutcome(request, error=Conflict("the record was deleted in Zoho",
                                                                       code="DELETED"), record=self._deleted(rid))
                continue
            fresh = self._record(raw)
            if fresh.error is not None:
                outcomes[index] = WriteOutcome(request, error=fresh.error)
                continue
            if request.current is not None and request.current.version is not None and \
                    request.current.version != fresh.version:
                log.info("stale_write_refused", connector=self.name, external_id=rid, op="update")
                outcomes[index] = WriteOutcome(
                    request, error=Conflict("the record changed in Zoho since it was read", code="STALE"),
                    record=fresh)
                continue
            end = fresh.appointment.end if fresh.appointment is not None else None
            if (request.desired.status is Status.FULFILLED and end is not None
                    and datetime.now(UTC) < end + timedelta(seconds=1)
                    and self.mapper.native_status(raw) not in self.mapper.terminal
                    and not await self._auto_complete()):  # with auto-completion Zoho completes it itself
                # part 6: Completed before Appointment_End_Time is refused (DEPENDENT_MISMATCH): defer it
                outcomes[index] = WriteOutcome(request, error=Deferred(
                    "Zoho takes Completed only after the appointment's end", code="DEFER_COMPLETED",
                    not_before=end + timedelta(seconds=1)), record=fresh)
                continue
            try:
                values, conflict = await self._update_values(request, fresh, raw)
            except MappingError as exc:
                outcomes[index] = WriteOutcome(request, error=exc)
                continue
            if conflict is not None:
                # a terminal record is not written: an open conflict (docs/vendors/README.md rule 10), not a re-read
                # loop
                outcomes[index] = WriteOutcome(request, error=NotWritable(conflict, code="TERMINAL"), record=fresh)
            elif not values:
                outcomes[index] = WriteOutcome(request, record=fresh, sent=False)  # nothing still differs
            else:
                pending.append((index, request, raw, {"id": rid, **values}))
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

    @staticmethod
    def _service_kept(outcome: WriteOutcome) -> WriteOutcome:
        """For an appointment that is over, the service is this record's own (read-only: see
        ``_update_values``), so the engine remembers Zoho's value rather than the one it could not send."""
        if outcome.record is not None and outcome.request.desired.status.terminal:
            outcome.record = dataclasses.replace(outcome.record,
                                                 read_only=outcome.record.read_only | {"service_type"})
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
                return WriteOutcome(request, error=Conflict("the record was deleted in Zoho", code=code),
                                    record=self._deleted(rid))
            return WriteOutcome(request, error=error)
        if code in ("DEPENDENT_FIELD_UNCHANGED", "NOT_ALLOWED"):
            fresh_raw = await self.client.get_one(rid)
            fresh = self._record(fresh_raw) if fresh_raw is not None else self._deleted(rid)
            if code == "NOT_ALLOWED" and fresh_raw is not None and \
                    self.mapper.native_status(fresh_raw) not in self.mapper.terminal:
                await self._auto_complete(refresh=True)  # E5: the preference changed
                return WriteOutcome(request, error=Rejected(error.message, code=code, status=403))
            return WriteOutcome(request, error=error, record=fresh)
        return WriteOutcome(request, error=error)

    # -- replace flow (part 4) -------------------------------------------------------------------
    def needs_replace(self, current: Appointment, desired: Appointment) -> str | None:
        if desired.status.terminal:
            return None
        if current.start is not None and desired.start is not None and desired.start < current.start:
            return "start moved earlier: Zoho reschedules only to a later start"
        if current.service_type and desired.service_type and current.service_type != desired.service_type:
            return "service changed: Zoho cannot update Service_Name"
        return None

    def write_refusal(self, current: Appointment, desired: Appointment, *, now: datetime) -> str | None:
        return write_refusal(self.mapper, current, desired)

    # -- webhooks and watch channels (part 2 (a)) -----------------------------------------------
    async def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
        secret = self.config.webhook_secret.reveal() if self.config.webhook_secret is not None else None
        channel = await self.state.get(STATE_CHANNEL) if secret else None
        delivery = parse_callback(body, secret=secret, channel_id=channel, module=str(self.options["module"]))
        log.info("webhook_parsed", connector=self.name, op="webhook", count=len(delivery.events))
        return delivery

    async def _channel_id(self) -> str:
        channel = await self.state.get(STATE_CHANNEL)
        if not channel:
            channel = str(random.SystemRandom().randint(1, 2**53 - 1))
            await self.state.set(STATE_CHANNEL, channel)
        return channel

    async def maintain(self, public_url: str | None) -> Mapping[str, Any]:
        if self.config.webhook_secret is None:
            return {"subscription": "not needed", "reason": "webhooks disabled (no webhook_secret)"}
        if not public_url:
            return {"subscription": "not needed", "reason": "no public_url: incremental polling only"}
        channel = await self._channel_id()
        now = datetime.now(UTC)
        stored = await self.state.get(STATE_EXPIRY)
        expiry: datetime | None = None
        if stored:
            try:
                expiry = zoho_time_to_utc(stored, "channel_expiry")
            except MappingError:
                expiry = None
        renew_below = timedelta(seconds=float(self.options["watch_renew_below_s"]))
        if self._subscribed and expiry is not None and expiry - now > renew_below:
            return {"subscription": "active", "channel_id": channel, "expires": stored, "renewed": False}
        body = {"watch": [{
            "channel_id": int(channel),
            "events": list(self.options["watch_events"]),
            "channel_expiry": utc_to_zoho_time(now + timedelta(days=int(self.options["watch_days"]))),
            "token": self.config.webhook_secret.reveal(),
            "notify_url": public_url.rstrip("/") + f"/webhooks/{self.name}",
            "notify_on_related_action": False,
        }]}
        response = await self.client.watch(body)
        answer = response.json_or_none()
        results = answer.get("watch") if isinstance(answer, dict) else None
        result = results[0] if isinstance(results, list) and results and isinstance(results[0], dict) else {}
        if result.get("code") != "SUCCESS":
            details = result.get("details") if isinstance(result.get("details"), dict) else {}
            api_name = details.get("api_name") if isinstance(details, dict) else None
            raise Rejected(f"watch subscription refused (api_name {api_name})", code=str(result.get("code")),
                           status=response.status, connector=self.name, operation="watch")
        events = result.get("details", {}).get("events") or [{}]
        new_expiry = str(events[0].get("channel_expiry") or body["watch"][0]["channel_expiry"])
        await self.state.set(STATE_EXPIRY, new_expiry)
        self._subscribed = True
        log.info("watch_renewed", connector=self.name, op="watch")
        return {"subscription": "active", "channel_id": channel, "expires": new_expiry, "renewed": True}

    # -- operator help: remedies and ``syncd doctor`` (docs/vendors/zoho_crm.md §1, §2, §6) ---------------
    def remedy(self, error: VendorError) -> Remedy | None:
        key = f"connectors.{self.name}"
        accounts = self.config.auth_value("accounts_url").rstrip("/")
        if error.url is not None and error.url.startswith(accounts) and error.status is None:
            return Remedy(f"{key}.accounts_url")
        scopes = ", ".join(_NEEDED_SCOPES)
        if error.code == "INVALID_DATA" and "Syncd_Id" in error.message:
            return Remedy(None, f"create the custom field {self.mapping.fields['reference']} (single line) in the "
                          "Appointments module")
        if not isinstance(error, AuthFailure):
            return None
        by_code = {
            "invalid_code": Remedy(f"{key}.refresh_token", "Zoho refused the refresh token (revoked, or from "
                                   "another data centre than accounts_url): generate a new one from the Self Client "
                                   f"with the scopes {scopes}"),
            "invalid_client": Remedy(f"{key}.client_id", f"Zoho does not know this client id and secret pair: "
                                     f"check {key}.client_id and {key}.client_secret (Zoho API console)"),
            "INVALID_TOKEN": Remedy(f"{key}.refresh_token", "a fresh access token was refused too"),
            "OAUTH_SCOPE_MISMATCH": Remedy(f"{key}.refresh_token", f"the refresh token lacks a scope: generate "
                                           f"a new one with {scopes}"),
            "NO_PERMISSION": Remedy(None, "the Zoho user behind the token lacks permission on Appointments: "
                                    "give its profile create and edit rights on the module"),
        }
        return by_code.get(error.code or "", Remedy(f"{key}.refresh_token"))

    async def diagnose(self, public_url: str | None) -> list[Check]:
        """Token refresh and one page of the module, the ``Syncd_Id`` field (a search that names it), the
        settings scope (appointment preferences), the watch channel for notifications. No write: the
        user's edit permission and the notifications scope show only on a write or a subscription."""
        d = Diagnosis(self)
        key = f"connectors.{self.name}"
        page = await d.attempt("authenticate", self.client.list_modified(None, page=1, page_token=None))
        if page is None:
            d.skip_blocked("read", f"field {self.mapping.fields['reference']}", "settings scope", "write permission")
        else:
            d.ok("authenticate", f"{self.config.auth_value('accounts_url')} issued an access token and "
                 f"{self.client.http.base_url} accepted it")
            info = self.client.info_of(page)
            d.ok("read", f"read one page of {self.options['module']}: {len(self.client.data_of(page))} records"
                 + (" (more follow)" if info.get("more_records") else ""))
            field = self.mapping.fields["reference"]
            if await d.attempt(f"field {field}", self.client.search(f"({field}:equals:syncd_doctor_probe)",
                                                                    op="doctor"), missing=True) is not None:
                d.ok(f"field {field}", f"the {self.options['module']} module has the field {field}")
            prefs = await d.attempt("settings scope", self.client.preferences(), missing=True)
            if prefs is not None:
                d.ok("settings scope", f"appointment preferences readable (mark_as_complete = "
                     f"{prefs.get('mark_as_complete', '?')})")
            d.skip("write permission", "shows only on a write: a user without edit rights on Appointments gets "
                   "403 NO_PERMISSION on the first write, named in `syncd status`")
        if self.config.webhook_secret is None:
            d.warn("webhooks", f"notifications are off (no webhook_secret): changes arrive by polling every "
                   f"{self.config.poll_interval:g}s", f"set {key}.webhook_secret (1-50 characters) and "
                   "[server] public_url", f"{key}.webhook_secret")
        elif len(self.config.webhook_secret.reveal()) > 50:
            d.fail("webhooks", "webhook_secret is longer than Zoho's 50-character watch token",
                   f"use 1-50 characters in {key}.webhook_secret", f"{key}.webhook_secret")
        elif not public_url:
            d.warn("webhooks", "no [server] public_url: syncd cannot subscribe a watch channel, so changes "
                   "arrive by polling only", "set [server] public_url to the HTTPS address Zoho reaches "
                   "/webhooks/... at", "server.public_url")
        else:
            expiry = await self.state.get(STATE_EXPIRY)
            if expiry:
                d.ok("webhooks", f"watch channel {await self.state.get(STATE_CHANNEL)} to "
                     f"{public_url.rstrip('/')}/webhooks/{self.name}, expires {expiry} (renewed by syncd run)")
            else:
                d.warn("webhooks", "no watch channel yet: `syncd run` subscribes one at start (needs the "
                       "ZohoCRM.notifications.ALL scope)", None)
        return d.checks

