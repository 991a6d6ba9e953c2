"""Dentally reads (docs/vendors/dentally.md §2, §3): records, change detection, reads, the reference search."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from connectors.dentally.client import UPDATED_AFTER_REFUSED, DentallyClient
from connectors.dentally.mapfuncs import DentallyMapper, dentally_time_to_utc, utc_to_dentally_time
from connectors.dentally.options import DentallyOptions
from syncd.connector import ChangePage, VendorRecord
from syncd.connectorkit import ConnectorBase, window_bounds
from syncd.errors import MappingError, Rejected
from syncd.model import Appointment

log = structlog.get_logger(__name__)

STATE_KNOWN = "known_window_ids"


#: "description has no Dentally field and is not stored there" (docs/vendors/dentally.md §9); nor is a
#: free-text cancellation reason: Dentally keeps one of the practice's fixed reasons (§4), which the
#: connector picks by name when it cancels, so a read of "Other" says nothing about the text
_NOT_STORED = frozenset({"description", "cancellation_reason"})


_MODE_POLL = "poll"


_MODE_WINDOW = "window"


def _iso(value: datetime) -> str:
    return utc_to_dentally_time(value)


def _parse(value: Any) -> datetime | None:
    try:
        return dentally_time_to_utc(value, "cursor")
    except MappingError:
        return None


class DentallyReads(ConnectorBase):
    """One practice's records as the core reads them; :class:`DentallyConnector` builds it."""

    client: DentallyClient
    mapper: DentallyMapper
    settings: DentallyOptions
    _attempts: dict[str, datetime]
    """canonical id -> when its last create started"""
    _replace_of: dict[str, str]
    """canonical id -> old external id of a create in a replace flow"""
    _known: dict[str, str] | None
    """external id -> start (UTC ISO) of the records in the window"""
    _known_saved: str | None
    _count_checked_at: float | None

    # -- records -------------------------------------------------------------------------------
    def _record(self, raw: Mapping[str, Any]) -> VendorRecord:
        mapper = self.mapper
        return self._mapped(
            mapper.external_id(raw),
            mapper.version(raw),
            lambda: mapper.to_appointment(raw),
            modified_at=mapper.modified(raw),
            syncd_id=mapper.syncd_id(raw),
            replaces=mapper.replaces(raw),
            not_stored=_NOT_STORED,
        )

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

    def _note_known(
        self, known: dict[str, str], raws: Sequence[Mapping[str, Any]], low: datetime, high: datetime
    ) -> None:
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
            start = since.astimezone(UTC) - timedelta(seconds=self.settings.incremental_overlap_s)
            previous = self._load_cursor(cursor) if cursor is not None else None
            return self._incremental(start, previous[1] if previous else None, _MODE_POLL, prior=cursor, overlap=False)
        state = self._load_cursor(cursor) if cursor is not None else None
        if state is None:
            if cursor is not None:
                log.warning("cursor_unreadable", connector=self.name, op="changes")
            return self._reconcile(_MODE_POLL, prior=None)
        assert cursor is not None
        mark, reconciled, mode = state
        age = (now - reconciled).total_seconds() if reconciled is not None else float("inf")
        if mode == _MODE_WINDOW:
            every = max(self.config.poll_interval, self.settings.window_mode_min_interval_s)
            if age >= every:
                return self._reconcile(_MODE_WINDOW, prior=cursor)
            return self._nothing(cursor)
        if mark is None:
            return self._reconcile(_MODE_POLL, prior=cursor)
        # the daily reconciliation runs after the poll, so that changes outside the window are not skipped
        due = age >= self.settings.reconcile_every_s
        return self._incremental(mark, reconciled, _MODE_POLL, prior=cursor, overlap=True, reconcile=due)

    @staticmethod
    async def _nothing(cursor: str) -> AsyncIterator[ChangePage]:
        yield ChangePage([], cursor)

    async def _incremental(
        self,
        mark: datetime,
        reconciled: datetime | None,
        mode: str,
        *,
        prior: str | None,
        overlap: bool,
        reconcile: bool = False,
    ) -> AsyncIterator[ChangePage]:
        """Part 2 (b): ``updated_after`` descending, paged until a short page; cursor after the last page."""
        asked = mark - timedelta(seconds=self.settings.incremental_overlap_s) if overlap else mark
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
            last = len(raws) < self.settings.page_size
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
        interval = self.settings.deletion_check_interval_s
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
        return window_bounds(self.config, datetime.now(UTC))

    async def _reconcile(self, mode: str, *, prior: str | None) -> AsyncIterator[ChangePage]:
        """Part 2 (c): list the window by ``start_time`` in chunks of ≤31 days, then GET every known id
        of the window that the pass did not see (404 = deleted). The last page carries the new cursor
        (the pass's start − 60 s); earlier pages carry the previous one, so a crash repeats the pass."""
        started = datetime.now(UTC)
        low, high = self._window()
        step = timedelta(days=self.settings.window_chunk_days)
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
                if len(raws) < self.settings.page_size or beyond:
                    break
                page += 1
            at = end
        if pending is None:
            pending = []
        deleted = await self._confirm_missing(seen, pending, low, high)
        self._known = {rid: start for rid, start in seen.items() if start}
        await self._save_known()
        lag = timedelta(seconds=self.settings.reconcile_cursor_lag_s)
        cursor = self._dump_cursor(started - lag, started, mode)
        log.info("window_reconciled", connector=self.name, op="reconcile", count=len(seen))
        if deleted:
            log.info("deletions_found", connector=self.name, op="reconcile", count=len(deleted))
        yield ChangePage(pending, cursor, deleted_ids=deleted)

    async def _confirm_missing(
        self, seen: dict[str, str], pending: list[VendorRecord], low: datetime, high: datetime
    ) -> list[str]:
        """GET every known id of the window the pass did not see: a 404 is a deletion (returned), a
        record joins ``pending`` (and ``seen`` while it starts in the window)."""
        known = await self._known_ids()
        missing = [
            rid
            for rid, start in known.items()
            if rid not in seen and low <= (_parse(start) or low - timedelta(1)) < high
        ]
        deleted: list[str] = []
        if not missing:
            return deleted
        field = self.mapping.fields["start"]
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
        return deleted

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
        return {
            rid: self._record(found[rid]) if rid in found else self._deleted(rid)
            for rid in dict.fromkeys(str(i) for i in external_ids)
        }

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
            after = attempt - timedelta(seconds=self.settings.reference_search_lag_s)
        else:
            after = now - timedelta(seconds=self.settings.reference_search_default_s)
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
            if len(raws) < self.settings.page_size:
                break
            page += 1
        unique = {self.mapper.external_id(r): r for r in matches}
        ordered = sorted(unique.values(), key=lambda r: (str(r.get("created_at") or ""), self.mapper.external_id(r)))
        if len(ordered) > 1:
            log.warning("reference_held_twice", connector=self.name, op="search", count=len(ordered))
        return [self._record(r) for r in ordered]
