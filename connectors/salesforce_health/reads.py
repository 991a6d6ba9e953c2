"""Salesforce Health Cloud reads (docs/vendors/salesforce_health.md §2, §3, §9): records, the replication
feeds, the window reconciliation, batch reads and the reference search."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from connectors.salesforce_health.client import ReplicationDateError, SalesforceClient
from connectors.salesforce_health.mapfuncs import record_to_appointment, sf_datetime_in, utc_z_out
from connectors.salesforce_health.options import SalesforceOptions
from syncd.connector import ChangePage, VendorRecord
from syncd.connectorkit import ConnectorBase, chunks, window_bounds
from syncd.errors import AmbiguousReference, MappingError
from syncd.model import Appointment

log = structlog.get_logger(__name__)

_SF_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


_CANONICAL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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


class SalesforceReads(ConnectorBase):
    """One org's ServiceAppointments as the core reads them; :class:`SalesforceHealthConnector` builds it."""

    client: SalesforceClient
    options: dict[str, Any]
    fields: list[str]
    batch: int
    settings: SalesforceOptions
    _unstamped: set[str]
    """Ids this connector has just created and is stamping with ``Syncd_Id__c``: not orphans."""

    # -- records ---------------------------------------------------------------------------------
    def _record(self, external_id: str, row: Mapping[str, Any], resources: Sequence[str]) -> VendorRecord:
        f = self.mapping.fields
        version = row.get(f["version"])
        version_s = f"{version}#{self._content_digest(row, resources)}" if version is not None else None
        modified = _parse_iso(row.get(f["modified"])) or _parse_iso(version)
        syncd_id = row.get(f["reference"])
        syncd_id_s = syncd_id if isinstance(syncd_id, str) and syncd_id else None
        return self._mapped(
            external_id,
            version_s,
            lambda: record_to_appointment(self.mapping, row, resources),
            modified_at=modified,
            syncd_id=syncd_id_s,
        )

    def _content_digest(self, row: Mapping[str, Any], resources: Sequence[str]) -> str:
        """A short digest of the record's content: ``SystemModstamp`` has one-second precision, so
        two changes in one second share it (§8); the version carries this digest as well."""
        skip = {"attributes", self.mapping.fields["version"], self.mapping.fields["modified"], "AppointmentNumber"}
        content = {k: row.get(k) for k in self.fields if k not in skip}
        content["_resources"] = sorted(resources)
        payload = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

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
        for chunk in chunks(valid, self.batch):
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
        return window_bounds(self.config, now)

    async def changes(self, cursor: str | None, *, since: datetime | None = None) -> AsyncIterator[ChangePage]:
        state = self._decode(cursor)
        now = self.now()
        if since is not None:
            since_utc = since.astimezone(UTC)
            state = {"u": _iso(since_utc), "d": _iso(since_utc)}
        elif cursor is not None and self.client.usage_ratio > self.settings.pause_polling_above:
            log.warning("polling_paused", connector=self.name, code="api_usage_above_limit")
            yield ChangePage([], cursor)
            return
        if state.get("win") or not state.get("u") or not state.get("d"):
            async for page in self._window(state, now):
                yield page
            return
        updated_from = _parse_iso(state["u"])
        deleted_from = _parse_iso(state["d"])
        max_age = timedelta(days=self.settings.replication_max_age_days)
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
        batches = chunks(to_read, self.batch)
        log.info("poll", connector=self.name, op="changes", count=len(to_read) + len(gone))
        for index, chunk in enumerate(batches):
            records = list((await self.read(chunk)).values())
            last = index == len(batches) - 1
            # the cursors are stored only after all of the pass's reads are done (§2 b)
            yield ChangePage(records, new_cursor if last else old_cursor, deleted_ids=list(gone) if last else ())
        if not batches:
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
        ids = sorted(
            r["Id"]
            for r in rows
            if isinstance(r.get("Id"), str) and r["Id"] not in exclude and r["Id"] not in self._unstamped
        )
        if len(ids) > 1 and desired.practitioner is not None:
            resources = await self._resources(ids)
            ids = [i for i in ids if desired.practitioner in resources.get(i, [])] or ids
        if not ids:
            return None
        if len(ids) > 1:
            raise AmbiguousReference(
                "several Salesforce records without a reference match this create", external_ids=tuple(ids)
            )
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

    def _reference_patch(self, canonical_id: str, desired: Appointment) -> dict[str, Any]:
        """The sObject PATCH that stamps a new record (``docs/vendors/salesforce_health.md §4``):
        ``Syncd_Id__c`` and the description the Connect body cannot carry."""
        patch: dict[str, Any] = {self.mapping.fields["reference"]: canonical_id}
        if desired.description is not None:
            patch[self.mapping.fields["description"]] = desired.description
        return patch
