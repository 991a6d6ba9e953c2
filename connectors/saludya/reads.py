"""SaludYa reads (docs/vendors/saludya.md §2, §3, §7): records, the hot / near / full date-window scans,
their budget, the deletion checks, single reads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from connectors.saludya.client import SaludYaClient
from connectors.saludya.mapfuncs import SaludYaMapper, parse_utc
from connectors.saludya.options import SaludYaOptions
from syncd.connector import ChangePage, VendorRecord
from syncd.connectorkit import ConnectorBase
from syncd.errors import MappingError, Rejected
from syncd.http import Priority
from syncd.ledger.errortext import reduce_vendor_message
from syncd.model import Appointment

log = structlog.get_logger(__name__)

#: SaludYa stores no location at all: "location | none | not stored in SaludYa; read as null"
#: (docs/vendors/saludya.md §9); a group that needs one sets ``default_location`` on this connector
NOT_STORED = frozenset({"location"})


#: SaludYa stores the specialty but only its own users set it: "service_type | specialty (read-only) | read
#: through crosswalk kind service; never written" (docs/vendors/saludya.md §9; sending it is a 400, §4)
READ_ONLY = frozenset({"service_type"})


PASSES = ("hot", "near", "full")


CURSOR_VERSION = 1


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
        data = {
            "v": CURSOR_VERSION,
            "known": self.known,
            "last": self.last,
            "pages": self.pages,
            "k": self.k,
            "n": self.number,
            "run": self.run,
            "warned": self.warned,
        }
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


class SaludYaReads(ConnectorBase):
    """One organisation's appointments as the core reads them; :class:`SaludYaConnector` builds it."""

    client: SaludYaClient
    settings: SaludYaOptions
    mapper: SaludYaMapper
    zone: ZoneInfo
    poll_interval: float
    list_required: tuple[str, ...]

    # -- records -------------------------------------------------------------------------------
    def _record(self, raw: Mapping[str, Any]) -> VendorRecord:
        external_id = str(raw.get("id") or "")
        version = raw.get("updated_at") if isinstance(raw.get("updated_at"), str) else None
        split = self.mapper.split(raw)

        def appointment() -> Appointment:
            mapped = self.mapper.to_appointment(raw)
            if split.replaced is not None:
                return mapped.with_changes(extra={"replaced_marker": split.replaced})
            return mapped

        return self._mapped(
            external_id,
            version,
            appointment,
            modified_at=parse_utc(version),
            syncd_id=split.reference,
            not_stored=NOT_STORED,
            read_only=READ_ONLY,
        )

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
            lo, hi = self.settings.days(kind)
        return (today + timedelta(days=lo)).isoformat(), (today + timedelta(days=hi)).isoformat()

    def _interval(self, kind: str) -> float:
        if kind == "hot":
            return self.poll_interval
        return self.settings.full_interval_s if kind == "full" else self.settings.near_interval_s

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
            state = ScanState(
                last=state.last if state else {},
                pages=state.pages if state else {},
                k=state.k if state else 1,
                warned=state.warned if state else None,
            )
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

    def _new_run(
        self, state: ScanState, kind: str, now: float, *, filtered: bool, since: datetime | None
    ) -> dict[str, Any]:
        state.number += 1
        lo, hi = self._window(kind, self._today())
        return {
            "kind": kind,
            "from": lo,
            "to": hi,
            "page": 1,
            "no": state.number,
            "at": now,
            "filter": filtered,
            "since": since.astimezone(UTC).isoformat() if since is not None else None,
            "checks": since is None,
        }

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

    def _remember(
        self, state: ScanState, raw: Mapping[str, Any], number: int, *, filtered: bool
    ) -> VendorRecord | None:
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
            rid
            for rid, (_v, _f, day, seen) in state.known.items()
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
        budget = float(self.settings.daily_call_budget)
        factors = list(self.settings.budget_factors)
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
                out[rid] = VendorRecord(
                    rid,
                    None,
                    None,
                    error=MappingError(
                        f"saludya: {exc.code or 'refused'}: {reduce_vendor_message(exc.message)}", field="access"
                    ),
                )
                continue
            out[rid] = self._deleted(rid) if raw is None else self._record(raw)
        return out
