"""Zoho CRM reads (docs/vendors/zoho_crm.md §2, §3, §9): records, the modified-since keyset, the window
search, batch reads and the reference search."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from connectors.zoho_crm.client import ZohoClient
from connectors.zoho_crm.mapfuncs import ZohoMapper, utc_to_zoho_time, zoho_time_to_utc
from connectors.zoho_crm.options import ZohoOptions
from syncd.connector import ChangePage, VendorRecord
from syncd.connectorkit import ConnectorBase, chunks, window_bounds
from syncd.errors import MappingError
from syncd.http import Response
from syncd.model import Appointment

log = structlog.get_logger(__name__)

#: "end | Appointment_End_Time | read-only (start + service Duration); a different canonical end is not
#: written" (docs/vendors/zoho_crm.md §9, §3): stored, derived by Zoho from the start
_READ_ONLY = frozenset({"end"})


class ZohoReads(ConnectorBase):
    """One org's Appointments as the core reads them; :class:`ZohoCrmConnector` builds it."""

    client: ZohoClient
    mapper: ZohoMapper
    read_batch: int
    write_batch: int
    search_lag_s: float
    settings: ZohoOptions

    # -- records -------------------------------------------------------------------------------
    def _modified(self, raw: Mapping[str, Any]) -> datetime | None:
        try:
            return zoho_time_to_utc(raw.get(self.mapping.fields["version"]), "version")
        except MappingError:
            return None

    def _record(self, raw: Mapping[str, Any]) -> VendorRecord:
        modified = self._modified(raw)
        version = utc_to_zoho_time(modified) if modified is not None else None
        return self._mapped(
            self.mapper.external_id(raw),
            version,
            lambda: self.mapper.to_appointment(raw),
            modified_at=modified,
            syncd_id=self.mapper.syncd_id(raw),
            read_only=_READ_ONLY,
        )

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
        limit = self.settings.discrete_page_limit
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
            if token is not None or (page + 1) * self.settings.page_size > limit:
                token = info.get("next_page_token") or None
                if token is None:
                    return
            else:
                page += 1

    def _window(self) -> tuple[datetime, datetime]:
        return window_bounds(self.config, datetime.now(UTC))

    async def _reconcile(self) -> AsyncIterator[ChangePage]:
        """Part 2 (c): search the window in ≤31-day chunks; the last page carries the new cursor."""
        started = datetime.now(UTC)
        low, high = self._window()
        step = timedelta(days=self.settings.window_chunk_days)
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
        mark = utc_to_zoho_time(started - timedelta(seconds=self.settings.reconcile_cursor_lag_s))
        cursor = self._dump_cursor({"m": {"t": mark, "ties": []}, "d": {"t": mark, "ties": []}})
        log.info("window_reconciled", connector=self.name, op="reconcile", count=len(seen))
        yield ChangePage(pending or [], cursor)

    async def _search_range(self, low: datetime, high: datetime, *, depth: int) -> AsyncIterator[list[dict[str, Any]]]:
        criteria = f"(Appointment_Start_Time:between:{utc_to_zoho_time(low)},{utc_to_zoho_time(high)})"
        max_page = self.settings.search_max_page
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
        batches = await asyncio.gather(*(self.client.get_by_ids(chunk) for chunk in chunks(unique, self.read_batch)))
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
        matches = [
            r
            for r in self.client.data_of(response)
            if str(r.get(ref) or "") == canonical_id and self.mapper.external_id(r) not in skip
        ]
        matches.sort(key=lambda r: (str(r.get(self.mapping.fields["created"]) or ""), self.mapper.external_id(r)))
        if len(matches) > 1:
            log.warning("reference_held_twice", connector=self.name, op="search", count=len(matches))
        return [self._record(r) for r in matches]
