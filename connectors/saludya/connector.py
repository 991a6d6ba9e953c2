"""The SaludYa connector (docs/vendors/saludya.md): date-window scans, single reads, PUT/POST writes.

SaludYa has no webhooks, no modified-since filter, no batch calls and no concurrency token. Changes are
found by scanning date windows (hot / near / full, part 2) and comparing each record's ``updated_at``
and fingerprint with what the cursor remembers; deletions by GETting known ids a complete pass did not
see. Every PUT is preceded by a re-read (part 8); creates carry a ``[syncd:<id>]`` marker line in
``notes`` so that a lost create response is found again, not repeated (part 9).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import structlog

from connectors.saludya.client import SaludYaClient
from connectors.saludya.mapfuncs import SaludYaMapper, parse_utc
from connectors.saludya.rules import write_refusal
from connectors.saludya.webhook import parse_webhook as _parse_webhook
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
    RateLimited,
    Rejected,
    VendorError,
)
from syncd.http import HttpClient, Priority
from syncd.ledger.errortext import reduce_vendor_message
from syncd.mapping import VendorMapping
from syncd.model import SYNC_FIELDS, Appointment

__all__ = ["SaludYaConnector", "ScanState"]

log = structlog.get_logger(__name__)

#: SaludYa stores no location at all: "location | none | not stored in SaludYa; read as null"
#: (docs/vendors/saludya.md §9); a group that needs one sets ``default_location`` on this connector
NOT_STORED = frozenset({"location"})
#: SaludYa stores the specialty but only its own users set it: "service_type | specialty (read-only) | read
#: through crosswalk kind service; never written" (docs/vendors/saludya.md §9; sending it is a 400, §4)
READ_ONLY = frozenset({"service_type"})
#: a create needs the patient, the doctor, the date and the time (docs/vendors/saludya.md §4)
REQUIRED_ON_CREATE = frozenset({"start", "end", "patient", "practitioner"})
PASSES = ("hot", "near", "full")
CURSOR_VERSION = 1


#: the Free tier's tightest sustained pace: 300 requests per hour (docs/vendors/saludya.md §7)
_QUOTA_PACE = 300 / 3600


@dataclass
class ScanState:
    """What the opaque cursor holds: known records, pass times, the interval factor, a pass in progress."""

    known: dict[str, list[Any]] = field(default_factory=dict)
    """id -> [updated_at, fingerprint, local date, number of the pass that last saw it]."""
    last: dict[str, float] = field(default_factory=dict)
    """pass kind -> epoch seconds its last complete run started."""
    pages: dict[str, int] = field(default_factory=dict)
    """pass kind -> list pages its last complete run took (the part 2 budget)."""
    k: int = 1
    number: int = 0
    run: dict[str, Any] | None = None
    warned: str | None = None
    """The day "scan budget exceeded" was last logged."""

    def dump(self) -> str:
        data = {"v": CURSOR_VERSION, "known": self.known, "last": self.last, "pages": self.pages, "k": self.k,
                "n": self.number, "run": self.run, "warned": self.warned}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def load(cls, cursor: str) -> ScanState | None:
        try:
            data = json.loads(cursor)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("v") != CURSOR_VERSION:
            return None
        known = data.get("known")
        if not isinstance(known, dict) or not all(isinstance(v, list) and len(v) == 4 for v in known.values()):
            return None
        run = data.get("run")
        if run is not None and not (isinstance(run, dict) and {"kind", "from", "to", "page", "no", "at"} <= set(run)):
            return None
        try:
            return cls(
                known={str(k): list(v) for k, v in known.items()},
                last={str(k): float(v) for k, v in dict(data.get("last") or {}).items()},
                pages={str(k): int(v) for k, v in dict(data.get("pages") or {}).items()},
                k=int(data.get("k") or 1),
                number=int(data.get("n") or 0),
                run=run,
                warned=data.get("warned"),
            )
        except (TypeError, ValueError):
            return None


class SaludYaConnector:
    """One SaludYa organisation's appointments, as the core sees them."""

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
        self.options = mapping.options
        self.zone = ZoneInfo(config.timezone)
        self.mapper = SaludYaMapper(mapping, config.timezone)
        self.state: StateStore = state if state is not None else MemoryStateStore()
        self.client = SaludYaClient(config, mapping.options, max_rate_limit_wait=max_rate_limit_wait,
                                    session=session)
        self.replace_reason = str(mapping.defaults["replace_reason"])
        self.capabilities = Capabilities(
            webhooks=False,
            batch_read_size=1,
            batch_write_size=1,
            optimistic_concurrency=False,
            patient_change=False,
            notification_switch=True,
            subscription=False,
            replace_reason=self.replace_reason,
            # docs/vendors/saludya.md §4: a patient-only change cancels first (the old record holds the slot)
            replace_cancel_first_when=frozenset({"patient"}),
            not_stored=NOT_STORED,
            read_only=READ_ONLY,
            required_on_create=REQUIRED_ON_CREATE,
        )
        self.poll_interval = float(config.poll_interval) if config.poll_interval > 0 else 300.0
        self.list_required = tuple(str(n) for n in self.options["list_required"])
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        """The connector's clock (tests replace it)."""
        self._hints: dict[str, tuple[str, str]] = {}
        """canonical id -> (date, doctor id) its create sent: the narrow search of part 9."""

    @property
    def http(self) -> HttpClient:
        return self.client.http

    async def close(self) -> None:
        await self.client.close()

    # -- records -------------------------------------------------------------------------------
    def _record(self, raw: Mapping[str, Any]) -> VendorRecord:
        external_id = str(raw.get("id") or "")
        version = raw.get("updated_at") if isinstance(raw.get("updated_at"), str) else None
        modified = parse_utc(version)
        split = self.mapper.split(raw)
        try:
            appointment = self.mapper.to_appointment(raw)
        except MappingError as exc:
            log.warning("record_unmappable", connector=self.name, external_id=external_id, code=exc.field)
            return VendorRecord(external_id, version, None, error=exc, modified_at=modified,
                                syncd_id=split.reference)
        if split.replaced is not None:
            appointment = appointment.with_changes(extra={"replaced_marker": split.replaced})
        return VendorRecord(external_id, version, appointment, modified_at=modified, syncd_id=split.reference,
                            not_stored=NOT_STORED, read_only=READ_ONLY)

    @staticmethod
    def _deleted(external_id: str) -> VendorRecord:
        return VendorRecord(external_id, None, None, deleted=True)

    async def _complete(self, item: Mapping[str, Any], op: str) -> dict[str, Any] | None:
        """A list item with every field syncd needs (GET it when the list left some out, part 2)."""
        if all(name in item for name in self.list_required):
            return dict(item)
        return await self.client.get_one(str(item.get("id")), op=op, priority=Priority.BACKGROUND)

    # -- change detection (part 2) ---------------------------------------------------------------
    def _today(self) -> date:
        return self.now().astimezone(self.zone).date()

    def _window(self, kind: str, today: date) -> tuple[str, str]:
        if kind == "full":
            lo, hi = -int(self.config.window_past_days), int(self.config.window_future_days)
        else:
            lo, hi = (int(x) for x in self.options[f"{kind}_days"])
        return (today + timedelta(days=lo)).isoformat(), (today + timedelta(days=hi)).isoformat()

    def _interval(self, kind: str) -> float:
        if kind == "hot":
            return self.poll_interval
        return float(self.options[f"{kind}_interval_s"])

    def _due(self, state: ScanState, now: float) -> str | None:
        """The largest pass due now (it covers the smaller ones); hot runs on every call unless the
        budget factor stretched its interval."""
        slack = self.poll_interval / 2
        for kind in ("full", "near"):
            if now - state.last.get(kind, 0.0) >= self._interval(kind) * state.k - slack:
                return kind
        if state.k == 1 or now - state.last.get("hot", 0.0) >= self.poll_interval * state.k - slack:
            return "hot"
        return None

    def changes(self, cursor: str | None, *, since: datetime | None = None) -> AsyncIterator[ChangePage]:
        return self._changes(cursor, since)

    async def _changes(self, cursor: str | None, since: datetime | None) -> AsyncIterator[ChangePage]:
        state = ScanState.load(cursor) if cursor is not None else None
        if cursor is not None and state is None:
            log.warning("cursor_unreadable", connector=self.name, op="changes")
        now = self.now().timestamp()
        if since is not None or state is None:
            # a window reconciliation (or "everything changed since"): every record of the full window
            state = ScanState(last=state.last if state else {}, pages=state.pages if state else {},
                              k=state.k if state else 1, warned=state.warned if state else None)
            run = self._new_run(state, "full", now, filtered=False, since=since)
        elif state.run is not None:
            run = state.run  # resume the pass a crash interrupted, from its next page
        else:
            kind = self._due(state, now)
            if kind is None:
                return
            run = self._new_run(state, kind, now, filtered=True, since=None)
        state.run = run
        async for page in self._scan(state, run):
            yield page

    def _new_run(self, state: ScanState, kind: str, now: float, *, filtered: bool,
                 since: datetime | None) -> dict[str, Any]:
        state.number += 1
        lo, hi = self._window(kind, self._today())
        return {"kind": kind, "from": lo, "to": hi, "page": 1, "no": state.number, "at": now,
                "filter": filtered, "since": since.astimezone(UTC).isoformat() if since is not None else None,
                "checks": since is None}

    async def _scan(self, state: ScanState, run: dict[str, Any]) -> AsyncIterator[ChangePage]:
        params = {"date_from": str(run["from"]), "date_to": str(run["to"])}
        since = parse_utc(run.get("since")) if run.get("since") else None
        while True:
            page = int(run["page"])
            # part 2 Guard and Budget: scan pages are background requests with a daily budget (the HTTP
            # client's limiter waits or holds them back; writes go first and go on)
            body = await self.client.list_page(params, page, op="scan", priority=Priority.BACKGROUND)
            items = [i for i in body["data"] if isinstance(i, dict) and i.get("id")]
            pagination = body.get("pagination") if isinstance(body.get("pagination"), dict) else {}
            total_pages = int(pagination.get("total_pages") or 0) if isinstance(pagination, dict) else 0
            records: list[VendorRecord] = []
            deleted: list[str] = []
            for item in items:
                rid = str(item["id"])
                raw = await self._complete(item, "scan")
                if raw is None:  # deleted between the list and the GET
                    state.known.pop(rid, None)
                    deleted.append(rid)
                    continue
                record = self._remember(state, raw, int(run["no"]), filtered=bool(run.get("filter")))
                if record is None:
                    continue
                if since is not None and record.modified_at is not None and record.modified_at < since:
                    continue
                records.append(record)
            run["page"] = page + 1
            last = not items or page >= total_pages
            if not last:
                yield ChangePage(records, state.dump(), deleted_ids=deleted)
                continue
            pages_taken = max(1, page)
            vanished = self._vanished(state, run) if run.get("checks") else []
            if vanished:
                # commit the last list page first; the deletion checks resume from here after a crash
                yield ChangePage(records, state.dump(), deleted_ids=deleted)
                records, deleted = await self._deletion_checks(state, run, vanished)
            self._finish(state, run, pages_taken)
            log.info("scan_done", connector=self.name, op=str(run["kind"]), count=pages_taken)
            yield ChangePage(records, state.dump(), deleted_ids=deleted)
            return

    def _remember(self, state: ScanState, raw: Mapping[str, Any], number: int, *,
                  filtered: bool) -> VendorRecord | None:
        """Note ``raw`` in the known map; its record when it is new or changed (or unfiltered)."""
        rid = str(raw.get("id"))
        version = raw.get("updated_at")
        fingerprint = self.mapper.raw_fingerprint(raw)
        previous = state.known.get(rid)
        state.known[rid] = [version, fingerprint, raw.get("date"), number]
        if filtered and previous is not None and previous[0] == version and previous[1] == fingerprint:
            return None
        return self._record(raw)

    @staticmethod
    def _vanished(state: ScanState, run: Mapping[str, Any]) -> list[str]:
        lo, hi, number = str(run["from"]), str(run["to"]), int(run["no"])
        return sorted(
            rid for rid, (_v, _f, day, seen) in state.known.items()
            if seen != number and isinstance(day, str) and lo <= day <= hi
        )

    async def _deletion_checks(
        self, state: ScanState, run: Mapping[str, Any], vanished: Sequence[str]
    ) -> tuple[list[VendorRecord], list[str]]:
        records: list[VendorRecord] = []
        deleted: list[str] = []
        for rid in vanished:
            try:
                raw = await self.client.get_one(rid, op="deletion_check", priority=Priority.BACKGROUND)
            except Rejected as exc:  # 403: this key no longer sees the record; keep it, dead-letter nothing
                log.warning("deletion_check_refused", connector=self.name, external_id=rid, code=exc.code)
                state.known[rid][3] = int(run["no"])
                continue
            if raw is None:
                state.known.pop(rid, None)
                deleted.append(rid)
                log.info("record_deleted", connector=self.name, external_id=rid, op="deletion_check")
                continue
            record = self._remember(state, raw, int(run["no"]), filtered=True)
            if record is not None:
                records.append(record)
        return records, deleted

    def _finish(self, state: ScanState, run: Mapping[str, Any], pages: int) -> None:
        kind = str(run["kind"])
        started = float(run["at"])
        for covered in PASSES[: PASSES.index(kind) + 1]:
            state.last[covered] = started
        state.pages[kind] = pages
        state.run = None
        today = self._today()
        horizon = (today - timedelta(days=int(self.config.window_past_days) + 1)).isoformat()
        state.known = {rid: v for rid, v in state.known.items() if not (isinstance(v[2], str) and v[2] < horizon)}
        if kind == "full":
            self._budget(state, today)

    def _budget(self, state: ScanState, today: date) -> None:
        """Part 2 budget: daily scan calls C; stretch every interval by the smallest k that fits."""
        hot, near, full = (state.pages.get(k, 1) for k in PASSES)
        calls = (86_400 / self.poll_interval) * hot + 24 * near + 4 * full
        budget = float(self.options["daily_call_budget"])
        factors = [int(f) for f in self.options["budget_factors"]]
        state.k = next((f for f in factors if calls / f <= budget), factors[-1])
        if calls / state.k > budget and state.warned != today.isoformat():
            state.warned = today.isoformat()
            log.warning("saludya scan budget exceeded", connector=self.name, count=int(calls), op="scan")

    # -- reads (part 3) -------------------------------------------------------------------------
    async def read(self, external_ids: Sequence[str]) -> Mapping[str, VendorRecord]:
        out: dict[str, VendorRecord] = {}
        for rid in dict.fromkeys(external_ids):
            try:
                raw = await self.client.get_one(rid, op="read")
            except Rejected as exc:
                out[rid] = VendorRecord(rid, None, None, error=MappingError(
                    f"saludya: {exc.code or 'refused'}: {reduce_vendor_message(exc.message)}", field="access"))
                continue
            out[rid] = self._deleted(rid) if raw is None else self._record(raw)
        return out

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
                log.info("write_refused", connector=self.name, external_id=request.external_id,
                         op=request.kind.value, code=code)
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
                raise AmbiguousReference("several SaludYa appointments hold this appointment's reference",
                                         external_ids=tuple(str(r["id"]) for r in found))
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
                log.warning("create_follow_up_failed", connector=self.name, external_id=rid, op="confirm",
                            code=exc.code, http_status=exc.status)
        return WriteOutcome(request, record=self._record(raw))

    async def _update(self, request: WriteRequest) -> WriteOutcome:
        rid = request.external_id
        if not rid:
            raise MappingError("saludya: update or cancel without a target external id", field="external_id")
        # part 8: no concurrency token, so re-read right before the PUT
        raw = await self.client.get_one(rid, op="reread", priority=Priority.WRITE)
        if raw is None:
            return WriteOutcome(request, error=Conflict("the appointment was deleted in SaludYa",
                                                        code="RESOURCE_NOT_FOUND", status=404),
                                record=self._deleted(rid))
        fresh = self._record(raw)
        if request.current is not None and self._stale(request, fresh):
            log.info("stale_write_refused", connector=self.name, external_id=rid, op=request.kind.value)
            return WriteOutcome(request, error=Conflict("the appointment changed in SaludYa since it was read",
                                                        code="STALE"), record=fresh)
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
            return WriteOutcome(request, error=NotWritable(
                f"the SaludYa appointment is {native} (terminal): it cannot be edited", code="TERMINAL"),
                record=fresh)
        payload["send_notification"] = False
        try:
            written = await self.client.update(rid, payload, op=request.kind.value)
        except Conflict as exc:  # 422: re-read once; moved since the merge -> conflict, else rejected
            again = await self.client.get_one(rid, op="reread", priority=Priority.WRITE)
            if again is None:
                return WriteOutcome(request, error=Conflict("the appointment was deleted in SaludYa",
                                                            code="RESOURCE_NOT_FOUND", status=404),
                                    record=self._deleted(rid))
            now = self._record(again)
            base = request.current.version if request.current is not None else fresh.version
            if now.version != base:
                return WriteOutcome(request, error=exc, record=now)
            return WriteOutcome(request, error=Rejected(exc.message, code=exc.code, status=exc.status))
        except Rejected as exc:
            if exc.status == 404:
                return WriteOutcome(request, error=Conflict("the appointment was deleted in SaludYa",
                                                            code=exc.code, status=404), record=self._deleted(rid))
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
                raw = item if "notes" in item else await self.client.get_one(str(item["id"]), op="search",
                                                                             priority=Priority.WRITE)
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

    # -- replace flows (part 4) -----------------------------------------------------------------
    def needs_replace(self, current: Appointment, desired: Appointment) -> str | None:
        if desired.status.terminal:
            return None
        if current.practitioner and desired.practitioner and current.practitioner != desired.practitioner:
            return "doctor changed: SaludYa doctor_id is immutable (create the new appointment, then cancel the old)"
        if current.patient and desired.patient and current.patient != desired.patient:
            return "patient changed: SaludYa patient_id is immutable (cancel the old appointment first, then create)"
        return None

    def write_refusal(self, current: Appointment, desired: Appointment, *, now: datetime) -> str | None:
        return write_refusal(self.mapper, current, desired, self.needs_replace(current, desired))

    # -- webhooks, upkeep -----------------------------------------------------------------------
    async def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
        return _parse_webhook(headers, body)

    async def maintain(self, public_url: str | None) -> Mapping[str, Any]:
        return {"subscription": "not needed", "webhooks": False, "detail": "saludya is poll-only (date-window scans)"}

    # -- operator help: remedies and ``syncd doctor`` (docs/vendors/saludya.md §1, §7) --------------------
    def remedy(self, error: VendorError) -> Remedy | None:
        key = f"connectors.{self.name}.api_key"
        if isinstance(error, AuthFailure):
            return Remedy(key, "SaludYa refused the API key (unknown or revoked): copy the organization's "
                          "current key from SaludYa")
        if error.status == 403:
            return Remedy(key, "the API key may not see this clinic's or doctor's appointments: widen its "
                          "access in SaludYa")
        return None

    async def diagnose(self, public_url: str | None) -> list[Check]:
        """The API key and the request quotas (``X-RateLimit-*``) with one list request, the client-side
        pace against the quota, and the lack of webhooks. SaludYa's quota is small: one request."""
        d = Diagnosis(self)
        today = self._today().isoformat()
        answer = await d.attempt("authenticate", self.client.http.request(
            "doctor", "GET", self.client._path(),
            params={"date_from": today, "date_to": today, "page": "1", "limit": "1"}))
        if answer is None:
            d.skip_blocked("read", "quota")
        else:
            d.ok("authenticate", f"{self.client.http.base_url} accepted the API key")
            body = answer.json_or_none()
            pagination = body.get("pagination") if isinstance(body, dict) else None
            total = pagination.get("total", "?") if isinstance(pagination, dict) else "?"
            d.ok("read", f"read one page: {total} appointments on {today}")
            remaining = answer.headers.get("X-RateLimit-Remaining")
            limit = answer.headers.get("X-RateLimit-Limit")
            window = answer.headers.get("X-RateLimit-Window")
            if remaining is None or limit is None or not (remaining.isdigit() and limit.isdigit()):
                d.skip("quota", "the answer carried no X-RateLimit headers")
            elif int(remaining) <= int(self.options["guard_remaining"]):
                d.warn("quota", f"{remaining} of {limit} requests left in the current {window or '?'} s window",
                       "syncd waits for the window to reset by itself; a paid SaludYa tier raises the quotas")
            else:
                d.ok("quota", f"{remaining} of {limit} requests left in the current {window or '?'} s window")
        pace = self.config.max_requests_per_second
        if pace > _QUOTA_PACE:
            d.warn("pace", f"max_requests_per_second = {pace:g} spends the Free tier's 300-per-hour quota faster "
                   "than it refills", f"lower connectors.{self.name}.max_requests_per_second to 0.08 (the default)",
                   f"connectors.{self.name}.max_requests_per_second")
        else:
            d.ok("pace", f"max_requests_per_second = {pace:g} stays within SaludYa's quotas")
        d.skip("webhooks", f"SaludYa has no webhooks: syncd scans date windows every "
               f"{self.config.poll_interval:g}s")
        return d.checks

