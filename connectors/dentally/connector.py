"""The Dentally connector (docs/vendors/dentally.md): change detection, reads, writes, webhooks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import structlog

from connectors.dentally.client import STATE_LOCK_PREFIX, UPDATED_AFTER_REFUSED, DentallyClient
from connectors.dentally.mapfuncs import DentallyMapper, dentally_time_to_utc, utc_to_dentally_time
from connectors.dentally.rules import write_refusal
from connectors.dentally.webhook import parse_delivery
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
    NotWritable,
    Rejected,
    VendorError,
)
from syncd.mapping import VendorMapping
from syncd.model import SYNC_FIELDS, Appointment, Status

__all__ = ["DentallyConnector"]

log = structlog.get_logger(__name__)

STATE_KNOWN = "known_window_ids"
#: "description has no Dentally field and is not stored there" (docs/vendors/dentally.md §9); nor is a
#: free-text cancellation reason: Dentally keeps one of the practice's fixed reasons (§4), which the
#: connector picks by name when it cancels, so a read of "Other" says nothing about the text
_NOT_STORED = frozenset({"description", "cancellation_reason"})
#: a create needs start_time, finish_time and practitioner_id (docs/vendors/dentally.md §4)
_REQUIRED_ON_CREATE = frozenset({"start", "end", "practitioner"})
_PLAIN_FIELDS = ("start", "end", "patient", "practitioner", "location", "service_type", "notes")
_MODE_POLL = "poll"
#: the token scope every appointment route needs (docs/vendors/dentally.md §1)
_REQUIRED_SCOPES = ("appointment",)
_MODE_WINDOW = "window"


def _iso(value: datetime) -> str:
    return utc_to_dentally_time(value)


def _parse(value: Any) -> datetime | None:
    try:
        return dentally_time_to_utc(value, "cursor")
    except MappingError:
        return None


class DentallyConnector:
    """One Dentally practice's appointments, as the core sees them."""

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
        self.mapper = DentallyMapper(mapping)
        self.options = mapping.options
        self.state: StateStore = state if state is not None else MemoryStateStore()
        self.client = DentallyClient(config, mapping.options, max_rate_limit_wait=max_rate_limit_wait,
                                     session=session)
        self.page_size = int(self.options["page_size"])
        self.capabilities = Capabilities(
            webhooks=True,
            batch_read_size=1,
            batch_write_size=1,
            optimistic_concurrency=False,
            patient_change=False,
            notification_switch=False,
            subscription=False,
            replace_reason=str(mapping.defaults["replace_reason"]),
            not_stored=_NOT_STORED,
            required_on_create=_REQUIRED_ON_CREATE,
        )
        self._reasons: dict[str, int] | None = None
        self._replaced_by: dict[str, str] = {}  # old external id -> new one (replace flows of this process)
        self._replace_of: dict[str, str] = {}  # canonical id -> old external id of a create in a replace flow
        self._attempts: dict[str, datetime] = {}  # canonical id -> when its last create started
        self._known: dict[str, str] | None = None  # external id -> start (UTC ISO) of records in the window
        self._known_saved: str | None = None
        self._count_checked_at: float | None = None

    @property
    def http(self) -> Any:
        return self.client.http

    async def close(self) -> None:
        await self.client.close()

    # -- records -------------------------------------------------------------------------------
    def _record(self, raw: Mapping[str, Any]) -> VendorRecord:
        external_id = self.mapper.external_id(raw)
        version = self.mapper.version(raw)
        modified = self.mapper.modified(raw)
        syncd_id = self.mapper.syncd_id(raw)
        replaces = self.mapper.replaces(raw)
        try:
            appointment = self.mapper.to_appointment(raw)
        except MappingError as exc:
            log.warning("record_unmappable", connector=self.name, external_id=external_id, code=exc.field)
            return VendorRecord(external_id, version, None, error=exc, modified_at=modified, syncd_id=syncd_id,
                                replaces=replaces)
        return VendorRecord(external_id, version, appointment, modified_at=modified, syncd_id=syncd_id,
                            replaces=replaces, not_stored=_NOT_STORED)

    @staticmethod
    def _deleted(external_id: str) -> VendorRecord:
        return VendorRecord(external_id, None, None, deleted=True)

    # -- known ids (deletion detection, part 2 (c)) ----------------------------------------------
    async def _known_ids(self) -> dict[str, str]:
        if self._known is None:
            stored = await self.state.get(STATE_KNOWN)
            known: dict[str, str] = {}
            if stored:
                try:
                    data = json.loads(stored)
                except ValueError:
                    data = {}
                if isinstance(data, dict):
                    known = {str(k): str(v) for k, v in data.items() if isinstance(v, str)}
            self._known = known
            self._known_saved = stored
        return self._known

    async def _save_known(self) -> None:
        if self._known is None:
            return
        dumped = json.dumps(self._known, sort_keys=True, separators=(",", ":"))
        if dumped != self._known_saved:
            await self.state.set(STATE_KNOWN, dumped)
            self._known_saved = dumped

    def _note_known(self, known: dict[str, str], raws: Sequence[Mapping[str, Any]], low: datetime,
                    high: datetime) -> None:
        for raw in raws:
            rid = self.mapper.external_id(raw)
            start = _parse(raw.get(self.mapping.fields["start"]))
            if rid and start is not None and low <= start < high:
                known[rid] = _iso(start)
            else:
                known.pop(rid, None)

    # -- change detection (part 2) ---------------------------------------------------------------
    @staticmethod
    def _dump_cursor(mark: datetime | None, reconciled: datetime | None, mode: str) -> str:
        data = {"t": _iso(mark) if mark else None, "r": _iso(reconciled) if reconciled else None, "mode": mode}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @staticmethod
    def _load_cursor(cursor: str) -> tuple[datetime | None, datetime | None, str] | None:
        try:
            data = json.loads(cursor)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("mode") not in (_MODE_POLL, _MODE_WINDOW):
            return None
        mark = _parse(data.get("t")) if data.get("t") is not None else None
        reconciled = _parse(data.get("r")) if data.get("r") is not None else None
        if data.get("t") is not None and mark is None:
            return None
        return mark, reconciled, str(data["mode"])

    def changes(self, cursor: str | None, *, since: datetime | None = None) -> AsyncIterator[ChangePage]:
        now = datetime.now(UTC)
        if since is not None:
            start = since.astimezone(UTC) - timedelta(seconds=float(self.options["incremental_overlap_s"]))
            previous = self._load_cursor(cursor) if cursor is not None else None
            return self._incremental(start, previous[1] if previous else None, _MODE_POLL, prior=cursor,
                                     overlap=False)
        state = self._load_cursor(cursor) if cursor is not None else None
        if state is None:
            if cursor is not None:
                log.warning("cursor_unreadable", connector=self.name, op="changes")
            return self._reconcile(_MODE_POLL, prior=None)
        assert cursor is not None
        mark, reconciled, mode = state
        age = (now - reconciled).total_seconds() if reconciled is not None else float("inf")
        if mode == _MODE_WINDOW:
            every = max(self.config.poll_interval, float(self.options["window_mode_min_interval_s"]))
            if age >= every:
                return self._reconcile(_MODE_WINDOW, prior=cursor)
            return self._nothing(cursor)
        if mark is None:
            return self._reconcile(_MODE_POLL, prior=cursor)
        # the daily reconciliation runs after the poll, so that changes outside the window are not skipped
        due = age >= float(self.options["reconcile_every_s"])
        return self._incremental(mark, reconciled, _MODE_POLL, prior=cursor, overlap=True, reconcile=due)

    @staticmethod
    async def _nothing(cursor: str) -> AsyncIterator[ChangePage]:
        yield ChangePage([], cursor)

    async def _incremental(
        self, mark: datetime, reconciled: datetime | None, mode: str, *, prior: str | None, overlap: bool,
        reconcile: bool = False,
    ) -> AsyncIterator[ChangePage]:
        """Part 2 (b): ``updated_after`` descending, paged until a short page; cursor after the last page."""
        asked = mark - timedelta(seconds=float(self.options["incremental_overlap_s"])) if overlap else mark
        params = {"updated_after": _iso(asked), "sort_by": "updated_at", "sort_direction": "desc"}
        known = await self._known_ids()
        low, high = self._window()
        newest = mark
        page = 1
        count = 0
        while True:
            try:
                raws = await self.client.list_page(params, page=page, op="poll")
            except Rejected as exc:
                if exc.code != UPDATED_AFTER_REFUSED:
                    raise
                log.warning("updated_after_refused", connector=self.name, op="poll", code=exc.code)
                async for fallback in self._reconcile(_MODE_WINDOW, prior=prior):
                    yield fallback
                return
            for raw in raws:
                when = self.mapper.modified(raw)
                if when is not None and when > newest:
                    newest = when
            self._note_known(known, raws, low, high)
            count += len(raws)
            last = len(raws) < self.page_size
            cursor = self._dump_cursor(newest, reconciled, mode) if last else prior
            yield ChangePage([self._record(r) for r in raws], cursor)
            if last:
                break
            page += 1
        await self._save_known()
        log.info("polled", connector=self.name, op="poll", count=count)
        if reconcile or await self._deletions_suspected(known, low, high):
            async for extra in self._reconcile(mode, prior=self._dump_cursor(newest, reconciled, mode)):
                yield extra

    async def _deletions_suspected(self, known: Mapping[str, str], low: datetime, high: datetime) -> bool:
        """Between reconciliations: one cheap count of the window; fewer records than known ids in it
        means something was deleted (deletions never appear in lists), so a reconciliation finds them."""
        interval = float(self.options["deletion_check_interval_s"])
        if interval < 0:
            return False
        now = time.monotonic()
        if self._count_checked_at is not None and now - self._count_checked_at < interval:
            return False
        self._count_checked_at = now
        expected = sum(1 for start in known.values() if low <= (_parse(start) or low - timedelta(1)) < high)
        if expected == 0:
            return False
        meta = await self.client.list_meta({"after": _iso(low), "before": _iso(high)}, op="deletion_check")
        total = meta.get("total")
        if not isinstance(total, int) or total >= expected:
            return False
        log.info("deletions_suspected", connector=self.name, op="deletion_check", count=expected - total)
        return True

    def _window(self) -> tuple[datetime, datetime]:
        zone = ZoneInfo(self.config.timezone)
        today = datetime.now(zone).date()
        low = datetime(today.year, today.month, today.day, tzinfo=zone) - timedelta(days=self.config.window_past_days)
        high_day = today + timedelta(days=self.config.window_future_days + 1)
        high = datetime(high_day.year, high_day.month, high_day.day, tzinfo=zone)
        return low.astimezone(UTC), high.astimezone(UTC)

    async def _reconcile(self, mode: str, *, prior: str | None) -> AsyncIterator[ChangePage]:
        """Part 2 (c): list the window by ``start_time`` in chunks of ≤31 days, then GET every known id
        of the window that the pass did not see (404 = deleted). The last page carries the new cursor
        (the pass's start − 60 s); earlier pages carry the previous one, so a crash repeats the pass."""
        started = datetime.now(UTC)
        low, high = self._window()
        step = timedelta(days=int(self.options["window_chunk_days"]))
        field = self.mapping.fields["start"]
        seen: dict[str, str] = {}
        pending: list[VendorRecord] | None = None
        at = low
        while at < high:
            end = min(high, at + step)
            params = {"after": _iso(at), "before": _iso(end), "sort_by": "start_time", "sort_direction": "asc"}
            page = 1
            while True:
                raws = await self.client.list_page(params, page=page, op="reconcile")
                records: list[VendorRecord] = []
                beyond = False
                for raw in raws:
                    start = _parse(raw.get(field))
                    if start is not None and start >= end:
                        beyond = True  # the live API may ignore ``before``: filter on start_time ourselves
                        continue
                    if start is not None and start < at:
                        continue
                    rid = self.mapper.external_id(raw)
                    if not rid or rid in seen:
                        continue
                    seen[rid] = _iso(start) if start is not None else ""
                    records.append(self._record(raw))
                if pending is not None:
                    yield ChangePage(pending, prior)
                pending = records
                if len(raws) < self.page_size or beyond:
                    break
                page += 1
            at = end
        known = await self._known_ids()
        missing = [rid for rid, start in known.items()
                   if rid not in seen and low <= (_parse(start) or low - timedelta(1)) < high]
        deleted: list[str] = []
        if pending is None:
            pending = []
        if missing:
            found = await self._read_raw(missing, op="deletion_check")
            for rid in missing:
                got = found.get(rid)
                if got is None:
                    deleted.append(rid)
                    continue
                rec = self._record(got)
                start = _parse(got.get(field))
                if start is not None and low <= start < high:
                    seen[rid] = _iso(start)
                pending.append(rec)
        self._known = {rid: start for rid, start in seen.items() if start}
        await self._save_known()
        lag = timedelta(seconds=float(self.options["reconcile_cursor_lag_s"]))
        cursor = self._dump_cursor(started - lag, started, mode)
        log.info("window_reconciled", connector=self.name, op="reconcile", count=len(seen))
        if deleted:
            log.info("deletions_found", connector=self.name, op="reconcile", count=len(deleted))
        yield ChangePage(pending, cursor, deleted_ids=deleted)

    # -- reads (part 3) --------------------------------------------------------------------------
    async def _read_raw(self, external_ids: Sequence[str], *, op: str = "read") -> dict[str, dict[str, Any]]:
        """One GET per id (Dentally has no batch read), run concurrently within ``max_in_flight``."""
        unique = list(dict.fromkeys(str(i) for i in external_ids))
        answers = await asyncio.gather(*(self.client.get_one(rid, op=op) for rid in unique))
        return {rid: raw for rid, raw in zip(unique, answers, strict=True) if raw is not None}

    async def read(self, external_ids: Sequence[str]) -> Mapping[str, VendorRecord]:
        if not external_ids:
            return {}
        found = await self._read_raw(external_ids)
        return {rid: self._record(found[rid]) if rid in found else self._deleted(rid)
                for rid in dict.fromkeys(str(i) for i in external_ids)}

    async def find_by_reference(
        self, canonical_id: str, *, exclude: Sequence[str] = (), desired: Appointment | None = None
    ) -> list[VendorRecord]:
        """``docs/vendors/dentally.md §9``: list by ``updated_after`` (attempt start − 300 s, or a day back
        when this process made no attempt), match ``metadata.syncd_id`` here; every record holding the
        reference, oldest first (the engine decides between several, head rule 10). ``desired`` is not
        needed: the reference travels in the create itself."""
        now = datetime.now(UTC)
        attempt = self._attempts.get(canonical_id)
        if attempt is not None:
            after = attempt - timedelta(seconds=float(self.options["reference_search_lag_s"]))
        else:
            after = now - timedelta(seconds=float(self.options["reference_search_default_s"]))
        params = {"updated_after": _iso(after), "sort_by": "updated_at", "sort_direction": "desc"}
        skip = {str(e) for e in exclude}
        replaces = self._replace_of.get(canonical_id)
        matches: list[dict[str, Any]] = []
        page = 1
        while True:
            raws = await self.client.list_page(params, page=page, op="search")
            for raw in raws:
                if self.mapper.syncd_id(raw) != canonical_id or self.mapper.external_id(raw) in skip:
                    continue
                if replaces is not None and self.mapper.replaces(raw) != replaces:
                    continue
                matches.append(raw)
            if len(raws) < self.page_size:
                break
            page += 1
        unique = {self.mapper.external_id(r): r for r in matches}
        ordered = sorted(unique.values(), key=lambda r: (str(r.get("created_at") or ""), self.mapper.external_id(r)))
        if len(ordered) > 1:
            log.warning("reference_held_twice", connector=self.name, op="search", count=len(ordered))
        return [self._record(r) for r in ordered]

    # -- writes (part 4) -------------------------------------------------------------------------
    async def write(self, requests: Sequence[WriteRequest]) -> list[WriteOutcome]:
        outcomes: list[WriteOutcome] = []
        for request in requests:  # no batch writes: one appointment per call
            if request.kind is WriteKind.CREATE:
                outcomes.append(await self._create(request))
            elif not request.external_id:
                outcomes.append(WriteOutcome(request, error=MappingError("dentally: no target external id",
                                                                         field="external_id")))
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
                raise AmbiguousReference("several Dentally records hold this appointment's reference",
                                         external_ids=tuple(r.external_id for r in found))
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
                self._reasons = {str(i.get("reason", "")).strip().lower(): int(i["id"])
                                 for i in items if isinstance(i.get("id"), int)}
            if wanted in self._reasons:
                return self._reasons[wanted]
        if fallback in (self._reasons or {}):
            return (self._reasons or {})[fallback]
        raise MappingError("dentally: no matching cancellation reason and no fallback reason",
                           field="cancellation_reason")

    async def _replaced_note(self, request: WriteRequest, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Part 4 step 2: the old record's notes name the new appointment."""
        old_id = str(request.external_id)
        new_id = self._replaced_by.get(old_id)
        reason = request.desired.cancellation_reason or ""
        if new_id is None and reason.strip().lower() == str(self.mapping.defaults["replace_reason"]).lower():
            found = [r for r in await self.find_by_reference(request.canonical_id, exclude=[old_id])
                     if r.replaces == old_id]
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
        editable = set(self.options["always_editable"])
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
            return WriteOutcome(request, error=Conflict("the record was deleted in Dentally", code="deleted"),
                                record=self._deleted(rid))
        fresh = self._record(raw)
        if fresh.error is not None:
            return WriteOutcome(request, error=fresh.error)
        if request.current is not None and request.current.version != fresh.version:
            log.info("stale_write_refused", connector=self.name, external_id=rid, op="update")
            return WriteOutcome(request, error=Conflict("the record changed in Dentally since it was read",
                                                        code="stale"), record=fresh)
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
            log.info("write_refused", connector=self.name, external_id=rid, op=op, code=exc.code,
                     http_status=exc.status)
            return WriteOutcome(request, error=exc)
        if answer is None:
            return WriteOutcome(request, error=Conflict("the record was deleted in Dentally", code="deleted"),
                                record=self._deleted(rid))
        log.info("updated", connector=self.name, external_id=rid, op=op, count=len(values))
        return WriteOutcome(request, record=self._record(answer))

    # -- replace flow (part 4, seed) -------------------------------------------------------------
    def needs_replace(self, current: Appointment, desired: Appointment) -> str | None:
        if desired.status.terminal:
            return None
        if current.patient is not None and desired.patient != current.patient:
            return "patient change: Dentally can not change the patient of an appointment (seed)"
        if current.patient is None and desired.patient is not None and \
                current.native_status not in (None, self.mapper.open_state):
            return f"patient added outside Pending ({current.native_status}): Dentally can not change it"
        return None

    def write_refusal(self, current: Appointment, desired: Appointment, *, now: datetime) -> str | None:
        return write_refusal(self.mapper, current, desired, self.needs_replace(current, desired))

    # -- webhooks (part 2 (a)) -------------------------------------------------------------------
    async def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
        secret = self.config.webhook_secret.reveal() if self.config.webhook_secret is not None else None
        delivery = parse_delivery(headers, body, secret=secret, now=now)
        log.info("webhook_parsed", connector=self.name, op="webhook", count=len(delivery.events))
        return delivery

    async def maintain(self, public_url: str | None) -> Mapping[str, Any]:
        return {"subscription": "not needed",
                "reason": "Dentally webhooks are set up by a practice admin (Settings > Developer > Webhooks)"}

    # -- operator help: remedies and ``syncd doctor`` (docs/vendors/dentally.md §1, §2, §6, §7) ----------
    def remedy(self, error: VendorError) -> Remedy | None:
        if not isinstance(error, AuthFailure):
            return None
        key = f"connectors.{self.name}"
        text = error.message.lower()
        if "user-agent" in text:
            return Remedy(f"{key}.user_agent", "Dentally requires a User-Agent naming the integration and a contact")
        if "scope" in text:
            return Remedy(f"{key}.access_token", "the token lacks the appointment scope: create a token with the "
                          "appointment, patient:read and user:read scopes")
        return Remedy(f"{key}.access_token", "the token is unknown, revoked or unused for 14 days: create a new "
                      "API token in Dentally (Settings > Developer Settings)")

    async def diagnose(self, public_url: str | None) -> list[Check]:
        """Token, scopes, the cancellation reasons syncd writes, one page of the window, the hourly
        quota, and the webhook set-up (Dentally has no API for it: said, not checked). No write."""
        d = Diagnosis(self)
        http = self.client.http
        answer = await d.attempt("authenticate", http.request(
            "doctor", "GET", f"{self.client.prefix}/appointment_cancellation_reasons"))
        if answer is None:
            d.skip_blocked("scopes", "cancellation reasons", "read", "rate limit")
        else:
            d.ok("authenticate", f"{http.base_url} accepted the token and the User-Agent")
            scopes = set(str(answer.headers.get("X-OAuth-Scopes", "")).split())
            needed = set(_REQUIRED_SCOPES)
            if not scopes:
                d.skip("scopes", "the answer carried no X-OAuth-Scopes header")
            elif needed - scopes:
                d.fail("scopes", f"the token has the scopes {' '.join(sorted(scopes))}; syncd needs "
                       f"{' '.join(sorted(needed))}", "create a Dentally token with those scopes and put it in "
                       f"connectors.{self.name}.access_token", f"connectors.{self.name}.access_token")
            else:
                d.ok("scopes", f"token scopes: {' '.join(sorted(scopes))}")
            body = answer.json_or_none()
            items = body.get("appointment_cancellation_reasons") if isinstance(body, dict) else None
            names = {str(i.get("reason", "")).strip().lower() for i in items or [] if isinstance(i, dict)}
            defaults = self.mapping.defaults
            wanted = [str(defaults["replace_reason"]), str(defaults["fallback_cancel_reason"])]
            absent = [w for w in wanted if w.lower() not in names]
            if absent:
                d.fail("cancellation reasons", f"the practice has no cancellation reason {', '.join(absent)}",
                       "add it in Dentally (Settings > Appointments > Cancellation reasons): syncd writes it when "
                       "it cancels an appointment replaced after a patient change, or whose reason matches none")
            else:
                d.ok("cancellation reasons", f"{len(names)} reasons, including {', '.join(wanted)}")
            low, high = self._window()
            page = await d.attempt("read", http.request(
                "doctor", "GET", self.client.appointments_path,
                params={"after": _iso(low), "before": _iso(high), "page": "1", "per_page": "1"}))
            if page is not None:
                listing = page.json_or_none()
                meta: dict[str, Any] = {}
                if isinstance(listing, dict) and isinstance(listing.get("meta"), dict):
                    meta = listing["meta"]
                d.ok("read", f"read one page of the window ({meta.get('total', '?')} appointments between "
                     f"{_iso(low)[:10]} and {_iso(high)[:10]})")
                remaining, limit = page.headers.get("X-RateLimit-Remaining"), page.headers.get("X-RateLimit-Limit")
                if remaining is None or limit is None or not (remaining.isdigit() and limit.isdigit()):
                    d.skip("rate limit", "no X-RateLimit headers in the answer")
                elif int(remaining) < int(limit) // 10:
                    d.warn("rate limit", f"{remaining} of {limit} requests left this hour (shared with the "
                           "practice's other integrations)", "syncd slows down by itself; check what else uses "
                           "this token's quota")
                else:
                    d.ok("rate limit", f"{remaining} of {limit} requests left this hour")
        hook = f"{(public_url or '<public URL>').rstrip('/')}/webhooks/{self.name}"
        if self.config.webhook_secret is None:
            d.warn("webhooks", f"webhooks are off: changes arrive by polling every {self.config.poll_interval:g}s",
                   f"set connectors.{self.name}.webhook_secret and add a webhook to {hook} in Dentally "
                   "(Settings > Developer > Webhooks)", f"connectors.{self.name}.webhook_secret")
        else:
            d.skip("webhooks", "Dentally has no API that lists webhooks",
                   f"check Settings > Developer > Webhooks: a webhook to {hook}, signed with "
                   f"connectors.{self.name}.webhook_secret, active (Dentally turns it off after 50 failures)")
        return d.checks

