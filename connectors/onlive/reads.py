"""Onlive reads (docs/vendors/onlive.md §2, §3, §9): records, ``updatedSince`` polling, the window
reconciliation, single reads and the reference search."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from connectors.onlive.client import OnliveClient, UpdatedSinceRefused, _server_date
from connectors.onlive.mapfuncs import OnliveMapper, onlive_time_to_utc, utc_to_onlive_time
from connectors.onlive.options import OnliveOptions
from syncd.connector import ChangePage, VendorRecord
from syncd.connectorkit import ConnectorBase, window_bounds
from syncd.errors import MappingError, Rejected
from syncd.http import Response
from syncd.model import Appointment

log = structlog.get_logger(__name__)


class OnliveReads(ConnectorBase):
    """One organisation's appointments as the core reads them; :class:`OnliveConnector` builds it."""

    client: OnliveClient
    mapper: OnliveMapper
    defaults: Mapping[str, Any]
    settings: OnliveOptions

    def _now(self) -> datetime:
        """The vendor's clock as far as syncd knows it (local clock plus the corrected offset)."""
        return self.client.auth.now()

    # -- records -------------------------------------------------------------------------------
    def _record(self, raw: Mapping[str, Any]) -> VendorRecord:
        mapper = self.mapper
        rid, version = mapper.external_id(raw), mapper.version(raw)
        about: dict[str, Any] = {
            "modified_at": mapper.modified_at(raw),
            "syncd_id": mapper.syncd_id(raw),
            "replaces": mapper.replaces(raw),
        }
        if mapper.is_deleted(raw):
            return VendorRecord(rid, version, None, deleted=True, **about)
        return self._mapped(rid, version, lambda: mapper.to_appointment(raw), **about)

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
        return self._incremental(state["t"], overlap=self.settings.poll_overlap_s)

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
            params = {
                "updatedSince": asked_text,
                "includeDeleted": "true",
                "sort": "updatedAt",
                "order": "desc",
                "page": str(page),
                "limit": str(self.settings.page_size),
            }
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
            last = len(data) < self.settings.page_size
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
        return window_bounds(self.config, self._now())

    @staticmethod
    def _server_time(response: Response) -> datetime | None:
        return _server_date(response)

    async def _reconcile(self, *, fallback: bool) -> AsyncIterator[ChangePage]:
        """Part 2 (b): the window in chunks of ≤ 31 days; the last page carries the new cursor."""
        low, high = self._window()
        step = timedelta(days=self.settings.window_chunk_days)
        seen: set[str] = set()
        pending: list[VendorRecord] | None = None
        started: datetime | None = None
        at = low
        while at < high:
            end = min(high, at + step)
            page = 1
            while True:
                params = {
                    "from": utc_to_onlive_time(at),
                    "to": utc_to_onlive_time(end),
                    "includeDeleted": "true",
                    "sort": "createdAt",
                    "order": "asc",
                    "page": str(page),
                    "limit": str(self.settings.page_size),
                }
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
                if len(data) < self.settings.page_size:
                    break
                page += 1
            at = end
        mark = (started or self._now()) - timedelta(seconds=self.settings.window_cursor_lag_s)
        if fallback:
            every = max(self.config.poll_interval, self.settings.window_fallback_min_s)
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
        gate = asyncio.Semaphore(max(1, self.settings.read_concurrency))

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
    async def _search(
        self, canonical_id: str, *, exclude: Sequence[str] = (), updated_since: datetime | None = None
    ) -> list[dict[str, Any]]:
        skip = {str(e).lower() for e in exclude}
        ref = self.mapping.fields["reference"]
        matches: list[dict[str, Any]] = []
        page = 1
        while True:
            params = {
                "externalId": canonical_id,
                "includeDeleted": "true",
                "page": str(page),
                "limit": str(self.settings.page_size),
            }
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
            if len(data) < self.settings.page_size:
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
