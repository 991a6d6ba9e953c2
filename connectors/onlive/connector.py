"""The Onlive connector (docs/vendors/onlive.md): polling, reads, partial writes, cancels, replace flow.

Onlive has no webhooks, no batch calls and no concurrency token: syncd polls ``updatedSince`` (with a
window reconciliation as fallback and at start), reads one record per call, and re-reads every record
right before a PUT or a cancel (part 8).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import structlog

from connectors.onlive.client import OnliveClient, UpdatedSinceRefused
from connectors.onlive.mapfuncs import OnliveMapper, onlive_time_to_utc, utc_to_onlive_time
from connectors.onlive.rules import write_refusal
from connectors.onlive.webhook import parse_webhook
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
    MappingError,
    RateLimited,
    Rejected,
    VendorError,
)
from syncd.http import Response
from syncd.mapping import VendorMapping
from syncd.model import SYNC_FIELDS, Appointment, Status

__all__ = ["OnliveConnector"]

log = structlog.get_logger(__name__)

_VENDOR_ONLY_STATUSES = frozenset({Status.FULFILLED, Status.NOSHOW})
#: a create needs startAt, endAt, calendarIds and guests (docs/vendors/onlive.md §4; the title is syncd's)
_REQUIRED_ON_CREATE = frozenset({"start", "end", "patient", "practitioner"})


class OnliveConnector:
    """One Onlive organisation's appointments, as the core sees them."""

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
        self.mapper = OnliveMapper(mapping)
        self.options = mapping.options
        self.defaults = mapping.defaults
        self.state: StateStore = state if state is not None else MemoryStateStore()
        self.client = OnliveClient(config, mapping.options, max_rate_limit_wait=max_rate_limit_wait, session=session)
        self.page_size = int(self.options["page_size"])
        self.capabilities = Capabilities(
            webhooks=False,
            batch_read_size=1,
            batch_write_size=1,
            optimistic_concurrency=False,
            patient_change=True,
            notification_switch=False,
            subscription=False,
            replace_reason=str(self.defaults["replace_reason"]),
            # every canonical field has an Onlive field syncd may write (docs/vendors/onlive.md §9); only
            # the completed and no-show statuses are Onlive's own, per record (see _mark)
            required_on_create=_REQUIRED_ON_CREATE,
        )
        self._replaced_by: dict[str, str] = {}
        if config.webhook_secret is not None:
            log.warning("webhook_secret_ignored", connector=self.name, op="start")

    @property
    def http(self) -> Any:
        return self.client.http

    async def close(self) -> None:
        await self.client.close()

    def _now(self) -> datetime:
        """The vendor's clock as far as syncd knows it (local clock plus the corrected offset)."""
        return self.client.auth.now()

    # -- records -------------------------------------------------------------------------------
    def _record(self, raw: Mapping[str, Any]) -> VendorRecord:
        m = self.mapper
        rid = m.external_id(raw)
        version = m.version(raw)
        modified = m.modified_at(raw)
        syncd_id = m.syncd_id(raw)
        replaces = m.replaces(raw)
        if m.is_deleted(raw):
            return VendorRecord(rid, version, None, deleted=True, modified_at=modified, syncd_id=syncd_id,
                                replaces=replaces)
        try:
            appointment = m.to_appointment(raw)
        except MappingError as exc:
            log.warning("record_unmappable", connector=self.name, external_id=rid, code=exc.field)
            return VendorRecord(rid, version, None, error=exc, modified_at=modified, syncd_id=syncd_id,
                                replaces=replaces)
        return VendorRecord(rid, version, appointment, modified_at=modified, syncd_id=syncd_id, replaces=replaces)

    @staticmethod
    def _deleted(external_id: str) -> VendorRecord:
        return VendorRecord(external_id, None, None, deleted=True)

    # -- change detection (part 2) ---------------------------------------------------------------
    @staticmethod
    def _dump(mode: str, mark: datetime, *, next_at: datetime | None = None) -> str:
        data: dict[str, Any] = {"mode": mode, "t": utc_to_onlive_time(mark)}
        if next_at is not None:
            data["next"] = utc_to_onlive_time(next_at)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @staticmethod
    def _load(cursor: str) -> dict[str, Any] | None:
        try:
            data = json.loads(cursor)
            if not isinstance(data, dict) or data.get("mode") not in ("inc", "window"):
                return None
            mark = onlive_time_to_utc(data.get("t"), "cursor")
            if mark is None:
                return None
            next_at = onlive_time_to_utc(data.get("next"), "cursor") if data.get("next") else None
        except (ValueError, MappingError):
            return None
        return {"mode": data["mode"], "t": mark, "next": next_at}

    def changes(self, cursor: str | None, *, since: datetime | None = None) -> AsyncIterator[ChangePage]:
        if since is not None:
            return self._incremental(since.astimezone(UTC), overlap=0.0)
        state = self._load(cursor) if cursor is not None else None
        if state is None:
            if cursor is not None:
                log.warning("cursor_unreadable", connector=self.name, op="changes")
            return self._reconcile(fallback=False)
        if state["mode"] == "window":
            return self._window_mode(state)
        return self._incremental(state["t"], overlap=float(self.options["poll_overlap_s"]))

    async def _incremental(self, mark: datetime, *, overlap: float) -> AsyncIterator[ChangePage]:
        """Part 2 (a): ``updatedSince = cursor − 1 s``, newest first, pages until a short one."""
        asked = mark - timedelta(seconds=overlap)
        asked_text = utc_to_onlive_time(asked)
        asked = onlive_time_to_utc(asked_text, "updatedSince") or asked  # the millisecond value sent
        resume = self._dump("inc", mark)
        newest = mark
        page = 1
        count = 0
        while True:
            params = {"updatedSince": asked_text, "includeDeleted": "true", "sort": "updatedAt",
                      "order": "desc", "page": str(page), "limit": str(self.page_size)}
            try:
                data, _ = await self.client.list(params, op="poll")
            except UpdatedSinceRefused:
                log.warning("updated_since_refused", connector=self.name, op="poll")
                async for part in self._reconcile(fallback=True):
                    yield part
                return
            stamps = [self.mapper.modified_at(raw) for raw in data]
            if any(s is not None and s < asked for s in stamps):
                log.warning("updated_since_ignored", connector=self.name, op="poll")
                async for part in self._reconcile(fallback=True):
                    yield part
                return
            for stamp in stamps:
                if stamp is not None and stamp > newest:
                    newest = stamp
            count += len(data)
            last = len(data) < self.page_size
            # the cursor moves only after the last page: the newest records come first (desc)
            yield ChangePage([self._record(raw) for raw in data], self._dump("inc", newest) if last else resume)
            if last:
                log.info("poll_done", connector=self.name, op="poll", count=count)
                return
            page += 1

    async def _window_mode(self, state: Mapping[str, Any]) -> AsyncIterator[ChangePage]:
        """Mode (b) after the filter was refused or ignored: a window pass every max(poll, 300 s)."""
        next_at: datetime | None = state.get("next")
        if next_at is not None and datetime.now(UTC) < next_at:
            yield ChangePage([], self._dump("window", state["t"], next_at=next_at))
            return
        async for part in self._reconcile(fallback=True):
            yield part

    def _window(self) -> tuple[datetime, datetime]:
        zone = ZoneInfo(self.config.timezone)
        today = self._now().astimezone(zone).date()
        midnight = datetime(today.year, today.month, today.day, tzinfo=zone)
        low = (midnight - timedelta(days=self.config.window_past_days)).astimezone(UTC)
        high = (midnight + timedelta(days=self.config.window_future_days + 1)).astimezone(UTC)
        return low, high

    @staticmethod
    def _server_time(response: Response) -> datetime | None:
        from email.utils import parsedate_to_datetime

        raw = response.headers.get("Date")
        if not raw:
            return None
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)

    async def _reconcile(self, *, fallback: bool) -> AsyncIterator[ChangePage]:
        """Part 2 (b): the window in chunks of ≤ 31 days; the last page carries the new cursor."""
        low, high = self._window()
        step = timedelta(days=int(self.options["window_chunk_days"]))
        seen: set[str] = set()
        pending: list[VendorRecord] | None = None
        started: datetime | None = None
        at = low
        while at < high:
            end = min(high, at + step)
            page = 1
            while True:
                params = {"from": utc_to_onlive_time(at), "to": utc_to_onlive_time(end), "includeDeleted": "true",
                          "sort": "createdAt", "order": "asc", "page": str(page), "limit": str(self.page_size)}
                data, response = await self.client.list(params, op="reconcile")
                if started is None:
                    started = self._server_time(response) or self._now()
                records = []
                for raw in data:
                    rid = self.mapper.external_id(raw)
                    if rid and rid not in seen:
                        seen.add(rid)
                        records.append(self._record(raw))
                if pending is not None:
                    yield ChangePage(pending, None)  # not resumable mid-window: the engine keeps its cursor
                pending = records
                if len(data) < self.page_size:
                    break
                page += 1
            at = end
        mark = (started or self._now()) - timedelta(seconds=float(self.options["window_cursor_lag_s"]))
        if fallback:
            every = max(self.config.poll_interval, float(self.options["window_fallback_min_s"]))
            cursor = self._dump("window", mark, next_at=datetime.now(UTC) + timedelta(seconds=every))
        else:
            cursor = self._dump("inc", mark)
        log.info("window_reconciled", connector=self.name, op="reconcile", count=len(seen))
        yield ChangePage(pending or [], cursor)

    # -- reads (part 3) --------------------------------------------------------------------------
    async def _get(self, external_id: str) -> dict[str, Any] | None:
        try:
            return await self.client.get(external_id)
        except Rejected as exc:
            if exc.code == "INVALID_ID":
                return None  # not an Onlive id: no such record
            raise

    async def read(self, external_ids: Sequence[str]) -> Mapping[str, VendorRecord]:
        unique = list(dict.fromkeys(str(i) for i in external_ids))
        if not unique:
            return {}
        gate = asyncio.Semaphore(max(1, int(self.options["read_concurrency"])))

        async def one(rid: str) -> dict[str, Any] | None:
            async with gate:
                return await self._get(rid)

        results = await asyncio.gather(*(one(rid) for rid in unique), return_exceptions=True)
        out: dict[str, VendorRecord] = {}
        for rid, result in zip(unique, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            out[rid] = self._record(result) if result is not None else self._deleted(rid)
        return out

    # -- idempotency reference (part 9) ----------------------------------------------------------
    async def _search(self, canonical_id: str, *, exclude: Sequence[str] = (),
                      updated_since: datetime | None = None) -> list[dict[str, Any]]:
        skip = {str(e).lower() for e in exclude}
        ref = self.mapping.fields["reference"]
        matches: list[dict[str, Any]] = []
        page = 1
        while True:
            params = {"externalId": canonical_id, "includeDeleted": "true", "page": str(page),
                      "limit": str(self.page_size)}
            if updated_since is not None:
                params["updatedSince"] = utc_to_onlive_time(updated_since)
            try:
                data, _ = await self.client.list(params, op="search")
            except UpdatedSinceRefused:
                if updated_since is None:
                    raise
                updated_since, page, matches = None, 1, []
                continue
            for raw in data:
                # the filter is matched on the client side as well (part 9)
                if raw.get(ref) == canonical_id and self.mapper.external_id(raw).lower() not in skip:
                    matches.append(raw)
            if len(data) < self.page_size:
                break
            page += 1
        return matches

    def _live(self, matches: list[dict[str, Any]]) -> list[VendorRecord]:
        """The matches not soft-deleted, oldest first."""
        live = [raw for raw in matches if not self.mapper.is_deleted(raw)]
        live.sort(key=lambda r: (str(r.get(self.mapping.fields["created"]) or ""), self.mapper.external_id(r)))
        if len(live) > 1:
            log.warning("reference_held_twice", connector=self.name, op="search", count=len(live))
        return [self._record(raw) for raw in live]

    async def find_by_reference(
        self, canonical_id: str, *, exclude: Sequence[str] = (), desired: Appointment | None = None
    ) -> list[VendorRecord]:
        """``docs/vendors/onlive.md §9``: ``externalId=<id>`` (matched here as well): every live record holding
        the reference, oldest first (the engine decides between several, head rule 10). ``desired`` is not
        needed: the reference travels in the create itself."""
        return self._live(await self._search(canonical_id, exclude=exclude))

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
                log.info("write_failed", connector=self.name, external_id=request.external_id, op=request.kind.value,
                         code=getattr(outcome.error, "code", None) or type(outcome.error).__name__)
            outcomes.append(outcome)
        log.info("write_done", connector=self.name, op="write", count=len(requests),
                 duration_s=round(time.perf_counter() - started, 3))
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
                return WriteOutcome(request, error=Rejected(
                    "the appointment to replace is past or closed: nothing is recreated",
                    code="REPLACE_TARGET_CLOSED", connector=self.name, operation="create"))
        since = self._now() - timedelta(seconds=float(self.options["reference_search_lag_s"]))

        async def create() -> VendorRecord:
            return self._record(await self.client.create(body))

        async def search() -> VendorRecord | None:
            found = self._live(await self._search(request.canonical_id, exclude=exclude, updated_since=since))
            if len(found) > 1:
                raise AmbiguousReference("several Onlive records hold this appointment's reference",
                                         external_ids=tuple(r.external_id for r in found))
            if found:
                log.info("create_found_by_reference", connector=self.name, external_id=found[0].external_id,
                         op="create")
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
            return WriteOutcome(request, error=Conflict("the appointment was deleted in Onlive", code="NOT_FOUND",
                                                        connector=self.name), record=gone)
        fresh = self._record(raw)
        if fresh.error is not None:
            return WriteOutcome(request, error=fresh.error)
        if request.current is not None and request.current.version is not None \
                and fresh.version != request.current.version:
            log.info("stale_write_refused", connector=self.name, external_id=rid, op=request.kind.value)
            return WriteOutcome(request, error=Conflict("the appointment changed in Onlive since it was read",
                                                        code="STALE", connector=self.name), record=fresh)
        return raw, fresh

    async def _after_refusal(self, request: WriteRequest, rid: str, exc: VendorError) -> WriteOutcome:
        """A write Onlive refused: 404 → deleted; APPOINTMENT_CLOSED → conflict with the fresh record."""
        if isinstance(exc, Rejected) and exc.status == 404:
            return WriteOutcome(request, error=Conflict("the appointment was deleted in Onlive", code="NOT_FOUND",
                                                        status=404, connector=self.name),
                                record=self._deleted(rid))
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
            if "practitioner" in names and desired.practitioner != base.practitioner:
                return WriteOutcome(request, error=Rejected(
                    "calendarIds cannot be updated: a practitioner change needs the replace flow",
                    code="PRACTITIONER_IMMUTABLE", connector=self.name, operation="update"))
            if "service_type" in names and desired.service_type != base.service_type:
                return WriteOutcome(request, error=Rejected("serviceId immutable", code="SERVICE_IMMUTABLE",
                                                            connector=self.name, operation="update"))
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
                return WriteOutcome(request, error=Conflict(
                    f"the Onlive appointment is {native} and cannot be modified", code="APPOINTMENT_CLOSED",
                    connector=self.name), record=fresh)
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

    async def _cancel(self, request: WriteRequest, rid: str, fresh: VendorRecord) -> WriteOutcome:
        desired = request.desired
        new_id = self._replaced_by.get(rid)
        replace = new_id is not None or desired.cancellation_reason == self.capabilities.replace_reason
        sub_status: str | None = None
        if replace:
            if new_id is None:
                found = await self.find_by_reference(request.canonical_id, exclude=[rid])
                new_id = found[-1].external_id if found else None
            reason = (str(self.defaults["replace_reason_template"]).format(new_id=new_id) if new_id
                      else str(self.defaults["replace_reason"]))
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

    # -- replace flow (part 4) -------------------------------------------------------------------
    def needs_replace(self, current: Appointment, desired: Appointment) -> str | None:
        if desired.status.terminal:
            return None
        if current.practitioner and desired.practitioner and current.practitioner != desired.practitioner:
            return "practitioner changed: Onlive cannot update calendarIds"
        return None

    def write_refusal(self, current: Appointment, desired: Appointment, *, now: datetime) -> str | None:
        return write_refusal(self.mapper, current, desired, replace=self.needs_replace(current, desired), now=now)

    # -- webhooks and upkeep ---------------------------------------------------------------------
    async def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
        return parse_webhook(headers, body)

    async def maintain(self, public_url: str | None) -> Mapping[str, Any]:
        return {"subscription": "not needed", "reason": "onlive sends no webhooks: changes are polled"}

    # -- operator help: remedies and ``syncd doctor`` (docs/vendors/onlive.md §1, §7) ---------------------
    def remedy(self, error: VendorError) -> Remedy | None:
        key = f"connectors.{self.name}"
        if not isinstance(error, AuthFailure):
            return None
        if error.code == "UNKNOWN_ACCESS_KEY":
            return Remedy(f"{key}.access_key_id", "Onlive does not know this access key id (revoked?): create "
                          "a key pair in Onlive and put both halves in the config")
        if error.code == "SIGNATURE_MISMATCH":
            return Remedy(f"{key}.secret_access_key", "the signature does not match: the secret access key is not "
                          "the one paired with the access key id")
        if error.code == "REQUEST_EXPIRED":
            return Remedy(None, "this host's clock is more than 15 minutes off Onlive's, even after one "
                          "correction: synchronise the clock (NTP)")
        if error.status == 403:
            return Remedy(f"{key}.access_key_id", "the key pair lacks access to these appointments in Onlive")
        return Remedy(f"{key}.access_key_id", "Onlive refused the signed request")

    async def diagnose(self, public_url: str | None) -> list[Check]:
        """The access key pair and signature with one list request, this host's clock against Onlive's
        (requests more than 15 minutes off are refused), the rate-limit window, and the lack of
        webhooks. No write."""
        d = Diagnosis(self)
        answer = await d.attempt("authenticate", self.client.http.request(
            "doctor", "GET", self.client._path("", {"limit": "1", "page": "1"})))
        if answer is None:
            d.skip_blocked("read", "clock", "rate limit")
        else:
            d.ok("authenticate", f"{self.client.http.base_url} accepted the signed request")
            body = answer.json_or_none()
            meta = body.get("meta") if isinstance(body, dict) else None
            total = meta.get("total", "?") if isinstance(meta, dict) else "?"
            d.ok("read", f"read one page: {total} appointments")
            try:
                server = parsedate_to_datetime(answer.headers.get("Date", ""))
            except (TypeError, ValueError):
                server = None
            if server is None:
                d.skip("clock", "the answer carried no Date header")
            else:
                offset = (server.astimezone(UTC) - datetime.now(UTC)).total_seconds()
                if abs(offset) > 60:
                    d.warn("clock", f"this host's clock is {abs(offset):.0f}s {'behind' if offset > 0 else 'ahead of'} "
                           "Onlive's; syncd corrects it once, but Onlive refuses requests 15 minutes off",
                           "synchronise this host's clock (NTP)")
                else:
                    d.ok("clock", f"this host's clock is within {max(1.0, abs(offset)):.0f}s of Onlive's")
            remaining, limit = answer.headers.get("X-RateLimit-Remaining"), answer.headers.get("X-RateLimit-Limit")
            if remaining is None or limit is None:
                d.skip("rate limit", "the answer carried no X-RateLimit headers")
            else:
                d.ok("rate limit", f"{remaining} of {limit} requests left in the current minute")
        d.skip("webhooks", f"Onlive sends no webhooks: syncd polls every {self.config.poll_interval:g}s")
        return d.checks

